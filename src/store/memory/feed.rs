//! [`LocalFeed`]: the memory store's feed, handing the events it appends (and the ephemeral
//! events it decides on) to the hub.

use std::sync::{Arc, OnceLock};

use crate::domain::{Ephemeral, RoomEvent, RoomId};
use crate::store::{Feed, FeedItem, FeedSink, StoreFuture};

/// The memory store's [`Feed`]: the store hands it every event it appends, and it passes
/// them on to the hub's sink. It carries every room, so a room is live as soon as asked, and
/// the hub's sink ignores rooms nobody here watches.
#[derive(Default)]
pub struct LocalFeed {
    sink: OnceLock<Arc<dyn FeedSink>>,
}

impl LocalFeed {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts delivering to `sink`; only the first call counts (the app has one hub).
    pub fn start(&self, sink: Arc<dyn FeedSink>) {
        let _first = self.sink.set(sink);
    }

    pub(super) fn deliver(&self, events: Vec<RoomEvent>) {
        if let Some(sink) = self.sink.get() {
            for event in events {
                sink.deliver(FeedItem::Event(event));
            }
        }
    }

    pub(super) fn deliver_ephemeral(&self, told: Vec<Ephemeral>) {
        if let Some(sink) = self.sink.get() {
            for ephemeral in told {
                sink.deliver(FeedItem::Ephemeral(ephemeral));
            }
        }
    }
}

impl Feed for LocalFeed {
    fn subscribe<'a>(&'a self, _room: &'a RoomId) -> StoreFuture<'a, ()> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn unsubscribe(&self, _room: &RoomId) {}
}
