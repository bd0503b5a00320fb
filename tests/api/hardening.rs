//! What one request or one client address must not be able to cost an instance: memory from
//! room-secret checks, metric series from invented methods, connections held by slow bodies
//! or by a single address, a writer that never drains; plus the edges found with them
//! (history before `0-0`, idempotency keys that kept whole messages, IPv6 buckets, the
//! metrics port).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::support::process::{ServerProcess, free_port};
use crate::support::stream::{Upgrade, WsClient};
use crate::support::{Backend, Reply, TestApp, eventually, unique_room};

/// A join of `room` as `username` with `secret`, sent as if from `client` (the app trusts one
/// proxy, which wrote that address into `X-Forwarded-For`).
async fn join_from(
    client: &reqwest::Client,
    base_url: &str,
    from: &str,
    room: &str,
    username: &str,
    secret: &str,
) -> Reply {
    let response = client
        .post(format!("{base_url}/rooms/{room}/members"))
        .header("x-forwarded-for", from)
        .json(&json!({"username": username, "secret": secret}))
        .send()
        .await
        .expect("the join reached the server");
    Reply::read(response).await
}

/// The process's peak resident memory (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_wrong_secrets_keeps_memory_bounded() {
    const BURST: usize = 40;
    let server = ServerProcess::start(&[
        ("TRUSTED_PROXY_HOPS", "1"),
        ("SECRET_HASH_CONCURRENCY", "2"),
        // Only the memory is under test here, not the guessing limits.
        ("RATE_ROOM_SECRET_FAILURES_PER_MIN", "1000"),
    ])
    .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");
    let room = unique_room("argon-burst");
    let created = client
        .post(format!("{}/rooms", server.base_url))
        .json(&json!({"roomId": room, "username": "owner", "secret": "the right one"}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let before = peak_rss_kib(server.pid());

    // Forty guessers from forty addresses, all at once.
    let guesses = (0..BURST).map(|n| {
        let (client, base_url, room) = (client.clone(), server.base_url.clone(), room.clone());
        async move {
            let from = format!("198.51.100.{n}");
            join_from(&client, &base_url, &from, &room, &format!("g{n}"), "wrong").await
        }
    });
    let replies = futures_util::future::join_all(guesses).await;
    let mut refused_busy = 0;
    for reply in &replies {
        match reply.status.as_u16() {
            403 => reply.check_error(403, "forbidden").expect("a wrong secret"),
            503 => {
                reply.check_error(503, "unavailable").expect("too busy");
                assert!(reply.headers.contains_key("retry-after"), "{reply:?}");
                refused_busy += 1;
            }
            other => panic!("a wrong secret got {other}: {}", reply.text),
        }
    }
    let after = peak_rss_kib(server.pid());
    let grown_mib = after.saturating_sub(before) / 1024;
    println!(
        "peak RSS {before} KiB -> {after} KiB (+{grown_mib} MiB) over {BURST} wrong secrets, {refused_busy} refused as busy"
    );
    // Two working areas of 19 MiB, and slack for the allocator: unbounded, forty checks at
    // once took hundreds of MiB.
    assert!(
        grown_mib < 2 * 19 + 24,
        "peak memory grew by {grown_mib} MiB over a burst of {BURST} wrong secrets"
    );
    // The right secret still opens the room.
    let joined = join_from(
        &client,
        &server.base_url,
        "198.51.100.200",
        &room,
        "friend",
        "the right one",
    )
    .await;
    joined.expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secrets_are_limited_per_client_and_per_room() {
    let app = TestApp::spawn(
        Backend::Memory,
        &[
            ("TRUSTED_PROXY_HOPS", "1"),
            ("RATE_SECRET_FAILURES_PER_MIN", "2"),
            ("RATE_ROOM_SECRET_FAILURES_PER_MIN", "4"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let url = &app.base_url;
    let room = unique_room("guessed");
    app.create(&room, "owner", Some("s3cret")).await.expect(201);

    // A client: two wrong secrets, then it is refused before its guess is checked, even a
    // right one.
    for n in 0..2 {
        join_from(&client, url, "203.0.113.1", &room, &format!("a{n}"), "nope")
            .await
            .expect_error(403, "forbidden");
    }
    let locked = join_from(&client, url, "203.0.113.1", &room, "a2", "s3cret").await;
    locked.expect_error(429, "rate_limited");
    assert!(locked.headers.contains_key("retry-after"));
    // Another client who knows the secret is not slowed by it.
    join_from(&client, url, "203.0.113.2", &room, "b", "s3cret")
        .await
        .expect(201);

    // The room: wrong secrets from many clients add up (two so far, four allowed).
    for n in 3..5 {
        join_from(
            &client,
            url,
            &format!("203.0.113.{n}"),
            &room,
            &format!("c{n}"),
            "nope",
        )
        .await
        .expect_error(403, "forbidden");
    }
    join_from(&client, url, "203.0.113.9", &room, "late", "s3cret")
        .await
        .expect_error(429, "rate_limited");

    // IPv6: a /64 is one client, whichever of its addresses it uses.
    let other_room = unique_room("guessed-v6");
    app.create(&other_room, "owner", Some("s3cret"))
        .await
        .expect(201);
    for (n, from) in ["2001:db8:5:6::1", "2001:db8:5:6:ffff::2"]
        .iter()
        .enumerate()
    {
        join_from(&client, url, from, &other_room, &format!("v{n}"), "nope")
            .await
            .expect_error(403, "forbidden");
    }
    join_from(
        &client,
        url,
        "2001:db8:5:6:1:2:3:4",
        &other_room,
        "v3",
        "s3cret",
    )
    .await
    .expect_error(429, "rate_limited");
    join_from(&client, url, "2001:db8:5:7::1", &other_room, "v4", "s3cret")
        .await
        .expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_are_rate_limited_per_64() {
    let app = TestApp::spawn(
        Backend::Memory,
        &[
            ("TRUSTED_PROXY_HOPS", "1"),
            ("RATE_JOINS_PER_MIN", "1"),
            ("RATE_JOIN_BURST", "2"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let room = unique_room("v6-joins");
    app.create(&room, "owner", None).await.expect(201);
    let join = |from: &'static str, name: &'static str| {
        let (client, url, room) = (client.clone(), app.base_url.clone(), room.clone());
        async move {
            let response = client
                .post(format!("{url}/rooms/{room}/members"))
                .header("x-forwarded-for", from)
                .json(&json!({"username": name}))
                .send()
                .await
                .expect("join");
            response.status().as_u16()
        }
    };
    assert_eq!(join("2001:db8:1:2::a", "one").await, 201);
    assert_eq!(join("2001:db8:1:2::b", "two").await, 201);
    // Forty addresses of the same /64 share its bucket: the third join is over it.
    assert_eq!(join("2001:db8:1:2:dead:beef:0:1", "three").await, 429);
    // The next /64 is another client.
    assert_eq!(join("2001:db8:1:3::a", "four").await, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_methods_add_no_metric_series() {
    let app = TestApp::spawn(Backend::Memory, &[]).await;
    let client = reqwest::Client::new();
    for n in 0..30 {
        let method = Method::from_bytes(format!("INVENTED{n}").as_bytes()).expect("a method");
        for path in ["/healthz", "/rooms", "/nowhere"] {
            client
                .request(method.clone(), format!("{}{path}", app.base_url))
                .send()
                .await
                .expect("the request reached the app");
        }
    }
    let metrics = app.get("/metrics", None).await;
    metrics.expect(200);
    assert!(
        !metrics.text.contains("INVENTED"),
        "a method became a label"
    );
    let other: f64 = metrics
        .text
        .lines()
        .filter(|line| {
            line.starts_with("chat_http_requests_total{") && line.contains(r#"method="other""#)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(other, 90.0, "every invented method counts as other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_port_serves_metrics_alone_and_never_with_cors() {
    // Without METRICS_PORT: on the main port, without CORS headers even for an allowed origin.
    let app = TestApp::spawn(Backend::Memory, &[]).await;
    let reply = app
        .send(
            app.request(Method::GET, "/metrics", None)
                .header("origin", "https://chat.example.com"),
        )
        .await;
    reply.expect(200);
    assert!(
        !reply
            .headers
            .keys()
            .any(|name| name.as_str().starts_with("access-control-")),
        "{:?}",
        reply.headers
    );
    // The API itself still answers CORS.
    let healthz = app
        .send(
            app.request(Method::GET, "/healthz", None)
                .header("origin", "https://chat.example.com"),
        )
        .await;
    assert!(healthz.headers.contains_key("access-control-allow-origin"));

    // With METRICS_PORT: there only.
    let metrics_port = free_port();
    let server = ServerProcess::start(&[("METRICS_PORT", &metrics_port.to_string())]).await;
    let client = reqwest::Client::new();
    let main = client
        .get(format!("{}/metrics", server.base_url))
        .send()
        .await
        .expect("main port");
    assert_eq!(main.status(), 404);
    let own = client
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .header("origin", "https://chat.example.com")
        .send()
        .await
        .expect("metrics port");
    assert_eq!(own.status(), 200);
    assert!(!own.headers().contains_key("access-control-allow-origin"));
    let text = own.text().await.expect("metrics text");
    assert!(text.contains("chat_"), "{text}");
    let api = client
        .get(format!("http://127.0.0.1:{metrics_port}/healthz"))
        .send()
        .await
        .expect("metrics port, another path");
    assert_eq!(api.status(), 404, "the metrics port serves nothing else");
}

/// A raw connection to the app from the loopback address `source`, and the
/// `X-Forwarded-For` line a trusted proxy would add for `forwarded_for`.
async fn connect_from(
    app: &TestApp,
    source: Ipv4Addr,
    forwarded_for: Option<&str>,
) -> (tokio::net::TcpStream, String) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(std::net::SocketAddr::new(IpAddr::V4(source), 0))
        .expect("binding the source address");
    let addr = app
        .base_url
        .trim_start_matches("http://")
        .parse()
        .expect("ip:port");
    let stream = socket.connect(addr).await.expect("connect");
    let forwarded = forwarded_for
        .map(|ip| format!("X-Forwarded-For: {ip}\r\n"))
        .unwrap_or_default();
    (stream, forwarded)
}

/// Sends the head of a POST that declares a body of 100 bytes, and `sent` of them.
async fn partial_post(
    app: &TestApp,
    source: Ipv4Addr,
    forwarded_for: Option<&str>,
    sent: &[u8],
) -> tokio::net::TcpStream {
    let (mut stream, forwarded) = connect_from(app, source, forwarded_for).await;
    let head = format!(
        "POST /rooms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{forwarded}Content-Length: 100\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .await
        .expect("write the head");
    stream
        .write_all(sent)
        .await
        .expect("write part of the body");
    stream
}

/// `GET /healthz` on a fresh connection; the whole reply.
async fn probe(app: &TestApp, source: Ipv4Addr, forwarded_for: Option<&str>) -> String {
    let (mut stream, forwarded) = connect_from(app, source, forwarded_for).await;
    let request =
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{forwarded}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut reply))
        .await
        .expect("a reply within 5 s")
        .expect("read");
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_gets_408_and_loses_its_connection() {
    let app = TestApp::spawn(Backend::Memory, &[("REQUEST_BODY_TIMEOUT_SECS", "1")]).await;
    let mut stream = partial_post(&app, Ipv4Addr::LOCALHOST, None, b"{").await;
    // One byte every 200 ms keeps every read short; the body as a whole is late.
    let started = std::time::Instant::now();
    let mut reply = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        tokio::select! {
            read = stream.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => reply.extend_from_slice(&buffer[..n]),
            },
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                // The server may have closed its side already; a failed write is fine.
                let _ = stream.write_all(b" ").await;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the trickling body was still being read after 10 s"
        );
    }
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains(r#""code":"invalid_request""#), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("connection: close"),
        "{reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_address_cannot_hold_the_instance() {
    // Direct peers: half of MAX_CONNECTIONS is the most one address may open.
    let app = TestApp::spawn(
        Backend::Memory,
        &[
            ("MAX_CONNECTIONS", "20"),
            ("REQUEST_BODY_TIMEOUT_SECS", "60"),
        ],
    )
    .await;
    let attacker = Ipv4Addr::new(127, 0, 0, 1);
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(partial_post(&app, attacker, None, b"{").await);
    }
    let refused = eventually(
        "the attacker's address to be refused",
        Duration::from_secs(10),
        || {
            let reply = probe(&app, attacker, None);
            async move {
                let reply = reply.await;
                reply.starts_with("HTTP/1.1 429").then_some(reply)
            }
        },
    )
    .await;
    assert!(refused.contains(r#""code":"rate_limited""#), "{refused}");
    let bystander = probe(&app, Ipv4Addr::new(127, 0, 0, 2), None).await;
    assert!(bystander.starts_with("HTTP/1.1 200"), "{bystander}");
    drop(held);

    // Behind a trusted proxy, every client shares the proxy's connections: the cap counts
    // a client's requests in flight instead.
    let app = TestApp::spawn(
        Backend::Memory,
        &[
            ("TRUSTED_PROXY_HOPS", "1"),
            ("MAX_HTTP_CONNECTIONS_PER_IP", "2"),
            ("REQUEST_BODY_TIMEOUT_SECS", "60"),
        ],
    )
    .await;
    let proxy = Ipv4Addr::new(127, 0, 0, 3);
    let _slow = [
        partial_post(&app, proxy, Some("192.0.2.66"), b"{").await,
        partial_post(&app, proxy, Some("192.0.2.66"), b"{").await,
    ];
    eventually(
        "the slow client to be refused",
        Duration::from_secs(10),
        || {
            let reply = probe(&app, proxy, Some("192.0.2.66"));
            async move { reply.await.starts_with("HTTP/1.1 429").then_some(()) }
        },
    )
    .await;
    let other = probe(&app, proxy, Some("192.0.2.67")).await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_disconnected_by_the_write_timeout() {
    let app = TestApp::spawn(
        Backend::Memory,
        &[
            ("WRITE_TIMEOUT_SECS", "1"),
            ("RATE_LIMITS", "off"),
            ("MAX_CONNECTIONS_PER_IP", "1"),
            // Neither pings nor the lifetime may be what ends it.
            ("WS_PING_SECS", "600"),
            ("WS_MAX_LIFETIME_SECS", "600"),
        ],
    )
    .await;
    let source = Ipv4Addr::new(127, 0, 0, 7);
    let mut stuck = WsClient::try_connect(
        &app.base_url,
        Upgrade {
            source: Some(source),
            small_buffer: true,
            ..Upgrade::default()
        },
    )
    .await
    .expect("the stuck client connects");
    // Frames whose replies echo a large ref, in a quiet room: only its own replies are
    // queued for it, and it reads none of them.
    let big_ref = "r".repeat(30_000);
    let writer = tokio::spawn(async move {
        for _ in 0..2000 {
            let frame = json!({"event": "no:such:event", "ref": big_ref, "data": {}}).to_string();
            if !stuck.try_send_raw(WsMessage::text(frame)).await {
                return;
            }
        }
    });
    // Its stream slot comes free once the server has given up on it.
    eventually(
        "the stuck client to be disconnected",
        Duration::from_secs(30),
        || {
            let url = app.base_url.clone();
            async move {
                WsClient::try_connect(
                    &url,
                    Upgrade {
                        source: Some(source),
                        ..Upgrade::default()
                    },
                )
                .await
                .ok()
            }
        },
    )
    .await;
    writer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_that_is_never_read_is_dropped_by_the_write_timeout() {
    let app = TestApp::spawn(
        Backend::Memory,
        &[
            ("WRITE_TIMEOUT_SECS", "1"),
            ("RATE_LIMITS", "off"),
            ("MAX_CONNECTIONS_PER_IP", "1"),
            ("WS_MAX_LIFETIME_SECS", "600"),
            ("MAX_MESSAGE_BYTES", "60000"),
        ],
    )
    .await;
    let room = unique_room("sse-stuck");
    let alice = app.create_room(&room, "alice").await;
    let source = Ipv4Addr::new(127, 0, 0, 8);
    let open_stream = |small_buffer: bool| {
        let (url, room, token) = (app.base_url.clone(), room.clone(), alice.token.clone());
        async move {
            let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
            if small_buffer {
                socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
            }
            socket
                .bind(std::net::SocketAddr::new(IpAddr::V4(source), 0))
                .expect("binding the source address");
            let addr = url.trim_start_matches("http://").parse().expect("ip:port");
            let mut stream = socket.connect(addr).await.expect("connect");
            let request = format!(
                "GET /rooms/{room}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await.expect("write");
            let mut head = [0u8; 12];
            stream.read_exact(&mut head).await.expect("a status line");
            (stream, String::from_utf8_lossy(&head).into_owned())
        }
    };
    // A stream whose client reads nothing after the status line.
    let (_stuck, status) = open_stream(true).await;
    assert_eq!(status, "HTTP/1.1 200", "the stuck stream opens");
    // Big messages (18 MB, more than the kernel buffers between the two) back its socket up:
    // the server's writes to it cannot proceed.
    let payload = "x".repeat(60_000);
    for _ in 0..300 {
        app.say(&room, &alice.token, &payload).await;
    }
    // Its slot (one stream per address) comes free once the server gave up on it.
    eventually(
        "the stuck stream to be dropped",
        Duration::from_secs(30),
        || {
            let attempt = open_stream(false);
            async move {
                let (_stream, status) = attempt.await;
                (status == "HTTP/1.1 200").then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_answered_even_while_the_server_stops() {
    // One connection fills the instance; the next is refused with 503, and shutdown waits
    // for that refusal to be written like for any connection (it once ran untracked, and the
    // process could exit under it).
    let mut server =
        ServerProcess::start(&[("MAX_CONNECTIONS", "1"), ("SHUTDOWN_GRACE_SECS", "8")]).await;
    let address = server.base_url.trim_start_matches("http://").to_owned();
    // The readiness probe's connection may still count for a moment: retry until this one
    // is the instance's one connection.
    let _held = eventually("the one connection", Duration::from_secs(10), || {
        let address = address.clone();
        async move {
            let mut held = tokio::net::TcpStream::connect(&address).await.ok()?;
            held.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .ok()?;
            let mut answer = [0u8; 12];
            held.read_exact(&mut answer).await.ok()?;
            (&answer == b"HTTP/1.1 200").then_some(held)
        }
    })
    .await;
    // The refused client is still sending its request when the server is told to stop.
    let mut refused = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    refused
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("write the request line");
    let client = async {
        // The listener is closed once shutdown has begun; then the request is finished.
        eventually(
            "the server to stop accepting",
            Duration::from_secs(10),
            || {
                let address = address.clone();
                async move {
                    tokio::net::TcpStream::connect(&address)
                        .await
                        .is_err()
                        .then_some(())
                }
            },
        )
        .await;
        refused
            .write_all(b"Host: x\r\n\r\n")
            .await
            .expect("finish the request");
        let mut reply = String::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), refused.read_to_string(&mut reply))
                .await
                .expect("the refusal within 10 s");
        (read.is_ok(), reply)
    };
    let ((read, reply), (status, _)) =
        tokio::join!(client, server.terminate(Duration::from_secs(15)));
    assert!(read, "the refused connection was reset: {reply}");
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(status.success(), "{status}");
}

conformance! {
    async fn an_idempotency_key_keeps_the_id_not_the_message(backend: Backend) {
        let app = TestApp::spawn(backend, &[("HISTORY_LIMIT", "3")]).await;
        let room = unique_room("idem-kept");
        let alice = app.create_room(&room, "alice").await;
        let first = app
            .post_with_key(&room, Some(&alice.token), "the first words", Some("k-1"))
            .await
            .expect(201)
            .clone();
        // While the message is in the log, a retry gets it back, whatever it says now.
        let retry = app
            .post_with_key(&room, Some(&alice.token), "something else", Some("k-1"))
            .await;
        assert_eq!(retry.expect(201), &first);
        // Push it out of the log (three events kept).
        for n in 0..4 {
            app.say(&room, &alice.token, &format!("later {n}")).await;
        }
        let (page, _) = app.history_page(&room, &alice.token, "").await;
        assert!(page.iter().all(|message| message.message != "the first words"));
        // The same retry is still answered with the stored message, and lands nothing.
        let retry = app
            .post_with_key(&room, Some(&alice.token), "the first words", Some("k-1"))
            .await;
        assert_eq!(retry.expect(201), &first);
        // A different message under that key cannot be answered truthfully any more.
        app.post_with_key(&room, Some(&alice.token), "something else", Some("k-1"))
            .await
            .expect_error(400, "invalid_request");
        let (after, _) = app.history_page(&room, &alice.token, "").await;
        assert_eq!(after, page, "nothing was appended by the retries");
        if let Backend::Redis(redis) = backend {
            let keys = redis.command_list(&["KEYS", &format!("room:{{{room}}}:idem:*")]);
            assert_eq!(keys.len(), 1, "{keys:?}");
            let kept = redis.command(&["GET", &keys[0]]);
            assert!(!kept.contains("first words"), "the key kept the message: {kept}");
            assert!(kept.starts_with(first["id"].as_str().unwrap()), "{kept}");
        }
    }
}
