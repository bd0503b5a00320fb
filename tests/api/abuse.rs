//! Abuse resistance: rate limits on every path, connection caps, slowloris, origins, and a
//! crowd of abusive clients that must not cost the well-behaved members a single message.
//! Also: no secret (member token, room secret, Redis password, server API key) in anything the
//! server emits.

use std::net::Ipv4Addr;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::support::process::ServerProcess;
use crate::support::stream::{Upgrade, WsClient, WsEnd};
use crate::support::{Backend, RedisServer, TestApp, unique_room};

/// Reads a raw connection until the server closes it; returns how long that took.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> Duration {
    let started = std::time::Instant::now();
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server kept the connection open for {limit:?}"),
        }
    }
}

fn host_of(app: &TestApp) -> String {
    app.base_url.trim_start_matches("http://").to_owned()
}

conformance! {
    async fn messages_are_rate_limited_per_member(backend: Backend) {
        let app = TestApp::spawn(backend, &[("RATE_MESSAGE_BURST", "5"), ("RATE_MESSAGES_PER_SEC", "1")]).await;
        let room = unique_room("rate-msg");
        let alice = app.create_room(&room, "alice").await;
        let bob = app.join_room(&room, "bob").await;
        for n in 0..5 {
            app.post(&room, Some(&alice.token), &format!("m{n}")).await.expect(201);
        }
        let refused = app.post(&room, Some(&alice.token), "one too many").await;
        refused.expect_error(429, "rate_limited");
        let retry_after: u64 = refused.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
        // Another member has a bucket of its own; the same member on WebSocket does not.
        app.post(&room, Some(&bob.token), "bob is fine").await.expect(201);
        let mut ws = WsClient::connect(&app.base_url).await;
        ws.expect_error("create:chat", "w", json!({"roomId": room, "message": "x", "token": alice.token}), "rate_limited").await;
        // The refused message was not stored.
        let history = app.history(&room, Some(&bob.token), "").await.expect(200).clone();
        let texts: Vec<&str> = history["messages"].as_array().unwrap().iter().map(|m| m["message"].as_str().unwrap()).collect();
        assert!(!texts.contains(&"one too many"), "{texts:?}");
    }

    async fn websocket_events_are_rate_limited_and_hammering_disconnects(backend: Backend) {
        let app = TestApp::spawn(backend, &[("RATE_WS_EVENT_BURST", "5"), ("RATE_WS_EVENTS_PER_SEC", "1")]).await;
        let room = unique_room("rate-ws");
        let mut ws = WsClient::connect(&app.base_url).await;
        ws.ack("create:room", "c", json!({"roomId": room, "username": "alice"})).await;
        for n in 0..4 {
            ws.ack_among_events("create:chat", &format!("m{n}"), json!({"roomId": room, "message": "hi"})).await;
        }
        // Over the limit: an error per event, the connection open…
        let reply = loop {
            ws.send("create:chat", "over", json!({"roomId": room, "message": "hi"})).await;
            let frame = loop {
                let frame = ws.recv().await;
                if !frame["id"].is_string() {
                    break frame;
                }
            };
            if frame["event"] == "error" {
                break frame;
            }
        };
        assert_eq!(reply["data"]["code"], "rate_limited");
        assert_eq!(reply["ref"], "over");
        // …until the client keeps hammering: then it is disconnected (1008). One frame at a
        // time, each reply read, so the close is seen rather than a reset.
        let mut refused = 1;
        let end = loop {
            assert!(refused < 100, "never disconnected after {refused} refusals");
            let spam = json!({"event": "create:chat", "data": {"roomId": room, "message": "x"}});
            if !ws.try_send_raw(WsMessage::text(spam.to_string())).await {
                break WsEnd::Gone;
            }
            // This frame's own reply: broadcasts of spam the refilled bucket let through come
            // in between, and reading one in its place would leave a refusal unread.
            let reply = loop {
                match ws.next().await {
                    Ok(frame) if frame["id"].is_string() => continue,
                    other => break other,
                }
            };
            match reply {
                Ok(frame) if frame["event"] == "error" => refused += 1,
                Ok(_) => {}
                Err(end) => break end,
            }
        };
        // The close frame usually arrives; a reset can overtake it when the server drops the
        // socket right after writing it. Either way the client is gone, after its refusals.
        assert!(matches!(end, WsEnd::Closed(Some(1008)) | WsEnd::Gone), "{end:?}");
        assert!(refused >= 50, "disconnected after only {refused} refusals");
    }

    async fn joins_and_creations_are_rate_limited_per_client(backend: Backend) {
        let app = TestApp::spawn(backend, &[("RATE_JOIN_BURST", "3"), ("RATE_JOINS_PER_MIN", "1")]).await;
        let room = unique_room("rate-join");
        app.create_room(&room, "a").await;
        app.join_room(&room, "b").await;
        app.join_room(&room, "c").await;
        app.join(&room, "d", None).await.expect_error(429, "rate_limited");
        app.create(&unique_room("rate-join-2"), "e", None).await.expect_error(429, "rate_limited");
        let mut ws = WsClient::connect(&app.base_url).await;
        ws.expect_error("add:member", "j", json!({"roomId": room, "username": "f"}), "rate_limited").await;
    }

    async fn rest_requests_are_limited_per_forwarded_client(backend: Backend) {
        let app = TestApp::spawn(backend, &[("TRUSTED_PROXY_HOPS", "1"), ("RATE_REST_BURST", "3"), ("RATE_REST_PER_SEC", "1")]).await;
        let room = unique_room("rate-rest");
        let alice = app.create_room(&room, "alice").await;
        let from = |client: &str| {
            app.request(Method::GET, &format!("/rooms/{room}/members"), Some(&alice.token))
                // What a client wrote itself, then what the trusted proxy appended.
                .header("x-forwarded-for", format!("6.6.6.6, {client}"))
        };
        for _ in 0..3 {
            app.send(from("203.0.113.1")).await.expect(200);
        }
        app.send(from("203.0.113.1")).await.expect_error(429, "rate_limited");
        // Another client (by the proxy's entry, not the forgeable first one) is not limited.
        app.send(from("203.0.113.2")).await.expect(200);
    }

    async fn members_per_room_and_rooms_per_connection_are_capped(backend: Backend) {
        let app = TestApp::spawn(backend, &[("MAX_MEMBERS_PER_ROOM", "2"), ("MAX_ROOMS_PER_CONNECTION", "2")]).await;
        let room = unique_room("cap-members");
        app.create_room(&room, "a").await;
        app.join_room(&room, "b").await;
        app.join(&room, "c", None).await.expect_error(403, "forbidden");
        let mut ws = WsClient::connect(&app.base_url).await;
        ws.ack("create:room", "1", json!({"roomId": unique_room("cap-1"), "username": "x"})).await;
        ws.ack_among_events("create:room", "2", json!({"roomId": unique_room("cap-2"), "username": "x"})).await;
        let third = unique_room("cap-3");
        ws.send("create:room", "3", json!({"roomId": third, "username": "x"})).await;
        let reply = loop {
            let frame = ws.recv().await;
            if !frame["id"].is_string() {
                break frame;
            }
        };
        assert_eq!(reply["event"], "error");
        assert_eq!(reply["data"]["code"], "forbidden");
        // Nothing was created for the refused room.
        app.create_room(&third, "y").await;
    }

    async fn origins_govern_cors_and_websocket_upgrades(backend: Backend) {
        let app = TestApp::spawn(backend, &[("ALLOWED_ORIGINS", "https://good.example")]).await;
        let own = format!("http://{}", host_of(&app));
        assert_eq!(WsClient::try_connect(&app.base_url, Upgrade { origin: Some("https://evil.example"), ..Upgrade::default() }).await.err(), Some(403));
        assert!(WsClient::try_connect(&app.base_url, Upgrade { origin: Some("https://good.example"), ..Upgrade::default() }).await.is_ok());
        assert!(WsClient::try_connect(&app.base_url, Upgrade { origin: Some(&own), ..Upgrade::default() }).await.is_ok());
        let preflight = |origin: &str| {
            app.request(Method::OPTIONS, "/rooms", None)
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "content-type")
        };
        let good = app.send(preflight("https://good.example")).await;
        assert_eq!(good.headers["access-control-allow-origin"], "https://good.example");
        assert!(good.headers.get("access-control-allow-credentials").is_none());
        let evil = app.send(preflight("https://evil.example")).await;
        assert!(evil.headers.get("access-control-allow-origin").is_none());

        let open = TestApp::spawn(backend, &[]).await;
        let any = open.send(
            open.request(Method::OPTIONS, "/rooms", None)
                .header("origin", "https://anywhere.example")
                .header("access-control-request-method", "POST"),
        ).await;
        assert_eq!(any.headers["access-control-allow-origin"], "*");
        assert!(any.headers.get("access-control-allow-credentials").is_none());
    }
}

/// The server's own origin is the scheme the client used (`http` when reached directly, the
/// trusted proxy's `X-Forwarded-Proto` behind one), the `Host` and its port, all three exact.
/// A `Host` is whatever the client's URL named, so a scheme it cannot match matters: a page
/// at `https://evil.example` never passes as this server's own by sending `Host: evil.example`.
/// Store-independent: one store is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_own_origin_is_the_scheme_host_and_port_the_client_used() {
    let listed = ("ALLOWED_ORIGINS", "https://good.example");
    let direct = TestApp::spawn(Backend::Memory, &[listed]).await;
    let proxied = TestApp::spawn(Backend::Memory, &[listed, ("TRUSTED_PROXY_HOPS", "1")]).await;
    // (Origin, Host, X-Forwarded-Proto, allowed), reached directly and through one proxy.
    let direct_cases = [
        ("https://evil.example", "evil.example", None, false),
        ("http://chat.example", "chat.example:80", None, true),
        ("http://chat.example:8080", "chat.example", None, false),
        // Without a trusted proxy, X-Forwarded-Proto is the client's own word.
        ("https://chat.example", "chat.example", Some("https"), false),
    ];
    let proxied_cases = [
        ("https://chat.example", "chat.example", Some("https"), true),
        (
            "https://chat.example",
            "chat.example:443",
            Some("https"),
            true,
        ),
        ("http://chat.example", "chat.example", Some("https"), false),
        // The client wrote the first entry; the proxy appended the scheme it received.
        (
            "https://chat.example",
            "chat.example",
            Some("https, http"),
            false,
        ),
        // A proxy that does not say which scheme leaves the own origin unknown.
        ("https://chat.example", "chat.example", None, false),
    ];
    let servers = [(&direct, &direct_cases[..]), (&proxied, &proxied_cases[..])];
    for (app, &(origin, host, proto, allowed)) in servers
        .into_iter()
        .flat_map(|(app, cases)| cases.iter().map(move |case| (app, case)))
    {
        let mut headers = vec![("host", host)];
        headers.extend(proto.map(|proto| ("x-forwarded-proto", proto)));
        let upgrade = Upgrade {
            origin: Some(origin),
            headers: &headers,
            ..Upgrade::default()
        };
        let status = WsClient::try_connect(&app.base_url, upgrade).await.err();
        let expected = if allowed { None } else { Some(403) };
        assert_eq!(
            status, expected,
            "Origin {origin}, Host {host}, X-Forwarded-Proto {proto:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_per_client_and_per_instance() {
    let app = TestApp::spawn(
        Backend::Memory,
        &[("MAX_CONNECTIONS_PER_IP", "2"), ("MAX_CONNECTIONS", "6")],
    )
    .await;
    let client = |n: u8| Upgrade {
        source: Some(Ipv4Addr::new(127, 0, 0, n)),
        ..Upgrade::default()
    };
    let _first = WsClient::try_connect(&app.base_url, client(2))
        .await
        .expect("first");
    let _second = WsClient::try_connect(&app.base_url, client(2))
        .await
        .expect("second");
    assert_eq!(
        WsClient::try_connect(&app.base_url, client(2)).await.err(),
        Some(429)
    );
    // SSE streams count under the same cap.
    let from_two = reqwest::Client::builder()
        .local_address(std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .expect("an HTTP client");
    let sse = from_two
        .get(format!("{}/rooms/any/events", app.base_url))
        .bearer_auth("whatever")
        .send()
        .await
        .expect("the SSE request");
    assert_eq!(sse.status().as_u16(), 429);
    drop(from_two);
    let _other = WsClient::try_connect(&app.base_url, client(3))
        .await
        .expect("another client");
    // The instance: idle connections fill it up to its cap of 6, then a request gets 503.
    let probe = || async {
        let mut stream = tokio::net::TcpStream::connect(host_of(&app))
            .await
            .expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut reply = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut reply))
            .await
            .expect("a reply")
            .expect("read");
        reply
    };
    let mut idle = Vec::new();
    let refusal = loop {
        let reply = probe().await;
        if reply.starts_with("HTTP/1.1 503") {
            break reply;
        }
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(
            idle.len() < 6,
            "never refused with {} connections open",
            idle.len() + 3
        );
        idle.push(
            tokio::net::TcpStream::connect(host_of(&app))
                .await
                .expect("connect"),
        );
    };
    assert!(refusal.contains(r#""code":"unavailable""#), "{refusal}");
    drop(idle);
    crate::support::eventually(
        "room on the instance again",
        Duration::from_secs(10),
        || {
            let reply = probe();
            async move { reply.await.starts_with("HTTP/1.1 200").then_some(()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_dropped() {
    let app = TestApp::spawn(Backend::Memory, &[("HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let mut partial = tokio::net::TcpStream::connect(host_of(&app))
        .await
        .expect("connect");
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("write");
    let took = closed_within(&mut partial, Duration::from_secs(10)).await;
    assert!(
        took >= Duration::from_millis(900),
        "closed too early: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusive_clients_cost_normal_members_nothing() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(
        Backend::Redis(&redis),
        &[
            ("HEADER_READ_TIMEOUT_SECS", "2"),
            ("MAX_CONNECTIONS_PER_IP", "50"),
        ],
    )
    .await;
    let room = unique_room("abuse");
    let normal = |n: u8| Upgrade {
        source: Some(Ipv4Addr::new(127, 0, 0, n)),
        ..Upgrade::default()
    };
    let mut alice = WsClient::try_connect(&app.base_url, normal(10))
        .await
        .expect("alice");
    alice
        .ack(
            "create:room",
            "c",
            json!({"roomId": room, "username": "alice"}),
        )
        .await;
    let mut bob = WsClient::try_connect(&app.base_url, normal(11))
        .await
        .expect("bob");
    bob.ack(
        "add:member",
        "j",
        json!({"roomId": room, "username": "bob"}),
    )
    .await;

    // The abusers, all from 127.0.0.66: a connection flood up to and past the per-IP cap,
    // slowloris requests, flooders and oversized frames in the same room.
    let abuser = Upgrade {
        source: Some(Ipv4Addr::new(127, 0, 0, 66)),
        ..Upgrade::default()
    };
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..60 {
        match WsClient::try_connect(&app.base_url, abuser).await {
            Ok(ws) => held.push(ws),
            Err(status) => {
                assert_eq!(status, 429);
                refused += 1;
            }
        }
    }
    assert_eq!((held.len(), refused), (50, 10));
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = tokio::net::TcpStream::connect(host_of(&app))
            .await
            .expect("connect");
        stream
            .write_all(b"POST /rooms HTTP/1.1\r\nHost: x\r\nContent-Le")
            .await
            .expect("write");
        slow.push(stream);
    }
    let flooders: Vec<_> = held
        .drain(..10)
        .enumerate()
        .map(|(n, mut ws)| {
            let room = room.clone();
            tokio::spawn(async move {
                // Spam into the room without reading: refused (not a member), then rate
                // limited, then disconnected.
                for _ in 0..(300 + n) {
                    let spam = json!({"event": "create:chat", "data": {"roomId": room, "message": "spam"}});
                    if !ws.try_send_raw(WsMessage::text(spam.to_string())).await {
                        break;
                    }
                }
                ws.closed().await
            })
        })
        .collect();
    let mut oversized = held.pop().expect("an abuser connection");
    oversized
        .send_raw(WsMessage::text("x".repeat(100 * 1024)))
        .await;

    // Meanwhile the normal members chat, and receive every message of each other in order.
    let mut sent = Vec::new();
    for n in 0..40 {
        let (sender, label) = if n % 2 == 0 {
            (&mut alice, "a")
        } else {
            (&mut bob, "b")
        };
        let ack = sender
            .ack_among_events(
                "create:chat",
                &format!("{label}{n}"),
                json!({"roomId": room, "message": format!("normal {n}")}),
            )
            .await;
        sent.push(ack["id"].as_str().unwrap().to_owned());
    }
    for member in [&mut alice, &mut bob] {
        let mut got = Vec::new();
        while got.len() < sent.len() {
            let event = member.event().await;
            if event["event"] == "create:chat:success"
                && event["data"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("normal "))
            {
                got.push(event["id"].as_str().unwrap().to_owned());
            }
        }
        assert_eq!(got, sent);
    }
    // The flooders were cut off; the oversized frame closed its connection; slowloris
    // connections are gone after the header timeout.
    // (A flooder still writing may see the reset before the 1008 close frame; a server that
    // did not disconnect it would leave `closed()` waiting until its read timeout fails.)
    for flooder in flooders {
        let end = flooder.await.expect("a flooder task");
        assert!(
            matches!(end, WsEnd::Closed(Some(1008)) | WsEnd::Gone),
            "{end:?}"
        );
    }
    assert_eq!(oversized.closed().await, WsEnd::Closed(Some(1009)));
    for stream in &mut slow {
        closed_within(stream, Duration::from_secs(10)).await;
    }
}

/// A request's reply body, for the tests that collect everything the server says.
trait BodyText {
    async fn body_text(self) -> String;

    async fn body_json(self) -> serde_json::Value;
}

impl BodyText for reqwest::RequestBuilder {
    async fn body_text(self) -> String {
        self.send()
            .await
            .expect("the server answers")
            .text()
            .await
            .expect("a readable body")
    }

    async fn body_json(self) -> serde_json::Value {
        self.send()
            .await
            .expect("the server answers")
            .json()
            .await
            .expect("a JSON body")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_anything_the_server_emits() {
    let mut redis = RedisServer::start();
    let redis_password = "redis-pass-4f1c9a";
    redis.require_password(redis_password);
    let url = redis.url();
    let api_key = "server-api-key-5e0b1d7c3a9f2e6b8d4c0a1f";
    let server = ServerProcess::start(&[
        ("REDIS_URL", url.as_str()),
        ("RUST_LOG", "trace"),
        ("LOG_FORMAT", "json"),
        ("SERVER_API_KEY", api_key),
    ])
    .await;
    let client = reqwest::Client::new();
    let base = &server.base_url;
    let room = unique_room("secrets");
    let room_secret = "room-secret-8d2e7b";
    let mut emitted = String::new();
    let mut tokens = Vec::new();

    // A full session: REST create (with a secret), join, a wrong secret, posts, history,
    // members, SSE with ?token= and with a stream ticket (then spent), WebSocket resume,
    // errors, leave.
    let created = client
        .post(format!("{base}/rooms"))
        .json(&json!({"roomId": room, "username": "alice", "secret": room_secret}))
        .body_json()
        .await;
    let alice = created["token"].as_str().unwrap().to_owned();
    tokens.push(alice.clone());
    let wrong = client
        .post(format!("{base}/rooms/{room}/members"))
        .json(&json!({"username": "mallory", "secret": "not-the-secret"}))
        .body_text()
        .await;
    emitted.push_str(&wrong);
    let joined = client
        .post(format!("{base}/rooms/{room}/members"))
        .json(&json!({"username": "bob", "secret": room_secret}))
        .body_json()
        .await;
    let bob = joined["token"].as_str().unwrap().to_owned();
    tokens.push(bob.clone());
    for path in [
        format!("/rooms/{room}/messages"),
        format!("/rooms/{room}/members"),
    ] {
        emitted.push_str(
            &client
                .get(format!("{base}{path}"))
                .bearer_auth(&bob)
                .body_text()
                .await,
        );
        emitted.push_str(
            &client
                .get(format!("{base}{path}"))
                .bearer_auth(format!("{bob}x"))
                .body_text()
                .await,
        );
    }
    emitted.push_str(
        &client
            .post(format!("{base}/rooms/{room}/messages"))
            .bearer_auth(&alice)
            .json(&json!({"message": "hello"}))
            .body_text()
            .await,
    );
    let mut sse = crate::support::stream::SseClient::open(client.get(format!(
        "{base}/rooms/{room}/events?token={bob}&lastEventId=0-0"
    )))
    .await;
    emitted.push_str(&sse.event().await.data);
    // A ticket is a secret like a token: checked below with the tokens, and its hash too.
    let issued = client
        .post(format!("{base}/rooms/{room}/events/ticket"))
        .bearer_auth(&alice)
        .body_json()
        .await;
    let ticket = issued["ticket"].as_str().unwrap().to_owned();
    tokens.push(ticket.clone());
    let events_by_ticket = format!("{base}/rooms/{room}/events?ticket={ticket}");
    let mut by_ticket = crate::support::stream::SseClient::open(
        client.get(format!("{events_by_ticket}&lastEventId=0-0")),
    )
    .await;
    emitted.push_str(&by_ticket.event().await.data);
    drop(by_ticket);
    emitted.push_str(&client.get(&events_by_ticket).body_text().await);
    let mut ws = WsClient::connect(base).await;
    let resumed = ws
        .ack(
            "resume",
            "r",
            json!({"roomId": room, "token": alice, "lastEventId": "0-0"}),
        )
        .await;
    for _ in 0..resumed["replayed"].as_u64().unwrap() {
        emitted.push_str(&ws.event().await.to_string());
    }
    ws.expect_error(
        "resume",
        "r2",
        json!({"roomId": room, "token": format!("{alice}-wrong")}),
        "invalid_request",
    )
    .await;
    ws.expect_error(
        "create:chat",
        "c",
        json!({"roomId": unique_room("elsewhere"), "message": "x", "token": bob}),
        "not_member",
    )
    .await;
    emitted.push_str(
        &client
            .delete(format!("{base}/rooms/{room}/members/bob"))
            .bearer_auth(&alice)
            .body_text()
            .await,
    );
    client
        .delete(format!("{base}/rooms/{room}/members/bob"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    // The server API: every route with the key, and a wrong key.
    let with_key = |request: reqwest::RequestBuilder| {
        request.header("Authorization", format!("ApiKey {api_key}"))
    };
    emitted.push_str(
        &with_key(client.get(format!("{base}/api/rooms")))
            .body_text()
            .await,
    );
    emitted.push_str(
        &with_key(client.post(format!("{base}/api/rooms/{room}/messages")))
            .json(&json!({"username": "System", "message": "hello from the backend"}))
            .body_text()
            .await,
    );
    emitted.push_str(
        &client
            .get(format!("{base}/api/rooms"))
            .header("Authorization", format!("ApiKey {api_key}-wrong"))
            .body_text()
            .await,
    );
    emitted.push_str(
        &with_key(client.delete(format!("{base}/api/rooms/{room}/members/alice?ban=true")))
            .body_text()
            .await,
    );
    emitted.push_str(
        &with_key(client.delete(format!("{base}/api/rooms/{room}")))
            .body_text()
            .await,
    );
    emitted.push_str(&client.get(format!("{base}/metrics")).body_text().await);
    emitted.push_str(&client.get(format!("{base}/openapi.json")).body_text().await);
    ws.close().await;
    drop(sse);
    // Everything it logged, at the most verbose level.
    let log = server.log();
    assert!(
        log.contains("\"level\":\"TRACE\"") || log.contains("TRACE") || log.contains("DEBUG"),
        "the log is verbose: {}",
        &log[..log.len().min(500)]
    );
    emitted.push_str(&log);

    for secret in tokens
        .iter()
        .map(String::as_str)
        .chain([room_secret, redis_password, api_key])
    {
        assert!(!emitted.contains(secret), "a secret leaked: {secret}");
    }
    // Nor a token's hash, which would let a reader look members up.
    for token in &tokens {
        let hash = chat_server::domain::MemberToken::presented(token).hash();
        assert!(!emitted.contains(hash.as_str()), "a token hash leaked");
    }
}
