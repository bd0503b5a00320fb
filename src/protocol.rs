//! The WebSocket client protocol: one text frame in, one typed, validated client event out.
//!
//! [`decode`] is the only code that reads a client frame. It parses the envelope
//! (`{"event", "ref", "data"}`), the `data` of each event kind, and every domain value in it
//! ([`RoomId`], [`Username`], [`MessageText`], [`RoomSecret`], [`ClientMsgId`], [`EventId`]),
//! so the connection (`http::ws`) only ever holds valid values and asks the store nothing
//! about a frame that was malformed.
//!
//! A key given twice is refused (`invalid_request`), in the envelope and in `data` alike:
//! serde's derived structs refuse a repeated field, so `data` is kept as raw JSON text until
//! the event's struct reads it. Read through a `Value`, a repeated key would be taken
//! last-wins, and the server would act on a value that a reader of the first one never saw.
//!
//! It is pure (no I/O, no state, no clock), which is what lets the fuzz target
//! `ws_client_event` (`fuzz/`) call it on arbitrary bytes. What the fuzzer checks:
//! - it never panics;
//! - a decoded event holds only valid values (each parses again to itself);
//! - a refusal is `invalid_request` or `payload_too_large`, never another code.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::domain::{ClientMsgId, EventId, MemberToken, MessageText, RoomId, RoomSecret, Username};
use crate::error::ApiError;
use crate::identity::IdToken;

/// A client frame, decoded as far as it goes.
#[derive(Debug)]
pub struct Decoded {
    /// The client's `ref`, echoed in the reply: present whenever the frame is a JSON object
    /// with one, even when the rest of the frame is invalid.
    pub reference: Option<Value>,
    /// The event the frame names (`Malformed` when it is not an `{event, ref, data}` object).
    pub name: EventName,
    /// The event, or the error to reply with.
    pub event: Result<ClientEvent, ApiError>,
}

/// The client events of API.md, `Unknown` for any other name and `Malformed` for a frame
/// that is not an event at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventName {
    CreateRoom,
    AddMember,
    CreateChat,
    UpdateChat,
    DeleteChat,
    RemoveMember,
    Resume,
    Typing,
    Unknown,
    Malformed,
}

impl EventName {
    fn of(raw: &str) -> Self {
        match raw {
            "create:room" => Self::CreateRoom,
            "add:member" => Self::AddMember,
            "create:chat" => Self::CreateChat,
            "update:chat" => Self::UpdateChat,
            "delete:chat" => Self::DeleteChat,
            "remove:member" => Self::RemoveMember,
            "resume" => Self::Resume,
            "typing" => Self::Typing,
            _ => Self::Unknown,
        }
    }

    /// The wire name (or `unknown`, `malformed`): a bounded label for metrics and spans.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateRoom => "create:room",
            Self::AddMember => "add:member",
            Self::CreateChat => "create:chat",
            Self::UpdateChat => "update:chat",
            Self::DeleteChat => "delete:chat",
            Self::RemoveMember => "remove:member",
            Self::Resume => "resume",
            Self::Typing => "typing",
            Self::Unknown => "unknown",
            Self::Malformed => "malformed",
        }
    }
}

/// A client event whose data is valid.
#[derive(Debug)]
pub enum ClientEvent {
    CreateRoom(Join),
    AddMember(Join),
    CreateChat(Chat),
    UpdateChat(Edit),
    DeleteChat(Delete),
    RemoveMember(Remove),
    Resume(Resume),
    Typing(Typing),
}

impl ClientEvent {
    pub fn name(&self) -> EventName {
        match self {
            Self::CreateRoom(_) => EventName::CreateRoom,
            Self::AddMember(_) => EventName::AddMember,
            Self::CreateChat(_) => EventName::CreateChat,
            Self::UpdateChat(_) => EventName::UpdateChat,
            Self::DeleteChat(_) => EventName::DeleteChat,
            Self::RemoveMember(_) => EventName::RemoveMember,
            Self::Resume(_) => EventName::Resume,
            Self::Typing(_) => EventName::Typing,
        }
    }

    /// The room the event is about.
    pub fn room(&self) -> &RoomId {
        match self {
            Self::CreateRoom(join) | Self::AddMember(join) => &join.room,
            Self::CreateChat(chat) => &chat.room,
            Self::UpdateChat(edit) => &edit.room,
            Self::DeleteChat(delete) => &delete.room,
            Self::RemoveMember(remove) => &remove.room,
            Self::Resume(resume) => &resume.room,
            Self::Typing(typing) => &typing.room,
        }
    }
}

/// `create:room` and `add:member`.
#[derive(Debug)]
pub struct Join {
    pub room: RoomId,
    /// Always present without identity; with it, the token's name decides (see `identity`).
    pub username: Option<Username>,
    pub secret: Option<RoomSecret>,
    /// The JWT of a join when identity is required (`idToken`).
    pub id_token: Option<IdToken>,
}

/// `create:chat`.
#[derive(Debug)]
pub struct Chat {
    pub room: RoomId,
    pub message: MessageText,
    /// The idempotency key (`clientMsgId`).
    pub client_msg_id: Option<ClientMsgId>,
    /// The name the client claims to post as (the original clients sent it).
    pub username: Option<Username>,
    /// Needed when the connection does not hold the room.
    pub token: Option<MemberToken>,
}

/// `update:chat`: a member edits its chat message.
#[derive(Debug)]
pub struct Edit {
    pub room: RoomId,
    /// The message's id (its `create:chat:success` event's).
    pub id: EventId,
    pub message: MessageText,
    /// Needed when the connection does not hold the room.
    pub token: Option<MemberToken>,
}

/// `delete:chat`: a member deletes its chat message, or the room's owner any.
#[derive(Debug)]
pub struct Delete {
    pub room: RoomId,
    /// The message's id (its `create:chat:success` event's).
    pub id: EventId,
    /// Needed when the connection does not hold the room.
    pub token: Option<MemberToken>,
}

/// `remove:member`.
#[derive(Debug)]
pub struct Remove {
    pub room: RoomId,
    pub username: Username,
    /// Needed when the connection does not hold the room.
    pub token: Option<MemberToken>,
    /// The room owner's removal of another member bans the name too.
    pub ban: bool,
}

/// `resume`.
#[derive(Debug)]
pub struct Resume {
    pub room: RoomId,
    pub token: MemberToken,
    /// Replay the events after this one; `None` replays nothing and goes live.
    pub last_event_id: Option<EventId>,
}

/// `typing`: the member is typing (an ephemeral event, never stored).
#[derive(Debug)]
pub struct Typing {
    pub room: RoomId,
    /// Needed when the connection does not hold the room.
    pub token: Option<MemberToken>,
}

/// A client frame as it arrives: the envelope is checked first, the data per event.
#[derive(Deserialize)]
struct Envelope {
    event: String,
    #[serde(rename = "ref", default)]
    reference: Option<Value>,
    /// Raw, so that its struct sees every key (see the module doc); `None` when absent.
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinData {
    room_id: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    id_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChatData {
    room_id: String,
    message: String,
    #[serde(default)]
    client_msg_id: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EditData {
    room_id: String,
    id: String,
    message: String,
    #[serde(default)]
    token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteData {
    room_id: String,
    id: String,
    #[serde(default)]
    token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RemoveData {
    room_id: String,
    username: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    ban: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResumeData {
    room_id: String,
    token: String,
    #[serde(default)]
    last_event_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypingData {
    room_id: String,
    #[serde(default)]
    token: Option<String>,
}

/// Decodes one client text frame. `max_message_bytes` is `MAX_MESSAGE_BYTES`, the limit of a
/// `create:chat` message.
pub fn decode(text: &str, max_message_bytes: usize) -> Decoded {
    // serde reads a struct from a JSON array too (`["create:room", "c1", {…}]`): only an
    // object is an event.
    let envelope = match is_object(text).then(|| serde_json::from_str::<Envelope>(text)) {
        Some(Ok(envelope)) => envelope,
        _ => {
            return Decoded {
                // Maybe valid JSON of the wrong shape: echo its ref if it has one.
                reference: reference_of(text),
                name: EventName::Malformed,
                event: Err(ApiError::invalid(
                    "frames must be JSON objects {event, ref, data}",
                )),
            };
        }
    };
    let name = EventName::of(&envelope.event);
    let data = envelope.data.as_deref().map_or("null", RawValue::get);
    Decoded {
        reference: envelope.reference,
        name,
        event: event_of(name, data, max_message_bytes),
    }
}

/// Decodes a client event that arrives already split into its name and its data (the JSON
/// text of its one argument, `null` when it has none): socket.io's packets.
pub fn decode_named(
    name: &str,
    data: &str,
    max_message_bytes: usize,
) -> (EventName, Result<ClientEvent, ApiError>) {
    let name = EventName::of(name);
    (name, event_of(name, data, max_message_bytes))
}

/// The `ref` of a frame that is a JSON object with one, for replies to frames that are not
/// decoded (refused by a rate limit) or not valid events.
pub fn reference_of(text: &str) -> Option<Value> {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|value| value.get("ref").cloned())
}

fn event_of(
    name: EventName,
    data: &str,
    max_message_bytes: usize,
) -> Result<ClientEvent, ApiError> {
    Ok(match name {
        EventName::CreateRoom => ClientEvent::CreateRoom(join(data_of(data)?)?),
        EventName::AddMember => ClientEvent::AddMember(join(data_of(data)?)?),
        EventName::CreateChat => ClientEvent::CreateChat(chat(data_of(data)?, max_message_bytes)?),
        EventName::UpdateChat => ClientEvent::UpdateChat(edit(data_of(data)?, max_message_bytes)?),
        EventName::DeleteChat => ClientEvent::DeleteChat(delete(data_of(data)?)?),
        EventName::RemoveMember => ClientEvent::RemoveMember(remove(data_of(data)?)?),
        EventName::Resume => ClientEvent::Resume(resume(data_of(data)?)?),
        EventName::Typing => ClientEvent::Typing(typing(data_of(data)?)?),
        EventName::Unknown | EventName::Malformed => {
            return Err(ApiError::invalid(
                "unknown event; expected create:room, add:member, create:chat, update:chat, \
                 delete:chat, remove:member, resume or typing",
            ));
        }
    })
}

/// Whether a JSON text is an object: its first byte after white space is `{`.
fn is_object(text: &str) -> bool {
    text.trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
}

fn data_of<T: DeserializeOwned>(data: &str) -> Result<T, ApiError> {
    // serde reads a struct from an array too: only an object is event data.
    if data.starts_with('[') {
        return Err(ApiError::invalid(
            "invalid event data: invalid type: sequence, expected an object",
        ));
    }
    serde_json::from_str(data).map_err(|err| {
        // The position counts from the start of `data`, not of the frame: it would mislead.
        let text = err.to_string();
        let position = format!(" at line {} column {}", err.line(), err.column());
        let reason = text.strip_suffix(&position).unwrap_or(&text);
        ApiError::invalid(format!("invalid event data: {reason}"))
    })
}

// Each validates its fields in the order the handlers always did, so the same frame gets the
// same error as before: room, then the name or message, then the optional fields.

fn join(data: JoinData) -> Result<Join, ApiError> {
    // Whether the name may be left out depends on identity: `identity` decides, with the
    // words serde used when the field was required.
    Ok(Join {
        room: RoomId::parse(&data.room_id)?,
        username: data.username.as_deref().map(Username::parse).transpose()?,
        secret: data.secret.map(RoomSecret::parse).transpose()?,
        id_token: data.id_token.as_deref().map(IdToken::presented),
    })
}

fn chat(data: ChatData, max_message_bytes: usize) -> Result<Chat, ApiError> {
    Ok(Chat {
        room: RoomId::parse(&data.room_id)?,
        message: MessageText::parse(data.message, max_message_bytes)?,
        client_msg_id: data
            .client_msg_id
            .as_deref()
            .map(ClientMsgId::parse)
            .transpose()?,
        username: data.username.as_deref().map(Username::parse).transpose()?,
        token: data.token.as_deref().map(MemberToken::presented),
    })
}

fn edit(data: EditData, max_message_bytes: usize) -> Result<Edit, ApiError> {
    Ok(Edit {
        room: RoomId::parse(&data.room_id)?,
        id: EventId::of_message(&data.id)?,
        message: MessageText::parse(data.message, max_message_bytes)?,
        token: data.token.as_deref().map(MemberToken::presented),
    })
}

fn delete(data: DeleteData) -> Result<Delete, ApiError> {
    Ok(Delete {
        room: RoomId::parse(&data.room_id)?,
        id: EventId::of_message(&data.id)?,
        token: data.token.as_deref().map(MemberToken::presented),
    })
}

fn remove(data: RemoveData) -> Result<Remove, ApiError> {
    Ok(Remove {
        room: RoomId::parse(&data.room_id)?,
        username: Username::parse(&data.username)?,
        token: data.token.as_deref().map(MemberToken::presented),
        ban: data.ban.unwrap_or(false),
    })
}

fn typing(data: TypingData) -> Result<Typing, ApiError> {
    Ok(Typing {
        room: RoomId::parse(&data.room_id)?,
        token: data.token.as_deref().map(MemberToken::presented),
    })
}

fn resume(data: ResumeData) -> Result<Resume, ApiError> {
    Ok(Resume {
        room: RoomId::parse(&data.room_id)?,
        last_event_id: data
            .last_event_id
            .as_deref()
            .map(str::parse::<EventId>)
            .transpose()?,
        token: MemberToken::presented(&data.token),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(text: &str) -> Decoded {
        decode(text, 16)
    }

    #[test]
    fn decodes_each_event_kind() {
        let frame = r#"{"event":"create:room","ref":"c1","data":{"roomId":"lobby","username":" alice ","secret":"s"}}"#;
        let out = decoded(frame);
        assert_eq!(out.reference, Some(Value::from("c1")));
        let Ok(ClientEvent::CreateRoom(join)) = out.event else {
            panic!("not a create:room: {out:?}");
        };
        assert_eq!(
            (
                join.room.as_str(),
                join.username
                    .as_ref()
                    .map(Username::as_str)
                    .unwrap_or_default()
            ),
            ("lobby", "alice")
        );
        assert_eq!(join.secret.map(|s| s.expose().to_owned()), Some("s".into()));

        let frame = r#"{"event":"create:chat","data":{"roomId":"r","message":"hi","clientMsgId":"k:1","token":"t"}}"#;
        let Ok(ClientEvent::CreateChat(chat)) = decoded(frame).event else {
            panic!("not a create:chat");
        };
        assert_eq!(chat.message.as_str(), "hi");
        assert_eq!(
            chat.client_msg_id.map(|k| k.as_str().to_owned()),
            Some("k:1".into())
        );
        assert_eq!(chat.token.map(|t| t.expose().to_owned()), Some("t".into()));

        let frame = r#"{"event":"resume","data":{"roomId":"r","token":"t","lastEventId":"5-1"}}"#;
        let Ok(ClientEvent::Resume(resume)) = decoded(frame).event else {
            panic!("not a resume");
        };
        assert_eq!(resume.last_event_id, Some(EventId::new(5, 1)));

        let frame = r#"{"event":"remove:member","data":{"roomId":"r","username":"bob"}}"#;
        let Ok(ClientEvent::RemoveMember(remove)) = decoded(frame).event else {
            panic!("not a remove:member");
        };
        assert!(!remove.ban, "no ban unless asked");
        let frame =
            r#"{"event":"remove:member","data":{"roomId":"r","username":"bob","ban":true}}"#;
        let Ok(ClientEvent::RemoveMember(remove)) = decoded(frame).event else {
            panic!("not a remove:member");
        };
        assert!(remove.ban);
        let frame =
            r#"{"event":"remove:member","data":{"roomId":"r","username":"bob","ban":"yes"}}"#;
        assert_eq!(decoded(frame).event.unwrap_err().code(), "invalid_request");

        let frame = r#"{"event":"typing","ref":2,"data":{"roomId":"r"}}"#;
        let out = decoded(frame);
        assert_eq!(out.name, EventName::Typing);
        let Ok(ClientEvent::Typing(typing)) = out.event else {
            panic!("not a typing");
        };
        assert_eq!((typing.room.as_str(), typing.token.is_none()), ("r", true));
        let no_room = decoded(r#"{"event":"typing","data":{}}"#);
        assert_eq!(no_room.event.unwrap_err().code(), "invalid_request");

        let frame = r#"{"event":"update:chat","data":{"roomId":"r","id":"5-1","message":"hi!"}}"#;
        let Ok(ClientEvent::UpdateChat(edit)) = decoded(frame).event else {
            panic!("not an update:chat");
        };
        assert_eq!(
            (edit.id, edit.message.as_str()),
            (EventId::new(5, 1), "hi!")
        );
        let frame = r#"{"event":"delete:chat","data":{"roomId":"r","id":"5-1","token":"t"}}"#;
        let Ok(ClientEvent::DeleteChat(delete)) = decoded(frame).event else {
            panic!("not a delete:chat");
        };
        assert_eq!(delete.id, EventId::new(5, 1));
        assert!(delete.token.is_some());
    }

    #[test]
    fn an_edit_or_delete_needs_a_valid_id_and_an_edit_a_valid_message() {
        for frame in [
            r#"{"event":"update:chat","data":{"roomId":"r","message":"hi"}}"#,
            r#"{"event":"update:chat","data":{"roomId":"r","id":5,"message":"hi"}}"#,
            r#"{"event":"update:chat","data":{"roomId":"r","id":"5-1","message":"  "}}"#,
            r#"{"event":"delete:chat","data":{"roomId":"r"}}"#,
        ] {
            let err = decoded(frame).event.unwrap_err();
            assert_eq!(err.code(), "invalid_request", "{frame}");
        }
        // A string that is no event id names no message, as an unknown id does.
        for frame in [
            r#"{"event":"update:chat","data":{"roomId":"r","id":"x","message":"hi"}}"#,
            r#"{"event":"delete:chat","data":{"roomId":"r","id":"5"}}"#,
        ] {
            let err = decoded(frame).event.unwrap_err();
            assert_eq!(err.code(), "not_found", "{frame}");
        }
        let too_long = decoded(
            r#"{"event":"update:chat","data":{"roomId":"r","id":"5-1","message":"01234567890123456789"}}"#,
        );
        assert_eq!(too_long.event.unwrap_err().code(), "payload_too_large");
    }

    #[test]
    fn refusals_keep_the_ref_and_say_what_is_wrong() {
        let not_an_envelope = decoded(r#"{"ref":7,"data":{}}"#);
        assert_eq!(not_an_envelope.reference, Some(Value::from(7)));
        assert_eq!(not_an_envelope.name, EventName::Malformed);
        assert_eq!(not_an_envelope.event.unwrap_err().code(), "invalid_request");

        let unknown = decoded(r#"{"event":"shout","ref":"x"}"#);
        assert_eq!(unknown.name, EventName::Unknown);
        assert_eq!(unknown.reference, Some(Value::from("x")));

        // (A join's name may be missing: `identity` decides; see its tests.)
        let missing = decoded(r#"{"event":"remove:member","data":{"roomId":"r"}}"#);
        let err = missing.event.unwrap_err();
        assert!(
            err.to_string().contains("missing field `username`"),
            "{err}"
        );

        let too_long = decoded(
            r#"{"event":"create:chat","data":{"roomId":"r","message":"01234567890123456789"}}"#,
        );
        assert_eq!(too_long.event.unwrap_err().code(), "payload_too_large");

        let bad_id =
            decoded(r#"{"event":"resume","data":{"roomId":"r","token":"t","lastEventId":"x"}}"#);
        assert_eq!(bad_id.event.unwrap_err().code(), "invalid_request");

        assert_eq!(decoded("not json").reference, None);
        assert_eq!(decoded("[1]").reference, None);

        // Found by the fuzzer: serde reads structs from arrays, but events are objects.
        let array = decoded(r#"["resume","c1",{"roomId":"r","token":"t"}]"#);
        assert_eq!(array.name, EventName::Malformed);
        assert_eq!(array.reference, None);
        let array_data = decoded(r#"{"event":"add:member","ref":1,"data":["r","bob"]}"#);
        assert_eq!(array_data.reference, Some(Value::from(1)));
        assert_eq!(array_data.event.unwrap_err().code(), "invalid_request");
        let spaced = decoded("{\"event\":\"add:member\",\"data\": \n [\"r\",\"bob\"]}");
        assert_eq!(spaced.event.unwrap_err().code(), "invalid_request");
    }

    #[test]
    fn a_key_twice_in_data_is_refused_as_in_the_envelope() {
        let in_envelope = decoded(r#"{"event":"resume","event":"add:member","ref":1}"#);
        assert_eq!(in_envelope.name, EventName::Malformed);
        for frame in [
            r#"{"event":"add:member","ref":1,"data":{"roomId":"a","roomId":"b","username":"x"}}"#,
            r#"{"event":"create:chat","ref":1,"data":{"roomId":"r","message":"a","message":"b"}}"#,
            r#"{"event":"resume","ref":1,"data":{"roomId":"r","token":"t","token":"u"}}"#,
        ] {
            let out = decoded(frame);
            assert_eq!(out.reference, Some(Value::from(1)), "{frame}");
            let err = out.event.unwrap_err();
            assert_eq!(err.code(), "invalid_request", "{frame}");
            assert!(
                err.to_string().contains("duplicate field"),
                "{frame}: {err}"
            );
            assert!(!err.to_string().contains(" at line "), "{err}");
        }
    }
}
