//! `TestApp`: the server built in-process on `127.0.0.1:0` and served until the `TestApp` is
//! dropped, with a `reqwest` client and one helper per REST endpoint. Helpers return a
//! [`Reply`] (status, headers, JSON) so tests assert on exactly what went over the wire.

use std::time::Duration;

use chat_server::{App, Config};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::RedisServer;
use super::redis_cluster::SharedCluster;

/// Every HTTP exchange a test makes gives up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The store a test app runs on.
#[derive(Clone, Copy)]
pub enum Backend<'a> {
    /// `REDIS_URL` unset.
    Memory,
    /// `REDIS_URL` pointing at this server.
    Redis(&'a RedisServer),
    /// `REDIS_CLUSTER=true`, `REDIS_URL` listing this cluster's nodes.
    Cluster(&'a SharedCluster),
}

/// A running app; stopped (graceful shutdown) when dropped.
pub struct TestApp {
    pub base_url: String,
    pub client: reqwest::Client,
    stop: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A create or join reply: exactly `{roomId, username, token, lastEventId}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Joined {
    pub room_id: String,
    pub username: String,
    pub token: String,
    pub last_event_id: String,
}

/// A chat message as a post reply and history show it: exactly
/// `{id, roomId, username, message, ts}`, plus `editedTs` once edited.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Message {
    pub id: String,
    pub room_id: String,
    pub username: String,
    pub message: String,
    pub ts: String,
    #[serde(default)]
    pub edited_ts: Option<String>,
}

/// One HTTP reply, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The raw body.
    pub text: String,
    /// The body as JSON; `Value::Null` when it is empty or not JSON.
    pub body: Value,
}

impl Reply {
    /// Reads a whole reply.
    /// Reads a whole reply.
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("reading the reply body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            text,
            body,
        }
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        &self.body
    }

    /// Asserts the status and decodes the body (with `deny_unknown_fields` types, its exact
    /// shape).
    #[track_caller]
    pub fn expect_as<T: serde::de::DeserializeOwned>(&self, status: u16) -> T {
        let body = self.expect(status);
        serde_json::from_value(body.clone()).unwrap_or_else(|err| {
            panic!(
                "body does not have the expected shape ({err}): {}",
                self.text
            )
        })
    }

    /// Asserts an API error: this status, and a body of exactly
    /// `{"error": {"code": <code>, "message": <non-empty string>}}`.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) {
        if let Err(problem) = self.check_error(status, code) {
            panic!("{problem}");
        }
    }

    /// [`Reply::expect_error`] as a value, for tables that report every mismatch at once.
    pub fn check_error(&self, status: u16, code: &str) -> Result<(), String> {
        if self.status.as_u16() != status {
            return Err(format!(
                "expected {status} {code}, got {} with body {}",
                self.status, self.text
            ));
        }
        let content_type = self
            .headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with("application/json") {
            return Err(format!(
                "error body is not JSON (content-type {content_type:?}): {}",
                self.text
            ));
        }
        let shape_ok = self.body.as_object().is_some_and(|outer| {
            outer.len() == 1
                && outer
                    .get("error")
                    .and_then(Value::as_object)
                    .is_some_and(|error| {
                        error.len() == 2
                            && error.get("code").and_then(Value::as_str) == Some(code)
                            && error
                                .get("message")
                                .and_then(Value::as_str)
                                .is_some_and(|message| !message.trim().is_empty())
                    })
        });
        if shape_ok {
            Ok(())
        } else {
            Err(format!(
                "expected body {{\"error\":{{\"code\":\"{code}\",\"message\":\"…\"}}}}, got {}",
                self.text
            ))
        }
    }

    /// The error message of an error reply (empty if there is none).
    pub fn error_message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

impl TestApp {
    /// Builds the app on a fresh loopback port with `Config::from_vars` (the store chosen by
    /// `backend`, then `extra_vars`) and serves it on this runtime until dropped.
    pub async fn spawn(backend: Backend<'_>, extra_vars: &[(&str, &str)]) -> Self {
        Self::spawn_with(backend, extra_vars, |_| {}).await
    }

    /// [`TestApp::spawn`], with `adjust` given the built app before it serves.
    pub async fn spawn_with(
        backend: Backend<'_>,
        extra_vars: &[(&str, &str)],
        adjust: impl FnOnce(&App),
    ) -> Self {
        let mut vars = vec![("HOST".to_owned(), "127.0.0.1".to_owned())];
        match backend {
            Backend::Memory => {}
            Backend::Redis(server) => vars.push(("REDIS_URL".to_owned(), server.url())),
            Backend::Cluster(cluster) => {
                vars.push(("REDIS_URL".to_owned(), cluster.url().to_owned()));
                vars.push(("REDIS_CLUSTER".to_owned(), "true".to_owned()));
            }
        }
        vars.extend(
            extra_vars
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
        );
        let config = Config::from_vars(vars).expect("test configuration is valid");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding 127.0.0.1:0");
        let app = App::build(config, listener)
            .await
            .expect("building the app");
        adjust(&app);
        let addr = app.local_addr().expect("the app's address");
        let stop = CancellationToken::new();
        tokio::spawn(app.run_until_stopped(stop.clone().cancelled_owned()));
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("building the HTTP client");
        Self {
            base_url: format!("http://{addr}"),
            client,
            stop,
        }
    }

    /// A request to `path` (starting with `/`), with the member token as a Bearer token.
    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let builder = self
            .client
            .request(method, format!("{}{path}", self.base_url));
        match token {
            Some(token) => builder.header(AUTHORIZATION, format!("Bearer {token}")),
            None => builder,
        }
    }

    /// Sends a request and reads the whole reply.
    pub async fn send(&self, request: RequestBuilder) -> Reply {
        let response = request.send().await.expect("the request reached the app");
        Reply::read(response).await
    }

    /// Sends a request whose success is an endless stream (SSE): a 200 is answered with its
    /// status and headers and an empty body (the stream is dropped); anything else is read
    /// whole.
    pub async fn send_for_stream(&self, request: RequestBuilder) -> Reply {
        let response = request.send().await.expect("the request reached the app");
        if response.status() != StatusCode::OK {
            return Reply::read(response).await;
        }
        Reply {
            status: response.status(),
            headers: response.headers().clone(),
            text: String::new(),
            body: Value::Null,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(self.request(Method::GET, path, token)).await
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.send(self.request(Method::POST, path, token).json(body))
            .await
    }

    /// `POST /rooms` with `{roomId, username, secret?}`.
    pub async fn create(&self, room: &str, username: &str, secret: Option<&str>) -> Reply {
        let mut body = json!({"roomId": room, "username": username});
        if let Some(secret) = secret {
            body["secret"] = json!(secret);
        }
        self.post_json("/rooms", None, &body).await
    }

    /// Creates `room` with `username` as its creator; asserts 201.
    pub async fn create_room(&self, room: &str, username: &str) -> Joined {
        self.create(room, username, None).await.expect_as(201)
    }

    /// `POST /rooms/{room}/members` with `{username, secret?}`.
    pub async fn join(&self, room: &str, username: &str, secret: Option<&str>) -> Reply {
        let mut body = json!({"username": username});
        if let Some(secret) = secret {
            body["secret"] = json!(secret);
        }
        self.post_json(
            &format!("/rooms/{}/members", path_segment(room)),
            None,
            &body,
        )
        .await
    }

    /// Joins `room` as `username`; asserts 201.
    pub async fn join_room(&self, room: &str, username: &str) -> Joined {
        self.join(room, username, None).await.expect_as(201)
    }

    /// `POST /rooms/{room}/messages` with `{message}`.
    pub async fn post(&self, room: &str, token: Option<&str>, message: &str) -> Reply {
        self.post_with_key(room, token, message, None).await
    }

    /// `POST /rooms/{room}/messages` with an `Idempotency-Key`.
    pub async fn post_with_key(
        &self,
        room: &str,
        token: Option<&str>,
        message: &str,
        idempotency_key: Option<&str>,
    ) -> Reply {
        let path = format!("/rooms/{}/messages", path_segment(room));
        let mut request = self
            .request(Method::POST, &path, token)
            .json(&json!({"message": message}));
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        self.send(request).await
    }

    /// Posts `message` as the member `token` names; asserts 201.
    pub async fn say(&self, room: &str, token: &str, message: &str) -> Message {
        self.post(room, Some(token), message).await.expect_as(201)
    }

    /// `PATCH /rooms/{room}/messages/{id}` with `{message}`.
    pub async fn edit(&self, room: &str, id: &str, token: Option<&str>, message: &str) -> Reply {
        let path = format!(
            "/rooms/{}/messages/{}",
            path_segment(room),
            path_segment(id)
        );
        self.send(
            self.request(Method::PATCH, &path, token)
                .json(&json!({"message": message})),
        )
        .await
    }

    /// `DELETE /rooms/{room}/messages/{id}`.
    pub async fn delete_message(&self, room: &str, id: &str, token: Option<&str>) -> Reply {
        let path = format!(
            "/rooms/{}/messages/{}",
            path_segment(room),
            path_segment(id)
        );
        self.send(self.request(Method::DELETE, &path, token)).await
    }

    /// `GET /rooms/{room}/messages?{query}` (`query` without the `?`, may be empty).
    pub async fn history(&self, room: &str, token: Option<&str>, query: &str) -> Reply {
        let mut path = format!("/rooms/{}/messages", path_segment(room));
        if !query.is_empty() {
            path.push('?');
            path.push_str(query);
        }
        self.get(&path, token).await
    }

    /// A history page: asserts 200 and the exact shape `{messages, nextBefore}`.
    pub async fn history_page(
        &self,
        room: &str,
        token: &str,
        query: &str,
    ) -> (Vec<Message>, Option<String>) {
        let reply = self.history(room, Some(token), query).await;
        let page: HistoryPage = reply.expect_as(200);
        assert!(
            reply.body.get("nextBefore").is_some(),
            "nextBefore must be present (null when there is no earlier page): {}",
            reply.text
        );
        (page.messages, page.next_before)
    }

    /// `GET /rooms/{room}/members`.
    pub async fn members(&self, room: &str, token: Option<&str>) -> Reply {
        self.get(&format!("/rooms/{}/members", path_segment(room)), token)
            .await
    }

    /// The member list as `(username, online)` pairs sorted by name; asserts 200 and the
    /// exact shape `{members: [{username, online, owner}]}`.
    pub async fn member_list(&self, room: &str, token: &str) -> Vec<(String, bool)> {
        let mut members: Vec<(String, bool)> = self
            .member_entries(room, token)
            .await
            .into_iter()
            .map(|member| (member.username, member.online))
            .collect();
        members.sort();
        members
    }

    /// The names the member list marks as the room's owner (at most one); asserts 200 and the
    /// exact shape `{members: [{username, online, owner}]}`.
    pub async fn owners(&self, room: &str, token: &str) -> Vec<String> {
        self.member_entries(room, token)
            .await
            .into_iter()
            .filter(|member| member.owner)
            .map(|member| member.username)
            .collect()
    }

    async fn member_entries(&self, room: &str, token: &str) -> Vec<MemberEntry> {
        let page: MembersPage = self.members(room, Some(token)).await.expect_as(200);
        page.members
    }

    /// `DELETE /rooms/{room}/members/{username}`.
    pub async fn leave(&self, room: &str, username: &str, token: Option<&str>) -> Reply {
        self.remove(room, username, token, "").await
    }

    /// `DELETE /rooms/{room}/members/{username}?{query}` (`query` without the `?`, may be
    /// empty): a leave, or with the owner's token a kick (`ban=true`: a ban).
    pub async fn remove(
        &self,
        room: &str,
        username: &str,
        token: Option<&str>,
        query: &str,
    ) -> Reply {
        let mut path = format!(
            "/rooms/{}/members/{}",
            path_segment(room),
            path_segment(username)
        );
        if !query.is_empty() {
            path.push('?');
            path.push_str(query);
        }
        self.send(self.request(Method::DELETE, &path, token)).await
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HistoryPage {
    messages: Vec<Message>,
    next_before: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersPage {
    members: Vec<MemberEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberEntry {
    username: String,
    online: bool,
    owner: bool,
}

/// Percent-encodes one path segment (everything but RFC 3986's unreserved characters), so
/// usernames with spaces or full-width letters reach the server intact.
pub fn path_segment(raw: &str) -> String {
    let mut encoded = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}
