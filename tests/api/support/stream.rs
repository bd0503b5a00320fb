//! Streaming clients for tests: a WebSocket client (tokio-tungstenite) and an SSE client
//! (reqwest's byte stream, parsed as EventSource does). Every read has a timeout.
//!
//! Ephemeral events (`presence`, `typing`) may come between any two others, so both clients
//! set them aside: the reads that expect a sequence never see them, and `ephemeral()` reads
//! them, in order.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for one frame or event before failing.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The events that describe the moment (API.md, "Presence and typing").
pub const EPHEMERAL: [&str; 2] = ["presence", "typing"];

fn is_ephemeral(name: Option<&str>) -> bool {
    name.is_some_and(|name| EPHEMERAL.contains(&name))
}

/// A room event or a reply as a WebSocket client sees it.
pub type Json = Value;

/// How to open a WebSocket, for the tests that need more than a plain connect.
#[derive(Default, Clone, Copy)]
pub struct Upgrade<'a> {
    /// A tiny socket receive buffer (a client that stops reading backs the server up fast).
    pub small_buffer: bool,
    /// The local address to connect from (127.0.0.x), to look like another client.
    pub source: Option<std::net::Ipv4Addr>,
    pub origin: Option<&'a str>,
    /// More request headers (`Host`, `X-Forwarded-Proto`), set over the client's own.
    pub headers: &'a [(&'a str, &'a str)],
    /// The path (and query) to open instead of `/ws`.
    pub path: Option<&'a str>,
}

pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Room events read while waiting for a reply, kept for the next reads.
    pending: std::collections::VecDeque<Json>,
    /// Ephemeral events set aside, for [`WsClient::ephemeral`].
    ephemeral: std::collections::VecDeque<Json>,
}

/// How a WebSocket read ended when it was not a text frame.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEnd {
    Closed(Option<u16>),
    Gone,
}

impl WsClient {
    /// Connects to `/ws` of the server at `base_url` (`http://…`).
    pub async fn connect(base_url: &str) -> Self {
        let url = format!("{}/ws", base_url.replacen("http://", "ws://", 1));
        let (socket, _) = tokio::time::timeout(READ_TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .expect("WebSocket connect timed out")
            .expect("WebSocket connect failed");
        Self {
            socket,
            pending: Default::default(),
            ephemeral: Default::default(),
        }
    }

    /// Connects and joins `room` as `username` (`add:member`).
    pub async fn member_of(base_url: &str, room: &str, username: &str) -> Self {
        let mut ws = Self::connect(base_url).await;
        ws.ack(
            "add:member",
            "j",
            json!({"roomId": room, "username": username}),
        )
        .await;
        ws
    }

    /// Connects and resumes `token`'s membership of `room` after `last_event_id`; returns the
    /// client past its ack, and the ack's data.
    pub async fn resumed(
        base_url: &str,
        room: &str,
        token: &str,
        last_event_id: &str,
    ) -> (Self, Json) {
        let mut ws = Self::connect(base_url).await;
        let ack = ws
            .ack(
                "resume",
                "r",
                json!({"roomId": room, "token": token, "lastEventId": last_event_id}),
            )
            .await;
        (ws, ack)
    }

    /// Connects and creates `room` as `username`; returns the client (past its ack and the
    /// two creation events) and the ack data.
    pub async fn creator_of(base_url: &str, room: &str, username: &str) -> (Self, Value) {
        let mut ws = Self::connect(base_url).await;
        let ack = ws
            .ack(
                "create:room",
                "create",
                json!({"roomId": room, "username": username}),
            )
            .await;
        assert_eq!(ws.event().await["event"], "create:room:success");
        assert_eq!(ws.event().await["event"], "add:member:success");
        (ws, ack)
    }

    /// Connects with a tiny socket receive buffer, so a client that stops reading backs the
    /// server up after a few frames instead of megabytes.
    pub async fn connect_small_buffer(base_url: &str) -> Self {
        Self::try_connect(
            base_url,
            Upgrade {
                small_buffer: true,
                ..Upgrade::default()
            },
        )
        .await
        .unwrap_or_else(|status| panic!("WebSocket upgrade refused with {status}"))
    }

    /// Connects as `upgrade` says; a refused upgrade gives its HTTP status.
    pub async fn try_connect(base_url: &str, upgrade: Upgrade<'_>) -> Result<Self, u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!(
            "{}{}",
            base_url.replacen("http://", "ws://", 1),
            upgrade.path.unwrap_or("/ws")
        );
        let addr: std::net::SocketAddr = base_url
            .trim_start_matches("http://")
            .parse()
            .expect("base_url is http://ip:port");
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        if upgrade.small_buffer {
            socket
                .set_recv_buffer_size(4096)
                .expect("setting SO_RCVBUF");
        }
        if let Some(source) = upgrade.source {
            socket
                .bind(std::net::SocketAddr::new(source.into(), 0))
                .expect("binding the source address");
        }
        let stream = tokio::time::timeout(READ_TIMEOUT, socket.connect(addr))
            .await
            .expect("TCP connect timed out")
            .expect("TCP connect failed");
        let mut request = url.into_client_request().expect("a WebSocket request");
        if let Some(origin) = upgrade.origin {
            request
                .headers_mut()
                .insert("origin", origin.parse().expect("an origin header"));
        }
        for (name, value) in upgrade.headers {
            let name: tokio_tungstenite::tungstenite::http::HeaderName =
                name.parse().expect("a header name");
            request
                .headers_mut()
                .insert(name, value.parse().expect("a header value"));
        }
        let handshake = tokio::time::timeout(
            READ_TIMEOUT,
            tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)),
        )
        .await
        .expect("WebSocket handshake timed out");
        match handshake {
            Ok((socket, _)) => Ok(Self {
                socket,
                pending: Default::default(),
                ephemeral: Default::default(),
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(err) => panic!("WebSocket handshake failed: {err}"),
        }
    }

    /// Sends a frame; false when the connection is already gone.
    pub async fn try_send_raw(&mut self, message: Message) -> bool {
        self.socket.send(message).await.is_ok()
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.socket.send(message).await.expect("sending a frame");
    }

    /// Sends `{"event", "ref", "data"}`.
    pub async fn send(&mut self, event: &str, reference: &str, data: Value) {
        let frame = json!({"event": event, "ref": reference, "data": data});
        self.send_raw(Message::text(frame.to_string())).await;
    }

    /// Writes bytes straight to the TCP stream, past tungstenite: for frames it would never
    /// send (unmasked, not UTF-8). See [`client_frame`].
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let MaybeTlsStream::Plain(stream) = self.socket.get_mut() else {
            panic!("test connections are plain TCP");
        };
        stream.write_all(bytes).await.expect("writing raw bytes");
    }

    /// Sends several `{"event", "ref", "data"}` frames in one socket write, so the server finds
    /// them all waiting together.
    pub async fn send_together(&mut self, frames: &[(&str, String, Value)]) {
        for (event, reference, data) in frames {
            let frame = json!({"event": event, "ref": reference, "data": data});
            self.socket
                .feed(Message::text(frame.to_string()))
                .await
                .expect("queueing a frame");
        }
        self.socket.flush().await.expect("sending the frames");
    }

    /// The next text frame as JSON (ephemeral events set aside), or how the connection
    /// ended.
    pub async fn next(&mut self) -> Result<Json, WsEnd> {
        if let Some(frame) = self.pending.pop_front() {
            return Ok(frame);
        }
        loop {
            let frame = self.next_json().await?;
            if !is_ephemeral(frame["event"].as_str()) {
                return Ok(frame);
            }
            self.ephemeral.push_back(frame);
        }
    }

    /// The next text frame from the socket as JSON, whatever it is.
    async fn next_json(&mut self) -> Result<Json, WsEnd> {
        let text = self.next_text().await?;
        Ok(serde_json::from_str(&text).expect("server frames are JSON"))
    }

    /// The next ephemeral event (`{event, data}`), which must come; the other frames read
    /// meanwhile are kept for the next reads.
    pub async fn ephemeral(&mut self) -> Json {
        loop {
            if let Some(frame) = self.ephemeral.pop_front() {
                return frame;
            }
            match self.next_json().await {
                Ok(frame) if is_ephemeral(frame["event"].as_str()) => return frame,
                Ok(frame) => self.pending.push_back(frame),
                Err(end) => panic!("expected an ephemeral event, the connection ended: {end:?}"),
            }
        }
    }

    /// The ephemeral events set aside so far (taken).
    pub fn take_ephemeral(&mut self) -> Vec<Json> {
        self.ephemeral.drain(..).collect()
    }

    /// The next text frame as it came (other protocols than `/ws`'s JSON, such as
    /// Engine.IO's), or how the connection ended.
    pub async fn next_text(&mut self) -> Result<String, WsEnd> {
        loop {
            let message = tokio::time::timeout(READ_TIMEOUT, self.socket.next())
                .await
                .expect("no WebSocket frame within the read timeout");
            match message {
                Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
                Some(Ok(Message::Close(frame))) => {
                    return Err(WsEnd::Closed(frame.map(|f| u16::from(f.code))));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(WsEnd::Gone),
            }
        }
    }

    /// The next frame from the socket itself (not from `pending`).
    async fn read_frame(&mut self) -> Json {
        let pending = std::mem::take(&mut self.pending);
        let frame = self.recv().await;
        self.pending = pending;
        frame
    }

    /// The next text frame, which must be there.
    pub async fn recv(&mut self) -> Json {
        match self.next().await {
            Ok(json) => json,
            Err(end) => panic!("expected a frame, the connection ended: {end:?}"),
        }
    }

    /// Sends a client event and returns its direct reply, which must be the next frame.
    pub async fn call(&mut self, event: &str, reference: &str, data: Value) -> Json {
        self.send(event, reference, data).await;
        let reply = self.recv().await;
        assert_eq!(
            reply["ref"], reference,
            "reply to {event} did not echo its ref: {reply}"
        );
        reply
    }

    /// Sends a client event that must be acknowledged; returns the ack's data.
    pub async fn ack(&mut self, event: &str, reference: &str, data: Value) -> Json {
        let reply = self.call(event, reference, data).await;
        assert_eq!(
            reply["event"], "ack",
            "{event} was not acknowledged: {reply}"
        );
        reply["data"].clone()
    }

    /// Sends a client event and reads until its ack; the room events that other members'
    /// actions put before it are kept for the next reads. Returns the ack's data.
    pub async fn ack_among_events(&mut self, event: &str, reference: &str, data: Value) -> Json {
        self.send(event, reference, data).await;
        let frame = self.reply().await;
        assert_eq!(frame["ref"], reference, "reply to {event}: {frame}");
        assert_eq!(
            frame["event"], "ack",
            "{event} was not acknowledged: {frame}"
        );
        frame["data"].clone()
    }

    /// Reads until the next direct reply (`ack` or `error`); the room events before it are
    /// kept for the next reads.
    pub async fn reply(&mut self) -> Json {
        let mut skipped = Vec::new();
        loop {
            let frame = self.read_frame().await;
            if frame["id"].is_string() {
                skipped.push(frame);
                continue;
            }
            self.pending.extend(skipped);
            return frame;
        }
    }

    /// Sends a client event that must fail with `code`.
    pub async fn expect_error(&mut self, event: &str, reference: &str, data: Value, code: &str) {
        let reply = self.call(event, reference, data).await;
        assert_eq!(
            reply["event"], "error",
            "{event} should have failed: {reply}"
        );
        assert_eq!(reply["data"]["code"], code, "{event}: {reply}");
        assert!(
            reply["data"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }

    /// The next room event (`{event, id, data}`), which must be there.
    pub async fn event(&mut self) -> Json {
        let frame = self.recv().await;
        assert!(
            frame["id"].is_string(),
            "expected a room event, got {frame}"
        );
        frame
    }

    /// Reads room events until one named `name` arrives; returns it.
    pub async fn event_named(&mut self, name: &str) -> Json {
        loop {
            let frame = self.event().await;
            if frame["event"] == name {
                return frame;
            }
        }
    }

    /// Reads frames until the server closes; returns the close code.
    pub async fn closed(&mut self) -> WsEnd {
        loop {
            if let Err(end) = self.next().await {
                return end;
            }
        }
    }

    pub async fn close(mut self) {
        // Best effort: the server may already be gone.
        let _ = self.socket.close(None).await;
    }

    /// The raw socket, for tests that must stop reading.
    pub fn into_inner(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.socket
    }
}

/// A client frame as bytes on the wire (RFC 6455, 5.2): `first_byte` holds FIN, RSV and the
/// opcode (`0x81`: a final text frame); `mask` is the masking key, `None` for an unmasked
/// frame, which clients must never send. Payloads up to 125 bytes (one length byte).
pub fn client_frame(first_byte: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let length = u8::try_from(payload.len())
        .ok()
        .filter(|length| *length <= 125)
        .expect("a payload of at most 125 bytes");
    let mut frame = vec![first_byte, length | if mask.is_some() { 0x80 } else { 0 }];
    match mask {
        Some(key) => {
            frame.extend(key);
            frame.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
        }
        None => frame.extend(payload),
    }
    frame
}

/// One Server-Sent Event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("SSE data is JSON")
    }
}

pub struct SseClient {
    pub content_type: String,
    /// Ephemeral events set aside, for [`SseClient::ephemeral`].
    ephemeral: std::collections::VecDeque<SseEvent>,
    /// Other events read while looking for an ephemeral one, for the next reads.
    pending: std::collections::VecDeque<SseEvent>,
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
    /// `retry:` values and comments seen so far.
    pub retry: Option<u64>,
    pub comments: Vec<String>,
}

impl SseClient {
    /// Opens the stream with a prepared request; panics unless the status is 200.
    pub async fn open(request: reqwest::RequestBuilder) -> Self {
        let response = tokio::time::timeout(READ_TIMEOUT, request.send())
            .await
            .expect("SSE request timed out")
            .expect("SSE request failed");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            status,
            200,
            "SSE stream refused: {}",
            response.text().await.unwrap_or_default()
        );
        Self {
            content_type,
            ephemeral: Default::default(),
            pending: Default::default(),
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
            retry: None,
            comments: Vec::new(),
        }
    }

    /// The next block (up to a blank line), parsed: an event, or `Some(None)` for a block of
    /// only comments and `retry:`; `None` when the stream ended.
    async fn next_block(&mut self) -> Option<Option<SseEvent>> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent::default();
                let mut has_data = false;
                for line in block.lines() {
                    if let Some(comment) = line.strip_prefix(':') {
                        self.comments.push(comment.trim().to_owned());
                    } else if let Some((field, value)) = line.split_once(':') {
                        let value = value.strip_prefix(' ').unwrap_or(value);
                        match field {
                            "id" => event.id = Some(value.to_owned()),
                            "event" => event.event = Some(value.to_owned()),
                            "data" => {
                                if has_data {
                                    event.data.push('\n');
                                }
                                event.data.push_str(value);
                                has_data = true;
                            }
                            "retry" => self.retry = value.parse().ok(),
                            _ => {}
                        }
                    }
                }
                return Some(has_data.then_some(event));
            }
            let chunk = tokio::time::timeout(READ_TIMEOUT, self.body.next())
                .await
                .expect("no SSE data within the read timeout");
            match chunk {
                Some(Ok(bytes)) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next event (ephemeral events set aside), or `None` when the stream ended.
    pub async fn next(&mut self) -> Option<SseEvent> {
        if let Some(event) = self.pending.pop_front() {
            return Some(event);
        }
        loop {
            let event = self.next_any().await?;
            if !is_ephemeral(event.event.as_deref()) {
                return Some(event);
            }
            self.ephemeral.push_back(event);
        }
    }

    /// The next event from the stream, whatever it is; `None` when the stream ended.
    async fn next_any(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = self.next_block().await? {
                return Some(event);
            }
        }
    }

    /// The ephemeral events set aside so far (taken).
    pub fn take_ephemeral(&mut self) -> Vec<SseEvent> {
        self.ephemeral.drain(..).collect()
    }

    /// The next ephemeral event, which must come; the other events read meanwhile are kept
    /// for the next reads.
    pub async fn ephemeral(&mut self) -> SseEvent {
        loop {
            if let Some(event) = self.ephemeral.pop_front() {
                return event;
            }
            match self.next_any().await {
                Some(event) if is_ephemeral(event.event.as_deref()) => return event,
                Some(event) => self.pending.push_back(event),
                None => panic!("the SSE stream ended before an ephemeral event"),
            }
        }
    }

    /// The next event, which must be there.
    pub async fn event(&mut self) -> SseEvent {
        self.next().await.expect("the SSE stream ended early")
    }

    /// Reads until a comment (a keepalive) arrives; no event but an ephemeral one (set
    /// aside) may come first.
    pub async fn comment(&mut self) -> String {
        let seen = self.comments.len();
        if let Some(event) = self.pending.front() {
            panic!("expected a comment, got {event:?}");
        }
        while self.comments.len() == seen {
            match self.next_block().await {
                Some(None) => {}
                Some(Some(event)) if is_ephemeral(event.event.as_deref()) => {
                    self.ephemeral.push_back(event);
                }
                Some(Some(event)) => panic!("expected a comment, got {event:?}"),
                None => panic!("the SSE stream ended before a comment"),
            }
        }
        self.comments[seen].clone()
    }

    /// Reads until the stream ends; panics if an event arrives first.
    pub async fn ended(&mut self) {
        if let Some(event) = self.next().await {
            panic!("expected the stream to end, got {event:?}");
        }
    }
}
