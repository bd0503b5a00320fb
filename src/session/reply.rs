//! The typed answers of the session's operations, shared by every transport: a WebSocket
//! `ack`'s `data`, a socket.io acknowledgement and a REST body are the same struct for the same
//! answer, so a field cannot differ between them. Field order is the wire order (serde keeps
//! it), which clients and tests compare.
//!
//! A posted or edited chat message's answer is [`crate::domain::ChatMessage`], the message as
//! history shows it.

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{ChatMessage, EventId};
use crate::rooms::Joined;

/// A member's entry into a room (create or join): keep `token`, it is shown only once.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinedResponse {
    pub room_id: String,
    pub username: String,
    /// The member token: present it as `Authorization: Bearer <token>`.
    pub token: String,
    /// The id of the last event the join appended: stream from here to miss nothing.
    #[schema(value_type = String, example = "1732560000000-1")]
    pub last_event_id: EventId,
}

impl From<Joined> for JoinedResponse {
    fn from(joined: Joined) -> Self {
        Self {
            room_id: joined.room.to_string(),
            username: joined.username.into_string(),
            token: joined.token.expose().to_owned(),
            last_event_id: joined.last_event_id,
        }
    }
}

/// A member's removal (`remove:member`): the room, the name removed, and the id of its
/// `remove:member:success`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeftResponse {
    pub room_id: String,
    pub username: String,
    pub last_event_id: EventId,
}

/// A chat message deleted (`delete:chat`): the room and the message's id.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedResponse {
    pub room_id: String,
    pub id: EventId,
}

/// A membership resumed on a connection: how many logged events are replayed after the
/// reply, and whether they are all that happened after the id asked for (`false`: some were
/// trimmed from the log, or lost).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumedResponse {
    pub room_id: String,
    pub username: String,
    pub replayed: usize,
    pub complete: bool,
}

/// A `typing` taken (`ack` data): the room. Whether it was broadcast or dropped by the
/// throttle is not said: either way the client did its part.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TypingResponse {
    pub room_id: String,
}

/// What a stream that cannot replay everything after the id asked for says first (SSE's
/// `resume:gap`; a WebSocket says it with `complete: false` in its resume ack).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GapNotice<'a> {
    pub room_id: &'a str,
    /// Always false: the point of the notice.
    pub complete: bool,
}

/// The reply to one client event, as the transport writes it (the data alone: untagged).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Reply {
    Joined(JoinedResponse),
    Left(LeftResponse),
    Resumed(ResumedResponse),
    Posted(ChatMessage),
    Edited(ChatMessage),
    Deleted(DeletedResponse),
    Typing(TypingResponse),
}
