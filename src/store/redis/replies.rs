//! Decoding what Redis answers into typed values: a room script's `{status, ...}` reply, stream
//! entries, and each layout shared with the Lua scripts through one named decoder here and one
//! named encoder there (`prelude.lua`, `post.lua`), so no offset is known in two places.

use redis::Value;

use crate::domain::{ChatMessage, EventId, EventKind, LeaveReason, RoomEvent, RoomId, Username};
use crate::store::{Authorized, Revised, StoreError, StoreResult};

pub(super) fn malformed(what: &'static str) -> StoreError {
    tracing::error!(what, "unexpected reply from a Redis script");
    StoreError::Unavailable
}

/// A room script's reply: `{status, ...values}`.
pub(super) struct Reply {
    pub(super) status: String,
    values: Vec<Value>,
}

impl Reply {
    pub(super) fn parse(value: Value) -> StoreResult<Self> {
        let Value::Array(mut items) = value else {
            return Err(malformed("script reply"));
        };
        if items.is_empty() {
            return Err(malformed("empty script reply"));
        }
        let status = text(items.remove(0))?;
        Ok(Self {
            status,
            values: items,
        })
    }

    pub(super) fn take(&mut self, index: usize) -> StoreResult<Value> {
        self.values
            .get_mut(index)
            .map(std::mem::take)
            .ok_or_else(|| malformed("missing reply value"))
    }

    pub(super) fn string(&self, index: usize) -> StoreResult<String> {
        self.values
            .get(index)
            .cloned()
            .ok_or_else(|| malformed("missing reply value"))
            .and_then(text)
    }

    pub(super) fn int(&self, index: usize) -> StoreResult<i64> {
        match self.values.get(index) {
            Some(Value::Int(n)) => Ok(*n),
            _ => Err(malformed("integer")),
        }
    }

    pub(super) fn event_id(&self, index: usize) -> StoreResult<EventId> {
        self.string(index)?
            .parse()
            .map_err(|_| malformed("event id"))
    }

    /// A reply `{'ok', ...}` or `{'unauthorized'}` of a script that acts for a member's token
    /// (or ticket): `ok`'s values decoded by `decode`.
    pub(super) fn authorized<T>(
        self,
        what: &'static str,
        decode: impl FnOnce(Self) -> StoreResult<T>,
    ) -> StoreResult<Authorized<T>> {
        match self.status.as_str() {
            "ok" => decode(self).map(Authorized::Member),
            "unauthorized" => Ok(Authorized::Unauthorized),
            _ => Err(malformed(what)),
        }
    }

    /// A reply of a script that edits or deletes a chat message for a member's token
    /// (`edit_message.lua`, `delete_message.lua`): `ok`'s values decoded by `decode`.
    pub(super) fn revised<T>(
        self,
        what: &'static str,
        decode: impl FnOnce(Self) -> StoreResult<T>,
    ) -> StoreResult<Revised<T>> {
        match self.status.as_str() {
            "ok" => decode(self).map(Revised::Done),
            "unauthorized" => Ok(Revised::Unauthorized),
            "not_found" => Ok(Revised::NotFound),
            "forbidden" => Ok(Revised::Forbidden),
            _ => Err(malformed(what)),
        }
    }

    /// A reply `{'ok', display name}` or `{'unauthorized'}`: the member a token (or a ticket)
    /// names (`authenticate.lua`, `redeem_ticket.lua`).
    pub(super) fn member(self, what: &'static str) -> StoreResult<Authorized<Username>> {
        self.authorized(what, |reply| Ok(Username::from_stored(reply.string(0)?)))
    }

    /// The values after the status, in order.
    fn into_values(self) -> Vec<Value> {
        self.values
    }
}

pub(super) fn text(value: Value) -> StoreResult<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).map_err(|_| malformed("utf-8")),
        Value::SimpleString(s) => Ok(s),
        Value::Okay => Ok("OK".to_owned()),
        Value::Int(n) => Ok(n.to_string()),
        _ => Err(malformed("string")),
    }
}

pub(super) fn array(value: Value) -> StoreResult<Vec<Value>> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        _ => Err(malformed("array")),
    }
}

/// What `post.lua` answered for one message (its `answer(kind, id, text)`: three reply
/// entries per message, after the display name).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PostAnswer {
    /// Appended now, under this id.
    New(EventId),
    /// Stored before under the same key: its id and text.
    Replayed(EventId, String),
    KeyReused,
}

/// How many reply entries `post.lua`'s `answer` writes per message.
const POST_ANSWER_LEN: usize = 3;

/// Decodes an `ok` reply of `post.lua`: the poster's display name, then one answer per
/// message, `expected` of them.
pub(super) fn post_answers(
    reply: Reply,
    expected: usize,
) -> StoreResult<(String, Vec<PostAnswer>)> {
    let mut values = reply.into_values().into_iter();
    let display = text(values.next().ok_or_else(|| malformed("post display"))?)?;
    let rest: Vec<Value> = values.collect();
    if rest.len() != expected * POST_ANSWER_LEN {
        return Err(malformed("post answers"));
    }
    let mut answers = Vec::with_capacity(expected);
    let mut rest = rest.into_iter();
    while let (Some(kind), Some(id), Some(stored)) = (rest.next(), rest.next(), rest.next()) {
        let id = || -> StoreResult<EventId> {
            text(id.clone())?
                .parse()
                .map_err(|_| malformed("post event id"))
        };
        answers.push(match text(kind)?.as_str() {
            "new" => PostAnswer::New(id()?),
            "replayed" => PostAnswer::Replayed(id()?, text(stored)?),
            "key_reused" => PostAnswer::KeyReused,
            _ => return Err(malformed("post outcome")),
        });
    }
    Ok((display, answers))
}

/// The display name in a `members` hash record, `<64 hex token hash>:<display name>`, as
/// prelude.lua's `member_record` writes it (and its `record_display` reads it).
pub(super) fn member_record_display(record: &str) -> StoreResult<&str> {
    const TOKEN_HASH_LEN: usize = 64;
    match record.split_at_checked(TOKEN_HASH_LEN) {
        Some((_, rest)) => rest.strip_prefix(':').ok_or_else(|| malformed("member")),
        None => Err(malformed("member")),
    }
}

/// What `sweep_room.lua` answered.
#[derive(Debug, PartialEq)]
pub(super) enum SweepAnswer {
    /// The room no longer exists.
    Gone,
    /// How many members timed out, and the earliest lease left (`None`: no leases left).
    Swept {
        timed_out: usize,
        next_deadline: Option<f64>,
    },
}

pub(super) fn sweep_answer(reply: &Reply) -> StoreResult<SweepAnswer> {
    match reply.status.as_str() {
        "gone" => Ok(SweepAnswer::Gone),
        "ok" => {
            let timed_out = usize::try_from(reply.int(0)?).unwrap_or(0);
            let next_deadline = match reply.string(1)?.as_str() {
                "" => None,
                deadline => Some(deadline.parse::<f64>().map_err(|_| malformed("deadline"))?),
            };
            Ok(SweepAnswer::Swept {
                timed_out,
                next_deadline,
            })
        }
        _ => Err(malformed("sweep status")),
    }
}

/// Decodes one stream entry, `[id, [field, value, ...]]`, into an event of `room`.
pub(super) fn stream_entry(room: &RoomId, entry: Value) -> StoreResult<RoomEvent> {
    let mut parts = array(entry)?.into_iter();
    stream_entry_parts(room, parts.next(), parts.next())
}

/// Decodes one entry of `history.lua`'s reply: a stream entry with its text as last edited,
/// and for an edited message a third element, the id of its last edit.
pub(super) fn history_entry(room: &RoomId, entry: Value) -> StoreResult<ChatMessage> {
    let mut parts = array(entry)?.into_iter();
    let event = stream_entry_parts(room, parts.next(), parts.next())?;
    let edited = parts
        .next()
        .map(|id| text(id)?.parse().map_err(|_| malformed("edit id")))
        .transpose()?;
    let mut message = event.as_chat().ok_or_else(|| malformed("history entry"))?;
    message.edited_ts = edited.map(crate::domain::timestamp);
    Ok(message)
}

/// The event of a stream entry's id and fields.
fn stream_entry_parts(
    room: &RoomId,
    id: Option<Value>,
    fields: Option<Value>,
) -> StoreResult<RoomEvent> {
    let id: EventId = text(id.ok_or_else(|| malformed("entry id"))?)?
        .parse()
        .map_err(|_| malformed("entry id"))?;
    let fields = array(fields.ok_or_else(|| malformed("entry fields"))?)?;
    let mut kind = None;
    let mut username = None;
    let mut prev = None;
    let mut message = None;
    let mut reason = None;
    let mut target = None;
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        let value = text(value)?;
        match text(name)?.as_str() {
            "t" => kind = Some(value),
            "u" => username = Some(value),
            "p" => prev = Some(value),
            "m" => message = Some(value),
            "r" => reason = Some(value),
            "i" => target = Some(value),
            _ => {}
        }
    }
    let prev = prev
        .ok_or_else(|| malformed("entry prev"))?
        .parse()
        .map_err(|_| malformed("entry prev"))?;
    let kind = event_kind(
        kind.as_deref(),
        username,
        message,
        reason.as_deref(),
        target.as_deref(),
    )?;
    Ok(RoomEvent {
        id,
        prev,
        room: room.clone(),
        kind,
    })
}

/// Rebuilds an event's kind from its stored fields (`t`, `u`, `m`, `r`, `i`: see prelude.lua's
/// `append`).
pub(crate) fn event_kind(
    kind: Option<&str>,
    username: Option<String>,
    message: Option<String>,
    reason: Option<&str>,
    target: Option<&str>,
) -> StoreResult<EventKind> {
    let username = username.ok_or_else(|| malformed("event username"))?;
    let target = || -> StoreResult<EventId> {
        target
            .ok_or_else(|| malformed("event target"))?
            .parse()
            .map_err(|_| malformed("event target"))
    };
    Ok(match kind {
        Some("create:room:success") => EventKind::RoomCreated { username },
        Some("add:member:success") => EventKind::MemberAdded { username },
        Some("remove:member:success") => EventKind::MemberRemoved {
            username,
            reason: reason
                .and_then(LeaveReason::parse)
                .ok_or_else(|| malformed("event reason"))?,
        },
        Some("create:chat:success") => EventKind::Chat {
            username,
            message: message.ok_or_else(|| malformed("event message"))?,
        },
        Some("update:chat:success") => EventKind::ChatEdited {
            target: target()?,
            username,
            message: message.ok_or_else(|| malformed("event message"))?,
        },
        Some("delete:chat:success") => EventKind::ChatDeleted {
            target: target()?,
            username,
        },
        // Only ever published (`delete_room.lua`), never in a log.
        Some("room:deleted") => EventKind::RoomDeleted,
        _ => return Err(malformed("event kind")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn post_answers_are_three_entries_per_message() {
        let reply = Reply::parse(Value::Array(vec![
            bulk("ok"),
            bulk("alice"),
            bulk("new"),
            bulk("5-0"),
            bulk(""),
            bulk("replayed"),
            bulk("4-0"),
            bulk("hi"),
            bulk("key_reused"),
            bulk(""),
            bulk(""),
        ]))
        .expect("a well-formed reply");
        let (display, answers) = post_answers(reply, 3).expect("three answers");
        assert_eq!(display, "alice");
        assert_eq!(
            answers,
            [
                PostAnswer::New(EventId::new(5, 0)),
                PostAnswer::Replayed(EventId::new(4, 0), "hi".into()),
                PostAnswer::KeyReused,
            ]
        );
        let short = Reply::parse(Value::Array(vec![bulk("ok"), bulk("alice"), bulk("new")]))
            .expect("a well-formed reply");
        assert!(post_answers(short, 1).is_err());
    }

    #[test]
    fn member_records_hold_the_display_name_after_the_token_hash() {
        let record = format!("{}:Alice Smith", "a".repeat(64));
        assert_eq!(member_record_display(&record), Ok("Alice Smith"));
        assert!(member_record_display("short:name").is_err());
    }
}
