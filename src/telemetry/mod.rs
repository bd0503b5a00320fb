//! Logs, traces and metrics.
//!
//! - Logs: `tracing` events as human text, or as Cloud Logging JSON lines ([`logs`]);
//!   `RUST_LOG` filters them.
//! - Traces: `tracing` spans of this crate as OpenTelemetry spans ([`traces`]), exported over
//!   OTLP when configured. They have their own filter (this crate, INFO and up), independent of
//!   `RUST_LOG`, so quiet logs do not mean missing spans, and so the exporter's own HTTP and gRPC
//!   clients, which log through `tracing` too, are never traced into their own export.
//! - Metrics: the process-wide Prometheus recorder that `/metrics` renders. Label values are
//!   bounded sets (routes, methods, statuses, transports, operation and event names), never a
//!   room id, a username or a token.

pub mod logs;
pub mod traces;

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio_util::sync::CancellationToken;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{Config, LogFormat};
use crate::domain::EventId;

/// What must be flushed before the process exits: spans still waiting in the batch.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// Installs logs and traces for the process. Must run inside the Tokio runtime (the gRPC
/// exporter lives on it). Safe to call more than once: later calls keep the first subscriber.
pub fn init(config: &Config) -> Telemetry {
    let pipeline = traces::pipeline(config);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match config.effective_log_format() {
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(logs::CloudLogging::new(
                config.telemetry.google_cloud_project.as_deref(),
            ))
            .boxed(),
    }
    .with_filter(filter);
    let spans = tracing_opentelemetry::layer()
        .with_tracer(pipeline.tracer)
        .with_threads(false)
        // No busy/idle time attributes: they cost two clock reads on every poll of every
        // instrumented future, a tenth of the server's CPU on the chat path.
        .with_tracked_inactivity(false)
        .with_filter(Targets::new().with_target(env!("CARGO_CRATE_NAME"), Level::INFO));
    let _already_installed = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init();
    match pipeline.export {
        traces::Export::Off => {}
        traces::Export::On => tracing::info!("traces: exported over OTLP"),
        traces::Export::Failed(error) => {
            tracing::error!(%error, "traces: the OTLP exporter could not be built; not exporting");
        }
    }
    Telemetry {
        provider: pipeline.provider,
    }
}

impl Telemetry {
    /// Exports the spans still batched and stops the exporter. Runs off the async workers: the
    /// SDK blocks until the export is done, and a gRPC export needs those workers to progress.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(error)) = flushed {
            tracing::warn!(%error, "traces: the last spans could not be exported");
        }
    }
}

/// How long live events took from their append to being written to a connection:
/// `chat_delivery_latency_seconds{transport}`, one sample per socket write, for the oldest
/// event in it (the write's longest wait; a write carries several events under load, and a
/// sample per event would make the shared histogram a contended hot spot of the fan-out).
/// The append time is the millisecond part of the event id, from the store's clock (Redis's,
/// for Redis), so skew between that clock and this instance's shifts the figures; a negative
/// difference counts as zero.
///
/// Each connection resolves its histogram once: a registry lookup (hashing the name and
/// labels) per write would be the metric's main cost.
pub struct DeliveryLatency(metrics::Histogram);

impl DeliveryLatency {
    pub fn new(transport: &'static str) -> Self {
        Self(metrics::histogram!("chat_delivery_latency_seconds", "transport" => transport))
    }

    /// Records a write whose oldest event is `oldest`.
    pub fn record_write(&self, oldest: EventId) {
        let waited_ms = crate::domain::now_ms().saturating_sub(oldest.ms);
        self.0.record(waited_ms as f64 / 1000.0);
    }
}

/// The span of one client event on a connection (`$name`: the span's name, `ws.event` or
/// `socketio.event`; `$transport`: the prefix of its OpenTelemetry name): the root of a trace
/// of its own, with the fields [`finish_client_event`] fills in. A macro because a span's name
/// must be a literal.
#[macro_export]
macro_rules! client_event_span {
    ($name:literal, $transport:literal, $label:expr) => {
        tracing::info_span!(
            parent: None,
            $name,
            otel.name = format!(concat!($transport, " {}"), $label),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            chat.event = $label,
            chat.room = tracing::field::Empty,
            chat.outcome = tracing::field::Empty,
            chat.messages = tracing::field::Empty,
        )
    };
}

/// Ends a client event's span with its outcome (the first refusal, for a run of posts) and
/// records its handling time in `histogram` (the transport's) once per event it answered.
pub fn finish_client_event(
    span: &tracing::Span,
    histogram: &'static str,
    label: &'static str,
    started: std::time::Instant,
    refusal: Option<&crate::error::ApiError>,
    events: usize,
) {
    span.record(
        "chat.outcome",
        refusal.map_or("ack", crate::error::ApiError::code),
    );
    if matches!(refusal, Some(crate::error::ApiError::Unavailable)) {
        span.record("otel.status_code", "error");
    }
    let took = started.elapsed().as_secs_f64();
    let histogram = metrics::histogram!(histogram, "event" => label);
    for _ in 0..events {
        histogram.record(took);
    }
}

/// Folds recorded histogram samples into their buckets every few seconds. The exporter keeps
/// every sample until this runs (or `/metrics` is scraped): without it, an instance nobody
/// scrapes would grow by 8 bytes per recorded sample.
pub async fn metrics_upkeep(handle: PrometheusHandle, stopping: CancellationToken) {
    let mut ticks = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            _ = ticks.tick() => handle.run_upkeep(),
        }
    }
}

/// The process-wide metrics recorder, installed on first use. One per process because the
/// `metrics` facade has one global recorder; apps built in the same process share it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".to_owned()),
                    &[
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 0.5, 1.0, 2.5, 5.0,
                    ],
                )
                .expect("the bucket list is a non-empty constant")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder can only be present if an embedding program installed its own;
            // then ours still renders what is recorded through this handle's registry.
            let _ = metrics::set_global_recorder(recorder);
            describe_metrics();
            handle
        })
        .clone()
}

/// The catalogue of this server's metrics, as `/metrics` describes them (`# HELP`). The
/// counters without labels start at zero, so a rate over them exists before the first event.
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "chat_open_connections",
        "open streaming connections, by transport (websocket, sse)"
    );
    describe_gauge!(
        "chat_hub_rooms",
        "rooms with at least one local subscriber on this instance"
    );
    describe_counter!(
        "chat_room_events_appended_total",
        "events appended to room logs by this instance, by event name"
    );
    describe_counter!(
        "chat_events_delivered_total",
        "logged room events pushed into local connections' queues"
    );
    describe_counter!(
        "chat_ephemeral_published_total",
        "ephemeral events (presence, typing) this instance published on a room's feed, by kind"
    );
    describe_counter!(
        "chat_ephemeral_delivered_total",
        "ephemeral events pushed into local connections' queues, by kind (one per connection reached)"
    );
    describe_counter!(
        "chat_typing_throttled_total",
        "typing events taken but not broadcast: the member's previous one went out less than 2 s ago"
    );
    describe_counter!(
        "chat_presence_grace_resumes_total",
        "members held again within the presence grace after their last local connection went (flaps that told nobody)"
    );
    describe_counter!(
        "chat_fanout_pushes_total",
        "pushes into local connections' queues, each one event or a busy room's batch: chat_events_delivered_total / this = events per push"
    );
    describe_histogram!(
        "chat_delivery_latency_seconds",
        Unit::Seconds,
        "from an event's append (its id's time) to its write to a live connection, by transport; one sample per socket write, for the oldest event in it"
    );
    describe_counter!(
        "chat_slow_client_disconnects_total",
        "connections closed because their queue overflowed"
    );
    describe_counter!(
        "chat_gap_disconnects_total",
        "connections closed (1012 / end of stream) because their room's log lost events they had not received yet; they resume and are told"
    );
    describe_gauge!(
        "chat_feed_connected",
        "1 while the Redis pub/sub feed is connected, else 0 (Redis store only)"
    );
    describe_counter!(
        "chat_feed_reconnects_total",
        "times the Redis pub/sub feed lost its connection; each reconnection makes every room here read the log"
    );
    describe_counter!(
        "chat_feed_gaps_total",
        "times the feed skipped events and the hub read them from the log"
    );
    describe_counter!(
        "chat_store_errors_total",
        "store operations that failed or timed out, by operation"
    );
    describe_histogram!(
        "chat_redis_round_trip_seconds",
        Unit::Seconds,
        "Redis exchanges, by operation"
    );
    describe_counter!(
        "chat_http_requests_total",
        "HTTP requests, by route template, method and status"
    );
    describe_histogram!(
        "chat_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency, by route template, method and status"
    );
    describe_histogram!(
        "chat_ws_event_duration_seconds",
        Unit::Seconds,
        "WebSocket client event handling time, by event name"
    );
    describe_histogram!(
        "chat_socketio_event_duration_seconds",
        Unit::Seconds,
        "socket.io client event handling time, by event name"
    );
    for counter in [
        "chat_events_delivered_total",
        "chat_fanout_pushes_total",
        "chat_slow_client_disconnects_total",
        "chat_gap_disconnects_total",
        "chat_feed_gaps_total",
        "chat_feed_reconnects_total",
        "chat_typing_throttled_total",
        "chat_presence_grace_resumes_total",
    ] {
        metrics::counter!(counter).increment(0);
    }
}
