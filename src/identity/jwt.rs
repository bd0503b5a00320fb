//! The JWT check itself: the header's `kid` finds the key, the key's pinned algorithm must be
//! the header's, then jsonwebtoken verifies the signature and `iss`, `aud`, `exp`, `nbf` with
//! 60 s of leeway (clocks drift; a minute is what Firebase's own SDKs allow). Any failure is
//! `None`: the caller answers every one the same way.

use jsonwebtoken::{Validation, decode, decode_header};
use serde_json::{Map, Value};

use super::jwks::{Fetch, KeySet};
use crate::config::JwtSettings;

/// Clock skew allowed on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 60;
/// The longest token looked at; an ID token is about 1 KiB.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

pub struct Verifier {
    keys: KeySet,
    issuer: String,
    audience: String,
    username_claim: Option<String>,
    rooms_claim: Option<String>,
}

impl Verifier {
    pub fn new(settings: &JwtSettings, fetch: Box<dyn Fetch>) -> Self {
        Self {
            keys: KeySet::new(fetch),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            username_claim: settings.username_claim.clone(),
            rooms_claim: settings.rooms_claim.clone(),
        }
    }

    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    pub fn username_claim(&self) -> Option<&str> {
        self.username_claim.as_deref()
    }

    pub fn rooms_claim(&self) -> Option<&str> {
        self.rooms_claim.as_deref()
    }

    /// The token's claims, if it is valid; `None` whatever the reason it is not.
    pub async fn verify(&self, token: &str) -> Option<Map<String, Value>> {
        if token.len() > MAX_TOKEN_BYTES {
            return None;
        }
        // `alg: none` and unknown algorithms fail here (jsonwebtoken has no `none`).
        let header = decode_header(token).ok()?;
        let key = self.keys.key(header.kid.as_deref()?).await?;
        if header.alg != key.algorithm {
            return None;
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        decode::<Map<String, Value>>(token, &key.decoding, &validation)
            .ok()
            .map(|data| data.claims)
    }
}
