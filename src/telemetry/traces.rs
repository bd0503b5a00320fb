//! Traces: `tracing` spans become OpenTelemetry spans, exported over OTLP when an endpoint is
//! configured, and requests continue the trace their caller started (W3C `traceparent`, or
//! Google's `X-Cloud-Trace-Context`).
//!
//! The OpenTelemetry layer is installed whether or not anything is exported: it is what gives
//! every span a trace id and a span id (the caller's as parent), which the Cloud Logging format
//! writes on each log line so that a request's lines are grouped and linked to its trace.
//! Without an exporter, finished spans are simply dropped.
//!
//! Exporting follows the OpenTelemetry SDK's own reading of the standard variables
//! (`OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`, `…_PROTOCOL`, `…_HEADERS`, `…_TIMEOUT`,
//! `OTEL_BSP_*`, `OTEL_TRACES_SAMPLER`, `OTEL_RESOURCE_ATTRIBUTES`…); this module only decides
//! whether to export at all and names the service.

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, Key, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use crate::config::Config;

/// The tracer provider, the tracer the layer uses, and whether spans leave the process.
pub(super) struct Pipeline {
    pub provider: SdkTracerProvider,
    pub tracer: SdkTracer,
    pub export: Export,
}

pub(super) enum Export {
    /// No OTLP endpoint is set.
    Off,
    /// Spans go to the OTLP endpoint in batches.
    On,
    /// An endpoint was set but the exporter could not be built.
    Failed(String),
}

/// Builds the provider. Must run inside the Tokio runtime: the gRPC exporter's channel lives on
/// it (the batch processor's own thread only hands it the batches).
pub(super) fn pipeline(config: &Config) -> Pipeline {
    let mut builder = SdkTracerProvider::builder().with_resource(resource(config));
    let mut export = Export::Off;
    if config.telemetry.otlp_export_enabled() {
        crate::tls::install_crypto_provider();
        // The protocol comes from OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL (default http/protobuf),
        // the endpoint, headers and timeout from the other OTLP variables.
        match opentelemetry_otlp::SpanExporter::builder().build() {
            Ok(exporter) => {
                builder = builder.with_batch_exporter(exporter);
                export = Export::On;
            }
            Err(err) => export = Export::Failed(err.to_string()),
        }
    }
    let provider = builder.build();
    let tracer = provider.tracer("chat-server");
    Pipeline {
        provider,
        tracer,
        export,
    }
}

/// The service's resource: `service.name` from `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES`
/// (which the SDK reads), else Cloud Run's `K_SERVICE`, else `chat-server`.
fn resource(config: &Config) -> Resource {
    let detected = Resource::builder().build();
    let service_key = Key::from_static_str("service.name");
    let named = detected
        .get(&service_key)
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    let mut builder = Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if !named {
        let name = config
            .telemetry
            .k_service
            .clone()
            .unwrap_or_else(|| "chat-server".to_owned());
        builder = builder.with_service_name(name);
    }
    builder.build()
}

/// The caller's span, from `traceparent` (W3C) or else `X-Cloud-Trace-Context` (what Google's
/// front ends send), as the context a server span should have as parent.
pub fn remote_parent(headers: &HeaderMap) -> Option<Context> {
    let context = TraceContextPropagator::new().extract(&Headers(headers));
    if context.span().span_context().is_valid() {
        return Some(context);
    }
    let value = headers.get("x-cloud-trace-context")?.to_str().ok()?;
    let span_context = parse_cloud_trace_context(value)?;
    Some(Context::new().with_remote_span_context(span_context))
}

/// `TRACE_ID/SPAN_ID;o=OPTIONS`: 32 hex digits, a decimal span id, and `o=1` when the caller
/// samples the trace. Anything else is ignored (the request starts a new trace).
fn parse_cloud_trace_context(value: &str) -> Option<SpanContext> {
    let (trace, rest) = value.trim().split_once('/')?;
    let (span, options) = match rest.split_once(';') {
        Some((span, options)) => (span, Some(options)),
        None => (rest, None),
    };
    if trace.len() != 32 {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from(span.parse::<u64>().ok()?);
    let sampled = options.is_some_and(|options| options.trim() == "o=1");
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let context = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    context.is_valid().then_some(context)
}

/// The ids of the span that is current on this thread, if it is a valid OpenTelemetry span.
pub fn current_span_context() -> Option<SpanContext> {
    Context::map_current(|context| {
        let span = context.span();
        let span_context = span.span_context();
        span_context.is_valid().then(|| span_context.clone())
    })
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn parent_of(pairs: &[(&'static str, &'static str)]) -> Option<SpanContext> {
        remote_parent(&headers(pairs)).map(|context| context.span().span_context().clone())
    }

    #[test]
    fn traceparent_is_the_parent() {
        let parent = parent_of(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )])
        .expect("a valid traceparent");
        assert_eq!(
            format!("{:032x}", parent.trace_id()),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(format!("{:016x}", parent.span_id()), "00f067aa0ba902b7");
        assert!(parent.is_sampled());
        assert!(parent.is_remote());
    }

    #[test]
    fn cloud_trace_context_is_the_fallback() {
        let parent = parent_of(&[(
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/1;o=1",
        )])
        .expect("a valid X-Cloud-Trace-Context");
        assert_eq!(
            format!("{:032x}", parent.trace_id()),
            "105445aa7843bc8bf206b12000100000"
        );
        assert_eq!(parent.span_id(), SpanId::from(1));
        assert!(parent.is_sampled());
        let unsampled = parent_of(&[(
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/18446744073709551615",
        )])
        .expect("a span id of u64::MAX is valid");
        assert!(!unsampled.is_sampled());
    }

    #[test]
    fn traceparent_wins_over_cloud_trace_context() {
        let parent = parent_of(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            (
                "x-cloud-trace-context",
                "105445aa7843bc8bf206b12000100000/1;o=1",
            ),
        ])
        .expect("a valid traceparent");
        assert_eq!(
            format!("{:032x}", parent.trace_id()),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn malformed_context_starts_a_new_trace() {
        for value in [
            "",
            "nonsense",
            "105445aa7843bc8bf206b12000100000",
            "105445aa7843bc8bf206b12000100000/0;o=1",
            "105445aa7843bc8bf206b12000100000/abc;o=1",
            "00000000000000000000000000000000/1;o=1",
            "105445aa/1;o=1",
        ] {
            let mut map = HeaderMap::new();
            map.insert(
                "x-cloud-trace-context",
                HeaderValue::from_str(value).expect("a header value"),
            );
            assert!(remote_parent(&map).is_none(), "{value:?} was accepted");
        }
        assert!(parent_of(&[("traceparent", "00-zz-00f067aa0ba902b7-01")]).is_none());
    }
}
