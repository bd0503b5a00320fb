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
//! - **Slow consumers.** A full queue means the client does not keep up: its `overflowed`
//!   token is cancelled (the connection closes with 1013 and the client resumes) and the
//!   room moves on. Nothing blocks the room, nothing is dropped silently.
//! - **Lifetimes.** An actor exits when its last subscriber leaves, unsubscribing the feed,
//!   so an instance listens only to rooms that have connections here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::{EventId, RoomEvent, RoomId};
use crate::error::ApiError;
use crate::store::{FeedItem, FeedSink, Store};

/// How many log entries one catch-up read asks for.
const LOG_BATCH: usize = 500;
/// How long a subscriber waits for its room to answer before it is told `unavailable`.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One room event as every connection receives it. The WebSocket and SSE encodings are made
/// by the first connection of each transport that needs them and shared by all others.
#[derive(Debug)]
pub struct Frame {
    pub event: RoomEvent,
    ws: OnceLock<Utf8Bytes>,
    sse: OnceLock<Bytes>,
}

impl Frame {
    pub fn new(event: RoomEvent) -> Self {
        Self {
            event,
            ws: OnceLock::new(),
            sse: OnceLock::new(),
        }
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

/// The sending side of one connection's queue, shared by all the rooms it subscribes to.
#[derive(Clone)]
pub struct Mailbox {
    tx: mpsc::Sender<Arc<Frame>>,
    overflowed: CancellationToken,
}

/// The receiving side: the connection reads frames here and closes when `overflowed` fires.
pub struct Inbox {
    pub frames: mpsc::Receiver<Arc<Frame>>,
    pub overflowed: CancellationToken,
}

/// A connection's bounded queue.
pub fn mailbox(capacity: usize) -> (Mailbox, Inbox) {
    let (tx, frames) = mpsc::channel(capacity);
    let overflowed = CancellationToken::new();
    (
        Mailbox {
            tx,
            overflowed: overflowed.clone(),
        },
        Inbox { frames, overflowed },
    )
}

/// What a new subscriber gets first: the logged events after the id it asked for.
#[derive(Debug)]
pub struct Replay {
    pub events: Vec<Arc<Frame>>,
    /// False when some events after the asked id were already trimmed from the log.
    pub complete: bool,
}

#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    store: Arc<dyn Store>,
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
    pub fn new(store: Arc<dyn Store>, tasks: TaskTracker, stopping: CancellationToken) -> Self {
        Self {
            inner: Arc::new(HubInner {
                store,
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
            FeedItem::Resync => {
                for actor in hub.lock_rooms().values() {
                    // A closed actor is retiring; it has nothing to catch up for.
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
        let actor = RoomActor {
            room: room.clone(),
            hub: Arc::downgrade(self),
            store: self.store.clone(),
            inbox,
            subscribers: Vec::new(),
            last: EventId::ZERO,
            stopping: self.stopping.clone(),
        };
        self.tasks.spawn(actor.run());
        metrics::gauge!("chat_hub_rooms").set(rooms.len() as f64);
    }
}

struct RoomActor {
    room: RoomId,
    hub: Weak<HubInner>,
    store: Arc<dyn Store>,
    inbox: mpsc::UnboundedReceiver<Command>,
    subscribers: Vec<Subscriber>,
    /// The last event delivered here, in log order.
    last: EventId,
    stopping: CancellationToken,
}

impl RoomActor {
    async fn run(mut self) {
        if !self.start().await {
            return;
        }
        loop {
            let command = tokio::select! {
                () = self.stopping.cancelled() => return,
                command = self.inbox.recv() => command,
            };
            match command {
                None => return,
                Some(Command::Feed(FeedItem::Event(event))) => self.on_event(event).await,
                Some(Command::Feed(FeedItem::Resync)) => self.catch_up(None).await,
                Some(Command::Subscribe {
                    subscriber,
                    after,
                    reply,
                }) => self.on_subscribe(subscriber, after, reply).await,
                Some(Command::Unsubscribe(id)) => self.subscribers.retain(|s| s.id != id),
            }
            if self.subscribers.is_empty() && self.retire() {
                return;
            }
        }
    }

    /// Makes the feed live for this room, then reads where its log stands: every event after
    /// that arrives through the feed. Retries until the store answers.
    async fn start(&mut self) -> bool {
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = async {
                self.store.subscribe_feed(&self.room).await?;
                self.store.last_event_id(&self.room).await
            };
            let outcome = tokio::select! {
                () = self.stopping.cancelled() => return false,
                outcome = attempt => outcome,
            };
            match outcome {
                Ok(last) => {
                    self.last = last;
                    return true;
                }
                Err(_) => {
                    tokio::select! {
                        () = self.stopping.cancelled() => return false,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Leaves the hub if nothing is waiting in the inbox; the check and the removal happen
    /// under the hub's lock, so no command can slip in between.
    fn retire(&mut self) -> bool {
        let Some(hub) = self.hub.upgrade() else {
            return true;
        };
        let mut rooms = hub.lock_rooms();
        if !self.inbox.is_empty() {
            return false;
        }
        rooms.remove(&self.room);
        // Under the lock, so a successor actor's subscription comes after this.
        self.store.unsubscribe_feed(&self.room);
        metrics::gauge!("chat_hub_rooms").set(rooms.len() as f64);
        true
    }

    async fn on_event(&mut self, event: RoomEvent) {
        if event.id <= self.last {
            return;
        }
        if event.prev != self.last {
            // The feed skipped something: the log has it, this event included.
            metrics::counter!("chat_feed_gaps_total").increment(1);
            self.catch_up(Some(event.id)).await;
            if self.last >= event.id {
                return;
            }
            tracing::warn!(room = %self.room, "event missing from the log after a gap");
        }
        self.deliver(event);
    }

    /// Delivers everything the log holds after `last` (up to `until`, when given). Retries
    /// while the store is unreachable: delivery must not skip.
    async fn catch_up(&mut self, until: Option<EventId>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let read = tokio::select! {
                () = self.stopping.cancelled() => return,
                read = self.store.read_log(&self.room, self.last, LOG_BATCH) => read,
            };
            match read {
                Ok(read) => {
                    if !read.complete {
                        tracing::warn!(room = %self.room, "log trimmed past the last delivered event");
                    }
                    let count = read.events.len();
                    for event in read.events {
                        if event.id > self.last {
                            self.deliver(event);
                        }
                    }
                    let reached = until.is_some_and(|until| self.last >= until);
                    if count < LOG_BATCH || reached {
                        return;
                    }
                }
                Err(_) => {
                    tokio::select! {
                        () = self.stopping.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    fn deliver(&mut self, event: RoomEvent) {
        self.last = event.id;
        if self.subscribers.is_empty() {
            return;
        }
        let frame = Arc::new(Frame::new(event));
        let mut delivered = 0u64;
        self.subscribers.retain(|subscriber| {
            if frame.event.id <= subscriber.after {
                return true;
            }
            match subscriber.mailbox.tx.try_send(frame.clone()) {
                Ok(()) => {
                    delivered += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics::counter!("chat_slow_client_disconnects_total").increment(1);
                    subscriber.mailbox.overflowed.cancel();
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        metrics::counter!("chat_events_delivered_total").increment(delivered);
    }

    async fn on_subscribe(
        &mut self,
        mut subscriber: Subscriber,
        after: Option<EventId>,
        reply: oneshot::Sender<Result<Replay, ApiError>>,
    ) {
        let mut replay = Replay {
            events: Vec::new(),
            complete: true,
        };
        if let Some(after) = after
            && after < self.last
        {
            let mut cursor = after;
            let mut first = true;
            while cursor < self.last {
                match self.store.read_log(&self.room, cursor, LOG_BATCH).await {
                    Ok(read) => {
                        if first {
                            replay.complete = read.complete;
                            first = false;
                        }
                        let Some(newest) = read.events.last() else {
                            break;
                        };
                        cursor = newest.id;
                        replay.events.extend(
                            read.events
                                .into_iter()
                                .filter(|event| event.id <= self.last)
                                .map(|event| Arc::new(Frame::new(event))),
                        );
                    }
                    Err(err) => {
                        let _caller_may_be_gone = reply.send(Err(err.into()));
                        return;
                    }
                }
            }
        }
        subscriber.after = after.map_or(self.last, |after| after.max(self.last));
        if reply.send(Ok(replay)).is_ok() {
            self.subscribers.push(subscriber);
        }
    }
}
