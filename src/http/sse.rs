//! Server-Sent Events (`GET /rooms/{roomId}/events`): one room's events as
//! `text/event-stream`, for clients where WebSocket upgrades are blocked. Sending uses REST.
//!
//! EventSource cannot set headers, so a browser authenticates in the URL, which request logs
//! (Cloud Run's among them) record whole. Rather than the member token, the URL can carry a
//! stream ticket from `POST /rooms/{roomId}/events/ticket` (Bearer token): single use, valid
//! for `SSE_TICKET_TTL_SECS` in its room for its member, kept in the store so any instance can
//! redeem it. A request presenting a ticket and a token is refused (400) rather than have one
//! silently win: which one authorized the stream must not depend on a precedence rule.
//!
//! The stream is a session holding one membership, attached as a WebSocket `resume` attaches
//! it: `Last-Event-ID` (what EventSource sends on reconnect) or `?lastEventId=` replays the log
//! after that id, then the stream goes live; the session decides which frames belong to it. Frames are the hub's shared SSE encoding, written in batches. The stream ends (and
//! EventSource reconnects and resumes) at the lifetime limit, on shutdown, when the client
//! falls too far behind, and after the member's own removal.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::stream;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::{ApiPath, ApiQuery, BearerToken, bearer_from, presented_token};
use super::openapi;
use super::rest::RoomPath;
use crate::domain::{EventId, RoomId, StreamTicket, TokenHash};
use crate::error::{ApiError, ErrorBody};
use crate::hub::Inbox;
use crate::limits::{ClientIp, StreamSlot};
use crate::session::{GapNotice, Session};
use crate::telemetry;

/// Tells EventSource how long to wait before reconnecting.
const RETRY_MS: u64 = 3000;
/// How many queued frames one chunk of the body takes.
const CHUNK_FRAMES: usize = 64;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// The member token, for EventSource (which cannot set headers). Documented as the
    /// security scheme `member_token_query`.
    #[serde(default)]
    #[param(ignore)]
    pub token: Option<String>,
    /// A stream ticket, in place of the member token. Documented as the security scheme
    /// `stream_ticket`.
    #[serde(default)]
    #[param(ignore)]
    pub ticket: Option<String>,
    /// Replay the events after this id first (as the `Last-Event-ID` header does).
    #[serde(default, rename = "lastEventId")]
    #[param(rename = "lastEventId", schema_with = openapi::resume_after)]
    pub last_event_id: Option<String>,
}

/// One event of the stream, as an SSE client parses it (the `retry:` preamble and keepalive
/// comments carry no data and are not events).
#[derive(Debug, ToSchema)]
pub struct StreamEvent {
    /// A room event's name, `resume:gap` when events after the requested id were trimmed, or
    /// an ephemeral event's (`presence`, `typing`).
    #[schema(schema_with = stream_event_name)]
    pub event: String,
    /// The event's `data` object as JSON, the same as on the WebSocket.
    #[schema(content_media_type = "application/json")]
    pub data: String,
    /// The event id (absent on `resume:gap` and on the ephemeral `presence` and `typing`, so
    /// `Last-Event-ID` stays on the last logged event).
    #[schema(schema_with = openapi::event_id)]
    pub id: Option<String>,
}

fn stream_event_name() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some([
            "create:room:success",
            "add:member:success",
            "remove:member:success",
            "create:chat:success",
            "resume:gap",
            "presence",
            "typing",
        ]))
        .build()
}

/// `POST /rooms/{roomId}/events/ticket`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketResponse {
    /// Open the event stream once with `?ticket=<this>` instead of `?token=`.
    pub ticket: String,
    /// How long the ticket can be redeemed (`SSE_TICKET_TTL_SECS`).
    #[schema(minimum = 1)]
    pub expires_in_secs: u64,
}

/// Get a single-use ticket for opening the event stream, so the member token stays out of the
/// stream's URL (and of request logs that record URLs).
#[utoipa::path(
    post, path = "/rooms/{roomId}/events/ticket", tag = "rooms",
    params(RoomPath),
    security(("member_token" = [])),
    responses(
        (status = 201, body = TicketResponse, description = "a ticket for one GET /rooms/{roomId}/events?ticket=, valid for expiresInSecs"),
        (status = 400, body = ErrorBody, description = "invalid_request"),
        (status = 401, body = ErrorBody, description = "unauthorized: no token, or not a member's token in this room"),
    )
)]
pub async fn issue_ticket(
    State(state): State<AppState>,
    BearerToken(token): BearerToken,
    ApiPath(room): ApiPath<String>,
) -> Result<(StatusCode, Json<TicketResponse>), ApiError> {
    let room = RoomId::parse(&room)?;
    let ttl = state.realtime.settings.sse_ticket_ttl;
    let ticket = state.rooms.issue_ticket(&room, &token, ttl).await?;
    Ok((
        StatusCode::CREATED,
        Json(TicketResponse {
            ticket: ticket.expose().to_owned(),
            expires_in_secs: ttl.as_secs(),
        }),
    ))
}

/// How a stream request proves membership.
enum Credential {
    Token(TokenHash),
    Ticket(StreamTicket),
}

/// Stream a room's events (Server-Sent Events).
#[utoipa::path(
    get, path = "/rooms/{roomId}/events", tag = "rooms",
    params(
        RoomPath,
        ("Last-Event-ID" = Option<String>, Header, pattern = r"^(?:[0-9]{1,19}-[0-9]{1,19})?$",
            description = "replay the events after this id (EventSource sends it on reconnect); it wins over lastEventId"),
        EventsQuery,
    ),
    security(("member_token" = []), ("member_token_query" = []), ("stream_ticket" = [])),
    responses(
        (status = 200, content_type = "text/event-stream", body = StreamEvent,
            description = "the event stream; the schema is that of each event"),
        (status = 400, body = ErrorBody, description = "invalid_request (among others: a ticket and a token both given)"),
        (status = 401, body = ErrorBody, description = "unauthorized: no token or ticket, not a member's token in this room, or a ticket spent, expired, of another room or of a member who left"),
    )
)]
pub async fn events(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    ApiPath(room): ApiPath<String>,
    ApiQuery(query): ApiQuery<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let room = RoomId::parse(&room)?;
    let token_hash =
        bearer_from(&headers).or_else(|| query.token.as_deref().and_then(presented_token));
    let ticket = query
        .ticket
        .as_deref()
        .filter(|ticket| !ticket.is_empty())
        .map(StreamTicket::presented);
    let credential = match (token_hash, ticket) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "give a stream ticket or a member token, not both",
            ));
        }
        (Some(token_hash), None) => Credential::Token(token_hash),
        (None, Some(ticket)) => Credential::Ticket(ticket),
        (None, None) => return Err(ApiError::Unauthorized),
    };
    // An empty id is no id. Both are checked when both are given (schemathesis found an
    // invalid `lastEventId` accepted next to a header); the header, EventSource's, wins.
    let resume_after = |raw: &str| {
        (!raw.is_empty())
            .then(|| raw.parse::<EventId>())
            .transpose()
    };
    let from_query = match query.last_event_id.as_deref() {
        Some(raw) => resume_after(raw)?,
        None => None,
    };
    let after = match headers.get("last-event-id") {
        Some(value) => resume_after(
            value
                .to_str()
                .map_err(|_| ApiError::invalid("Last-Event-ID is not an event id"))?,
        )?,
        None => from_query,
    };
    // EventSource sends Origin on cross-site requests: the same rule as WebSocket upgrades.
    if !state.origins.allows_request(&headers) {
        return Err(ApiError::forbidden(
            "this origin may not stream events here",
        ));
    }
    let slot = state.limits.open_stream(client, false)?;
    // A ticket is spent only here, once nothing else can refuse the request.
    let (username, token_hash) = match credential {
        Credential::Token(token_hash) => (
            state.rooms.authenticate(&room, &token_hash).await?,
            Some(token_hash),
        ),
        Credential::Ticket(ticket) => (state.rooms.redeem_ticket(&room, &ticket).await?, None),
    };
    let realtime = &state.realtime;
    let (mut session, inbox) = Session::open(realtime.sessions.clone(), client);
    let resumed = session
        .attach(room.clone(), username, token_hash, after)
        .await?;

    let mut opening = BytesMut::new();
    opening.extend_from_slice(format!("retry: {RETRY_MS}\n\n").as_bytes());
    if !resumed.reply.complete {
        let gap = serde_json::to_string(&GapNotice {
            room_id: room.as_str(),
            complete: false,
        })
        .expect("a notice of strings and a bool serializes to JSON");
        opening.extend_from_slice(format!("event: resume:gap\ndata: {gap}\n\n").as_bytes());
    }
    for frame in &resumed.replay {
        if session.admit(frame) {
            opening.extend_from_slice(&frame.sse_bytes());
        }
    }

    let mut keepalive = tokio::time::interval(realtime.settings.sse_keepalive);
    keepalive.reset();
    let stream_state = EventStream {
        pending: Some(opening.freeze()),
        inbox,
        session,
        keepalive,
        lifetime: Box::pin(tokio::time::sleep(realtime.settings.max_lifetime)),
        _slot: slot,
        delivery: telemetry::DeliveryLatency::new("sse"),
    };
    metrics::gauge!("chat_open_connections", "transport" => "sse").increment(1.0);
    let body = Body::from_stream(stream::unfold(stream_state, |mut state| async move {
        let chunk = state.next_chunk().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(chunk), state))
    }));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            // Proxies such as nginx must not buffer the stream.
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        body,
    )
        .into_response())
}

struct EventStream {
    /// Written before anything else (the opening, then nothing).
    pending: Option<Bytes>,
    inbox: Inbox,
    /// The stream's one membership; when it ends (the member's removal), the stream ends
    /// after what is pending.
    session: Session,
    keepalive: tokio::time::Interval,
    lifetime: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// This stream's place under its client's stream cap.
    _slot: StreamSlot,
    delivery: telemetry::DeliveryLatency,
}

impl EventStream {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(pending) = self.pending.take() {
            return Some(pending);
        }
        if self.session.holds_nothing() {
            return None;
        }
        let closed = self.inbox.closed.clone();
        tokio::select! {
            biased;
            // Shutdown, the client fell too far behind, or its room's log lost events: the
            // stream ends, the client resumes (and is told of a gap).
            () = closed.cancelled() => None,
            () = &mut self.lifetime => None,
            batch = self.inbox.recv() => {
                let mut chunk = BytesMut::new();
                let mut next = Some(batch?);
                let mut taken = 0;
                let mut oldest = None;
                'batches: while let Some(batch) = next.take() {
                    for frame in batch.iter() {
                        if !self.session.admit(frame) {
                            continue;
                        }
                        chunk.extend_from_slice(&frame.sse_bytes());
                        if let Some(event) = frame.event() {
                        oldest.get_or_insert(event.id);
                    }
                        taken += 1;
                        if self.session.holds_nothing() {
                            break 'batches;
                        }
                    }
                    if taken < CHUNK_FRAMES {
                        next = self.inbox.try_recv();
                    }
                }
                if let Some(oldest) = oldest {
                    self.delivery.record_write(oldest);
                }
                Some(chunk.freeze())
            }
            _ = self.keepalive.tick() => Some(Bytes::from_static(b": keepalive\n\n")),
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        metrics::gauge!("chat_open_connections", "transport" => "sse").decrement(1.0);
    }
}
