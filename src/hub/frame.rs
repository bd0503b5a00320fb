//! Encoded frames: one room event (logged or ephemeral) as every connection receives it,
//! encoded at most once per transport however many connections carry it, and the batches the
//! actor pushes them in.
//!
//! Why here and not in each transport: serializing per connection would be the fan-out's
//! dominant cost; one lazily made encoding per transport, shared through an `Arc`, keeps a
//! delivery to a copy of a pointer.
//!
//! The WebSocket text is kept in the transport's own text type (axum's `Utf8Bytes` today),
//! which this module does not name: the slot is type-erased and the transport says the type
//! when it asks, so a delivery costs a type check and a reference count, not a UTF-8
//! validation or a copy, and the hub stays free of the web framework.

use std::any::Any;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::domain::{
    Ephemeral, EphemeralData, EventData, EventId, EventKind, RoomEvent, RoomId, Username,
};

/// One room event as every connection receives it: an event of the room's log (or the room's
/// deletion, which the log does not keep), or an ephemeral event. The WebSocket, SSE and
/// socket.io encodings are made by the first connection of each transport that needs them and
/// shared by all others.
#[derive(Debug)]
pub struct Frame {
    body: Body,
    /// The username key of the member the frame is about, normalized once here rather than
    /// by each of the room's connections: the removed member of a removal, the member of an
    /// ephemeral event; `None` for other frames.
    member_key: Option<String>,
    /// The WebSocket text, in the type the WebSocket transport asks for.
    ws: OnceLock<Box<dyn Any + Send + Sync>>,
    sse: OnceLock<Bytes>,
    socketio: OnceLock<Box<RawValue>>,
}

#[derive(Debug)]
enum Body {
    Logged(RoomEvent),
    Ephemeral(Ephemeral),
}

/// A frame's `data` object, as the transports serialize it.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Logged(EventData<'a>),
    Ephemeral(EphemeralData<'a>),
}

impl Frame {
    pub fn new(event: RoomEvent) -> Self {
        let member_key = match &event.kind {
            EventKind::MemberRemoved { username, .. } => Some(key_of(username)),
            _ => None,
        };
        Self::with_body(Body::Logged(event), member_key)
    }

    pub fn ephemeral(ephemeral: Ephemeral) -> Self {
        let member_key = Some(key_of(ephemeral.kind.username()));
        Self::with_body(Body::Ephemeral(ephemeral), member_key)
    }

    fn with_body(body: Body, member_key: Option<String>) -> Self {
        Self {
            body,
            member_key,
            ws: OnceLock::new(),
            sse: OnceLock::new(),
            socketio: OnceLock::new(),
        }
    }

    /// The event of the room's log (or the room's deletion) this frame carries; `None` for
    /// an ephemeral event, which has no place in the log's order.
    pub fn event(&self) -> Option<&RoomEvent> {
        match &self.body {
            Body::Logged(event) => Some(event),
            Body::Ephemeral(_) => None,
        }
    }

    /// The ephemeral event this frame carries, if it is one.
    pub fn as_ephemeral(&self) -> Option<&Ephemeral> {
        match &self.body {
            Body::Logged(_) => None,
            Body::Ephemeral(ephemeral) => Some(ephemeral),
        }
    }

    pub fn room(&self) -> &RoomId {
        match &self.body {
            Body::Logged(event) => &event.room,
            Body::Ephemeral(ephemeral) => &ephemeral.room,
        }
    }

    /// The event's name on every transport.
    pub fn name(&self) -> &'static str {
        match &self.body {
            Body::Logged(event) => event.kind.name(),
            Body::Ephemeral(ephemeral) => ephemeral.kind.name(),
        }
    }

    /// Whether this event removes `member` from the room.
    pub fn removes(&self, member: &Username) -> bool {
        self.event().is_some() && self.member_key.as_deref() == Some(member.key())
    }

    /// Whether this is an ephemeral event about `member` itself.
    pub fn is_about(&self, member: &Username) -> bool {
        self.as_ephemeral().is_some() && self.member_key.as_deref() == Some(member.key())
    }

    /// Whether this is the room's deletion: the last frame of every membership in it.
    pub fn deletes_room(&self) -> bool {
        self.event()
            .is_some_and(|event| matches!(event.kind, EventKind::RoomDeleted))
    }

    /// The event id a transport sends with the frame: none for an event the log does not
    /// keep, so a client's resume point never moves to it.
    fn wire_id(&self) -> Option<EventId> {
        self.event()
            .filter(|event| event.kind.is_logged())
            .map(|event| event.id)
    }

    fn data(&self) -> Data<'_> {
        match &self.body {
            Body::Logged(event) => Data::Logged(event.data()),
            Body::Ephemeral(ephemeral) => Data::Ephemeral(ephemeral.data()),
        }
    }

    /// `{"event": …, "id": …, "data": {…}}` (no `id` for an event the log does not keep), as
    /// the WebSocket transport's text type `T` (made once, by the first connection that
    /// asks). There is one WebSocket transport, so every caller asks for the same `T`.
    pub fn ws_text<T>(&self) -> T
    where
        T: From<String> + Clone + Send + Sync + 'static,
    {
        self.ws
            .get_or_init(|| {
                #[derive(serde::Serialize)]
                struct WsEvent<'a> {
                    event: &'static str,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    id: Option<EventId>,
                    data: Data<'a>,
                }
                let text = serde_json::to_string(&WsEvent {
                    event: self.name(),
                    id: self.wire_id(),
                    data: self.data(),
                })
                .expect("an event of strings serializes to JSON");
                Box::new(T::from(text))
            })
            .downcast_ref::<T>()
            .expect("the one WebSocket transport asks for one text type")
            .clone()
    }

    /// socket.io's event argument: the `data` object with the event's `id` in it (socket.io
    /// has no envelope for it; `eventId` where `id` is the chat message's, none for an event
    /// the log does not keep), as JSON text that the library writes into each packet as is.
    pub fn socketio_data(&self) -> &RawValue {
        self.socketio.get_or_init(|| {
            let data = match &self.body {
                Body::Logged(event) => {
                    serde_json::value::to_raw_value(&event.data().with_event_id(self.wire_id()))
                }
                Body::Ephemeral(ephemeral) => serde_json::value::to_raw_value(&ephemeral.data()),
            };
            data.expect("an event of strings serializes to JSON")
        })
    }

    /// `id: …\nevent: …\ndata: {…}\n\n` (no `id:` line for an event the log does not keep,
    /// so `Last-Event-ID` stays where it was).
    pub fn sse_bytes(&self) -> Bytes {
        self.sse
            .get_or_init(|| {
                let data = serde_json::to_string(&self.data())
                    .expect("an event of strings serializes to JSON");
                let id = self
                    .wire_id()
                    .map(|id| format!("id: {id}\n"))
                    .unwrap_or_default();
                Bytes::from(format!("{id}event: {}\ndata: {}\n\n", self.name(), data))
            })
            .clone()
    }
}

/// The username key of a stored display name.
fn key_of(display: &str) -> String {
    Username::from_stored(display.to_owned()).key().to_owned()
}

/// Consecutive events of one room, in the order the room took them, pushed to a connection as
/// one item.
pub type Batch = Arc<[Arc<Frame>]>;
