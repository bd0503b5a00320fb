//! Observability, end to end: the real binary exporting spans over OTLP (HTTP/protobuf and
//! gRPC) to a receiver this test starts, and flushing them when it stops; its Cloud Logging
//! JSON lines carrying the caller's trace; and `/metrics` covering the issue's list without a
//! room id, username or token in any label.
//!
//! The receivers are real OTLP endpoints on loopback ports: an axum handler decoding
//! `ExportTraceServiceRequest` protobufs, and a tonic server implementing the collector's
//! `TraceService`. Spans arrive by the SDK's batch timer (`OTEL_BSP_SCHEDULE_DELAY=100`); the
//! tests poll what arrived under a deadline.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::support::process::ServerProcess;
use crate::support::stream::{SseClient, WsClient};
use crate::support::{Backend, RedisServer, TestApp, eventually, metric_sample, unique_room};

/// How long spans or log lines may take to show up.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(15);
/// The caller's trace and span, as a `traceparent` carries them.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
}

/// One exported span with its service's name.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Span,
}

impl Received {
    fn trace_id(&self) -> String {
        hex::encode(&self.span.trace_id)
    }
    fn span_id(&self) -> String {
        hex::encode(&self.span.span_id)
    }
    fn parent_span_id(&self) -> String {
        hex::encode(&self.span.parent_span_id)
    }
    fn attribute(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|attribute| attribute.key == key)
            .and_then(|attribute| attribute.value.as_ref())
            .map(text_of)
    }
}

fn text_of(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::IntValue(n)) => n.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(x)) => x.to_string(),
        other => format!("{other:?}"),
    }
}

/// Every string an exported span carries: attributes, event attributes, link attributes.
fn all_values(span: &Span) -> Vec<String> {
    let of = |attributes: &[KeyValue]| -> Vec<String> {
        attributes
            .iter()
            .filter_map(|attribute| attribute.value.as_ref())
            .map(text_of)
            .collect()
    };
    let mut values = of(&span.attributes);
    values.push(span.name.clone());
    for event in &span.events {
        values.push(event.name.clone());
        values.extend(of(&event.attributes));
    }
    for link in &span.links {
        values.extend(of(&link.attributes));
    }
    values
}

/// What a receiver got, shared with its handler.
#[derive(Clone, Default)]
struct Inbox(Arc<Mutex<Vec<Received>>>);

impl Inbox {
    fn add(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.0.lock().expect("no receiver panics holding the inbox");
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| attribute.value.as_ref())
                .map(text_of)
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    spans.push(Received {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
    }

    fn spans(&self) -> Vec<Received> {
        self.0
            .lock()
            .expect("no receiver panics holding the inbox")
            .clone()
    }
}

/// An OTLP receiver on a loopback port; stops when dropped.
struct OtlpReceiver {
    endpoint: String,
    inbox: Inbox,
    task: JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OtlpReceiver {
    /// OTLP/HTTP with protobuf bodies: `POST /v1/traces`.
    async fn http() -> Self {
        async fn export(State(inbox): State<Inbox>, body: Bytes) -> Response {
            match ExportTraceServiceRequest::decode(body) {
                Ok(request) => {
                    inbox.add(request);
                    (
                        [(header::CONTENT_TYPE, "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                        .into_response()
                }
                Err(_) => StatusCode::BAD_REQUEST.into_response(),
            }
        }
        let inbox = Inbox::default();
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(export))
            .with_state(inbox.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the OTLP/HTTP receiver");
        let addr = listener.local_addr().expect("the receiver's address");
        let task = tokio::spawn(async move {
            let _stopped = axum::serve(listener, app).await;
        });
        Self {
            endpoint: format!("http://{addr}"),
            inbox,
            task,
        }
    }

    /// OTLP/gRPC: the collector's `TraceService`.
    async fn grpc() -> Self {
        struct Collector(Inbox);

        #[tonic::async_trait]
        impl TraceService for Collector {
            async fn export(
                &self,
                request: tonic::Request<ExportTraceServiceRequest>,
            ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
                self.0.add(request.into_inner());
                Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
            }
        }

        let inbox = Inbox::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the OTLP/gRPC receiver");
        let addr = listener.local_addr().expect("the receiver's address");
        let service = TraceServiceServer::new(Collector(inbox.clone()));
        let task = tokio::spawn(async move {
            let _stopped = tonic::transport::Server::builder()
                .serve_with_incoming(
                    service,
                    tonic::transport::server::TcpIncoming::from(listener),
                )
                .await;
        });
        Self {
            endpoint: format!("http://{addr}"),
            inbox,
            task,
        }
    }

    /// Waits until spans named each of `names` arrived; returns everything received.
    async fn spans_named(&self, names: &[&str]) -> Vec<Received> {
        let inbox = self.inbox.clone();
        eventually(
            "the spans to reach the OTLP receiver",
            ARRIVAL_TIMEOUT,
            || {
                let spans = inbox.spans();
                let complete = names
                    .iter()
                    .all(|name| spans.iter().any(|received| received.span.name == *name));
                async move { complete.then_some(spans) }
            },
        )
        .await
    }
}

/// The names of `span`'s ancestors among `spans`, nearest first.
fn ancestry(spans: &[Received], span: &Received) -> Vec<String> {
    let mut names = Vec::new();
    let mut parent = span.parent_span_id();
    while let Some(up) = spans.iter().find(|s| s.span_id() == parent) {
        names.push(up.span.name.clone());
        parent = up.parent_span_id();
    }
    names
}

#[track_caller]
fn one_named<'a>(spans: &'a [Received], name: &str) -> &'a Received {
    let named: Vec<&Received> = spans.iter().filter(|s| s.span.name == name).collect();
    assert_eq!(named.len(), 1, "spans named {name:?}: {named:#?}");
    named[0]
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

/// Traffic every export test makes, and what it learns: a REST create carrying the caller's
/// trace context, a WebSocket `add:member`, and a history read with the token in the query.
struct Traffic {
    room: String,
    token: String,
}

/// Creates `room` as alice with `request` (a `POST /rooms`); returns her token.
async fn create_room(request: reqwest::RequestBuilder, room: &str) -> String {
    let created: Value = request
        .json(&json!({"roomId": room, "username": "alice"}))
        .send()
        .await
        .expect("POST /rooms")
        .json()
        .await
        .expect("a JSON reply");
    created["token"]
        .as_str()
        .expect("the creator's token")
        .to_owned()
}

async fn make_traffic(server: &ServerProcess) -> Traffic {
    let client = http_client();
    let room = unique_room("otlp");
    let token = create_room(
        client
            .post(format!("{}/rooms", server.base_url))
            .header("traceparent", traceparent()),
        &room,
    )
    .await;
    // Bob's connection stays open until the traffic is made.
    let _bob = WsClient::member_of(&server.base_url, &room, "bob").await;
    // The token in the query string, as EventSource clients send it: it must not reach a span.
    let history = client
        .get(format!(
            "{}/rooms/{room}/messages?limit=5&token={token}",
            server.base_url
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET messages");
    assert_eq!(history.status(), 200);
    Traffic { room, token }
}

/// What every export test asserts about the spans of [`make_traffic`].
fn assert_traffic_spans(spans: &[Received], traffic: &Traffic) {
    // The request continues the caller's trace, as a server span under the caller's span.
    let create = one_named(spans, "POST /rooms");
    assert_eq!(create.trace_id(), TRACE_ID);
    assert_eq!(create.parent_span_id(), PARENT_SPAN_ID);
    assert_eq!(create.span.kind, SpanKind::Server as i32);
    assert_eq!(create.attribute("http.route").as_deref(), Some("/rooms"));
    assert_eq!(
        create.attribute("http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        create.attribute("http.response.status_code").as_deref(),
        Some("201")
    );
    assert_eq!(create.service, "chat-otlp-test");

    // The store operation is within the request, under the rooms operation.
    let store = one_named(spans, "store.create_room");
    assert_eq!(store.trace_id(), TRACE_ID);
    assert_eq!(
        ancestry(spans, store),
        ["rooms.create_room", "POST /rooms"],
        "{spans:#?}"
    );
    assert_eq!(
        store.attribute("chat.room").as_deref(),
        Some(traffic.room.as_str())
    );

    // The WebSocket client event is its own trace, linked to the upgrade request, with its
    // store operation as a child.
    let upgrade = one_named(spans, "GET /ws");
    let event = one_named(spans, "ws add:member");
    assert_eq!(event.span.kind, SpanKind::Server as i32);
    assert!(event.span.parent_span_id.is_empty(), "{event:#?}");
    assert_eq!(event.attribute("chat.event").as_deref(), Some("add:member"));
    assert_eq!(event.attribute("chat.outcome").as_deref(), Some("ack"));
    assert_eq!(
        event.attribute("chat.room").as_deref(),
        Some(traffic.room.as_str())
    );
    assert!(
        event
            .span
            .links
            .iter()
            .any(|link| link.span_id == upgrade.span.span_id
                && link.trace_id == upgrade.span.trace_id),
        "the event does not link to its upgrade request: {event:#?}"
    );
    let join = one_named(spans, "store.join");
    assert_eq!(
        ancestry(spans, join),
        ["rooms.join", "ws add:member"],
        "{spans:#?}"
    );
    assert_eq!(join.trace_id(), event.trace_id());

    // The query string never reaches a span, nor does the token in any other way.
    let history = one_named(spans, "GET /rooms/{roomId}/messages");
    assert_eq!(
        history.attribute("url.path"),
        Some(format!("/rooms/{}/messages", traffic.room))
    );
    for received in spans {
        for value in all_values(&received.span) {
            assert!(
                !value.contains(&traffic.token),
                "a span carries the member token: {received:#?}"
            );
        }
    }
}

/// The spans of [`make_traffic`].
const TRAFFIC_SPANS: [&str; 6] = [
    "POST /rooms",
    "store.create_room",
    "GET /ws",
    "ws add:member",
    "store.join",
    "GET /rooms/{roomId}/messages",
];

/// Runs the binary exporting to `receiver` over `protocol` (plus `vars`), makes the traffic,
/// waits for its spans and those named in `also`, and checks them. Returns the running server
/// and everything received.
async fn export_traffic(
    receiver: &OtlpReceiver,
    protocol: &str,
    vars: &[(&str, &str)],
    also: &[&str],
) -> (ServerProcess, Vec<Received>) {
    let mut all_vars = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_SERVICE_NAME", "chat-otlp-test"),
    ];
    all_vars.extend_from_slice(vars);
    let server = ServerProcess::start(&all_vars).await;
    let traffic = make_traffic(&server).await;
    let mut names = TRAFFIC_SPANS.to_vec();
    names.extend_from_slice(also);
    let spans = receiver.spans_named(&names).await;
    assert_traffic_spans(&spans, &traffic);
    (server, spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_http_receiver_with_the_callers_trace() {
    let receiver = OtlpReceiver::http().await;
    export_traffic(&receiver, "http/protobuf", &[], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_grpc_receiver_with_redis_client_spans() {
    let redis = RedisServer::start();
    let receiver = OtlpReceiver::grpc().await;
    let redis_url = redis.url();
    let (server, spans) = export_traffic(
        &receiver,
        "grpc",
        &[("REDIS_URL", &redis_url)],
        &["redis create_room"],
    )
    .await;
    // On Redis, each exchange is a client span under its store operation.
    let store = one_named(&spans, "store.create_room");
    let exchange = one_named(&spans, "redis create_room");
    assert_eq!(exchange.parent_span_id(), store.span_id());
    assert_eq!(exchange.span.kind, SpanKind::Client as i32);
    assert_eq!(
        exchange.attribute("db.system.name").as_deref(),
        Some("redis")
    );

    // The sweeper's background exchanges start no traces of their own: once a sweep has run
    // (its round trip is on /metrics), a later request's span is exported after anything the
    // sweep could have made, and nothing of the sweep is there.
    let client = http_client();
    let metrics_url = format!("{}/metrics", server.base_url);
    eventually("a lease sweep to run", ARRIVAL_TIMEOUT, || {
        let request = client.get(&metrics_url).send();
        async move {
            let metrics = request.await.ok()?.text().await.ok()?;
            metric_sample(
                &metrics,
                "chat_redis_round_trip_seconds_count{op=\"sweep_index\"}",
            )
            .filter(|count| *count >= 1.0)
        }
    })
    .await;
    let marker = client
        .get(format!("{}/healthz", server.base_url))
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(marker.status(), 200);
    let spans = receiver.spans_named(&["GET /healthz"]).await;
    assert!(
        spans
            .iter()
            .all(|received| !received.span.name.contains("sweep")),
        "housekeeping was traced: {spans:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_request_s_span_lasts_as_long_as_its_stream() {
    let receiver = OtlpReceiver::http().await;
    let server = ServerProcess::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let client = http_client();
    let room = unique_room("sse-span");
    let token = &create_room(client.post(format!("{}/rooms", server.base_url)), &room).await;
    let mut stream = SseClient::open(
        client
            .get(format!("{}/rooms/{room}/events", server.base_url))
            .bearer_auth(token),
    )
    .await;
    let posted = client
        .post(format!("{}/rooms/{room}/messages", server.base_url))
        .bearer_auth(token)
        .json(&json!({"message": "while streaming"}))
        .send()
        .await
        .expect("POST messages");
    assert_eq!(posted.status(), 201);
    let event = stream.event().await;
    assert_eq!(event.event.as_deref(), Some("create:chat:success"));
    let delivered_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos();
    drop(stream);
    let spans = receiver.spans_named(&["GET /rooms/{roomId}/events"]).await;
    let span = &one_named(&spans, "GET /rooms/{roomId}/events").span;
    // The span is not entered for each frame of the stream, but it still ends with it, not
    // when the response's headers went out.
    assert!(
        u128::from(span.end_time_unix_nano) >= delivered_at,
        "the stream's span ended before its event was delivered: {span:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_spans_are_flushed_when_the_server_stops() {
    let receiver = OtlpReceiver::http().await;
    // A batch delay far beyond the test: only the flush on shutdown can export the spans.
    let mut server = ServerProcess::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
    ])
    .await;
    let created = http_client()
        .post(format!("{}/rooms", server.base_url))
        .header("traceparent", traceparent())
        .json(&json!({"roomId": unique_room("flush"), "username": "alice"}))
        .send()
        .await
        .expect("POST /rooms");
    assert_eq!(created.status(), 201);
    assert!(
        receiver.inbox.spans().is_empty(),
        "spans were exported before the batch delay"
    );
    let (status, _) = server.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "the server exited with {status}");
    // The process is gone: what it exported has been received already.
    let spans = receiver.inbox.spans();
    let create = one_named(&spans, "POST /rooms");
    assert_eq!(create.trace_id(), TRACE_ID);
    // Without OTEL_SERVICE_NAME or K_SERVICE, the service is named after the server.
    assert_eq!(create.service, "chat-server");
}

/// The Cloud Logging lines `log` holds, each parsed (every line must be one JSON object).
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("{line:?} is not JSON: {err}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_callers_trace_for_cloud_logging() {
    let server = ServerProcess::start(&[
        ("LOG_FORMAT", "json"),
        ("GOOGLE_CLOUD_PROJECT", "chat-test-project"),
        // The request's own lines are DEBUG (Cloud Run writes a request log already).
        ("RUST_LOG", "info,chat_server::http=debug"),
    ])
    .await;
    let client = http_client();
    let room = unique_room("json-logs");
    let created = client
        .post(format!("{}/rooms", server.base_url))
        .header("traceparent", traceparent())
        .json(&json!({"roomId": room, "username": "alice"}))
        .send()
        .await
        .expect("POST /rooms");
    assert_eq!(created.status(), 201);
    let token = created.json::<Value>().await.expect("a JSON reply")["token"]
        .as_str()
        .expect("the creator's token")
        .to_owned();
    // Google's own header, as Cloud Run's front end sends it (span id in decimal).
    let cloud_trace = "105445aa7843bc8bf206b12000100000";
    let history = client
        .get(format!(
            "{}/rooms/{room}/messages?token={token}",
            server.base_url
        ))
        .header("x-cloud-trace-context", format!("{cloud_trace}/1;o=1"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET messages");
    assert_eq!(history.status(), 200);

    let trace_field = "logging.googleapis.com/trace";
    let wanted = [
        format!("projects/chat-test-project/traces/{TRACE_ID}"),
        format!("projects/chat-test-project/traces/{cloud_trace}"),
    ];
    let lines = eventually("log lines of both traces", ARRIVAL_TIMEOUT, || {
        let lines = json_lines(&server.log());
        let complete = wanted.iter().all(|trace| {
            lines
                .iter()
                .any(|line| line[trace_field] == *trace && line["status"].is_number())
        });
        async move { complete.then_some(lines) }
    })
    .await;

    for line in &lines {
        let severity = line["severity"].as_str().expect("severity is a string");
        assert!(
            ["DEBUG", "INFO", "WARNING", "ERROR"].contains(&severity),
            "{line}"
        );
        assert!(line["message"].is_string(), "{line}");
        let time = line["time"].as_str().expect("time is a string");
        chrono::DateTime::parse_from_rfc3339(time)
            .unwrap_or_else(|err| panic!("time {time:?} is not RFC 3339: {err}"));
        assert!(
            !line.to_string().contains(&token),
            "a log line carries the token: {line}"
        );
    }
    let request_lines: Vec<&Value> = lines
        .iter()
        .filter(|line| line[trace_field] == *wanted[0].as_str())
        .collect();
    for line in &request_lines {
        let span_id = line["logging.googleapis.com/spanId"]
            .as_str()
            .expect("a span id with the trace");
        assert_eq!(span_id.len(), 16, "{line}");
        assert!(span_id.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");
        // The server's own span, a child of the caller's.
        assert_ne!(span_id, PARENT_SPAN_ID, "{line}");
        assert_eq!(line["logging.googleapis.com/trace_sampled"], true, "{line}");
    }
    // Lines outside any request have no trace.
    let listening = lines
        .iter()
        .find(|line| line["message"] == "listening")
        .expect("the start-up line");
    assert_eq!(listening["severity"], "INFO");
    assert!(listening.get(trace_field).is_none(), "{listening}");
}

/// Whether `/metrics` text has a sample line starting with `series` (a name, maybe with labels
/// exactly as rendered).
fn has_series(metrics: &str, series: &str) -> bool {
    metrics
        .lines()
        .any(|line| !line.starts_with('#') && line.starts_with(series))
}

conformance! {
    async fn metrics_cover_delivery_without_ids_in_labels(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("metrics-privacy");
        let username = format!("watcher{}", std::process::id());
        let creator = app.create_room(&room, &username).await;
        let mut ws = WsClient::connect(&app.base_url).await;
        ws.ack("resume", "r", json!({"roomId": room, "token": creator.token}))
            .await;
        app.say(&room, &creator.token, "hello").await;
        ws.event_named("create:chat:success").await;
        let metrics = app.get("/metrics", None).await;
        assert_eq!(metrics.status, 200);
        let metrics = metrics.text;

        for series in [
            "chat_open_connections{transport=\"websocket\"}",
            "chat_room_events_appended_total{event=\"create:room:success\"}",
            "chat_room_events_appended_total{event=\"add:member:success\"}",
            "chat_room_events_appended_total{event=\"create:chat:success\"}",
            "chat_events_delivered_total",
            "chat_delivery_latency_seconds_bucket{transport=\"websocket\"",
            "chat_delivery_latency_seconds_count{transport=\"websocket\"}",
            "chat_slow_client_disconnects_total",
            "chat_http_requests_total{route=\"/rooms/{roomId}/messages\",method=\"POST\",status=\"201\"}",
            "chat_http_request_duration_seconds_bucket{route=\"/rooms\",method=\"POST\",status=\"201\"",
            "chat_ws_event_duration_seconds_bucket{event=\"resume\"",
        ] {
            assert!(has_series(&metrics, series), "no {series} in:\n{metrics}");
        }
        if let Backend::Redis(_) | Backend::Cluster(_) = backend {
            assert!(
                has_series(&metrics, "chat_redis_round_trip_seconds_bucket{op=\"post\""),
                "no Redis round trips in:\n{metrics}"
            );
        }
        for private in [&room, &username, &creator.token] {
            assert!(
                !metrics.contains(private.as_str()),
                "/metrics shows {private:?}:\n{metrics}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_errors_are_counted_by_operation() {
    let mut redis = RedisServer::start();
    let app = TestApp::spawn(Backend::Redis(&redis), &[("REDIS_TIMEOUT_MS", "300")]).await;
    let room = unique_room("store-errors");
    let creator = app.create_room(&room, "alice").await;
    redis.stop();
    app.post(&room, Some(&creator.token), "into the void")
        .await
        .expect_error(503, "unavailable");
    let metrics = app.get("/metrics", None).await.text;
    assert!(
        has_series(&metrics, "chat_store_errors_total{op=\"post\"}"),
        "no store error counted in:\n{metrics}"
    );
    assert!(!metrics.contains(&room), "/metrics shows the room id");
}
