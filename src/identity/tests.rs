//! The key set's refresh rules on paused time (rotation, staleness, the flood of unknown key
//! ids, a provider's outage), which keys are kept with which algorithm, and how the username
//! and the rooms claim are read. Signatures and the transports are tested end to end in
//! `tests/api/jwt.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::jwks::{Fetch, FetchError, Fetched, KeySet, max_age_of};
use super::*;

/// A JWKS "server": the body it answers now, how many times it was asked, whether it fails.
#[derive(Clone, Default)]
struct FakeProvider {
    body: Arc<Mutex<serde_json::Value>>,
    max_age: Arc<Mutex<Option<Duration>>>,
    failing: Arc<Mutex<bool>>,
    fetches: Arc<AtomicUsize>,
}

impl FakeProvider {
    fn serving(kids: &[&str]) -> Self {
        let provider = Self::default();
        provider.serve(kids);
        provider
    }

    fn serve(&self, kids: &[&str]) {
        // Any base64url decodes into an RSA key here; only signatures would tell (they are
        // tested end to end).
        let keys: Vec<_> = kids
            .iter()
            .map(|kid| json!({"kty": "RSA", "kid": kid, "n": "AQAB", "e": "AQAB"}))
            .collect();
        *self.body.lock().unwrap() = json!({ "keys": keys });
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Fetch for FakeProvider {
    fn fetch(
        &self,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Fetched, FetchError>> + Send + '_>> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let result = if *self.failing.lock().unwrap() {
            Err(FetchError::Status(503))
        } else {
            Ok(Fetched {
                body: serde_json::to_vec(&*self.body.lock().unwrap()).unwrap(),
                max_age: *self.max_age.lock().unwrap(),
            })
        };
        Box::pin(std::future::ready(result))
    }
}

fn key_set(provider: &FakeProvider) -> KeySet {
    KeySet::new(Box::new(provider.clone()))
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_unknown_kids_reads_the_set_once_per_interval() {
    let provider = FakeProvider::serving(&["k1"]);
    let keys = Arc::new(key_set(&provider));
    let lookups: Vec<_> = (0..100)
        .map(|n| {
            let keys = keys.clone();
            tokio::spawn(async move { keys.key(&format!("made-up-{n}")).await.is_some() })
        })
        .collect();
    for lookup in lookups {
        assert!(!lookup.await.unwrap(), "a made-up kid found a key");
    }
    assert_eq!(provider.fetches(), 1, "100 unknown kids at once: one fetch");
    tokio::time::advance(REFETCH_INTERVAL - Duration::from_secs(1)).await;
    assert!(keys.key("made-up-again").await.is_none());
    assert_eq!(provider.fetches(), 1, "within the interval: no fetch");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(keys.key("made-up-later").await.is_none());
    assert_eq!(provider.fetches(), 2, "after the interval: one more");
    assert!(keys.key("k1").await.is_some(), "known keys stay usable");
    assert_eq!(provider.fetches(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_rotation_is_picked_up_and_removed_keys_go() {
    let provider = FakeProvider::serving(&["old"]);
    let keys = key_set(&provider);
    assert!(keys.key("old").await.is_some());
    // The provider publishes the next key, signs with it, and drops the old one.
    provider.serve(&["new"]);
    tokio::time::advance(REFETCH_INTERVAL).await;
    assert!(keys.key("new").await.is_some(), "the new key is fetched");
    assert_eq!(provider.fetches(), 2);
    assert!(
        keys.key("old").await.is_none(),
        "a key the provider dropped is gone"
    );
    assert_eq!(
        provider.fetches(),
        2,
        "and asking for it again within the interval is free"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stale_set_is_read_again_and_an_outage_keeps_the_keys_held() {
    let provider = FakeProvider::serving(&["k1"]);
    *provider.max_age.lock().unwrap() = Some(Duration::from_secs(120));
    let keys = key_set(&provider);
    assert!(keys.key("k1").await.is_some());
    tokio::time::advance(Duration::from_secs(119)).await;
    assert!(keys.key("k1").await.is_some());
    assert_eq!(provider.fetches(), 1, "fresh for max-age");
    tokio::time::advance(Duration::from_secs(1)).await;
    *provider.failing.lock().unwrap() = true;
    assert!(
        keys.key("k1").await.is_some(),
        "the provider is down: the key held still works"
    );
    assert_eq!(provider.fetches(), 2, "stale: read again");
    assert!(keys.key("k1").await.is_some());
    assert_eq!(
        provider.fetches(),
        2,
        "a failed read counts against the interval too"
    );
}

#[test]
fn only_rs256_and_es256_signing_keys_are_kept_with_their_algorithm_pinned() {
    let rsa = json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"});
    let p256 = json!({"kty": "EC", "crv": "P-256",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
    let p384 = json!({"kty": "EC", "crv": "P-384", "x": "AQAB", "y": "AQAB"});
    let with = |base: &serde_json::Value, extra: serde_json::Value| {
        let mut key = base.as_object().unwrap().clone();
        key.extend(extra.as_object().unwrap().clone());
        serde_json::Value::Object(key)
    };
    let document = json!({"keys": [
        with(&rsa, json!({"kid": "rsa"})),
        with(&rsa, json!({"kid": "rsa-alg", "alg": "RS256", "use": "sig"})),
        with(&p256, json!({"kid": "ec"})),
        with(&rsa, json!({"kid": "rsa-enc", "use": "enc"})),
        with(&rsa, json!({"kid": "rsa-ps", "alg": "PS256"})),
        with(&rsa, json!({"kid": "rsa-says-es", "alg": "ES256"})),
        with(&p384, json!({"kid": "ec-384"})),
        json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
        json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
        json!({"kid": "garbage"}),
    ]});
    let keys = super::jwks::parse_key_set(document.to_string().as_bytes()).unwrap();
    let mut kept: Vec<_> = keys
        .iter()
        .map(|(kid, key)| (kid.as_str(), key.algorithm))
        .collect();
    kept.sort_by_key(|(kid, _)| *kid);
    use jsonwebtoken::Algorithm::{ES256, RS256};
    assert_eq!(kept, [("ec", ES256), ("rsa", RS256), ("rsa-alg", RS256)]);
    assert!(super::jwks::parse_key_set(b"[1, 2]").is_none());
}

#[test]
fn max_age_is_read_from_cache_control() {
    assert_eq!(
        max_age_of("public, max-age=19800, must-revalidate, no-transform"),
        Some(Duration::from_secs(19_800))
    );
    assert_eq!(max_age_of("no-cache"), None);
    assert_eq!(max_age_of("max-age=soon"), None);
}

fn claims(value: serde_json::Value) -> serde_json::Map<String, Value> {
    value.as_object().unwrap().clone()
}

#[test]
fn the_username_is_name_else_email_else_sub_or_the_configured_claim() {
    let all = claims(json!({"name": " Ada L ", "email": "ada@example.com", "sub": "u1"}));
    assert_eq!(username_from(&all, None).unwrap().as_str(), "Ada L");
    let no_name = claims(json!({"name": "", "email": "ada@example.com", "sub": "u1"}));
    assert_eq!(
        username_from(&no_name, None).unwrap().as_str(),
        "ada@example.com"
    );
    let sub_only = claims(json!({"sub": "u1", "name": 7}));
    assert_eq!(username_from(&sub_only, None).unwrap().as_str(), "u1");
    assert_eq!(
        username_from(&all, Some("email")).unwrap().as_str(),
        "ada@example.com"
    );
    // A configured claim that is absent does not fall back.
    let err = username_from(&claims(json!({"name": "Ada"})), Some("nickname")).unwrap_err();
    assert_eq!(err.code(), "forbidden");
    // A name that is not a valid username is refused, not cut or replaced.
    let long = claims(json!({"name": "x".repeat(33)}));
    let err = username_from(&long, None).unwrap_err();
    assert_eq!(err.code(), "forbidden");
    assert!(err.to_string().contains("not a valid username"), "{err}");
    let err = username_from(&claims(json!({"name": "a\u{200b}"})), None).unwrap_err();
    assert_eq!(err.code(), "forbidden");
    assert!(username_from(&claims(json!({})), None).is_err());
}

#[test]
fn the_rooms_claim_lists_rooms_or_a_star() {
    let room = RoomId::parse("lobby").unwrap();
    for (value, allowed) in [
        (json!({"rooms": ["lobby", "dev"]}), true),
        (json!({"rooms": ["*"]}), true),
        (json!({"rooms": "*"}), true),
        (json!({"rooms": "lobby"}), true),
        (json!({"rooms": ["Lobby"]}), false),
        (json!({"rooms": []}), false),
        (json!({"rooms": {"lobby": true}}), false),
        (json!({"other": ["lobby"]}), false),
    ] {
        assert_eq!(
            room_allowed(&claims(value.clone()), "rooms", &room),
            allowed,
            "{value}"
        );
    }
}

#[tokio::test]
async fn without_identity_the_clients_name_is_the_members() {
    let identity = Identity::anonymous();
    assert!(!identity.required());
    let room = RoomId::parse("lobby").unwrap();
    let joiner = Joiner {
        username: Some(Username::parse("alice").unwrap()),
        id_token: Some(IdToken::presented("ignored")),
    };
    let username = identity.username_for(&room, joiner).await.unwrap();
    assert_eq!(username.as_str(), "alice");
    let err = identity
        .username_for(&room, Joiner::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_request");
}

#[tokio::test]
async fn every_bad_token_gets_the_same_answer() {
    let settings = crate::config::JwtSettings {
        jwks_url: serde_json::from_value(json!("http://127.0.0.1:9/jwks")).unwrap(),
        issuer: "https://issuer.example".into(),
        audience: "app".into(),
        username_claim: None,
        rooms_claim: None,
    };
    let provider = FakeProvider::serving(&["k1"]);
    let identity = Identity::new(Verifier::new(&settings, Box::new(provider.clone())));
    let room = RoomId::parse("lobby").unwrap();
    let mut answers = Vec::new();
    for token in [
        None,
        Some(""),
        Some("not.a.jwt"),
        // {"alg":"none"}.{}.
        Some("eyJhbGciOiJub25lIn0.e30."),
        // {"alg":"RS256","kid":"k1"}.{}.AAAA: a known key, a signature that is not one.
        Some("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.e30.AAAA"),
        // {"alg":"HS256","kid":"k1"}.{}.AAAA: an algorithm other than the key's.
        Some("eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIn0.e30.AAAA"),
    ] {
        let joiner = Joiner {
            username: None,
            id_token: token.map(IdToken::presented),
        };
        answers.push(identity.username_for(&room, joiner).await.unwrap_err());
    }
    assert!(
        answers.iter().all(|err| *err == ApiError::SignInRequired),
        "{answers:?}"
    );
    assert_eq!(answers[0].code(), "unauthorized");
    assert_eq!(
        format!("{:?}", IdToken::presented("eyJ.secret")),
        "IdToken(<redacted>)"
    );
}
