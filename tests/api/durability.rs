//! Durable acks (API.md, "Redis Cluster and durability"): under `REDIS_WAIT_REPLICAS=N` a
//! write is acknowledged only once N replicas hold it; when they do not within
//! `REDIS_WAIT_TIMEOUT_MS` the client gets 503 `unavailable`, the write stays, and a retry with
//! the same idempotency key returns it once. Real `redis-server`s: a master and a replica, and
//! a Redis Cluster (3 masters, 3 replicas), where a write waits for its room's shard's replica,
//! a stuck replica fails the writes of its shard only, and a write redirected (MOVED) to the
//! slot's new master waits for that master's replica.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::redis_cluster::holders;
use crate::support::redis_cluster::RedisCluster;
use crate::support::{Backend, Message, RedisServer, TestApp, eventually, unique_room};

/// `REDIS_WAIT_TIMEOUT_MS` in these tests.
const WAIT: Duration = Duration::from_millis(300);
/// How much later than [`WAIT`] a refused write may answer on a loaded machine.
const SLACK: Duration = Duration::from_secs(2);
/// How long a (re)started replica may take to sync with its master.
const SYNC: Duration = Duration::from_secs(15);

/// An app on `backend` with `vars`, whose writes wait up to `wait` for one replica.
async fn spawn_waiting_with(
    backend: Backend<'_>,
    mut vars: Vec<(String, String)>,
    wait: Duration,
) -> TestApp {
    vars.push(("REDIS_WAIT_REPLICAS".to_owned(), "1".to_owned()));
    vars.push((
        "REDIS_WAIT_TIMEOUT_MS".to_owned(),
        wait.as_millis().to_string(),
    ));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestApp::spawn(backend, &vars).await
}

async fn spawn_waiting(master: &RedisServer, wait: Duration) -> TestApp {
    spawn_waiting_with(Backend::Redis(master), Vec::new(), wait).await
}

async fn await_replica(master: &RedisServer) {
    eventually("the replica to be in sync", SYNC, || async {
        master.replica_online().then_some(())
    })
    .await;
}

/// The key of `room`'s meta hash, whose `last` field is the id of its last event.
fn meta_key(room: &str) -> String {
    format!("room:{{{room}}}:meta")
}

/// The id of the last event of `room` on `server` (the room's `last` field).
fn last_event_on(server: &RedisServer, room: &str) -> String {
    server.command(&["HGET", &meta_key(room), "last"])
}

/// Posts `message` again with idempotency key `key` after it was refused with 503 though
/// stored as `written`: the retry answers with the stored message, and history holds it once.
async fn assert_retry_lands_once(
    app: &TestApp,
    room: &str,
    token: &str,
    key: &str,
    message: &str,
    written: &str,
) {
    let retried: Message = app
        .post_with_key(room, Some(token), message, Some(key))
        .await
        .expect_as(201);
    assert_eq!(
        retried.id, written,
        "the retry answers with the stored message"
    );
    assert_eq!(retried.message, message);
    let (history, _) = app.history_page(room, token, "").await;
    let copies: Vec<&Message> = history
        .iter()
        .filter(|stored| stored.message == message)
        .collect();
    assert_eq!(copies.len(), 1, "history: {history:?}");
    assert_eq!(copies[0].id, written);
}

/// Asserts that a refused write waited for the replicas, but not much longer.
#[track_caller]
fn assert_refused_in_time(what: &str, took: Duration, wait: Duration) {
    assert!(
        took >= wait,
        "{what} answered after {took:?}, before the wait of {wait:?} was over"
    );
    assert!(
        took < wait + SLACK,
        "{what} answered after {took:?}; the bound is {:?}",
        wait + SLACK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_waits_for_the_replica_and_a_retry_after_503_finds_it_once() {
    let master = RedisServer::start();
    let mut replica = RedisServer::start_replica_of(&master);
    await_replica(&master).await;
    let app = spawn_waiting(&master, WAIT).await;
    let room = unique_room("durable");
    let alice = app.create_room(&room, "alice").await;

    let first = app.say(&room, &alice.token, "held by the replica").await;
    // No polling: the 201 came after the replica acknowledged, so it holds the post now.
    assert_eq!(last_event_on(&replica, &room), first.id);

    replica.stop();
    let started = Instant::now();
    let refused = app
        .post_with_key(&room, Some(&alice.token), "while alone", Some("k-1"))
        .await;
    refused.expect_error(503, "unavailable");
    assert_refused_in_time("the post", started.elapsed(), WAIT);
    // The write happened on the master all the same.
    let written = last_event_on(&master, &room);
    assert_ne!(written, first.id, "the refused post is not on the master");

    replica.start_again();
    await_replica(&master).await;
    assert_retry_lands_once(&app, &room, &alice.token, "k-1", "while alone", &written).await;
    assert_eq!(last_event_on(&replica, &room), written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_replica_writes_get_503_in_time_and_reads_do_not_wait() {
    // Long enough to look at Redis while a write waits.
    let wait = Duration::from_millis(1500);
    let master = RedisServer::start();
    let app = Arc::new(spawn_waiting(&master, wait).await);
    let room = unique_room("no-replica");

    let creating = tokio::spawn({
        let app = app.clone();
        let room = room.clone();
        async move {
            let started = Instant::now();
            let reply = app.create(&room, "alice", None).await;
            (reply, started.elapsed())
        }
    });
    // While the create's WAIT blocks its connection, the shared one still answers at once.
    eventually("the create to wait for replicas", wait, || async {
        master
            .command(&["CLIENT", "LIST"])
            .lines()
            .any(|client| client.contains("cmd=wait"))
            .then_some(())
    })
    .await;
    let started = Instant::now();
    app.get("/readyz", None).await.expect(200);
    let readyz_took = started.elapsed();
    assert!(
        readyz_took < wait / 3,
        "/readyz took {readyz_took:?} while a write waited for replicas"
    );

    let (reply, took) = creating.await.expect("the create task");
    reply.expect_error(503, "unavailable");
    assert_refused_in_time("the create", took, wait);
    // The write happened all the same.
    assert!(
        !master
            .command(&["HGET", &meta_key(&room), "created"])
            .is_empty(),
        "the refused create is not on the master"
    );
}

/// The id of the last event of `room` on the replica at `port`, read there, if it has the room.
fn last_event_on_replica(cluster: &RedisCluster, port: u16, room: &str) -> Option<String> {
    cluster.replica_command(port, &["HGET", &meta_key(room), "last"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_post_waits_for_its_shards_replica_and_a_stuck_one_fails_only_its_shard() {
    // Long enough to look at the other shard while a write waits.
    let wait = Duration::from_millis(1500);
    let cluster = RedisCluster::start();
    for master in cluster.masters() {
        cluster.wait_replica_caught_up(master);
    }
    let app = Arc::new(spawn_waiting_with(Backend::Memory, cluster.app_vars(), wait).await);

    // Two rooms on two shards: the first one's replica will be stuck, the other's not.
    let mut rooms: Vec<(String, String, u16)> = Vec::new();
    for _ in 0..60 {
        let room = unique_room("durable-shard");
        let owner = app.create_room(&room, "alice").await;
        let held = holders(&cluster, std::slice::from_ref(&room));
        let master = *held[&room].iter().next().expect("the room's master");
        if rooms.iter().all(|(_, _, other)| *other != master) {
            rooms.push((room, owner.token, master));
        }
        if rooms.len() == 2 {
            break;
        }
    }
    assert_eq!(rooms.len(), 2, "no two rooms on two masters");
    let (stuck_room, stuck_token, stuck_master) = rooms[0].clone();
    let (other_room, other_token, other_master) = rooms[1].clone();
    let stuck_replica = cluster.replica_of(stuck_master);
    let other_replica = cluster.replica_of(other_master);

    // No polling: each 201 came after the room's replica acknowledged, so it holds the post.
    // Enough posts for every write connection to have connected (they take turns) before a
    // replica hangs: a cluster connection connects to every node, the replicas too.
    for n in 0..20 {
        let (room, token, replica) = if n % 2 == 0 {
            (&stuck_room, &stuck_token, stuck_replica)
        } else {
            (&other_room, &other_token, other_replica)
        };
        let posted = app.say(room, token, &format!("held {n}")).await;
        assert_eq!(
            last_event_on_replica(&cluster, replica, room).as_deref(),
            Some(posted.id.as_str()),
            "post {n} acknowledged before its shard's replica held it"
        );
    }
    let before = last_event_on_replica(&cluster, stuck_replica, &stuck_room);

    cluster.freeze(stuck_replica);
    let refusing = tokio::spawn({
        let app = app.clone();
        let (room, token) = (stuck_room.clone(), stuck_token.clone());
        async move {
            let started = Instant::now();
            let reply = app
                .post_with_key(&room, Some(&token), "while stuck", Some("k-1"))
                .await;
            (reply, started.elapsed())
        }
    });
    eventually("the post to wait for the stuck replica", wait, || async {
        let clients: String = cluster.command(stuck_master, &["CLIENT", "LIST"]);
        clients
            .lines()
            .any(|client| client.contains("cmd=wait"))
            .then_some(())
    })
    .await;
    // Meanwhile the other shard acknowledges writes as usual, and reads of the stuck shard's
    // room do not wait.
    let started = Instant::now();
    let other = app.say(&other_room, &other_token, "elsewhere").await;
    assert_eq!(
        last_event_on_replica(&cluster, other_replica, &other_room).as_deref(),
        Some(other.id.as_str())
    );
    let (history, _) = app.history_page(&stuck_room, &stuck_token, "").await;
    assert!(!history.is_empty());
    let took = started.elapsed();
    assert!(
        took < wait / 3 && !refusing.is_finished(),
        "the other shard's post and a read took {took:?} while a write waited for replicas"
    );

    let (reply, took) = refusing.await.expect("the refused post's task");
    reply.expect_error(503, "unavailable");
    assert_refused_in_time("the post", took, wait);
    // The write happened on the master all the same.
    let written: String = cluster.command(stuck_master, &["HGET", &meta_key(&stuck_room), "last"]);
    assert_ne!(
        Some(&written),
        before.as_ref(),
        "the refused post is not on the master"
    );

    cluster.thaw(stuck_replica);
    cluster.wait_replica_caught_up(stuck_master);
    assert_retry_lands_once(
        &app,
        &stuck_room,
        &stuck_token,
        "k-1",
        "while stuck",
        &written,
    )
    .await;
    assert_eq!(
        last_event_on_replica(&cluster, stuck_replica, &stuck_room),
        Some(written)
    );
}

/// How many times the node at `port` answered MOVED (`INFO errorstats`).
fn moved_count(cluster: &RedisCluster, port: u16) -> u64 {
    let stats: String = cluster.command(port, &["INFO", "errorstats"]);
    stats
        .lines()
        .find_map(|line| line.strip_prefix("errorstat_MOVED:count="))
        .map_or(0, |count| {
            count.trim().parse().expect("a count of MOVED errors")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_write_redirected_to_a_new_master_waits_for_that_masters_replica() {
    let mut cluster = RedisCluster::start();
    for master in cluster.masters() {
        cluster.wait_replica_caught_up(master);
    }
    let app = spawn_waiting_with(Backend::Memory, cluster.app_vars(), WAIT).await;
    let room = unique_room("durable-moved");
    let alice = app.create_room(&room, "alice").await;
    let held = holders(&cluster, std::slice::from_ref(&room));
    let from = *held[&room].iter().next().expect("the room's master");
    let to = cluster
        .masters()
        .into_iter()
        .find(|master| *master != from)
        .expect("another master");
    let to_replica = cluster.replica_of(to);
    // Every write connection sends a script of the room to its master before the slot moves
    // (they take turns), so each knows the old owner.
    for n in 0..20 {
        app.say(&room, &alice.token, &format!("before {n}")).await;
    }
    let slot: u16 = cluster.command(from, &["CLUSTER", "KEYSLOT", &meta_key(&room)]);
    cluster.move_slot(slot, from, to);
    eventually(
        "the new master's replica to hold the slot",
        SYNC,
        || async {
            cluster
                .replica_query::<Option<String>>(to_replica, &["HGET", &meta_key(&room), "last"])
                .ok()
                .flatten()
        },
    )
    .await;

    // The old master answers MOVED; the script and its WAIT go again, together, to the new
    // master, so the 201 comes once the new master's replica holds the post.
    let moved = moved_count(&cluster, from);
    let posted = app.say(&room, &alice.token, "after the move").await;
    assert!(
        moved_count(&cluster, from) > moved,
        "the post was not redirected: the test proves nothing"
    );
    assert_eq!(
        last_event_on_replica(&cluster, to_replica, &room).as_deref(),
        Some(posted.id.as_str())
    );

    // Without the new master's replica, a redirected post is refused: its WAIT ran on the new
    // master (the old one's replica is there and would have acknowledged).
    cluster.kill(to_replica);
    let moved = moved_count(&cluster, from);
    let started = Instant::now();
    app.post_with_key(&room, Some(&alice.token), "alone", Some("k-1"))
        .await
        .expect_error(503, "unavailable");
    assert_refused_in_time("the redirected post", started.elapsed(), WAIT);
    assert!(
        moved_count(&cluster, from) > moved,
        "the refused post was not redirected: the test proves nothing"
    );
    let written: String = cluster.command(to, &["HGET", &meta_key(&room), "last"]);
    assert_ne!(
        written, posted.id,
        "the refused post is not on the new master"
    );
}
