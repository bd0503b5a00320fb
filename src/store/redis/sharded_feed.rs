//! The feed on a Redis Cluster: sharded pub/sub. The scripts `SPUBLISH` a room's events on its
//! channel, which lives on the shard owning the room's slot, and this instance `SSUBSCRIBE`s
//! only the rooms it has connections for, each on its shard, through one cluster connection
//! speaking RESP3 (its messages arrive as push messages).
//!
//! Sharded pub/sub is at-most-once per shard, and shards fail one at a time: a room's
//! subscription may lapse while the others carry on. redis-rs resubscribes after a reconnect
//! or a slot-map change, and a shard that gives a slot away (a failover, a slot move) sends
//! `SUNSUBSCRIBE` for its channels. So every confirmation of a wanted room's subscription
//! (`ssubscribe` push) tells the hub to resync that room from the log — the subscription is
//! live again, and whatever was published before it is in the log — and every subscription
//! the server drops, and every one on a lost connection, is subscribed again until that
//! succeeds. A resubscription that was not needed costs a confirmation and one log read.
//!
//! A node's connection can also go half-open (the node stopped or vanished without a reset):
//! redis-rs then only times its commands out, reconnects nothing and keeps its slot map, so
//! the subscriptions on that node stay silent and the rooms it gave away are never found
//! again. Every `PING_EVERY` the feed pings every master; when one does not answer within the
//! timeout, a new cluster connection (fresh nodes, fresh slot map) replaces the whole old one
//! (redis-rs cannot be told to reconnect one node) and every wanted room is subscribed and
//! resynced on it. So a stuck shard's rooms get their events at most about `PING_EVERY` plus
//! a few timeouts late (the log fills in what was published meanwhile), and while the shard
//! stays stuck the connection is replaced again each `PING_EVERY`, each time costing one log
//! read per room on the other shards. Those rooms lose no time meanwhile: the replaced
//! connection's messages are still delivered until every room is live on the new one (or a
//! few timeouts have passed), and subscribing, unsubscribing and pinging all run under the
//! timeout beside the message loop.
//!
//! After a failover or a slot move redis-rs's slot map is stale until a command is
//! redirected, and even then it may be read from a node that has not heard of the change yet;
//! the old master turned replica accepts `SSUBSCRIBE` (replicas serve sharded pub/sub) but
//! gets its new master's messages only once that master counts it among its replicas. In the
//! failover test a message published in that window never reached a subscription made there.
//! So a subscription is trusted only once it has carried a message: each confirmation
//! (`ssubscribe` push) of a wanted room is followed by a probe, an `SPUBLISH` of
//! `probe:<token>` on the room's channel (sent to the slot's master, redirected if need be),
//! and the room is resynced from the log when this connection receives its own probe back —
//! every event published after the probe reaches the subscription, every one before it is in
//! the log. A probe not back within two timeouts sends the room back to repair, which first
//! looks the channel's slot up by a key (its `MOVED` refreshes redis-rs's map) and subscribes
//! again. Other instances subscribed to the room receive the probe too and ignore it, as they
//! ignore a probe that is not their latest. The cost is one `SPUBLISH` per (re)subscription
//! of a room, on top of its log read.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::feed::{Command, FIRST_BACKOFF, MAX_BACKOFF, PING_EVERY, deliver_message, pause};
use super::keys::room_of_channel;
use crate::backoff::Backoff;
use crate::config::ClusterSeeds;
use crate::store::{FeedItem, FeedSink};

/// How often subscriptions that are not live are tried again.
const REPAIR_EVERY: Duration = Duration::from_millis(250);
/// A probe's payload starts with this (never a JSON event, which starts with `{` or `[`).
const PROBE_PREFIX: &str = "probe:";
/// A probe not back within this many timeouts sends its room back to repair.
const PROBE_TIMEOUTS: u32 = 2;
/// Making a cluster connection may take this many timeouts: a seed that does not answer
/// holds its connection attempt (connect, then the first command) for up to two, and the
/// nodes of the slot map are connected after it.
const CONNECT_TIMEOUTS: u32 = 6;

/// One cluster connection and the push messages of its nodes. Each connection has its own
/// channel: once a connection is replaced, what its nodes still had to say is not read (the
/// new connection's confirmations resync every room instead).
struct Connected {
    connection: ClusterConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    /// Its push channel closed: nothing more to read there.
    ended: bool,
}

/// What a command sent beside the loop came to.
enum Outcome {
    Subscribed {
        channel: String,
        live: bool,
        /// The hub's question, when it asked.
        done: Option<oneshot::Sender<bool>>,
    },
    Unsubscribed,
    /// A probe's `SPUBLISH` was answered (`sent`) or not.
    Probed {
        channel: String,
        token: String,
        sent: bool,
    },
}

/// What a push message of the current connection asks of the loop.
enum Pushed {
    Nothing,
    /// A wanted room's subscription was confirmed: probe it.
    Confirmed(String),
    /// A probe came back on a room's channel.
    Probe {
        channel: String,
        token: String,
    },
}

/// The probes under way, by channel: the latest token sent and when it is given up.
#[derive(Default)]
struct Probes {
    /// Distinguishes this feed's probes from other instances' and from an earlier run's.
    run: u64,
    sent: u64,
    waiting: HashMap<String, (String, tokio::time::Instant)>,
}

impl Probes {
    fn new() -> Self {
        Self {
            run: rand::random(),
            ..Self::default()
        }
    }

    /// A token for a new probe of `channel`, which replaces any under way; `None` if one is
    /// under way already (its return proves the subscription as well).
    fn start(&mut self, channel: &str, give_up_after: Duration) -> Option<String> {
        if self.waiting.contains_key(channel) {
            return None;
        }
        self.sent += 1;
        let token = format!("{:016x}.{}", self.run, self.sent);
        let deadline = tokio::time::Instant::now() + give_up_after;
        self.waiting
            .insert(channel.to_owned(), (token.clone(), deadline));
        Some(token)
    }

    /// Whether `token` is the probe awaited on `channel` (then no longer awaited).
    fn returned(&mut self, channel: &str, token: &str) -> bool {
        let awaited = self
            .waiting
            .get(channel)
            .is_some_and(|(waiting, _)| waiting == token);
        if awaited {
            self.waiting.remove(channel);
        }
        awaited
    }

    /// Stops waiting for `channel`'s probe (the room is no longer wanted here).
    fn forget(&mut self, channel: &str) {
        self.waiting.remove(channel);
    }

    /// Stops waiting for every probe (they went out on a connection that was replaced).
    fn forget_all(&mut self) {
        self.waiting.clear();
    }

    fn any_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// The channels whose probe was not back in time, no longer awaited.
    fn overdue(&mut self) -> Vec<String> {
        let now = tokio::time::Instant::now();
        let overdue: Vec<String> = self
            .waiting
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(channel, _)| channel.clone())
            .collect();
        for channel in &overdue {
            self.waiting.remove(channel);
        }
        overdue
    }
}

pub(super) async fn run(
    seeds: ClusterSeeds,
    mut commands: mpsc::UnboundedReceiver<Command>,
    sink: Arc<dyn FeedSink>,
    stopping: CancellationToken,
    timeout: Duration,
) {
    let client = match seeds
        .builder()
        .use_protocol(redis::ProtocolVersion::RESP3)
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            // The seeds were checked when the configuration was read: not expected.
            tracing::error!(error = %err, "redis cluster feed cannot start");
            return;
        }
    };
    let mut wanted: HashSet<String> = HashSet::new();
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    let mut current = loop {
        let connected = tokio::select! {
            () = stopping.cancelled() => return,
            connected = connect(&client, timeout) => connected,
        };
        if let Some(connected) = connected {
            break connected;
        }
        tracing::warn!("redis cluster feed cannot connect; retrying");
        if !pause(&mut commands, &mut wanted, backoff.next_delay(), &stopping).await {
            return;
        }
    };
    metrics::gauge!("chat_feed_connected").set(1.0);
    // Wanted while the connection was being made: subscribed by the first repair.
    let mut lost: HashSet<String> = wanted.clone();
    let mut sent: FuturesUnordered<BoxFuture<'static, Outcome>> = FuturesUnordered::new();
    // Channels with a subscription under way, which a repair does not send again.
    let mut subscribing: HashSet<String> = HashSet::new();
    let mut probes = Probes::new();
    // A ping of every master, then a new connection if one did not answer.
    let mut probe: Option<BoxFuture<'static, Option<Connected>>> = None;
    // The connection replaced last, whose messages are still delivered until every wanted
    // room is live on the new one (or `retire_at`): the shards that work lose no time while
    // the new connection subscribes, which redis-rs holds up while it waits on a stuck node.
    let mut retiring: Option<Connected> = None;
    let retire_at = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(retire_at);
    let mut repair = tokio::time::interval(REPAIR_EVERY);
    repair.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ping.reset();
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            push = current.pushes.recv(), if !current.ended => match push {
                Some(push) => match on_push(push, &wanted, &mut lost, sink.as_ref()) {
                    Pushed::Nothing => {}
                    Pushed::Confirmed(channel) => {
                        if let Some(token) = probes.start(&channel, timeout * PROBE_TIMEOUTS) {
                            sent.push(send_probe(&current.connection, channel, token, timeout));
                        }
                    }
                    Pushed::Probe { channel, token } => {
                        if probes.returned(&channel, &token)
                            && let Some(room) = room_of_channel(&channel)
                        {
                            sink.deliver(FeedItem::ResyncRoom(room));
                        }
                    }
                },
                None => {
                    // Its nodes are gone with it (not expected while it is held): a new one.
                    current.ended = true;
                    let client = client.clone();
                    probe = Some(Box::pin(async move { connect(&client, timeout).await }));
                }
            },
            push = async {
                match retiring.as_mut() {
                    Some(old) => old.pushes.recv().await,
                    None => std::future::pending().await,
                }
            }, if retiring.is_some() => match push {
                // Only its messages: what it says of its subscriptions is past.
                Some(push) if push.kind == PushKind::SMessage => {
                    // A probe there proves nothing of the new connection.
                    let _ = on_push(push, &wanted, &mut lost, sink.as_ref());
                }
                Some(_) => {}
                None => retiring = None,
            },
            () = &mut retire_at, if retiring.is_some() => retiring = None,
            command = commands.recv() => match command {
                None => return,
                Some(Command::Subscribe { channel, done }) => {
                    wanted.insert(channel.clone());
                    subscribing.insert(channel.clone());
                    sent.push(subscribe(&current.connection, channel, timeout, Some(done)));
                }
                Some(Command::Unsubscribe(channel)) => {
                    wanted.remove(&channel);
                    lost.remove(&channel);
                    probes.forget(&channel);
                    sent.push(unsubscribe(&current.connection, channel, timeout));
                }
            },
            Some(outcome) = sent.next() => match outcome {
                Outcome::Subscribed { channel, live, done } => {
                    subscribing.remove(&channel);
                    if let Some(done) = done {
                        let _receiver_may_be_gone = done.send(live);
                    }
                    if !wanted.contains(&channel) {
                        lost.remove(&channel);
                        if live {
                            // Unsubscribed while this was under way.
                            sent.push(unsubscribe(&current.connection, channel, timeout));
                        }
                    } else if live {
                        lost.remove(&channel);
                    } else {
                        lost.insert(channel);
                    }
                }
                Outcome::Probed { channel, token, sent: false } => {
                    if probes.returned(&channel, &token) && wanted.contains(&channel) {
                        lost.insert(channel);
                    }
                }
                Outcome::Probed { .. } | Outcome::Unsubscribed => {}
            },
            _ = repair.tick(), if !lost.is_empty() || probes.any_waiting() => {
                for channel in probes.overdue() {
                    if wanted.contains(&channel) {
                        tracing::warn!("a redis cluster subscription carried no probe; resubscribing");
                        lost.insert(channel);
                    }
                }
                for channel in &lost {
                    if subscribing.insert(channel.clone()) {
                        sent.push(subscribe(&current.connection, channel.clone(), timeout, None));
                    }
                }
            },
            _ = ping.tick(), if probe.is_none() => {
                probe = Some(Box::pin(check(
                    client.clone(),
                    current.connection.clone(),
                    timeout,
                )));
            },
            replacement = async {
                match probe.as_mut() {
                    Some(probe) => probe.await,
                    None => std::future::pending().await,
                }
            }, if probe.is_some() => {
                probe = None;
                if let Some(replacement) = replacement {
                    retiring = Some(std::mem::replace(&mut current, replacement));
                    let retire_by = tokio::time::Instant::now() + timeout * CONNECT_TIMEOUTS;
                    retire_at.as_mut().reset(retire_by);
                    // What was under way went to the old connection: the hub's questions
                    // are answered by their senders' drop (its rooms retry), and every
                    // wanted room is subscribed on the new one and resynced.
                    sent = FuturesUnordered::new();
                    subscribing.clear();
                    probes.forget_all();
                    lost = wanted.clone();
                    ping.reset();
                    metrics::counter!("chat_feed_reconnects_total").increment(1);
                }
            }
        }
        if lost.is_empty() && subscribing.is_empty() && !probes.any_waiting() {
            retiring = None;
        }
    }
}

/// A new cluster connection with a push channel of its own; `None` if it could not be made in
/// time.
async fn connect(client: &ClusterClient, timeout: Duration) -> Option<Connected> {
    let (push_sender, pushes) = mpsc::unbounded_channel::<PushInfo>();
    let config = ClusterConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout)
        .set_push_sender(push_sender);
    match tokio::time::timeout(
        timeout * CONNECT_TIMEOUTS,
        client.get_async_connection_with_config(config),
    )
    .await
    {
        Ok(Ok(connection)) => Some(Connected {
            connection,
            pushes,
            ended: false,
        }),
        _ => None,
    }
}

/// Pings every master; if one does not answer in time, a new connection to replace this one
/// (`None` when all answered, or when no new connection could be made: the next ping tries
/// again).
async fn check(
    client: ClusterClient,
    mut connection: ClusterConnection,
    timeout: Duration,
) -> Option<Connected> {
    let every_master = RoutingInfo::MultiNode((
        MultipleNodeRoutingInfo::AllMasters,
        Some(ResponsePolicy::AllSucceeded),
    ));
    let answered = tokio::time::timeout(
        timeout,
        connection.route_command(redis::cmd("PING"), every_master),
    )
    .await;
    if matches!(answered, Ok(Ok(_))) {
        return None;
    }
    tracing::warn!("a redis cluster node does not answer; connecting to the cluster anew");
    let replacement = connect(&client, timeout).await;
    if replacement.is_none() {
        tracing::warn!("redis cluster feed cannot connect; keeping the old connection");
    }
    replacement
}

/// Subscribes one channel under the timeout: whether it is live now. Its confirmation push
/// follows (and resyncs the room).
///
/// A repair (`done` is `None`) first looks the channel's slot up by a key (see the module's
/// doc): a node that no longer owns it answers `MOVED`, and redis-rs refreshes its map.
fn subscribe(
    connection: &ClusterConnection,
    channel: String,
    timeout: Duration,
    done: Option<oneshot::Sender<bool>>,
) -> BoxFuture<'static, Outcome> {
    let mut connection = connection.clone();
    Box::pin(async move {
        let attempt = async {
            if done.is_none() {
                // The channel's name is a key of its slot (`room:{id}`); whether it exists
                // does not matter, only which node answers. (A one-key command: redis-rs
                // fans out `EXISTS`, and ignores a redirection of a fanned-out one.)
                let _: Value = redis::cmd("TYPE")
                    .arg(&channel)
                    .query_async(&mut connection)
                    .await?;
            }
            connection.ssubscribe(&channel).await
        };
        let live = matches!(tokio::time::timeout(timeout, attempt).await, Ok(Ok(())));
        Outcome::Subscribed {
            channel,
            live,
            done,
        }
    })
}

/// Publishes a probe on `channel` under the timeout (see the module's doc).
fn send_probe(
    connection: &ClusterConnection,
    channel: String,
    token: String,
    timeout: Duration,
) -> BoxFuture<'static, Outcome> {
    let mut connection = connection.clone();
    Box::pin(async move {
        let mut publish = redis::cmd("SPUBLISH");
        publish.arg(&channel).arg(format!("{PROBE_PREFIX}{token}"));
        let publish = publish.query_async::<Value>(&mut connection);
        let sent = matches!(tokio::time::timeout(timeout, publish).await, Ok(Ok(_)));
        Outcome::Probed {
            channel,
            token,
            sent,
        }
    })
}

fn unsubscribe(
    connection: &ClusterConnection,
    channel: String,
    timeout: Duration,
) -> BoxFuture<'static, Outcome> {
    let mut connection = connection.clone();
    Box::pin(async move {
        if !matches!(
            tokio::time::timeout(timeout, connection.sunsubscribe(&channel)).await,
            Ok(Ok(()))
        ) {
            // Its events keep coming until the shard forgets it; the hub has no room to give
            // them to.
            tracing::warn!("redis SUNSUBSCRIBE failed");
        }
        Outcome::Unsubscribed
    })
}

fn on_push(
    push: PushInfo,
    wanted: &HashSet<String>,
    lost: &mut HashSet<String>,
    sink: &dyn FeedSink,
) -> Pushed {
    let mut data = push.data.into_iter();
    let channel = data.next().and_then(text);
    match (push.kind, channel) {
        (PushKind::SMessage, Some(channel)) => {
            let payload = data.next().and_then(text);
            if let Some(token) = payload
                .as_deref()
                .and_then(|payload| payload.strip_prefix(PROBE_PREFIX))
            {
                return Pushed::Probe {
                    token: token.to_owned(),
                    channel,
                };
            }
            deliver_message(&channel, payload.as_deref(), sink);
        }
        (PushKind::SSubscribe, Some(channel)) if wanted.contains(&channel) => {
            return Pushed::Confirmed(channel);
        }
        (PushKind::SUnsubscribe, Some(channel)) if wanted.contains(&channel) => {
            // The shard gave the room's slot away (a failover, a slot move): subscribe again,
            // which finds the new owner.
            metrics::counter!("chat_feed_reconnects_total").increment(1);
            lost.insert(channel);
        }
        (PushKind::Disconnection, _) => {
            // Which rooms were on the lost node is not said: every room is subscribed again
            // (a no-op on the shards still there, but for one log read).
            metrics::counter!("chat_feed_reconnects_total").increment(1);
            tracing::warn!("a redis cluster node connection was lost; resubscribing");
            lost.extend(wanted.iter().cloned());
        }
        _ => {}
    }
    Pushed::Nothing
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANNEL: &str = "room:{lobby}";

    #[tokio::test]
    async fn a_probe_is_awaited_once_and_only_its_own_token_returns_it() {
        let mut probes = Probes::new();
        let token = probes
            .start(CHANNEL, Duration::from_secs(60))
            .expect("no probe of the channel is under way");
        assert_eq!(probes.start(CHANNEL, Duration::from_secs(60)), None);
        assert!(!probes.returned(CHANNEL, "another instance's token"));
        assert!(!probes.returned("room:{other}", &token));
        assert!(probes.returned(CHANNEL, &token));
        assert!(!probes.returned(CHANNEL, &token), "returned once");
        let next = probes.start(CHANNEL, Duration::from_secs(60));
        assert!(
            next.is_some_and(|next| next != token),
            "a new probe, a new token"
        );
    }

    #[tokio::test]
    async fn probes_of_two_feeds_differ() {
        let (mut one, mut other) = (Probes::new(), Probes::new());
        assert_ne!(
            one.start(CHANNEL, Duration::from_secs(60)),
            other.start(CHANNEL, Duration::from_secs(60))
        );
    }

    #[tokio::test]
    async fn a_probe_not_back_in_time_is_overdue_once() {
        let mut probes = Probes::new();
        probes.start(CHANNEL, Duration::ZERO);
        probes.start("room:{later}", Duration::from_secs(60));
        assert_eq!(probes.overdue(), vec![CHANNEL.to_owned()]);
        assert!(probes.overdue().is_empty());
        assert!(probes.waiting.contains_key("room:{later}"));
    }
}
