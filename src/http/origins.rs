//! Which browser origins may use the API: CORS for REST and SSE, and the `Origin` check on
//! WebSocket upgrades (browsers do not apply CORS to WebSockets, so without the check any
//! site could open a socket to the server from its visitors' browsers).
//!
//! `ALLOWED_ORIGINS` lists them; the server's own origin is always allowed. Unset, every
//! origin is allowed (said in the log at start). Credentials are never allowed: the API's
//! tokens travel in headers, not cookies, so `Access-Control-Allow-Origin: *` is never
//! combined with `Access-Control-Allow-Credentials`.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

pub struct Origins {
    /// `None`: any origin.
    allowed: Option<Vec<String>>,
}

impl Origins {
    pub fn new(allowed: Option<Vec<String>>) -> Self {
        match &allowed {
            None => tracing::warn!(
                "ALLOWED_ORIGINS is unset: every origin is allowed (CORS and WebSocket upgrades)"
            ),
            Some(list) => tracing::info!(origins = ?list, "allowed origins"),
        }
        Self { allowed }
    }

    /// Whether a request with this `Origin` (and `Host`) may proceed. Requests without an
    /// `Origin` do not come from a browser page and are not a cross-site risk.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let (Some(allowed), Some(origin)) = (&self.allowed, origin) else {
            return true;
        };
        let origin = origin.trim_end_matches('/');
        allowed.iter().any(|candidate| candidate == origin)
            || host.is_some_and(|host| {
                origin
                    .split_once("://")
                    .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
            })
    }

    /// [`Self::allows`] for a request's own `Origin` and `Host` headers (the streams' check:
    /// browsers apply no CORS to WebSocket upgrades, and EventSource to none that matters).
    pub fn allows_request(&self, headers: &HeaderMap) -> bool {
        let header = |name| {
            headers
                .get(name)
                .and_then(|value: &HeaderValue| value.to_str().ok())
        };
        self.allows(header(header::ORIGIN), header(header::HOST))
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
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_origin_and_listed_origins_only() {
        let origins = Origins::new(Some(vec!["https://chat.example.com".to_owned()]));
        assert!(origins.allows(Some("https://chat.example.com"), Some("api.example.com")));
        assert!(origins.allows(Some("http://api.example.com"), Some("api.example.com")));
        assert!(origins.allows(None, Some("api.example.com")));
        assert!(!origins.allows(Some("https://evil.example"), Some("api.example.com")));
        assert!(Origins::new(None).allows(Some("https://evil.example"), None));
    }
}
