//! socket.io (API.md, "socket.io: the original clients, unchanged"), driven by the real
//! `socket.io-client` from npm ([`SioClient`]) as the original tutorial's frontend uses it:
//! default options (polling, then the upgrade), WebSocket only and polling only. The original
//! events and error sentences, acks before broadcasts, resume, bad input answered without a
//! crash, the packet and message size limits, origins, the per-address connection cap, and
//! one room shared by socket.io, WebSocket and SSE clients on two instances over Redis.
//! Where no client would misbehave as a test needs (stop polling, malformed packets), the test
//! speaks Engine.IO itself ([`EioPolling`], [`EioSocket`]).

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::socketio::{
    EIO_POLLING, EioPolling, EioSocket, SioClient, open_packet, polling_only, websocket_only,
};
use crate::support::stream::{SseClient, Upgrade, WsClient};
use crate::support::{
    Backend, RedisServer, TestApp, assert_rfc3339_millis_utc, event_id, eventually, metric_sample,
    unique_room,
};

const ROOM_EXISTS: &str = "Room already exist.";
const ROOM_NOT_FOUND: &str = "Room does not exist.";
const USERNAME_TAKEN: &str = "Username already exists, please choose another username.";

/// Runs `async fn scenario(options: Value)` once per transport, as the tests
/// `scenario::websocket` and `scenario::polling` (`io(url, options)` with that transport only).
macro_rules! over_websocket_and_polling {
    ($scenario:ident) => {
        mod $scenario {
            use crate::support::socketio::{polling_only, websocket_only};

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn websocket() {
                super::$scenario(websocket_only()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn polling() {
                super::$scenario(polling_only()).await;
            }
        }
    };
}

/// An object's keys, sorted.
fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("expected an object, got {value}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// `options` with automatic reconnection off, for tests in which the socket must stay gone.
fn no_reconnection(mut options: Value) -> Value {
    options["reconnection"] = json!(false);
    options
}

/// Asserts an ack callback's argument is exactly `{error: {code, message}}` with this code
/// and a sentence.
#[track_caller]
fn assert_ack_error(reply: &Value, code: &str, what: &str) {
    assert_eq!(keys(reply), ["error"], "{what}: {reply}");
    assert_eq!(
        keys(&reply["error"]),
        ["code", "message"],
        "{what}: {reply}"
    );
    assert_eq!(reply["error"]["code"], code, "{what}: {reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .is_some_and(|message| !message.trim().is_empty()),
        "{what}: {reply}"
    );
}

/// Asserts an `error` event's data is exactly `{message, code}` with this code and a sentence.
#[track_caller]
fn assert_error_event(data: &Value, code: &str, what: &str) {
    assert_eq!(keys(data), ["code", "message"], "{what}: {data}");
    assert_eq!(data["code"], code, "{what}: {data}");
    assert!(
        data["message"]
            .as_str()
            .is_some_and(|message| !message.trim().is_empty()),
        "{what}: {data}"
    );
}

/// Emits `event` with `data` as the original clients do (no ack callback); returns the
/// `error` event that must follow.
async fn refusal(client: &mut SioClient, event: &str, data: Value) -> Value {
    client.emit(event, json!([data]));
    client.event("error").await
}

/// What the original tutorial's frontend does, with `options` (`None`: the defaults): no
/// ack callbacks, the room's broadcasts are the answers, failures come as `error` with the
/// original sentences. `transport` is where the clients must end up.
async fn the_original_frontend(options: Option<Value>, transport: &str) {
    let app = TestApp::spawn(Backend::Memory, &[]).await;
    let room = unique_room("sio-original");
    let mut alice = SioClient::connect(&app.base_url, options.clone()).await;
    let mut bob = SioClient::connect(&app.base_url, options.clone()).await;
    let mut carol = SioClient::connect(&app.base_url, options).await;

    alice.emit(
        "create:room",
        json!([{"roomId": room, "username": "alice"}]),
    );
    let created = alice.event("create:room:success").await;
    assert_eq!(keys(&created), ["id", "roomId", "username"], "{created}");
    assert_eq!(
        (created["roomId"].as_str(), created["username"].as_str()),
        (Some(room.as_str()), Some("alice"))
    );
    let joined = alice.event("add:member:success").await;
    assert_eq!(keys(&joined), ["id", "roomId", "username"], "{joined}");
    assert_eq!(joined["username"], "alice");
    let created_id = event_id(created["id"].as_str().expect("an id"));
    assert!(event_id(joined["id"].as_str().expect("an id")) > created_id);

    let again = json!({"roomId": room, "username": "alice"});
    assert_eq!(
        refusal(&mut alice, "create:room", again).await,
        json!({"message": ROOM_EXISTS, "code": "room_exists"})
    );

    bob.emit("add:member", json!([{"roomId": room, "username": "bob"}]));
    let bob_joined = bob.event("add:member:success").await;
    assert_eq!(bob_joined["username"], "bob");
    assert_eq!(alice.event("add:member:success").await, bob_joined);

    let taken = json!({"roomId": room, "username": "bob"});
    assert_eq!(
        refusal(&mut carol, "add:member", taken).await,
        json!({"message": USERNAME_TAKEN, "code": "username_taken"})
    );
    let missing = json!({"roomId": unique_room("sio-missing"), "username": "carol"});
    assert_eq!(
        refusal(&mut carol, "add:member", missing).await,
        json!({"message": ROOM_NOT_FOUND, "code": "room_not_found"})
    );

    // The original clients send their username with each message.
    alice.emit(
        "create:chat",
        json!([{"roomId": room, "username": "alice", "message": "hello <b>bob</b>"}]),
    );
    let chat = alice.event("create:chat:success").await;
    assert_eq!(
        keys(&chat),
        ["id", "message", "roomId", "ts", "username"],
        "{chat}"
    );
    assert_eq!(chat["message"], "hello <b>bob</b>");
    assert_eq!(chat["username"], "alice");
    assert_rfc3339_millis_utc(chat["ts"].as_str().expect("a ts"));
    assert_eq!(
        bob.event("create:chat:success").await,
        chat,
        "the same event for everyone"
    );

    bob.emit(
        "remove:member",
        json!([{"roomId": room, "username": "bob"}]),
    );
    let left = bob.event("remove:member:success").await;
    assert_eq!(
        keys(&left),
        ["id", "reason", "roomId", "username"],
        "{left}"
    );
    assert_eq!(
        (left["username"].as_str(), left["reason"].as_str()),
        (Some("bob"), Some("left"))
    );
    assert_eq!(alice.event("remove:member:success").await, left);

    match transport {
        "websocket" => alice.upgraded().await,
        _ => assert_eq!(alice.transport.as_deref(), Some(transport)),
    }
    // Nothing more for anyone: carol, who never joined, saw none of the room.
    for client in [alice, bob, carol] {
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_frontend_with_default_options_polls_then_upgrades() {
    the_original_frontend(None, "websocket").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_frontend_over_websocket_only() {
    the_original_frontend(Some(websocket_only()), "websocket").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_frontend_over_polling_only() {
    the_original_frontend(Some(polling_only()), "polling").await;
}

/// With ack callbacks: each ack (success or failure) comes before the broadcasts its event
/// caused, and a failure acked is not also an `error` event.
async fn acks_come_before_broadcasts(options: Value) {
    let app = TestApp::spawn(Backend::Memory, &[]).await;
    let room = unique_room("sio-acks");
    let mut alice = SioClient::connect(&app.base_url, Some(options.clone())).await;
    let mut bob = SioClient::connect(&app.base_url, Some(options)).await;

    let created = alice
        .call("create:room", json!({"roomId": room, "username": "alice"}))
        .await;
    assert_eq!(
        keys(&created),
        ["lastEventId", "roomId", "token", "username"],
        "{created}"
    );
    assert_eq!(created["username"], "alice");
    alice.event("create:room:success").await;
    let joined = alice.event("add:member:success").await;
    assert_eq!(joined["id"], created["lastEventId"]);

    let taken = bob
        .call("add:member", json!({"roomId": room, "username": "alice"}))
        .await;
    assert_eq!(
        taken,
        json!({"error": {"code": "username_taken", "message": USERNAME_TAKEN}})
    );
    // The next thing bob sees is this ack: no `error` event came after the failed one.
    let bob_ack = bob
        .call("add:member", json!({"roomId": room, "username": "bob"}))
        .await;
    assert_eq!(bob_ack["username"], "bob");
    let bob_joined = bob.event("add:member:success").await;
    assert_eq!(bob_joined["id"], bob_ack["lastEventId"]);
    assert_eq!(alice.event("add:member:success").await, bob_joined);

    let named = json!({"roomId": room, "message": "first", "clientMsgId": "m-1"});
    let stored = alice.call("create:chat", named.clone()).await;
    assert_eq!(
        keys(&stored),
        ["id", "message", "roomId", "ts", "username"],
        "{stored}"
    );
    assert_eq!(alice.event("create:chat:success").await, stored);
    assert_eq!(bob.event("create:chat:success").await, stored);
    // The same clientMsgId again: the stored message, nothing new broadcast (bob's next
    // event is his own message's).
    assert_eq!(alice.call("create:chat", named).await, stored);
    let from_bob = bob
        .call("create:chat", json!({"roomId": room, "message": "second"}))
        .await;
    assert_eq!(bob.event("create:chat:success").await, from_bob);
    assert_eq!(alice.event("create:chat:success").await, from_bob);

    let left = bob
        .call("remove:member", json!({"roomId": room, "username": "bob"}))
        .await;
    assert_eq!(keys(&left), ["lastEventId", "roomId", "username"], "{left}");
    let removed = bob.event("remove:member:success").await;
    assert_eq!(removed["id"], left["lastEventId"]);
    assert_eq!(alice.event("remove:member:success").await, removed);
    alice.close().await;
    bob.close().await;
}

over_websocket_and_polling!(acks_come_before_broadcasts);

conformance! {
    async fn a_socketio_resume_replays_what_the_socket_missed(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("sio-resume");
        let mut first = SioClient::connect(&app.base_url, Some(websocket_only())).await;
        let alice = first.call("create:room", json!({"roomId": room, "username": "alice"})).await;
        first.event("create:room:success").await;
        first.event("add:member:success").await;
        first.close().await;

        let bob = app.join_room(&room, "bob").await;
        let one = app.say(&room, &bob.token, "one").await;
        let two = app.say(&room, &bob.token, "two").await;

        // Back on another transport, after the last event it processed.
        let mut second = SioClient::connect(&app.base_url, Some(polling_only())).await;
        let resumed = second
            .call("resume", json!({"roomId": room, "token": alice["token"], "lastEventId": alice["lastEventId"]}))
            .await;
        assert_eq!(resumed, json!({"roomId": room, "username": "alice", "replayed": 3, "complete": true}));
        let bob_joined = second.event("add:member:success").await;
        assert_eq!(bob_joined, json!({"id": bob.last_event_id, "roomId": room, "username": "bob"}));
        for message in [&one, &two] {
            assert_eq!(
                second.event("create:chat:success").await,
                json!({"id": message.id, "roomId": room, "username": "bob", "message": message.message, "ts": message.ts})
            );
        }
        // Then live, and the socket holds alice's membership again: she chats without a token.
        let three = app.say(&room, &bob.token, "three").await;
        assert_eq!(second.event("create:chat:success").await["id"], three.id.as_str());
        let back = second.call("create:chat", json!({"roomId": room, "message": "back"})).await;
        assert_eq!(back["username"], "alice");
        assert_eq!(second.event("create:chat:success").await, back);

        // A wrong token is refused, on an ack and as an error event.
        let mut stranger = SioClient::connect(&app.base_url, Some(websocket_only())).await;
        let refused = stranger
            .call("resume", json!({"roomId": room, "token": "wrong", "lastEventId": alice["lastEventId"]}))
            .await;
        assert_ack_error(&refused, "unauthorized", "resume with a wrong token");
        stranger.emit("resume", json!([{"roomId": room, "token": "wrong", "lastEventId": alice["lastEventId"]}]));
        let error = stranger.event("error").await;
        assert_eq!(error["code"], "unauthorized", "{error}");
        second.close().await;
        stranger.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_the_socket_stays_open() {
    let app = TestApp::spawn(Backend::Memory, &[]).await;
    let room = unique_room("sio-bad");
    let mut client = SioClient::connect(&app.base_url, Some(websocket_only())).await;
    let alice = client
        .call("create:room", json!({"roomId": room, "username": "alice"}))
        .await;
    client.event("create:room:success").await;
    client.event("add:member:success").await;

    let binary = json!({"$binary": "AAEC"});
    let cases = [
        (
            "an unknown event",
            "no:such:event",
            json!([{"roomId": room}]),
        ),
        ("an unknown event without data", "hello", json!([])),
        ("data that is a string", "create:chat", json!(["hello"])),
        ("data that is a number", "create:chat", json!([42])),
        (
            "data that is an array",
            "create:chat",
            json!([[room, "hello"]]),
        ),
        ("null data", "create:chat", json!([null])),
        ("no data", "create:chat", json!([])),
        ("a missing field", "create:chat", json!([{"roomId": room}])),
        (
            "a message of the wrong type",
            "create:chat",
            json!([{"roomId": room, "message": 5}]),
        ),
        (
            "an empty message",
            "create:chat",
            json!([{"roomId": room, "message": "  "}]),
        ),
        (
            "a room id of the wrong type",
            "add:member",
            json!([{"roomId": 7, "username": "bob"}]),
        ),
        (
            "a room id that is not one",
            "create:room",
            json!([{"roomId": "no spaces", "username": "bob"}]),
        ),
        (
            "an extra argument",
            "create:chat",
            json!([{"roomId": room, "message": "hi"}, "extra"]),
        ),
        (
            "a binary attachment in the data",
            "create:chat",
            json!([{"roomId": room, "message": binary}]),
        ),
        ("binary data", "create:chat", json!([binary])),
        (
            "resume without a token",
            "resume",
            json!([{"roomId": room}]),
        ),
    ];
    for (what, event, args) in &cases {
        // With an ack callback, the ack says what was wrong; without, an `error` event does.
        let reply = client.call_args(event, args.clone()).await;
        assert_ack_error(&reply, "invalid_request", what);
        client.emit(event, args.clone());
        assert_error_event(&client.event("error").await, "invalid_request", what);
    }

    // Still open and still alice's: a message goes through, and it is the only one.
    let chat = client
        .call(
            "create:chat",
            json!({"roomId": room, "message": "still here"}),
        )
        .await;
    assert_eq!(client.event("create:chat:success").await, chat);
    assert_eq!(chat["username"], "alice");
    let token = alice["token"].as_str().expect("a token");
    let (messages, _) = app.history_page(&room, token, "").await;
    let texts: Vec<&str> = messages.iter().map(|m| m.message.as_str()).collect();
    assert_eq!(texts, ["still here"], "no bad input was stored");
    client.close().await;
}

/// Packets no client library sends: each is answered, ignored or ends its socket, never
/// leaves it hanging, and the server goes on serving everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_end_or_spare_their_socket_and_nothing_else() {
    let app = TestApp::spawn(Backend::Memory, &[]).await;
    let garbage = [
        "42",
        "42[",
        "42{}",
        "42[]",
        "42[1,2]",
        "42[null]",
        "42\"create:room\"",
        "4",
        "49",
        "9",
        "41/elsewhere,",
        "43[{}]",
        "451-[\"create:chat\",{\"_placeholder\":true,\"num\":0}]",
        "42[\"create:room\",{\"roomId\":\"x\",\"username\":\"y\"},{\"_placeholder\":true,\"num\":0}]",
    ];
    for (n, packet) in garbage.iter().enumerate() {
        let mut socket = EioSocket::connect(&app.base_url).await;
        socket.send(packet).await;
        let room = unique_room("sio-garbage");
        let call = format!(
            "420{}",
            json!(["create:room", {"roomId": room, "username": format!("u{n}")}])
        );
        // The socket may already be gone (then this write or the read below says so).
        if socket.try_send(&call).await {
            loop {
                match socket.next().await {
                    Ok(reply) if reply.starts_with("430") => {
                        assert!(reply.contains("\"token\""), "after {packet:?}: {reply}");
                        break;
                    }
                    Ok(_) => continue,
                    Err(_ended) => break,
                }
            }
        }
    }
    let mut client = SioClient::connect(&app.base_url, Some(websocket_only())).await;
    let room = unique_room("sio-after-garbage");
    let created = client
        .call("create:room", json!({"roomId": room, "username": "alice"}))
        .await;
    assert_eq!(created["username"], "alice");
    client.event("create:room:success").await;
    client.event("add:member:success").await;
    client.close().await;
}

/// A message over `MAX_MESSAGE_BYTES` in a packet under 64 KiB is refused and the socket stays;
/// a packet over 64 KiB ends the socket, stores nothing, and the server goes on.
async fn oversized_packets_end_the_socket(options: Value) {
    let app = TestApp::spawn(Backend::Memory, &[]).await;
    let room = unique_room("sio-size");
    let options = no_reconnection(options);
    let mut client = SioClient::connect(&app.base_url, Some(options.clone())).await;
    let alice = client
        .call("create:room", json!({"roomId": room, "username": "alice"}))
        .await;
    client.event("create:room:success").await;
    client.event("add:member:success").await;

    let large = client
        .call(
            "create:chat",
            json!({"roomId": room, "message": "x".repeat(60_000)}),
        )
        .await;
    assert_ack_error(&large, "payload_too_large", "a 60 000-byte message");
    let small = client
        .call("create:chat", json!({"roomId": room, "message": "small"}))
        .await;
    assert_eq!(client.event("create:chat:success").await, small);

    client.emit(
        "create:chat",
        json!([{"roomId": room, "message": "x".repeat(70_000)}]),
    );
    let ended = client.disconnected().await;
    assert_ne!(ended["reason"], "io client disconnect", "{ended}");
    let token = alice["token"].as_str().expect("a token");
    let (messages, _) = app.history_page(&room, token, "").await;
    let texts: Vec<&str> = messages.iter().map(|m| m.message.as_str()).collect();
    assert_eq!(texts, ["small"]);
    client.close().await;

    let after = SioClient::connect(&app.base_url, Some(options)).await;
    after.close().await;
}

over_websocket_and_polling!(oversized_packets_end_the_socket);

/// On polling, a POST over 64 KiB ends the Engine.IO session on the server, not only the
/// client's transport: its `sid` is unknown from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_polling_post_ends_the_session_on_the_server() {
    let app = TestApp::spawn(Backend::Memory, &[]).await;
    let client = EioPolling::connect(&app.base_url).await;
    let oversized = format!(
        "42{}",
        json!(["create:chat", {"roomId": "lobby", "message": "x".repeat(70_000)}])
    );
    let (status, body) = client.post(&oversized).await;
    assert_eq!(status, 413, "{body}");
    let (status, body) = client.post("2").await;
    assert_eq!(status, 400, "the session is gone: {body}");
    assert!(body.contains("Session ID unknown"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_session_that_stops_polling_is_dropped_within_the_ping_timeout() {
    let app = TestApp::spawn(Backend::Memory, &[("WS_PING_SECS", "1")]).await;
    let room = unique_room("sio-stops");
    let alice = app.create_room(&room, "alice").await;
    let bob = EioPolling::connect(&app.base_url).await;
    let interval = bob.open["pingInterval"].as_u64().expect("pingInterval");
    let timeout = bob.open["pingTimeout"].as_u64().expect("pingTimeout");
    assert_eq!(
        (interval, timeout),
        (1000, 1000),
        "WS_PING_SECS sets socket.io's heartbeat too: {}",
        bob.open
    );
    bob.send(&format!(
        "420{}",
        json!(["add:member", {"roomId": room, "username": "bob"}])
    ))
    .await;
    let ack = bob.poll_until(|packet| packet.starts_with("430")).await;
    assert!(ack.contains("\"username\":\"bob\""), "{ack}");
    assert_eq!(
        app.member_list(&room, &alice.token).await,
        [("alice".to_owned(), false), ("bob".to_owned(), true)]
    );

    // Bob's client stops: no request from now on. Within a ping interval and its timeout, and
    // the presence grace after it (2 s: a client back within it would change nothing), the
    // session is gone and so is his presence; he stays a member.
    let stopped = Instant::now();
    // The slack is for a loaded machine; the bound it checks is "within the heartbeat and the
    // grace", not "ever".
    let limit = Duration::from_millis(interval + timeout)
        + chat_server::presence::GRACE
        + Duration::from_secs(3);
    eventually(
        "bob to be offline",
        limit + Duration::from_secs(5),
        || async {
            let members = app.member_list(&room, &alice.token).await;
            (members == [("alice".to_owned(), false), ("bob".to_owned(), false)]).then_some(())
        },
    )
    .await;
    let took = stopped.elapsed();
    assert!(
        took <= limit,
        "bob was online for {took:?} after his client stopped"
    );
    let (status, body) = bob.post("40").await;
    assert_eq!(status, 400, "the session is gone: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_origins_apply_to_polling_and_the_websocket_upgrade() {
    let app = TestApp::spawn(
        Backend::Memory,
        &[("ALLOWED_ORIGINS", "https://good.example")],
    )
    .await;
    let handshake = |origin: &str| {
        app.request(Method::GET, EIO_POLLING, None)
            .header("origin", origin)
    };
    let evil = app.send(handshake("https://evil.example")).await;
    evil.expect_error(403, "forbidden");
    assert!(evil.headers.get("access-control-allow-origin").is_none());
    let good = app.send(handshake("https://good.example")).await;
    assert_eq!(good.status, 200, "{}", good.text);
    assert_eq!(
        good.headers["access-control-allow-origin"],
        "https://good.example"
    );
    let sid = open_packet(&good.text)["sid"]
        .as_str()
        .expect("a sid")
        .to_owned();
    // A session opened from a good origin takes no request from another.
    let hijack = app
        .send(
            app.request(Method::POST, &format!("{EIO_POLLING}&sid={sid}"), None)
                .header("origin", "https://evil.example")
                .body("40"),
        )
        .await;
    hijack.expect_error(403, "forbidden");

    let upgrade = |origin| Upgrade {
        origin: Some(origin),
        ..Upgrade::default()
    };
    assert_eq!(
        EioSocket::open(&app.base_url, upgrade("https://evil.example"))
            .await
            .err(),
        Some(403)
    );
    let allowed = EioSocket::open(&app.base_url, upgrade("https://good.example")).await;
    assert!(allowed.is_ok(), "the allowed origin upgrades");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_sockets_count_against_the_per_address_cap() {
    let app = TestApp::spawn(Backend::Memory, &[("MAX_CONNECTIONS_PER_IP", "2")]).await;
    let url = app.base_url.clone();
    let over_websocket = SioClient::connect(&url, Some(no_reconnection(websocket_only()))).await;
    let over_polling = SioClient::connect(&url, Some(no_reconnection(polling_only()))).await;
    let metrics = app.get("/metrics", None).await.text;
    let open = metric_sample(&metrics, "chat_open_connections{transport=\"socketio\"}");
    assert!(open.is_some_and(|open| open >= 2.0), "{metrics}");

    // A third from this address is refused, whichever way it comes, and so is a /ws upgrade.
    for options in [websocket_only(), polling_only(), Value::Null] {
        let options = (!options.is_null()).then(|| no_reconnection(options));
        let refused = SioClient::try_connect(&url, options)
            .await
            .err()
            .expect("a third socket is refused");
        assert!(
            refused["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{refused}"
        );
    }
    assert_eq!(
        WsClient::try_connect(&url, Upgrade::default()).await.err(),
        Some(429)
    );

    // A socket that goes frees its place.
    over_websocket.close().await;
    let again = eventually(
        "the freed place to be taken",
        Duration::from_secs(10),
        || {
            let url = url.clone();
            async move {
                SioClient::try_connect(&url, Some(no_reconnection(polling_only())))
                    .await
                    .ok()
            }
        },
    )
    .await;
    again.close().await;
    over_polling.close().await;
}

/// Reads a socket.io client's lines until it has seen `acks` acks (none of them an error)
/// and `chats` chat events; returns the chats' `(id, message)`.
async fn socketio_chats(
    client: &mut SioClient,
    acks: usize,
    chats: usize,
) -> Vec<(String, String)> {
    let (mut acked, mut seen) = (0, Vec::new());
    while acked < acks || seen.len() < chats {
        let line = client.next().await;
        match line["type"].as_str() {
            Some("ack") => {
                assert!(line["args"][0]["error"].is_null(), "{line}");
                acked += 1;
            }
            Some("event") if line["event"] == "create:chat:success" => {
                let data = &line["args"][0];
                seen.push((
                    data["id"].as_str().expect("an id").to_owned(),
                    data["message"].as_str().expect("a message").to_owned(),
                ));
            }
            _ => panic!("expected acks and chats, got {line}"),
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_websocket_and_sse_clients_on_two_instances_see_one_order() {
    const ROUNDS: usize = 4;
    let redis = RedisServer::start();
    let a = TestApp::spawn(Backend::Redis(&redis), &[]).await;
    let b = TestApp::spawn(Backend::Redis(&redis), &[]).await;
    let room = unique_room("sio-mixed");

    // On instance A, socket.io over polling (alice) and over WebSocket (bob).
    let mut polling = SioClient::connect(&a.base_url, Some(polling_only())).await;
    let alice = polling
        .call("create:room", json!({"roomId": room, "username": "alice"}))
        .await;
    polling.event("create:room:success").await;
    polling.event("add:member:success").await;
    let mut websocket = SioClient::connect(&a.base_url, Some(websocket_only())).await;
    websocket
        .call("add:member", json!({"roomId": room, "username": "bob"}))
        .await;
    let bob_joined = websocket.event("add:member:success").await;
    assert_eq!(polling.event("add:member:success").await, bob_joined);
    // On instance B, /ws (carol) and an SSE stream (alice's token).
    let mut carol = WsClient::member_of(&b.base_url, &room, "carol").await;
    let carol_joined = carol.event_named("add:member:success").await;
    assert_eq!(
        polling.event("add:member:success").await["id"],
        carol_joined["id"]
    );
    assert_eq!(
        websocket.event("add:member:success").await["id"],
        carol_joined["id"]
    );
    let carol_joined_id = carol_joined["id"].as_str().expect("an id").to_owned();
    let mut sse = SseClient::open(
        b.request(
            Method::GET,
            &format!("/rooms/{room}/events"),
            alice["token"].as_str(),
        )
        .header("Last-Event-ID", &carol_joined_id),
    )
    .await;

    // Everyone sends at once, on both instances.
    for round in 0..ROUNDS {
        polling.emit_with_ack(
            "create:chat",
            json!([{"roomId": room, "message": format!("polling {round}")}]),
        );
        websocket.emit_with_ack(
            "create:chat",
            json!([{"roomId": room, "message": format!("websocket {round}")}]),
        );
        carol
            .send(
                "create:chat",
                &format!("c{round}"),
                json!({"roomId": room, "message": format!("ws {round}")}),
            )
            .await;
    }
    let total = 3 * ROUNDS;
    let seen_polling = socketio_chats(&mut polling, ROUNDS, total).await;
    let seen_websocket = socketio_chats(&mut websocket, ROUNDS, total).await;
    let mut seen_carol = Vec::new();
    let mut carol_acks = 0;
    while carol_acks < ROUNDS || seen_carol.len() < total {
        let frame = carol.recv().await;
        match frame["event"].as_str() {
            Some("ack") => carol_acks += 1,
            Some("create:chat:success") => seen_carol.push((
                frame["id"].as_str().expect("an id").to_owned(),
                frame["data"]["message"]
                    .as_str()
                    .expect("a message")
                    .to_owned(),
            )),
            _ => panic!("expected acks and chats, got {frame}"),
        }
    }
    let mut seen_sse = Vec::new();
    while seen_sse.len() < total {
        let event = sse.event().await;
        assert_eq!(
            event.event.as_deref(),
            Some("create:chat:success"),
            "{event:?}"
        );
        seen_sse.push((
            event.id.clone().expect("an id"),
            event.json()["message"]
                .as_str()
                .expect("a message")
                .to_owned(),
        ));
    }

    assert_eq!(
        seen_polling, seen_websocket,
        "socket.io: polling and WebSocket"
    );
    assert_eq!(seen_polling, seen_carol, "socket.io on A and /ws on B");
    assert_eq!(seen_polling, seen_sse, "socket.io on A and SSE on B");
    let ids: Vec<(u64, u64)> = seen_polling.iter().map(|(id, _)| event_id(id)).collect();
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "ids increase: {seen_polling:?}"
    );
    let mut messages: Vec<&str> = seen_polling
        .iter()
        .map(|(_, message)| message.as_str())
        .collect();
    messages.sort();
    let mut sent: Vec<String> = (0..ROUNDS)
        .flat_map(|round| {
            [
                format!("polling {round}"),
                format!("websocket {round}"),
                format!("ws {round}"),
            ]
        })
        .collect();
    sent.sort();
    assert_eq!(messages, sent, "every message once");
    polling.close().await;
    websocket.close().await;
}

/// A burst of chat posts from one socket (stored in runs, as on `/ws`): each gets its own ack,
/// in the order sent, before its broadcast; the ids increase in that order; history holds
/// each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_posts_is_acked_in_order_each_before_its_broadcast() {
    const POSTS: usize = 100;
    let app = TestApp::spawn(Backend::Memory, &[("RATE_LIMITS", "off")]).await;
    let room = unique_room("sio-burst");
    let mut socket = EioSocket::connect(&app.base_url).await;
    socket
        .send(&format!(
            "420{}",
            json!(["create:room", {"roomId": room, "username": "alice"}])
        ))
        .await;
    let mut token = None;
    while token.is_none() {
        let packet = socket.next().await.expect("the create ack");
        if let Some(ack) = packet.strip_prefix("430") {
            let ack: Value = serde_json::from_str(ack).expect("ack JSON");
            token = ack[0]["token"].as_str().map(str::to_owned);
        }
    }
    for n in 1..=POSTS {
        socket
            .send(&format!(
                "42{n}{}",
                json!(["create:chat", {"roomId": room, "message": format!("m{n}")}])
            ))
            .await;
    }
    let mut acked: Vec<String> = Vec::new();
    let mut broadcast: Vec<String> = Vec::new();
    while broadcast.len() < POSTS {
        let packet = socket.next().await.expect("acks and broadcasts");
        if let Some(rest) = packet.strip_prefix("43") {
            let split = rest.find('[').expect("an ack's arguments");
            let (ack_id, data) = rest.split_at(split);
            assert_eq!(
                ack_id,
                (acked.len() + 1).to_string(),
                "acks in order: {packet}"
            );
            let data: Value = serde_json::from_str(data).expect("ack JSON");
            assert_eq!(
                data[0]["message"],
                format!("m{}", acked.len() + 1),
                "{packet}"
            );
            acked.push(data[0]["id"].as_str().expect("an id").to_owned());
        } else if let Some(event) = packet.strip_prefix("42") {
            let event: Value = serde_json::from_str(event).expect("event JSON");
            if event[0] == "create:chat:success" {
                let id = event[1]["id"].as_str().expect("an id").to_owned();
                assert!(
                    acked.contains(&id),
                    "the broadcast of {id} came before its ack"
                );
                broadcast.push(id);
            }
        }
    }
    assert_eq!(acked, broadcast, "one order for acks and broadcasts");
    let (messages, _) = app
        .history_page(&room, token.as_deref().expect("a token"), "limit=200")
        .await;
    let texts: Vec<String> = messages.into_iter().map(|m| m.message).collect();
    let expected: Vec<String> = (1..=POSTS).map(|n| format!("m{n}")).collect();
    assert_eq!(texts, expected);
}
