//! JWT joins (API.md, "Identity"): a JWKS server on loopback with keys made here; RS256 and
//! ES256 joins on every transport (REST, its SSE stream, `/ws`, socket.io by data and by
//! handshake); every rejected token answered with one identical 401; names and room claims;
//! rotation; a flood of unknown `kid`s; the JWT kept out of everything the server writes.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::jwks::{self, Provider, SigningKey, claims, claims_with, raw_token};
use crate::support::process::ServerProcess;
use crate::support::socketio::{SioClient, websocket_only};
use crate::support::stream::{SseClient, WsClient};
use crate::support::{Backend, Joined, TestApp, unique_room};

async fn app_for(provider: &Provider, backend: Backend<'_>, extra: &[(&str, &str)]) -> TestApp {
    let vars = provider.vars();
    let mut all: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    TestApp::spawn(backend, &all).await
}

/// `POST /rooms` with `jwt` as the Bearer token and `body`.
async fn rest_create(app: &TestApp, jwt: Option<&str>, body: Value) -> crate::support::Reply {
    app.send(app.request(Method::POST, "/rooms", jwt).json(&body))
        .await
}

async fn rest_join(
    app: &TestApp,
    room: &str,
    jwt: Option<&str>,
    body: Value,
) -> crate::support::Reply {
    let path = format!("/rooms/{room}/members");
    app.send(app.request(Method::POST, &path, jwt).json(&body))
        .await
}

/// Creates and joins on REST (RS256 and ES256), then streams with SSE; `/ws` and socket.io
/// join with `idToken`.
async fn joins_on_every_transport(backend: Backend<'_>) {
    let rsa = SigningKey::rsa("rsa-1", 0);
    let ec = SigningKey::ec("ec-1");
    let provider = Provider::start(&[&rsa, &ec]).await;
    let app = app_for(&provider, backend, &[]).await;
    let room = unique_room("jwt");

    // REST create, RS256, no username: the token's name.
    let created: Joined = rest_create(
        &app,
        Some(&rsa.sign(&claims("Ada"))),
        json!({"roomId": room}),
    )
    .await
    .expect_as(201);
    assert_eq!(created.username, "Ada");
    // REST join, ES256, with the same name as the token's (after normalisation).
    let joined: Joined = rest_join(
        &app,
        &room,
        Some(&ec.sign(&claims("Grace"))),
        json!({"username": " grace "}),
    )
    .await
    .expect_as(201);
    assert_eq!(
        joined.username, "Grace",
        "the token's form of the name is kept"
    );
    // SSE's join path: the REST join's member token opens the stream and sees the join.
    let mut sse = SseClient::open(app.request(
        Method::GET,
        &format!("/rooms/{room}/events?lastEventId={}", created.last_event_id),
        Some(&joined.token),
    ))
    .await;
    let event = sse.event().await;
    assert_eq!(event.event.as_deref(), Some("add:member:success"));
    assert_eq!(event.json()["username"], "Grace");
    // Member tokens work as before after a signed-in join.
    let posted = app
        .send(
            app.request(
                Method::POST,
                &format!("/rooms/{room}/messages"),
                Some(&created.token),
            )
            .json(&json!({"message": "hi"})),
        )
        .await;
    posted.expect(201);

    // `/ws`: create:room and add:member with `idToken`.
    let ws_room = unique_room("jwt-ws");
    let mut creator = WsClient::connect(&app.base_url).await;
    let ack = creator
        .ack(
            "create:room",
            "c1",
            json!({"roomId": ws_room, "idToken": ec.sign(&claims("Linus"))}),
        )
        .await;
    assert_eq!(ack["username"], "Linus");
    let mut member = WsClient::connect(&app.base_url).await;
    let ack = member
        .ack(
            "add:member",
            "a1",
            json!({"roomId": ws_room, "username": "Ken", "idToken": rsa.sign(&claims("Ken"))}),
        )
        .await;
    assert_eq!(ack["username"], "Ken");
    assert!(ack["token"].is_string());

    // socket.io: `idToken` in the data, then `auth.idToken` in the handshake.
    let mut by_data = SioClient::connect(&app.base_url, Some(websocket_only())).await;
    let ack = by_data
        .call(
            "add:member",
            json!({"roomId": ws_room, "idToken": rsa.sign(&claims("Barbara"))}),
        )
        .await;
    assert_eq!(ack["username"], "Barbara", "{ack}");
    let mut options = websocket_only();
    options["auth"] = json!({"idToken": ec.sign(&claims("Edsger"))});
    let mut by_handshake = SioClient::connect(&app.base_url, Some(options)).await;
    let ack = by_handshake
        .call("add:member", json!({"roomId": ws_room}))
        .await;
    assert_eq!(ack["username"], "Edsger", "{ack}");
    let anonymous = SioClient::connect(&app.base_url, Some(websocket_only())).await;
    let mut anonymous = anonymous;
    let refused = anonymous
        .call(
            "add:member",
            json!({"roomId": ws_room, "username": "Mallory"}),
        )
        .await;
    assert_eq!(refused["error"]["code"], "unauthorized", "{refused}");
    assert!(provider.hits() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_es256_joins_on_every_transport_memory() {
    joins_on_every_transport(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_es256_joins_on_every_transport_redis() {
    let server = crate::support::RedisServer::start();
    joins_on_every_transport(Backend::Redis(&server)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejected_token_gets_the_same_401() {
    let rsa = SigningKey::rsa("rsa-1", 0);
    let other_rsa = SigningKey::rsa("rsa-1", 1);
    let ec = SigningKey::ec("ec-1");
    let unpublished = SigningKey::ec("not-published");
    let provider = Provider::start(&[&rsa, &ec]).await;
    // Many joins from one address: the join limit would answer them first.
    let app = app_for(&provider, Backend::Memory, &[("RATE_LIMITS", "off")]).await;
    let now = jwks::now();
    let room = unique_room("jwt-401");
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("not a JWT", Some("not-a-jwt".into())),
        (
            "wrong issuer",
            Some(rsa.sign(&claims_with("Ada", json!({"iss": "https://evil.example"})))),
        ),
        (
            "wrong audience",
            Some(rsa.sign(&claims_with("Ada", json!({"aud": "other-app"})))),
        ),
        (
            "no audience",
            Some(rsa.sign(&claims_with("Ada", json!({"aud": null})))),
        ),
        (
            "expired beyond the leeway",
            Some(ec.sign(&claims_with("Ada", json!({"exp": now - 61})))),
        ),
        (
            "not yet valid beyond the leeway",
            Some(ec.sign(&claims_with("Ada", json!({"nbf": now + 120})))),
        ),
        (
            "no expiry",
            Some(rsa.sign(&claims_with("Ada", json!({"exp": null})))),
        ),
        ("bad signature", Some(other_rsa.sign(&claims("Ada")))),
        (
            "ES256 key claimed as RS256",
            Some(rsa.sign_as("ec-1", &claims("Ada"))),
        ),
        (
            "alg none",
            Some(raw_token(
                &json!({"alg": "none", "kid": "rsa-1", "typ": "JWT"}),
                &claims("Ada"),
                b"",
            )),
        ),
        (
            "HS256 signed with the public key",
            Some(hs256_with_public_key(&rsa)),
        ),
        ("unknown kid", Some(unpublished.sign(&claims("Ada")))),
    ];
    let mut bodies = Vec::new();
    for (case, token) in &cases {
        let reply = rest_create(&app, token.as_deref(), json!({"roomId": room})).await;
        reply
            .check_error(401, "unauthorized")
            .unwrap_or_else(|problem| panic!("{case}: {problem}"));
        bodies.push((case, reply.text.clone()));
        let reply = rest_join(&app, &room, token.as_deref(), json!({})).await;
        assert_eq!(reply.status, 401, "{case}: join");
        assert_eq!(reply.text, bodies[0].1, "{case}: join body");
    }
    for (case, body) in &bodies {
        assert_eq!(body, &bodies[0].1, "{case} is told apart from the others");
    }
    // `/ws` and socket.io answer the same error.
    let mut ws = WsClient::connect(&app.base_url).await;
    let mut first_ws_message = None;
    for (n, (case, token)) in cases.iter().enumerate() {
        let mut data = json!({"roomId": room});
        if let Some(token) = token {
            data["idToken"] = json!(token);
        }
        let reply = ws.call("create:room", &format!("c{n}"), data).await;
        assert_eq!(reply["event"], "error", "{case}: {reply}");
        assert_eq!(reply["data"]["code"], "unauthorized", "{case}");
        let message = reply["data"]["message"].clone();
        assert_eq!(
            first_ws_message.get_or_insert(message.clone()),
            &message,
            "{case}"
        );
    }
    let expected: Value = serde_json::from_str(&bodies[0].1).unwrap();
    assert_eq!(first_ws_message.unwrap(), expected["error"]["message"]);
    // Within the leeway, a token is still (or already) good.
    let edge = rsa.sign(&claims_with(
        "Ada",
        json!({"exp": now - 30, "nbf": now + 30}),
    ));
    let created: Joined = rest_create(&app, Some(&edge), json!({"roomId": room}))
        .await
        .expect_as(201);
    assert_eq!(created.username, "Ada");
    // The one unknown kid among many fetches did not flood the provider.
    assert_eq!(provider.hits(), 1, "one fetch for all of that");
}

/// A token whose header says HS256 and whose "signature" is an HMAC keyed with the RSA public
/// key: what a server that lets the token choose the algorithm would accept.
fn hs256_with_public_key(key: &SigningKey) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(key.kid.clone());
    let secret = jsonwebtoken::EncodingKey::from_secret(&key.public_der);
    jsonwebtoken::encode(&header, &claims("Ada"), &secret).expect("HS256 signing")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_name_is_the_tokens_and_room_claims_limit_rooms() {
    let rsa = SigningKey::rsa("rsa-1", 0);
    let provider = Provider::start(&[&rsa]).await;
    let app = app_for(&provider, Backend::Memory, &[("AUTH_ROOMS_CLAIM", "rooms")]).await;
    let allowed = unique_room("jwt-allowed");
    let other = unique_room("jwt-other");
    let ada = rsa.sign(&claims_with("Ada", json!({"rooms": [allowed]})));
    // Another name than the token's: forbidden.
    rest_create(
        &app,
        Some(&ada),
        json!({"roomId": allowed, "username": "Eve"}),
    )
    .await
    .expect_error(403, "forbidden");
    // A room outside the claim: forbidden, on REST and `/ws`.
    rest_create(&app, Some(&ada), json!({"roomId": other}))
        .await
        .expect_error(403, "forbidden");
    let mut ws = WsClient::connect(&app.base_url).await;
    ws.expect_error(
        "create:room",
        "c1",
        json!({"roomId": other, "idToken": ada}),
        "forbidden",
    )
    .await;
    // Inside it: created, with the token's name.
    let created: Joined = rest_create(
        &app,
        Some(&ada),
        json!({"roomId": allowed, "username": "ADA"}),
    )
    .await
    .expect_as(201);
    assert_eq!(created.username, "Ada");
    // `*` allows every room; no claim allows none.
    let star = rsa.sign(&claims_with("Grace", json!({"rooms": "*"})));
    rest_join(&app, &allowed, Some(&star), json!({}))
        .await
        .expect(201);
    let none = rsa.sign(&claims("Linus"));
    rest_join(&app, &allowed, Some(&none), json!({}))
        .await
        .expect_error(403, "forbidden");
    // A name that is no valid username is refused with a reason, not cut.
    let long = rsa.sign(&claims_with(&"x".repeat(33), json!({"rooms": "*"})));
    let reply = rest_join(&app, &allowed, Some(&long), json!({})).await;
    reply.expect_error(403, "forbidden");
    assert!(
        reply.error_message().contains("not a valid username"),
        "{}",
        reply.text
    );
    // Without `name`, `email`; the same user twice is the same name.
    let by_email = rsa.sign(&claims_with(
        "x",
        json!({"name": null, "email": "ken@example.com", "rooms": "*"}),
    ));
    let joined: Joined = rest_join(&app, &allowed, Some(&by_email), json!({}))
        .await
        .expect_as(201);
    assert_eq!(joined.username, "ken@example.com");
    rest_join(&app, &allowed, Some(&by_email), json!({}))
        .await
        .expect_error(409, "username_taken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_is_picked_up_and_unknown_kids_do_not_flood_the_provider() {
    let old = SigningKey::rsa("2026-old", 0);
    let new = SigningKey::ec("2026-new");
    let provider = Provider::start(&[&old]).await;
    let vars = provider.vars();
    let mut vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    vars.push(("RATE_LIMITS", "off"));
    const INTERVAL: Duration = Duration::from_millis(300);
    let app = TestApp::spawn_with(Backend::Memory, &vars, |app| {
        app.identity().set_refetch_interval_for_tests(INTERVAL);
    })
    .await;
    let room = unique_room("jwt-rotation");
    rest_create(
        &app,
        Some(&old.sign(&claims("Ada"))),
        json!({"roomId": room}),
    )
    .await
    .expect(201);
    assert_eq!(provider.hits(), 1);
    // The provider rotates: the new key is published, the old one dropped.
    provider.publish(&[&new]);
    // A burst of tokens naming kids the server does not hold, the new one among them: at most
    // one fetch per interval (here shortened from 30 s; the unit tests hold the 30 s).
    for n in 0..30 {
        let forged = new.sign_as(&format!("made-up-{n}"), &claims("Mallory"));
        rest_join(&app, &room, Some(&forged), json!({}))
            .await
            .expect_error(401, "unauthorized");
    }
    let hits_after_flood = provider.hits();
    assert!(
        hits_after_flood <= 3,
        "{hits_after_flood} fetches for 30 unknown kids"
    );
    // Once the interval has passed (time, not an event: nothing to await), the new key is
    // read on its first use and the old one is gone.
    tokio::time::sleep(INTERVAL).await;
    rest_join(&app, &room, Some(&new.sign(&claims("Grace"))), json!({}))
        .await
        .expect(201);
    rest_join(&app, &room, Some(&old.sign(&claims("Linus"))), json!({}))
        .await
        .expect_error(401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auth_variables_joins_are_anonymous_as_before() {
    let app = TestApp::spawn(Backend::Memory, &[]).await;
    let room = unique_room("anon");
    // A Bearer header on a join is ignored, a name is required, idToken alone is no name.
    let created: Joined = rest_create(
        &app,
        Some("whatever"),
        json!({"roomId": room, "username": "alice"}),
    )
    .await
    .expect_as(201);
    assert_eq!(created.username, "alice");
    let reply = rest_join(&app, &room, None, json!({})).await;
    reply.expect_error(400, "invalid_request");
    assert!(
        reply.error_message().contains("missing field `username`"),
        "{}",
        reply.text
    );
    let mut ws = WsClient::connect(&app.base_url).await;
    ws.expect_error(
        "add:member",
        "a",
        json!({"roomId": room, "idToken": "x"}),
        "invalid_request",
    )
    .await;
    let reply = ws.call("add:member", "b", json!({"roomId": room})).await;
    assert_eq!(
        reply["data"]["message"],
        "invalid event data: missing field `username`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwt_never_appears_in_anything_the_server_emits() {
    let rsa = SigningKey::rsa("rsa-1", 0);
    let provider = Provider::start(&[&rsa]).await;
    let vars = provider.vars();
    let mut all: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend([("RUST_LOG", "trace"), ("LOG_FORMAT", "json")]);
    let server = ServerProcess::start(&all).await;
    let client = reqwest::Client::new();
    let base = &server.base_url;
    let room = unique_room("jwt-secrets");
    let good = rsa.sign(&claims("Ada"));
    let bad = rsa.sign(&claims_with("Eve", json!({"aud": "other"})));
    let mut emitted = String::new();
    for (path, jwt, body) in [
        ("/rooms".to_owned(), &good, json!({"roomId": room})),
        (format!("/rooms/{room}/members"), &bad, json!({})),
    ] {
        let response = client
            .post(format!("{base}{path}"))
            .bearer_auth(jwt)
            .json(&body)
            .send()
            .await
            .unwrap();
        emitted.push_str(&response.text().await.unwrap());
    }
    let mut ws = WsClient::connect(base).await;
    let reply = ws
        .call("add:member", "a", json!({"roomId": room, "idToken": bad}))
        .await;
    emitted.push_str(&reply.to_string());
    let reply = ws
        .call(
            "add:member",
            "b",
            json!({"roomId": room, "idToken": rsa.sign(&claims("Grace"))}),
        )
        .await;
    emitted.push_str(&reply.to_string());
    emitted.push_str(
        &client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let log = server.log();
    assert!(
        log.contains("identity: joins need a JWT"),
        "the log is the server's: {log:.2000}"
    );
    for jwt in [&good, &bad] {
        let signature = jwt.rsplit('.').next().unwrap();
        for (what, text) in [("the log", &log), ("the replies and metrics", &emitted)] {
            assert!(!text.contains(jwt.as_str()), "a JWT is in {what}");
            assert!(!text.contains(signature), "a JWT's signature is in {what}");
        }
    }
}
