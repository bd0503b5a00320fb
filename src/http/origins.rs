//! Which browser origins may use the API: CORS for REST and SSE, and the `Origin` check on
//! WebSocket upgrades (browsers do not apply CORS to WebSockets, so without the check any
//! site could open a socket to the server from its visitors' browsers).
//!
//! `ALLOWED_ORIGINS` lists them; the server's own origin is always allowed. Unset, every
//! origin is allowed (said in the log at start). Credentials are never allowed: the API's
//! tokens travel in headers, not cookies, so `Access-Control-Allow-Origin: *` is never
//! combined with `Access-Control-Allow-Credentials`.
//!
//! **The server's own origin** is that of a page the client loaded from this server: the
//! scheme the client used, the `Host` it sent and its port (the scheme's default when `Host`
//! names none), all three compared with the `Origin` exactly (scheme and host
//! case-insensitively; `https://chat.example` is `https://chat.example:443`).
//! - The scheme: reached directly (`TRUSTED_PROXY_HOPS=0`) the server speaks plain HTTP, so
//!   `http`, and an `X-Forwarded-Proto` is the client's own word, ignored. Behind trusted
//!   proxies (Cloud Run's front end terminates TLS), the `X-Forwarded-Proto` entry the
//!   outermost one wrote, read as `X-Forwarded-For` is ([`forwarded_entry`]); when they wrote
//!   none, the own origin is unknown and only the listed origins pass.
//! - The `Host` is the client's to choose, which is why the scheme matters. A browser sends the
//!   host of the URL it connects to: a page of another site reaching this server sends this
//!   server's name, which its own `Origin` does not match. To pass, a page must send its own
//!   name as `Host`, which takes that name resolving to this server (DNS rebinding) and, since
//!   the scheme must match too, reaching it directly over plain `http`: a page at
//!   `https://evil.example` with `Host: evil.example` is refused. A page that passes that way
//!   gains nothing a direct client lacks (no cookie or stored token of this origin is its), but
//!   the visitor's network position: a server reachable directly and only from a private
//!   network should sit behind a proxy. Behind one, `Host` is what the proxy routed here
//!   (Cloud Run routes only the service's own host names); `X-Forwarded-Host` is not read.

use std::time::Duration;

use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::limits::forwarded_entry;

pub struct Origins {
    /// `None`: any origin.
    allowed: Option<Vec<String>>,
    /// `TRUSTED_PROXY_HOPS`: whose `X-Forwarded-Proto` says the scheme the client used.
    trusted_proxy_hops: usize,
}

impl Origins {
    pub fn new(allowed: Option<Vec<String>>, trusted_proxy_hops: usize) -> Self {
        match &allowed {
            None => tracing::warn!(
                "ALLOWED_ORIGINS is unset: every origin is allowed (CORS and WebSocket upgrades)"
            ),
            Some(list) => tracing::info!(origins = ?list, "allowed origins"),
        }
        Self {
            allowed,
            trusted_proxy_hops,
        }
    }

    /// Whether a request with these headers may proceed: its `Origin` is listed or is the
    /// server's own (the streams' check: browsers apply no CORS to WebSocket upgrades, and
    /// EventSource to none that matters). Requests without an `Origin` do not come from a
    /// browser page and are not a cross-site risk.
    pub fn allows_request(&self, headers: &HeaderMap) -> bool {
        let (Some(allowed), Some(origin)) = (&self.allowed, headers.get(header::ORIGIN)) else {
            return true;
        };
        // Browsers send origins in ASCII: one that is not text is no origin allowed here.
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.trim_end_matches('/');
        allowed.iter().any(|candidate| candidate == origin)
            || self
                .own_origin(headers)
                .is_some_and(|own| SiteOrigin::parse(origin) == Some(own))
    }

    /// The origin of this server's own pages, as this request reached it (see the module doc).
    fn own_origin(&self, headers: &HeaderMap) -> Option<SiteOrigin> {
        let scheme = match self.trusted_proxy_hops {
            0 => "http",
            hops => {
                std::str::from_utf8(forwarded_entry(headers, "x-forwarded-proto", hops)?).ok()?
            }
        };
        let host = headers.get(header::HOST)?.to_str().ok()?;
        SiteOrigin::new(scheme, &host.parse().ok()?)
    }

    pub fn cors(&self) -> CorsLayer {
        let allow_origin = match &self.allowed {
            None => AllowOrigin::any(),
            Some(list) => AllowOrigin::list(
                list.iter()
                    .filter_map(|origin| HeaderValue::from_str(origin).ok()),
            ),
        };
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([header::RETRY_AFTER])
            .max_age(Duration::from_secs(3600))
    }
}

/// An origin as compared here: scheme and host in lower case, the port always explicit.
#[derive(Debug, PartialEq, Eq)]
struct SiteOrigin {
    scheme: &'static str,
    host: String,
    port: u16,
}

impl SiteOrigin {
    /// Only `http` and `https`: no other scheme serves the pages that talk to this API.
    fn new(scheme: &str, authority: &Authority) -> Option<Self> {
        let (scheme, default_port) = if scheme.eq_ignore_ascii_case("http") {
            ("http", 80)
        } else if scheme.eq_ignore_ascii_case("https") {
            ("https", 443)
        } else {
            return None;
        };
        // User info is no part of an origin (`http://chat.example@evil.example`).
        if authority.as_str().contains('@') {
            return None;
        }
        Some(Self {
            scheme,
            host: authority.host().to_ascii_lowercase(),
            port: authority.port_u16().unwrap_or(default_port),
        })
    }

    /// An `Origin` value (`scheme://host[:port]`), if it is one.
    fn parse(origin: &str) -> Option<Self> {
        let (scheme, authority) = origin.split_once("://")?;
        Self::new(scheme, &authority.parse().ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&'static str, &str)]) -> HeaderMap {
        headers
            .iter()
            .map(|(name, value)| {
                let value = HeaderValue::from_str(value).expect("a valid test header value");
                (HeaderName::from_static(name), value)
            })
            .collect()
    }

    #[test]
    fn own_origin_and_listed_origins_only() {
        let origins = Origins::new(Some(vec!["https://chat.example.com".to_owned()]), 0);
        let allows = |origin: &str, host: &str| {
            origins.allows_request(&request(&[("origin", origin), ("host", host)]))
        };
        assert!(allows("https://chat.example.com", "api.example.com"));
        assert!(allows("http://api.example.com", "api.example.com"));
        assert!(origins.allows_request(&request(&[("host", "api.example.com")])));
        assert!(!allows("https://evil.example", "api.example.com"));
        let open = Origins::new(None, 0);
        assert!(open.allows_request(&request(&[("origin", "https://evil.example")])));
    }

    #[test]
    fn own_origin_is_scheme_host_and_port_exactly() {
        let direct = Origins::new(Some(Vec::new()), 0);
        let allows = |origin: &str, host: &str| {
            direct.allows_request(&request(&[("origin", origin), ("host", host)]))
        };
        assert!(allows("http://API.example.com/", "api.example.com:80"));
        assert!(allows("http://[::1]:8080", "[::1]:8080"));
        // The scheme a direct client used is http, whatever the client claims.
        assert!(!allows("https://evil.example", "evil.example"));
        assert!(!allows("https://api.example.com:80", "api.example.com"));
        assert!(!allows("http://api.example.com:8080", "api.example.com"));
        assert!(!allows("http://api.example.com/path", "api.example.com"));
        assert!(!allows(
            "http://api.example.com@evil.example",
            "evil.example"
        ));
        assert!(!allows("null", "api.example.com"));

        let proxied = Origins::new(Some(Vec::new()), 1);
        let allows = |origin: &str, proto: &str| {
            let headers = [
                ("origin", origin),
                ("host", "api.example.com"),
                ("x-forwarded-proto", proto),
            ];
            proxied.allows_request(&request(&headers))
        };
        assert!(allows("https://api.example.com", "https"));
        assert!(allows("https://api.example.com:443", "HTTPS"));
        assert!(!allows("http://api.example.com", "https"));
        // The client's own entry comes first; the proxy's is the last.
        assert!(!allows("https://api.example.com", "https, http"));
        let unsaid = [
            ("origin", "https://api.example.com"),
            ("host", "api.example.com"),
        ];
        assert!(!proxied.allows_request(&request(&unsaid)));
    }
}
