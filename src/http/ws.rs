//! The WebSocket transport (`GET /ws`): frame I/O over a [`Session`]. API.md's client events
//! in, one `ack` or `error` per client event, and the room frames the session admits.
//!
//! One task per connection runs a loop over: the client's frames, the session's inbox
//! (frames from the hub), pings, the lifetime limit and shutdown. Client events are handled
//! one at a time and their reply is written before the loop reads the inbox again, which is
//! what guarantees that an `ack` precedes every broadcast its event caused. What a membership
//! is (joins, resumes, leaves, which frames belong to it, runs of posts) is the session's;
//! this module decodes, writes, and times the connection.
//!
//! A frame RFC 6455 forbids a client to send ends the connection with a close frame that
//! says why (7.4.1), not a dropped socket: 1002 for a protocol violation (e.g. an unmasked
//! frame), 1007 for a text frame that is not UTF-8, 1009 for one over 64 KiB.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{FutureExt, SinkExt};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use serde_json::Value;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::AppState;
use crate::error::ApiError;
use crate::hub::{Batch, Inbox};
use crate::limits::{ClientIp, Refused, StreamSlot, WsEventLimiter};
use crate::protocol::{self, Chat, ClientEvent, Decoded};
use crate::session::{Answer, Close, Session};
use crate::telemetry;

/// API.md: a WebSocket frame is at most 64 KiB (close code 1009 beyond).
const MAX_FRAME_BYTES: usize = 64 * 1024;
/// The histogram of client event handling times.
const WS_EVENT_DURATION: &str = "chat_ws_event_duration_seconds";
/// How many queued frames one socket write takes, at most about.
const WRITE_BATCH: usize = 64;

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

struct Connection {
    socket: WebSocket,
    state: AppState,
    /// This connection's place under its client's connection cap.
    _slot: StreamSlot,
    /// Client events per connection (`None` when rate limits are off).
    events: Option<WsEventLimiter>,
    session: Session,
    inbox: Inbox,
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
    Close(Close),
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

impl Connection {
    fn new(
        socket: WebSocket,
        state: AppState,
        client: IpAddr,
        slot: StreamSlot,
        upgraded_in: SpanContext,
    ) -> Self {
        let (session, inbox) = Session::open(state.realtime.sessions.clone(), client);
        metrics::gauge!("chat_open_connections", "transport" => "websocket").increment(1.0);
        let events = state.limits.ws_event_limiter();
        Self {
            socket,
            _slot: slot,
            events,
            state,
            session,
            inbox,
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
            self.session.end();
            if let End::Close(close) = end {
                let close = Message::Close(Some(CloseFrame {
                    code: close.code(),
                    reason: Utf8Bytes::from_static(close.reason()),
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
                    // Cannot be None: the session holds a sender (its mailbox).
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
                        return End::Close(Close::LifetimeReached);
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

    fn closed(&self) -> End {
        End::Close(self.session.why_closed(&self.inbox))
    }

    /// Writes `first` and whatever else is queued (up to about `WRITE_BATCH` frames) with one
    /// flush: one socket write for all of them.
    async fn forward(&mut self, first: Batch) -> Option<End> {
        let mut next = Some(first);
        let mut written = 0;
        let mut oldest = None;
        while let Some(batch) = next.take() {
            for frame in batch.iter() {
                if self.session.admit(frame) {
                    if self
                        .socket
                        .feed(Message::Text(frame.ws_text()))
                        .await
                        .is_err()
                    {
                        return Some(End::Gone);
                    }
                    if let Some(event) = frame.event() {
                        oldest.get_or_insert(event.id);
                    }
                    written += 1;
                }
            }
            if written < WRITE_BATCH {
                next = self.inbox.try_recv();
            }
        }
        if written > 0 && self.socket.flush().await.is_err() {
            return Some(End::Gone);
        }
        // Only logged events have a time to measure from (their id's).
        if let Some(oldest) = oldest {
            self.delivery.record_write(oldest);
        }
        None
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
                return Incoming::End(End::Close(Close::Hammering));
            }
            Some(Err(Refused::Limited(limited))) => {
                return Incoming::Refused(protocol::reference_of(text.as_str()), limited);
            }
        }
        Incoming::Event(protocol::decode(
            text.as_str(),
            self.session.core().rooms.max_message_bytes(),
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
        let span = crate::client_event_span!("ws.event", "ws", label);
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
            other => {
                self.session
                    .handle_traced(other, label, &span, WS_EVENT_DURATION, started)
                    .await
            }
        };
        let Answer { reply, follow } = match outcome {
            Ok(answer) => answer,
            Err(err) => return self.reply_error(reference, err).await.map(|()| None),
        };
        self.feed_reply(reference.as_ref(), Ok(reply)).await?;
        for frame in follow {
            if self.session.admit(&frame) {
                self.socket
                    .feed(Message::Text(frame.ws_text()))
                    .await
                    .map_err(|_| End::Gone)?;
            }
        }
        self.socket.flush().await.map_err(|_| End::Gone)?;
        Ok(None)
    }

    /// `create:chat`, and the chat posts already waiting in the socket behind it that the
    /// session lets join its run (see `session::PostRun`): stored in one step and acked with
    /// one write. Answers the frame that ended the run, if any.
    async fn post_chat(
        &mut self,
        reference: Option<Value>,
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
        let mut references = vec![reference];
        let mut after = None;
        while run.wants_more() {
            let Some(frame) = self.socket.recv().now_or_never() else {
                break;
            };
            match self.receive(frame) {
                Incoming::Event(Decoded {
                    reference,
                    event: Ok(ClientEvent::CreateChat(next)),
                    ..
                }) if self.session.run_takes(&run, &next) => {
                    references.push(reference);
                    run.push(next);
                }
                Incoming::Nothing => {}
                other => {
                    after = Some(other);
                    break;
                }
            }
        }
        let answers = self
            .session
            .post_run_traced(run, span, WS_EVENT_DURATION, started)
            .await;
        for (reference, answer) in references.iter().zip(answers) {
            self.feed_reply(reference.as_ref(), answer).await?;
        }
        self.socket.flush().await.map_err(|_| End::Gone)?;
        Ok(after)
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
}

/// How a connection whose read failed ends: with the close code RFC 6455 (7.4.1) gives a
/// frame the client should not have sent, or silently when the peer is gone. tungstenite
/// leaves the connection open for writing after such a frame, so the close frame goes out.
fn read_failed(err: axum::Error) -> End {
    use tungstenite::error::{Error, ProtocolError};
    match err.into_inner().downcast_ref::<Error>() {
        Some(Error::Capacity(_)) => End::Close(Close::TooBig),
        Some(Error::Utf8(_)) => End::Close(Close::NotUtf8),
        // The peer vanished mid-frame: nobody to tell.
        Some(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) | None => End::Gone,
        // An unmasked frame, a reserved bit or opcode, a fragmented control frame, …
        Some(Error::Protocol(_)) => End::Close(Close::Protocol),
        Some(_) => End::Gone,
    }
}
