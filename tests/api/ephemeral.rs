//! Ephemeral events (API.md, "Presence and typing"): `presence` from what holds a member on
//! every transport and instance, `typing` from WebSocket, socket.io and REST with its 2 s
//! throttle; no id on any transport (SSE: no `id:` line), never replayed on resume; a
//! reconnect within the grace tells nothing; the members of a killed instance go offline as
//! its marks lapse, before they time out.
//!
//! The WebSocket and SSE clients set ephemeral events aside from the sequences other tests
//! read (`support::stream`); here they are read with `ephemeral()`. That nothing more came
//! is shown by a later event on the same room (a chat, another member's presence), which the
//! room's one feed delivers after anything published before it: never by waiting.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use chat_server::presence::GRACE;

use crate::support::process::ServerProcess;
use crate::support::socketio::{SioClient, websocket_only};
use crate::support::stream::{SseClient, WsClient, WsEnd};
use crate::support::{Backend, RedisServer, TestApp, metric_sample, unique_room};

/// Asserts a `/ws` frame is exactly this `presence`: `{event, data}`, no `id`.
#[track_caller]
fn assert_presence(frame: &Value, room: &str, username: &str, online: bool) {
    assert_eq!(
        frame,
        &json!({
            "event": "presence",
            "data": {"roomId": room, "username": username, "online": online},
        })
    );
}

/// Asserts a `/ws` frame is exactly this `typing`: `{event, data}`, no `id`.
#[track_caller]
fn assert_typing(frame: &Value, room: &str, username: &str) {
    assert_eq!(
        frame,
        &json!({"event": "typing", "data": {"roomId": room, "username": username}})
    );
}

/// Closes a WebSocket from the client's side and waits until the server has ended it (its
/// end of the TCP connection closes once the session let go of its memberships).
async fn close_and_wait(mut ws: WsClient) {
    ws.send_raw(Message::Close(None)).await;
    assert!(matches!(ws.closed().await, WsEnd::Closed(_) | WsEnd::Gone));
}

conformance! {
    /// Bob on another instance (a store of its own: the same one) comes online, types (a
    /// burst: one broadcast), chats, and goes: alice is told each, with no id, and never of
    /// herself. REST and a token-carrying WebSocket type too; the refusals are API.md's.
    async fn presence_and_typing_reach_the_room_with_no_id(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let other = match backend {
            Backend::Memory => None,
            _ => Some(TestApp::spawn(backend, &[]).await),
        };
        let bobs_app = other.as_ref().unwrap_or(&app);
        let room = unique_room("ephemeral");
        let (mut alice, _) = WsClient::creator_of(&app.base_url, &room, "alice").await;
        let mut bob = WsClient::member_of(&bobs_app.base_url, &room, "bob").await;
        alice.event_named("add:member:success").await;
        // Not her own first: alice was told nothing of herself.
        assert_presence(&alice.ephemeral().await, &room, "bob", true);

        for n in 0..5 {
            let ack = bob
                .ack_among_events("typing", &format!("t{n}"), json!({"roomId": room}))
                .await;
            assert_eq!(ack, json!({"roomId": room}), "typing acks its room");
        }
        assert_typing(&alice.ephemeral().await, &room, "bob");
        // Bob's chat comes after his typings on the room's feed: the burst was one broadcast.
        bob.ack_among_events("create:chat", "m", json!({"roomId": room, "message": "hi"}))
            .await;
        alice.event_named("create:chat:success").await;
        assert_eq!(alice.take_ephemeral(), Vec::<Value>::new());
        bob.event_named("create:chat:success").await;
        assert_eq!(bob.take_ephemeral(), Vec::<Value>::new(), "nothing of himself");

        // REST: no body, no Content-Type, 204.
        let carol = app.join_room(&room, "carol").await;
        let typing = format!("/rooms/{room}/typing");
        let reply = app
            .send(app.request(Method::POST, &typing, Some(&carol.token)))
            .await;
        assert_eq!(reply.status, 204, "{}", reply.text);
        assert!(reply.text.is_empty());
        assert_typing(&alice.ephemeral().await, &room, "carol");
        // Counted by kind, and the burst's drops too (one process: both instances count here).
        let metrics = app.get("/metrics", None).await.text;
        for (series, at_least) in [
            ("chat_ephemeral_published_total{kind=\"presence\"}", 2.0),
            ("chat_ephemeral_published_total{kind=\"typing\"}", 2.0),
            ("chat_ephemeral_delivered_total{kind=\"presence\"}", 1.0),
            ("chat_ephemeral_delivered_total{kind=\"typing\"}", 2.0),
            ("chat_typing_throttled_total", 4.0),
        ] {
            let value = metric_sample(&metrics, series);
            assert!(
                value.is_some_and(|value| value >= at_least),
                "{series} = {value:?}, expected at least {at_least}"
            );
        }
        app.send(app.request(Method::POST, &typing, None))
            .await
            .expect_error(401, "unauthorized");
        app.send(app.request(Method::POST, &typing, Some("not-a-token")))
            .await
            .expect_error(401, "unauthorized");
        app.send(app.request(Method::POST, "/rooms/bad%20id/typing", Some(&carol.token)))
            .await
            .expect_error(400, "invalid_request");
        // A connection that holds no membership: the event's token, or not_member.
        let mut stranger = WsClient::connect(&app.base_url).await;
        stranger
            .expect_error("typing", "s1", json!({"roomId": room}), "not_member")
            .await;
        stranger
            .expect_error("typing", "s2", json!({"roomId": room, "token": "nope"}), "not_member")
            .await;
        let ack = stranger
            .ack("typing", "s3", json!({"roomId": room, "token": carol.token}))
            .await;
        assert_eq!(ack, json!({"roomId": room}));
        stranger
            .expect_error("typing", "s4", json!({}), "invalid_request")
            .await;

        // Bob's last connection goes: after the grace, alice is told. (The token-carrying
        // typing above went out only if carol's REST one was over 2 s earlier.)
        let closing = Instant::now();
        close_and_wait(bob).await;
        let mut next = alice.ephemeral().await;
        if next["event"] == "typing" {
            assert_typing(&next, &room, "carol");
            next = alice.ephemeral().await;
        }
        assert_presence(&next, &room, "bob", false);
        // Never before the grace; about 2 s on an idle machine, and the bound documented is
        // 3 s (the slack is for a loaded one).
        let took = closing.elapsed();
        assert!(
            (GRACE..GRACE + Duration::from_secs(3)).contains(&took),
            "offline {took:?} after the close"
        );
        assert_eq!(
            app.member_list(&room, &carol.token).await,
            [
                ("alice".to_owned(), true),
                ("bob".to_owned(), false),
                ("carol".to_owned(), false),
            ]
        );
    }

    /// Bob leaves and joins again under his name at once, on a new connection: his removal
    /// says he went (no `presence` with it), and his new membership comes online as any does
    /// (his old one's grace does not hide the new one).
    async fn a_member_that_leaves_and_joins_again_comes_online_again(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("rejoin");
        let (mut alice, _) = WsClient::creator_of(&app.base_url, &room, "alice").await;
        let mut bob = WsClient::member_of(&app.base_url, &room, "bob").await;
        assert_presence(&alice.ephemeral().await, &room, "bob", true);
        bob.ack_among_events(
            "remove:member",
            "l",
            json!({"roomId": room, "username": "bob"}),
        )
        .await;
        bob.event_named("remove:member:success").await;
        let mut again = WsClient::member_of(&app.base_url, &room, "bob").await;
        let removed = alice.event_named("remove:member:success").await;
        assert_eq!(removed["data"]["reason"], "left");
        alice.event_named("add:member:success").await;
        // At once, not at the next periodic refresh (10 s away at most).
        let online = tokio::time::timeout(Duration::from_secs(5), alice.ephemeral())
            .await
            .expect("bob's presence at his join");
        assert_presence(&online, &room, "bob", true);
        again
            .ack_among_events("create:chat", "m", json!({"roomId": room, "message": "back"}))
            .await;
        alice.event_named("create:chat:success").await;
        assert_eq!(alice.take_ephemeral(), Vec::<Value>::new());
    }

    /// Bob's connection drops and he resumes at once: nothing is told of him. Carol, who
    /// dropped after him and stays away, is told offline after the grace: any release of bob
    /// (whose grace ended first) would have come before it.
    async fn a_reconnect_within_the_grace_tells_nothing(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("flap");
        let (mut alice, _) = WsClient::creator_of(&app.base_url, &room, "alice").await;
        let mut bob = WsClient::connect(&app.base_url).await;
        let bob_ack = bob
            .ack("add:member", "j", json!({"roomId": room, "username": "bob"}))
            .await;
        assert_presence(&alice.ephemeral().await, &room, "bob", true);
        let carol = WsClient::member_of(&app.base_url, &room, "carol").await;
        assert_presence(&alice.ephemeral().await, &room, "carol", true);

        close_and_wait(bob).await;
        close_and_wait(carol).await;
        let token = bob_ack["token"].as_str().expect("a token");
        let joined = bob_ack["lastEventId"].as_str().expect("an id");
        let (mut bob, resumed) = WsClient::resumed(&app.base_url, &room, token, joined).await;
        assert_eq!(resumed["complete"], true);

        assert_presence(&alice.ephemeral().await, &room, "carol", false);
        bob.ack_among_events("create:chat", "m", json!({"roomId": room, "message": "still here"}))
            .await;
        alice.event_named("create:chat:success").await;
        assert_eq!(alice.take_ephemeral(), Vec::<Value>::new());
        let members = app
            .member_list(&room, token)
            .await;
        assert_eq!(
            members,
            [
                ("alice".to_owned(), true),
                ("bob".to_owned(), true),
                ("carol".to_owned(), false),
            ]
        );
    }

    /// Bob's page closes (his presence enters its grace), alice, the owner, kicks him, and
    /// he joins again under his name within the grace: the new bob is a new member whose
    /// presence the kick cleared, so he is told online at once, not at the next periodic
    /// refresh (the grace's "held again" would have left him shown offline until then).
    async fn a_member_kicked_in_its_grace_comes_back_online_at_once(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("kickgrace");
        let (mut alice, _) = WsClient::creator_of(&app.base_url, &room, "alice").await;
        let bob = WsClient::member_of(&app.base_url, &room, "bob").await;
        assert_presence(&alice.ephemeral().await, &room, "bob", true);
        close_and_wait(bob).await;
        alice
            .ack_among_events(
                "remove:member",
                "k",
                json!({"roomId": room, "username": "bob"}),
            )
            .await;
        let removed = alice.event_named("remove:member:success").await;
        assert_eq!(removed["data"]["reason"], "kicked");
        let _again = WsClient::member_of(&app.base_url, &room, "bob").await;
        alice.event_named("add:member:success").await;
        let online = tokio::time::timeout(GRACE * 2, alice.ephemeral())
            .await
            .expect("the new bob's presence at his join, within the old one's grace");
        assert_presence(&online, &room, "bob", true);
    }
}

/// Two instances on one Redis: alice on `/ws` at A, bob's SSE stream at B. Each is told of
/// the other across instances; the stream's `typing` and `presence` have no `id:` line (the
/// chat between them has its id), and a resume, on either transport, replays the chat alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_get_them_without_ids_and_resumes_replay_none() {
    let redis = RedisServer::start();
    let a = TestApp::spawn(Backend::Redis(&redis), &[]).await;
    let b = TestApp::spawn(Backend::Redis(&redis), &[]).await;
    let room = unique_room("ephemeral-sse");
    let (mut alice, _) = WsClient::creator_of(&a.base_url, &room, "alice").await;
    let bob = b.join_room(&room, "bob").await;
    let events = format!("/rooms/{room}/events");
    let mut stream = SseClient::open(b.request(Method::GET, &events, Some(&bob.token))).await;
    assert_presence(&alice.ephemeral().await, &room, "bob", true);

    alice
        .ack_among_events("typing", "t", json!({"roomId": room}))
        .await;
    let typing = stream.ephemeral().await;
    assert_eq!(
        (typing.id.as_deref(), typing.event.as_deref()),
        (None, Some("typing")),
        "{typing:?}"
    );
    assert_eq!(typing.json(), json!({"roomId": room, "username": "alice"}));
    let chat = alice
        .ack_among_events(
            "create:chat",
            "m",
            json!({"roomId": room, "message": "after typing"}),
        )
        .await;
    let event = stream.event().await;
    assert_eq!(event.id.as_deref(), chat["id"].as_str(), "{event:?}");

    close_and_wait(alice).await;
    let offline = stream.ephemeral().await;
    assert_eq!(
        (offline.id.as_deref(), offline.event.as_deref()),
        (None, Some("presence")),
        "{offline:?}"
    );
    assert_eq!(
        offline.json(),
        json!({"roomId": room, "username": "alice", "online": false})
    );

    // Resumed after bob's join, at A: the chat, then what comes live (a marker), nothing else.
    let mut resumed = SseClient::open(
        a.request(Method::GET, &events, Some(&bob.token))
            .header("Last-Event-ID", &bob.last_event_id),
    )
    .await;
    let replayed = resumed.event().await;
    assert_eq!(replayed.id.as_deref(), chat["id"].as_str(), "{replayed:?}");
    let marker = a.say(&room, &bob.token, "marker").await;
    assert_eq!(
        resumed.event().await.id.as_deref(),
        Some(marker.id.as_str())
    );
    assert_eq!(resumed.take_ephemeral(), Vec::new());
    let (mut ws, ack) = WsClient::resumed(&a.base_url, &room, &bob.token, &bob.last_event_id).await;
    assert_eq!(ack["replayed"], 2, "the chat and the marker: {ack}");
    assert_eq!(ws.event().await["id"], chat["id"]);
    assert_eq!(ws.event().await["id"].as_str(), Some(marker.id.as_str()));
    assert_eq!(ws.take_ephemeral(), Vec::<Value>::new());
}

/// A killed instance's member: its mark lapses and the instance still holding the room tells
/// alice it went offline, while it is still a member (the timeout comes later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_members_of_a_killed_instance_go_offline_before_they_time_out() {
    // Refreshes every 2 s, marks live 6 s, leases 12 s: told offline within 8 s of the kill,
    // timed out no sooner than 10 s after it.
    const TTL: &str = "12";
    let redis = RedisServer::start();
    let url = redis.url();
    let mut doomed =
        ServerProcess::start(&[("REDIS_URL", url.as_str()), ("MEMBER_TTL_SECS", TTL)]).await;
    let survivor = TestApp::spawn(Backend::Redis(&redis), &[("MEMBER_TTL_SECS", TTL)]).await;
    let room = unique_room("killed-presence");
    let (mut alice, ack) = WsClient::creator_of(&survivor.base_url, &room, "alice").await;
    let _bob = WsClient::member_of(&doomed.base_url, &room, "bob").await;
    assert_presence(&alice.ephemeral().await, &room, "bob", true);

    doomed.kill();
    let killed = Instant::now();
    assert_presence(&alice.ephemeral().await, &room, "bob", false);
    let token = ack["token"].as_str().expect("a token");
    assert_eq!(
        survivor.member_list(&room, token).await,
        [("alice".to_owned(), true), ("bob".to_owned(), false)],
        "told {:?} after the kill, before bob timed out",
        killed.elapsed()
    );
    let removed = alice.event_named("remove:member:success").await;
    assert_eq!(
        (&removed["data"]["username"], &removed["data"]["reason"]),
        (&json!("bob"), &json!("timeout"))
    );
}

/// The real socket.io client types with an ack callback (acked `{roomId}`), and receives
/// `typing` and `presence` with their data and no `id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_clients_type_and_are_told() {
    let app = TestApp::spawn(Backend::Memory, &[]).await;
    let room = unique_room("sio-typing");
    let (mut alice, _) = WsClient::creator_of(&app.base_url, &room, "alice").await;
    let mut bob = SioClient::connect(&app.base_url, Some(websocket_only())).await;
    bob.call("add:member", json!({"roomId": room, "username": "bob"}))
        .await;
    bob.event("add:member:success").await;
    assert_presence(&alice.ephemeral().await, &room, "bob", true);

    let ack = bob.call("typing", json!({"roomId": room})).await;
    assert_eq!(ack, json!({"roomId": room}));
    assert_typing(&alice.ephemeral().await, &room, "bob");

    let carol = WsClient::member_of(&app.base_url, &room, "carol").await;
    alice
        .ack_among_events("typing", "t", json!({"roomId": room}))
        .await;
    alice
        .ack_among_events(
            "create:chat",
            "m",
            json!({"roomId": room, "message": "marker"}),
        )
        .await;
    bob.event("add:member:success").await;
    bob.event("create:chat:success").await;
    let told = |event: &str, data: Value| json!({"type": "event", "event": event, "args": [data]});
    assert_eq!(
        bob.ephemeral,
        [
            told(
                "presence",
                json!({"roomId": room, "username": "carol", "online": true})
            ),
            told("typing", json!({"roomId": room, "username": "alice"})),
        ]
    );
    bob.close().await;
    drop(carol);
}
