//! The WebSocket transport (`GET /ws`): API.md's client events in, one `ack` or `error` per
//! client event, and the room events of every room the connection joined or resumed.
//!
//! One task per connection runs a loop over: the client's frames, the connection's inbox
//! (frames from the hub), pings, the lifetime limit and shutdown. Client events are handled
//! one at a time and their reply is written before the loop reads the inbox again, which is
//! what guarantees that an `ack` precedes every broadcast its event caused. Subscriptions are
//! made *before* the join they belong to, and frames older than the join are skipped, so the
//! connection sees its own join event and everything after it exactly once.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use serde_json::{Value, json};
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::AppState;
use crate::domain::{EventId, RoomId, TokenHash, Username};
use crate::error::ApiError;
use crate::hub::{Batch, Frame, Inbox, Mailbox, Subscription, mailbox};
use crate::limits::{ClientIp, Refused, StreamSlot, WsEventLimiter};
use crate::presence::Hold;
use crate::protocol::{self, Chat, ClientEvent, Decoded, Join, Remove, Resume};
use crate::telemetry;

/// API.md: a WebSocket frame is at most 64 KiB (close code 1009 beyond).
const MAX_FRAME_BYTES: usize = 64 * 1024;
/// How many queued frames one socket write takes, at most about.
const WRITE_BATCH: usize = 64;

const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_RESTART: u16 = 1012;
const CLOSE_SLOW: u16 = 1013;
const RESTARTING: &str = "server restarting, reconnect and resume";
const TOO_SLOW: &str = "too slow, reconnect and resume";

pub async fn upgrade(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // Browsers send Origin on WebSocket upgrades but apply no CORS to them: check it here, or
    // any site could use its visitors' browsers against this server.
    if !state.origins.allows_request(&headers) {
        return ApiError::forbidden("this origin may not open WebSockets here").into_response();
    }
    let slot = match state.limits.open_stream(client, true) {
        Ok(slot) => slot,
        Err(err) => return err.into_response(),
    };
    // The upgrade request's span ends with the 101; the connection's event spans link to it.
    let upgraded_in = Span::current().context().span().span_context().clone();
    // Small buffers: most connections are idle most of the time, and tungstenite's defaults
    // (128 KiB each way) would dominate the memory of an idle connection. Client events are
    // a few hundred bytes; a larger frame takes more reads, not more memory than it needs.
    ws.read_buffer_size(512)
        .write_buffer_size(4 * 1024)
        .max_write_buffer_size(MAX_FRAME_BYTES * 4)
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| {
            // A task of its own, so that axum's upgrade task (and the upgrade's state it
            // keeps) ends here instead of living as long as the connection.
            let tasks = state.realtime.tasks.clone();
            tasks.spawn(Connection::new(socket, state, client, slot, upgraded_in).run());
            std::future::ready(())
        })
}

/// One membership this connection holds.
struct Held {
    username: Username,
    token_hash: TokenHash,
    /// Frames of this room before this id predate the membership and are skipped.
    from: EventId,
    /// Removals of this name before this id ended an earlier membership (resumed replays
    /// reach back past a leave and a new join).
    joined_at: EventId,
    /// Set when the member left on this connection: forward up to its removal, then drop.
    leaving_at: Option<EventId>,
    _presence: Option<Hold>,
    _subscription: Subscription,
}

/// The memberships of one connection: a handful at most (`MAX_ROOMS_PER_CONNECTION`), looked
/// up for every frame written, so a short list beats hashing the room id.
#[derive(Default)]
struct Holdings(Vec<(RoomId, Held)>);

impl Holdings {
    fn get(&self, room: &RoomId) -> Option<&Held> {
        self.0
            .iter()
            .find(|(id, _)| id == room)
            .map(|(_, held)| held)
    }

    fn get_mut(&mut self, room: &RoomId) -> Option<&mut Held> {
        self.0
            .iter_mut()
            .find(|(id, _)| id == room)
            .map(|(_, held)| held)
    }

    fn contains_key(&self, room: &RoomId) -> bool {
        self.get(room).is_some()
    }

    fn insert(&mut self, room: RoomId, held: Held) {
        match self.get_mut(&room) {
            Some(existing) => *existing = held,
            None => {
                // Most connections hold one room: no room for three more per connection.
                self.0.reserve_exact(1);
                self.0.push((room, held));
            }
        }
    }

    fn remove(&mut self, room: &RoomId) {
        self.0.retain(|(id, _)| id != room);
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

struct Connection {
    socket: WebSocket,
    state: AppState,
    client: IpAddr,
    /// This connection's place under its client's connection cap.
    _slot: StreamSlot,
    /// Client events per connection (`None` when rate limits are off).
    events: Option<WsEventLimiter>,
    mailbox: Mailbox,
    inbox: Inbox,
    held: Holdings,
    last_heard: Instant,
    /// The span of the upgrade request, linked from every client event's span: a connection
    /// lives up to an hour, too long to keep its events in the request's trace.
    upgraded_in: SpanContext,
    delivery: telemetry::DeliveryLatency,
}

/// Why the connection loop ended.
enum End {
    /// The peer closed or vanished: nothing more to send.
    Gone,
    Close(u16, &'static str),
}

/// The direct reply to a client event: `{"event": "ack"|"error", "ref"?, "data"}`.
#[derive(serde::Serialize)]
struct Reply<'a, T> {
    event: &'static str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a Value>,
    data: T,
}

/// What a handled client event sends: the reply, then (for `resume`) the replayed frames.
struct Outcome {
    ack: Value,
    replay: Vec<Arc<Frame>>,
}

impl Outcome {
    fn ack(ack: Value) -> Self {
        Self {
            ack,
            replay: Vec::new(),
        }
    }
}

impl Connection {
    fn new(
        socket: WebSocket,
        state: AppState,
        client: IpAddr,
        slot: StreamSlot,
        upgraded_in: SpanContext,
    ) -> Self {
        let (mailbox, inbox) = mailbox(
            state.realtime.settings.client_queue_len,
            &state.realtime.stopping,
        );
        metrics::gauge!("chat_open_connections", "transport" => "websocket").increment(1.0);
        let events = state.limits.ws_event_limiter();
        Self {
            socket,
            client,
            _slot: slot,
            events,
            state,
            mailbox,
            inbox,
            held: Holdings::default(),
            last_heard: Instant::now(),
            upgraded_in,
            delivery: telemetry::DeliveryLatency::new("websocket"),
        }
    }

    /// Not an `async fn`: one taking `self` by value stores it twice in the task (as the
    /// argument, and as the local it is moved into), which was most of an idle connection's
    /// memory.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn would store the connection twice in its task"
    )]
    fn run(mut self) -> impl Future<Output = ()> + Send {
        async move {
            let end = self.serve().await;
            // Let go of the rooms first: a client that does not read may hold up the close
            // frame.
            self.held.clear();
            if let End::Close(code, reason) = end {
                let close = Message::Close(Some(CloseFrame {
                    code,
                    reason: Utf8Bytes::from_static(reason),
                }));
                // A client that does not read may never take the close frame: bounded.
                let grace = if self.state.realtime.stopping.is_cancelled() {
                    Duration::from_secs(1)
                } else {
                    Duration::from_secs(5)
                };
                let _best_effort = tokio::time::timeout(grace, self.socket.send(close)).await;
            }
            metrics::gauge!("chat_open_connections", "transport" => "websocket").decrement(1.0);
        }
    }

    async fn serve(&mut self) -> End {
        let settings = self.state.realtime.settings.clone();
        // Pinned once: a fresh `cancelled()` per frame would register and unregister a waiter.
        let closed = self.inbox.closed.clone();
        let closed = closed.cancelled();
        tokio::pin!(closed);
        // One timer for both the pings and the lifetime: an idle connection's task carries
        // a single timer entry.
        let lifetime_ends = tokio::time::Instant::now() + settings.max_lifetime;
        let next_ping = |now: tokio::time::Instant| (now + settings.ping_every).min(lifetime_ends);
        let timer = tokio::time::sleep_until(next_ping(tokio::time::Instant::now()));
        tokio::pin!(timer);
        loop {
            // Frames before the client's own: polling the socket when a frame is already
            // waiting costs a read attempt per delivery. A client's events still get their
            // turn as soon as its queue is drained, which a client that keeps up makes happen.
            tokio::select! {
                biased;
                () = &mut closed => return self.closed(),
                batch = self.inbox.recv() => {
                    // Cannot be None: this connection holds a sender (its mailbox).
                    let Some(batch) = batch else { return End::Gone };
                    // A client that stops reading blocks the write: give up on it when its
                    // queue overflows meanwhile, or on shutdown. Boxed: one small allocation
                    // per socket write keeps the write's state out of every idle task.
                    tokio::select! {
                        biased;
                        () = &mut closed => return self.closed(),
                        end = Box::pin(self.forward(batch)) => if let Some(end) = end {
                            return end;
                        },
                    }
                }
                incoming = self.socket.recv() => {
                    self.last_heard = Instant::now();
                    match incoming {
                        None => return End::Gone,
                        Some(Err(err)) => return match err.into_inner().downcast_ref::<tungstenite::Error>() {
                            Some(tungstenite::Error::Capacity(_)) => End::Close(CLOSE_TOO_BIG, "frame larger than 64 KiB"),
                            _ => End::Gone,
                        },
                        Some(Ok(message)) => {
                            // The reply's write may block on a client that does not read.
                            // Boxed: handling an event awaits the store, and that future
                            // inline would make every idle connection's task kilobytes larger.
                            tokio::select! {
                                biased;
                                () = &mut closed => return self.closed(),
                                end = Box::pin(self.on_message(message)) => if let Some(end) = end {
                                    return end;
                                },
                            }
                        }
                    }
                }
                () = &mut timer => {
                    let now = tokio::time::Instant::now();
                    if now >= lifetime_ends {
                        return End::Close(CLOSE_RESTART, "connection lifetime reached, reconnect and resume");
                    }
                    if self.last_heard.elapsed() > settings.ping_every * 2 {
                        return End::Gone;
                    }
                    if self.socket.send(Message::Ping(bytes::Bytes::new())).await.is_err() {
                        return End::Gone;
                    }
                    timer.as_mut().reset(next_ping(now));
                }
            }
        }
    }

    /// Why the inbox closed: the server is stopping, or the client fell too far behind.
    fn closed(&self) -> End {
        if self.state.realtime.stopping.is_cancelled() {
            End::Close(CLOSE_RESTART, RESTARTING)
        } else {
            End::Close(CLOSE_SLOW, TOO_SLOW)
        }
    }

    /// Writes `first` and whatever else is queued (up to about `WRITE_BATCH` frames) with one
    /// flush: one socket write for all of them.
    async fn forward(&mut self, first: Batch) -> Option<End> {
        let mut next = Some(first);
        let mut written = 0;
        let mut oldest = None;
        while let Some(batch) = next.take() {
            for frame in batch.iter() {
                if let Some(text) = self.admit(frame) {
                    if self.socket.feed(Message::Text(text)).await.is_err() {
                        return Some(End::Gone);
                    }
                    oldest.get_or_insert(frame.event.id);
                    written += 1;
                }
            }
            if written < WRITE_BATCH {
                next = self.inbox.try_recv();
            }
        }
        if let Some(oldest) = oldest {
            if self.socket.flush().await.is_err() {
                return Some(End::Gone);
            }
            self.delivery.record_write(oldest);
        }
        None
    }

    /// Whether a frame is for a membership this connection holds (returning its text), and
    /// the bookkeeping when it ends one.
    fn admit(&mut self, frame: &Frame) -> Option<Utf8Bytes> {
        let event = &frame.event;
        let held = self.held.get(&event.room)?;
        if event.id < held.from {
            return None;
        }
        let ends_membership = held.leaving_at.is_some_and(|at| event.id >= at)
            || (event.id >= held.joined_at && frame.removes(&held.username));
        let text = frame.ws_text();
        if ends_membership {
            self.held.remove(&event.room);
        }
        Some(text)
    }

    async fn on_message(&mut self, message: Message) -> Option<End> {
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                return self
                    .reply_error(
                        None,
                        ApiError::invalid("binary frames are not accepted; send JSON text"),
                    )
                    .await;
            }
            Message::Ping(_) | Message::Pong(_) => return None,
            Message::Close(_) => return Some(End::Gone),
        };
        match self.events.as_ref().map(WsEventLimiter::check) {
            None | Some(Ok(())) => {}
            Some(Err(Refused::Hammering)) => {
                return Some(End::Close(CLOSE_POLICY, "too many events, slow down"));
            }
            Some(Err(Refused::Limited(limited))) => {
                return self
                    .reply_error(protocol::reference_of(text.as_str()), limited)
                    .await;
            }
        }
        let started = Instant::now();
        let Decoded {
            reference,
            name,
            event,
        } = protocol::decode(text.as_str(), self.state.rooms.max_message_bytes());
        let label = name.as_str();
        // Each client event is the root of its own trace, linked to the upgrade request.
        let span = tracing::info_span!(
            parent: None,
            "ws.event",
            otel.name = format!("ws {label}"),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            chat.event = label,
            chat.room = tracing::field::Empty,
            chat.outcome = tracing::field::Empty,
        );
        span.add_link(self.upgraded_in.clone());
        let outcome = match event {
            Ok(event) => {
                span.record("chat.room", event.room().as_str());
                self.handle(event).instrument(span.clone()).await
            }
            Err(err) => Err(err),
        };
        span.record(
            "chat.outcome",
            outcome.as_ref().map_or_else(ApiError::code, |_| "ack"),
        );
        if matches!(outcome, Err(ApiError::Unavailable)) {
            span.record("otel.status_code", "error");
        }
        metrics::histogram!("chat_ws_event_duration_seconds", "event" => label)
            .record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(outcome) => {
                let ack = Reply {
                    event: "ack",
                    reference: reference.as_ref(),
                    data: &outcome.ack,
                };
                if self.send_json(&ack).await.is_err() {
                    return Some(End::Gone);
                }
                for frame in outcome.replay {
                    if let Some(text) = self.admit(&frame)
                        && self.socket.feed(Message::Text(text)).await.is_err()
                    {
                        return Some(End::Gone);
                    }
                }
                if self.socket.flush().await.is_err() {
                    return Some(End::Gone);
                }
                None
            }
            Err(err) => self.reply_error(reference, err).await,
        }
    }

    async fn reply_error(&mut self, reference: Option<Value>, err: ApiError) -> Option<End> {
        let reply = Reply {
            event: "error",
            reference: reference.as_ref(),
            data: err.body(),
        };
        match self.send_json(&reply).await {
            Ok(()) => None,
            Err(()) => Some(End::Gone),
        }
    }

    async fn send_json(&mut self, reply: &impl serde::Serialize) -> Result<(), ()> {
        let text = serde_json::to_string(reply).map_err(|_| ())?;
        self.socket
            .send(Message::Text(Utf8Bytes::from(text)))
            .await
            .map_err(|_| ())
    }

    async fn handle(&mut self, event: ClientEvent) -> Result<Outcome, ApiError> {
        match event {
            ClientEvent::CreateRoom(join) => self.join(join, true).await,
            ClientEvent::AddMember(join) => self.join(join, false).await,
            ClientEvent::CreateChat(chat) => self.chat(chat).await,
            ClientEvent::RemoveMember(remove) => self.remove(remove).await,
            ClientEvent::Resume(resume) => self.resume(resume).await,
        }
    }

    fn ensure_not_held(&self, room: &RoomId) -> Result<(), ApiError> {
        if self.held.contains_key(room) {
            return Err(ApiError::invalid(
                "this connection already holds a membership in this room",
            ));
        }
        self.ensure_room_for_one_more()
    }

    fn ensure_room_for_one_more(&self) -> Result<(), ApiError> {
        if self.held.len() >= self.state.limits.max_rooms_per_connection {
            return Err(ApiError::forbidden(
                "this connection holds the most rooms it may; use another connection",
            ));
        }
        Ok(())
    }

    async fn join(&mut self, join: Join, create: bool) -> Result<Outcome, ApiError> {
        let Join {
            room,
            username,
            secret,
        } = join;
        // A room this connection holds exists, so creating it again is `room_exists`.
        if create {
            self.ensure_room_for_one_more()?;
        } else {
            self.ensure_not_held(&room)?;
        }
        // Subscribe first (live), so the join event and everything after it arrive here.
        let (subscription, _) = self
            .state
            .realtime
            .hub
            .subscribe(&room, None, &self.mailbox)
            .await?;
        let rooms = &self.state.rooms;
        let joined = if create {
            rooms
                .create_room(self.client, room.clone(), username, secret)
                .await?
        } else {
            rooms
                .join(self.client, room.clone(), username, secret)
                .await?
        };
        // A new room's events are all this member's to see; in an existing room, from its join.
        let from = if create {
            EventId::ZERO
        } else {
            joined.last_event_id
        };
        let presence = self
            .state
            .realtime
            .presence
            .hold(&room, joined.username.key())
            .await;
        self.held.insert(
            room.clone(),
            Held {
                username: joined.username.clone(),
                token_hash: joined.token.hash(),
                from,
                joined_at: from,
                leaving_at: None,
                _presence: Some(presence),
                _subscription: subscription,
            },
        );
        Ok(Outcome::ack(json!({
            "roomId": room.as_str(),
            "username": joined.username.as_str(),
            "token": joined.token.expose(),
            "lastEventId": joined.last_event_id,
        })))
    }

    async fn chat(&mut self, chat: Chat) -> Result<Outcome, ApiError> {
        let Chat {
            room,
            message,
            client_msg_id: idempotency_key,
            username: claimed,
            token,
        } = chat;
        let token_hash = match self
            .held
            .get(&room)
            .filter(|held| held.leaving_at.is_none())
        {
            Some(held) => {
                if claimed.is_some_and(|claimed| claimed.key() != held.username.key()) {
                    return Err(ApiError::forbidden(
                        "username is not the name this connection holds in the room",
                    ));
                }
                held.token_hash.clone()
            }
            None => {
                let token_hash = token.map(|token| token.hash()).ok_or(ApiError::NotMember)?;
                if let Some(claimed) = claimed {
                    let member = self
                        .state
                        .rooms
                        .authenticate(&room, &token_hash)
                        .await
                        .map_err(not_member)?;
                    if member.key() != claimed.key() {
                        return Err(ApiError::forbidden("username is not the token's member"));
                    }
                }
                token_hash
            }
        };
        let stored = self
            .state
            .rooms
            .post(room, token_hash, message, idempotency_key)
            .await
            .map_err(not_member)?;
        Ok(Outcome::ack(
            serde_json::to_value(stored).map_err(|_| ApiError::Unavailable)?,
        ))
    }

    async fn remove(&mut self, remove: Remove) -> Result<Outcome, ApiError> {
        let Remove {
            room,
            username: target,
            token,
        } = remove;
        let token_hash = match self
            .held
            .get(&room)
            .filter(|held| held.leaving_at.is_none())
        {
            Some(held) => held.token_hash.clone(),
            None => token.map(|token| token.hash()).ok_or(ApiError::NotMember)?,
        };
        let left_at = self
            .state
            .rooms
            .leave(&room, &token_hash, &target)
            .await
            .map_err(not_member)?;
        if let Some(held) = self.held.get_mut(&room)
            && held.token_hash == token_hash
        {
            held.leaving_at = Some(left_at);
            held._presence = None;
        }
        Ok(Outcome::ack(json!({
            "roomId": room.as_str(),
            "username": target.as_str(),
            "lastEventId": left_at,
        })))
    }

    async fn resume(&mut self, resume: Resume) -> Result<Outcome, ApiError> {
        let Resume {
            room,
            token,
            last_event_id: after,
        } = resume;
        self.ensure_not_held(&room)?;
        let token_hash = token.hash();
        let username = self.state.rooms.authenticate(&room, &token_hash).await?;
        let (subscription, replay) = self
            .state
            .realtime
            .hub
            .subscribe(&room, after, &self.mailbox)
            .await?;
        let presence = self
            .state
            .realtime
            .presence
            .hold(&room, username.key())
            .await;
        let replayed = replay.events.len();
        let joined_at = replay.joined_at(&username);
        self.held.insert(
            room.clone(),
            Held {
                username: username.clone(),
                token_hash,
                from: EventId::ZERO,
                joined_at,
                leaving_at: None,
                _presence: Some(presence),
                _subscription: subscription,
            },
        );
        Ok(Outcome {
            ack: json!({
                "roomId": room.as_str(),
                "username": username.as_str(),
                "replayed": replayed,
                "complete": replay.complete,
            }),
            replay: replay.events,
        })
    }
}

/// On WebSocket, an action for a room without a valid membership is `not_member`.
fn not_member(err: ApiError) -> ApiError {
    match err {
        ApiError::Unauthorized => ApiError::NotMember,
        other => other,
    }
}
