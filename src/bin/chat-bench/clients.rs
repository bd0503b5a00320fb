//! The load generator's clients: WebSocket members (tokio-tungstenite; `/ws`, or socket.io
//! through [`crate::socketio`]), SSE receivers and REST senders (hyper's HTTP/1 connection API,
//! one connection per client), each on a loopback source address of its own choosing so many
//! connections fit.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{BenchResult, socketio};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket's read buffer: room for a few dozen bench frames per read.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Where to connect, from which loopback addresses, and what WebSocket members speak.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    /// How many source addresses (127.0.0.1, .2, …) to spread connections over.
    pub source_addrs: u8,
    pub transport: Transport,
}

impl Target {
    /// A TCP connection from the `n`th source address.
    pub async fn connect(&self, n: usize) -> std::io::Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        if self.addr.ip().is_loopback() && self.source_addrs > 1 {
            let last = 1 + (n % usize::from(self.source_addrs)) as u8;
            socket.bind(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
                0,
            ))?;
        }
        socket.set_nodelay(true)?;
        socket.connect(self.addr).await.and_then(|stream| {
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    }

    /// A member's WebSocket from the `n`th source address, ready for client events.
    pub async fn member(&self, n: usize) -> BenchResult<Ws> {
        match self.transport {
            Transport::Ws => self.websocket(n, "/ws").await,
            Transport::Socketio => socketio::connect(self, n).await,
        }
    }

    /// A WebSocket from the `n`th source address to `path` (and query).
    pub async fn websocket(&self, n: usize, path: &str) -> BenchResult<Ws> {
        let stream = self.connect(n).await?;
        let url = format!("ws://{}{path}", self.host);
        // tungstenite zero-fills its read buffer before every read: its 128 KiB default made
        // that memset the load generator's main cost.
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            url,
            MaybeTlsStream::Plain(stream),
            Some(config),
        )
        .await?;
        Ok(ws)
    }
}

/// The servers under load, in `--server` order (at least one).
#[derive(Clone)]
pub struct Servers(Vec<Target>);

impl Servers {
    pub fn new(targets: Vec<Target>) -> BenchResult<Self> {
        if targets.is_empty() {
            return Err("no server to connect to".into());
        }
        Ok(Self(targets))
    }

    pub fn all(&self) -> &[Target] {
        &self.0
    }

    /// What the WebSocket members speak (the same to every server).
    pub fn transport(&self) -> Transport {
        self.0[0].transport
    }

    /// The server (its index and target) of member `n` of the `room`th room: a room's members
    /// take the servers in turn, so every room spans every server and its messages cross
    /// instances, and each room starts one server further, so that fan-out's senders (a
    /// room's first member) take turns too.
    pub fn member(&self, room: usize, n: usize) -> (usize, &Target) {
        let index = (room + n) % self.0.len();
        (index, &self.0[index])
    }
}

/// The protocol the bench's WebSocket members speak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// The project's own `/ws`.
    #[default]
    Ws,
    /// socket.io (Engine.IO's WebSocket transport at `/socket.io/`).
    Socketio,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ws => "ws",
            Self::Socketio => "socketio",
        }
    }

    /// Sends a client event and waits for its ack's data (skipping room events, answering
    /// pings); an error reply is an error.
    pub async fn call(self, ws: &mut Ws, event: &str, data: Value) -> BenchResult<Value> {
        // Reply id 0 is free: other client events (chat, typing) number theirs from 1.
        ws.send(Message::text(self.event_frame(event, 0, &data)))
            .await?;
        loop {
            let text = next_text(ws).await?;
            if let Some(answer) = self.answer(&text) {
                ws.send(Message::text(answer)).await?;
            } else if let Some(reply) = self.reply(&text)
                && reply.id.unwrap_or(0) == 0
            {
                return reply.outcome.map_err(Into::into);
            }
        }
    }

    /// A client event frame whose reply carries `reply_id` (`/ws`: its `ref`; socket.io: its
    /// ack id).
    pub fn event_frame(self, event: &str, reply_id: u64, data: &Value) -> String {
        match self {
            Self::Ws => {
                json!({"event": event, "ref": reply_id.to_string(), "data": data}).to_string()
            }
            Self::Socketio => socketio::event_frame(reply_id, event, data),
        }
    }

    /// The direct reply to a client event that `text` is, if it is one: `/ws` `ack` or
    /// `error`, or a socket.io ack (an ack carrying `{error}` is an error).
    pub fn reply(self, text: &str) -> Option<Reply> {
        let (id, data) = match self {
            Self::Ws => {
                let failed = text.starts_with(r#"{"event":"error""#);
                if !failed && !text.starts_with(r#"{"event":"ack""#) {
                    return None;
                }
                let Ok(reply) = serde_json::from_str::<Value>(text) else {
                    return Some(Reply::unreadable(text));
                };
                let id = reply["ref"].as_str().and_then(|id| id.parse().ok());
                let data = reply["data"].clone();
                if failed {
                    return Some(Reply {
                        id,
                        outcome: Err(format!("server error: {data}")),
                    });
                }
                (id, data)
            }
            Self::Socketio => {
                let (id, data) = socketio::ack(text)?;
                let Some(data) = data else {
                    return Some(Reply::unreadable(text));
                };
                (Some(id), data)
            }
        };
        let outcome = match data.get("error") {
            Some(_) => Err(format!("server error: {data}")),
            None => Ok(data),
        };
        Some(Reply { id, outcome })
    }

    /// A room event's name and the rest of its frame (its `id` and `data` on `/ws`, its data on
    /// socket.io), if `text` is a room event.
    pub fn room_event(self, text: &str) -> Option<(&str, &str)> {
        let rest = match self {
            Self::Ws => text.strip_prefix(r#"{"event":""#)?,
            Self::Socketio => text.strip_prefix(r#"42[""#)?,
        };
        let (name, rest) = rest.split_once('"')?;
        (self == Self::Socketio || (name != "ack" && name != "error")).then_some((name, rest))
    }

    /// The `seq`th bench chat message of a sender, as a `create:chat` frame.
    pub fn chat_frame(self, room: &str, message: &str, seq: u64) -> String {
        match self {
            Self::Ws => format!(
                r#"{{"event":"create:chat","data":{{"roomId":"{room}","message":"{message}"}}}}"#
            ),
            Self::Socketio => socketio::chat_frame(room, message, seq),
        }
    }

    /// How a chat room event's frame starts (acks carry the sender's message too).
    fn chat_event(self) -> &'static str {
        match self {
            Self::Ws => CHAT_EVENT,
            Self::Socketio => socketio::CHAT_EVENT,
        }
    }

    /// The answer a text frame asks for: an Engine.IO ping's pong (`/ws` pings are WebSocket
    /// pings, which tungstenite answers itself).
    pub fn answer(self, text: &str) -> Option<&'static str> {
        (self == Self::Socketio && text == socketio::PING).then_some(socketio::PONG)
    }
}

/// A direct reply to a client event.
pub struct Reply {
    /// The reply id it answers (`None`: a `/ws` error for a frame that had no readable `ref`).
    pub id: Option<u64>,
    /// The ack's data, or the error it carries.
    pub outcome: Result<Value, String>,
}

impl Reply {
    fn unreadable(text: &str) -> Self {
        Self {
            id: None,
            outcome: Err(format!("unreadable reply: {text}")),
        }
    }
}

/// The next text frame, within 30 s (WebSocket pings are answered by tungstenite while
/// reading).
pub async fn next_text(ws: &mut Ws) -> BenchResult<String> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .map_err(|_| "no reply within 30 s")?
            .ok_or("connection closed")??;
        match message {
            Message::Text(text) => return Ok(text.as_str().to_owned()),
            Message::Close(frame) => return Err(format!("connection closed: {frame:?}").into()),
            _ => {}
        }
    }
}

/// What one receiver saw (its latencies go to [`take_latencies`]); the default is a receiver
/// that saw nothing (it failed to open).
#[derive(Default)]
pub struct Received {
    pub delivered: u64,
    /// A message at or below the last sequence number seen from its sender.
    pub duplicates_or_reordered: u64,
}

/// Send-to-receive latencies in microseconds, one histogram per worker thread: a histogram per
/// receiver made every record a cache miss among a thousand of them.
type Latencies = Arc<Mutex<Histogram<u64>>>;

static ALL_LATENCIES: Mutex<Vec<Latencies>> = Mutex::new(Vec::new());

thread_local! {
    static LATENCIES: Latencies = {
        let latencies = Arc::new(Mutex::new(latency_histogram()));
        lock(&ALL_LATENCIES).push(latencies.clone());
        latencies
    };
}

/// Two significant digits (1%), up to a minute.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 2).expect("constant histogram bounds are valid")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking receiver leaves a histogram that is still a histogram.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Records one send-to-receive latency, in nanoseconds, in this thread's histogram.
pub fn record_latency(latency_ns: u64) {
    LATENCIES.with(|latencies| {
        // Beyond the bounds (a minute) is not recorded; nothing in a run takes that long.
        let _ = lock(latencies).record((latency_ns / 1000).max(1));
    });
}

/// Every latency recorded since the last call, from all threads; the histograms start over.
pub fn take_latencies() -> Histogram<u64> {
    let mut all = latency_histogram();
    for latencies in lock(&ALL_LATENCIES).iter() {
        let mut latencies = lock(latencies);
        // Same bounds everywhere, so adding cannot fail.
        let _ = all.add(&*latencies);
        latencies.reset();
    }
    all
}

/// Tracks one receiver's messages: per sender, the last sequence number.
pub struct Tally {
    last_seq: Vec<u64>,
    received: Received,
    epoch: Instant,
    delivered_total: Arc<AtomicU64>,
}

impl Tally {
    pub fn new(senders: usize, epoch: Instant, delivered_total: Arc<AtomicU64>) -> Self {
        Self {
            last_seq: vec![0; senders],
            received: Received::default(),
            epoch,
            delivered_total,
        }
    }

    /// Counts every bench message in `text` (a WebSocket frame or a chunk of SSE).
    pub fn count(&mut self, text: &str) {
        const MARK: &str = "\"message\":\"b ";
        static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(MARK));
        let now_ns = self.epoch.elapsed().as_nanos() as u64;
        let mut rest = text;
        let mut counted = 0;
        while let Some(at) = FINDER.find(rest.as_bytes()) {
            // MARK is ASCII, so the bytes after it start at a character boundary.
            rest = &rest[at + MARK.len()..];
            let mut fields = rest.splitn(4, ' ');
            let (Some(sender), Some(seq), Some(sent_ns)) = (
                fields.next().and_then(|f| f.parse::<usize>().ok()),
                fields.next().and_then(|f| f.parse::<u64>().ok()),
                fields.next().and_then(|f| f.parse::<u64>().ok()),
            ) else {
                continue;
            };
            counted += 1;
            if let Some(last) = self.last_seq.get_mut(sender) {
                if seq <= *last {
                    self.received.duplicates_or_reordered += 1;
                } else {
                    *last = seq;
                }
            }
            record_latency(now_ns.saturating_sub(sent_ns));
        }
        if counted > 0 {
            self.received.delivered += counted;
            self.delivered_total.fetch_add(counted, Ordering::Relaxed);
        }
    }

    pub fn finish(self) -> Received {
        self.received
    }
}

/// A bench chat message: `b <sender> <seq> <sent ns> <padding>`.
pub fn bench_message(sender: usize, seq: u64, epoch: Instant, size: usize) -> String {
    let mut message = format!("b {sender} {seq} {} ", epoch.elapsed().as_nanos());
    while message.len() < size {
        message.push('x');
    }
    message
}

/// A sender's writing half, shared with its reading half, which answers Engine.IO pings on it.
pub type WsSink = Arc<tokio::sync::Mutex<SplitSink<Ws, Message>>>;

/// What a receiver reads: a whole connection (a member that only receives: the halves' lock
/// would cost every read), or a sender's reading half.
pub enum Incoming {
    Whole(Box<Ws>),
    Half(SplitStream<Ws>, WsSink),
}

impl Incoming {
    async fn next(&mut self) -> Option<tokio_tungstenite::tungstenite::Result<Message>> {
        match self {
            Self::Whole(ws) => ws.next().await,
            Self::Half(stream, _) => stream.next().await,
        }
    }

    async fn send(&mut self, text: &'static str) -> tokio_tungstenite::tungstenite::Result<()> {
        match self {
            Self::Whole(ws) => ws.send(Message::text(text)).await,
            Self::Half(_, sink) => sink.lock().await.send(Message::text(text)).await,
        }
    }
}

/// Reads a connection until it closes or `stop` resolves, tallying bench messages and
/// answering what the transport asks to be answered.
pub async fn receive(
    mut incoming: Incoming,
    transport: Transport,
    mut tally: Tally,
    stop: tokio_util::sync::CancellationToken,
) -> Received {
    let chat_event = transport.chat_event();
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => break,
            message = incoming.next() => message,
        };
        match message {
            // Room events only: the sender's acks carry its message too.
            Some(Ok(Message::Text(text))) if text.as_str().starts_with(chat_event) => {
                tally.count(text.as_str())
            }
            Some(Ok(Message::Text(text))) => {
                if let Some(answer) = transport.answer(text.as_str())
                    && incoming.send(answer).await.is_err()
                {
                    break;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    tally.finish()
}

/// How a chat room event's WebSocket frame starts.
const CHAT_EVENT: &str = r#"{"event":"create:chat:success""#;

/// An HTTP/1 connection for REST calls and SSE streams.
pub struct Http {
    sender: http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl Http {
    pub async fn connect(target: &Target, n: usize) -> BenchResult<Self> {
        let stream = target.connect(n).await?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // Ends when the connection closes; nothing to report.
            let _ = connection.await;
        });
        Ok(Self {
            sender,
            host: target.host.clone(),
        })
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> BenchResult<hyper::Request<Full<Bytes>>> {
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host);
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(body) => {
                builder = builder.header("content-type", "application/json");
                Full::new(Bytes::from(body))
            }
            None => Full::new(Bytes::new()),
        };
        Ok(builder.body(body)?)
    }

    /// A JSON request whose reply is read whole.
    pub async fn json(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> BenchResult<(u16, Bytes)> {
        let request = self.request(method, path, token, body)?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }

    /// Opens an SSE stream and tallies it until it ends or `stop` resolves.
    pub async fn receive_sse(
        mut self,
        path: &str,
        token: &str,
        mut tally: Tally,
        stop: tokio_util::sync::CancellationToken,
        opened: tokio::sync::oneshot::Sender<()>,
    ) -> BenchResult<Received> {
        let request = self.request("GET", path, Some(token), None)?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        if response.status() != 200 {
            return Err(format!("SSE stream refused: {}", response.status()).into());
        }
        let _ = opened.send(());
        let mut body = response.into_body();
        // Events may be split across chunks: keep the unfinished tail.
        let mut pending = String::new();
        loop {
            let frame = tokio::select! {
                () = stop.cancelled() => break,
                frame = body.frame() => frame,
            };
            let Some(Ok(frame)) = frame else { break };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.push_str(&String::from_utf8_lossy(&data));
            if let Some(end) = pending.rfind("\n\n") {
                tally.count(&pending[..end]);
                pending.drain(..end + 2);
            }
        }
        Ok(tally.finish())
    }
}
