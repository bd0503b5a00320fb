//! Abuse limits: token-bucket rate limits (governor's GCRA), connection caps, and where a
//! client's IP address comes from.
//!
//! - Messages per member (REST and WebSocket alike), joins and room creations per client IP,
//!   REST requests per client IP, client events per WebSocket connection: over the limit is
//!   `rate_limited` with the seconds until the next request would pass.
//! - Open WebSocket and SSE streams per client IP, and all connections of the instance (the
//!   accept loop answers 503 beyond that, so the platform routes the client elsewhere).
//! - The client IP: the peer address, unless `TRUSTED_PROXY_HOPS` proxies are declared (Cloud
//!   Run's front end is one): then the entry of `X-Forwarded-For` the last trusted proxy
//!   wrote. Entries further left are written by the client and cannot be trusted.
//!
//! `RATE_LIMITS=off` turns the rate limits off (for load tests); the caps stay.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

use crate::config::{Config, Switch};
use crate::domain::{RoomId, TokenHash};
use crate::error::ApiError;

/// The client address of a request, as [`client_ip`] decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// The client IP: the peer, or with `hops` trusted proxies the `hops`-th `X-Forwarded-For`
/// entry from the right (each proxy appends the address it received the request from).
pub fn client_ip(headers: &HeaderMap, peer: SocketAddr, hops: usize) -> IpAddr {
    if hops == 0 {
        return peer.ip();
    }
    forwarded_entry(headers, "x-forwarded-for", hops)
        .and_then(|entry| std::str::from_utf8(entry).ok())
        .and_then(|entry| entry.parse().ok())
        .unwrap_or(peer.ip())
}

/// What the outermost of `hops` (> 0) trusted proxies wrote in a comma-separated
/// `X-Forwarded-*` header, each proxy appending one entry: the `hops`-th from the right.
/// Entries further left are the client's own words; fewer entries than proxies, none.
pub fn forwarded_entry<'h>(headers: &'h HeaderMap, name: &str, hops: usize) -> Option<&'h [u8]> {
    // Split the raw bytes: a value may hold bytes that are not visible ASCII (HTTP allows
    // them), and dropping such a value whole would drop the entry a trusted proxy appended
    // to it, letting a client choose to be counted as the proxy (found by fuzzing).
    let entries: Vec<&[u8]> = headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|entry| !entry.is_empty())
        .collect();
    let index = entries.len().checked_sub(hops)?;
    entries.get(index).copied()
}

pub struct Limits {
    enabled: bool,
    messages: DefaultKeyedRateLimiter<(RoomId, TokenHash)>,
    rest: DefaultKeyedRateLimiter<IpAddr>,
    joins: DefaultKeyedRateLimiter<IpAddr>,
    ws_events: Quota,
    streams_per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_streams_per_ip: usize,
    /// Upgraded WebSocket connections, which the accept loop no longer counts.
    websockets: AtomicUsize,
    pub max_rooms_per_connection: usize,
    pub max_members_per_room: usize,
    pub trusted_proxy_hops: usize,
}

fn per_second(rate: u32, burst: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

fn rate_limited(wait: Duration) -> ApiError {
    metrics::counter!("chat_rate_limited_total").increment(1);
    ApiError::RateLimited {
        retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
    }
}

impl Limits {
    pub fn new(config: &Config) -> Self {
        let joins = Quota::per_minute(
            NonZeroU32::new(config.rate_joins_per_min).unwrap_or(NonZeroU32::MIN),
        )
        .allow_burst(NonZeroU32::new(config.rate_join_burst).unwrap_or(NonZeroU32::MIN));
        Self {
            enabled: config.rate_limits == Switch::On,
            messages: DefaultKeyedRateLimiter::keyed(per_second(
                config.rate_messages_per_sec,
                config.rate_message_burst,
            )),
            rest: DefaultKeyedRateLimiter::keyed(per_second(
                config.rate_rest_per_sec,
                config.rate_rest_burst,
            )),
            joins: DefaultKeyedRateLimiter::keyed(joins),
            ws_events: per_second(config.rate_ws_events_per_sec, config.rate_ws_event_burst),
            streams_per_ip: Mutex::new(HashMap::new()),
            max_streams_per_ip: config.max_connections_per_ip,
            websockets: AtomicUsize::new(0),
            max_rooms_per_connection: config.max_rooms_per_connection,
            max_members_per_room: config.max_members_per_room,
            trusted_proxy_hops: config.effective_trusted_proxy_hops(),
        }
    }

    fn check_keyed<K>(&self, limiter: &DefaultKeyedRateLimiter<K>, key: &K) -> Result<(), ApiError>
    where
        K: Clone + Eq + std::hash::Hash,
    {
        if !self.enabled {
            return Ok(());
        }
        limiter.check_key(key).map_err(|not_until| {
            rate_limited(not_until.wait_time_from(DefaultClock::default().now()))
        })
    }

    /// One chat message of this member.
    pub fn check_message(&self, room: &RoomId, token: &TokenHash) -> Result<(), ApiError> {
        self.check_keyed(&self.messages, &(room.clone(), token.clone()))
    }

    /// One REST request from this client.
    pub fn check_rest(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.check_keyed(&self.rest, &ip)
    }

    /// One room creation or join from this client.
    pub fn check_join(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.check_keyed(&self.joins, &ip)
    }

    /// The client-event limiter of one new WebSocket connection (`None` when limits are off).
    pub fn ws_event_limiter(&self) -> Option<WsEventLimiter> {
        self.enabled.then(|| WsEventLimiter {
            events: DefaultDirectRateLimiter::direct(self.ws_events),
            refusals: DefaultDirectRateLimiter::direct(per_second(1, 50)),
        })
    }

    /// Opens a stream (WebSocket or SSE) for this client, if it has fewer than its cap.
    pub fn open_stream(
        self: &Arc<Self>,
        ip: IpAddr,
        websocket: bool,
    ) -> Result<StreamSlot, ApiError> {
        let mut streams = self
            .streams_per_ip
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let open = streams.entry(ip).or_insert(0);
        if *open >= self.max_streams_per_ip {
            metrics::counter!("chat_connections_refused_total", "reason" => "per_ip").increment(1);
            return Err(ApiError::RateLimited {
                retry_after_secs: 5,
            });
        }
        *open += 1;
        if websocket {
            self.websockets.fetch_add(1, Ordering::Relaxed);
        }
        Ok(StreamSlot {
            limits: self.clone(),
            ip,
            websocket,
        })
    }

    /// Upgraded WebSocket connections open now.
    pub fn open_websockets(&self) -> usize {
        self.websockets.load(Ordering::Relaxed)
    }

    /// Forgets the buckets of clients not seen lately, so memory follows active clients.
    pub fn forget_idle(&self) {
        self.messages.retain_recent();
        self.rest.retain_recent();
        self.joins.retain_recent();
        self.messages.shrink_to_fit();
        self.rest.shrink_to_fit();
        self.joins.shrink_to_fit();
    }
}

/// One open stream of a client; dropping it frees the slot.
pub struct StreamSlot {
    limits: Arc<Limits>,
    ip: IpAddr,
    websocket: bool,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self
            .limits
            .streams_per_ip
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(open) = streams.get_mut(&self.ip) {
            *open -= 1;
            if *open == 0 {
                streams.remove(&self.ip);
            }
        }
        if self.websocket {
            self.limits.websockets.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Client events of one WebSocket connection. Refusals have a bucket of their own: a client
/// that keeps sending over its limit (50 refusals, refilled at one a second) is disconnected.
pub struct WsEventLimiter {
    events: DefaultDirectRateLimiter,
    refusals: DefaultDirectRateLimiter,
}

/// Why a WebSocket client event was refused.
pub enum Refused {
    /// Over the limit: tell the client.
    Limited(ApiError),
    /// Over the limit once too often: disconnect it.
    Hammering,
}

impl WsEventLimiter {
    pub fn check(&self) -> Result<(), Refused> {
        match self.events.check() {
            Ok(()) => Ok(()),
            Err(not_until) => match self.refusals.check() {
                Ok(()) => Err(Refused::Limited(rate_limited(
                    not_until.wait_time_from(DefaultClock::default().now()),
                ))),
                Err(_) => Err(Refused::Hammering),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in xff {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn client_ip_trusts_only_declared_proxies() {
        let peer: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        let spoofed = headers(&["6.6.6.6, 203.0.113.7"]);
        assert_eq!(client_ip(&spoofed, peer, 0), peer.ip());
        assert_eq!(
            client_ip(&spoofed, peer, 1),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(&spoofed, peer, 2),
            "6.6.6.6".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(&headers(&[]), peer, 1), peer.ip());
        assert_eq!(client_ip(&headers(&["garbage"]), peer, 1), peer.ip());
        assert_eq!(
            client_ip(&headers(&["1.1.1.1", "2.2.2.2"]), peer, 1),
            "2.2.2.2".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn client_ip_survives_bytes_the_client_wrote_before_the_proxy() {
        // The client sends a byte that is not visible ASCII; the proxy appends to that line.
        let peer: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        let mut forwarded = HeaderMap::new();
        forwarded.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\x9e, 203.0.113.7").unwrap(),
        );
        assert_eq!(
            client_ip(&forwarded, peer, 1),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(&forwarded, peer, 2), peer.ip());
    }
}
