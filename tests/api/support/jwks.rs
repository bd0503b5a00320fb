//! An identity provider for the JWT tests: signing keys generated here (RSA 2048 and P-256),
//! a JSON Web Key Set served on a loopback port that counts its requests and can be rotated,
//! and tokens minted with any claims, header or signature a test needs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub const ISSUER: &str = "https://securetoken.google.com/chat-tests";
pub const AUDIENCE: &str = "chat-tests";

/// A private key, its `kid`, and its public JWK.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    pub jwk: Value,
    /// The public key's DER (for the HS256-with-the-public-key forgery).
    pub public_der: Vec<u8>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// RSA keys take a while to generate: each test binary makes these few once.
fn rsa_key(index: usize) -> rsa::RsaPrivateKey {
    static KEYS: OnceLock<Vec<rsa::RsaPrivateKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (0..2)
            .map(|_| {
                rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
                    .expect("generating an RSA key")
            })
            .collect()
    })[index]
        .clone()
}

impl SigningKey {
    /// An RS256 key; `index` 0 or 1 picks one of two distinct key pairs.
    pub fn rsa(kid: &str, index: usize) -> Self {
        use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
        use rsa::traits::PublicKeyParts;
        let key = rsa_key(index);
        let der = key.to_pkcs1_der().expect("RSA key to DER");
        let public = key.to_public_key();
        Self {
            kid: kid.to_owned(),
            algorithm: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                "n": b64(&public.n().to_bytes_be()), "e": b64(&public.e().to_bytes_be())}),
            public_der: public
                .to_pkcs1_der()
                .expect("RSA public key to DER")
                .as_bytes()
                .to_vec(),
        }
    }

    /// An ES256 key (P-256), fresh.
    pub fn ec(kid: &str) -> Self {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        use p256::pkcs8::EncodePrivateKey;
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let der = secret.to_pkcs8_der().expect("EC key to DER");
        let point = secret.public_key().to_encoded_point(false);
        Self {
            kid: kid.to_owned(),
            algorithm: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(der.as_bytes()),
            jwk: json!({"kty": "EC", "kid": kid, "crv": "P-256",
                "x": b64(point.x().expect("an uncompressed point has x")),
                "y": b64(point.y().expect("an uncompressed point has y"))}),
            public_der: point.as_bytes().to_vec(),
        }
    }

    /// A token signed with this key under its `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signing a token")
    }

    /// A token signed with this key but naming `kid` in its header.
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signing a token")
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Valid claims for `name`, as Firebase issues them.
pub fn claims(name: &str) -> Value {
    let now = now();
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": format!("uid-{name}"), "user_id": format!("uid-{name}"),
        "name": name, "iat": now, "auth_time": now, "exp": now + 3600})
}

/// `claims` with `changes` merged in (`null` removes a claim).
pub fn claims_with(name: &str, changes: Value) -> Value {
    let mut claims = claims(name);
    for (key, value) in changes.as_object().expect("changes are an object") {
        if value.is_null() {
            claims
                .as_object_mut()
                .expect("claims are an object")
                .remove(key);
        } else {
            claims[key] = value.clone();
        }
    }
    claims
}

/// `header.claims.signature` from raw parts (for `alg: none` and HS256 forgeries).
pub fn raw_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(signature)
    )
}

/// The JWKS server.
pub struct Provider {
    /// `AUTH_JWKS_URL`.
    pub url: String,
    published: Arc<Mutex<Vec<Value>>>,
    hits: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Provider {
    /// Serves `keys` on a fresh loopback port until dropped.
    pub async fn start(keys: &[&SigningKey]) -> Self {
        let published = Arc::new(Mutex::new(Vec::new()));
        let hits = Arc::new(AtomicUsize::new(0));
        let (serve_published, serve_hits) = (published.clone(), hits.clone());
        let app = Router::new().route(
            "/jwks",
            get(move || {
                let (published, hits) = (serve_published.clone(), serve_hits.clone());
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let keys = published.lock().expect("JWKS lock").clone();
                    (
                        [("cache-control", "public, max-age=3600")],
                        axum::Json(json!({ "keys": keys })),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the JWKS server");
        let url = format!(
            "http://{}/jwks",
            listener.local_addr().expect("its address")
        );
        let stop = CancellationToken::new();
        let stopped = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
        });
        let provider = Self {
            url,
            published,
            hits,
            stop,
        };
        provider.publish(keys);
        provider
    }

    /// Publishes exactly `keys` from now on.
    pub fn publish(&self, keys: &[&SigningKey]) {
        *self.published.lock().expect("JWKS lock") =
            keys.iter().map(|key| key.jwk.clone()).collect();
    }

    /// How many times the key set was fetched.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The variables that make an app require this provider's tokens.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AUTH_JWKS_URL", self.url.clone()),
            ("AUTH_ISSUER", ISSUER.to_owned()),
            ("AUTH_AUDIENCE", AUDIENCE.to_owned()),
        ]
    }
}
