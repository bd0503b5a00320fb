//! The HTTP surface: every route in one [`router`] (the API and the embedded browser client),
//! the shared [`AppState`], and the middleware every request passes (client identification
//! and its cap of requests in flight behind proxies, the request body's deadline, REST rate
//! limit, CORS, metrics, tracing). Transports are thin adapters over [`crate::rooms::Rooms`].
//!
//! `/metrics` never gets CORS headers (nothing in a browser needs it); with `METRICS_PORT` it
//! is served only by [`metrics_router`] on that port, and the main port answers 404.

pub mod api_doc;
pub mod client;
pub mod error;
pub mod extract;
pub mod health;
pub mod openapi;
pub mod origins;
pub mod rest;
pub mod serve;
pub mod server_api;
pub mod socketio;
pub mod sse;
pub mod write_timeout;
pub mod ws;

pub use origins::Origins;

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::body::HttpBody;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use http_body_util::BodyExt;
use metrics_exporter_prometheus::PrometheusHandle;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::net::SocketAddr;

use axum::extract::ConnectInfo;

use crate::error::ApiError;
use crate::limits::{ClientIp, Limits, client_ip};
use crate::rooms::Rooms;
use crate::telemetry;

/// Request bodies (and WebSocket frames) are limited to 64 KiB, as API.md says.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub limits: Arc<Limits>,
    pub origins: Arc<Origins>,
    pub rooms: Rooms,
    pub metrics: PrometheusHandle,
    pub realtime: Arc<Realtime>,
    pub http: HttpSettings,
    /// `SERVER_API_KEY`: with it the server API's routes exist (see [`server_api`]).
    pub server_api_key: Option<Arc<crate::config::ServerApiKey>>,
}

#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// A request's whole body must arrive within this long.
    pub request_body_timeout: Duration,
    /// `/metrics` on the main port (false when `METRICS_PORT` serves it).
    pub metrics_on_main_port: bool,
}

/// What the streaming transports share.
pub struct Realtime {
    /// What every connection's session shares (the hub, presence, the room operations).
    pub sessions: Arc<crate::session::Core>,
    pub settings: StreamSettings,
    /// Cancelled on shutdown: every stream closes (WebSocket 1012, SSE end of stream).
    pub stopping: CancellationToken,
    /// Owns the WebSocket connection tasks, so shutdown can wait for them.
    pub tasks: TaskTracker,
}

#[derive(Debug, Clone)]
pub struct StreamSettings {
    pub ping_every: Duration,
    pub max_lifetime: Duration,
    pub sse_keepalive: Duration,
    /// How long a stream ticket stays redeemable.
    pub sse_ticket_ttl: Duration,
}

pub fn router(state: AppState) -> Router {
    // Signed-in joins read their body differently (`username` optional): one pair of handlers
    // or the other, decided once, so anonymous joins keep exactly their rules.
    let (create_room, join_room) = if state.rooms.identity().required() {
        (
            post(rest::create_room_signed_in),
            post(rest::join_room_signed_in),
        )
    } else {
        (post(rest::create_room), post(rest::join_room))
    };
    let rooms = Router::new()
        .route("/rooms", create_room)
        .route("/rooms/{roomId}/members", join_room.get(rest::members))
        .route(
            "/rooms/{roomId}/members/{username}",
            delete(rest::leave_room),
        )
        .route(
            "/rooms/{roomId}/messages",
            post(rest::post_message).get(rest::history),
        )
        .route(
            "/rooms/{roomId}/messages/{id}",
            patch(rest::edit_message).delete(rest::delete_message),
        )
        .route("/rooms/{roomId}/typing", post(rest::typing))
        .route("/rooms/{roomId}/events", get(sse::events))
        .route("/rooms/{roomId}/events/ticket", post(sse::issue_ticket))
        .route_layer(middleware::from_fn_with_state(state.clone(), limit_rest));
    let mut app = Router::new().merge(rooms);
    if let Some(server_api) = server_api::routes(&state) {
        app = app.merge(server_api);
    }
    let mut app = app
        .route("/ws", get(ws::upgrade))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(api_doc::openapi_json))
        .route("/", get(client::index))
        .route("/client/{file}", get(client::file))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // socket.io's requests never reach the routes: the layer answers them, behind the
        // origin check, the body deadline, metrics and CORS (for polling) like the rest.
        .layer(socketio::layer(&state))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            socketio::guard,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            read_body_in_time,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ))
        .layer(state.origins.cors());
    if state.http.metrics_on_main_port {
        // Added after the CORS layer, so it never answers with CORS headers.
        app = app.route("/metrics", get(health::metrics));
    }
    app.layer(middleware::from_fn_with_state(
        state.clone(),
        identify_client,
    ))
    .layer(middleware::from_fn(trace_request))
    .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
    .with_state(state)
}

/// `/metrics` alone, for its own port (`METRICS_PORT`); everything else is 404.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        .with_state(state)
}

/// Paths and methods outside the API get the API's error body with the HTTP status that
/// says what is wrong (404 / 405) and the code `invalid_request`.
async fn not_found() -> Response {
    with_status(ApiError::invalid("no such endpoint"), StatusCode::NOT_FOUND)
}

async fn method_not_allowed() -> Response {
    with_status(
        ApiError::invalid("method not allowed on this endpoint"),
        StatusCode::METHOD_NOT_ALLOWED,
    )
}

fn with_status(error: ApiError, status: StatusCode) -> Response {
    let mut response = error.into_response();
    *response.status_mut() = status;
    response
}

/// Decides the request's client IP once (see [`client_ip`]) for every limit that needs it.
/// Behind trusted proxies, the peer is a proxy carrying many clients' requests, so the cap of
/// plain HTTP connections per client (which the accept loop applies to direct peers) counts
/// this client's requests in flight instead.
async fn identify_client(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let ip = client_ip(request.headers(), peer, state.limits.trusted_proxy_hops);
    request.extensions_mut().insert(ClientIp(ip));
    let _in_flight = if state.limits.trusted_proxy_hops > 0 {
        match state.limits.open_http(ip) {
            Ok(slot) => Some(slot),
            Err(err) => return err.into_response(),
        }
    } else {
        None
    };
    next.run(request).await
}

/// Reads a request's body whole (bodies are at most [`MAX_BODY_BYTES`]) before the handler
/// runs, within `REQUEST_BODY_TIMEOUT_SECS` from the end of its headers: a client that
/// declares a body and trickles it (or never sends it) gets 408 and loses the connection,
/// instead of holding it as long as it likes.
async fn read_body_in_time(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let limit = state.http.request_body_timeout;
    let read = http_body_util::Limited::new(body, MAX_BODY_BYTES).collect();
    match tokio::time::timeout(limit, read).await {
        Ok(Ok(body)) => {
            next.run(Request::from_parts(parts, Body::from(body.to_bytes())))
                .await
        }
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => {
            if socketio::is_socketio_path(parts.uri.path()) {
                // A polling packet over the limit ends its socket (API.md); the library ends
                // an Engine.IO session for a payload over its limit, so it is handed one.
                let oversized = Body::from(vec![b'x'; MAX_BODY_BYTES + 1]);
                return next.run(Request::from_parts(parts, oversized)).await;
            }
            extract::body_too_large().into_response()
        }
        Ok(Err(_)) => ApiError::invalid("request body could not be read").into_response(),
        Err(_) => {
            metrics::counter!("chat_request_body_timeouts_total").increment(1);
            let mut response = with_status(
                ApiError::invalid(format!(
                    "the request body did not arrive within {} s",
                    limit.as_secs()
                )),
                StatusCode::REQUEST_TIMEOUT,
            );
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            response
        }
    }
}

/// REST requests per client IP.
async fn limit_rest(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let allowed = request
        .extensions()
        .get::<ClientIp>()
        .map_or(Ok(()), |ClientIp(ip)| state.limits.check_rest(*ip));
    match allowed {
        Ok(()) => next.run(request).await,
        Err(err) => err.into_response(),
    }
}

/// Runs the request inside its span ([`request_span`]) and records the response on it. The
/// span lasts as long as the response body, so an SSE request's span covers the stream, but
/// it is not entered on each of the body's frames (as `tower_http`'s `TraceLayer` does):
/// for a thousand open streams, entering and leaving their spans took a tenth of the
/// server's CPU.
async fn trace_request(request: Request, next: Next) -> Response {
    let span = request_span(&request);
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    record_response(&response, started.elapsed(), &span);
    let span = SpanUntilBodyEnds(span);
    response.map(|body| {
        Body::new(body.map_frame(move |frame| {
            // Owned by the body, so the span ends when the body does.
            let _request_span = &span;
            frame
        }))
    })
}

/// Holds a request's span until its response body is dropped, and enters it once then:
/// `tracing_opentelemetry` ends a span at its last exit, not at its close, so without this
/// an SSE request's span would end when its headers went out.
struct SpanUntilBodyEnds(Span);

impl Drop for SpanUntilBodyEnds {
    fn drop(&mut self) {
        self.0.in_scope(|| {});
    }
}

/// The request's span, which is also its OpenTelemetry server span: named after the route
/// template (`GET /rooms/{roomId}/messages`), a child of the caller's span when the request
/// carries trace context. The path only, never the query: `?token=` carries a member token.
fn request_span(request: &Request) -> Span {
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    // Unmatched paths are named by the method alone, as OpenTelemetry's conventions say, so
    // span names stay a bounded set.
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_owned(),
    };
    let span = tracing::info_span!(
        "http.request",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        url.path = request.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    if let Some(parent) = telemetry::traces::remote_parent(request.headers()) {
        // Fails only without an OpenTelemetry layer (an app built in-process, as the tests
        // do), where there are no trace ids to continue; the span was not entered yet.
        let _no_layer = span.set_parent(parent);
    }
    span
}

/// The status on the request's span; a 5xx marks the span as failed (4xx are the client's)
/// and is logged as an error.
fn record_response(response: &Response, latency: Duration, span: &Span) {
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    let latency_ms = latency.as_millis();
    if response.status().is_server_error() {
        span.record("otel.status_code", "error");
        span.in_scope(|| tracing::error!(status, latency_ms, "response failed"));
    } else {
        span.in_scope(|| tracing::debug!(status, latency_ms, "finished processing request"));
    }
}

/// The method as a metric label or span field: one of a fixed set, so a client inventing
/// methods cannot create series (or span names) without bound.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts requests and their latency by route template (never the raw path, which holds room
/// ids and usernames), method (a fixed set) and status. Every label is bounded: routes are
/// the router's templates or `unmatched`, statuses are the ones the server sends.
async fn record_request(State(_state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| {
            // socket.io's requests (polling, the upgrade) are answered by its layer, outside
            // the routes.
            if socketio::is_socketio_path(request.uri().path()) {
                format!("{}/", socketio::PATH)
            } else {
                "unmatched".to_owned()
            }
        });
    let method = method_label(request.method());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [
        ("route", route),
        ("method", method.to_owned()),
        ("status", status),
    ];
    metrics::counter!("chat_http_requests_total", &labels).increment(1);
    metrics::histogram!("chat_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}
