//! The types configuration values are read into, each refusing a bad value on its own, and
//! [`Expects`]: what each type accepts, in the words of the one-line error. Deriving the
//! expectation from the field's type is what keeps the message from drifting away from what
//! the parser actually accepts.
//!
//! A value is never echoed in an error (`REDIS_URL` may hold a password): every `Deserialize`
//! here fails with a message that names no input, and `config` replaces it with the
//! expectation anyway.

use std::fmt;
use std::net::IpAddr;
use std::num::{NonZeroU16, NonZeroU32, NonZeroU64, NonZeroUsize};

use serde::Deserialize;
use serde::de::{Deserializer, Error as _};

/// What a type accepts, phrased to follow "`VARIABLE` must be".
pub trait Expects {
    /// `unit` is `" of seconds"`, `" of milliseconds"`, `" of bytes"` or empty, taken from the
    /// variable's name so that numbers say what they count.
    fn expects(unit: &str) -> String;
}

impl<T: Expects> Expects for Option<T> {
    fn expects(unit: &str) -> String {
        T::expects(unit)
    }
}

/// A type that expects the same words whatever its unit.
macro_rules! expects {
    ($type:ty, $text:literal) => {
        impl Expects for $type {
            fn expects(_unit: &str) -> String {
                $text.to_owned()
            }
        }
    };
}

// The only 16-bit settings are ports; `PORT` 0 asks the system for a free one.
expects!(u16, "a port number 0-65535");

// The only 16-bit settings are ports; a port to serve on besides `PORT` must be a real one.
expects!(NonZeroU16, "a port number 1-65535");

/// Numbers, said with what they count.
macro_rules! whole_numbers {
    ($($any:ty),* ; $($nonzero:ty),*) => {
        $(impl Expects for $any {
            fn expects(unit: &str) -> String {
                format!("a whole number{unit}")
            }
        })*
        $(impl Expects for $nonzero {
            fn expects(unit: &str) -> String {
                format!("a whole number{unit}, at least 1")
            }
        })*
    };
}
whole_numbers!(u32, u64, usize; NonZeroU32, NonZeroU64, NonZeroUsize);

expects!(IpAddr, "an IP address such as 0.0.0.0 or ::");

// Free text (names set by the platform): any value is accepted.
expects!(String, "any text");

/// A whole number from `MIN` to `MAX`, for settings where a range matters beyond "not zero".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounded<const MIN: u64, const MAX: u64>(u64);

impl<const MIN: u64, const MAX: u64> Bounded<MIN, MAX> {
    /// For defaults, evaluated at compile time: a default out of range does not build.
    pub const fn new(value: u64) -> Self {
        assert!(MIN <= value && value <= MAX, "a default out of its range");
        Self(value)
    }

    pub const fn get(self) -> u64 {
        self.0
    }
}

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = u64::deserialize(deserializer)?;
        if (MIN..=MAX).contains(&value) {
            Ok(Self(value))
        } else {
            Err(D::Error::custom("out of range"))
        }
    }
}

impl<const MIN: u64, const MAX: u64> Expects for Bounded<MIN, MAX> {
    fn expects(unit: &str) -> String {
        format!("a whole number{unit}, {MIN}-{MAX}")
    }
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    On,
    Off,
}

expects!(Switch, "on or off");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

expects!(LogFormat, "text or json");

/// The OTLP transports built in. `http/json` is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OtlpProtocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

expects!(OtlpProtocol, "grpc or http/protobuf");

// `REDIS_CLUSTER` is the only boolean setting.
expects!(bool, "true or false");

/// A Redis URL the client accepts, or with `REDIS_CLUSTER=true` a comma-separated list of
/// them (a cluster's seed nodes). It may hold a password, so `Debug` shows only that one is
/// set.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedisUrl(<redacted>)")
    }
}

impl RedisUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL as the client reads it. `#insecure` (no certificate check at all, live in the
    /// redis build `REDIS_TLS_VERIFY=chain` needs) is refused: no setting skips the chain.
    pub fn connection_info(&self) -> redis::RedisResult<redis::ConnectionInfo> {
        connection_info(&self.0)
    }

    /// Whether this is a list of more than one URL (only a cluster's seeds may be).
    pub fn is_list(&self) -> bool {
        self.0.contains(',')
    }

    /// Every URL of the list, as the client reads them (one for a single URL).
    pub fn seeds(&self) -> redis::RedisResult<Vec<redis::ConnectionInfo>> {
        self.0
            .split(',')
            .map(|url| connection_info(url.trim()))
            .collect()
    }
}

fn connection_info(url: &str) -> redis::RedisResult<redis::ConnectionInfo> {
    let info = redis::IntoConnectionInfo::into_connection_info(url)?;
    match info.addr() {
        redis::ConnectionAddr::TcpTls { insecure: true, .. } => Err(redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "#insecure is refused: REDIS_TLS_VERIFY=chain is the most that is relaxed",
        ))),
        _ => Ok(info),
    }
}

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let url = String::deserialize(deserializer)?;
        // The client's own parser decides, so nothing accepted here fails at connect time.
        let url = Self(url);
        match url.seeds() {
            Ok(_) => Ok(url),
            Err(_) => Err(D::Error::custom("not a Redis URL")),
        }
    }
}

expects!(
    RedisUrl,
    "a redis:// or rediss:// URL (with REDIS_CLUSTER=true: a comma-separated list of them), without #insecure"
);

/// `SERVER_API_KEY`: 32-256 visible ASCII characters (no spaces: it travels in a header as
/// `ApiKey <key>`). 32 characters is the least that carries 128 bits as hex; a shorter key is
/// refused at start rather than accepted weak. `Debug` hides it, and it is only ever compared
/// through [`ServerApiKey::matches`].
#[derive(Clone, PartialEq, Eq)]
pub struct ServerApiKey(String);

impl ServerApiKey {
    pub const MIN_CHARS: usize = 32;
    pub const MAX_CHARS: usize = 256;

    /// Whether `presented` is the key, in constant time: both sides are hashed first, so the
    /// time taken tells neither how much matched nor how long the key is.
    pub fn matches(&self, presented: &[u8]) -> bool {
        use sha2::{Digest, Sha256};
        use subtle::ConstantTimeEq;
        let ours = Sha256::digest(self.0.as_bytes());
        let theirs = Sha256::digest(presented);
        ours.ct_eq(&theirs).into()
    }
}

impl fmt::Debug for ServerApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerApiKey(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for ServerApiKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let key = String::deserialize(deserializer)?;
        let valid = (Self::MIN_CHARS..=Self::MAX_CHARS).contains(&key.len())
            && key.bytes().all(|byte| byte.is_ascii_graphic());
        if valid {
            Ok(Self(key))
        } else {
            Err(D::Error::custom("not a usable key"))
        }
    }
}

expects!(
    ServerApiKey,
    "32-256 visible ASCII characters without spaces (e.g. openssl rand -hex 32)"
);

/// How a `rediss://` server's certificate is checked (see `config/redis.rs`). There is no
/// value that skips the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisTlsVerify {
    /// The chain to a trusted root, and the URL's host among the certificate's names.
    Full,
    /// The chain to a trusted root only.
    Chain,
}

expects!(RedisTlsVerify, "full or chain");

/// Origins allowed for CORS and WebSocket upgrades, written comma-separated; kept trimmed and
/// without a trailing `/`, the form a browser's `Origin` header has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<String>);

impl AllowedOrigins {
    pub fn to_vec(&self) -> Vec<String> {
        self.0.clone()
    }
}

impl<'de> Deserialize<'de> for AllowedOrigins {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let list = String::deserialize(deserializer)?;
        let origins = list
            .split(',')
            .map(str::trim)
            .filter(|origin| !origin.is_empty())
            .map(|origin| {
                // An origin is compared with a header value, so it must be able to be one.
                let valid =
                    axum::http::HeaderValue::from_str(origin).is_ok() && origin.contains("://");
                valid
                    .then(|| origin.trim_end_matches('/').to_owned())
                    .ok_or_else(|| D::Error::custom("not an origin"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self(origins))
    }
}

expects!(
    AllowedOrigins,
    "comma-separated origins such as https://chat.example.com"
);

/// `http://host[:port][/path]`: what the exporters can reach without TLS. The OpenTelemetry
/// SDK reads the variable itself; parsing it here stops the server at start on a value that
/// would lose every span quietly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint(String);

impl OtlpEndpoint {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for OtlpEndpoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        let plain_http = value
            .parse::<axum::http::Uri>()
            .is_ok_and(|uri| uri.scheme_str() == Some("http") && uri.host().is_some());
        if plain_http {
            Ok(Self(value))
        } else {
            Err(D::Error::custom("not an http:// URL"))
        }
    }
}

expects!(
    OtlpEndpoint,
    "an http:// URL of an OTLP receiver (TLS is not built in; use a local collector)"
);

/// Where a JSON Web Key Set is fetched: `https://`, or `http://` only on a loopback address
/// (a provider's keys over plain HTTP could be swapped by anyone on the path; the exception is
/// for tests and a local sidecar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksUrl(String);

impl JwksUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for JwksUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        let uri = value
            .parse::<axum::http::Uri>()
            .map_err(|_| D::Error::custom("not a URL"))?;
        let host = uri.host().unwrap_or("");
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let allowed = match uri.scheme_str() {
            Some("https") => !host.is_empty(),
            Some("http") => loopback,
            _ => false,
        };
        if allowed {
            Ok(Self(value))
        } else {
            Err(D::Error::custom("not an https:// URL"))
        }
    }
}

expects!(
    JwksUrl,
    "an https:// URL of a JSON Web Key Set (http:// only on a loopback address)"
);
