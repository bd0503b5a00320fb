//! The store: Redis (one server, or a cluster with `REDIS_CLUSTER=true`), or the in-memory
//! store when no URL is given; and the one place the Redis client is built from `REDIS_URL`
//! and `REDIS_TLS_VERIFY`.
//!
//! TLS (`rediss://`): the roots are the platform's, which rustls-native-certs reads from
//! `SSL_CERT_FILE` when it is set (how a private CA such as Memorystore's is trusted).
//! `REDIS_TLS_VERIFY=full` (the default) checks the chain to those roots and that the URL's
//! host is one of the certificate's names. Memorystore's certificate names its IP only in the
//! subject's CN, with no subjectAltName, and webpki matches an IP only against IP SANs, so
//! under `full` it never connects. `chain` still checks the chain (signatures, validity dates,
//! the server-auth purpose, against the same roots) and skips only the name check: any
//! certificate those roots signed is accepted for any host. That is sound when the roots are
//! the instance's own CA (Memorystore issues one per instance, and it signs only that
//! instance's certificates); with the public roots it would accept any site's certificate, so
//! `chain` belongs with an `SSL_CERT_FILE` of a private CA.
//!
//! `chain` is redis-rs's own `danger_accept_invalid_hostnames` (feature `tls-rustls-insecure`):
//! a `ServerCertVerifier` around rustls' `WebPkiServerVerifier`, built from the roots redis-rs
//! loads anyway, which turns exactly `CertificateError::NotValidForName` /
//! `NotValidForNameContext` into success; every other error (unknown issuer, expired, bad
//! signature) still fails. webpki checks the name last, after the chain, so that error means the
//! chain was good; the TLS 1.2 and 1.3 handshake signatures are checked by the inner verifier.
//! redis-rs takes no `rustls::ClientConfig` or verifier of ours (its TLS parameters cannot be
//! built outside the crate), so this is the way in. The same feature makes a `#insecure` URL
//! skip every check; [`RedisUrl`] refuses that fragment.

use std::num::NonZeroU64;
use std::time::Duration;

use super::values::{Bounded, RedisTlsVerify, RedisUrl};

section! {
    /// Which store, how long a Redis command may take, and how its TLS certificate is checked.
    pub struct Redis {
        /// Unset: the in-memory store (one instance, nothing survives a restart).
        pub redis_url: Option<RedisUrl> = None,
        /// `true`: `REDIS_URL` lists seed nodes of a Redis Cluster (sharded pub/sub).
        pub redis_cluster: bool = false,
        /// Every Redis command gives up after this long, and the request gets 503.
        pub redis_timeout_ms: NonZeroU64 = nonzero!(2000),
        /// `full`: chain and host name; `chain`: the chain only (Memorystore). Only `rediss://`.
        pub redis_tls_verify: RedisTlsVerify = RedisTlsVerify::Full,
        /// A write is acknowledged only once this many replicas hold it (`WAIT`); 0: off.
        pub redis_wait_replicas: Bounded<0, 16> = Bounded::new(0),
        /// How long a write waits for `REDIS_WAIT_REPLICAS`; then the request gets 503. `WAIT`
        /// takes 0 as "forever", which a request must never do, so 0 is refused.
        pub redis_wait_timeout_ms: Bounded<1, 60_000> = Bounded::new(500),
    }
}

impl Redis {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms.get())
    }

    /// What `REDIS_WAIT_REPLICAS` and `REDIS_WAIT_TIMEOUT_MS` ask of every acknowledged write.
    pub fn durability(&self) -> Durability {
        Durability {
            replicas: self.redis_wait_replicas.get(),
            timeout: Duration::from_millis(self.redis_wait_timeout_ms.get()),
        }
    }

    /// How to reach `REDIS_URL`, checking certificates as `REDIS_TLS_VERIFY` says; `None`
    /// without a URL.
    pub fn target(&self) -> Option<redis::RedisResult<RedisTarget>> {
        let url = self.redis_url.as_ref()?;
        if !self.redis_cluster {
            return Some(
                self.client(url)
                    .map(|client| RedisTarget::Single(Box::new(client))),
            );
        }
        Some(url.seeds().map(|seeds| {
            RedisTarget::Cluster(ClusterSeeds {
                seeds,
                accept_invalid_hostnames: self.redis_tls_verify == RedisTlsVerify::Chain,
            })
        }))
    }

    fn client(&self, url: &RedisUrl) -> redis::RedisResult<redis::Client> {
        url.connection_info().and_then(|info| {
            let mut addr = info.addr().clone();
            // A no-op for `redis://`, which has no certificate.
            addr.set_danger_accept_invalid_hostnames(
                self.redis_tls_verify == RedisTlsVerify::Chain,
            );
            redis::Client::open(info.set_addr(addr))
        })
    }
}

/// A single Redis, or a cluster's seeds.
#[derive(Clone)]
pub enum RedisTarget {
    Single(Box<redis::Client>),
    Cluster(ClusterSeeds),
}

/// A cluster's seed nodes and TLS check. The store and the feed each build their own client
/// from it (the feed's with a push sender for its sharded subscriptions). The password, user
/// and TLS mode are the first seed's; redis-rs refuses seeds that differ in them.
#[derive(Clone)]
pub struct ClusterSeeds {
    seeds: Vec<redis::ConnectionInfo>,
    accept_invalid_hostnames: bool,
}

impl ClusterSeeds {
    /// A client builder on these seeds, with `REDIS_TLS_VERIFY` applied (a no-op for
    /// `redis://`).
    pub fn builder(&self) -> redis::cluster::ClusterClientBuilder {
        redis::cluster::ClusterClientBuilder::new(self.seeds.clone())
            .danger_accept_invalid_hostnames(self.accept_invalid_hostnames)
    }
}

/// Durable acks: how many replicas must hold a write before the client is told, and how long
/// to wait for them. `replicas == 0`: writes are acknowledged as Redis makes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durability {
    pub replicas: u64,
    pub timeout: Duration,
}
