//! The server's configuration: environment variables only, read at start into one typed
//! struct of sections (listening, store, rooms, streams, limits, hardening, telemetry). A
//! missing or malformed value stops the binary with exit status 2 and one line naming the
//! variable and what it expects (see `main.rs`).
//!
//! Each variable is written once: a field of its section, with its type, doc comment and
//! default (the [`section!`] macro). Its type refuses bad values by itself (`NonZero…`,
//! enums, [`Bounded`], parsed URLs and origins), and the error's "what it expects" comes from
//! that same type ([`Expects`]), so the check and its message cannot drift apart. The
//! only checks across fields are `METRICS_PORT` ≠ `PORT`, a `REDIS_URL` list only with
//! `REDIS_CLUSTER=true`, and the `AUTH_*` variables all three or none.
//!
//! Each section is read by its own `envy::from_iter` over the same variables rather than one
//! struct of `#[serde(flatten)]` sections: serde buffers flattened fields as strings, and
//! envy's numbers then fail to parse.
//!
//! `REDIS_URL` may carry a password and `SERVER_API_KEY` is one, so they are kept in
//! [`RedisUrl`] and [`ServerApiKey`], whose `Debug` hides them, and no value is ever echoed in
//! an error.

use std::num::NonZeroU16;

use serde::de::DeserializeOwned;

/// Declares a section: the struct (every field `pub`, read by envy under its upper-case
/// name), its `Default` from the defaults written beside the fields (evaluated at compile
/// time, so a default its type refuses does not build), and the [`Section`] description that
/// errors and tests use.
macro_rules! section {
    (
        $(#[$meta:meta])*
        pub struct $section:ident {
            $(
                $(#[$field_meta:meta])*
                pub $field:ident: $ty:ty = $default:expr,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
        #[serde(default)]
        pub struct $section {
            $( $(#[$field_meta])* pub $field: $ty, )*
        }

        impl Default for $section {
            fn default() -> Self {
                Self { $( $field: const { $default }, )* }
            }
        }

        impl $crate::config::Section for $section {
            const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];

            fn expects(field: &str, unit: &str) -> Option<String> {
                $(
                    if field == stringify!($field) {
                        return Some(<$ty as $crate::config::Expects>::expects(unit));
                    }
                )*
                None
            }
        }
    };
}

/// A `NonZero` default from a literal; inside a section's `const` block, zero fails the build.
macro_rules! nonzero {
    ($value:literal) => {
        match ::std::num::NonZero::new($value) {
            Some(value) => value,
            None => panic!("a default of 0 for a setting that refuses 0"),
        }
    };
}

mod auth;
mod hardening;
mod limits;
mod listen;
mod redis;
mod rooms;
mod server_api;
mod streams;
mod telemetry;
mod values;

pub use auth::{Auth, JwtSettings};
pub use hardening::Hardening;
pub use limits::Limits;
pub use listen::Listen;
pub use redis::{ClusterSeeds, Durability, Redis, RedisTarget};
pub use rooms::Rooms;
pub use server_api::ServerApi;
pub use streams::Streams;
pub use telemetry::Telemetry;
pub use values::{
    AllowedOrigins, Bounded, Expects, JwksUrl, LogFormat, OtlpEndpoint, OtlpProtocol,
    RedisTlsVerify, RedisUrl, ServerApiKey, Switch,
};

/// What [`section!`] says about a section.
pub trait Section: DeserializeOwned + Default {
    /// The section's variables, lower case (as envy matches them).
    const FIELDS: &'static [&'static str];

    /// What `field` accepts (see [`Expects`]); `None` if the field is not in this section.
    fn expects(field: &str, unit: &str) -> Option<String>;
}

/// Declares `Config` from its sections, and what is done with every section in turn.
macro_rules! sections {
    ($($(#[$meta:meta])* $name:ident: $section:ty,)*) => {
        /// Every variable the server reads, by concern; the README's table mirrors it.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct Config {
            $( $(#[$meta])* pub $name: $section, )*
        }

        impl Config {
            fn read_sections(vars: &[(String, String)]) -> Result<Self, ConfigError> {
                Ok(Self { $( $name: read_section(vars)?, )* })
            }

            /// What `variable` expects, from its field's type.
            fn expects(variable: &str) -> Option<String> {
                let field = variable.to_ascii_lowercase();
                let unit = unit_of(variable);
                None $( .or_else(|| <$section as Section>::expects(&field, unit)) )*
            }

            /// Every variable the configuration reads, upper case, section by section.
            pub fn variables() -> Vec<String> {
                let mut names = Vec::new();
                $(
                    let fields = <$section as Section>::FIELDS.iter();
                    names.extend(fields.map(|field| field.to_ascii_uppercase()));
                )*
                names
            }
        }
    };
}

sections! {
    /// Where the server listens, `/metrics`, and the stop.
    listen: Listen,
    /// Redis or the in-memory store.
    redis: Redis,
    /// History and lifetimes.
    rooms: Rooms,
    /// WebSocket and SSE streams.
    streams: Streams,
    /// Rate limits and per-client caps.
    limits: Limits,
    /// Connection caps, timeouts, origins and proxies.
    hardening: Hardening,
    /// The server API's key.
    server_api: ServerApi,
    /// Logs and traces.
    telemetry: Telemetry,
    /// JWT joins (the app's own users).
    auth: Auth,
}

/// A configuration error, already phrased for the one line the binary prints.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {variable} must be {expected}")]
pub struct ConfigError {
    pub variable: String,
    pub expected: String,
}

impl ConfigError {
    fn of(variable: &str) -> Self {
        Self {
            variable: variable.to_owned(),
            expected: Config::expects(variable).unwrap_or_else(|| "a valid value".to_owned()),
        }
    }
}

/// What a number counts, from the variable's name, so that "a whole number" says of what.
fn unit_of(variable: &str) -> &'static str {
    let variable = variable.to_ascii_uppercase();
    if variable.ends_with("_SECS") {
        " of seconds"
    } else if variable.ends_with("_MS") {
        " of milliseconds"
    } else if variable.ends_with("_BYTES") {
        " of bytes"
    } else {
        ""
    }
}

/// One section from all the variables (envy ignores those that are not its fields).
fn read_section<S: Section>(vars: &[(String, String)]) -> Result<S, ConfigError> {
    envy::from_iter(vars.iter().cloned()).map_err(|_| {
        // envy's messages may quote the value (which could be a secret) and do not always
        // name the variable: find the culprit by reading each of the section's variables on
        // its own.
        let culprit = vars
            .iter()
            .filter(|(name, _)| S::FIELDS.contains(&name.to_ascii_lowercase().as_str()))
            .find(|pair| envy::from_iter::<_, S>([(*pair).clone()]).is_err())
            .map_or("a variable", |(name, _)| name.as_str());
        ConfigError::of(culprit)
    })
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
        let config = Self::read_sections(&vars)?;
        if config
            .listen
            .metrics_port
            .is_some_and(|port| port.get() == config.listen.port)
        {
            return Err(ConfigError {
                variable: "METRICS_PORT".to_owned(),
                expected: format!("{}, other than PORT", NonZeroU16::expects("")),
            });
        }
        if !config.redis.redis_cluster
            && config
                .redis
                .redis_url
                .as_ref()
                .is_some_and(RedisUrl::is_list)
        {
            return Err(ConfigError {
                variable: "REDIS_URL".to_owned(),
                expected:
                    "one URL unless REDIS_CLUSTER=true (only a cluster takes a list of seed nodes)"
                        .to_owned(),
            });
        }
        let missing = config.auth.missing();
        if !missing.is_empty() {
            return Err(ConfigError {
                variable: missing.join(", "),
                expected: "set too: AUTH_JWKS_URL, AUTH_ISSUER and AUTH_AUDIENCE go together (all three or none)".to_owned(),
            });
        }
        Ok(config)
    }

    /// Proxies trusted to append the client's address to `X-Forwarded-For`.
    pub fn effective_trusted_proxy_hops(&self) -> usize {
        self.hardening
            .trusted_proxy_hops
            .unwrap_or(usize::from(self.telemetry.k_service.is_some()))
    }

    /// The log format in force: explicit, else json on Cloud Run, else text.
    pub fn effective_log_format(&self) -> LogFormat {
        self.telemetry
            .log_format
            .unwrap_or(if self.telemetry.k_service.is_some() {
                LogFormat::Json
            } else {
                LogFormat::Text
            })
    }
}

#[cfg(test)]
mod tests;
