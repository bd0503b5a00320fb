//! What the server grants a client before trusting it: connections, time to send and to read,
//! CPU for secrets, which origins and which proxies it believes.

use std::num::{NonZeroU64, NonZeroUsize};

use super::values::AllowedOrigins;

section! {
    /// Connection caps, timeouts and trust.
    pub struct Hardening {
        /// Open connections per instance; beyond it new connections get 503.
        pub max_connections: NonZeroUsize = nonzero!(10_000),
        /// Plain HTTP connections (or, behind trusted proxies, requests in flight) per client
        /// address; never more than half of `MAX_CONNECTIONS` (see
        /// `Config::effective_max_http_connections_per_ip`). 256 leaves room for an office of
        /// browsers behind one NAT address (each keeps a few keep-alive connections) while
        /// one address holds at most 2.5% of a default instance.
        pub max_http_connections_per_ip: NonZeroUsize = nonzero!(256),
        /// A client must send its request headers within this long (slowloris).
        pub header_read_timeout_secs: NonZeroU64 = nonzero!(10),
        /// A request's whole body must arrive within this long (408 otherwise).
        pub request_body_timeout_secs: NonZeroU64 = nonzero!(15),
        /// A write to any client socket (HTTP, SSE, WebSocket) that cannot proceed for this
        /// long ends the connection: a client that stops reading cannot pin its task.
        pub write_timeout_secs: NonZeroU64 = nonzero!(10),
        /// Room-secret hashes (argon2id, 19 MiB each) computed at once; unset: one per CPU.
        pub secret_hash_concurrency: Option<NonZeroUsize> = None,
        /// How many proxies in front of the server append to `X-Forwarded-For`; the client IP
        /// is the entry they did not write. Unset: 1 on Cloud Run (`K_SERVICE` set), else 0
        /// (the peer address; `X-Forwarded-For` is ignored because anyone can write it).
        pub trusted_proxy_hops: Option<usize> = None,
        /// Origins allowed for CORS and WebSocket upgrades; unset: any origin.
        pub allowed_origins: Option<AllowedOrigins> = None,
    }
}

impl Hardening {
    /// Plain HTTP connections per client address: as configured, but at most half of the
    /// instance's connections, so one address can never hold the whole instance.
    pub fn effective_max_http_connections_per_ip(&self) -> usize {
        self.max_http_connections_per_ip
            .get()
            .min(self.max_connections.get() / 2)
            .max(1)
    }

    /// Room-secret hashes computed at once: as configured, else one per CPU.
    pub fn effective_secret_hash_concurrency(&self) -> usize {
        self.secret_hash_concurrency
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, NonZeroUsize::get)
    }

    /// The configured origins, if any.
    pub fn origins(&self) -> Option<Vec<String>> {
        self.allowed_origins.as_ref().map(AllowedOrigins::to_vec)
    }
}
