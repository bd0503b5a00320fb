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
//! - **Coalescing under load.** In a busy room (more than `BUSY_EVENTS_PER_SEC`), events are
//!   held up to the coalescing window and pushed together as one [`Batch`]: each connection
//!   then wakes, and writes to its socket, once per batch instead of once per event, which is
//!   most of the cost of a delivery. A quiet room pushes every event at once.
//! - **Slow consumers.** A full queue means the client does not keep up: its inbox is
//!   `closed` (the connection closes with 1013 and the client resumes) and the
//!   room moves on. Nothing blocks the room, nothing is dropped silently.
//! - **Lifetimes.** An actor exits when its last subscriber leaves, unsubscribing the feed,
//!   so an instance listens only to rooms that have connections here.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::{EventId, EventKind, RoomEvent, RoomId, Username};
use crate::error::ApiError;
use crate::store::{Feed, FeedItem, FeedSink, RoomLog};

/// How many log entries one catch-up read asks for.
const LOG_BATCH: usize = 500;
/// How long a subscriber waits for its room to answer before it is told `unavailable`.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// A room with more events per second than this coalesces them (see the module docs): far
/// above a conversation's pace, so a chat's latency never pays for it.
const BUSY_EVENTS_PER_SEC: u32 = 100;
/// How often a room's busy state is re-decided from its event rate.
const RATE_PERIOD: Duration = Duration::from_millis(100);
/// The most events one batch holds.
const MAX_BATCH: usize = 64;

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

/// One connection's queue: a plain deque under a lock, which costs an idle connection about a
/// hundred bytes (a channel's preallocated block and padded halves cost a kilobyte).
struct Queue {
    state: Mutex<QueueState>,
    /// Wakes the connection: a batch was queued, or the last mailbox went away.
    ready: tokio::sync::Notify,
}

struct QueueState {
    batches: VecDeque<Batch>,
    /// Events in `batches`: what `capacity` bounds.
    events: usize,
    mailboxes: usize,
    inbox_dropped: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // Every critical section leaves the state whole; a panic elsewhere cannot tear it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The sending side of one connection's queue, shared by all the rooms it subscribes to.
pub struct Mailbox {
    queue: Arc<Queue>,
    capacity: usize,
    closed: CancellationToken,
}

/// The receiving side: the connection reads batches here and ends when `closed` fires (its
/// queue overflowed, or the server is stopping: `closed` is a child of the stopping token).
pub struct Inbox {
    queue: Arc<Queue>,
    pub closed: CancellationToken,
}

/// A connection's queue of at most `capacity` waiting events; `closed` also fires when
/// `stopping` does.
pub fn mailbox(capacity: usize, stopping: &CancellationToken) -> (Mailbox, Inbox) {
    let queue = Arc::new(Queue {
        state: Mutex::new(QueueState {
            batches: VecDeque::new(),
            events: 0,
            mailboxes: 1,
            inbox_dropped: false,
        }),
        ready: tokio::sync::Notify::new(),
    });
    let closed = stopping.child_token();
    (
        Mailbox {
            queue: queue.clone(),
            capacity,
            closed: closed.clone(),
        },
        Inbox { queue, closed },
    )
}

impl Clone for Mailbox {
    fn clone(&self) -> Self {
        self.queue.lock().mailboxes += 1;
        Self {
            queue: self.queue.clone(),
            capacity: self.capacity,
            closed: self.closed.clone(),
        }
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        let last = {
            let mut state = self.queue.lock();
            state.mailboxes -= 1;
            state.mailboxes == 0
        };
        if last {
            self.queue.ready.notify_one();
        }
    }
}

impl Mailbox {
    /// Queues a batch; false when the connection is gone or too slow (then `closed` fires and
    /// the connection ends with 1013). A batch into an empty queue always fits, so a burst
    /// larger than the queue is not mistaken for a slow client.
    fn push(&self, batch: Batch) -> bool {
        {
            let mut state = self.queue.lock();
            if state.inbox_dropped {
                return false;
            }
            let count = batch.len();
            if state.events > 0 && state.events + count > self.capacity {
                drop(state);
                metrics::counter!("chat_slow_client_disconnects_total").increment(1);
                self.closed.cancel();
                return false;
            }
            state.events += count;
            state.batches.push_back(batch);
        }
        self.queue.ready.notify_one();
        true
    }
}

impl Inbox {
    /// The next batch, waiting for one. `None` only once every mailbox is dropped.
    pub async fn recv(&mut self) -> Option<Batch> {
        loop {
            {
                let mut state = self.queue.lock();
                if let Some(batch) = Self::take(&mut state) {
                    return Some(batch);
                }
                if state.mailboxes == 0 {
                    return None;
                }
            }
            // A push between the check and this wait leaves a permit: no wake-up is lost.
            self.queue.ready.notified().await;
        }
    }

    /// The next batch if one is queued.
    pub fn try_recv(&mut self) -> Option<Batch> {
        Self::take(&mut self.queue.lock())
    }

    fn take(state: &mut QueueState) -> Option<Batch> {
        let batch = state.batches.pop_front()?;
        state.events -= batch.len();
        Some(batch)
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut state = self.queue.lock();
        state.inbox_dropped = true;
        // The frames die with the connection, not with the last room it left.
        state.batches.clear();
        state.events = 0;
    }
}

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
            .find(|frame| {
                matches!(&frame.event.kind, EventKind::MemberAdded { username }
                    if Username::from_stored(username.clone()).key() == member.key())
            })
            .map_or(EventId::ZERO, |frame| frame.event.id)
    }
}

#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    store: Arc<dyn RoomLog>,
    feed: Arc<dyn Feed>,
    /// How long a busy room holds events to push them together; zero pushes each at once.
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
            feed: self.feed.clone(),
            inbox,
            subscribers: Vec::new(),
            last: EventId::ZERO,
            pending: Vec::new(),
            pace: Pace::new(self.coalesce),
            stopping: self.stopping.clone(),
        };
        self.tasks.spawn(actor.run());
        metrics::gauge!("chat_hub_rooms").set(rooms.len() as f64);
    }
}

struct RoomActor {
    room: RoomId,
    hub: Weak<HubInner>,
    store: Arc<dyn RoomLog>,
    feed: Arc<dyn Feed>,
    inbox: mpsc::UnboundedReceiver<Command>,
    subscribers: Vec<Subscriber>,
    /// The last event delivered here, in log order.
    last: EventId,
    /// Events up to `last` not yet pushed to the subscribers (held while the room is busy).
    pending: Vec<Arc<Frame>>,
    pace: Pace,
    stopping: CancellationToken,
}

/// When a room pushes its pending events: at once while it is quiet; while it is busy, at
/// most once per coalescing window.
struct Pace {
    window: Duration,
    busy: bool,
    counting_since: Instant,
    counted: u32,
    last_push: Instant,
}

impl Pace {
    fn new(window: Duration) -> Self {
        let now = Instant::now();
        Self {
            window,
            busy: false,
            counting_since: now,
            counted: 0,
            last_push: now,
        }
    }

    /// Counts an event, re-deciding `busy` from the rate once per `RATE_PERIOD`, and as soon
    /// as a period holds more events than the busy rate allows for all of it.
    fn count(&mut self, now: Instant) {
        self.counted += 1;
        let elapsed = now.duration_since(self.counting_since);
        if elapsed < RATE_PERIOD {
            let busy_per_period = BUSY_EVENTS_PER_SEC * RATE_PERIOD.as_millis() as u32 / 1000;
            self.busy |= self.counted > busy_per_period;
        } else {
            let per_sec = f64::from(self.counted) / elapsed.as_secs_f64();
            self.busy = per_sec > f64::from(BUSY_EVENTS_PER_SEC);
            self.counting_since = now;
            self.counted = 0;
        }
    }

    /// When `pending` events are to be pushed: `None` for now.
    fn push_at(&self, pending: usize, now: Instant) -> Option<Instant> {
        let at = self.last_push + self.window;
        if !self.busy || pending >= MAX_BATCH || at <= now {
            None
        } else {
            Some(at)
        }
    }
}

impl RoomActor {
    async fn run(mut self) {
        if !self.start().await {
            return;
        }
        // Armed while pending events wait for their push time.
        let push_timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(push_timer);
        let mut push_armed = false;
        loop {
            enum Next {
                Command(Option<Command>),
                Push,
            }
            let next = tokio::select! {
                biased;
                () = self.stopping.cancelled() => return,
                command = self.inbox.recv() => Next::Command(command),
                () = &mut push_timer, if push_armed => Next::Push,
            };
            match next {
                Next::Command(None) => return,
                Next::Command(Some(Command::Feed(FeedItem::Event(event)))) => {
                    self.on_event(event).await;
                }
                Next::Command(Some(Command::Feed(FeedItem::Resync))) => self.catch_up(None).await,
                Next::Command(Some(Command::Subscribe {
                    subscriber,
                    after,
                    reply,
                })) => self.on_subscribe(subscriber, after, reply).await,
                Next::Command(Some(Command::Unsubscribe(id))) => {
                    self.subscribers.retain(|s| s.id != id);
                }
                Next::Push => {}
            }
            if !self.pending.is_empty() {
                let now = Instant::now();
                match self.pace.push_at(self.pending.len(), now) {
                    None => {
                        self.push(now);
                        push_armed = false;
                    }
                    Some(at) if !push_armed => {
                        push_timer.as_mut().reset(at);
                        push_armed = true;
                    }
                    Some(_) => {}
                }
            } else {
                push_armed = false;
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
                self.feed.subscribe(&self.room).await?;
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
        self.feed.unsubscribe(&self.room);
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

    /// Takes the next event in log order; the run loop pushes it (see [`Pace`]).
    fn deliver(&mut self, event: RoomEvent) {
        self.last = event.id;
        if self.subscribers.is_empty() {
            return;
        }
        self.pace.count(Instant::now());
        self.pending.push(Arc::new(Frame::new(event)));
    }

    /// Pushes the pending events to every subscriber, as one batch each.
    fn push(&mut self, now: Instant) {
        self.pace.last_push = now;
        let batch: Batch = std::mem::take(&mut self.pending).into();
        let (Some(first), Some(newest)) = (batch.first(), batch.last()) else {
            return;
        };
        let (first, newest) = (first.event.id, newest.event.id);
        let (mut delivered, mut pushes) = (0u64, 0u64);
        self.subscribers.retain(|subscriber| {
            // A subscriber has the events up to `after` from its replay.
            let share = if newest <= subscriber.after {
                return true;
            } else if first > subscriber.after {
                batch.clone()
            } else {
                batch
                    .iter()
                    .filter(|frame| frame.event.id > subscriber.after)
                    .cloned()
                    .collect()
            };
            let count = share.len() as u64;
            let kept = subscriber.mailbox.push(share);
            if kept {
                delivered += count;
                pushes += 1;
            }
            kept
        });
        metrics::counter!("chat_events_delivered_total").increment(delivered);
        metrics::counter!("chat_fanout_pushes_total").increment(pushes);
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

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(10);

    /// `count` events spread evenly over `over`, from `start`; returns when the last came.
    fn feed(pace: &mut Pace, start: Instant, count: u32, over: Duration) -> Instant {
        let step = over / count;
        let mut now = start;
        for _ in 0..count {
            now += step;
            pace.count(now);
        }
        now
    }

    #[test]
    fn a_room_at_a_conversations_pace_pushes_every_event_at_once() {
        let start = Instant::now();
        let mut pace = Pace::new(WINDOW);
        // 50 events/s for a second: half the busy rate.
        let now = feed(&mut pace, start, 50, Duration::from_secs(1));
        pace.last_push = now;
        assert!(!pace.busy);
        assert_eq!(pace.push_at(1, now), None);
    }

    #[test]
    fn a_busy_room_holds_events_until_a_window_after_its_last_push() {
        let start = Instant::now();
        let mut pace = Pace::new(WINDOW);
        // 1000 events/s for 200 ms.
        let now = feed(&mut pace, start, 200, Duration::from_millis(200));
        assert!(pace.busy);
        pace.last_push = now;
        let soon = now + Duration::from_millis(1);
        assert_eq!(pace.push_at(3, soon), Some(now + WINDOW));
        // A full batch, or a window since the last push, goes at once.
        assert_eq!(pace.push_at(MAX_BATCH, soon), None);
        assert_eq!(pace.push_at(3, now + WINDOW), None);
    }

    #[test]
    fn a_burst_makes_a_room_busy_before_its_rate_period_ends() {
        let start = Instant::now();
        let mut pace = Pace::new(WINDOW);
        feed(&mut pace, start, 10, Duration::from_millis(5));
        assert!(
            !pace.busy,
            "10 events in a period are the busy rate, not above it"
        );
        pace.count(start + Duration::from_millis(6));
        assert!(pace.busy);
    }

    #[test]
    fn a_room_that_calms_down_stops_holding_events() {
        let start = Instant::now();
        let mut pace = Pace::new(WINDOW);
        let busy_until = feed(&mut pace, start, 200, Duration::from_millis(200));
        assert!(pace.busy);
        // Then an event every 300 ms: the first closes the busy period's count, the next
        // finds the rate low.
        let mut later = busy_until;
        for _ in 0..2 {
            later += Duration::from_millis(300);
            pace.count(later);
        }
        assert!(!pace.busy);
        pace.last_push = later;
        assert_eq!(pace.push_at(1, later), None);
    }

    #[test]
    fn a_zero_window_never_holds_events() {
        let start = Instant::now();
        let mut pace = Pace::new(Duration::ZERO);
        let now = feed(&mut pace, start, 500, Duration::from_millis(200));
        assert!(pace.busy);
        pace.last_push = now;
        assert_eq!(pace.push_at(5, now), None);
    }

    fn batch_of(count: u64) -> Batch {
        let room = RoomId::parse("pace").expect("a valid room id");
        (1..=count)
            .map(|n| {
                Arc::new(Frame::new(RoomEvent {
                    id: EventId { ms: n, seq: 0 },
                    prev: EventId { ms: n - 1, seq: 0 },
                    room: room.clone(),
                    kind: crate::domain::EventKind::Chat {
                        username: "alice".to_owned(),
                        message: format!("message {n}"),
                    },
                }))
            })
            .collect()
    }

    #[tokio::test]
    async fn a_mailbox_counts_events_not_batches_and_closes_when_full() {
        let stopping = CancellationToken::new();
        let (mailbox, mut inbox) = mailbox(4, &stopping);
        // A batch larger than the queue fits into an empty queue: a burst, not a slow client.
        assert!(mailbox.push(batch_of(6)));
        assert!(
            !mailbox.push(batch_of(1)),
            "6 events wait, the queue holds 4"
        );
        assert!(inbox.closed.is_cancelled());
        assert_eq!(inbox.recv().await.map(|batch| batch.len()), Some(6));
        assert!(inbox.try_recv().is_none());
    }

    #[tokio::test]
    async fn a_mailbox_closes_when_the_server_stops() {
        let stopping = CancellationToken::new();
        let (mailbox, inbox) = mailbox(4, &stopping);
        assert!(mailbox.push(batch_of(2)));
        stopping.cancel();
        assert!(inbox.closed.is_cancelled());
    }
}
