//! The server's configuration: environment variables only, parsed with `envy` into one typed
//! struct at start. A missing or malformed value stops the binary with exit status 2 and one
//! line naming the variable and what it expects (see `main.rs`).
//!
//! `REDIS_URL` may carry a password, so it is kept in a [`RedisUrl`] whose `Debug` hides it,
//! and it is never echoed in an error.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

/// Every variable the server reads, with its default; the README's table mirrors this.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(default = "defaults::port")]
    pub port: u16,
    #[serde(default = "defaults::host")]
    pub host: IpAddr,
    /// Unset: the in-memory store (one instance, nothing survives a restart).
    #[serde(default)]
    pub redis_url: Option<RedisUrl>,
    /// Every Redis command gives up after this long, and the request gets 503.
    #[serde(default = "defaults::redis_timeout_ms")]
    pub redis_timeout_ms: u64,
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: usize,
    #[serde(default = "defaults::history_limit")]
    pub history_limit: usize,
    #[serde(default = "defaults::member_ttl_secs")]
    pub member_ttl_secs: u64,
    /// 0 keeps empty rooms forever.
    #[serde(default = "defaults::room_ttl_secs")]
    pub room_ttl_secs: u64,
    #[serde(default = "defaults::idempotency_ttl_secs")]
    pub idempotency_ttl_secs: u64,
    /// `text` or `json`; unset: `json` on Cloud Run (`K_SERVICE` set), else `text`.
    #[serde(default)]
    pub log_format: Option<LogFormat>,
    /// SSE keepalive comment interval.
    #[serde(default = "defaults::sse_keepalive_secs")]
    pub sse_keepalive_secs: u64,
    /// How long a stream ticket (`POST /rooms/{roomId}/events/ticket`) stays redeemable: long
    /// enough to open an EventSource, short because it rides in a URL that logs may keep.
    #[serde(default = "defaults::sse_ticket_ttl_secs")]
    pub sse_ticket_ttl_secs: u64,
    /// WebSocket and SSE connections are closed (1012 / end of stream) after this long, under
    /// Cloud Run's 60-minute request limit, so clients reconnect and resume on their terms.
    #[serde(default = "defaults::ws_max_lifetime_secs")]
    pub ws_max_lifetime_secs: u64,
    /// How often the server pings a WebSocket; one that answers nothing for two intervals is
    /// closed as dead.
    #[serde(default = "defaults::ws_ping_secs")]
    pub ws_ping_secs: u64,
    /// How many events may wait for one slow connection before it is closed (1013).
    #[serde(default = "defaults::client_queue_len")]
    pub client_queue_len: usize,
    /// A busy room (over 100 events/s) pushes its events to connections at most once per
    /// this many milliseconds, in batches; 0 pushes every event at once.
    #[serde(default = "defaults::fanout_coalesce_ms")]
    pub fanout_coalesce_ms: u64,
    /// On SIGTERM: stop accepting, close streams, and exit within this many seconds.
    #[serde(default = "defaults::shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// `off` turns every rate limit off (load tests); anything else keeps them on.
    #[serde(default = "defaults::rate_limits")]
    pub rate_limits: Switch,
    /// Chat messages per member: sustained rate and burst.
    #[serde(default = "defaults::rate_messages_per_sec")]
    pub rate_messages_per_sec: u32,
    #[serde(default = "defaults::rate_message_burst")]
    pub rate_message_burst: u32,
    /// Client events per WebSocket connection: sustained rate and burst.
    #[serde(default = "defaults::rate_ws_events_per_sec")]
    pub rate_ws_events_per_sec: u32,
    #[serde(default = "defaults::rate_ws_event_burst")]
    pub rate_ws_event_burst: u32,
    /// REST requests per client IP: sustained rate and burst.
    #[serde(default = "defaults::rate_rest_per_sec")]
    pub rate_rest_per_sec: u32,
    #[serde(default = "defaults::rate_rest_burst")]
    pub rate_rest_burst: u32,
    /// Room creations and joins per client IP (every transport): per minute and burst.
    #[serde(default = "defaults::rate_joins_per_min")]
    pub rate_joins_per_min: u32,
    #[serde(default = "defaults::rate_join_burst")]
    pub rate_join_burst: u32,
    /// Open WebSocket and SSE streams per client IP.
    #[serde(default = "defaults::max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Rooms one WebSocket connection may hold.
    #[serde(default = "defaults::max_rooms_per_connection")]
    pub max_rooms_per_connection: usize,
    /// Members one room may have.
    #[serde(default = "defaults::max_members_per_room")]
    pub max_members_per_room: usize,
    /// Open connections per instance; beyond it new connections get 503.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// A client must send its request headers within this long (slowloris).
    #[serde(default = "defaults::header_read_timeout_secs")]
    pub header_read_timeout_secs: u64,
    /// A request's whole body must arrive within this long (408 otherwise).
    #[serde(default = "defaults::request_body_timeout_secs")]
    pub request_body_timeout_secs: u64,
    /// A write to any client socket (HTTP, SSE, WebSocket) that cannot proceed for this long
    /// ends the connection: a client that stops reading cannot pin its task.
    #[serde(default = "defaults::write_timeout_secs")]
    pub write_timeout_secs: u64,
    /// Plain HTTP connections (or, behind trusted proxies, requests in flight) per client
    /// address; never more than half of `MAX_CONNECTIONS`.
    #[serde(default = "defaults::max_http_connections_per_ip")]
    pub max_http_connections_per_ip: usize,
    /// Room-secret hashes (argon2id, 19 MiB each) computed at once; unset: one per CPU.
    #[serde(default)]
    pub secret_hash_concurrency: Option<usize>,
    /// Wrong room secrets per client address, per minute (also the burst).
    #[serde(default = "defaults::rate_secret_failures_per_min")]
    pub rate_secret_failures_per_min: u32,
    /// Wrong room secrets per room, per minute (also the burst).
    #[serde(default = "defaults::rate_room_secret_failures_per_min")]
    pub rate_room_secret_failures_per_min: u32,
    /// When set, `/metrics` is served on this port only (and answers 404 on `PORT`).
    #[serde(default)]
    pub metrics_port: Option<u16>,
    /// How many proxies in front of the server append to `X-Forwarded-For`; the client IP is
    /// the entry they did not write. Unset: 1 on Cloud Run (`K_SERVICE` set), else 0 (the
    /// peer address; `X-Forwarded-For` is ignored because anyone can write it).
    #[serde(default)]
    pub trusted_proxy_hops: Option<usize>,
    /// Comma-separated origins allowed for CORS and WebSocket upgrades; unset: any origin.
    #[serde(default)]
    pub allowed_origins: Option<String>,
    /// Set by Cloud Run: defaults `LOG_FORMAT` to json and names the service in traces.
    #[serde(default)]
    pub k_service: Option<String>,
    /// The Google Cloud project, so JSON log lines name their trace as Cloud Logging links it
    /// (`projects/<id>/traces/<trace id>`). Cloud Run does not set it; unset: the bare trace id.
    #[serde(default)]
    pub google_cloud_project: Option<String>,
    /// Where spans are exported over OTLP; unset (and no traces endpoint): not exported. The
    /// OpenTelemetry SDK reads these and the other `OTEL_*` variables itself; they are parsed
    /// here to decide whether to export, and to stop at start on a malformed value rather than
    /// lose every span quietly.
    #[serde(default)]
    pub otel_exporter_otlp_endpoint: Option<String>,
    #[serde(default)]
    pub otel_exporter_otlp_traces_endpoint: Option<String>,
    #[serde(default)]
    pub otel_exporter_otlp_protocol: Option<OtlpProtocol>,
    #[serde(default)]
    pub otel_exporter_otlp_traces_protocol: Option<OtlpProtocol>,
}

/// The OTLP transports built in. `http/json` is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OtlpProtocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A Redis URL. It may hold a password, so `Debug` shows only that one is set.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct RedisUrl(String);

impl RedisUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedisUrl(<redacted>)")
    }
}

mod defaults {
    use std::net::{IpAddr, Ipv4Addr};

    pub fn port() -> u16 {
        8080
    }
    pub fn host() -> IpAddr {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
    pub fn redis_timeout_ms() -> u64 {
        2000
    }
    pub fn max_message_bytes() -> usize {
        4096
    }
    pub fn history_limit() -> usize {
        1000
    }
    pub fn member_ttl_secs() -> u64 {
        120
    }
    pub fn room_ttl_secs() -> u64 {
        604_800
    }
    pub fn idempotency_ttl_secs() -> u64 {
        86_400
    }
    pub fn sse_keepalive_secs() -> u64 {
        15
    }
    pub fn sse_ticket_ttl_secs() -> u64 {
        30
    }
    pub fn ws_max_lifetime_secs() -> u64 {
        3300
    }
    pub fn ws_ping_secs() -> u64 {
        25
    }
    pub fn client_queue_len() -> usize {
        1024
    }
    pub fn fanout_coalesce_ms() -> u64 {
        10
    }
    pub fn shutdown_grace_secs() -> u64 {
        8
    }
    pub fn rate_limits() -> super::Switch {
        super::Switch::On
    }
    pub fn rate_messages_per_sec() -> u32 {
        5
    }
    pub fn rate_message_burst() -> u32 {
        100
    }
    pub fn rate_ws_events_per_sec() -> u32 {
        20
    }
    pub fn rate_ws_event_burst() -> u32 {
        200
    }
    pub fn rate_rest_per_sec() -> u32 {
        20
    }
    pub fn rate_rest_burst() -> u32 {
        200
    }
    pub fn rate_joins_per_min() -> u32 {
        30
    }
    pub fn rate_join_burst() -> u32 {
        20
    }
    pub fn max_connections_per_ip() -> usize {
        100
    }
    pub fn max_rooms_per_connection() -> usize {
        20
    }
    pub fn max_members_per_room() -> usize {
        5000
    }
    pub fn max_connections() -> usize {
        10_000
    }
    pub fn header_read_timeout_secs() -> u64 {
        10
    }
    pub fn request_body_timeout_secs() -> u64 {
        15
    }
    pub fn write_timeout_secs() -> u64 {
        10
    }
    pub fn max_http_connections_per_ip() -> usize {
        32
    }
    pub fn rate_secret_failures_per_min() -> u32 {
        10
    }
    pub fn rate_room_secret_failures_per_min() -> u32 {
        30
    }
}

/// What each variable expects, for the one-line error when it is malformed.
const EXPECTATIONS: &[(&str, &str)] = &[
    ("PORT", "a port number 0-65535"),
    ("HOST", "an IP address such as 0.0.0.0 or ::"),
    ("REDIS_URL", "a redis:// or rediss:// URL"),
    (
        "REDIS_TIMEOUT_MS",
        "a whole number of milliseconds, at least 1",
    ),
    ("MAX_MESSAGE_BYTES", "a whole number of bytes, 1-65536"),
    ("HISTORY_LIMIT", "a whole number of events, at least 1"),
    ("MEMBER_TTL_SECS", "a whole number of seconds, at least 1"),
    ("ROOM_TTL_SECS", "a whole number of seconds (0 = never)"),
    (
        "IDEMPOTENCY_TTL_SECS",
        "a whole number of seconds, at least 1",
    ),
    ("LOG_FORMAT", "text or json"),
    (
        "SSE_KEEPALIVE_SECS",
        "a whole number of seconds, at least 1",
    ),
    ("SSE_TICKET_TTL_SECS", "a whole number of seconds, 1-600"),
    (
        "WS_MAX_LIFETIME_SECS",
        "a whole number of seconds, at least 1",
    ),
    ("WS_PING_SECS", "a whole number of seconds, at least 1"),
    ("CLIENT_QUEUE_LEN", "a whole number of events, at least 1"),
    (
        "FANOUT_COALESCE_MS",
        "a whole number of milliseconds from 0 (off) to 1000",
    ),
    ("SHUTDOWN_GRACE_SECS", "a whole number of seconds"),
    ("RATE_LIMITS", "on or off"),
    ("RATE_MESSAGES_PER_SEC", "a whole number, at least 1"),
    ("RATE_MESSAGE_BURST", "a whole number, at least 1"),
    ("RATE_WS_EVENTS_PER_SEC", "a whole number, at least 1"),
    ("RATE_WS_EVENT_BURST", "a whole number, at least 1"),
    ("RATE_REST_PER_SEC", "a whole number, at least 1"),
    ("RATE_REST_BURST", "a whole number, at least 1"),
    ("RATE_JOINS_PER_MIN", "a whole number, at least 1"),
    ("RATE_JOIN_BURST", "a whole number, at least 1"),
    ("MAX_CONNECTIONS_PER_IP", "a whole number, at least 1"),
    ("MAX_ROOMS_PER_CONNECTION", "a whole number, at least 1"),
    ("MAX_MEMBERS_PER_ROOM", "a whole number, at least 1"),
    ("MAX_CONNECTIONS", "a whole number, at least 1"),
    (
        "HEADER_READ_TIMEOUT_SECS",
        "a whole number of seconds, at least 1",
    ),
    (
        "REQUEST_BODY_TIMEOUT_SECS",
        "a whole number of seconds, at least 1",
    ),
    (
        "WRITE_TIMEOUT_SECS",
        "a whole number of seconds, at least 1",
    ),
    ("MAX_HTTP_CONNECTIONS_PER_IP", "a whole number, at least 1"),
    ("SECRET_HASH_CONCURRENCY", "a whole number, at least 1"),
    ("RATE_SECRET_FAILURES_PER_MIN", "a whole number, at least 1"),
    (
        "RATE_ROOM_SECRET_FAILURES_PER_MIN",
        "a whole number, at least 1",
    ),
    ("METRICS_PORT", "a port number 1-65535, other than PORT"),
    (
        "TRUSTED_PROXY_HOPS",
        "a whole number of proxies (0 = use the peer address)",
    ),
    (
        "ALLOWED_ORIGINS",
        "comma-separated origins such as https://chat.example.com",
    ),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "an http:// URL of an OTLP receiver (TLS is not built in; use a local collector)",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "an http:// URL of an OTLP receiver (TLS is not built in; use a local collector)",
    ),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc or http/protobuf"),
    (
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "grpc or http/protobuf",
    ),
];

/// A configuration error, already phrased for the one line the binary prints.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {variable} must be {expected}")]
pub struct ConfigError {
    pub variable: String,
    pub expected: String,
}

impl ConfigError {
    fn of(variable: &str) -> Self {
        let expected = EXPECTATIONS
            .iter()
            .find(|(name, _)| *name == variable)
            .map(|(_, expected)| (*expected).to_owned())
            .unwrap_or_else(|| "a valid value".to_owned());
        Self {
            variable: variable.to_owned(),
            expected,
        }
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads the given variables, as the environment would hold them.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        // Empty values count as unset, as shells and deploy tools often write them.
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .collect();
        let config: Config = envy::from_iter(vars.clone()).map_err(|_| {
            // envy's messages may quote the value (which could be a secret) and do not always
            // name the variable: find the culprit by parsing each variable on its own.
            let culprit = vars
                .iter()
                .find(|pair| envy::from_iter::<_, Config>([(*pair).clone()]).is_err())
                .map(|(name, _)| name.as_str())
                .unwrap_or("a variable");
            ConfigError::of(culprit)
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.redis_timeout_ms == 0 {
            return Err(ConfigError::of("REDIS_TIMEOUT_MS"));
        }
        if !(1..=65_536).contains(&self.max_message_bytes) {
            return Err(ConfigError::of("MAX_MESSAGE_BYTES"));
        }
        if self.history_limit == 0 {
            return Err(ConfigError::of("HISTORY_LIMIT"));
        }
        if self.member_ttl_secs == 0 {
            return Err(ConfigError::of("MEMBER_TTL_SECS"));
        }
        if self.idempotency_ttl_secs == 0 {
            return Err(ConfigError::of("IDEMPOTENCY_TTL_SECS"));
        }
        if !(1..=600).contains(&self.sse_ticket_ttl_secs) {
            return Err(ConfigError::of("SSE_TICKET_TTL_SECS"));
        }
        if self.fanout_coalesce_ms > 1000 {
            return Err(ConfigError::of("FANOUT_COALESCE_MS"));
        }
        for (value, variable) in [
            (self.sse_keepalive_secs, "SSE_KEEPALIVE_SECS"),
            (self.ws_max_lifetime_secs, "WS_MAX_LIFETIME_SECS"),
            (self.ws_ping_secs, "WS_PING_SECS"),
            (self.client_queue_len as u64, "CLIENT_QUEUE_LEN"),
            (
                u64::from(self.rate_messages_per_sec),
                "RATE_MESSAGES_PER_SEC",
            ),
            (u64::from(self.rate_message_burst), "RATE_MESSAGE_BURST"),
            (
                u64::from(self.rate_ws_events_per_sec),
                "RATE_WS_EVENTS_PER_SEC",
            ),
            (u64::from(self.rate_ws_event_burst), "RATE_WS_EVENT_BURST"),
            (u64::from(self.rate_rest_per_sec), "RATE_REST_PER_SEC"),
            (u64::from(self.rate_rest_burst), "RATE_REST_BURST"),
            (u64::from(self.rate_joins_per_min), "RATE_JOINS_PER_MIN"),
            (u64::from(self.rate_join_burst), "RATE_JOIN_BURST"),
            (self.max_connections_per_ip as u64, "MAX_CONNECTIONS_PER_IP"),
            (
                self.max_rooms_per_connection as u64,
                "MAX_ROOMS_PER_CONNECTION",
            ),
            (self.max_members_per_room as u64, "MAX_MEMBERS_PER_ROOM"),
            (self.max_connections as u64, "MAX_CONNECTIONS"),
            (self.header_read_timeout_secs, "HEADER_READ_TIMEOUT_SECS"),
            (self.request_body_timeout_secs, "REQUEST_BODY_TIMEOUT_SECS"),
            (self.write_timeout_secs, "WRITE_TIMEOUT_SECS"),
            (
                self.max_http_connections_per_ip as u64,
                "MAX_HTTP_CONNECTIONS_PER_IP",
            ),
            (
                self.secret_hash_concurrency.map_or(1, |n| n as u64),
                "SECRET_HASH_CONCURRENCY",
            ),
            (
                u64::from(self.rate_secret_failures_per_min),
                "RATE_SECRET_FAILURES_PER_MIN",
            ),
            (
                u64::from(self.rate_room_secret_failures_per_min),
                "RATE_ROOM_SECRET_FAILURES_PER_MIN",
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::of(variable));
            }
        }
        if self
            .metrics_port
            .is_some_and(|port| port == 0 || port == self.port)
        {
            return Err(ConfigError::of("METRICS_PORT"));
        }
        if let Some(url) = &self.redis_url
            && redis::Client::open(url.expose()).is_err()
        {
            return Err(ConfigError::of("REDIS_URL"));
        }
        if let Some(origins) = &self.allowed_origins
            && origins
                .split(',')
                .map(str::trim)
                .filter(|origin| !origin.is_empty())
                .any(|origin| {
                    axum::http::HeaderValue::from_str(origin).is_err() || !origin.contains("://")
                })
        {
            return Err(ConfigError::of("ALLOWED_ORIGINS"));
        }
        for (endpoint, variable) in [
            (
                &self.otel_exporter_otlp_endpoint,
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                &self.otel_exporter_otlp_traces_endpoint,
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ),
        ] {
            if let Some(endpoint) = endpoint
                && !is_plain_http_url(endpoint)
            {
                return Err(ConfigError::of(variable));
            }
        }
        Ok(())
    }

    /// Whether spans are exported: an OTLP endpoint is set.
    pub fn otlp_export_enabled(&self) -> bool {
        self.otel_exporter_otlp_endpoint.is_some()
            || self.otel_exporter_otlp_traces_endpoint.is_some()
    }

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    /// How often live connections refresh their members' leases and online marks: often
    /// enough that a lease never lapses while held (a third of it), and at most every 10 s so
    /// the online flag of a dead instance's members clears quickly.
    pub fn presence_refresh(&self) -> Duration {
        Duration::from_millis((self.member_ttl_secs.saturating_mul(1000) / 3).clamp(100, 10_000))
    }

    /// Proxies trusted to append the client's address to `X-Forwarded-For`.
    pub fn effective_trusted_proxy_hops(&self) -> usize {
        self.trusted_proxy_hops
            .unwrap_or(usize::from(self.k_service.is_some()))
    }

    /// Plain HTTP connections per client address: as configured, but at most half of the
    /// instance's connections, so one address can never hold the whole instance.
    pub fn effective_max_http_connections_per_ip(&self) -> usize {
        self.max_http_connections_per_ip
            .min(self.max_connections / 2)
            .max(1)
    }

    /// Room-secret hashes computed at once: as configured, else one per CPU.
    pub fn effective_secret_hash_concurrency(&self) -> usize {
        self.secret_hash_concurrency.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// The configured origins, if any.
    pub fn origins(&self) -> Option<Vec<String>> {
        self.allowed_origins.as_ref().map(|origins| {
            origins
                .split(',')
                .map(|origin| origin.trim().trim_end_matches('/').to_owned())
                .filter(|origin| !origin.is_empty())
                .collect()
        })
    }

    /// The log format in force: explicit, else json on Cloud Run, else text.
    pub fn effective_log_format(&self) -> LogFormat {
        self.log_format.unwrap_or(if self.k_service.is_some() {
            LogFormat::Json
        } else {
            LogFormat::Text
        })
    }
}

/// `http://host[:port][/path]`: what the exporters can reach without TLS.
fn is_plain_http_url(value: &str) -> bool {
    value
        .parse::<axum::http::Uri>()
        .is_ok_and(|uri| uri.scheme_str() == Some("http") && uri.host().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = Config::from_vars(vars(&[])).unwrap();
        assert_eq!(config.port, 8080);
        assert!(config.redis_url.is_none());
        assert_eq!(config.history_limit, 1000);
        assert_eq!(config.effective_log_format(), LogFormat::Text);
    }

    #[test]
    fn malformed_values_name_their_variable() {
        let err = Config::from_vars(vars(&[("PORT", "eighty")])).unwrap_err();
        assert_eq!(err.variable, "PORT");
        let err = Config::from_vars(vars(&[("LOG_FORMAT", "xml")])).unwrap_err();
        assert_eq!(err.variable, "LOG_FORMAT");
        let err = Config::from_vars(vars(&[("HISTORY_LIMIT", "0")])).unwrap_err();
        assert_eq!(err.variable, "HISTORY_LIMIT");
        for ttl in ["0", "601"] {
            let err = Config::from_vars(vars(&[("SSE_TICKET_TTL_SECS", ttl)])).unwrap_err();
            assert_eq!(err.variable, "SSE_TICKET_TTL_SECS");
        }
    }

    #[test]
    fn redis_password_never_printed() {
        let err =
            Config::from_vars(vars(&[("REDIS_URL", "nope://user:hunter2@host")])).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        let config =
            Config::from_vars(vars(&[("REDIS_URL", "redis://:hunter2@localhost:1")])).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn otlp_variables_are_checked_at_start() {
        let config = Config::from_vars(vars(&[])).unwrap();
        assert!(!config.otlp_export_enabled());
        let config = Config::from_vars(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]))
        .unwrap();
        assert!(config.otlp_export_enabled());
        assert_eq!(config.otel_exporter_otlp_protocol, Some(OtlpProtocol::Grpc));
        let config = Config::from_vars(vars(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://collector:4318/v1/traces",
        )]))
        .unwrap();
        assert!(config.otlp_export_enabled());
        for (variable, value) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "udp"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318"),
        ] {
            let err = Config::from_vars(vars(&[(variable, value)])).unwrap_err();
            assert_eq!(err.variable, variable, "{value}");
        }
    }

    #[test]
    fn cloud_run_defaults_to_json_logs() {
        let config = Config::from_vars(vars(&[("K_SERVICE", "chat")])).unwrap();
        assert_eq!(config.effective_log_format(), LogFormat::Json);
    }
}
