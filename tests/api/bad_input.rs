//! A table of malformed requests, on both stores. Each row names the exact status and error
//! code API.md gives it; every reply must also have exactly the error body shape
//! `{"error": {"code", "message"}}`, never be a 5xx, and never echo a presented token. All rows
//! run before anything is asserted, so one run reports every mismatch.

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};

use crate::support::{TestApp, unique_room};

const JSON: &str = "application/json";
/// API.md: request bodies are at most 64 KiB.
const OVER_BODY_LIMIT: usize = 64 * 1024 + 1;

/// Who a request claims to be.
#[derive(Clone, Copy)]
enum Auth {
    Nobody,
    /// A member of the room under test.
    Alice,
    /// Another member of the room under test.
    Bob,
    /// A member of another room.
    Foreign,
    /// Alice's token under another scheme, e.g. `Basic <token>`.
    AliceWithScheme(&'static str),
    /// Alice's token alone, without a scheme.
    AliceBare,
    /// This exact header value.
    Header(&'static str),
}

enum Body {
    Empty,
    /// Sent with a Content-Length.
    Bytes(Vec<u8>),
    /// Sent chunked, without a Content-Length.
    Chunked(Vec<u8>),
}

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    auth: Auth,
    content_type: Option<&'static str>,
    body: Body,
    idempotency_key: Option<Vec<u8>>,
    status: u16,
    code: &'static str,
}

fn case(name: &'static str, method: Method, path: impl Into<String>) -> Case {
    Case {
        name,
        method,
        path: path.into(),
        auth: Auth::Nobody,
        content_type: None,
        body: Body::Empty,
        idempotency_key: None,
        status: 0,
        code: "",
    }
}

impl Case {
    /// A body sent as `application/json`.
    fn json(self, body: impl Into<String>) -> Self {
        self.raw(JSON, body.into().into_bytes())
    }

    fn raw(mut self, content_type: &'static str, body: Vec<u8>) -> Self {
        self.content_type = Some(content_type);
        self.body = Body::Bytes(body);
        self
    }

    fn without_content_type(mut self) -> Self {
        self.content_type = None;
        self
    }

    fn chunked(mut self) -> Self {
        if let Body::Bytes(bytes) = std::mem::replace(&mut self.body, Body::Empty) {
            self.body = Body::Chunked(bytes);
        }
        self
    }

    fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    fn idempotency_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    fn expect(mut self, status: u16, code: &'static str) -> Self {
        self.status = status;
        self.code = code;
        self
    }
}

/// `{"roomId": …, "username": …}` with the given raw JSON values.
fn create_body(room_id: &str, username: &str) -> String {
    format!(r#"{{"roomId": {room_id}, "username": {username}}}"#)
}

fn quoted(value: &str) -> String {
    serde_json::Value::from(value).to_string()
}

/// The table. `room` has members alice and bob; `spare` is a valid room id nobody created
/// (the create rows use it so that a wrongly accepted create would show afterwards).
fn cases(room: &str, spare: &str) -> Vec<Case> {
    let spare_q = quoted(spare);
    let members = format!("/rooms/{room}/members");
    let messages = format!("/rooms/{room}/messages");
    let post = |name| case(name, Method::POST, messages.clone()).auth(Auth::Alice);
    let history = |name, query: &str| {
        case(name, Method::GET, format!("{messages}?{query}")).auth(Auth::Alice)
    };
    let create = |name| case(name, Method::POST, "/rooms");
    let join = |name| case(name, Method::POST, members.clone());
    let leave_alice = |name| case(name, Method::DELETE, format!("{members}/alice"));
    let big_name = "x".repeat(OVER_BODY_LIMIT);
    vec![
        // ---- bodies that are not the JSON asked for -------------------------------------
        create("create: truncated JSON")
            .json(format!(r#"{{"roomId": {spare_q}"#))
            .expect(400, "invalid_request"),
        create("create: not JSON at all")
            .json("hello")
            .expect(400, "invalid_request"),
        create("create: empty body")
            .json("")
            .expect(400, "invalid_request"),
        create("create: a JSON array")
            .json("[]")
            .expect(400, "invalid_request"),
        create("create: JSON null")
            .json("null")
            .expect(400, "invalid_request"),
        create("create: trailing garbage")
            .json(format!("{} x", create_body(&spare_q, r#""alice""#)))
            .expect(400, "invalid_request"),
        create("create: not UTF-8")
            .raw(JSON, vec![b'{', 0xff, 0xfe, b'}'])
            .expect(400, "invalid_request"),
        create("create: roomId is a number")
            .json(create_body("42", r#""alice""#))
            .expect(400, "invalid_request"),
        create("create: username is an object")
            .json(create_body(&spare_q, r#"{"n": 1}"#))
            .expect(400, "invalid_request"),
        create("create: roomId missing")
            .json(r#"{"username": "alice"}"#)
            .expect(400, "invalid_request"),
        create("create: username missing")
            .json(format!(r#"{{"roomId": {spare_q}}}"#))
            .expect(400, "invalid_request"),
        create("create: secret is a number")
            .json(format!(
                r#"{{"roomId": {spare_q}, "username": "alice", "secret": 1234}}"#
            ))
            .expect(400, "invalid_request"),
        // ---- content types and sizes -----------------------------------------------------
        create("create: text/plain")
            .raw(
                "text/plain",
                create_body(&spare_q, r#""alice""#).into_bytes(),
            )
            .expect(415, "unsupported_media_type"),
        create("create: no content type")
            .json(create_body(&spare_q, r#""alice""#))
            .without_content_type()
            .expect(415, "unsupported_media_type"),
        create("create: form-urlencoded")
            .raw(
                "application/x-www-form-urlencoded",
                b"roomId=r&username=alice".to_vec(),
            )
            .expect(415, "unsupported_media_type"),
        create("create: body over 64 KiB")
            .json(create_body(&spare_q, &quoted(&big_name)))
            .expect(413, "payload_too_large"),
        create("create: chunked body over 64 KiB")
            .json(create_body(&spare_q, &quoted(&big_name)))
            .chunked()
            .expect(413, "payload_too_large"),
        // ---- room ids --------------------------------------------------------------------
        create("create: empty roomId")
            .json(create_body(r#""""#, r#""alice""#))
            .expect(400, "invalid_request"),
        create("create: roomId of 65 characters")
            .json(create_body(&quoted(&"r".repeat(65)), r#""alice""#))
            .expect(400, "invalid_request"),
        create("create: roomId with a space")
            .json(create_body(r#""my room""#, r#""alice""#))
            .expect(400, "invalid_request"),
        create("create: roomId with a slash")
            .json(create_body(r#""a/b""#, r#""alice""#))
            .expect(400, "invalid_request"),
        create("create: roomId with a non-ASCII letter")
            .json(create_body(r#""café""#, r#""alice""#))
            .expect(400, "invalid_request"),
        // ---- usernames -------------------------------------------------------------------
        create("create: empty username")
            .json(create_body(&spare_q, r#""""#))
            .expect(400, "invalid_request"),
        create("create: white-space-only username")
            .json(create_body(&spare_q, &quoted(" \t\u{3000}\u{a0} ")))
            .expect(400, "invalid_request"),
        create("create: username of 33 characters")
            .json(create_body(&spare_q, &quoted(&"é".repeat(33))))
            .expect(400, "invalid_request"),
        create("create: username with BEL")
            .json(create_body(&spare_q, &quoted("al\u{7}ice")))
            .expect(400, "invalid_request"),
        create("create: username with a newline inside")
            .json(create_body(&spare_q, &quoted("ali\nce")))
            .expect(400, "invalid_request"),
        create("create: username with DEL")
            .json(create_body(&spare_q, &quoted("ali\u{7f}ce")))
            .expect(400, "invalid_request"),
        create("create: username with a C1 control")
            .json(create_body(&spare_q, &quoted("ali\u{9b}ce")))
            .expect(400, "invalid_request"),
        create("create: username with a zero-width space")
            .json(create_body(&spare_q, &quoted("a\u{200B}lice")))
            .expect(400, "invalid_request"),
        create("create: username with a right-to-left override")
            .json(create_body(&spare_q, &quoted("\u{202E}nimda")))
            .expect(400, "invalid_request"),
        create("create: username of a Hangul filler")
            .json(create_body(&spare_q, &quoted("\u{3164}")))
            .expect(400, "invalid_request"),
        create("create: username of combining marks only")
            .json(create_body(&spare_q, &quoted("\u{301}\u{308}")))
            .expect(400, "invalid_request"),
        // ---- secrets ---------------------------------------------------------------------
        create("create: empty secret")
            .json(format!(
                r#"{{"roomId": {spare_q}, "username": "alice", "secret": ""}}"#
            ))
            .expect(400, "invalid_request"),
        create("create: secret of 129 characters")
            .json(format!(
                r#"{{"roomId": {spare_q}, "username": "alice", "secret": {}}}"#,
                quoted(&"s".repeat(129))
            ))
            .expect(400, "invalid_request"),
        // ---- join --------------------------------------------------------------------------
        join("join: username missing")
            .json("{}")
            .expect(400, "invalid_request"),
        join("join: username null")
            .json(r#"{"username": null}"#)
            .expect(400, "invalid_request"),
        join("join: username of 33 characters")
            .json(format!(r#"{{"username": {}}}"#, quoted(&"u".repeat(33))))
            .expect(400, "invalid_request"),
        join("join: username with a zero-width joiner between letters")
            .json(format!(r#"{{"username": {}}}"#, quoted("a\u{200D}lice")))
            .expect(400, "invalid_request"),
        join("join: empty secret")
            .json(r#"{"username": "carol", "secret": ""}"#)
            .expect(400, "invalid_request"),
        join("join: secret of 129 characters")
            .json(format!(
                r#"{{"username": "carol", "secret": {}}}"#,
                quoted(&"s".repeat(129))
            ))
            .expect(400, "invalid_request"),
        join("join: text/plain")
            .raw("text/plain", br#"{"username": "carol"}"#.to_vec())
            .expect(415, "unsupported_media_type"),
        case(
            "join: room id with a space in the path",
            Method::POST,
            "/rooms/my%20room/members",
        )
        .json(r#"{"username": "carol"}"#)
        .expect(400, "invalid_request"),
        case(
            "join: room id of 65 characters in the path",
            Method::POST,
            format!("/rooms/{}/members", "r".repeat(65)),
        )
        .json(r#"{"username": "carol"}"#)
        .expect(400, "invalid_request"),
        // ---- post ------------------------------------------------------------------------
        post("post: empty message")
            .json(r#"{"message": ""}"#)
            .expect(400, "invalid_request"),
        post("post: blank message")
            .json(format!(r#"{{"message": {}}}"#, quoted(" \n\t\u{3000} ")))
            .expect(400, "invalid_request"),
        post("post: message is a number")
            .json(r#"{"message": 42}"#)
            .expect(400, "invalid_request"),
        post("post: message null")
            .json(r#"{"message": null}"#)
            .expect(400, "invalid_request"),
        post("post: message missing")
            .json("{}")
            .expect(400, "invalid_request"),
        post("post: message over MAX_MESSAGE_BYTES (4096)")
            .json(format!(r#"{{"message": "{}"}}"#, "x".repeat(4097)))
            .expect(413, "payload_too_large"),
        post("post: 2049 two-byte characters (4098 bytes)")
            .json(format!(r#"{{"message": "{}"}}"#, "é".repeat(2049)))
            .expect(413, "payload_too_large"),
        post("post: body over 64 KiB")
            .json(format!(
                r#"{{"message": "{}"}}"#,
                "x".repeat(OVER_BODY_LIMIT)
            ))
            .expect(413, "payload_too_large"),
        post("post: text/plain")
            .raw("text/plain", br#"{"message": "hi"}"#.to_vec())
            .expect(415, "unsupported_media_type"),
        post("post: no content type")
            .json(r#"{"message": "hi"}"#)
            .without_content_type()
            .expect(415, "unsupported_media_type"),
        post("post: empty Idempotency-Key")
            .json(r#"{"message": "hi"}"#)
            .idempotency_key("")
            .expect(400, "invalid_request"),
        post("post: Idempotency-Key of 65 characters")
            .json(r#"{"message": "hi"}"#)
            .idempotency_key("k".repeat(65))
            .expect(400, "invalid_request"),
        post("post: Idempotency-Key with a space")
            .json(r#"{"message": "hi"}"#)
            .idempotency_key("two words")
            .expect(400, "invalid_request"),
        post("post: Idempotency-Key with a slash")
            .json(r#"{"message": "hi"}"#)
            .idempotency_key("a/b")
            .expect(400, "invalid_request"),
        post("post: Idempotency-Key not ASCII")
            .json(r#"{"message": "hi"}"#)
            .idempotency_key("ключ".as_bytes())
            .expect(400, "invalid_request"),
        // ---- tokens ----------------------------------------------------------------------
        post("post: no token")
            .json(r#"{"message": "hi"}"#)
            .auth(Auth::Nobody)
            .expect(401, "unauthorized"),
        post("post: garbage token")
            .json(r#"{"message": "hi"}"#)
            .auth(Auth::Header("Bearer not-a-real-token"))
            .expect(401, "unauthorized"),
        post("post: token of another room")
            .json(r#"{"message": "hi"}"#)
            .auth(Auth::Foreign)
            .expect(401, "unauthorized"),
        post("post: Basic scheme")
            .json(r#"{"message": "hi"}"#)
            .auth(Auth::AliceWithScheme("Basic"))
            .expect(401, "unauthorized"),
        post("post: token without a scheme")
            .json(r#"{"message": "hi"}"#)
            .auth(Auth::AliceBare)
            .expect(401, "unauthorized"),
        post("post: Bearer without a token")
            .json(r#"{"message": "hi"}"#)
            .auth(Auth::Header("Bearer"))
            .expect(401, "unauthorized"),
        // ---- history ---------------------------------------------------------------------
        history("history: limit=0", "limit=0").expect(400, "invalid_request"),
        history("history: limit=201", "limit=201").expect(400, "invalid_request"),
        history("history: limit=-1", "limit=-1").expect(400, "invalid_request"),
        history("history: limit=abc", "limit=abc").expect(400, "invalid_request"),
        history("history: empty limit", "limit=").expect(400, "invalid_request"),
        history("history: limit=1.5", "limit=1.5").expect(400, "invalid_request"),
        history(
            "history: limit=99999999999999999999",
            "limit=99999999999999999999",
        )
        .expect(400, "invalid_request"),
        history("history: before=abc", "before=abc").expect(400, "invalid_request"),
        history("history: before without a sequence", "before=1732560000000")
            .expect(400, "invalid_request"),
        history("history: before with three parts", "before=1-2-3").expect(400, "invalid_request"),
        history("history: negative before", "before=-1-0").expect(400, "invalid_request"),
        history("history: no token", "")
            .auth(Auth::Nobody)
            .expect(401, "unauthorized"),
        history("history: token of another room", "")
            .auth(Auth::Foreign)
            .expect(401, "unauthorized"),
        // ---- members ---------------------------------------------------------------------
        case("members: no token", Method::GET, members.clone()).expect(401, "unauthorized"),
        case("members: garbage token", Method::GET, members.clone())
            .auth(Auth::Header("Bearer 0000"))
            .expect(401, "unauthorized"),
        case(
            "members: token of another room",
            Method::GET,
            members.clone(),
        )
        .auth(Auth::Foreign)
        .expect(401, "unauthorized"),
        // ---- leave -----------------------------------------------------------------------
        leave_alice("leave: no token").expect(401, "unauthorized"),
        leave_alice("leave: garbage token")
            .auth(Auth::Header("Bearer nope"))
            .expect(401, "unauthorized"),
        leave_alice("leave: token of another room")
            .auth(Auth::Foreign)
            .expect(401, "unauthorized"),
        leave_alice("leave: another member's token")
            .auth(Auth::Bob)
            .expect(403, "forbidden"),
    ]
}

conformance! {
    async fn malformed_requests_get_the_exact_error(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("bad-input");
        let spare = unique_room("bad-input-spare");
        let alice = app.create_room(&room, "alice").await;
        let bob = app.join_room(&room, "bob").await;
        let foreign = app.create_room(&unique_room("bad-input-other"), "alice").await;
        let tokens = [&alice.token, &bob.token, &foreign.token];

        let table = cases(&room, &spare);
        assert!(table.len() >= 30, "the table has {} rows", table.len());
        let mut failures = Vec::new();
        for case in table {
            let mut request = app.request(case.method.clone(), &case.path, None);
            let authorization = match case.auth {
                Auth::Nobody => None,
                Auth::Alice => Some(format!("Bearer {}", alice.token)),
                Auth::Bob => Some(format!("Bearer {}", bob.token)),
                Auth::Foreign => Some(format!("Bearer {}", foreign.token)),
                Auth::AliceWithScheme(scheme) => Some(format!("{scheme} {}", alice.token)),
                Auth::AliceBare => Some(alice.token.clone()),
                Auth::Header(value) => Some(value.to_owned()),
            };
            if let Some(value) = authorization {
                request = request.header(AUTHORIZATION, value);
            }
            if let Some(content_type) = case.content_type {
                request = request.header(CONTENT_TYPE, content_type);
            }
            if let Some(key) = &case.idempotency_key {
                let value = HeaderValue::from_bytes(key).expect("a sendable header value");
                request = request.header("Idempotency-Key", value);
            }
            request = match case.body {
                Body::Empty => request,
                Body::Bytes(bytes) => request.body(bytes),
                Body::Chunked(bytes) => request.body(reqwest::Body::wrap_stream(
                    futures_util::stream::once(async move { Ok::<_, std::io::Error>(bytes) }),
                )),
            };
            let reply = app.send(request).await;
            if reply.status.is_server_error() {
                failures.push(format!(
                    "{}: a server error, {} {}",
                    case.name, reply.status, reply.text
                ));
                continue;
            }
            if let Err(problem) = reply.check_error(case.status, case.code) {
                failures.push(format!("{}: {problem}", case.name));
                continue;
            }
            if tokens.iter().any(|token| reply.text.contains(token.as_str())) {
                failures.push(format!("{}: the reply echoes a member token", case.name));
            }
        }
        assert!(
            failures.is_empty(),
            "{} malformed request(s) got the wrong answer:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );

        // None of them changed anything.
        let (messages, _) = app.history_page(&room, &alice.token, "").await;
        assert!(messages.is_empty(), "a refused post was stored: {messages:?}");
        assert_eq!(
            app.member_list(&room, &alice.token).await,
            vec![("alice".to_owned(), false), ("bob".to_owned(), false)]
        );
        app.create_room(&spare, "zed").await;
    }
}
