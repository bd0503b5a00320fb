//! Logs and traces, and what the platform (Cloud Run) tells the server about itself.

use super::values::{LogFormat, OtlpEndpoint, OtlpProtocol};

section! {
    /// Log format, the platform's names, and the OTLP export.
    pub struct Telemetry {
        /// `text` or `json`; unset: `json` on Cloud Run (`K_SERVICE` set), else `text`.
        pub log_format: Option<LogFormat> = None,
        /// Set by Cloud Run: defaults `LOG_FORMAT` to json and names the service in traces.
        pub k_service: Option<String> = None,
        /// The Google Cloud project, so JSON log lines name their trace as Cloud Logging links
        /// it (`projects/<id>/traces/<trace id>`). Cloud Run does not set it; unset: the bare
        /// trace id.
        pub google_cloud_project: Option<String> = None,
        /// Where spans are exported over OTLP; unset (and no traces endpoint): not exported.
        /// The OpenTelemetry SDK reads these and the other `OTEL_*` variables itself; they are
        /// parsed here to decide whether to export, and to stop at start on a malformed value
        /// rather than lose every span quietly.
        pub otel_exporter_otlp_endpoint: Option<OtlpEndpoint> = None,
        pub otel_exporter_otlp_traces_endpoint: Option<OtlpEndpoint> = None,
        /// The SDK's own default, written here so the README's table can be checked.
        pub otel_exporter_otlp_protocol: OtlpProtocol = OtlpProtocol::HttpProtobuf,
        /// Unset: `OTEL_EXPORTER_OTLP_PROTOCOL`.
        pub otel_exporter_otlp_traces_protocol: Option<OtlpProtocol> = None,
    }
}

impl Telemetry {
    /// Whether spans are exported: an OTLP endpoint is set.
    pub fn otlp_export_enabled(&self) -> bool {
        self.otel_exporter_otlp_endpoint.is_some()
            || self.otel_exporter_otlp_traces_endpoint.is_some()
    }
}
