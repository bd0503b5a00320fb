//! The configuration against its promises: every variable's bad value is refused under its
//! own name without being echoed, and the defaults are those README and docs/PROTOCOL.md
//! state.

use std::collections::BTreeSet;
use std::num::NonZeroU16;

use super::*;

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn error_of(variable: &str, value: &str) -> ConfigError {
    match Config::from_vars(vars(&[(variable, value)])) {
        Ok(_) => panic!("{variable}={value:?} was accepted"),
        Err(err) => err,
    }
}

/// Variables that take any text: nothing to refuse.
const FREE_TEXT: &[&str] = &[
    "K_SERVICE",
    "GOOGLE_CLOUD_PROJECT",
    "AUTH_ISSUER",
    "AUTH_AUDIENCE",
    "AUTH_USERNAME_CLAIM",
    "AUTH_ROOMS_CLAIM",
];

/// Values each variable must refuse: malformed, and out of range where a range matters.
const BAD_VALUES: &[(&str, &[&str])] = &[
    ("PORT", &["eighty", "65536", "-1"]),
    ("HOST", &["localhost", "10.0.0"]),
    ("METRICS_PORT", &["0", "65536", "metrics"]),
    ("SHUTDOWN_GRACE_SECS", &["soon", "-1"]),
    (
        "REDIS_URL",
        &[
            "nope://user:hunter2@host",
            "localhost",
            "rediss://:hunter2@10.0.0.3:6378/#insecure",
        ],
    ),
    ("REDIS_TIMEOUT_MS", &["0", "2s"]),
    ("REDIS_TLS_VERIFY", &["none", "insecure", "FULL"]),
    ("REDIS_CLUSTER", &["yes", "1", "on"]),
    ("REDIS_WAIT_REPLICAS", &["17", "all", "-1"]),
    ("REDIS_WAIT_TIMEOUT_MS", &["0", "60001", "1s"]),
    ("MAX_MESSAGE_BYTES", &["0", "65537", "large"]),
    ("HISTORY_LIMIT", &["0", "many"]),
    ("MEMBER_TTL_SECS", &["0", "2m"]),
    ("ROOM_TTL_SECS", &["-1", "forever"]),
    ("IDEMPOTENCY_TTL_SECS", &["0", "1.5"]),
    ("MAX_MEMBERS_PER_ROOM", &["0", "lots"]),
    ("SSE_KEEPALIVE_SECS", &["0", "often"]),
    ("SSE_TICKET_TTL_SECS", &["0", "601"]),
    ("WS_MAX_LIFETIME_SECS", &["0", "hour"]),
    ("WS_PING_SECS", &["0", "-5"]),
    ("CLIENT_QUEUE_LEN", &["0", "deep"]),
    ("FANOUT_COALESCE_MS", &["1001", "-1"]),
    ("RATE_LIMITS", &["maybe", "true"]),
    ("RATE_MESSAGES_PER_SEC", &["0", "4294967296"]),
    ("RATE_MESSAGE_BURST", &["0", "1.5"]),
    ("RATE_WS_EVENTS_PER_SEC", &["0", "fast"]),
    ("RATE_WS_EVENT_BURST", &["0", "-1"]),
    ("RATE_REST_PER_SEC", &["0", "fast"]),
    ("RATE_REST_BURST", &["0", "-1"]),
    ("RATE_JOINS_PER_MIN", &["0", "fast"]),
    ("RATE_JOIN_BURST", &["0", "-1"]),
    ("RATE_SECRET_FAILURES_PER_MIN", &["0", "none"]),
    ("RATE_ROOM_SECRET_FAILURES_PER_MIN", &["0", "none"]),
    ("MAX_CONNECTIONS_PER_IP", &["0", "plenty"]),
    ("MAX_ROOMS_PER_CONNECTION", &["0", "plenty"]),
    ("MAX_CONNECTIONS", &["0", "plenty"]),
    ("MAX_HTTP_CONNECTIONS_PER_IP", &["0", "plenty"]),
    ("HEADER_READ_TIMEOUT_SECS", &["0", "slow"]),
    ("REQUEST_BODY_TIMEOUT_SECS", &["0", "slow"]),
    ("WRITE_TIMEOUT_SECS", &["0", "slow"]),
    ("SECRET_HASH_CONCURRENCY", &["0", "cpus"]),
    ("TRUSTED_PROXY_HOPS", &["-1", "google"]),
    (
        "ALLOWED_ORIGINS",
        &["chat.internal", "https://ok.example,bad\norigin"],
    ),
    (
        "SERVER_API_KEY",
        &[
            "short-key-hunter2",
            "a key with spaces in it, long enough to pass",
            "\u{e9}tait-une-cl\u{e9}-de-plus-de-trente-deux-caract\u{e8}res",
        ],
    ),
    ("LOG_FORMAT", &["xml"]),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        &["https://collector:4317", "otel-agent"],
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        &["collector:4318", "grpc://collector"],
    ),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", &["http/json"]),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", &["udp"]),
    (
        "AUTH_JWKS_URL",
        &[
            "http://idp.example/jwks",
            "http://10.0.0.3/jwks",
            "ftp://idp.example/jwks",
            "jwks.json",
        ],
    ),
];

#[test]
fn every_variables_bad_value_names_that_variable() {
    let tabled: BTreeSet<&str> = BAD_VALUES
        .iter()
        .map(|(name, _)| *name)
        .chain(FREE_TEXT.iter().copied())
        .collect();
    let read: BTreeSet<String> = Config::variables().into_iter().collect();
    assert_eq!(
        tabled,
        read.iter().map(String::as_str).collect(),
        "the table must cover every variable the configuration reads"
    );
    for (variable, values) in BAD_VALUES {
        for value in *values {
            let err = error_of(variable, value);
            assert_eq!(err.variable, *variable, "{variable}={value:?}");
            let line = err.to_string();
            assert!(
                line.starts_with(&format!("invalid configuration: {variable} must be ")),
                "{line}"
            );
            assert_ne!(err.expected, "a valid value", "{variable}: no expectation");
            // Short values ("0", "-1") occur in any range; longer ones must never be quoted.
            if value.len() >= 4 {
                assert!(!line.contains(value), "{line} echoes {value:?}");
            }
        }
    }
}

#[test]
fn numbers_say_what_they_count_and_ranges_their_bounds() {
    for (variable, value, expected) in [
        (
            "SSE_TICKET_TTL_SECS",
            "601",
            "a whole number of seconds, 1-600",
        ),
        ("MAX_MESSAGE_BYTES", "0", "a whole number of bytes, 1-65536"),
        (
            "FANOUT_COALESCE_MS",
            "1001",
            "a whole number of milliseconds, 0-1000",
        ),
        (
            "REDIS_TIMEOUT_MS",
            "0",
            "a whole number of milliseconds, at least 1",
        ),
        ("HISTORY_LIMIT", "0", "a whole number, at least 1"),
        ("REDIS_WAIT_REPLICAS", "17", "a whole number, 0-16"),
        (
            "REDIS_WAIT_TIMEOUT_MS",
            "0",
            "a whole number of milliseconds, 1-60000",
        ),
        ("ROOM_TTL_SECS", "-1", "a whole number of seconds"),
    ] {
        assert_eq!(error_of(variable, value).expected, expected, "{variable}");
    }
}

#[test]
fn metrics_port_must_differ_from_port() {
    let err = Config::from_vars(vars(&[("PORT", "9090"), ("METRICS_PORT", "9090")])).unwrap_err();
    assert_eq!(err.variable, "METRICS_PORT");
    assert!(err.expected.ends_with("other than PORT"), "{err}");
    let err = Config::from_vars(vars(&[("METRICS_PORT", "8080")])).unwrap_err();
    assert_eq!(err.variable, "METRICS_PORT", "PORT's default counts too");
    let config = Config::from_vars(vars(&[("PORT", "0"), ("METRICS_PORT", "9090")])).unwrap();
    assert_eq!(config.listen.metrics_port, NonZeroU16::new(9090));
}

/// The documents that state every variable's default in a "## Configuration" table.
const DOCUMENTS: &[(&str, &str)] = &[
    ("README.md", include_str!("../../README.md")),
    ("docs/PROTOCOL.md", include_str!("../../docs/PROTOCOL.md")),
];

/// A document's configuration table: each row's variables (`` `A` / `B` `` or `` `A`, `B` ``)
/// with their default, when the default cell is only literal values, one per variable
/// (`` `5` / `100` ``); `None` when it is prose (unset, computed).
fn documented_defaults(document: &str) -> Vec<(String, Option<String>)> {
    let start = document
        .find("\n## Configuration\n")
        .expect("a Configuration section");
    let section = &document[start + 1..];
    let section = &section[..section[3..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 3)];
    let mut rows = Vec::new();
    for line in section.lines().filter(|line| line.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let names: Vec<&str> = cells[1]
            .split([',', '/'])
            .map(|name| name.trim().trim_matches('`'))
            .collect();
        let literals: Option<Vec<&str>> = cells[2]
            .split(" / ")
            .map(|value| {
                value
                    .strip_prefix('`')
                    .and_then(|value| value.strip_suffix('`'))
                    .filter(|value| !value.contains('`'))
            })
            .collect();
        let literals = literals.filter(|values| values.len() == names.len());
        for (index, name) in names.iter().enumerate() {
            let default = literals.as_ref().map(|values| values[index].to_owned());
            rows.push(((*name).to_owned(), default));
        }
    }
    rows
}

/// Variables whose default is unset or computed, which the tables say in words.
const COMPUTED_DEFAULTS: &[&str] = &[
    "METRICS_PORT",
    "REDIS_URL",
    "SERVER_API_KEY",
    "SECRET_HASH_CONCURRENCY",
    "TRUSTED_PROXY_HOPS",
    "ALLOWED_ORIGINS",
    "LOG_FORMAT",
    "K_SERVICE",
    "GOOGLE_CLOUD_PROJECT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "AUTH_JWKS_URL",
    "AUTH_ISSUER",
    "AUTH_AUDIENCE",
    "AUTH_USERNAME_CLAIM",
    "AUTH_ROOMS_CLAIM",
];

#[test]
fn defaults_equal_the_documented_tables() {
    assert_eq!(Config::from_vars(vars(&[])).unwrap(), Config::default());
    let ours: BTreeSet<String> = Config::variables().into_iter().collect();
    for (document, text) in DOCUMENTS {
        let rows = documented_defaults(text);
        let documented: BTreeSet<&str> = rows.iter().map(|(name, _)| name.as_str()).collect();
        for variable in &ours {
            assert!(
                documented.contains(variable.as_str()),
                "{document}'s table lacks {variable}"
            );
        }
        let mut literal = 0;
        for (variable, default) in rows.iter().filter(|(name, _)| ours.contains(name)) {
            let Some(default) = default else {
                assert!(
                    COMPUTED_DEFAULTS.contains(&variable.as_str()),
                    "{document}: {variable}'s default is not one literal value"
                );
                continue;
            };
            // Setting a variable to its documented default must change nothing.
            let config = Config::from_vars(vars(&[(variable, default)]))
                .unwrap_or_else(|err| panic!("{document}'s default of {variable}: {err}"));
            assert_eq!(
                config,
                Config::default(),
                "{variable}: {document}'s default {default} is not the default"
            );
            literal += 1;
        }
        assert!(
            literal >= 30,
            "only {literal} literal defaults in {document}"
        );
    }
    // The rest, as the tables say them in words.
    let config = Config::default();
    assert_eq!(config.listen.metrics_port, None);
    assert_eq!(config.redis.redis_url, None);
    assert_eq!(config.server_api.server_api_key, None);
    assert_eq!(
        config.hardening.effective_secret_hash_concurrency(),
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        "the number of CPUs"
    );
    assert_eq!(config.effective_trusted_proxy_hops(), 0);
    assert_eq!(config.hardening.origins(), None);
    assert_eq!(config.effective_log_format(), LogFormat::Text);
    assert_eq!(config.telemetry.k_service, None);
    assert_eq!(config.telemetry.google_cloud_project, None);
    assert!(!config.telemetry.otlp_export_enabled());
    assert_eq!(
        config.telemetry.otel_exporter_otlp_protocol,
        OtlpProtocol::HttpProtobuf
    );
    assert_eq!(config.telemetry.otel_exporter_otlp_traces_protocol, None);
}

#[test]
fn redis_password_never_printed() {
    for url in [
        "nope://user:hunter2@host",
        "redis://:hunter2@host:port",
        "hunter2",
    ] {
        let err = error_of("REDIS_URL", url);
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
    }
    let config = Config::from_vars(vars(&[("REDIS_URL", "redis://:hunter2@localhost:1")])).unwrap();
    assert_eq!(
        config.redis.redis_url.as_ref().map(RedisUrl::expose),
        Some("redis://:hunter2@localhost:1")
    );
    assert!(!format!("{config:?}").contains("hunter2"));
}

#[test]
fn server_api_key_is_never_printed_and_compared_whole() {
    let key = "k3y-hunter2-0123456789abcdef0123456789";
    let config = Config::from_vars(vars(&[("SERVER_API_KEY", key)])).unwrap();
    let parsed = config
        .server_api
        .server_api_key
        .as_ref()
        .expect("the key is set");
    assert!(!format!("{config:?}").contains("hunter2"));
    assert!(parsed.matches(key.as_bytes()));
    assert!(!parsed.matches(&key.as_bytes()[..key.len() - 1]));
    assert!(!parsed.matches(format!("{key}x").as_bytes()));
    assert!(!parsed.matches(b""));
    // 31 characters is one short; 32 is enough.
    let err = error_of("SERVER_API_KEY", &"h".repeat(31));
    assert_eq!(err.variable, "SERVER_API_KEY");
    assert!(err.expected.starts_with("32-256 "), "{err}");
    assert!(Config::from_vars(vars(&[("SERVER_API_KEY", &"h".repeat(32))])).is_ok());
    assert!(Config::from_vars(vars(&[("SERVER_API_KEY", &"h".repeat(257))])).is_err());
}

#[test]
fn redis_tls_verify_is_full_or_chain_and_nothing_skips_the_chain() {
    assert_eq!(
        Config::default().redis.redis_tls_verify,
        RedisTlsVerify::Full
    );
    for (value, verify) in [
        ("full", RedisTlsVerify::Full),
        ("chain", RedisTlsVerify::Chain),
    ] {
        let config = Config::from_vars(vars(&[
            ("REDIS_URL", "rediss://:hunter2@10.0.0.3:6378"),
            ("REDIS_TLS_VERIFY", value),
        ]))
        .unwrap();
        assert_eq!(config.redis.redis_tls_verify, verify);
        assert!(
            matches!(config.redis.target(), Some(Ok(RedisTarget::Single(_)))),
            "{value}"
        );
    }
    let err = error_of("REDIS_TLS_VERIFY", "none");
    assert_eq!(
        err.to_string(),
        "invalid configuration: REDIS_TLS_VERIFY must be full or chain"
    );
    // The redis build `chain` needs would honour `#insecure` (no check at all): refused.
    let err = error_of("REDIS_URL", "rediss://:hunter2@10.0.0.3:6378/#insecure");
    assert_eq!(err.variable, "REDIS_URL");
    assert!(err.expected.contains("without #insecure"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn a_cluster_takes_a_list_of_seeds_and_only_a_cluster_does() {
    let seeds = "rediss://:hunter2@10.0.0.3:6378, rediss://:hunter2@10.0.0.4:6378";
    let config = Config::from_vars(vars(&[
        ("REDIS_URL", seeds),
        ("REDIS_CLUSTER", "true"),
        ("REDIS_TLS_VERIFY", "chain"),
    ]))
    .unwrap();
    assert!(config.redis.redis_cluster);
    assert!(matches!(
        config.redis.target(),
        Some(Ok(RedisTarget::Cluster(_)))
    ));
    // One seed is a cluster too.
    let config = Config::from_vars(vars(&[
        ("REDIS_URL", "redis://10.0.0.3:6379"),
        ("REDIS_CLUSTER", "true"),
    ]))
    .unwrap();
    assert!(matches!(
        config.redis.target(),
        Some(Ok(RedisTarget::Cluster(_)))
    ));
    assert!(!Config::default().redis.redis_cluster);
    // A list without REDIS_CLUSTER=true is refused, with the reason and without the password.
    let err = error_of("REDIS_URL", seeds);
    assert_eq!(err.variable, "REDIS_URL");
    assert!(err.expected.contains("REDIS_CLUSTER=true"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    // Every seed is checked as a URL of its own.
    let err = Config::from_vars(vars(&[
        (
            "REDIS_URL",
            "redis://10.0.0.3:6379,rediss://10.0.0.4:6378/#insecure",
        ),
        ("REDIS_CLUSTER", "true"),
    ]))
    .unwrap_err();
    assert_eq!(err.variable, "REDIS_URL");
    assert!(err.expected.contains("without #insecure"), "{err}");
    // Durable acks work on a cluster too; a bad count is refused there as anywhere.
    let config = Config::from_vars(vars(&[
        ("REDIS_URL", "redis://10.0.0.3:6379"),
        ("REDIS_CLUSTER", "true"),
        ("REDIS_WAIT_REPLICAS", "1"),
    ]))
    .unwrap();
    assert_eq!(config.redis.durability().replicas, 1);
    let err = Config::from_vars(vars(&[
        ("REDIS_URL", "redis://10.0.0.3:6379"),
        ("REDIS_CLUSTER", "true"),
        ("REDIS_WAIT_REPLICAS", "17"),
    ]))
    .unwrap_err();
    assert_eq!(err.variable, "REDIS_WAIT_REPLICAS");
    assert!(err.expected.contains("0-16"), "{err}");
    let err = error_of("REDIS_CLUSTER", "yes");
    assert_eq!(
        err.to_string(),
        "invalid configuration: REDIS_CLUSTER must be true or false"
    );
}

#[test]
fn values_are_read_into_their_sections() {
    let config = Config::from_vars(vars(&[
        ("HISTORY_LIMIT", "7"),
        ("FANOUT_COALESCE_MS", "25"),
        ("RATE_LIMITS", "off"),
        (
            "ALLOWED_ORIGINS",
            " https://a.example/ ,, http://b.example:8080",
        ),
        ("MAX_CONNECTIONS", "10"),
        ("MAX_HTTP_CONNECTIONS_PER_IP", "32"),
        ("ROOM_TTL_SECS", ""),
    ]))
    .unwrap();
    assert_eq!(config.rooms.history_limit.get(), 7);
    assert_eq!(config.streams.fanout_coalesce_ms.get(), 25);
    assert_eq!(config.limits.rate_limits, Switch::Off);
    assert_eq!(
        config.hardening.origins(),
        Some(vec![
            "https://a.example".to_owned(),
            "http://b.example:8080".to_owned()
        ])
    );
    assert_eq!(config.hardening.effective_max_http_connections_per_ip(), 5);
    assert_eq!(config.rooms.room_ttl_secs, 604_800, "empty counts as unset");
}

#[test]
fn otlp_variables_are_checked_at_start() {
    let config = Config::from_vars(vars(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ]))
    .unwrap();
    assert!(config.telemetry.otlp_export_enabled());
    assert_eq!(
        config.telemetry.otel_exporter_otlp_protocol,
        OtlpProtocol::Grpc
    );
    let config = Config::from_vars(vars(&[(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "http://collector:4318/v1/traces",
    )]))
    .unwrap();
    assert!(config.telemetry.otlp_export_enabled());
}

#[test]
fn cloud_run_defaults_to_json_logs_and_one_proxy() {
    let config = Config::from_vars(vars(&[("K_SERVICE", "chat")])).unwrap();
    assert_eq!(config.effective_log_format(), LogFormat::Json);
    assert_eq!(config.effective_trusted_proxy_hops(), 1);
    let config = Config::from_vars(vars(&[("K_SERVICE", "chat"), ("LOG_FORMAT", "text")])).unwrap();
    assert_eq!(config.effective_log_format(), LogFormat::Text);
}

const FIREBASE_JWKS: &str =
    "https://www.googleapis.com/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com";

#[test]
fn jwt_joins_need_all_three_auth_variables_or_none() {
    assert_eq!(Config::default().auth.jwt(), None, "unset: anonymous names");
    let all = [
        ("AUTH_JWKS_URL", FIREBASE_JWKS),
        ("AUTH_ISSUER", "https://securetoken.google.com/my-app"),
        ("AUTH_AUDIENCE", "my-app"),
    ];
    let config = Config::from_vars(vars(&all)).unwrap();
    let jwt = config.auth.jwt().expect("all three set: JWT joins");
    assert_eq!(jwt.jwks_url.as_str(), FIREBASE_JWKS);
    assert_eq!(jwt.audience, "my-app");
    assert_eq!((jwt.username_claim, jwt.rooms_claim), (None, None));
    // Every partial set stops the server naming what is missing.
    for (present, missing) in [
        (&all[..1], "AUTH_ISSUER, AUTH_AUDIENCE"),
        (&all[1..2], "AUTH_JWKS_URL, AUTH_AUDIENCE"),
        (&all[1..], "AUTH_JWKS_URL"),
        (&[all[0], all[2]][..], "AUTH_ISSUER"),
        (
            &[("AUTH_ROOMS_CLAIM", "rooms")][..],
            "AUTH_JWKS_URL, AUTH_ISSUER, AUTH_AUDIENCE",
        ),
    ] {
        let err = Config::from_vars(vars(present)).unwrap_err();
        assert_eq!(err.variable, missing, "{present:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("invalid configuration: {missing} must be set too")),
            "{err}"
        );
    }
    // Empty counts as unset there too.
    let err = Config::from_vars(vars(&[all[0], all[1], ("AUTH_AUDIENCE", "")])).unwrap_err();
    assert_eq!(err.variable, "AUTH_AUDIENCE");
    // Plain HTTP only on loopback (tests, a local sidecar).
    for url in [
        "http://127.0.0.1:8081/jwks",
        "http://[::1]:8081/jwks",
        "http://localhost/jwks",
    ] {
        let config = Config::from_vars(vars(&[all[1], all[2], ("AUTH_JWKS_URL", url)])).unwrap();
        assert!(config.auth.jwt().is_some(), "{url}");
    }
    let err = error_of("AUTH_JWKS_URL", "http://idp.example/jwks");
    assert_eq!(
        err.to_string(),
        "invalid configuration: AUTH_JWKS_URL must be an https:// URL of a JSON Web Key Set (http:// only on a loopback address)"
    );
}
