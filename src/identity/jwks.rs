//! The provider's signing keys: a JSON Web Key Set fetched over HTTPS, cached, and read again
//! when it is stale (its `Cache-Control: max-age`) or when a token names a key id it does not
//! hold (a rotation), at most once per [`REFETCH_INTERVAL`] whatever the tokens say: a flood of
//! made-up `kid`s costs the provider one request per interval, not one per token.
//!
//! One refresh at a time: the callers that miss wait on the refresh lock and then look again,
//! so a burst after a rotation is one fetch. A failed fetch keeps the keys held (a provider's
//! outage does not stop joins signed by known keys) and still counts against the interval.
//!
//! Only keys that can verify RS256 or ES256 are kept, each with its algorithm pinned: the
//! JWK's `alg`, or from its type (RSA: RS256; EC on P-256: ES256). A token whose header names
//! another algorithm than its key's is refused (no `none`, no HS256 "signed" with the public
//! key).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::time::Instant;

/// The least time between two reads of the key set (API.md: at most once per 30 s).
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// How long a key set is fresh when its response says nothing (`max-age`).
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);
/// The most a response's `max-age` is trusted: keys removed by the provider go within a day.
const LONGEST_MAX_AGE: Duration = Duration::from_secs(86_400);
/// A JWKS fetch gives up after this long (the join waiting on it answers 401).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest key set read (Firebase's is about 2 KiB).
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// A verification key and the one algorithm it verifies.
pub struct Key {
    pub algorithm: Algorithm,
    pub decoding: DecodingKey,
}

/// A key set's body as fetched, and how long it may be used.
pub struct Fetched {
    pub body: Vec<u8>,
    pub max_age: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot build the JWKS client")]
    Client,
    #[error("the JWKS request failed")]
    Request,
    #[error("the JWKS server answered {0}")]
    Status(u16),
    #[error("the JWKS is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
}

/// Where the key set comes from: HTTP in the server, a counter in the unit tests.
pub trait Fetch: Send + Sync {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Fetched, FetchError>> + Send + '_>>;
}

/// The keys held, and until when they are fresh.
#[derive(Default)]
struct Held {
    keys: HashMap<String, Arc<Key>>,
    fresh_until: Option<Instant>,
}

pub struct KeySet {
    fetch: Box<dyn Fetch>,
    /// Read on every join; written after a fetch. Never held across an await.
    held: RwLock<Held>,
    /// The refresh lock (one fetch at a time), holding when the last fetch started.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    /// [`REFETCH_INTERVAL`], in milliseconds; shorter only in tests.
    refetch_interval_ms: AtomicU64,
}

impl KeySet {
    pub fn new(fetch: Box<dyn Fetch>) -> Self {
        Self {
            fetch,
            held: RwLock::new(Held::default()),
            last_fetch: tokio::sync::Mutex::new(None),
            refetch_interval_ms: AtomicU64::new(REFETCH_INTERVAL.as_millis() as u64),
        }
    }

    pub fn set_refetch_interval(&self, interval: Duration) {
        let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        self.refetch_interval_ms.store(ms, Ordering::Relaxed);
    }

    fn refetch_interval(&self) -> Duration {
        Duration::from_millis(self.refetch_interval_ms.load(Ordering::Relaxed))
    }

    /// The key `kid` names: from the fresh set held, else after a refresh if one is allowed
    /// now, else from the set held however old.
    pub async fn key(&self, kid: &str) -> Option<Arc<Key>> {
        if let Some(key) = self.lookup(kid, true) {
            return Some(key);
        }
        let mut last_fetch = self.last_fetch.lock().await;
        // Whoever held the lock before may have fetched the key meanwhile.
        if let Some(key) = self.lookup(kid, true) {
            return Some(key);
        }
        let now = Instant::now();
        let allowed =
            last_fetch.is_none_or(|last| now.duration_since(last) >= self.refetch_interval());
        if allowed {
            *last_fetch = Some(now);
            self.refresh(now).await;
        }
        drop(last_fetch);
        self.lookup(kid, false)
    }

    fn lookup(&self, kid: &str, fresh_only: bool) -> Option<Arc<Key>> {
        let held = self
            .held
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if fresh_only && held.fresh_until.is_none_or(|until| Instant::now() >= until) {
            return None;
        }
        held.keys.get(kid).cloned()
    }

    async fn refresh(&self, now: Instant) {
        let fetched = match self.fetch.fetch().await {
            Ok(fetched) => fetched,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the JWKS; keeping the keys held");
                return;
            }
        };
        let Some(keys) = parse_key_set(&fetched.body) else {
            tracing::warn!("the JWKS is not a JSON key set; keeping the keys held");
            return;
        };
        if keys.is_empty() {
            tracing::warn!("the JWKS holds no RS256 or ES256 signing key with a kid");
        }
        let max_age = fetched
            .max_age
            .unwrap_or(DEFAULT_MAX_AGE)
            .clamp(self.refetch_interval(), LONGEST_MAX_AGE);
        let mut held = self
            .held
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *held = Held {
            keys,
            fresh_until: Some(now + max_age),
        };
    }
}

/// The usable keys of a JWKS document by `kid`; `None` when it is not one.
pub(super) fn parse_key_set(body: &[u8]) -> Option<HashMap<String, Arc<Key>>> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document = serde_json::from_slice(body).ok()?;
    // One key this crate cannot read (another type, a private field) must not cost the others.
    Some(
        document
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let key = usable_key(&jwk)?;
                Some((kid, Arc::new(key)))
            })
            .collect(),
    )
}

/// The key, with its pinned algorithm, if it verifies RS256 or ES256 signatures.
fn usable_key(jwk: &Jwk) -> Option<Key> {
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|usage| *usage != PublicKeyUse::Signature)
    {
        return None;
    }
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(params) if params.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        _ => return None,
    };
    let algorithm = match jwk.common.key_algorithm {
        None => by_type,
        Some(KeyAlgorithm::RS256) if by_type == Algorithm::RS256 => Algorithm::RS256,
        Some(KeyAlgorithm::ES256) if by_type == Algorithm::ES256 => Algorithm::ES256,
        Some(_) => return None,
    };
    let decoding = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key {
        algorithm,
        decoding,
    })
}

/// The key set over HTTP(S): our rustls (ring, the platform's roots), no redirects (a
/// redirect could lead an `https://` setting to plain HTTP), a timeout, a size cap.
pub struct HttpFetch {
    client: reqwest13::Client,
    url: String,
}

impl HttpFetch {
    pub fn new(url: &str) -> Result<Self, FetchError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        if added == 0 && url.starts_with("https://") {
            tracing::warn!("no trusted root certificates found: the JWKS cannot be fetched");
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|_| FetchError::Client)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let client = reqwest13::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest13::redirect::Policy::none())
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|_| FetchError::Client)?;
        Ok(Self {
            client,
            url: url.to_owned(),
        })
    }

    async fn get(&self) -> Result<Fetched, FetchError> {
        let mut response = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|_| FetchError::Request)?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        let max_age = response
            .headers()
            .get(reqwest13::header::CACHE_CONTROL)
            .and_then(|value| value.to_str().ok())
            .and_then(max_age_of);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|_| FetchError::Request)? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched { body, max_age })
    }
}

impl Fetch for HttpFetch {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Fetched, FetchError>> + Send + '_>> {
        Box::pin(self.get())
    }
}

/// `max-age=N` of a `Cache-Control` value.
pub fn max_age_of(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|directive| {
        let (name, value) = directive.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| value.trim().trim_matches('"').parse().ok())
            .flatten()
            .map(Duration::from_secs)
    })
}
