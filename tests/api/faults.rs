//! Redis going away and coming back, under a running app (Redis only).
//!
//! API.md: when the store cannot be reached, requests get 503 `unavailable` and nothing is
//! half-written; `/readyz` says 503. The app must recover by itself when Redis is back, and a
//! client that retries an idempotent post after a 503 must not post twice.
//!
//! Redis runs without persistence, so a restarted Redis is empty: tests create fresh rooms
//! after a restart.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::support::stream::WsClient;
use crate::support::{Backend, Message, RedisServer, Reply, TestApp, eventually, unique_room};

/// Every Redis command gives up after this long (REDIS_TIMEOUT_MS).
const REDIS_TIMEOUT: &[(&str, &str)] = &[("REDIS_TIMEOUT_MS", "500")];
/// How fast a request must fail while Redis is away: ten times the Redis timeout.
const FAIL_FAST: Duration = Duration::from_secs(5);
/// How long the app may take to notice that Redis is back.
const RECOVERY: Duration = Duration::from_secs(15);

/// Runs a request and measures how long its reply took.
async fn timed(request: impl Future<Output = Reply>) -> (Reply, Duration) {
    let started = Instant::now();
    let reply = request.await;
    (reply, started.elapsed())
}

/// Asserts a 503 `unavailable` that came within [`FAIL_FAST`].
#[track_caller]
fn assert_unavailable(what: &str, (reply, took): (Reply, Duration)) {
    if let Err(problem) = reply.check_error(503, "unavailable") {
        panic!("{what} while Redis is down: {problem}");
    }
    assert!(
        took < FAIL_FAST,
        "{what} took {took:?} to fail; the bound is {FAIL_FAST:?}"
    );
}

async fn await_ready(app: &TestApp) {
    eventually("/readyz to answer 200 again", RECOVERY, || async {
        (app.get("/readyz", None).await.status.as_u16() == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_get_503_quickly_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let app = TestApp::spawn(Backend::Redis(&redis), REDIS_TIMEOUT).await;
    let room = unique_room("down");
    let alice = app.create_room(&room, "alice").await;
    let bob = app.join_room(&room, "bob").await;
    app.get("/readyz", None).await.expect(200);

    redis.stop();

    let token = Some(alice.token.as_str());
    let (readyz, took) = timed(app.get("/readyz", None)).await;
    readyz.expect(503);
    assert!(took < FAIL_FAST, "/readyz took {took:?}");
    assert_unavailable(
        "create",
        timed(app.create(&unique_room("down-new"), "carol", None)).await,
    );
    assert_unavailable("join", timed(app.join(&room, "carol", None)).await);
    assert_unavailable("post", timed(app.post(&room, token, "hello?")).await);
    assert_unavailable("history", timed(app.history(&room, token, "")).await);
    assert_unavailable("members", timed(app.members(&room, token)).await);
    assert_unavailable(
        "leave",
        timed(app.leave(&room, "bob", Some(&bob.token))).await,
    );
    // The process itself still serves.
    app.get("/healthz", None).await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_recovers_when_redis_comes_back() {
    let mut redis = RedisServer::start();
    let app = TestApp::spawn(Backend::Redis(&redis), REDIS_TIMEOUT).await;
    let before = unique_room("before-outage");
    let old = app.create_room(&before, "alice").await;

    redis.stop();
    // A create during the outage fails…
    let during = unique_room("during-outage");
    assert_unavailable("create", timed(app.create(&during, "alice", None)).await);
    app.get("/readyz", None).await.expect(503);

    redis.start_again();
    await_ready(&app).await;

    // …and left nothing behind: the room does not exist, and can be created exactly once.
    app.join(&during, "bob", None)
        .await
        .expect_error(404, "room_not_found");
    let alice = app.create_room(&during, "alice").await;
    app.create(&during, "alice", None)
        .await
        .expect_error(409, "room_exists");

    // Everything works again without restarting the app.
    let bob = app.join_room(&during, "bob").await;
    let said = app.say(&during, &bob.token, "we are back").await;
    let (messages, _) = app.history_page(&during, &alice.token, "").await;
    assert_eq!(messages, vec![said]);

    // The restarted Redis is empty: the old room and its token are simply unknown now.
    app.post(&before, Some(&old.token), "anyone?")
        .await
        .expect_error(401, "unauthorized");
    app.join(&before, "bob", None)
        .await
        .expect_error(404, "room_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_an_idempotent_post_after_a_503_posts_once() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Backend::Redis(&redis), REDIS_TIMEOUT).await;
    let room = unique_room("idem-retry");
    let alice = app.create_room(&room, "alice").await;
    let token = Some(alice.token.as_str());

    // Redis holds every write (scripts included) until unpaused: the post times out, but it
    // reached Redis and may still run when the pause ends.
    redis.command(&["CLIENT", "PAUSE", "20000", "WRITE"]);
    let first = timed(app.post_with_key(&room, token, "exactly once", Some("retry-1"))).await;
    redis.command(&["CLIENT", "UNPAUSE"]);
    assert_unavailable("post during a write pause", first);

    // The client retries with the same key until it succeeds.
    let stored: Message = eventually("the retried post to succeed", RECOVERY, || async {
        let reply = app
            .post_with_key(&room, token, "exactly once", Some("retry-1"))
            .await;
        if reply.status.as_u16() == 201 {
            return Some(reply.expect_as(201));
        }
        reply.expect_error(503, "unavailable");
        None
    })
    .await;
    let again: Message = app
        .post_with_key(&room, token, "exactly once", Some("retry-1"))
        .await
        .expect_as(201);
    assert_eq!(again, stored);

    let (messages, _) = app.history_page(&room, &alice.token, "").await;
    assert_eq!(messages, vec![stored], "the message landed exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_timed_out_is_all_or_nothing() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Backend::Redis(&redis), REDIS_TIMEOUT).await;
    let room = unique_room("create-timeout");

    redis.command(&["CLIENT", "PAUSE", "20000", "WRITE"]);
    let first = timed(app.create(&room, "alice", None)).await;
    redis.command(&["CLIENT", "UNPAUSE"]);
    assert_unavailable("create during a write pause", first);
    await_ready(&app).await;

    // The create either happened whole (the room exists with its creator) or not at all.
    let retry = eventually("the retried create to get an answer", RECOVERY, || async {
        let reply = app.create(&room, "bob", None).await;
        (reply.status.as_u16() != 503).then_some(reply)
    })
    .await;
    match retry.status.as_u16() {
        // It did not happen: bob's create is the room's only one.
        201 => {
            let bob: crate::support::Joined = retry.expect_as(201);
            assert_eq!(
                app.member_list(&room, &bob.token).await,
                vec![("bob".to_owned(), false)]
            );
        }
        // It happened whole: alice is a member (her name is taken) and the room works.
        _ => {
            retry.expect_error(409, "room_exists");
            app.join(&room, "ALICE", None)
                .await
                .expect_error(409, "username_taken");
            let carol = app.join_room(&room, "carol").await;
            assert_eq!(
                app.member_list(&room, &carol.token).await,
                vec![("alice".to_owned(), false), ("carol".to_owned(), false)]
            );
        }
    }
}

/// The connections Redis has accepted so far (`INFO stats`).
fn connections_received(redis: &RedisServer) -> u64 {
    let info = redis.command(&["INFO", "stats"]);
    info.lines()
        .find_map(|line| line.strip_prefix("total_connections_received:"))
        .and_then(|count| count.trim().parse().ok())
        .expect("INFO stats has total_connections_received")
}

/// A feed whose SUBSCRIBE is refused after it connected must wait before connecting again,
/// not reconnect in a tight loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_backs_off_when_subscribe_is_refused() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Backend::Redis(&redis), REDIS_TIMEOUT).await;
    let room = unique_room("refused");
    app.create_room(&room, "alice").await;
    // A live connection in the room: the feed wants its channel.
    let _bob = WsClient::member_of(&app.base_url, &room, "bob").await;

    // From now on no channel may be subscribed; subscribed clients are cut off.
    redis.command(&["ACL", "SETUSER", "default", "resetchannels"]);
    redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);

    let before = connections_received(&redis);
    // A measuring window, not a wait for something to happen.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reconnects = connections_received(&redis) - before;
    assert!(
        reconnects <= 10,
        "the feed reconnected {reconnects} times in one second"
    );
}

/// A room whose sweep fails (here: its leases key is not a sorted set) is skipped, and the
/// other due rooms in the same batch are swept all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_that_cannot_be_swept_does_not_stop_the_others() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Backend::Redis(&redis), &[("MEMBER_TTL_SECS", "1")]).await;
    redis.command(&["HSET", "room:{broken}:meta", "created", "1"]);
    redis.command(&["SET", "room:{broken}:leases", "not a sorted set"]);
    // Due before any other room, so it comes first in every sweep's batch.
    redis.command(&["ZADD", "leases:rooms", "-inf", "broken"]);

    let room = unique_room("sweep-on");
    let alice = app.create_room(&room, "alice").await;
    app.join_room(&room, "bob").await;
    // Alice keeps asking (which refreshes her lease); bob is silent.
    eventually("bob to time out", Duration::from_secs(10), || async {
        let list = app.member_list(&room, &alice.token).await;
        list.iter()
            .map(|(name, _)| name.as_str())
            .eq(["alice"])
            .then_some(())
    })
    .await;
}
