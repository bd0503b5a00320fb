//! Encoded frames: one room event as every connection receives it, encoded at most once per
//! transport however many connections carry it, and the batches the actor pushes them in.
//!
//! Why here and not in each transport: serializing per connection would be the fan-out's
//! dominant cost; one lazily made encoding per transport, shared through an `Arc`, keeps a
//! delivery to a copy of a pointer.

use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;

use crate::domain::{EventId, EventKind, RoomEvent, Username};

/// One room event as every connection receives it. The WebSocket and SSE encodings are made
/// by the first connection of each transport that needs them and shared by all others.
#[derive(Debug)]
pub struct Frame {
    pub event: RoomEvent,
    /// For a removal, the removed member's username key: normalized once here, not by each
    /// of the room's connections.
    removed_key: Option<String>,
    ws: OnceLock<Utf8Bytes>,
    sse: OnceLock<Bytes>,
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
        }
    }

    /// Whether this event removes `member` from the room.
    pub fn removes(&self, member: &Username) -> bool {
        self.removed_key.as_deref() == Some(member.key())
    }

    /// `{"event": …, "id": …, "data": {…}}`.
    pub fn ws_text(&self) -> Utf8Bytes {
        self.ws
            .get_or_init(|| {
                #[derive(serde::Serialize)]
                struct WsEvent<'a> {
                    event: &'static str,
                    id: EventId,
                    data: crate::domain::EventData<'a>,
                }
                let text = serde_json::to_string(&WsEvent {
                    event: self.event.kind.name(),
                    id: self.event.id,
                    data: self.event.data(),
                })
                .expect("an event of strings serializes to JSON");
                Utf8Bytes::from(text)
            })
            .clone()
    }

    /// `id: …\nevent: …\ndata: {…}\n\n`.
    pub fn sse_bytes(&self) -> Bytes {
        self.sse
            .get_or_init(|| {
                let data = serde_json::to_string(&self.event.data())
                    .expect("an event of strings serializes to JSON");
                Bytes::from(format!(
                    "id: {}\nevent: {}\ndata: {}\n\n",
                    self.event.id,
                    self.event.kind.name(),
                    data
                ))
            })
            .clone()
    }
}

/// Consecutive events of one room, in log order, pushed to a connection as one item.
pub type Batch = Arc<[Arc<Frame>]>;
