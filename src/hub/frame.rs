//! Encoded frames: one room event as every connection receives it, encoded at most once per
//! transport however many connections carry it, and the batches the actor pushes them in.
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

use crate::domain::{EventId, EventKind, RoomEvent, Username};

/// One room event as every connection receives it. The WebSocket, SSE and socket.io encodings are made
/// by the first connection of each transport that needs them and shared by all others.
#[derive(Debug)]
pub struct Frame {
    pub event: RoomEvent,
    /// For a removal, the removed member's username key: normalized once here, not by each
    /// of the room's connections.
    removed_key: Option<String>,
    /// The WebSocket text, in the type the WebSocket transport asks for.
    ws: OnceLock<Box<dyn Any + Send + Sync>>,
    sse: OnceLock<Bytes>,
    socketio: OnceLock<Box<RawValue>>,
}

impl Frame {
    pub fn new(event: RoomEvent) -> Self {
        let removed_key = match &event.kind {
            EventKind::MemberRemoved { username, .. } => {
                Some(Username::from_stored(username.clone()).key().to_owned())
            }
            _ => None,
        };
        Self {
            event,
            removed_key,
            ws: OnceLock::new(),
            sse: OnceLock::new(),
            socketio: OnceLock::new(),
        }
    }

    /// Whether this event removes `member` from the room.
    pub fn removes(&self, member: &Username) -> bool {
        self.removed_key.as_deref() == Some(member.key())
    }

    /// Whether this is the room's deletion: the last frame of every membership in it.
    pub fn deletes_room(&self) -> bool {
        matches!(self.event.kind, EventKind::RoomDeleted)
    }

    /// The event id a transport sends with the frame: none for an event the log does not
    /// keep, so a client's resume point never moves to it.
    fn wire_id(&self) -> Option<EventId> {
        self.event.kind.is_logged().then_some(self.event.id)
    }

    /// `{"event": …, "id": …, "data": {…}}`, as the WebSocket transport's text type `T`
    /// (made once, by the first connection that asks). There is one WebSocket transport, so
    /// every caller asks for the same `T`.
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
                    data: crate::domain::EventData<'a>,
                }
                let text = serde_json::to_string(&WsEvent {
                    event: self.event.kind.name(),
                    id: self.wire_id(),
                    data: self.event.data(),
                })
                .expect("an event of strings serializes to JSON");
                Box::new(T::from(text))
            })
            .downcast_ref::<T>()
            .expect("the one WebSocket transport asks for one text type")
            .clone()
    }

    /// socket.io's event argument: the `data` object with the event's `id` in it (socket.io
    /// has no envelope for it; `eventId` where `id` is the chat message's), as JSON text that the library writes into each packet as is.
    pub fn socketio_data(&self) -> &RawValue {
        self.socketio.get_or_init(|| {
            let data = self.event.data().with_event_id(self.wire_id());
            serde_json::value::to_raw_value(&data).expect("an event of strings serializes to JSON")
        })
    }

    /// `id: …\nevent: …\ndata: {…}\n\n`.
    pub fn sse_bytes(&self) -> Bytes {
        self.sse
            .get_or_init(|| {
                let data = serde_json::to_string(&self.event.data())
                    .expect("an event of strings serializes to JSON");
                let id = self
                    .wire_id()
                    .map(|id| format!("id: {id}\n"))
                    .unwrap_or_default();
                Bytes::from(format!(
                    "{id}event: {}\ndata: {}\n\n",
                    self.event.kind.name(),
                    data
                ))
            })
            .clone()
    }
}

/// Consecutive events of one room, in log order, pushed to a connection as one item.
pub type Batch = Arc<[Arc<Frame>]>;
