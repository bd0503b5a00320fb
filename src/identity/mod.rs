//! Identity: who may join, when the app brings its own users (`AUTH_JWKS_URL`,
//! `AUTH_ISSUER`, `AUTH_AUDIENCE`). A join then carries a JWT from the app's identity
//! provider (Firebase Authentication, Identity Platform, any OpenID Connect issuer), and the
//! username is the token's, not the client's choice. With the variables unset this module
//! only passes the client's username through: anonymous names, as before.
//!
//! The decisions:
//! - Every failure of the token itself (absent, malformed, unknown key, wrong algorithm, bad
//!   signature, wrong `iss` / `aud`, expired, not yet valid) is the one
//!   [`ApiError::SignInRequired`]: a client learns nothing about which check failed, and the
//!   browser client knows from that one answer to ask the app for a token.
//! - A valid token that cannot make a join is `forbidden`, with the reason: its name is not a
//!   valid username (the app must fix the user's name, so a silent truncation or a made-up
//!   name would be worse), a `username` sent alongside is another name, or the room is not
//!   among the user's `AUTH_ROOMS_CLAIM` rooms.
//! - The JWT is a bearer credential: [`IdToken`] hides it from `Debug`, and nothing here logs
//!   or records it (nor any claim).

mod jwks;
mod jwt;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

pub use jwks::{Fetch, FetchError, Fetched, HttpFetch, KeySet, REFETCH_INTERVAL};
pub use jwt::Verifier;

use crate::config::JwtSettings;
use crate::domain::{RoomId, Username};
use crate::error::ApiError;

/// A JWT as a client presented it. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct IdToken(String);

impl IdToken {
    pub fn presented(raw: &str) -> Self {
        Self(raw.trim().to_owned())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdToken(<redacted>)")
    }
}

/// Who asks to join: the name the client sent (if any) and the JWT it presented (if any).
#[derive(Debug, Default)]
pub struct Joiner {
    pub username: Option<Username>,
    pub id_token: Option<IdToken>,
}

/// Whether joins need a JWT, and the verifier when they do. Cheap to clone.
#[derive(Clone, Default)]
pub struct Identity(Option<Arc<Verifier>>);

/// A join without a name and without identity: what the event decoder said when the field
/// was required (REST's anonymous body still requires it, with its own words).
const MISSING_USERNAME: &str = "invalid event data: missing field `username`";

/// The claims the username is taken from when `AUTH_USERNAME_CLAIM` is unset, in order.
const DEFAULT_USERNAME_CLAIMS: [&str; 3] = ["name", "email", "sub"];

impl Identity {
    /// Anonymous names: the client's username is the member's.
    pub fn anonymous() -> Self {
        Self(None)
    }

    pub fn new(verifier: Verifier) -> Self {
        Self(Some(Arc::new(verifier)))
    }

    /// From the configuration: `None` is anonymous.
    pub fn from_settings(settings: Option<JwtSettings>) -> Result<Self, FetchError> {
        match settings {
            None => Ok(Self::anonymous()),
            Some(settings) => {
                let fetch = HttpFetch::new(settings.jwks_url.as_str())?;
                Ok(Self::new(Verifier::new(&settings, Box::new(fetch))))
            }
        }
    }

    /// Whether a join needs a JWT.
    pub fn required(&self) -> bool {
        self.0.is_some()
    }

    /// The verifier in force, if any (tests shorten its refetch interval through it).
    pub fn verifier(&self) -> Option<&Verifier> {
        self.0.as_deref()
    }

    /// The username `joiner` joins `room` under: its own (anonymous), or its token's.
    pub async fn username_for(&self, room: &RoomId, joiner: Joiner) -> Result<Username, ApiError> {
        let Some(verifier) = &self.0 else {
            return joiner
                .username
                .ok_or_else(|| ApiError::invalid(MISSING_USERNAME));
        };
        let token = joiner.id_token.ok_or(ApiError::SignInRequired)?;
        let claims = verifier
            .verify(token.expose())
            .await
            .ok_or(ApiError::SignInRequired)?;
        let username = username_from(&claims, verifier.username_claim())?;
        if let Some(sent) = joiner.username
            && sent.key() != username.key()
        {
            return Err(ApiError::forbidden(
                "username must be left out or equal the name of the signed-in user",
            ));
        }
        if let Some(claim) = verifier.rooms_claim()
            && !room_allowed(&claims, claim, room)
        {
            return Err(ApiError::forbidden(
                "the signed-in user may not create or join this room",
            ));
        }
        Ok(username)
    }

    /// Tests only: a shorter interval than [`REFETCH_INTERVAL`] between JWKS reads, so a
    /// rotation can be tested without waiting half a minute.
    #[doc(hidden)]
    pub fn set_refetch_interval_for_tests(&self, interval: Duration) {
        if let Some(verifier) = &self.0 {
            verifier.keys().set_refetch_interval(interval);
        }
    }
}

/// The username from the token's claims: `claim`, or the first of name, email and sub that is
/// a non-empty string. A claim that is not a valid username is `forbidden` (see the module
/// doc).
fn username_from(
    claims: &serde_json::Map<String, Value>,
    claim: Option<&str>,
) -> Result<Username, ApiError> {
    let text_of = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .filter(|text| !text.trim().is_empty())
    };
    let found = match claim {
        Some(name) => text_of(name),
        None => DEFAULT_USERNAME_CLAIMS.into_iter().find_map(text_of),
    };
    let Some(raw) = found else {
        return Err(ApiError::forbidden(
            "the signed-in user has no name to join with (AUTH_USERNAME_CLAIM)",
        ));
    };
    Username::parse(raw).map_err(|_| {
        ApiError::forbidden(
            "the signed-in user's name is not a valid username (1-32 visible characters)",
        )
    })
}

/// Whether the rooms claim names `room` or `*`. The claim is a list of room ids, or one id;
/// absent or of another type, it allows no room.
fn room_allowed(claims: &serde_json::Map<String, Value>, claim: &str, room: &RoomId) -> bool {
    let allows = |entry: &Value| {
        entry
            .as_str()
            .is_some_and(|entry| entry == "*" || entry == room.as_str())
    };
    match claims.get(claim) {
        Some(Value::Array(entries)) => entries.iter().any(allows),
        Some(single @ Value::String(_)) => allows(single),
        _ => false,
    }
}
