//! API.md "No silent gap, ever": a client whose events the log no longer holds is told so.
//! A resume (WebSocket) or a `Last-Event-ID` (SSE) after an id the log does not reach gets
//! `complete: false` / `resume:gap`, on both stores; a live connection whose room finds its
//! log emptied behind it, when it must read it, is closed with 1012 (SSE: the stream ends), and
//! its resume is told (Redis only: only Redis can lose a log under a running app). An event
//! lost behind newer ones (the log went on from an earlier event, as after a failover to a
//! replica that lagged) is told the same way, on an instance that never saw it too.

use std::time::Duration;

use serde_json::json;

use crate::support::stream::{SseClient, WsClient, WsEnd};
use crate::support::{Backend, Joined, RedisServer, TestApp, event_id, metric_sample, unique_room};

/// Opens `room`'s SSE stream for `token`, after `last_event_id` when given.
async fn sse_open(
    app: &TestApp,
    room: &str,
    token: &str,
    last_event_id: Option<&str>,
) -> SseClient {
    let mut request = app
        .client
        .get(format!("{}/rooms/{room}/events", app.base_url))
        .bearer_auth(token);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    SseClient::open(request).await
}

/// An app on `redis` and a room there that Alice created.
async fn alice_s_room_on(redis: &RedisServer, tag: &str) -> (TestApp, String, Joined) {
    let app = TestApp::spawn(Backend::Redis(redis), &[]).await;
    let room = unique_room(tag);
    let alice = app.create_room(&room, "alice").await;
    (app, room, alice)
}

/// Loses `room`'s log the way a Redis restart without persistence or a failover to a lagging
/// replica would (its membership stays), then cuts the feed: its resync makes the room's actor
/// read the log after the last event it delivered, and find it gone.
fn lose_the_log_under_the_feed(redis: &RedisServer, room: &str) {
    redis.command(&["DEL", &format!("room:{{{room}}}:log")]);
    let killed = redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_ne!(killed, "0", "the app had a pub/sub connection");
}

conformance! {
    async fn a_resume_after_an_id_newer_than_the_log_s_newest_says_incomplete(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("beyond");
        let alice = app.create_room(&room, "alice").await;
        let newest = app.say(&room, &alice.token, "newest").await;
        // An id the client saw that the log never reached: the log lost events since.
        let (ms, seq) = event_id(&newest.id);
        let beyond = format!("{}-{seq}", ms + 60_000);

        let (_, up_to_date) = WsClient::resumed(&app.base_url, &room, &alice.token, &newest.id).await;
        assert_eq!(up_to_date["complete"], true, "the newest id is still in the log");
        let (mut ws, resumed) = WsClient::resumed(&app.base_url, &room, &alice.token, &beyond).await;
        assert_eq!(resumed, json!({"roomId": room, "username": "alice", "replayed": 0, "complete": false}));
        let mut sse = sse_open(&app, &room, &alice.token, Some(&beyond)).await;
        let gap = sse.event().await;
        assert_eq!(gap.event.as_deref(), Some("resume:gap"));
        assert_eq!(gap.json(), json!({"roomId": room, "complete": false}));

        // Both continue live, with the events the log appends next.
        let next = app.say(&room, &alice.token, "next").await;
        assert_eq!(ws.event_named("create:chat:success").await["id"], next.id);
        assert_eq!(sse.event().await.id.as_deref(), Some(next.id.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_websocket_whose_log_is_lost_is_closed_with_1012_and_told_on_resume() {
    let redis = RedisServer::start();
    let (app, room, alice) = alice_s_room_on(&redis, "lost-ws").await;
    let (mut ws, _) =
        WsClient::resumed(&app.base_url, &room, &alice.token, &alice.last_event_id).await;
    let seen = app.say(&room, &alice.token, "seen").await;
    assert_eq!(ws.event().await["id"], seen.id);

    lose_the_log_under_the_feed(&redis, &room);
    assert_eq!(ws.closed().await, WsEnd::Closed(Some(1012)));
    let metrics = app.get("/metrics", None).await.text;
    assert_eq!(
        metric_sample(&metrics, "chat_gap_disconnects_total"),
        Some(1.0)
    );

    let (mut again, resumed) =
        WsClient::resumed(&app.base_url, &room, &alice.token, &seen.id).await;
    assert_eq!(
        resumed,
        json!({"roomId": room, "username": "alice", "replayed": 0, "complete": false})
    );
    let next = app.say(&room, &alice.token, "next").await;
    assert_eq!(again.event().await["id"], next.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_sse_stream_whose_log_is_lost_ends_and_its_reconnect_gets_a_gap() {
    let redis = RedisServer::start();
    let (app, room, alice) = alice_s_room_on(&redis, "lost-sse").await;
    let mut sse = sse_open(&app, &room, &alice.token, None).await;
    let seen = app.say(&room, &alice.token, "seen").await;
    assert_eq!(sse.event().await.id.as_deref(), Some(seen.id.as_str()));

    lose_the_log_under_the_feed(&redis, &room);
    // Well within the client's request timeout, which would also end the stream.
    tokio::time::timeout(Duration::from_secs(5), sse.ended())
        .await
        .expect("the stream ends once its room finds its log lost");

    let mut again = sse_open(&app, &room, &alice.token, Some(&seen.id)).await;
    let gap = again.event().await;
    assert_eq!(gap.event.as_deref(), Some("resume:gap"));
    assert_eq!(gap.json(), json!({"roomId": room, "complete": false}));
    let next = app.say(&room, &alice.token, "next").await;
    assert_eq!(again.event().await.id.as_deref(), Some(next.id.as_str()));
}

/// Loses `room`'s newest event, `lost`, as a failover to a replica that had not received it
/// would: the log and the room's record of its last event go back to `kept`, the one before.
fn lose_the_newest_event(redis: &RedisServer, room: &str, lost: &str, kept: &str) {
    assert_eq!(
        redis.command(&["XDEL", &format!("room:{{{room}}}:log"), lost]),
        "1"
    );
    redis.command(&["HSET", &format!("room:{{{room}}}:meta"), "last", kept]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_lost_behind_newer_ones_is_told_on_every_instance() {
    let redis = RedisServer::start();
    let (first, room, alice) = alice_s_room_on(&redis, "lost-behind").await;
    let second = TestApp::spawn(Backend::Redis(&redis), &[]).await;
    let (mut ws, _) =
        WsClient::resumed(&first.base_url, &room, &alice.token, &alice.last_event_id).await;
    let kept = first.say(&room, &alice.token, "kept").await;
    let lost = first.say(&room, &alice.token, "lost").await;
    assert_eq!(ws.event().await["id"], kept.id);
    assert_eq!(ws.event().await["id"], lost.id);

    lose_the_newest_event(&redis, &room, &lost.id, &kept.id);
    let after = first.say(&room, &alice.token, "after").await;
    assert!(
        event_id(&after.id) > event_id(&lost.id),
        "a later id ({}) is greater than the lost one ({})",
        after.id,
        lost.id
    );
    // The log goes on from `kept`: the connection that had `lost` cannot be given what else
    // was lost with it, and is closed.
    assert_eq!(ws.closed().await, WsEnd::Closed(Some(1012)));

    // The other instance never delivered any of it: the log and the id tell it.
    let (mut resumed_ws, resumed) =
        WsClient::resumed(&second.base_url, &room, &alice.token, &lost.id).await;
    assert_eq!(resumed["complete"], false, "{resumed}");
    assert_eq!(resumed_ws.event().await["id"], after.id);
    let mut sse = sse_open(&second, &room, &alice.token, Some(&lost.id)).await;
    let gap = sse.event().await;
    assert_eq!(gap.event.as_deref(), Some("resume:gap"));
    assert_eq!(sse.event().await.id.as_deref(), Some(after.id.as_str()));
    // After an id the log still holds, nothing is missing.
    let (mut whole, ack) = WsClient::resumed(&second.base_url, &room, &alice.token, &kept.id).await;
    assert_eq!(ack["complete"], true, "{ack}");
    assert_eq!(whole.event().await["id"], after.id);
}
