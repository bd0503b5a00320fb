//! Durable acks (API.md, "Redis Cluster and durability"): under `REDIS_WAIT_REPLICAS=N` a
//! write is acknowledged only once N replicas hold it; when they do not within
//! `REDIS_WAIT_TIMEOUT_MS` the client gets 503 `unavailable`, the write stays, and a retry with
//! the same idempotency key returns it once. Real `redis-server`s: a master and a replica.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{Backend, Message, RedisServer, TestApp, eventually, unique_room};

/// `REDIS_WAIT_TIMEOUT_MS` in these tests.
const WAIT: Duration = Duration::from_millis(300);
/// How much later than [`WAIT`] a refused write may answer on a loaded machine.
const SLACK: Duration = Duration::from_secs(2);
/// How long a (re)started replica may take to sync with its master.
const SYNC: Duration = Duration::from_secs(15);

fn wait_vars(wait: Duration) -> Vec<(&'static str, String)> {
    vec![
        ("REDIS_WAIT_REPLICAS", "1".to_owned()),
        ("REDIS_WAIT_TIMEOUT_MS", wait.as_millis().to_string()),
    ]
}

async fn spawn_waiting(master: &RedisServer, wait: Duration) -> TestApp {
    let vars = wait_vars(wait);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestApp::spawn(Backend::Redis(master), &vars).await
}

async fn await_replica(master: &RedisServer) {
    eventually("the replica to be in sync", SYNC, || async {
        master.replica_online().then_some(())
    })
    .await;
}

/// The id of the last event of `room` on `server` (the room's `last` field).
fn last_event_on(server: &RedisServer, room: &str) -> String {
    server.command(&["HGET", &format!("room:{{{room}}}:meta"), "last"])
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
    let retried: Message = app
        .post_with_key(&room, Some(&alice.token), "while alone", Some("k-1"))
        .await
        .expect_as(201);
    assert_eq!(
        retried.id, written,
        "the retry answers with the stored message"
    );
    assert_eq!(retried.message, "while alone");
    assert_eq!(last_event_on(&replica, &room), written);

    let (history, _) = app.history_page(&room, &alice.token, "").await;
    let copies: Vec<&Message> = history
        .iter()
        .filter(|message| message.message == "while alone")
        .collect();
    assert_eq!(copies.len(), 1, "history: {history:?}");
    assert_eq!(copies[0].id, written);
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
            .command(&["HGET", &format!("room:{{{room}}}:meta"), "created"])
            .is_empty(),
        "the refused create is not on the master"
    );
}
