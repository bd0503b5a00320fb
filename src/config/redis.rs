//! The store: Redis, or the in-memory store when no URL is given.

use std::num::NonZeroU64;
use std::time::Duration;

use super::values::RedisUrl;

section! {
    /// Which store, and how long a Redis command may take.
    pub struct Redis {
        /// Unset: the in-memory store (one instance, nothing survives a restart).
        pub redis_url: Option<RedisUrl> = None,
        /// Every Redis command gives up after this long, and the request gets 503.
        pub redis_timeout_ms: NonZeroU64 = nonzero!(2000),
    }
}

impl Redis {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms.get())
    }
}
