//! The domain values of a chat room, parsed once at the edge ("parse, don't validate").
//!
//! Every rule of API.md's "Names and limits" table lives here and nowhere else: once a handler
//! holds a [`RoomId`], [`Username`], [`MessageText`], [`RoomSecret`] or [`ClientMsgId`], the
//! value is known to be valid. Member tokens are [`MemberToken`]s, whose `Debug` never prints
//! the secret; only their [`TokenHash`] is ever stored or compared. A room's history is made
//! of [`RoomEvent`]s; what describes only the moment (presence, typing) is an [`Ephemeral`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

mod ephemeral;
mod username;
pub use ephemeral::{Ephemeral, EphemeralData, EphemeralKind, TYPING_EVERY};
pub use username::Username;
pub(crate) use username::{is_hidden, is_invisible};

/// A room's id: 1-64 characters of `A-Z a-z 0-9 . _ -`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(String);

impl RoomId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let valid = (1..=Self::MAX_LEN).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ApiError::invalid(
                "roomId must be 1-64 characters of A-Z a-z 0-9 . _ -",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A chat message's text: not blank, at most `MAX_MESSAGE_BYTES` bytes of UTF-8. It is stored
/// exactly as sent (no trimming), so what a client posts is what every member sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageText(String);

impl MessageText {
    pub fn parse(raw: String, max_bytes: usize) -> Result<Self, ApiError> {
        if raw.trim_matches(char::is_whitespace).is_empty() {
            return Err(ApiError::invalid("message must not be empty"));
        }
        if raw.len() > max_bytes {
            return Err(ApiError::PayloadTooLarge(format!(
                "message must be at most {max_bytes} bytes of UTF-8"
            )));
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A room's optional secret, 1-128 characters. `Debug` hides it.
#[derive(Clone)]
pub struct RoomSecret(String);

impl RoomSecret {
    pub fn parse(raw: String) -> Result<Self, ApiError> {
        let chars = raw.chars().count();
        if chars == 0 || chars > 128 {
            return Err(ApiError::invalid("secret must be 1-128 characters"));
        }
        Ok(Self(raw))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RoomSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RoomSecret(<redacted>)")
    }
}

/// A client-chosen idempotency key for a chat message: 1-64 of `A-Z a-z 0-9 . _ : -`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientMsgId(String);

impl ClientMsgId {
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let valid = (1..=64).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ApiError::invalid(
                "idempotency key must be 1-64 characters of A-Z a-z 0-9 . _ : -",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A member token as the client holds it: 256 random bits, hex encoded. The server keeps only
/// its [`TokenHash`]; `Debug` and `Display` are deliberately absent or redacted.
#[derive(Clone)]
pub struct MemberToken(String);

impl MemberToken {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(hex::encode(bytes))
    }

    /// Wraps a token presented by a client. Anything may be presented; a wrong one simply
    /// hashes to a value no member has.
    pub fn presented(raw: &str) -> Self {
        Self(raw.to_owned())
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(hex::encode(Sha256::digest(self.0.as_bytes())).into())
    }

    /// The token itself, for the one reply that hands it to its member.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MemberToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemberToken(<redacted>)")
    }
}

/// A stream ticket: a short-lived, single-use stand-in for a member token in an SSE URL, so
/// the token itself stays out of request logs that record full URLs. The same kind of secret
/// as a member token (256 random bits, only its hash stored), so it reuses that type's
/// generation and hashing rather than repeating them.
#[derive(Clone, Debug)]
pub struct StreamTicket(MemberToken);

impl StreamTicket {
    pub fn generate() -> Self {
        Self(MemberToken::generate())
    }

    /// Wraps a ticket presented by a client; a wrong one hashes to a value no ticket has.
    pub fn presented(raw: &str) -> Self {
        Self(MemberToken::presented(raw))
    }

    pub fn hash(&self) -> TokenHash {
        self.0.hash()
    }

    /// The ticket itself, for the one reply that hands it out.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

/// SHA-256 of a member token, hex encoded: what the store keeps and looks tokens up by. A
/// fast hash is right here because tokens carry 256 bits of entropy (no dictionary to
/// attack), unlike room secrets, which people choose and which get argon2.
///
/// Shared, not copied: a member's hash is held by its record, the token index and each of its
/// connections.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(Arc<str>);

impl TokenHash {
    pub fn from_stored(hex: String) -> Self {
        Self(hex.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison, so the time taken does not tell how much of a hash matched.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(<redacted>)")
    }
}

/// An event id, `<milliseconds>-<sequence>` as Redis stream ids are; ordered part by part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EventId {
    pub ms: u64,
    pub seq: u64,
}

impl EventId {
    pub const ZERO: EventId = EventId { ms: 0, seq: 0 };

    pub fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }

    /// The least id after this one.
    pub fn next(self) -> Self {
        Self {
            ms: self.ms,
            seq: self.seq.saturating_add(1),
        }
    }

    /// The id of the chat message an edit or a deletion names. A text that is no event id at
    /// all names no message, as an id no message has: `not_found` for both (API.md: "an
    /// unknown id gets not_found"), where a malformed `before` or `lastEventId` is a bad
    /// request.
    pub fn of_message(raw: &str) -> Result<Self, ApiError> {
        raw.parse().map_err(|_| ApiError::NotFound)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EventId {
    type Err = ApiError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let bad = || ApiError::invalid("event ids look like 1732560000000-0");
        let (ms, seq) = raw.split_once('-').ok_or_else(bad)?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(bad());
        }
        Ok(Self {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

impl serde::Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Milliseconds since the Unix epoch on this machine's clock, the unit of event ids.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Why a member left its room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveReason {
    Left,
    Timeout,
    /// Removed by someone else: the room's owner, or the server API.
    Kicked,
    /// Removed and its name banned from the room for the room's lifetime.
    Banned,
}

impl LeaveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Left => "left",
            LeaveReason::Timeout => "timeout",
            LeaveReason::Kicked => "kicked",
            LeaveReason::Banned => "banned",
        }
    }

    /// The reason of a removal by someone else: `banned` when it bans the name too.
    pub fn removal(ban: bool) -> Self {
        if ban { Self::Banned } else { Self::Kicked }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "left" => Some(Self::Left),
            "timeout" => Some(Self::Timeout),
            "kicked" => Some(Self::Kicked),
            "banned" => Some(Self::Banned),
            _ => None,
        }
    }
}

/// What happened in a room: one entry of its ordered log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    RoomCreated {
        username: String,
    },
    MemberAdded {
        username: String,
    },
    MemberRemoved {
        username: String,
        reason: LeaveReason,
    },
    Chat {
        username: String,
        message: String,
    },
    /// A chat message of the room edited by its author: `target` is the id of its
    /// `create:chat:success`, `username` its author and `message` its text from now on.
    ChatEdited {
        target: EventId,
        username: String,
        message: String,
    },
    /// A chat message of the room deleted (by its author or the room's owner): `target` is
    /// its id, `username` its author.
    ChatDeleted {
        target: EventId,
        username: String,
    },
    /// The room was deleted (the server API). Never in the log (the log went with the room):
    /// its id only orders it after the room's last event for this instance's hub, and no
    /// transport sends that id (it would move a client's resume point into nothing).
    RoomDeleted,
}

impl EventKind {
    /// The event's name on every transport, as the original socket.io server named it.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::RoomCreated { .. } => "create:room:success",
            EventKind::MemberAdded { .. } => "add:member:success",
            EventKind::MemberRemoved { .. } => "remove:member:success",
            EventKind::Chat { .. } => "create:chat:success",
            EventKind::ChatEdited { .. } => "update:chat:success",
            EventKind::ChatDeleted { .. } => "delete:chat:success",
            EventKind::RoomDeleted => "room:deleted",
        }
    }

    /// The member the event names (a chat message's author, also in its edit and deletion);
    /// `""` for the room's deletion, which names none.
    pub fn username(&self) -> &str {
        match self {
            EventKind::RoomCreated { username }
            | EventKind::MemberAdded { username }
            | EventKind::MemberRemoved { username, .. }
            | EventKind::Chat { username, .. }
            | EventKind::ChatEdited { username, .. }
            | EventKind::ChatDeleted { username, .. } => username,
            EventKind::RoomDeleted => "",
        }
    }

    /// Whether the event is one the room's log keeps, with an id clients may resume from.
    pub fn is_logged(&self) -> bool {
        !matches!(self, EventKind::RoomDeleted)
    }
}

/// One event of a room's log, with its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomEvent {
    pub id: EventId,
    /// The id of the event before this one in the room's log (`0-0` for the first), so a
    /// reader can tell a gap in what it received from a quiet room.
    pub prev: EventId,
    pub room: RoomId,
    pub kind: EventKind,
}

/// The wire form of a chat message as it stands (last edited), as history, the post and
/// edit replies and the `create:chat` / `update:chat` acks show it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    /// The event id of the message.
    #[schema(value_type = String, example = "1732560000000-0")]
    pub id: EventId,
    pub room_id: String,
    pub username: String,
    pub message: String,
    /// When the message was stored: RFC 3339 UTC with milliseconds.
    #[schema(example = "2026-11-25T21:00:00.000Z")]
    pub ts: String,
    /// When the message was last edited (RFC 3339 UTC with milliseconds); absent when it
    /// never was.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "2026-11-25T21:01:00.000Z")]
    pub edited_ts: Option<String>,
}

impl ChatMessage {
    /// The chat message `id` of `room` by `username`, with the text it has now and the id of
    /// its last edit (`None`: never edited). Both times come from the ids (see [`timestamp`]).
    pub fn new(
        room: &RoomId,
        id: EventId,
        username: String,
        message: String,
        edited: Option<EventId>,
    ) -> Self {
        Self {
            id,
            room_id: room.to_string(),
            username,
            message,
            ts: timestamp(id),
            edited_ts: edited.map(timestamp),
        }
    }
}

impl RoomEvent {
    /// The chat message this event carries, as first posted, if it is one.
    pub fn as_chat(&self) -> Option<ChatMessage> {
        match &self.kind {
            EventKind::Chat { username, message } => Some(ChatMessage::new(
                &self.room,
                self.id,
                username.clone(),
                message.clone(),
                None,
            )),
            _ => None,
        }
    }

    /// The event's `data` object, identical on every transport.
    pub fn data(&self) -> EventData<'_> {
        let mut data = EventData {
            id: None,
            room_id: self.room.as_str(),
            message_id: None,
            username: self.kind.is_logged().then(|| self.kind.username()),
            message: None,
            reason: None,
            ts: None,
            edited_ts: None,
            event_id: None,
        };
        match &self.kind {
            EventKind::RoomCreated { .. }
            | EventKind::MemberAdded { .. }
            | EventKind::RoomDeleted => {}
            EventKind::MemberRemoved { reason, .. } => data.reason = Some(reason.as_str()),
            EventKind::Chat { message, .. } => {
                data.message = Some(message);
                data.ts = Some(timestamp(self.id));
            }
            // The message's own id and time, and the edit's time from the edit's id.
            EventKind::ChatEdited {
                target, message, ..
            } => {
                data.message_id = Some(*target);
                data.message = Some(message);
                data.ts = Some(timestamp(*target));
                data.edited_ts = Some(timestamp(self.id));
            }
            EventKind::ChatDeleted { target, .. } => data.message_id = Some(*target),
        }
        data
    }
}

/// The `data` of a room event: `{roomId, username}` plus `message` and `ts` for chat, `reason`
/// for removals, `{roomId, id, username, message, ts, editedTs}` for an edit and
/// `{roomId, id, username}` for a deletion (`id`: the chat message's); `{roomId}` alone for
/// the room's deletion.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventData<'a> {
    /// The event's id, for a transport with no envelope to carry it (socket.io); the others
    /// send it beside the data. Never set together with `message_id`, which is also `id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<EventId>,
    pub room_id: &'a str,
    /// The chat message an edit or a deletion changes: `id` in the contract's data.
    #[serde(rename = "id", skip_serializing_if = "Option::is_none")]
    pub message_id: Option<EventId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_ts: Option<String>,
    /// The event's id for socket.io where `id` is taken by the chat message's (an edit, a
    /// deletion).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<EventId>,
}

impl EventData<'_> {
    /// Puts the event's own id into the data, for a transport with no envelope for it
    /// (socket.io): as `id`, or as `eventId` where `id` names the chat message changed.
    pub fn with_event_id(mut self, id: Option<EventId>) -> Self {
        if self.message_id.is_some() {
            self.event_id = id;
        } else {
            self.id = id;
        }
        self
    }
}

/// The `ts` of an event: the millisecond part of its id, which is when the log stored it, so
/// ids and timestamps can never disagree.
pub fn timestamp(id: EventId) -> String {
    let millis = i64::try_from(id.ms).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_order_numerically() {
        let a: EventId = "9-5".parse().unwrap();
        let b: EventId = "10-0".parse().unwrap();
        assert!(a < b);
        assert_eq!(b.to_string(), "10-0");
        assert!("10".parse::<EventId>().is_err());
        assert!("a-1".parse::<EventId>().is_err());
    }

    #[test]
    fn timestamps_have_milliseconds() {
        assert_eq!(
            timestamp(EventId::new(1_732_560_000_123, 0)),
            "2024-11-25T18:40:00.123Z"
        );
    }

    #[test]
    fn an_edit_and_a_deletion_name_the_message_as_id_and_keep_the_event_id_apart() {
        let room = RoomId::parse("lobby").expect("a valid room id");
        let target = EventId::new(1_732_560_000_000, 0);
        let event = |id: EventId, kind: EventKind| RoomEvent {
            id,
            prev: target,
            room: room.clone(),
            kind,
        };
        let edit = event(
            EventId::new(1_732_560_001_500, 0),
            EventKind::ChatEdited {
                target,
                username: "alice".into(),
                message: "hi!".into(),
            },
        );
        assert_eq!(
            serde_json::to_string(&edit.data()).expect("serializes"),
            r#"{"roomId":"lobby","id":"1732560000000-0","username":"alice","message":"hi!","ts":"2024-11-25T18:40:00.000Z","editedTs":"2024-11-25T18:40:01.500Z"}"#
        );
        let deletion = event(
            EventId::new(1_732_560_002_000, 3),
            EventKind::ChatDeleted {
                target,
                username: "alice".into(),
            },
        );
        assert_eq!(
            serde_json::to_string(&deletion.data().with_event_id(Some(deletion.id)))
                .expect("serializes"),
            r#"{"roomId":"lobby","id":"1732560000000-0","username":"alice","eventId":"1732560002000-3"}"#
        );
        let chat = event(
            target,
            EventKind::Chat {
                username: "alice".into(),
                message: "hi".into(),
            },
        );
        let socketio =
            serde_json::to_value(chat.data().with_event_id(Some(target))).expect("serializes");
        assert_eq!(socketio["id"], "1732560000000-0");
        assert!(socketio.get("eventId").is_none());
    }
}
