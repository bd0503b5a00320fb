//! The hub: this instance's fan-out. Per room with local subscribers, one task (the room's
//! *actor*) receives the room's events from the feed, puts them in log order without gaps or
//! duplicates, and pushes each, encoded at most once per transport, into every subscriber's
//! bounded queue.
//!
//! Why an actor per room: ordering, gap filling and subscription all need "what is the last
//! event this instance delivered for the room" (`last`), and an actor owns that without a lock
//! held across the awaits that filling a gap from the log needs.
//!
//! - **Exactly once, in order.** An event is delivered only if its `prev` is `last`; if not,
//!   the actor reads the log after `last` first (the feed lost something), and events at or
//!   below `last` are duplicates and skipped. After the feed reconnects (`Resync`) every actor
//!   reads the log after its `last`.
//! - **Replay, then live, without a seam.** A subscription asks for events after an id; the
//!   actor answers with the log between that id and `last` and registers the subscriber in
//!   the same step, so every later event reaches it live.
//! - **Batching by what is queued.** A socket write is most of the cost of a delivery, so
//!   events share writes, but only those already waiting: an actor pushes each event at
//!   once, together with the events that queued in its inbox meanwhile (one [`Batch`]), and
//!   a connection, when its socket is ready, writes everything queued for it in one go. A
//!   connection that keeps up gets each event without delay; one that is behind (its task
//!   waited its turn, its last write was slow) catches up with fewer, larger writes. Only a
//!   busy room whose connections are behind holds its events, up to the coalescing window
//!   (`FANOUT_COALESCE_MS`, see `pace`), which is what sustains 800 events/s to a thousand
//!   connections on two cores.
//! - **Ephemeral events** (presence, typing) have no id and no place in the log: the actor
//!   pushes them to the subscribers it has when they arrive, in the order they arrived among
//!   the logged events, without moving `last`, reading the log or filtering by a
//!   subscriber's replay point, and a room's catch-up never brings them back. One that arrives
//!   while nobody here subscribes, or that the feed loses, is gone (at most once).
//! - **Slow consumers.** A full queue means the client does not keep up: its inbox is
//!   `closed` (the connection closes with 1013 and the client resumes) and the
//!   room moves on. Nothing blocks the room, nothing is dropped silently.
//! - **No silent gap.** When the log no longer holds what followed `last` (it was trimmed
//!   past it, or lost), the events the feed missed cannot be delivered: every subscriber's
//!   inbox is closed with [`Closed::Gap`] (WebSocket 1012, SSE ends), so the client resumes
//!   and its resume reports the gap.
//! - **Lifetimes.** An actor exits when its last subscriber leaves, unsubscribing the feed,
//!   so an instance listens only to rooms that have connections here.

mod actor;
mod frame;
mod mailbox;
mod pace;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use frame::{Batch, Frame};
pub use mailbox::{Closed, Inbox, Mailbox, mailbox};

use crate::domain::{EventId, EventKind, RoomId, Username};
use crate::error::ApiError;
use crate::store::{Feed, FeedItem, FeedSink, RoomLog};
use actor::RoomActor;

/// How long a subscriber waits for its room to answer before it is told `unavailable`.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a new subscriber gets first: the logged events after the id it asked for.
#[derive(Debug)]
pub struct Replay {
    pub events: Vec<Arc<Frame>>,
    /// False when some events after the asked id were already trimmed from the log.
    pub complete: bool,
}

impl Replay {
    /// Where `member`'s current membership starts in the replay: the id of the last
    /// `add:member` of its name here, or zero. A removal of the same name before it ended an
    /// earlier membership (the member left and joined again), not this one.
    pub fn joined_at(&self, member: &Username) -> EventId {
        self.events
            .iter()
            .rev()
            .filter_map(|frame| frame.event())
            .find(|event| {
                matches!(&event.kind, EventKind::MemberAdded { username }
                    if Username::from_stored(username.clone()).key() == member.key())
            })
            .map_or(EventId::ZERO, |event| event.id)
    }
}

#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    store: Arc<dyn RoomLog>,
    feed: Arc<dyn Feed>,
    /// How long a busy room whose connections are behind holds events to push them together;
    /// zero holds none.
    coalesce: Duration,
    /// The actors of the rooms with local subscribers. Senders into an actor are only used
    /// while this lock is held, which is what lets an actor retire without losing a command.
    rooms: Mutex<HashMap<RoomId, mpsc::UnboundedSender<Command>>>,
    tasks: TaskTracker,
    stopping: CancellationToken,
    next_subscriber: AtomicU64,
}

enum Command {
    Feed(FeedItem),
    Subscribe {
        subscriber: Subscriber,
        after: Option<EventId>,
        reply: oneshot::Sender<Result<Replay, ApiError>>,
    },
    Unsubscribe(u64),
}

struct Subscriber {
    id: u64,
    /// Only events after this id go to the subscriber (it has the rest from its replay).
    after: EventId,
    mailbox: Mailbox,
}

/// A live subscription; dropping it unsubscribes.
pub struct Subscription {
    room: RoomId,
    id: u64,
    hub: Weak<HubInner>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.send(&self.room, Command::Unsubscribe(self.id), false);
        }
    }
}

impl Hub {
    pub fn new(
        store: Arc<dyn RoomLog>,
        feed: Arc<dyn Feed>,
        coalesce: Duration,
        tasks: TaskTracker,
        stopping: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(HubInner {
                store,
                feed,
                coalesce,
                rooms: Mutex::new(HashMap::new()),
                tasks,
                stopping,
                next_subscriber: AtomicU64::new(1),
            }),
        }
    }

    /// The sink the store's feed delivers to. It holds the hub weakly: the hub owns the
    /// store, and the store keeps the sink.
    pub fn sink(&self) -> Arc<dyn FeedSink> {
        Arc::new(HubSink(Arc::downgrade(&self.inner)))
    }

    /// Subscribes `mailbox` to `room`: events after `after` come first in the reply, every
    /// later one arrives live in the mailbox. `after: None` starts live.
    pub async fn subscribe(
        &self,
        room: &RoomId,
        after: Option<EventId>,
        mailbox: &Mailbox,
    ) -> Result<(Subscription, Replay), ApiError> {
        let id = self.inner.next_subscriber.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        let subscriber = Subscriber {
            id,
            after: EventId::ZERO,
            mailbox: mailbox.clone(),
        };
        self.inner.send(
            room,
            Command::Subscribe {
                subscriber,
                after,
                reply,
            },
            true,
        );
        let subscription = Subscription {
            room: room.clone(),
            id,
            hub: Arc::downgrade(&self.inner),
        };
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, answer).await {
            Ok(Ok(Ok(replay))) => Ok((subscription, replay)),
            Ok(Ok(Err(err))) => Err(err),
            // The room could not reach the store in time (or is stopping).
            _ => Err(ApiError::Unavailable),
        }
    }

    /// How many rooms have an actor here (for metrics and tests).
    pub fn active_rooms(&self) -> usize {
        self.inner.lock_rooms().len()
    }
}

struct HubSink(Weak<HubInner>);

impl FeedSink for HubSink {
    fn deliver(&self, item: FeedItem) {
        let Some(hub) = self.0.upgrade() else {
            return;
        };
        match item {
            FeedItem::Event(event) => {
                let room = event.room.clone();
                hub.send(&room, Command::Feed(FeedItem::Event(event)), false);
            }
            FeedItem::Ephemeral(ephemeral) => {
                let room = ephemeral.room.clone();
                hub.send(&room, Command::Feed(FeedItem::Ephemeral(ephemeral)), false);
            }
            FeedItem::Resync => {
                for actor in hub.lock_rooms().values() {
                    // A closed actor is retiring; it has nothing to catch up for.
                    let _retiring = actor.send(Command::Feed(FeedItem::Resync));
                }
            }
            FeedItem::ResyncRoom(room) => {
                if let Some(actor) = hub.lock_rooms().get(&room) {
                    let _retiring = actor.send(Command::Feed(FeedItem::Resync));
                }
            }
        }
    }
}

impl HubInner {
    fn lock_rooms(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<RoomId, mpsc::UnboundedSender<Command>>> {
        // The map is only ever inserted into or removed from; it is consistent even after a
        // panic elsewhere.
        self.rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends a command to a room's actor, starting the actor if `start` and there is none.
    fn send(self: &Arc<Self>, room: &RoomId, command: Command, start: bool) {
        let mut rooms = self.lock_rooms();
        if let Some(actor) = rooms.get(room) {
            // Cannot fail: an actor removes itself from the map before its inbox closes.
            let _ = actor.send(command);
            return;
        }
        if !start || self.stopping.is_cancelled() {
            return;
        }
        let (tx, inbox) = mpsc::unbounded_channel();
        let _ = tx.send(command);
        rooms.insert(room.clone(), tx);
        let actor = RoomActor::new(
            room.clone(),
            Arc::downgrade(self),
            self.store.clone(),
            self.feed.clone(),
            inbox,
            self.coalesce,
            self.stopping.clone(),
        );
        self.tasks.spawn(actor.run());
        metrics::gauge!("chat_hub_rooms").set(rooms.len() as f64);
    }
}
