//! socket.io clients for tests: [`SioClient`], the real `socket.io-client` (npm) run by
//! `tests/browser/socketio.mjs` as a [`NodeProcess`], one process per client, reporting what
//! it sees as JSON lines; and [`EioPolling`] / [`EioSocket`], Engine.IO spoken directly over
//! HTTP long-polling and WebSocket, for what a well-behaved client never does (stop polling,
//! oversized or malformed packets, a foreign `Origin`). Every read has a timeout.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::node::{NodeProcess, require_module};
use super::stream::{EPHEMERAL, READ_TIMEOUT, Upgrade, WsClient, WsEnd};

/// A client process that is still running after this long has failed (its own limit is a
/// little shorter).
const CLIENT_LIMIT: Duration = Duration::from_secs(100);

/// `io(url, options)` options: WebSocket only, no polling first.
pub fn websocket_only() -> Value {
    json!({"transports": ["websocket"]})
}

/// `io(url, options)` options: HTTP long-polling only, never upgraded.
pub fn polling_only() -> Value {
    json!({"transports": ["polling"]})
}

/// One `socket.io-client` socket, as a child process.
pub struct SioClient {
    node: NodeProcess,
    /// Lines read while looking for a later one, for the next reads.
    pending: VecDeque<Value>,
    /// The Engine.IO transport in use now (`polling` or `websocket`).
    pub transport: Option<String>,
    /// The ephemeral events set aside, in order.
    pub ephemeral: Vec<Value>,
    next_ref: u64,
}

impl SioClient {
    /// Starts a client: `io(base_url)` with `options` (`None`: the defaults). It connects by
    /// itself; its first line says how that went.
    pub fn start(base_url: &str, options: Option<Value>) -> Self {
        require_module("socket.io-client");
        let mut args = vec![base_url.to_owned()];
        if let Some(options) = options {
            args.push(options.to_string());
        }
        Self {
            node: NodeProcess::start(
                "the socket.io client",
                "socketio.mjs",
                &args,
                &[],
                CLIENT_LIMIT,
            ),
            pending: VecDeque::new(),
            transport: None,
            ephemeral: Vec::new(),
            next_ref: 0,
        }
    }

    /// A client that connected; panics with what it saw otherwise.
    pub async fn connect(base_url: &str, options: Option<Value>) -> Self {
        let mut client = Self::start(base_url, options);
        let line = client.next().await;
        assert_eq!(
            line["type"], "connect",
            "the client did not connect: {line}"
        );
        client
    }

    /// A client that connected, or its `connect_error` line.
    pub async fn try_connect(base_url: &str, options: Option<Value>) -> Result<Self, Value> {
        let mut client = Self::start(base_url, options);
        let line = client.next().await;
        match line["type"].as_str() {
            Some("connect") => Ok(client),
            Some("connect_error") => Err(line),
            _ => panic!("expected connect or connect_error, got {line}"),
        }
    }

    /// The next line from the socket itself (not from `pending`); an `upgrade` is recorded and
    /// ephemeral events set aside, not returned.
    async fn read_line(&mut self) -> Value {
        loop {
            let Some(line) = self.node.next_line(READ_TIMEOUT).await else {
                let status = self.node.wait_exit().await;
                panic!("the socket.io client exited ({status}); its output is above");
            };
            let line: Value = serde_json::from_str(&line)
                .unwrap_or_else(|err| panic!("the client printed {line:?}, not JSON: {err}"));
            match line["type"].as_str() {
                Some("upgrade") | Some("connect") => {
                    self.transport = line["transport"].as_str().map(str::to_owned);
                    if line["type"] == "upgrade" {
                        continue;
                    }
                }
                Some("event")
                    if EPHEMERAL.contains(&line["event"].as_str().unwrap_or_default()) =>
                {
                    self.ephemeral.push(line);
                    continue;
                }
                _ => {}
            }
            return line;
        }
    }

    /// The next thing the client saw.
    pub async fn next(&mut self) -> Value {
        match self.pending.pop_front() {
            Some(line) => line,
            None => self.read_line().await,
        }
    }

    /// Sends `{"op": …}` to the driver.
    fn command(&mut self, command: &Value) {
        self.node.send_line(&command.to_string());
    }

    /// `socket.emit(event, ...args)`, without an ack callback.
    pub fn emit(&mut self, event: &str, args: Value) {
        self.command(&json!({"op": "emit", "event": event, "args": args}));
    }

    /// `socket.emit(event, ...args, callback)`; returns the ref its `ack` line will carry.
    pub fn emit_with_ack(&mut self, event: &str, args: Value) -> String {
        self.next_ref += 1;
        let reference = format!("r{}", self.next_ref);
        self.command(&json!({"op": "emit", "event": event, "args": args, "ref": reference}));
        reference
    }

    /// Emits `event` with `data` and an ack callback; the ack must be the next thing the
    /// client sees. Returns the ack's one argument.
    pub async fn call(&mut self, event: &str, data: Value) -> Value {
        self.call_args(event, json!([data])).await
    }

    /// [`SioClient::call`] with any arguments (`args`, an array, before the callback).
    pub async fn call_args(&mut self, event: &str, args: Value) -> Value {
        let reference = self.emit_with_ack(event, args);
        let line = self.next().await;
        ack_data(&line, &reference, event)
    }

    /// The next line, which must be an event named `name` with one argument; returns it.
    pub async fn event(&mut self, name: &str) -> Value {
        let line = self.next().await;
        assert_eq!(line["type"], "event", "expected {name}, got {line}");
        assert_eq!(line["event"], name, "expected {name}, got {line}");
        let args = line["args"].as_array().expect("args is an array");
        assert_eq!(args.len(), 1, "{name} carries one argument: {line}");
        args[0].clone()
    }

    /// Reads until the socket is disconnected; returns the `disconnect` line. Acks and events
    /// before it are skipped.
    pub async fn disconnected(&mut self) -> Value {
        loop {
            let line = self.next().await;
            if line["type"] == "disconnect" {
                return line;
            }
        }
    }

    /// Reads (keeping what it reads) until the client has upgraded to WebSocket.
    pub async fn upgraded(&mut self) {
        let mut kept = Vec::new();
        while self.transport.as_deref() != Some("websocket") {
            kept.push(self.read_line().await);
        }
        self.pending.extend(kept);
    }

    /// Disconnects and ends the process; asserts the client saw nothing more than its own
    /// disconnect (no event, ack or error left unread, no disconnect by the server).
    pub async fn close(mut self) {
        self.node.close_stdin();
        let mut rest: Vec<Value> = self.pending.drain(..).collect();
        while let Some(line) = self.node.next_line(READ_TIMEOUT).await {
            rest.push(serde_json::from_str(&line).unwrap_or(Value::String(line)));
        }
        rest.retain(|line| {
            !(line["type"] == "upgrade"
                || line["type"] == "event"
                    && EPHEMERAL.contains(&line["event"].as_str().unwrap_or_default()))
        });
        let status = self.node.wait_exit().await;
        assert!(status.success(), "the socket.io client exited {status}");
        let own =
            json!({"type": "disconnect", "reason": "io client disconnect", "description": null});
        assert!(
            rest.is_empty() || rest == [own],
            "the client saw more than the test read: {rest:?}"
        );
    }
}

/// The one argument of the `ack` line for `reference`; panics with the line otherwise.
#[track_caller]
fn ack_data(line: &Value, reference: &str, event: &str) -> Value {
    assert_eq!(
        line["type"], "ack",
        "{event} was not acknowledged first: {line}"
    );
    assert_eq!(
        line["ref"], reference,
        "{event}: the ack of another emit: {line}"
    );
    let args = line["args"].as_array().expect("args is an array");
    assert_eq!(args.len(), 1, "{event}'s ack carries one argument: {line}");
    args[0].clone()
}

/// The query of an Engine.IO v4 request.
pub const EIO_POLLING: &str = "/socket.io/?EIO=4&transport=polling";
pub const EIO_WEBSOCKET: &str = "/socket.io/?EIO=4&transport=websocket";

/// The Engine.IO open packet `0{…}`, parsed; panics on anything else.
#[track_caller]
pub fn open_packet(packet: &str) -> Value {
    let body = packet
        .strip_prefix('0')
        .unwrap_or_else(|| panic!("expected an Engine.IO open packet, got {packet:?}"));
    serde_json::from_str(body).unwrap_or_else(|err| panic!("open packet {packet:?}: {err}"))
}

/// An Engine.IO session over HTTP long-polling, spoken by hand.
pub struct EioPolling {
    client: reqwest::Client,
    /// The polling URL with this session's `sid`.
    url: String,
    /// The open packet's data: `sid`, `upgrades`, `pingInterval`, `pingTimeout`, `maxPayload`.
    pub open: Value,
}

impl EioPolling {
    /// The handshake, then the namespace connect (`40`), answered with `40{"sid"}`.
    pub async fn connect(base_url: &str) -> Self {
        let client = reqwest::Client::builder()
            .timeout(READ_TIMEOUT)
            .build()
            .expect("an HTTP client");
        let handshake = client
            .get(format!("{base_url}{EIO_POLLING}"))
            .send()
            .await
            .expect("the polling handshake");
        assert_eq!(handshake.status(), 200, "the polling handshake");
        let open = open_packet(&handshake.text().await.expect("the handshake body"));
        let sid = open["sid"].as_str().expect("the open packet has a sid");
        let polling = Self {
            url: format!("{base_url}{EIO_POLLING}&sid={sid}"),
            client,
            open,
        };
        polling.send("40").await;
        polling.poll_until(|packet| packet.starts_with("40{")).await;
        polling
    }

    /// POSTs one packet; the server must take it (200 `ok`).
    pub async fn send(&self, packet: &str) {
        let (status, body) = self.post(packet).await;
        assert_eq!(status, 200, "polling POST {packet:?}: {body}");
    }

    /// POSTs one packet; returns the status and body, whatever they are.
    pub async fn post(&self, packet: &str) -> (u16, String) {
        let response = self
            .client
            .post(&self.url)
            .body(packet.to_owned())
            .send()
            .await
            .expect("a polling POST");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// One long-poll GET: the packets it brought (separated by 0x1e on the wire).
    pub async fn poll(&self) -> Vec<String> {
        let response = self
            .client
            .get(&self.url)
            .send()
            .await
            .expect("a polling GET");
        let status = response.status();
        let body = response.text().await.expect("the polling body");
        assert_eq!(status, 200, "polling GET: {body}");
        body.split('\u{1e}').map(str::to_owned).collect()
    }

    /// Polls until a packet satisfying `wanted` arrives, answering pings; returns it (the
    /// packets before it, and any after it in the same reply, are dropped).
    pub async fn poll_until(&self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no such packet within {READ_TIMEOUT:?}"
            );
            for packet in self.poll().await {
                if packet == "2" {
                    self.send("3").await;
                } else if wanted(&packet) {
                    return packet;
                }
            }
        }
    }
}

/// A socket.io socket over a WebSocket, spoken by hand (Engine.IO frames are text).
pub struct EioSocket {
    pub ws: WsClient,
}

impl EioSocket {
    /// Opens the WebSocket as `upgrade` says (its path is Engine.IO's); a refused upgrade gives
    /// its HTTP status. Reads the open packet; does not connect the namespace.
    pub async fn open(base_url: &str, upgrade: Upgrade<'_>) -> Result<Self, u16> {
        let mut ws = WsClient::try_connect(
            base_url,
            Upgrade {
                path: Some(EIO_WEBSOCKET),
                ..upgrade
            },
        )
        .await?;
        // Checked only: nothing here needs its settings.
        open_packet(&ws.next_text().await.expect("the open packet"));
        Ok(Self { ws })
    }

    /// Opens it and connects the namespace `/`.
    pub async fn connect(base_url: &str) -> Self {
        let mut socket = Self::open(base_url, Upgrade::default())
            .await
            .unwrap_or_else(|status| panic!("the Engine.IO upgrade was refused: {status}"));
        socket.send("40").await;
        let connected = socket.next().await.expect("the namespace connect answer");
        assert!(
            connected.starts_with("40{"),
            "namespace connect: {connected:?}"
        );
        socket
    }

    pub async fn send(&mut self, packet: &str) {
        self.ws.send_raw(Message::text(packet.to_owned())).await;
    }

    /// Sends a packet; false when the connection is already gone.
    pub async fn try_send(&mut self, packet: &str) -> bool {
        self.ws.try_send_raw(Message::text(packet.to_owned())).await
    }

    /// The next packet that is not a ping (pings are answered), or how the socket ended.
    pub async fn next(&mut self) -> Result<String, WsEnd> {
        loop {
            let packet = self.ws.next_text().await?;
            if packet == "2" {
                // Best effort: a socket that is going away is told by the next read.
                let _ = self.try_send("3").await;
                continue;
            }
            return Ok(packet);
        }
    }
}
