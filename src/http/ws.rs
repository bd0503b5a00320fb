//! The WebSocket transport (`GET /ws`): API.md's client events in, one `ack` or `error` per
//! client event, and the room events of every room the connection joined or resumed.
//!
//! One task per connection runs a loop over: the client's frames, the connection's inbox
//! (frames from the hub), pings, the lifetime limit and shutdown. Client events are handled
//! one at a time and their reply is written before the loop reads the inbox again, which is
//! what guarantees that an `ack` precedes every broadcast its event caused. Subscriptions are
//! made *before* the join they belong to, and frames older than the join are skipped, so the
//! connection sees its own join event and everything after it exactly once. Chat posts that
//! are already waiting in the socket behind one another go to the store as one step (one
//! round trip, stored in order) and their acks in one write.
//!
//! A frame RFC 6455 forbids a client to send ends the connection with a close frame that
//! says why (7.4.1), not a dropped socket: 1002 for a protocol violation (e.g. an unmasked
//! frame), 1007 for a text frame that is not UTF-8, 1009 for one over 64 KiB.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{FutureExt, SinkExt};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use serde_json::{Value, json};
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::AppState;
use crate::domain::{EventId, RoomId, TokenHash, Username};
use crate::error::ApiError;
use crate::hub::{Batch, Closed, Frame, Inbox, Mailbox, Subscription, mailbox};
use crate::limits::{ClientIp, Refused, StreamSlot, WsEventLimiter};
use crate::presence::Hold;
use crate::protocol::{self, Chat, ClientEvent, Decoded, Join, Remove, Resume};
use crate::store::NewMessage;
use crate::telemetry;

/// API.md: a WebSocket frame is at most 64 KiB (close code 1009 beyond).
const MAX_FRAME_BYTES: usize = 64 * 1024;
/// How many queued frames one socket write takes, at most about.
const WRITE_BATCH: usize = 64;
/// How many chat posts, already waiting in the socket, one store step takes at most.
const POST_RUN: usize = 32;

const CLOSE_PROTOCOL: u16 = 1002;
const CLOSE_NOT_UTF8: u16 = 1007;
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

/// A client frame, past the event limit and decoded.
enum Incoming {
    Event(Decoded),
    /// Refused before it was decoded: reply with this error.
    Refused(Option<Value>, ApiError),
    /// Nothing to answer (pings and pongs).
    Nothing,
    End(End),
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
                frame = self.socket.recv() => {
                    let incoming = self.receive(frame);
                    // The reply's write may block on a client that does not read. Boxed:
                    // handling an event awaits the store, and that future inline would make
                    // every idle connection's task kilobytes larger.
                    tokio::select! {
                        biased;
                        () = &mut closed => return self.closed(),
                        end = Box::pin(self.on_incoming(incoming)) => if let Some(end) = end {
                            return end;
                        },
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

    /// Why the inbox closed: the server is stopping, the room's log lost events this client
    /// had not received yet, or the client fell too far behind.
    fn closed(&self) -> End {
        if self.state.realtime.stopping.is_cancelled() {
            End::Close(CLOSE_RESTART, RESTARTING)
        } else if self.inbox.closed_because() == Some(Closed::Gap) {
            End::Close(CLOSE_RESTART, "events were lost; resume to be told")
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

    /// Reads one frame from the client: past the event limit and decoded.
    fn receive(&mut self, frame: Option<Result<Message, axum::Error>>) -> Incoming {
        self.last_heard = Instant::now();
        let text = match frame {
            None | Some(Ok(Message::Close(_))) => return Incoming::End(End::Gone),
            Some(Err(err)) => return Incoming::End(read_failed(err)),
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                return Incoming::Refused(
                    None,
                    ApiError::invalid("binary frames are not accepted; send JSON text"),
                );
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Incoming::Nothing,
        };
        match self.events.as_ref().map(WsEventLimiter::check) {
            None | Some(Ok(())) => {}
            Some(Err(Refused::Hammering)) => {
                return Incoming::End(End::Close(CLOSE_POLICY, "too many events, slow down"));
            }
            Some(Err(Refused::Limited(limited))) => {
                return Incoming::Refused(protocol::reference_of(text.as_str()), limited);
            }
        }
        Incoming::Event(protocol::decode(
            text.as_str(),
            self.state.rooms.max_message_bytes(),
        ))
    }

    /// Handles a client frame, then the frame that ended a run of chat posts taken with it
    /// (see `post_chat`); that one takes no run of its own, so a client that keeps sending
    /// cannot keep the connection from its inbox.
    async fn on_incoming(&mut self, incoming: Incoming) -> Option<End> {
        let mut next = Some(incoming);
        let mut may_take_run = true;
        while let Some(incoming) = next.take() {
            match incoming {
                Incoming::Event(decoded) => match self.on_event(decoded, may_take_run).await {
                    Ok(after) => next = after,
                    Err(end) => return Some(end),
                },
                Incoming::Refused(reference, err) => {
                    if let Err(end) = self.reply_error(reference, err).await {
                        return Some(end);
                    }
                }
                Incoming::Nothing => {}
                Incoming::End(end) => return Some(end),
            }
            may_take_run = false;
        }
        None
    }

    /// Handles one client event and writes its reply; a chat post may take the posts queued
    /// behind it (`may_take_run`), and answers the frame that ended the run, if any.
    async fn on_event(
        &mut self,
        decoded: Decoded,
        may_take_run: bool,
    ) -> Result<Option<Incoming>, End> {
        let started = Instant::now();
        let Decoded {
            reference,
            name,
            event,
        } = decoded;
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
            chat.messages = tracing::field::Empty,
        );
        span.add_link(self.upgraded_in.clone());
        if let Ok(event) = &event {
            span.record("chat.room", event.room().as_str());
        }
        let outcome = match event {
            Ok(ClientEvent::CreateChat(chat)) => {
                return self
                    .post_chat(reference, chat, may_take_run, &span, started)
                    .await;
            }
            Ok(ClientEvent::CreateRoom(join)) => {
                self.join(join, true).instrument(span.clone()).await
            }
            Ok(ClientEvent::AddMember(join)) => {
                self.join(join, false).instrument(span.clone()).await
            }
            Ok(ClientEvent::RemoveMember(remove)) => {
                self.remove(remove).instrument(span.clone()).await
            }
            Ok(ClientEvent::Resume(resume)) => self.resume(resume).instrument(span.clone()).await,
            Err(err) => Err(err),
        };
        finish_event(&span, label, started, outcome.as_ref().err(), 1);
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(err) => return self.reply_error(reference, err).await.map(|()| None),
        };
        self.feed_reply(reference.as_ref(), Ok(&outcome.ack))
            .await?;
        for frame in outcome.replay {
            if let Some(text) = self.admit(&frame) {
                self.socket
                    .feed(Message::Text(text))
                    .await
                    .map_err(|_| End::Gone)?;
            }
        }
        self.socket.flush().await.map_err(|_| End::Gone)?;
        Ok(None)
    }

    /// `create:chat`, and the chat posts to the same membership already waiting in the
    /// socket behind it (up to `POST_RUN`): stored in one step, in order, and acked with one
    /// write. A sender that outpaces the store's round trip gets one round trip per run
    /// instead of a growing queue; one step per run keeps its messages in the order sent
    /// even when the step is retried. Answers the frame that ended the run, if any.
    async fn post_chat(
        &mut self,
        reference: Option<Value>,
        chat: Chat,
        may_take_run: bool,
        span: &Span,
        started: Instant,
    ) -> Result<Option<Incoming>, End> {
        // Only posts under a held membership form a run: a token in the event is checked
        // per event.
        let takes_run = may_take_run && self.may_post_as_held(&chat);
        let poster = self.poster(&chat).instrument(span.clone()).await;
        let (room, first) = to_post(chat);
        let mut references = vec![reference];
        let mut messages = vec![first];
        let mut after = None;
        while takes_run && messages.len() < POST_RUN {
            let Some(frame) = self.socket.recv().now_or_never() else {
                break;
            };
            match self.receive(frame) {
                Incoming::Event(Decoded {
                    reference,
                    event: Ok(ClientEvent::CreateChat(next)),
                    ..
                }) if next.room == room && self.may_post_as_held(&next) => {
                    references.push(reference);
                    messages.push(to_post(next).1);
                }
                Incoming::Nothing => {}
                other => {
                    after = Some(other);
                    break;
                }
            }
        }
        span.record("chat.messages", messages.len());
        let answers = match poster {
            Ok(token_hash) => self
                .state
                .rooms
                .post_in_order(room, token_hash, messages)
                .instrument(span.clone())
                .await
                .into_iter()
                .map(|answer| answer.map_err(not_member))
                .collect(),
            Err(err) => vec![Err(err)],
        };
        let first_refusal = answers.iter().find_map(|answer| answer.as_ref().err());
        finish_event(span, "create:chat", started, first_refusal, answers.len());
        for (reference, answer) in references.iter().zip(answers) {
            self.feed_reply(reference.as_ref(), answer).await?;
        }
        self.socket.flush().await.map_err(|_| End::Gone)?;
        Ok(after)
    }

    /// Who posts a `create:chat` (its token hash): the membership this connection holds in
    /// the room, or the member whose token the event carries. (`&mut`: a shared borrow of
    /// the connection is not `Send`, its socket not being `Sync`.)
    async fn poster(&mut self, chat: &Chat) -> Result<TokenHash, ApiError> {
        if let Some(held) = self.holding_to_post(&chat.room) {
            if !posts_as(held, chat) {
                return Err(ApiError::forbidden(
                    "username is not the name this connection holds in the room",
                ));
            }
            return Ok(held.token_hash.clone());
        }
        let token_hash = chat
            .token
            .as_ref()
            .map(|token| token.hash())
            .ok_or(ApiError::NotMember)?;
        if let Some(claimed) = &chat.username {
            let member = self
                .state
                .rooms
                .authenticate(&chat.room, &token_hash)
                .await
                .map_err(not_member)?;
            if member.key() != claimed.key() {
                return Err(ApiError::forbidden("username is not the token's member"));
            }
        }
        Ok(token_hash)
    }

    /// The membership a post to `room` goes out under, if this connection holds one that is
    /// not leaving.
    fn holding_to_post(&self, room: &RoomId) -> Option<&Held> {
        self.held.get(room).filter(|held| held.leaving_at.is_none())
    }

    /// Whether a post may go out under the membership this connection holds in its room: it
    /// holds one, and the post claims no other name.
    fn may_post_as_held(&self, chat: &Chat) -> bool {
        self.holding_to_post(&chat.room)
            .is_some_and(|held| posts_as(held, chat))
    }

    async fn reply_error(&mut self, reference: Option<Value>, err: ApiError) -> Result<(), End> {
        self.feed_reply(reference.as_ref(), Err::<(), _>(err))
            .await?;
        self.socket.flush().await.map_err(|_| End::Gone)
    }

    /// Queues the direct reply to a client event for the next flush: `ack` with the data, or
    /// `error` with the error's body.
    async fn feed_reply(
        &mut self,
        reference: Option<&Value>,
        answer: Result<impl serde::Serialize, ApiError>,
    ) -> Result<(), End> {
        let text = match answer {
            Ok(data) => serde_json::to_string(&Reply {
                event: "ack",
                reference,
                data,
            }),
            Err(err) => serde_json::to_string(&Reply {
                event: "error",
                reference,
                data: err.body(),
            }),
        };
        let text = text.map_err(|_| End::Gone)?;
        self.socket
            .feed(Message::Text(Utf8Bytes::from(text)))
            .await
            .map_err(|_| End::Gone)
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

/// A `create:chat`'s room, and the message to store there.
fn to_post(chat: Chat) -> (RoomId, NewMessage) {
    let message = NewMessage {
        text: chat.message,
        idempotency_key: chat.client_msg_id,
    };
    (chat.room, message)
}

/// Whether a post may go out under `held`: it claims no other name.
fn posts_as(held: &Held, chat: &Chat) -> bool {
    chat.username
        .as_ref()
        .is_none_or(|claimed| claimed.key() == held.username.key())
}

/// Ends a client event's span with its outcome (the first refusal, for a run of posts) and
/// records its handling time once per event it answered.
fn finish_event(
    span: &Span,
    label: &'static str,
    started: Instant,
    refusal: Option<&ApiError>,
    events: usize,
) {
    span.record("chat.outcome", refusal.map_or("ack", ApiError::code));
    if matches!(refusal, Some(ApiError::Unavailable)) {
        span.record("otel.status_code", "error");
    }
    let took = started.elapsed().as_secs_f64();
    let histogram = metrics::histogram!("chat_ws_event_duration_seconds", "event" => label);
    for _ in 0..events {
        histogram.record(took);
    }
}

/// How a connection whose read failed ends: with the close code RFC 6455 (7.4.1) gives a
/// frame the client should not have sent, or silently when the peer is gone. tungstenite
/// leaves the connection open for writing after such a frame, so the close frame goes out.
fn read_failed(err: axum::Error) -> End {
    use tungstenite::error::{Error, ProtocolError};
    match err.into_inner().downcast_ref::<Error>() {
        Some(Error::Capacity(_)) => End::Close(CLOSE_TOO_BIG, "frame larger than 64 KiB"),
        Some(Error::Utf8(_)) => End::Close(CLOSE_NOT_UTF8, "text frame is not valid UTF-8"),
        // The peer vanished mid-frame: nobody to tell.
        Some(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) | None => End::Gone,
        // An unmasked frame, a reserved bit or opcode, a fragmented control frame, …
        Some(Error::Protocol(_)) => End::Close(CLOSE_PROTOCOL, "WebSocket protocol error"),
        Some(_) => End::Gone,
    }
}

/// On WebSocket, an action for a room without a valid membership is `not_member`.
fn not_member(err: ApiError) -> ApiError {
    match err {
        ApiError::Unauthorized => ApiError::NotMember,
        other => other,
    }
}
