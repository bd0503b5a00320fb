//! Ephemeral events: what describes the moment in a room (a member came online or went
//! offline, a member is typing), not its history. They are never appended to the log, carry no
//! event id, take no part in the hub's ordering or gap filling, and are never replayed: at most
//! once, to the connections live when they happen. The member list stays the truth about who
//! is online; presence events only save clients from polling it.

use std::time::Duration;

use super::RoomId;

/// At most one `typing` per member per this long is broadcast, across every instance; more
/// are acknowledged and dropped (API.md).
pub const TYPING_EVERY: Duration = Duration::from_secs(2);

/// One ephemeral event of a room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ephemeral {
    pub room: RoomId,
    pub kind: EphemeralKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EphemeralKind {
    /// A member's online state changed: its first connection (on any instance) opened, or its
    /// last one closed or was lost.
    Presence { username: String, online: bool },
    /// A member is typing.
    Typing { username: String },
}

impl EphemeralKind {
    /// The event's name on every transport; also the `kind` label of its metrics.
    pub fn name(&self) -> &'static str {
        match self {
            EphemeralKind::Presence { .. } => "presence",
            EphemeralKind::Typing { .. } => "typing",
        }
    }

    /// The member the event is about, by its display name.
    pub fn username(&self) -> &str {
        match self {
            EphemeralKind::Presence { username, .. } | EphemeralKind::Typing { username } => {
                username
            }
        }
    }
}

impl Ephemeral {
    /// The event's `data` object, identical on every transport.
    pub fn data(&self) -> EphemeralData<'_> {
        EphemeralData {
            room_id: self.room.as_str(),
            username: self.kind.username(),
            online: match self.kind {
                EphemeralKind::Presence { online, .. } => Some(online),
                EphemeralKind::Typing { .. } => None,
            },
        }
    }
}

/// The `data` of an ephemeral event: `{roomId, username}`, plus `online` for presence.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EphemeralData<'a> {
    pub room_id: &'a str,
    pub username: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_has_online_for_presence_only() {
        let room = RoomId::parse("lobby").expect("a valid room id");
        let presence = Ephemeral {
            room: room.clone(),
            kind: EphemeralKind::Presence {
                username: "alice".into(),
                online: false,
            },
        };
        assert_eq!(
            serde_json::to_string(&presence.data()).unwrap(),
            r#"{"roomId":"lobby","username":"alice","online":false}"#
        );
        let typing = Ephemeral {
            room,
            kind: EphemeralKind::Typing {
                username: "bob".into(),
            },
        };
        assert_eq!(typing.kind.name(), "typing");
        assert_eq!(
            serde_json::to_string(&typing.data()).unwrap(),
            r#"{"roomId":"lobby","username":"bob"}"#
        );
    }
}
