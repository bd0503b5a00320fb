//! Identity (JWT joins): where the app's identity provider publishes its keys and what its
//! tokens must say. The three `AUTH_JWKS_URL`, `AUTH_ISSUER`, `AUTH_AUDIENCE` come together or
//! not at all (checked in `Config::from_vars`): a partial set would either turn identity off
//! silently or refuse every join, so it stops the server at start instead.

use super::values::JwksUrl;

section! {
    /// JWT joins; all unset: anonymous names, as without this section.
    pub struct Auth {
        /// The provider's JSON Web Key Set: `https://`, or `http://` on a loopback address.
        pub auth_jwks_url: Option<JwksUrl> = None,
        /// The `iss` every token must carry, e.g. `https://securetoken.google.com/<project>`.
        pub auth_issuer: Option<String> = None,
        /// The `aud` every token must carry, e.g. the Firebase project id.
        pub auth_audience: Option<String> = None,
        /// The claim the username is read from; unset: `name`, else `email`, else `sub`.
        pub auth_username_claim: Option<String> = None,
        /// The claim listing the rooms a user may create or join (`*` for all); unset: any.
        pub auth_rooms_claim: Option<String> = None,
    }
}

/// The identity settings in force, when the three required variables are set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    pub jwks_url: JwksUrl,
    pub issuer: String,
    pub audience: String,
    pub username_claim: Option<String>,
    pub rooms_claim: Option<String>,
}

impl Auth {
    /// The required variables that are unset while another auth variable is set: empty when
    /// all are set or none is.
    pub fn missing(&self) -> Vec<&'static str> {
        let required = [
            ("AUTH_JWKS_URL", self.auth_jwks_url.is_some()),
            ("AUTH_ISSUER", self.auth_issuer.is_some()),
            ("AUTH_AUDIENCE", self.auth_audience.is_some()),
        ];
        let any = required.iter().any(|(_, set)| *set)
            || self.auth_username_claim.is_some()
            || self.auth_rooms_claim.is_some();
        if !any {
            return Vec::new();
        }
        required
            .into_iter()
            .filter(|(_, set)| !set)
            .map(|(name, _)| name)
            .collect()
    }

    /// JWT joins, or `None`: anonymous names. Only a configuration `Config::from_vars`
    /// accepted has no partial set.
    pub fn jwt(&self) -> Option<JwtSettings> {
        Some(JwtSettings {
            jwks_url: self.auth_jwks_url.clone()?,
            issuer: self.auth_issuer.clone()?,
            audience: self.auth_audience.clone()?,
            username_claim: self.auth_username_claim.clone(),
            rooms_claim: self.auth_rooms_claim.clone(),
        })
    }
}
