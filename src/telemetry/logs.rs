//! The `json` log format: one JSON object per line, in the shape Cloud Logging reads from a
//! container's output (its "structured logging" special fields), so that severity, time and
//! trace correlation work without an agent or a client library.
//!
//! ```json
//! {"severity":"WARNING","message":"redis command failed","time":"2025-01-01T12:00:00.123456Z",
//!  "target":"chat_server::store::redis","span":"http.request",
//!  "logging.googleapis.com/trace":"projects/my-project/traces/4bf92f35…",
//!  "logging.googleapis.com/spanId":"00f067aa0ba902b7","logging.googleapis.com/trace_sampled":true,
//!  "op":"post","error":"…"}
//! ```
//!
//! The trace fields name the OpenTelemetry span current when the event was emitted: inside a
//! request, a span of the caller's trace (see [`super::traces`]). Cloud Logging links an entry
//! to a trace only by the full `projects/<id>/traces/<id>` name, hence `GOOGLE_CLOUD_PROJECT`;
//! without it the bare trace id still groups a request's lines.
//!
//! Why by hand: the maintained crate for this format (`tracing-stackdriver`) is tied to an
//! OpenTelemetry release six versions behind the one the exporter needs.

use std::fmt;

use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::traces::current_span_context;

/// The special fields this format writes; an event field of the same name is kept under
/// `fields.<name>` instead of overwriting it.
const RESERVED: &[&str] = &[
    "severity",
    "message",
    "time",
    "target",
    "span",
    TRACE,
    SPAN_ID,
    TRACE_SAMPLED,
];
const TRACE: &str = "logging.googleapis.com/trace";
const SPAN_ID: &str = "logging.googleapis.com/spanId";
const TRACE_SAMPLED: &str = "logging.googleapis.com/trace_sampled";

/// Formats each event as one Cloud Logging JSON line.
pub struct CloudLogging {
    /// `projects/<id>/traces/`, or empty when the project is unknown.
    trace_prefix: String,
}

impl CloudLogging {
    pub fn new(project: Option<&str>) -> Self {
        Self {
            trace_prefix: project
                .map(|project| format!("projects/{project}/traces/"))
                .unwrap_or_default(),
        }
    }

    /// The line for an event, without the newline.
    fn line(&self, event: &Event<'_>, span: Option<&'static str>) -> Map<String, Value> {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut line = Map::new();
        line.insert("severity".into(), severity(*meta.level()).into());
        line.insert(
            "message".into(),
            fields.message.take().unwrap_or_default().into(),
        );
        line.insert(
            "time".into(),
            Utc::now()
                .to_rfc3339_opts(SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("target".into(), meta.target().into());
        if let Some(span) = span {
            line.insert("span".into(), span.into());
        }
        if let Some(context) = current_span_context() {
            line.insert(
                TRACE.into(),
                format!("{}{:032x}", self.trace_prefix, context.trace_id()).into(),
            );
            line.insert(SPAN_ID.into(), format!("{:016x}", context.span_id()).into());
            line.insert(TRACE_SAMPLED.into(), context.is_sampled().into());
        }
        for (name, value) in fields.values {
            if RESERVED.contains(&name.as_str()) {
                line.insert(format!("fields.{name}"), value);
            } else {
                line.insert(name, value);
            }
        }
        line
    }
}

impl<S, N> FormatEvent<S, N> for CloudLogging
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let span = ctx.lookup_current().map(|span| span.name());
        let line = self.line(event, span);
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Cloud Logging's `LogSeverity` names.
fn severity(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// An event's fields as JSON values; `message` apart.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    values: Vec<(String, Value)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(text) => text,
                other => other.to_string(),
            });
        } else {
            self.values.push((field.name().to_owned(), value));
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Collects what the formatter writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .expect("no test panics while holding the buffer")
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn lines_of(project: Option<&str>, emit: impl FnOnce()) -> Vec<Value> {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .event_format(CloudLogging::new(project))
            .with_writer(buffer.clone())
            .with_max_level(Level::DEBUG)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = buffer.0.lock().expect("the subscriber is gone").clone();
        String::from_utf8(bytes)
            .expect("UTF-8 output")
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
            .collect()
    }

    #[test]
    fn one_object_per_line_with_cloud_logging_fields() {
        let lines = lines_of(None, || {
            tracing::warn!(
                op = "post",
                attempts = 3_u64,
                ok = false,
                "redis command failed"
            );
            tracing::debug!("quiet");
        });
        assert_eq!(lines.len(), 2);
        let line = &lines[0];
        assert_eq!(line["severity"], "WARNING");
        assert_eq!(line["message"], "redis command failed");
        assert_eq!(line["op"], "post");
        assert_eq!(line["attempts"], 3);
        assert_eq!(line["ok"], false);
        let time = line["time"].as_str().expect("time is a string");
        chrono::DateTime::parse_from_rfc3339(time).expect("time is RFC 3339");
        assert!(line.get(TRACE).is_none(), "no span, no trace: {line}");
        assert_eq!(lines[1]["severity"], "DEBUG");
    }

    #[test]
    fn reserved_names_do_not_overwrite_the_special_fields() {
        let lines = lines_of(None, || tracing::info!(severity = "fake", "real"));
        assert_eq!(lines[0]["severity"], "INFO");
        assert_eq!(lines[0]["fields.severity"], "fake");
    }

    #[test]
    fn the_current_otel_span_names_the_trace() {
        let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex");
        let span_id = SpanId::from_hex("00f067aa0ba902b7").expect("hex");
        let remote = SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let lines = lines_of(Some("demo-project"), || {
            let _attached = opentelemetry::Context::new()
                .with_remote_span_context(remote)
                .attach();
            tracing::info!("inside");
        });
        let line = &lines[0];
        assert_eq!(
            line[TRACE],
            "projects/demo-project/traces/4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(line[SPAN_ID], "00f067aa0ba902b7");
        assert_eq!(line[TRACE_SAMPLED], true);
    }
}
