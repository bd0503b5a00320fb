//! Durable acks (`REDIS_WAIT_REPLICAS`): the write connections whose room changes are
//! acknowledged to a client only once N replicas hold them, and the check of `WAIT`'s answer.
//!
//! `WAIT` counts the replicas that acknowledged every write of the connection it runs on, so
//! it must follow the script on the same connection, and nothing may reconnect in between:
//! the script and `WAIT` go in one pipeline, which is sent whole on one connection.
//!
//! - On one Redis, the connection manager fails the pipeline on a reconnect, and the client
//!   gets 503.
//! - On a cluster, the pipeline goes whole to the master of the room's slot: redis-rs routes
//!   a pipeline by its first keyed command (the script; `WAIT` alone would go to every master
//!   and answer their minimum, but inside a pipeline it is unkeyed and follows the script).
//!   A redirection (MOVED, ASK), a lost connection or a failover makes redis-rs send the
//!   whole pipeline again, script then `WAIT`, on one connection to the node now owning the
//!   slot: so `WAIT` still follows the script it answers for. A script run again finds what
//!   its first run wrote there (a post's idempotent replay, below), and replication is one
//!   stream per master, so the second run's `WAIT` covers the first run's write too. Retries
//!   end with the write's deadline, and then the client gets 503.
//!
//! They do not go on the store's shared connection. `WAIT` blocks the server-side client, and
//! on a multiplexed connection every other task's command (history, authentication, the
//! sweep) would queue behind it: for a replica's round trip when all is well, and for the
//! whole `REDIS_WAIT_TIMEOUT_MS` when a replica is gone, one blocked `WAIT` after another.
//! Writes therefore take turns over [`WRITE_CONNECTIONS`] connections of their own (on a
//! cluster, cluster connections of their own, each with its own connection to every node);
//! reads never wait for replicas. A write still queues behind the writes sent before it on
//! its connection (Redis runs one client's commands in order), which is what bounds the rate:
//! each connection carries about one write per replica acknowledgement, per master.
//!
//! A reply that changed nothing ("room exists", "unauthorized") waits too, and fails the same
//! way: what it reports was read from state a failover could still lose. A retried post that
//! finds its message (an idempotent replay) moves the member's lease, a write of its own, so
//! its `WAIT` also covers the first write, whichever connection that went on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::super::{StoreError, StoreResult};
use super::connection::Connection;
use crate::config::{Durability, RedisTarget};

/// How many connections the writes that wait for replicas take turns on. Each carries about
/// one write per replica acknowledgement (a loopback replica acknowledges in well under a
/// millisecond), so this many are many thousands of writes a second, and a few sockets
/// per instance; they connect on first use.
const WRITE_CONNECTIONS: usize = 16;

pub(super) struct Durable {
    replicas: u64,
    wait: Duration,
    connections: Box<[Connection]>,
    next: AtomicUsize,
}

impl Durable {
    /// `None` when no replica is asked for: writes then go on the shared connection, with no
    /// `WAIT` and no extra round trip.
    pub(super) fn new(
        target: &RedisTarget,
        durability: Durability,
        timeout: Duration,
    ) -> redis::RedisResult<Option<Self>> {
        if durability.replicas == 0 {
            return Ok(None);
        }
        // A write's reply comes after its `WAIT`, which may take all of its timeout.
        let connections = (0..WRITE_CONNECTIONS)
            .map(|_| Connection::new(target, timeout, timeout + durability.timeout))
            .collect::<redis::RedisResult<_>>()?;
        Ok(Some(Self {
            replicas: durability.replicas,
            wait: durability.timeout,
            connections,
            next: AtomicUsize::new(0),
        }))
    }

    /// How much longer than a plain exchange a write may take.
    pub(super) fn wait(&self) -> Duration {
        self.wait
    }

    /// The next write connection, in turn.
    pub(super) fn connection(&self) -> Connection {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[turn].clone()
    }

    /// Appends `WAIT` to a pipeline of writes; its answer is the pipeline's last value.
    pub(super) fn append_wait(&self, pipe: &mut redis::Pipeline) {
        pipe.cmd("WAIT")
            .arg(self.replicas)
            .arg(u64::try_from(self.wait.as_millis()).unwrap_or(u64::MAX));
    }

    /// `Unavailable` when fewer replicas than asked acknowledged the write in time. The write
    /// itself happened: a retry with the same idempotency key finds it.
    pub(super) fn check(&self, what: &'static str, acknowledged: u64) -> StoreResult<()> {
        if acknowledged >= self.replicas {
            return Ok(());
        }
        metrics::counter!("chat_store_errors_total", "op" => what).increment(1);
        tracing::warn!(
            op = what,
            acknowledged,
            wanted = self.replicas,
            wait_ms = u64::try_from(self.wait.as_millis()).unwrap_or(u64::MAX),
            "redis replicas did not acknowledge the write in time (REDIS_WAIT_REPLICAS)"
        );
        Err(StoreError::Unavailable)
    }
}
