//! The streaming half of API.md on both stores: the WebSocket protocol (acks before
//! broadcasts, errors that keep the connection, resume), Server-Sent Events (replay, ids,
//! keepalive, gaps), presence and timeouts, slow clients, lifetimes and shutdown.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::support::stream::{SseClient, WsClient, WsEnd, client_frame};
use crate::support::{Backend, TestApp, metric_sample, unique_room};

/// Creates `room` on a new WebSocket as `username`; returns the client (past its ack and the
/// two creation events) and the ack data.
async fn ws_create(app: &TestApp, room: &str, username: &str) -> (WsClient, Value) {
    WsClient::creator_of(&app.base_url, room, username).await
}

/// Joins `room` on a new WebSocket; returns the client past its ack and own join event.
async fn ws_join(app: &TestApp, room: &str, username: &str) -> (WsClient, Value) {
    let mut ws = WsClient::connect(&app.base_url).await;
    let ack = ws
        .ack(
            "add:member",
            "join",
            json!({"roomId": room, "username": username}),
        )
        .await;
    let joined = ws.event().await;
    assert_eq!(joined["event"], "add:member:success");
    assert_eq!(joined["id"], ack["lastEventId"]);
    (ws, ack)
}

fn sse_request(app: &TestApp, room: &str, token: &str) -> reqwest::RequestBuilder {
    app.client
        .get(format!("{}/rooms/{room}/events", app.base_url))
        .bearer_auth(token)
}

/// A busy room's events reach a WebSocket and an SSE stream once each and in order, the
/// sender's acks each before the event it caused; answers the `(delivered, pushes)` counters.
async fn busy_room_delivers_every_event_once_in_order(
    backend: Backend<'_>,
    env: &[(&str, &str)],
) -> (f64, f64) {
    let app = TestApp::spawn(backend, env).await;
    let room = unique_room("busy");
    let (mut alice, _) = ws_create(&app, &room, "alice").await;
    let (mut bob, _) = ws_join(&app, &room, "bob").await;
    let carol = app.join_room(&room, "carol").await;
    let mut carol_sse = SseClient::open(sse_request(&app, &room, &carol.token)).await;
    // Alice sends without waiting for acks: far more than the 100 events/s that make a
    // room busy.
    const MESSAGES: usize = 300;
    for n in 0..MESSAGES {
        alice
            .send(
                "create:chat",
                &format!("m{n}"),
                json!({"roomId": room, "message": format!("busy {n}")}),
            )
            .await;
    }
    // Alice's posts go out several at a time: her acks still come in the order she sent,
    // each before the event it caused.
    let mut acked = 0;
    let mut echoed = 0;
    while acked < MESSAGES || echoed < MESSAGES {
        let frame = alice.recv().await;
        match frame["event"].as_str() {
            Some("ack") => {
                assert_eq!(frame["ref"], format!("m{acked}"), "acks in order");
                acked += 1;
            }
            Some("create:chat:success") => {
                assert_eq!(frame["data"]["message"], format!("busy {echoed}"));
                assert!(
                    echoed < acked,
                    "the ack of busy {echoed} comes before its event"
                );
                echoed += 1;
            }
            // Bob's and Carol's joins.
            Some("add:member:success") => {}
            other => panic!("unexpected frame {other:?}: {frame}"),
        }
    }
    let mut last_id = String::new();
    for n in 0..MESSAGES {
        let event = bob.event_named("create:chat:success").await;
        assert_eq!(
            event["data"]["message"],
            format!("busy {n}"),
            "bob, in order"
        );
        let id = event["id"].as_str().expect("an event id").to_owned();
        let over_sse = loop {
            let event = carol_sse.event().await;
            if event.event.as_deref() == Some("create:chat:success") {
                break event;
            }
        };
        assert_eq!(
            over_sse.id.as_deref(),
            Some(id.as_str()),
            "carol, the same order"
        );
        assert_ne!(id, last_id, "no duplicate");
        last_id = id;
    }
    let metrics = app.get("/metrics", None).await.text;
    let counter = |name: &str| -> f64 {
        metric_sample(&metrics, name).unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
    };
    (
        counter("chat_events_delivered_total"),
        counter("chat_fanout_pushes_total"),
    )
}

/// An SSE stream resumed after `last_event_id`, past the `resume:gap` it must start with when
/// `gap` (checked).
async fn sse_resumed(
    app: &TestApp,
    room: &str,
    token: &str,
    last_event_id: &str,
    gap: bool,
) -> SseClient {
    let mut sse =
        SseClient::open(sse_request(app, room, token).header("Last-Event-ID", last_event_id)).await;
    if gap {
        let gap = sse.event().await;
        assert_eq!(gap.event.as_deref(), Some("resume:gap"));
        assert_eq!(gap.json(), json!({"roomId": room, "complete": false}));
    }
    sse
}

conformance! {
    async fn websocket_acks_come_before_the_broadcasts_they_cause(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("ws-order");
        let mut alice = WsClient::connect(&app.base_url).await;
        let ack = alice.call("create:room", "c1", json!({"roomId": room, "username": "alice"})).await;
        assert_eq!(ack["event"], "ack");
        let data = &ack["data"];
        assert_eq!(data["roomId"], room.as_str());
        assert_eq!(data["username"], "alice");
        assert!(data["token"].as_str().is_some_and(|t| t.len() >= 32));
        let created = alice.event().await;
        assert_eq!(created["event"], "create:room:success");
        assert_eq!(created["data"], json!({"roomId": room, "username": "alice"}));
        let joined = alice.event().await;
        assert_eq!(joined["event"], "add:member:success");
        assert_eq!(joined["id"], data["lastEventId"]);

        let (mut bob, bob_ack) = ws_join(&app, &room, "bob").await;
        let seen_by_alice = alice.event().await;
        assert_eq!(seen_by_alice["event"], "add:member:success");
        assert_eq!(seen_by_alice["id"], bob_ack["lastEventId"]);
        assert_eq!(seen_by_alice["data"]["username"], "bob");

        // The sender's ack, then its broadcast; the other member gets the broadcast.
        let reply = alice.call("create:chat", "m1", json!({"roomId": room, "message": "hi"})).await;
        assert_eq!(reply["event"], "ack");
        let stored = &reply["data"];
        assert_eq!(stored["message"], "hi");
        assert_eq!(stored["username"], "alice");
        assert_eq!(stored["roomId"], room.as_str());
        let echo = alice.event().await;
        assert_eq!(echo["event"], "create:chat:success");
        assert_eq!(echo["id"], stored["id"]);
        assert_eq!(echo["data"]["ts"], stored["ts"]);
        let at_bob = bob.event().await;
        assert_eq!(at_bob, echo, "every member sees the same event");
        assert_eq!(
            at_bob["data"],
            json!({"roomId": room, "username": "alice", "message": "hi", "ts": stored["ts"]})
        );

        // Bob leaves on his connection: ack, then his own removal reaches him and alice.
        let left = bob.ack("remove:member", "bye", json!({"roomId": room, "username": "bob"})).await;
        assert_eq!(left["roomId"], room.as_str());
        let removed = bob.event().await;
        assert_eq!(removed["event"], "remove:member:success");
        assert_eq!(removed["data"], json!({"roomId": room, "username": "bob", "reason": "left"}));
        assert_eq!(alice.event().await, removed);
        // After leaving, bob's connection no longer receives the room.
        alice.ack("create:chat", "m2", json!({"roomId": room, "message": "after"})).await;
        alice.event_named("create:chat:success").await;
        bob.expect_error("create:chat", "m3", json!({"roomId": room, "message": "x"}), "not_member").await;
    }

    async fn websocket_errors_keep_the_connection_open(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("ws-errors");
        let other_room = unique_room("ws-errors-other");
        let (mut alice, _) = ws_create(&app, &room, "alice").await;
        let outsider = app.create_room(&other_room, "olga").await;

        alice.send_raw(WsMessage::text("this is not json")).await;
        let reply = alice.recv().await;
        assert_eq!(reply["event"], "error");
        assert_eq!(reply["data"]["code"], "invalid_request");
        assert!(reply.get("ref").is_none());

        alice.send_raw(WsMessage::binary(vec![1u8, 2, 3])).await;
        assert_eq!(alice.recv().await["data"]["code"], "invalid_request");

        alice.expect_error("no:such:event", "e1", json!({}), "invalid_request").await;
        alice.expect_error("create:chat", "e2", json!({"roomId": room}), "invalid_request").await;
        alice.expect_error("create:chat", "e3", json!({"roomId": room, "message": 5}), "invalid_request").await;
        alice.expect_error("create:chat", "e4", json!({"roomId": room, "message": "   "}), "invalid_request").await;
        alice.expect_error("create:room", "e5", json!({"roomId": "bad id!", "username": "x"}), "invalid_request").await;
        alice.expect_error("create:room", "e6", json!({"roomId": room, "username": "zed"}), "room_exists").await;
        alice.expect_error("add:member", "e7", json!({"roomId": room, "username": "ALICE"}), "invalid_request").await;
        alice.expect_error("add:member", "e8", json!({"roomId": unique_room("nowhere"), "username": "a"}), "room_not_found").await;
        // Not joined here, no token / a token of another room: not_member.
        alice.expect_error("create:chat", "e9", json!({"roomId": other_room, "message": "hi"}), "not_member").await;
        alice.expect_error("create:chat", "e10", json!({"roomId": other_room, "message": "hi", "token": "nope"}), "not_member").await;
        alice.expect_error("remove:member", "e11", json!({"roomId": other_room, "username": "olga"}), "not_member").await;
        // A username that is not the connection's own.
        alice.expect_error("create:chat", "e12", json!({"roomId": room, "message": "hi", "username": "mallory"}), "forbidden").await;
        let (mut bob, _) = ws_join(&app, &room, "bob").await;
        alice.event_named("add:member:success").await;
        // Removing another member is for the room's owner (alice) only.
        bob.expect_error("remove:member", "e13", json!({"roomId": room, "username": "alice"}), "forbidden").await;
        alice.expect_error("resume", "e14", json!({"roomId": room, "token": "x"}), "invalid_request").await;

        // A token for another room's member works without joining on this connection.
        let posted = alice
            .ack("create:chat", "ok1", json!({"roomId": other_room, "message": "by token", "token": outsider.token}))
            .await;
        assert_eq!(posted["username"], "olga");
        // ref may be any JSON value, echoed as sent.
        alice.send_raw(WsMessage::text(json!({"event": "create:chat", "ref": 42, "data": {"roomId": room, "message": "n"}}).to_string())).await;
        let reply = alice.recv().await;
        assert_eq!(reply["ref"], 42);
        assert_eq!(reply["event"], "ack");

        // A frame over 64 KiB closes with 1009.
        let huge = json!({"event": "create:chat", "data": {"roomId": room, "message": "x".repeat(70 * 1024)}});
        alice.send_raw(WsMessage::text(huge.to_string())).await;
        assert_eq!(alice.closed().await, WsEnd::Closed(Some(1009)));
    }

    async fn websocket_client_msg_id_lands_once(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("ws-idem");
        let (mut alice, _) = ws_create(&app, &room, "alice").await;
        let first = alice.ack("create:chat", "a", json!({"roomId": room, "message": "once", "clientMsgId": "k-1"})).await;
        assert_eq!(alice.event().await["id"], first["id"]);
        let again = alice.ack("create:chat", "b", json!({"roomId": room, "message": "twice?", "clientMsgId": "k-1"})).await;
        assert_eq!(again, first, "a retry answers the stored message");
        alice.ack("create:chat", "c", json!({"roomId": room, "message": "next"})).await;
        let next = alice.event().await;
        assert_eq!(next["data"]["message"], "next", "the retry appended nothing");
        alice.expect_error("create:chat", "d", json!({"roomId": room, "message": "m", "clientMsgId": "bad key!"}), "invalid_request").await;
    }

    async fn websocket_resume_replays_exactly_what_was_missed(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("ws-resume");
        let (mut alice, ack) = ws_create(&app, &room, "alice").await;
        let token = ack["token"].as_str().unwrap().to_owned();
        let bob = app.join_room(&room, "bob").await;
        let seen = alice.event().await;
        let last_seen = seen["id"].as_str().unwrap().to_owned();
        alice.close().await;

        let mut missed = Vec::new();
        for n in 0..3 {
            missed.push(app.say(&room, &bob.token, &format!("missed {n}")).await.id);
        }
        let mut again = WsClient::connect(&app.base_url).await;
        let resumed = again
            .ack("resume", "r", json!({"roomId": room, "token": token, "lastEventId": last_seen}))
            .await;
        assert_eq!(resumed, json!({"roomId": room, "username": "alice", "replayed": 3, "complete": true}));
        for id in &missed {
            assert_eq!(&again.event().await["id"], id);
        }
        // Then live, with no duplicate at the seam.
        let live = app.say(&room, &bob.token, "live").await;
        assert_eq!(again.event().await["id"], live.id);
        // The resumed connection holds the membership: it can chat without a token.
        again.ack("create:chat", "c", json!({"roomId": room, "message": "back"})).await;
        assert_eq!(again.event().await["data"]["message"], "back");
        // A wrong token cannot resume.
        let mut stranger = WsClient::connect(&app.base_url).await;
        stranger.expect_error("resume", "r", json!({"roomId": room, "token": "wrong", "lastEventId": last_seen}), "unauthorized").await;
    }

    async fn a_replayed_removal_of_an_earlier_membership_does_not_end_the_current_one(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("rejoin");
        let owner = app.create_room(&room, "owner").await;
        let first = app.join_room(&room, "bob").await;
        app.leave(&room, "bob", Some(&first.token)).await.expect(204);
        let again = app.join_room(&room, "bob").await;
        // Both streams replay the whole log, the removal of Bob's first membership included,
        // and must go on for his current one.
        let mut ws = WsClient::connect(&app.base_url).await;
        ws.ack(
            "resume",
            "r",
            json!({"roomId": room, "token": again.token, "lastEventId": "0-0"}),
        )
        .await;
        let url = format!(
            "{}/rooms/{room}/events?token={}&lastEventId=0-0",
            app.base_url, again.token
        );
        let mut sse = SseClient::open(app.client.get(url)).await;
        let live = app.say(&room, &owner.token, "still here?").await;
        assert_eq!(ws.event_named("create:chat:success").await["id"], live.id);
        loop {
            let event = sse.event().await;
            if event.event.as_deref() == Some("create:chat:success") {
                assert_eq!(event.id.as_deref(), Some(live.id.as_str()));
                break;
            }
        }
    }

    async fn resume_past_trimmed_history_says_incomplete(backend: Backend) {
        let app = TestApp::spawn(backend, &[("HISTORY_LIMIT", "3")]).await;
        let room = unique_room("trimmed");
        let alice = app.create_room(&room, "alice").await;
        for n in 0..5 {
            app.say(&room, &alice.token, &format!("m{n}")).await;
        }
        let mut ws = WsClient::connect(&app.base_url).await;
        let resumed = ws
            .ack("resume", "r", json!({"roomId": room, "token": alice.token, "lastEventId": alice.last_event_id}))
            .await;
        assert_eq!(resumed["complete"], false);
        assert_eq!(resumed["replayed"], 3);
        let messages: Vec<Value> = [ws.event().await, ws.event().await, ws.event().await]
            .iter()
            .map(|e| e["data"]["message"].clone())
            .collect();
        assert_eq!(messages, vec![json!("m2"), json!("m3"), json!("m4")]);

        let mut sse = sse_resumed(&app, &room, &alice.token, &alice.last_event_id, true).await;
        assert_eq!(sse.event().await.json()["message"], "m2");
    }

    async fn history_and_resumes_keep_to_the_last_history_limit_events(backend: Backend) {
        // Redis trims the log approximately, by whole stream nodes (100 events or 4 KiB, the
        // defaults): well past one node's worth, the stream still holds more than HISTORY_LIMIT
        // events, and none of the extra ones may show.
        const LIMIT: usize = 7;
        let app = TestApp::spawn(backend, &[("HISTORY_LIMIT", "7"), ("RATE_LIMITS", "off")]).await;
        let room = unique_room("trim-window");
        let alice = app.create_room(&room, "alice").await;
        let mut posted = Vec::new();
        for n in 0..130 {
            posted.push(app.say(&room, &alice.token, &format!("m{n}")).await);
        }
        if let Backend::Redis(redis) = backend {
            let held = || -> usize {
                redis
                    .command(&["XLEN", &format!("room:{{{room}}}:log")])
                    .parse()
                    .expect("XLEN answers a number")
            };
            // `MAXLEN ~` keeps whole nodes: when the newest node happens to hold exactly LIMIT
            // events, they are all the stream keeps. One more post makes it LIMIT + 1 (in that
            // node, or beside it in a new one that cannot hold LIMIT alone).
            if held() == LIMIT {
                posted.push(app.say(&room, &alice.token, "one more").await);
            }
            let held = held();
            assert!(held > LIMIT, "the stream holds more than kept ({held}): the test tests it");
        }
        // Every kept event is a chat message: the oldest kept is kept[0], and its predecessor,
        // the newest event gone, is `gone`; the one before that, `older`.
        let kept = &posted[posted.len() - LIMIT..];
        let gone = &posted[posted.len() - LIMIT - 1];
        let older = &posted[posted.len() - LIMIT - 2];

        let (page, next) = app.history_page(&room, &alice.token, "limit=200").await;
        assert_eq!(page, kept, "history is the last {LIMIT} events");
        assert_eq!(next, None, "nothing older is history");
        let (page, next) = app.history_page(&room, &alice.token, "limit=5").await;
        assert_eq!(page, kept[2..]);
        assert_eq!(next.as_deref(), Some(kept[2].id.as_str()));
        let query = format!("limit=5&before={}", kept[2].id);
        let (page, next) = app.history_page(&room, &alice.token, &query).await;
        assert_eq!(page, kept[..2], "the last page stops at the oldest kept event");
        assert_eq!(next, None);
        let query = format!("before={}", gone.id);
        let (page, next) = app.history_page(&room, &alice.token, &query).await;
        assert!(page.is_empty(), "before a trimmed event there is nothing: {page:?}");
        assert_eq!(next, None);

        let kept_text: Vec<Value> = kept.iter().map(|m| json!(m.message)).collect();
        for (after, complete) in [(gone, true), (older, false)] {
            let mut ws = WsClient::connect(&app.base_url).await;
            let resumed = ws
                .ack("resume", "r", json!({"roomId": room, "token": alice.token, "lastEventId": after.id}))
                .await;
            assert_eq!(resumed["complete"], complete, "resume after {}: {resumed}", after.message);
            assert_eq!(resumed["replayed"], LIMIT);
            let mut replayed = Vec::new();
            for _ in 0..LIMIT {
                replayed.push(ws.event().await["data"]["message"].clone());
            }
            assert_eq!(replayed, kept_text, "resume after {}", after.message);
        }

        let mut sse = sse_resumed(&app, &room, &alice.token, &older.id, true).await;
        assert_eq!(sse.event().await.id.as_deref(), Some(kept[0].id.as_str()));
        let mut sse = sse_resumed(&app, &room, &alice.token, &gone.id, false).await;
        let first = sse.event().await;
        assert_eq!(first.event.as_deref(), Some("create:chat:success"), "no gap: {first:?}");
        assert_eq!(first.id.as_deref(), Some(kept[0].id.as_str()));
    }

    async fn sse_streams_the_same_events_as_websocket(backend: Backend) {
        let app = TestApp::spawn(backend, &[("SSE_KEEPALIVE_SECS", "1")]).await;
        let room = unique_room("sse");
        let (mut alice_ws, _) = ws_create(&app, &room, "alice").await;
        let bob = app.join_room(&room, "bob").await;
        alice_ws.event_named("add:member:success").await;

        // Bearer token, live from now.
        let mut sse = SseClient::open(sse_request(&app, &room, &bob.token)).await;
        assert!(sse.content_type.starts_with("text/event-stream"));
        let posted = app.say(&room, &bob.token, "over SSE").await;
        let event = sse.event().await;
        assert_eq!(sse.retry, Some(3000));
        assert_eq!(event.id.as_deref(), Some(posted.id.as_str()));
        assert_eq!(event.event.as_deref(), Some("create:chat:success"));
        let over_ws = alice_ws.event().await;
        assert_eq!(over_ws["id"], posted.id.as_str());
        assert_eq!(event.json(), over_ws["data"], "same data on both transports");
        assert_eq!(sse.comment().await, "keepalive");

        // ?token= and ?lastEventId= replay, for EventSource.
        let url = format!(
            "{}/rooms/{room}/events?token={}&lastEventId={}",
            app.base_url, bob.token, bob.last_event_id
        );
        let mut replaying = SseClient::open(app.client.get(url)).await;
        assert_eq!(replaying.event().await.id.as_deref(), Some(posted.id.as_str()));
        let live = app.say(&room, &bob.token, "live").await;
        assert_eq!(replaying.event().await.id.as_deref(), Some(live.id.as_str()));
        assert_eq!(sse.event().await.id.as_deref(), Some(live.id.as_str()));

        // Leaving ends the member's streams after its own removal event.
        app.leave(&room, "bob", Some(&bob.token)).await.expect(204);
        let removed = sse.event().await;
        assert_eq!(removed.event.as_deref(), Some("remove:member:success"));
        assert_eq!(removed.json()["reason"], "left");
        sse.ended().await;
    }

    async fn sse_refuses_what_it_must(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("sse-auth");
        let alice = app.create_room(&room, "alice").await;
        let other = app.create_room(&unique_room("sse-auth-other"), "olga").await;
        let path = format!("/rooms/{room}/events");
        app.get(&path, None).await.expect_error(401, "unauthorized");
        app.get(&path, Some("garbage")).await.expect_error(401, "unauthorized");
        app.get(&path, Some(&other.token)).await.expect_error(401, "unauthorized");
        app.send(app.request(Method::GET, &path, Some(&alice.token)).header("Last-Event-ID", "nope"))
            .await
            .expect_error(400, "invalid_request");
        // Both are checked when both are given, though the header wins (found by schemathesis).
        let both = format!("{path}?lastEventId=nope");
        app.send(
            app.request(Method::GET, &both, Some(&alice.token))
                .header("Last-Event-ID", alice.last_event_id.as_str()),
        )
        .await
        .expect_error(400, "invalid_request");
        app.get("/rooms/bad%20id/events", Some(&alice.token)).await.expect_error(400, "invalid_request");
    }

    async fn online_while_held_and_timeout_after_the_connection_goes(backend: Backend) {
        let app = TestApp::spawn(backend, &[("MEMBER_TTL_SECS", "1")]).await;
        let room = unique_room("presence");
        let (mut alice, alice_ack) = ws_create(&app, &room, "alice").await;
        let alice_token = alice_ack["token"].as_str().unwrap().to_owned();
        let (bob_ws, bob_ack) = ws_join(&app, &room, "bob").await;
        alice.event_named("add:member:success").await;
        let carol = app.join_room(&room, "carol").await;
        alice.event_named("add:member:success").await;
        let mut members = app.member_list(&room, &alice_token).await;
        members.sort();
        assert_eq!(
            members,
            vec![("alice".to_owned(), true), ("bob".to_owned(), true), ("carol".to_owned(), false)],
            "online is whether a stream holds the member"
        );

        // Bob's client vanishes and carol makes no request: after MEMBER_TTL_SECS both are
        // removed with reason timeout, while alice, held by her connection, stays.
        drop(bob_ws);
        let mut timed_out = Vec::new();
        while timed_out.len() < 2 {
            let event = alice.event_named("remove:member:success").await;
            assert_eq!(event["data"]["reason"], "timeout", "{event}");
            timed_out.push(event["data"]["username"].as_str().unwrap().to_owned());
        }
        timed_out.sort();
        assert_eq!(timed_out, ["bob", "carol"]);
        let bob_token = bob_ack["token"].as_str().unwrap();
        app.get(&format!("/rooms/{room}/members"), Some(bob_token)).await.expect_error(401, "unauthorized");
        app.get(&format!("/rooms/{room}/members"), Some(&carol.token)).await.expect_error(401, "unauthorized");
        let members = app.member_list(&room, &alice_token).await;
        assert_eq!(members, vec![("alice".to_owned(), true)]);
    }

    async fn a_client_that_stops_reading_is_closed_and_the_room_goes_on(backend: Backend) {
        let app = TestApp::spawn(backend, &[("CLIENT_QUEUE_LEN", "32"), ("RATE_LIMITS", "off")]).await;
        let room = unique_room("slow");
        let (mut alice, ack) = ws_create(&app, &room, "alice").await;
        let token = ack["token"].as_str().unwrap().to_owned();
        let mut slow = WsClient::connect_small_buffer(&app.base_url).await;
        slow.ack("add:member", "join", json!({"roomId": room, "username": "slow"})).await;
        alice.event_named("add:member:success").await;
        let slow_socket = slow.into_inner();

        // Alice reads as she should, concurrently.
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            loop {
                let event = alice.event().await;
                if seen_tx.send(event["id"].as_str().unwrap().to_owned()).is_err() {
                    return alice;
                }
            }
        });
        // Big messages fill the slow client's socket buffers, then its queue.
        let payload = "x".repeat(4000);
        let mut sent = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            for _ in 0..50 {
                sent.push(app.say(&room, &token, &payload).await.id);
            }
            // Its connection let go of the member: it is offline now.
            let members = app.member_list(&room, &token).await;
            if members.contains(&("slow".to_owned(), false)) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the slow client was never disconnected");
        }
        // Alice kept receiving every message, in order.
        for id in &sent {
            let got = tokio::time::timeout(Duration::from_secs(10), seen.recv())
                .await
                .expect("alice stopped receiving")
                .expect("alice's reader ended");
            assert_eq!(&got, id);
        }
        drop(seen);
        reader.abort();
        // The slow client, once it reads again, finds its stream closed with 1013.
        let mut slow = slow_socket;
        let code = tokio::time::timeout(Duration::from_secs(30), async {
            use futures_util::StreamExt;
            while let Some(message) = slow.next().await {
                if let Ok(WsMessage::Close(frame)) = message {
                    return frame.map(|f| u16::from(f.code));
                }
            }
            None
        })
        .await
        .expect("the slow client's stream ended");
        assert_eq!(code, Some(1013));
    }

    async fn a_busy_room_coalesces_while_behind_and_delivers_every_event_once_in_order(backend: Backend) {
        // Bob and Carol read nothing while Alice's acks are read: they fall behind.
        let (delivered, pushes) =
            busy_room_delivers_every_event_once_in_order(backend, &[("RATE_LIMITS", "off")]).await;
        assert!(
            delivered >= 900.0 && pushes < delivered,
            "a busy room pushes batches: {delivered} events in {pushes} pushes"
        );
    }

    async fn a_busy_room_without_a_window_delivers_every_event_once_in_order(backend: Backend) {
        let env = [("RATE_LIMITS", "off"), ("FANOUT_COALESCE_MS", "0")];
        let (delivered, _) = busy_room_delivers_every_event_once_in_order(backend, &env).await;
        assert!(delivered >= 900.0, "300 events to 3 connections: {delivered} delivered");
    }

    async fn posts_waiting_together_are_answered_and_stored_once_in_order(backend: Backend) {
        let on_redis = matches!(backend, Backend::Redis(_) | Backend::Cluster(_));
        let app = TestApp::spawn(backend, &[("RATE_LIMITS", "off")]).await;
        let room = unique_room("together");
        let other_room = unique_room("together-elsewhere");
        let (mut alice, alice_ack) = ws_create(&app, &room, "alice").await;
        let alice_token = alice_ack["token"].as_str().expect("a token").to_owned();
        let (mut bob, _) = ws_join(&app, &room, "bob").await;
        let _ = alice.event_named("add:member:success").await;
        let post_rounds = || async {
            let metrics = app.get("/metrics", None).await.text;
            metric_sample(&metrics, "chat_redis_round_trip_seconds_count{op=\"post\"}")
                .unwrap_or(0.0)
        };
        let rounds_before = post_rounds().await;
        // One write holding posts, a retried post (same clientMsgId), and frames that end a
        // run of posts: another member's name, a malformed post, a room not held.
        let chat = |n: usize| json!({"roomId": room, "message": format!("together {n}")});
        let mut frames: Vec<(&str, String, Value)> = Vec::new();
        for n in 0..5 {
            frames.push(("create:chat", format!("m{n}"), chat(n)));
        }
        let keyed = json!({"roomId": room, "message": "together 5", "clientMsgId": "once"});
        frames.push(("create:chat", "m5".into(), keyed.clone()));
        frames.push(("create:chat", "m6".into(), keyed));
        let mut as_bob = chat(7);
        as_bob["username"] = json!("bob");
        frames.push(("create:chat", "m7".into(), as_bob));
        frames.push(("create:chat", "m8".into(), json!({"roomId": room})));
        frames.push((
            "create:chat",
            "m9".into(),
            json!({"roomId": other_room, "message": "nowhere"}),
        ));
        for n in 10..40 {
            frames.push(("create:chat", format!("m{n}"), chat(n)));
        }
        alice.send_together(&frames).await;

        let mut ids = Vec::new();
        for (n, (_, reference, _)) in frames.iter().enumerate() {
            let reply = alice.reply().await;
            assert_eq!(&reply["ref"], reference, "replies in the order sent: {reply}");
            match n {
                7 => assert_eq!(reply["data"]["code"], "forbidden", "{reply}"),
                8 => assert_eq!(reply["data"]["code"], "invalid_request", "{reply}"),
                9 => assert_eq!(reply["data"]["code"], "not_member", "{reply}"),
                _ => {
                    assert_eq!(reply["event"], "ack", "{reply}");
                    let expected = if n == 6 { 5 } else { n };
                    assert_eq!(reply["data"]["message"], format!("together {expected}"));
                    ids.push(reply["data"]["id"].as_str().expect("an id").to_owned());
                }
            }
        }
        assert_eq!(ids[5], ids[6], "the retried post is the first one's message");

        // Stored once each, in the order sent, and delivered so.
        let stored: Vec<String> = app
            .history_page(&room, &alice_token, "limit=100")
            .await
            .0
            .into_iter()
            .map(|message| message.message)
            .collect();
        let expected: Vec<String> = (0..40)
            .filter(|n| ![6, 7, 8, 9].contains(n))
            .map(|n| format!("together {n}"))
            .collect();
        assert_eq!(stored, expected, "the log, in the order sent");
        for text in &expected {
            let event = bob.event_named("create:chat:success").await;
            assert_eq!(&event["data"]["message"], text, "bob, in order");
        }
        if on_redis {
            let rounds = post_rounds().await - rounds_before;
            assert!(
                rounds < expected.len() as f64,
                "posts waiting together share round trips: {rounds} for {} posts",
                expected.len()
            );
        }
    }

    async fn a_resume_in_a_busy_room_replays_then_goes_live_without_a_seam(backend: Backend) {
        let app = TestApp::spawn(backend, &[("RATE_LIMITS", "off")]).await;
        let room = unique_room("busy-resume");
        let (mut alice, _) = ws_create(&app, &room, "alice").await;
        let (mut bob, bob_ack) = ws_join(&app, &room, "bob").await;
        let bob_token = bob_ack["token"].as_str().expect("a token").to_owned();
        // Alice keeps the room busy (1000 events/s) while Bob drops and resumes.
        const MESSAGES: usize = 400;
        let flood_room = room.clone();
        let flood = tokio::spawn(async move {
            let mut pace = tokio::time::interval(Duration::from_millis(1));
            for n in 0..MESSAGES {
                pace.tick().await;
                let data = json!({"roomId": flood_room, "message": format!("busy {n}")});
                alice.send("create:chat", &format!("m{n}"), data).await;
            }
            alice
        });
        let mut resume_after = String::new();
        for n in 0..100 {
            let event = bob.event_named("create:chat:success").await;
            assert_eq!(event["data"]["message"], format!("busy {n}"));
            resume_after = event["id"].as_str().expect("an event id").to_owned();
        }
        drop(bob);
        let (mut bob, resumed) = WsClient::resumed(&app.base_url, &room, &bob_token, &resume_after).await;
        assert_eq!(resumed["complete"], true);
        // Replayed, then live: every later message once, in order, across the seam.
        for n in 100..MESSAGES {
            let event = bob.event_named("create:chat:success").await;
            assert_eq!(event["data"]["message"], format!("busy {n}"), "after {resume_after}");
        }
        let _alice = flood.await.expect("the flood task ends");
    }

    async fn streams_close_at_their_lifetime(backend: Backend) {
        let app = TestApp::spawn(backend, &[("WS_MAX_LIFETIME_SECS", "1")]).await;
        let room = unique_room("lifetime");
        let (mut ws, ack) = ws_create(&app, &room, "alice").await;
        let token = ack["token"].as_str().unwrap().to_owned();
        let mut sse = SseClient::open(sse_request(&app, &room, &token)).await;
        assert_eq!(ws.closed().await, WsEnd::Closed(Some(1012)));
        sse.ended().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_streams_with_1012() {
    let app = TestApp::spawn(Backend::Memory, &[]).await;
    let room = unique_room("shutdown");
    let (mut ws, ack) = ws_create(&app, &room, "alice").await;
    let token = ack["token"].as_str().unwrap().to_owned();
    let mut sse = SseClient::open(sse_request(&app, &room, &token)).await;
    drop(app);
    assert_eq!(ws.closed().await, WsEnd::Closed(Some(1012)));
    sse.ended().await;
}

/// A key twice in `data` is refused like a key twice in the envelope, not read last-wins
/// (which would act on a value a reader of the first key never saw). Decoding is the same on
/// both stores: one is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_refuses_duplicate_keys_in_data() {
    let app = TestApp::spawn(Backend::Memory, &[]).await;
    let room = unique_room("ws-dup");
    let decoy = unique_room("ws-dup-decoy");
    let (mut alice, _) = ws_create(&app, &room, "alice").await;
    let frames = [
        (
            "create:room",
            format!(r#"{{"roomId":"{decoy}","roomId":"{room}-2","username":"alice"}}"#),
            "roomId",
        ),
        (
            "create:chat",
            format!(r#"{{"roomId":"{room}","message":"shown","message":"stored"}}"#),
            "message",
        ),
    ];
    for (event, data, key) in frames {
        let frame = format!(r#"{{"event":"{event}","ref":"dup","data":{data}}}"#);
        alice.send_raw(WsMessage::text(frame)).await;
        let reply = alice.recv().await;
        assert_eq!(reply["ref"], "dup", "{reply}");
        assert_eq!(reply["event"], "error", "{event} with {key} twice: {reply}");
        assert_eq!(reply["data"]["code"], "invalid_request", "{reply}");
        let message = reply["data"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("duplicate field `{key}`")),
            "{message}"
        );
    }
    // Nothing was done: neither room exists, no message was stored, the connection is open.
    app.create_room(&decoy, "bob").await;
    app.create_room(&format!("{room}-2"), "bob").await;
    alice
        .ack(
            "create:chat",
            "after",
            json!({"roomId": room, "message": "after"}),
        )
        .await;
    assert_eq!(alice.event().await["data"]["message"], "after");
}

/// RFC 6455 7.4.1: a text frame that is not UTF-8 closes with 1007, a protocol violation (an
/// unmasked client frame, a reserved bit set) with 1002; both with a close frame, not a
/// dropped connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_protocol_violations_close_with_their_code() {
    let app = TestApp::spawn(Backend::Memory, &[]).await;
    let key = Some([0x37, 0xfa, 0x21, 0x3d]);
    let cases = [
        (
            "an unmasked text frame",
            client_frame(0x81, b"{}", None),
            1002,
        ),
        (
            "a text frame that is not UTF-8",
            client_frame(0x81, &[0x7b, 0xff, 0x7d], key),
            1007,
        ),
        (
            "a frame with RSV1 set",
            client_frame(0xc1, b"{}", key),
            1002,
        ),
    ];
    for (what, frame, code) in cases {
        let mut ws = WsClient::connect(&app.base_url).await;
        ws.send_bytes(&frame).await;
        assert_eq!(ws.closed().await, WsEnd::Closed(Some(code)), "{what}");
    }
}
