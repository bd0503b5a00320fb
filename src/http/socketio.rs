//! The socket.io transport (`/socket.io/`): the original tutorial's clients, unchanged.
//!
//! Socket.IO v5 over Engine.IO v4 is socketioxide's, as an axum layer: the handshake, long
//! polling, the WebSocket upgrade, heartbeats and packet framing. What a client event does is
//! not: each socket is frame I/O over a [`Session`], exactly as `http::ws` is, so joins,
//! names, limits, rate limits, ownership and ordering are the same code on both.
//!
//! Ordering. socketioxide runs an event handler as a task of its own per packet, and two
//! tasks spawned together may run in either order; so nothing here is an ordinary handler.
//! [`Forward`] is called synchronously by the library as each packet is read and only queues
//! it; one task per socket ([`Connection`]) takes the packets in order, hands each to the
//! session and writes its reply (the client's acknowledgement callback, or an `error` event)
//! before it gives the socket any room frame again: every reply precedes the broadcasts its
//! event caused.
//!
//! Admission happens in the namespace's connect middleware, which the library awaits before
//! it sends the CONNECT packet: the connection cap is taken and the packet queue is in place
//! before the client can emit anything. The connection task starts once the socket is
//! connected; a socket refused or lost in between takes its queue and cap with it.
//!
//! Ending. A socket.io DISCONNECT packet tells a client not to reconnect, so the server sends
//! one only when the client has to act (too slow, events lost, hammering): its `disconnect`
//! handler sees "io server disconnect" and the app reconnects and resumes. On shutdown the
//! transports are closed instead (`SocketIo::close`), which clients take as a network
//! failure and reconnect from by themselves. A WebSocket transport is not closed at
//! `WS_MAX_LIFETIME_SECS`: the platform's cut at its request limit is also a transport close.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::value::RawValue;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts, MessageHandler, Value};
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::Socket;
use socketioxide::{SendError, SocketError, SocketIo};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};

use super::{AppState, MAX_BODY_BYTES};
use crate::error::{ApiError, ErrorDetail};
use crate::hub::{Batch, Inbox};
use crate::identity::IdToken;
use crate::limits::{ClientIp, Refused, StreamSlot, WsEventLimiter};
use crate::protocol::{self, Chat, ClientEvent, EventName};
use crate::session::{Answer, Close, Session};
use crate::telemetry;

/// Where socket.io clients connect (their default path).
pub const PATH: &str = "/socket.io";
/// Client packets queued for one socket's task; a client that gets this far ahead of the
/// server is far past the event rate limit and is disconnected.
const PACKET_QUEUE: usize = 1024;
/// The histogram of client event handling times.
const SOCKETIO_EVENT_DURATION: &str = "chat_socketio_event_duration_seconds";
/// How often a socket whose outgoing buffer is full retries its DISCONNECT packet.
const DISCONNECT_RETRY: Duration = Duration::from_millis(100);

/// The socket.io layer for the app's router, with the namespace `/` served by sessions.
pub fn layer(state: &AppState) -> SocketIoLayer {
    let settings = &state.realtime.settings;
    let (layer, io) = SocketIo::builder()
        .req_path(PATH)
        // A client that answers no ping for an interval is gone: a polling client that stops
        // polling is dropped, and its presence released, within two intervals.
        .ping_interval(settings.ping_every)
        .ping_timeout(settings.ping_every)
        // API.md: a packet over 64 KiB ends the socket, on either transport.
        .max_payload(MAX_BODY_BYTES as u64)
        .ws_max_message_size(MAX_BODY_BYTES)
        .ws_max_frame_size(MAX_BODY_BYTES)
        // As on `/ws`: most sockets are idle, and client events are small; a larger packet
        // takes more reads, not more memory.
        .ws_read_buffer_size(512)
        // The socket's outgoing packets: a client this far behind is too slow, as on `/ws`.
        .max_buffer_size(state.realtime.sessions.queue_len)
        .build_layer();
    let admit_state = state.clone();
    let admit = move |socket: SocketRef, TryData(auth): TryData<HandshakeAuth>| {
        let state = admit_state.clone();
        // Any other handshake `auth` (or none) is no token: joins then need `idToken` each.
        let id_token = auth.ok().and_then(|auth| auth.id_token);
        async move { admit(&socket, &state, id_token.as_deref().map(IdToken::presented)) }
    };
    let connect_state = state.clone();
    let connected = move |socket: SocketRef| {
        let state = connect_state.clone();
        async move { start(socket, state) }
    };
    io.ns("/", connected.with(admit));
    let stopping = state.realtime.stopping.clone();
    state.realtime.tasks.spawn(async move {
        stopping.cancelled().await;
        io.close().await;
    });
    layer
}

/// What socket.io's requests pass before the library sees them: `ALLOWED_ORIGINS`, polling
/// and the WebSocket upgrade alike (the router's CORS layer adds the polling responses'
/// headers), and the REST rate limit for each new Engine.IO session (a request without a
/// `sid`), whose state the library keeps for up to its connect timeout even if the client
/// never returns.
pub async fn guard(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    request: Request,
    next: Next,
) -> Response {
    if is_socketio_path(request.uri().path()) {
        if !state.origins.allows_request(request.headers()) {
            return ApiError::forbidden("this origin may not connect here").into_response();
        }
        if opens_session(request.uri().query()) {
            if let Err(limited) = state.limits.check_rest(client) {
                return limited.into_response();
            }
            return next.run(detached(request)).await;
        }
    }
    next.run(request).await
}

/// The request with its headers and URI copied out of hyper's read buffer. The library keeps
/// a session's opening request (`req_parts`) for the session's life, and those point into the
/// connection's read buffer (8 KiB), which they would keep alive for every idle socket.
fn detached(request: Request) -> Request {
    let (mut parts, body) = request.into_parts();
    let mut headers = HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        // hyper admits no value `from_bytes` refuses; should one come, it stays as it was.
        let copy = HeaderValue::from_bytes(value.as_bytes()).map_or_else(
            |_| value.clone(),
            |mut copy| {
                copy.set_sensitive(value.is_sensitive());
                copy
            },
        );
        headers.append(name.clone(), copy);
    }
    parts.headers = headers;
    if let Ok(uri) = Uri::try_from(parts.uri.to_string()) {
        parts.uri = uri;
    }
    Request::from_parts(parts, body)
}

/// Whether a socket.io request opens an Engine.IO session: it names none (`sid`).
fn opens_session(query: Option<&str>) -> bool {
    !query.is_some_and(|query| query.split('&').any(|pair| pair.starts_with("sid=")))
}

/// Whether a request is socket.io's (its layer answers it).
pub fn is_socketio_path(path: &str) -> bool {
    path.strip_prefix(PATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The handshake's `auth` object: `{idToken}` when the app signs its users in (API.md).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct HandshakeAuth {
    #[serde(default)]
    id_token: Option<String>,
}

/// What the connect middleware prepared for the socket's task, kept in the socket's
/// extensions until the socket is connected.
struct Admitted {
    client: IpAddr,
    /// The handshake's JWT, for joins that carry none.
    id_token: Option<IdToken>,
    slot: StreamSlot,
    packets: mpsc::Receiver<Box<Packet>>,
    gone: CancellationToken,
}

/// The extension slot [`Admitted`] waits in (extensions hold `Clone` values).
#[derive(Clone)]
struct Pending(Arc<Mutex<Option<Admitted>>>);

/// A connection refused at the namespace's connect: the client's `connect_error` says why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {}", .0.code(), .0)]
struct Refusal(ApiError);

/// The connect middleware: the connection cap, and the queue the socket's packets go to.
fn admit(socket: &SocketRef, state: &AppState, id_token: Option<IdToken>) -> Result<(), Refusal> {
    let client = socket
        .req_parts()
        .extensions
        .get::<ClientIp>()
        .map(|ClientIp(ip)| *ip)
        .ok_or(Refusal(ApiError::Unavailable))?;
    let slot = state.limits.open_stream(client, true).map_err(Refusal)?;
    let (sender, packets) = mpsc::channel(PACKET_QUEUE);
    let gone = CancellationToken::new();
    socket.on_fallback(Forward { sender });
    let on_gone = gone.clone();
    socket.on_disconnect(move || {
        on_gone.cancel();
        std::future::ready(())
    });
    socket
        .extensions
        .insert(Pending(Arc::new(Mutex::new(Some(Admitted {
            client,
            id_token,
            slot,
            packets,
            gone,
        })))));
    Ok(())
}

/// The connect handler: the socket is connected, its task starts.
fn start(socket: SocketRef, state: AppState) {
    let admitted = socket
        .extensions
        .remove::<Pending>()
        .and_then(|Pending(pending)| pending.lock().ok()?.take());
    let Some(admitted) = admitted else {
        // Only `admit` connects a socket, and it leaves this for the handler.
        tracing::error!("a socket.io socket connected without its admission");
        return;
    };
    let tasks = state.realtime.tasks.clone();
    tasks.spawn(Connection::new(socket, state, admitted).run());
}

/// A client packet as the library read it: the event's name and arguments, and its
/// acknowledgement (if the client asked for one).
struct Packet {
    value: Value,
    ack: AckSender,
    wants_ack: bool,
}

/// The socket's one message handler: queues each packet, in order, for the socket's task.
struct Forward {
    /// Boxed: the channel allocates its first block of slots at once, for every socket.
    sender: mpsc::Sender<Box<Packet>>,
}

/// [`Forward`]'s marker for the library's handler trait.
struct Forwarded;

impl MessageHandler<LocalAdapter, Forwarded> for Forward {
    fn call(&self, socket: Arc<Socket>, mut value: Value, ack_id: Option<i64>) {
        let Ok(ack) = AckSender::from_message_parts(&socket, &mut value, &ack_id);
        let packet = Box::new(Packet {
            value,
            ack,
            wants_ack: ack_id.is_some(),
        });
        if self.sender.try_send(packet).is_err() {
            // A thousand packets ahead of the server: far past the event rate limit, and the
            // library reads on regardless (no backpressure as on `/ws`).
            tracing::warn!(
                queued = PACKET_QUEUE,
                "a socket.io client is too far ahead of the server; disconnecting it"
            );
            let _gone_already = SocketRef::from(socket).disconnect();
        }
    }
}

/// Why the socket's task ended.
enum End {
    /// The client disconnected or its transport closed.
    Gone,
    Close(Close),
}

struct Connection {
    socket: SocketRef,
    /// This socket's place under its client's connection cap.
    _slot: StreamSlot,
    events: Option<WsEventLimiter>,
    session: Session,
    inbox: Inbox,
    packets: mpsc::Receiver<Box<Packet>>,
    /// Cancelled when the library disconnects the socket.
    gone: CancellationToken,
    delivery: telemetry::DeliveryLatency,
}

impl Connection {
    fn new(socket: SocketRef, state: AppState, admitted: Admitted) -> Self {
        let Admitted {
            client,
            id_token,
            slot,
            packets,
            gone,
        } = admitted;
        let (mut session, inbox) = Session::open(state.realtime.sessions.clone(), client);
        session.set_id_token(id_token);
        metrics::gauge!("chat_open_connections", "transport" => "socketio").increment(1.0);
        let events = state.limits.ws_event_limiter();
        Self {
            socket,
            _slot: slot,
            events,
            session,
            inbox,
            packets,
            gone,
            delivery: telemetry::DeliveryLatency::new("socketio"),
        }
    }

    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn would store the connection twice in its task"
    )]
    fn run(mut self) -> impl Future<Output = ()> + Send {
        async move {
            let end = self.serve().await;
            self.session.end();
            match end {
                // Shutdown closes every transport (see `layer`).
                End::Gone | End::Close(Close::Restarting) => {}
                End::Close(close) => self.disconnect(close).await,
            }
            metrics::gauge!("chat_open_connections", "transport" => "socketio").decrement(1.0);
        }
    }

    async fn serve(&mut self) -> End {
        let closed = self.inbox.closed.clone();
        let closed = closed.cancelled();
        tokio::pin!(closed);
        let gone = self.gone.clone();
        let gone = gone.cancelled();
        tokio::pin!(gone);
        loop {
            tokio::select! {
                biased;
                () = &mut gone => return End::Gone,
                () = &mut closed => return self.closed(),
                batch = self.inbox.recv() => {
                    // Cannot be None: the session holds a sender (its mailbox).
                    let Some(batch) = batch else { return End::Gone };
                    if let Err(end) = self.forward(&batch) {
                        return end;
                    }
                }
                packet = self.packets.recv() => {
                    let Some(packet) = packet else { return End::Gone };
                    // Boxed: handling an event awaits the store, and that future inline would
                    // make every idle socket's task larger.
                    tokio::select! {
                        biased;
                        () = &mut gone => return End::Gone,
                        () = &mut closed => return self.closed(),
                        handled = Box::pin(self.on_packet(packet)) => if let Err(end) = handled {
                            return end;
                        },
                    }
                }
            }
        }
    }

    fn closed(&self) -> End {
        End::Close(self.session.why_closed(&self.inbox))
    }

    /// Emits the frames of `batch` the session admits.
    fn forward(&mut self, batch: &Batch) -> Result<(), End> {
        let mut oldest = None;
        for frame in batch.iter() {
            if self.session.admit(frame) {
                emit_frame(&self.socket, frame)?;
                if let Some(event) = frame.event() {
                    oldest.get_or_insert(event.id);
                }
            }
        }
        if let Some(oldest) = oldest {
            self.delivery.record_write(oldest);
        }
        Ok(())
    }

    /// Handles one client packet, then the packet that ended a run of chat posts taken with
    /// it (see `post_chat`); that one takes no run of its own, so a client that keeps
    /// sending cannot keep the socket from its inbox.
    async fn on_packet(&mut self, packet: Box<Packet>) -> Result<(), End> {
        let mut next = Some(self.receive(*packet)?);
        let mut may_take_run = true;
        while let Some(incoming) = next.take() {
            next = self.on_event(incoming, may_take_run).await?;
            may_take_run = false;
        }
        Ok(())
    }

    /// A client packet, past the event limit and decoded.
    fn receive(&self, packet: Packet) -> Result<Incoming, End> {
        let Packet {
            value,
            ack,
            wants_ack,
        } = packet;
        let reply = Reply { ack, wants_ack };
        let decoded = match self.events.as_ref().map(WsEventLimiter::check) {
            None | Some(Ok(())) => decode(&value, self.session.core().rooms.max_message_bytes()),
            Some(Err(Refused::Hammering)) => return Err(End::Close(Close::Hammering)),
            Some(Err(Refused::Limited(limited))) => (EventName::Malformed, Err(limited)),
        };
        let (name, event) = decoded;
        Ok(Incoming { name, event, reply })
    }

    /// Handles one client event and sends its reply; a chat post may take the posts queued
    /// behind it (`may_take_run`), and returns the packet that ended the run, if any.
    async fn on_event(
        &mut self,
        incoming: Incoming,
        may_take_run: bool,
    ) -> Result<Option<Incoming>, End> {
        let started = Instant::now();
        let Incoming { name, event, reply } = incoming;
        let label = name.as_str();
        let span = crate::client_event_span!("socketio.event", "socketio", label);
        if let Ok(event) = &event {
            span.record("chat.room", event.room().as_str());
        }
        let outcome = match event {
            Ok(ClientEvent::CreateChat(chat)) => {
                return self
                    .post_chat(reply, chat, may_take_run, &span, started)
                    .await;
            }
            other => {
                self.session
                    .handle_traced(other, label, &span, SOCKETIO_EVENT_DURATION, started)
                    .await
            }
        };
        match outcome {
            Ok(Answer {
                reply: data,
                follow,
            }) => {
                reply.send(&self.socket, Ok(&data))?;
                for frame in follow {
                    if self.session.admit(&frame) {
                        emit_frame(&self.socket, &frame)?;
                    }
                }
            }
            Err(err) => reply.send(&self.socket, Err::<&(), _>(err))?,
        }
        Ok(None)
    }

    /// `create:chat`, and the chat posts already queued behind it that the session lets join
    /// its run (see `session::PostRun`): stored in one step, then answered in order. A sender
    /// faster than one store round trip per post would otherwise fall further behind with
    /// every post. Returns the packet that ended the run, if any.
    async fn post_chat(
        &mut self,
        reply: Reply,
        chat: Chat,
        may_take_run: bool,
        span: &Span,
        started: Instant,
    ) -> Result<Option<Incoming>, End> {
        let mut run = self
            .session
            .start_run(chat, may_take_run)
            .instrument(span.clone())
            .await;
        let mut replies = vec![reply];
        let mut after = None;
        while run.wants_more() {
            let Ok(packet) = self.packets.try_recv() else {
                break;
            };
            match self.receive(*packet)? {
                Incoming {
                    event: Ok(ClientEvent::CreateChat(next)),
                    reply,
                    ..
                } if self.session.run_takes(&run, &next) => {
                    replies.push(reply);
                    run.push(next);
                }
                other => {
                    after = Some(other);
                    break;
                }
            }
        }
        let answers = self
            .session
            .post_run_traced(run, span, SOCKETIO_EVENT_DURATION, started)
            .await;
        for (reply, answer) in replies.into_iter().zip(answers) {
            reply.send(&self.socket, answer)?;
        }
        Ok(after)
    }

    /// Sends a DISCONNECT packet saying why (the client does not reconnect by itself after
    /// one). A socket whose outgoing buffer is full cannot take it yet: retried until the
    /// client has read enough, or its transport closes (the heartbeat closes it meanwhile if
    /// the client reads nothing).
    async fn disconnect(&self, close: Close) {
        tracing::debug!(reason = close.reason(), "disconnecting a socket.io client");
        loop {
            match self.socket.clone().disconnect() {
                Err(SocketError::InternalChannelFull) => {}
                Ok(()) | Err(_) => return,
            }
            tokio::select! {
                () = self.gone.cancelled() => return,
                () = tokio::time::sleep(DISCONNECT_RETRY) => {}
            }
        }
    }
}

/// Emits one room frame: its event name, and its data with its `id`.
fn emit_frame(socket: &SocketRef, frame: &crate::hub::Frame) -> Result<(), End> {
    socket
        .emit(frame.name(), frame.socketio_data())
        .map_err(|err| match err {
            SendError::Socket(SocketError::InternalChannelFull) => too_slow(),
            _ => End::Gone,
        })
}

/// A socket whose outgoing buffer (the library's) is full: counted with the connections whose
/// queue overflowed in the hub.
fn too_slow() -> End {
    metrics::counter!("chat_slow_client_disconnects_total").increment(1);
    End::Close(Close::TooSlow)
}

/// The answer to one client event: the client's acknowledgement callback when it passed one,
/// else an `error` event for a refusal (a success is answered by the room's events alone, as
/// the original server did).
struct Reply {
    ack: AckSender,
    wants_ack: bool,
}

/// A client packet, past the event limit and decoded, with how to answer it.
struct Incoming {
    name: EventName,
    event: Result<ClientEvent, ApiError>,
    reply: Reply,
}

/// An acknowledgement's refusal: `{error: {code, message}}`.
#[derive(Serialize)]
struct AckError {
    error: ErrorDetail,
}

/// The `error` event: `{message, code}`, as the original server's (it sent `message` alone).
#[derive(Serialize)]
struct ErrorEvent {
    message: String,
    code: &'static str,
}

impl Reply {
    fn send<T: Serialize>(
        self,
        socket: &SocketRef,
        answer: Result<T, ApiError>,
    ) -> Result<(), End> {
        let sent = match (answer, self.wants_ack) {
            (Ok(data), true) => self.ack.send(&data),
            (Ok(_), false) => Ok(()),
            (Err(err), true) => self.ack.send(&AckError {
                error: ErrorDetail {
                    code: err.code(),
                    message: sentence(&err),
                },
            }),
            (Err(err), false) => socket.emit(
                "error",
                &ErrorEvent {
                    message: sentence(&err),
                    code: err.code(),
                },
            ),
        };
        sent.map_err(|err| match err {
            SendError::Socket(SocketError::InternalChannelFull) => too_slow(),
            _ => End::Gone,
        })
    }
}

/// An error's message in the original server's words where it had some (its clients may show
/// or compare them), else this contract's.
fn sentence(err: &ApiError) -> String {
    match err {
        ApiError::RoomExists => "Room already exist.".to_owned(),
        ApiError::RoomNotFound => "Room does not exist.".to_owned(),
        other => other.to_string(),
    }
}

/// A packet's event name and its client event. The packet's text is the JSON array
/// `[name, ...arguments]`; an event takes one argument, its data (none reads as `null`, which
/// every event refuses). Binary attachments are refused: no client event has binary data.
fn decode(value: &Value, max_message_bytes: usize) -> (EventName, Result<ClientEvent, ApiError>) {
    let text = match value {
        Value::Str(text, None) => text.as_str(),
        Value::Str(_, Some(_)) | Value::Bytes(_) => {
            return (
                EventName::Malformed,
                Err(ApiError::invalid("binary data is not accepted; send JSON")),
            );
        }
    };
    let Ok(parts) = serde_json::from_str::<Vec<&RawValue>>(text) else {
        return (
            EventName::Malformed,
            Err(ApiError::invalid("packets must be [event, data]")),
        );
    };
    let name = parts
        .first()
        .and_then(|name| serde_json::from_str::<String>(name.get()).ok());
    let Some(name) = name else {
        return (
            EventName::Malformed,
            Err(ApiError::invalid("an event's name must be a string")),
        );
    };
    match parts.as_slice() {
        [_] => protocol::decode_named(&name, "null", max_message_bytes),
        [_, data] => protocol::decode_named(&name, data.get(), max_message_bytes),
        _ => (
            protocol::decode_named(&name, "null", max_message_bytes).0,
            Err(ApiError::invalid(
                "an event takes one argument, its data object",
            )),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(text: &str) -> (EventName, Result<ClientEvent, ApiError>) {
        decode(&Value::Str(text.to_owned().into(), None), 4096)
    }

    fn refusal(text: &str) -> String {
        match decoded(text).1 {
            Err(err) => format!("{}: {err}", err.code()),
            Ok(event) => panic!("{text} decoded to {event:?}"),
        }
    }

    #[test]
    fn an_event_is_its_name_and_one_data_argument() {
        let (name, event) = decoded(r#"["create:room",{"roomId":"lobby","username":"alice"}]"#);
        assert_eq!(name, EventName::CreateRoom);
        assert!(
            matches!(event, Ok(ClientEvent::CreateRoom(join)) if join.room.as_str() == "lobby")
        );
        // An escaped name is the same name.
        let (name, _) = decoded(r#"["create\u003aroom",{"roomId":"lobby","username":"alice"}]"#);
        assert_eq!(name, EventName::CreateRoom);
    }

    #[test]
    fn malformed_packets_are_invalid_requests() {
        for text in [
            r#"{"event":"create:room"}"#,
            r#"[]"#,
            r#"[42,{"roomId":"lobby"}]"#,
            r#"["create:room"]"#,
            r#"["create:room","lobby"]"#,
            r#"["create:room",{"roomId":"lobby","username":"a"},{"extra":true}]"#,
            r#"["create:room",{"roomId":"lobby","roomId":"other","username":"a"}]"#,
            r#"["no:such:event",{}]"#,
        ] {
            assert!(refusal(text).starts_with("invalid_request: "), "{text}");
        }
        let with_binary = Value::Str(
            r#"["create:chat",{"_placeholder":true,"num":0}]"#.to_owned().into(),
            Some(Default::default()),
        );
        assert!(matches!(
            decode(&with_binary, 4096),
            (EventName::Malformed, Err(ApiError::InvalidRequest(_)))
        ));
    }

    #[test]
    fn a_message_over_the_limit_is_payload_too_large() {
        let text = format!(
            r#"["create:chat",{{"roomId":"lobby","message":"{}"}}]"#,
            "x".repeat(4097)
        );
        assert!(refusal(&text).starts_with("payload_too_large: "));
    }

    #[test]
    fn a_request_without_a_sid_opens_a_session() {
        assert!(opens_session(None));
        assert!(opens_session(Some("EIO=4&transport=polling&t=PmX1")));
        assert!(opens_session(Some("EIO=4&transport=websocket&xsid=1")));
        assert!(!opens_session(Some("EIO=4&transport=polling&sid=abc")));
        assert!(!opens_session(Some("sid=abc&EIO=4&transport=websocket")));
    }

    #[test]
    fn the_original_sentences_replace_ours_where_the_original_had_one() {
        assert_eq!(sentence(&ApiError::RoomExists), "Room already exist.");
        assert_eq!(sentence(&ApiError::RoomNotFound), "Room does not exist.");
        assert_eq!(
            sentence(&ApiError::UsernameTaken),
            "Username already exists, please choose another username."
        );
        assert_eq!(
            sentence(&ApiError::NotMember),
            ApiError::NotMember.to_string()
        );
    }
}
