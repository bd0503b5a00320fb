//! Abuse limits: token-bucket rate limits (governor's GCRA), connection caps, and where a
//! client's IP address comes from.
//!
//! - Messages per member (REST and WebSocket alike), `typing` per member (the same quota, a
//!   bucket of its own), joins and room creations per client IP,
//!   REST requests per client IP, client events per WebSocket connection: over the limit is
//!   `rate_limited` with the seconds until the next request would pass.
//! - Open WebSocket and SSE streams per client IP, and all connections of the instance (the
//!   accept loop answers 503 beyond that, so the platform routes the client elsewhere).
//! - The client IP: the peer address, unless `TRUSTED_PROXY_HOPS` proxies are declared (Cloud
//!   Run's front end is one): then the entry of `X-Forwarded-For` the last trusted proxy
//!   wrote. Entries further left are written by the client and cannot be trusted.
//!
//! - Wrong room secrets, per client address and per room: past the limit a join is refused
//!   before its secret is hashed, so guessing costs the guesser time and the server nothing.
//!   Wrong server API keys, per client address, the same way (and the same budget).
//! - Plain HTTP connections per client address (at accept when the peer is the client,
//!   per request in flight when trusted proxies name the client), at most half the instance.
//!
//! A client address is its IPv4 address, or its IPv6 /64: one subscriber usually holds a
//! whole /64 and can pick any address in it, so per-address buckets would be free for the
//! taking (IPv4-mapped IPv6 addresses count as the IPv4 address).
//!
//! `RATE_LIMITS=off` turns the rate limits off (for load tests); the caps stay.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use http::HeaderMap;

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

/// The bucket a client address is counted in: the IPv4 address, or the IPv6 /64.
pub fn client_bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

pub struct Limits {
    enabled: bool,
    messages: DefaultKeyedRateLimiter<(RoomId, TokenHash)>,
    /// `typing` per member: the messages' quota in a bucket of its own, so a client that
    /// sends one per keystroke never spends its chat budget.
    typing: DefaultKeyedRateLimiter<(RoomId, TokenHash)>,
    rest: DefaultKeyedRateLimiter<IpAddr>,
    joins: DefaultKeyedRateLimiter<IpAddr>,
    ws_events: Quota,
    secret_failures_by_ip: Lockouts<IpAddr>,
    secret_failures_by_room: Lockouts<RoomId>,
    /// Wrong or missing server API keys, per client address (`RATE_SECRET_FAILURES_PER_MIN`,
    /// the same budget as wrong room secrets: both are guesses at a secret).
    api_key_failures_by_ip: Lockouts<IpAddr>,
    streams_per_ip: Counts,
    max_streams_per_ip: usize,
    http_per_ip: Counts,
    max_http_per_ip: usize,
    /// Upgraded WebSocket connections, which the accept loop no longer counts.
    websockets: AtomicUsize,
    pub max_rooms_per_connection: usize,
    pub max_members_per_room: usize,
    pub trusted_proxy_hops: usize,
}

fn per_second(rate: NonZeroU32, burst: NonZeroU32) -> Quota {
    Quota::per_second(rate).allow_burst(burst)
}

fn rate_limited(wait: Duration) -> ApiError {
    metrics::counter!("chat_rate_limited_total").increment(1);
    ApiError::RateLimited {
        retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
    }
}

impl Limits {
    pub fn new(config: &Config) -> Self {
        let limits = &config.limits;
        let joins =
            Quota::per_minute(limits.rate_joins_per_min).allow_burst(limits.rate_join_burst);
        Self {
            enabled: limits.rate_limits == Switch::On,
            messages: DefaultKeyedRateLimiter::keyed(per_second(
                limits.rate_messages_per_sec,
                limits.rate_message_burst,
            )),
            typing: DefaultKeyedRateLimiter::keyed(per_second(
                limits.rate_messages_per_sec,
                limits.rate_message_burst,
            )),
            rest: DefaultKeyedRateLimiter::keyed(per_second(
                limits.rate_rest_per_sec,
                limits.rate_rest_burst,
            )),
            joins: DefaultKeyedRateLimiter::keyed(joins),
            ws_events: per_second(limits.rate_ws_events_per_sec, limits.rate_ws_event_burst),
            secret_failures_by_ip: Lockouts::per_minute(limits.rate_secret_failures_per_min),
            secret_failures_by_room: Lockouts::per_minute(limits.rate_room_secret_failures_per_min),
            api_key_failures_by_ip: Lockouts::per_minute(limits.rate_secret_failures_per_min),
            streams_per_ip: Counts::default(),
            max_streams_per_ip: limits.max_connections_per_ip.get(),
            http_per_ip: Counts::default(),
            max_http_per_ip: config.hardening.effective_max_http_connections_per_ip(),
            websockets: AtomicUsize::new(0),
            max_rooms_per_connection: limits.max_rooms_per_connection.get(),
            max_members_per_room: config.rooms.max_members_per_room.get(),
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

    /// One `typing` of this member.
    pub fn check_typing(&self, room: &RoomId, token: &TokenHash) -> Result<(), ApiError> {
        self.check_keyed(&self.typing, &(room.clone(), token.clone()))
    }

    /// One REST request from this client.
    pub fn check_rest(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.check_keyed(&self.rest, &client_bucket(ip))
    }

    /// One room creation or join from this client.
    pub fn check_join(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.check_keyed(&self.joins, &client_bucket(ip))
    }

    /// Whether this client may have a secret of this room checked: not while either has
    /// given too many wrong secrets lately.
    pub fn check_secret_attempt(&self, ip: IpAddr, room: &RoomId) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let locked = [
            self.secret_failures_by_ip.locked_for(&client_bucket(ip)),
            self.secret_failures_by_room.locked_for(room),
        ];
        match locked.into_iter().flatten().max() {
            Some(wait) => {
                metrics::counter!("chat_secret_checks_refused_total", "reason" => "wrong_secrets")
                    .increment(1);
                Err(rate_limited(wait))
            }
            None => Ok(()),
        }
    }

    /// A wrong secret from this client for this room.
    pub fn record_wrong_secret(&self, ip: IpAddr, room: &RoomId) {
        self.secret_failures_by_ip.strike(client_bucket(ip));
        self.secret_failures_by_room.strike(room.clone());
    }

    /// Whether this client may present a server API key: not while it has presented too many
    /// wrong ones lately (checked before the key, so a locked-out guesser learns nothing).
    pub fn check_api_key_attempt(&self, ip: IpAddr) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        match self.api_key_failures_by_ip.locked_for(&client_bucket(ip)) {
            Some(wait) => {
                metrics::counter!("chat_api_key_checks_refused_total").increment(1);
                Err(rate_limited(wait))
            }
            None => Ok(()),
        }
    }

    /// A wrong or missing server API key from this client.
    pub fn record_wrong_api_key(&self, ip: IpAddr) {
        self.api_key_failures_by_ip.strike(client_bucket(ip));
    }

    /// The client-event limiter of one new WebSocket connection (`None` when limits are off).
    pub fn ws_event_limiter(&self) -> Option<WsEventLimiter> {
        self.enabled.then(|| WsEventLimiter {
            events: DefaultDirectRateLimiter::direct(self.ws_events),
            refusals: DefaultDirectRateLimiter::direct(per_second(
                NonZeroU32::MIN,
                const { NonZeroU32::new(50).expect("50 is not zero") },
            )),
        })
    }

    /// Opens a stream (WebSocket or SSE) for this client, if it has fewer than its cap.
    pub fn open_stream(
        self: &Arc<Self>,
        ip: IpAddr,
        websocket: bool,
    ) -> Result<StreamSlot, ApiError> {
        let ip = client_bucket(ip);
        if !self.streams_per_ip.try_add(ip, self.max_streams_per_ip) {
            metrics::counter!("chat_connections_refused_total", "reason" => "per_ip").increment(1);
            return Err(ApiError::RateLimited {
                retry_after_secs: 5,
            });
        }
        if websocket {
            self.websockets.fetch_add(1, Ordering::Relaxed);
        }
        Ok(StreamSlot {
            limits: self.clone(),
            ip,
            websocket,
        })
    }

    /// Opens a plain HTTP connection (or request in flight) for this client, if it has fewer
    /// than its cap; dropping the slot frees it.
    pub fn open_http(self: &Arc<Self>, ip: IpAddr) -> Result<HttpSlot, ApiError> {
        let ip = client_bucket(ip);
        if !self.http_per_ip.try_add(ip, self.max_http_per_ip) {
            metrics::counter!("chat_connections_refused_total", "reason" => "http_per_ip")
                .increment(1);
            return Err(ApiError::RateLimited {
                retry_after_secs: 1,
            });
        }
        Ok(HttpSlot {
            limits: self.clone(),
            ip,
        })
    }

    /// Upgraded WebSocket connections open now.
    pub fn open_websockets(&self) -> usize {
        self.websockets.load(Ordering::Relaxed)
    }

    /// Forgets the buckets of clients not seen lately, so memory follows active clients.
    pub fn forget_idle(&self) {
        self.messages.retain_recent();
        self.typing.retain_recent();
        self.rest.retain_recent();
        self.joins.retain_recent();
        self.messages.shrink_to_fit();
        self.typing.shrink_to_fit();
        self.rest.shrink_to_fit();
        self.joins.shrink_to_fit();
        self.secret_failures_by_ip.forget_idle();
        self.secret_failures_by_room.forget_idle();
        self.api_key_failures_by_ip.forget_idle();
    }
}

/// Open things (streams, connections) per client bucket.
#[derive(Default)]
struct Counts(Mutex<HashMap<IpAddr, usize>>);

impl Counts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one more for `ip` unless it already has `cap`.
    fn try_add(&self, ip: IpAddr, cap: usize) -> bool {
        let mut counts = self.lock();
        let open = counts.entry(ip).or_insert(0);
        if *open >= cap {
            return false;
        }
        *open += 1;
        true
    }

    fn remove(&self, ip: IpAddr) {
        let mut counts = self.lock();
        if let Some(open) = counts.get_mut(&ip) {
            *open -= 1;
            if *open == 0 {
                counts.remove(&ip);
            }
        }
    }
}

/// Failures counted per key (governor's GCRA, `count` per minute); the failure that finds the
/// quota spent locks the key until the quota would admit one again. The burst is one less
/// than `count`, so that failure is the `count`-th (GCRA cannot be asked whether a cell is
/// left without taking it). Only failures count, so members who know the secret are never
/// slowed by their own joins.
struct Lockouts<K: Clone + Eq + std::hash::Hash> {
    failures: DefaultKeyedRateLimiter<K>,
    locked_until: Mutex<HashMap<K, Instant>>,
}

impl<K: Clone + Eq + std::hash::Hash> Lockouts<K> {
    fn per_minute(rate: NonZeroU32) -> Self {
        let burst = NonZeroU32::new(rate.get() - 1).unwrap_or(NonZeroU32::MIN);
        Self {
            failures: DefaultKeyedRateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst)),
            locked_until: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Instant>> {
        self.locked_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How long `key` stays locked, if it is.
    fn locked_for(&self, key: &K) -> Option<Duration> {
        let until = *self.lock().get(key)?;
        until.checked_duration_since(Instant::now())
    }

    fn strike(&self, key: K) {
        if let Err(not_until) = self.failures.check_key(&key) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            self.lock().insert(key, Instant::now() + wait);
        }
    }

    fn forget_idle(&self) {
        self.failures.retain_recent();
        self.failures.shrink_to_fit();
        let now = Instant::now();
        self.lock().retain(|_, until| *until > now);
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
        self.limits.streams_per_ip.remove(self.ip);
        if self.websocket {
            self.limits.websockets.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One plain HTTP connection (or request in flight) of a client; dropping it frees the slot.
pub struct HttpSlot {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Drop for HttpSlot {
    fn drop(&mut self) {
        self.limits.http_per_ip.remove(self.ip);
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
    use http::HeaderValue;

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
    fn ipv6_clients_share_their_64_and_mapped_ipv4_is_ipv4() {
        let bucket = |raw: &str| client_bucket(raw.parse().unwrap());
        assert_eq!(
            bucket("2001:db8:1:2:aaaa::1"),
            bucket("2001:db8:1:2:ffff:1:2:3")
        );
        assert_eq!(bucket("2001:db8:1:2::9"), bucket("2001:db8:1:2::"));
        assert_ne!(bucket("2001:db8:1:2::1"), bucket("2001:db8:1:3::1"));
        assert_eq!(bucket("::ffff:203.0.113.7"), bucket("203.0.113.7"));
        assert_ne!(bucket("203.0.113.7"), bucket("203.0.113.8"));
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
