//! The room actor: one task per room with local subscribers, which puts the room's events in
//! log order without gaps or duplicates and pushes them to every subscriber's mailbox.
//!
//! Why a task per room: ordering, gap filling and subscription all need "the last event this
//! instance delivered for the room" (`last`), and an actor owns that without a lock held across
//! the awaits that reading the log needs.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::frame::{Batch, Frame};
use super::mailbox::{Closed, Pushed};
use super::pace::{MAX_BATCH, Pace};
use super::{Command, HubInner, Replay, Subscriber};
use crate::backoff::Backoff;
use crate::domain::{Ephemeral, EphemeralKind, EventId, RoomEvent, RoomId};
use crate::error::ApiError;
use crate::store::{Feed, FeedItem, RoomLog, StoreError};

/// How many log entries one catch-up read asks for.
const LOG_BATCH: usize = 500;

pub(super) struct RoomActor {
    room: RoomId,
    hub: Weak<HubInner>,
    store: Arc<dyn RoomLog>,
    feed: Arc<dyn Feed>,
    inbox: mpsc::UnboundedReceiver<Command>,
    subscribers: Vec<Subscriber>,
    /// The last event delivered here, in log order.
    last: EventId,
    /// Events up to `last` not yet pushed to the subscribers, with the ephemeral events that
    /// arrived among them, in arrival order: those taken together from the inbox, or held by
    /// the coalescing window while the room is busy and its connections behind (see
    /// [`Pace`]).
    pending: Vec<Arc<Frame>>,
    pace: Pace,
    stopping: CancellationToken,
}

impl RoomActor {
    pub(super) fn new(
        room: RoomId,
        hub: Weak<HubInner>,
        store: Arc<dyn RoomLog>,
        feed: Arc<dyn Feed>,
        inbox: mpsc::UnboundedReceiver<Command>,
        coalesce: Duration,
        stopping: CancellationToken,
    ) -> Self {
        Self {
            room,
            hub,
            store,
            feed,
            inbox,
            subscribers: Vec::new(),
            last: EventId::ZERO,
            pending: Vec::new(),
            pace: Pace::new(coalesce),
            stopping,
        }
    }

    pub(super) async fn run(mut self) {
        if !self.start().await {
            return;
        }
        // Armed while pending events wait for their push time (the coalescing window, see
        // `Pace`).
        let push_timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(push_timer);
        let mut push_armed = false;
        // A command taken from the inbox while gathering queued events: handled next, after
        // the push it ended (unless the window holds the events).
        let mut carried: Option<Command> = None;
        loop {
            enum Next {
                Command(Option<Command>),
                Push,
            }
            let next = match carried.take() {
                Some(command) => Next::Command(Some(command)),
                None => tokio::select! {
                    biased;
                    () = self.stopping.cancelled() => return,
                    command = self.inbox.recv() => Next::Command(command),
                    () = &mut push_timer, if push_armed => Next::Push,
                },
            };
            match next {
                Next::Command(None) => return,
                Next::Command(Some(command)) => self.handle(command).await,
                Next::Push => {}
            }
            if !self.pending.is_empty() {
                carried = self.take_queued_events().await;
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
            if self.subscribers.is_empty() && carried.is_none() && self.retire() {
                return;
            }
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Feed(FeedItem::Event(event)) => self.on_event(event).await,
            Command::Feed(FeedItem::Ephemeral(ephemeral)) => self.on_ephemeral(ephemeral),
            Command::Feed(FeedItem::Resync | FeedItem::ResyncRoom(_)) => {
                self.catch_up(None).await;
            }
            Command::Subscribe {
                subscriber,
                after,
                reply,
            } => self.on_subscribe(subscriber, after, reply).await,
            Command::Unsubscribe(id) => self.subscribers.retain(|s| s.id != id),
        }
    }

    /// Batching by what is queued: the events already waiting in the inbox join the pending
    /// ones (up to [`MAX_BATCH`]) before they are pushed, so a room whose events come faster
    /// than it pushes them (its task waited its turn behind the connections it woke) pushes
    /// them together, one queue push and one wake-up per connection, and a room that keeps up
    /// pushes each event at once. Returns the first queued command that is not an event, to
    /// be handled next, in its order.
    async fn take_queued_events(&mut self) -> Option<Command> {
        while self.pending.len() < MAX_BATCH {
            match self.inbox.try_recv().ok()? {
                Command::Feed(FeedItem::Event(event)) => self.on_event(event).await,
                Command::Feed(FeedItem::Ephemeral(ephemeral)) => self.on_ephemeral(ephemeral),
                other => return Some(other),
            }
        }
        None
    }

    /// Makes the feed live for this room, then reads where its log stands: every event after
    /// that arrives through the feed. Retries until the store answers.
    async fn start(&mut self) -> bool {
        let mut backoff = store_backoff();
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
                    if !backoff.pause(&self.stopping).await {
                        return false;
                    }
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
        let deleted = !event.kind.is_logged();
        self.deliver(event);
        if deleted {
            // Pushed now, not coalesced: every subscriber's session ends its membership on it.
            // The room starts over from nothing, so a room created anew under this id is
            // delivered from its first event (whose predecessor is `0-0`).
            self.push(Instant::now());
            self.last = EventId::ZERO;
        }
    }

    /// Takes an ephemeral event for the subscribers of now, beside the events pending (the run
    /// loop pushes them together); `last` stays where it is.
    fn on_ephemeral(&mut self, ephemeral: Ephemeral) {
        if self.subscribers.is_empty() {
            return;
        }
        self.pace.count(Instant::now());
        self.pending.push(Arc::new(Frame::ephemeral(ephemeral)));
    }

    /// Delivers everything the log holds after `last` (up to `until`, when given). Retries
    /// while the store is unreachable: delivery must not skip.
    async fn catch_up(&mut self, until: Option<EventId>) {
        let mut backoff = store_backoff();
        loop {
            let read = tokio::select! {
                () = self.stopping.cancelled() => return,
                read = self.store.read_log(&self.room, self.last, LOG_BATCH) => read,
            };
            match read {
                Ok(read) => {
                    // A log that starts over (its first event names no predecessor) is a room
                    // created anew after the store lost this one: no gap in this room but
                    // another room, which the sessions that held this one recognise and leave.
                    let anew = read
                        .events
                        .first()
                        .is_some_and(|first| first.prev == EventId::ZERO);
                    if !read.complete && !anew {
                        self.close_for_gap(read.events.first());
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
                    if !backoff.pause(&self.stopping).await {
                        return;
                    }
                }
            }
        }
    }

    /// The log no longer holds what followed `last` (trimmed past it, or lost): the events the
    /// feed missed cannot be delivered. Every subscriber the gap is behind is closed so that it
    /// resumes and is told (API.md: no silent gap); the events held for them go with them.
    /// A subscriber whose replay already reached the log's continuation, `first` (the first
    /// event the log holds after `last`), keeps going: e.g. one who joined the room created
    /// anew after the store lost it.
    fn close_for_gap(&mut self, first: Option<&RoomEvent>) {
        let before_gap = |subscriber: &Subscriber| {
            !first
                .is_some_and(|first| subscriber.after >= first.id || subscriber.after == first.prev)
        };
        let (behind, past): (Vec<Subscriber>, Vec<Subscriber>) =
            self.subscribers.drain(..).partition(before_gap);
        self.subscribers = past;
        tracing::warn!(
            room = %self.room,
            subscribers = behind.len(),
            "the log lost events after the last delivered one; closing the connections behind"
        );
        metrics::counter!("chat_gap_disconnects_total").increment(behind.len() as u64);
        for subscriber in behind {
            subscriber.mailbox.close(Closed::Gap);
        }
        self.pending.clear();
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

    /// Pushes the pending events to every subscriber, as one batch each, and tells the pace
    /// how many of them were still behind. A subscriber gets the logged events after its
    /// replay point and every ephemeral event.
    fn push(&mut self, now: Instant) {
        let batch: Batch = std::mem::take(&mut self.pending).into();
        if batch.is_empty() {
            return;
        }
        let logged = || {
            batch
                .iter()
                .filter_map(|frame| frame.event().map(|event| event.id))
        };
        // The batch's logged ids, oldest and newest (they are in log order).
        let (first, newest) = (logged().next(), logged().next_back());
        let whole = Tally::of(&batch);
        let (mut delivered, mut pushes, mut behind) = (Tally::default(), 0u64, 0u64);
        self.subscribers.retain(|subscriber| {
            // A subscriber has the logged events up to `after` from its replay.
            let after = subscriber.after;
            let (share, tally) = if first.is_none_or(|first| first > after) {
                (batch.clone(), whole)
            } else if whole.ephemeral() == 0 && newest.is_some_and(|newest| newest <= after) {
                return true;
            } else {
                let share: Batch = batch
                    .iter()
                    .filter(|frame| frame.event().is_none_or(|event| event.id > after))
                    .cloned()
                    .collect();
                let tally = Tally::of(&share);
                (share, tally)
            };
            let pushed = subscriber.mailbox.push(share);
            if pushed == Pushed::Refused {
                return false;
            }
            delivered.add(tally);
            pushes += 1;
            behind += u64::from(pushed == Pushed::Behind);
            true
        });
        self.pace.pushed(now, behind, pushes);
        metrics::counter!("chat_events_delivered_total").increment(delivered.logged);
        metrics::counter!("chat_fanout_pushes_total").increment(pushes);
        for (kind, count) in [
            ("presence", delivered.presence),
            ("typing", delivered.typing),
        ] {
            if count > 0 {
                metrics::counter!("chat_ephemeral_delivered_total", "kind" => kind)
                    .increment(count);
            }
        }
    }

    async fn on_subscribe(
        &mut self,
        mut subscriber: Subscriber,
        after: Option<EventId>,
        reply: oneshot::Sender<Result<Replay, ApiError>>,
    ) {
        let replay = match after {
            None => Replay {
                events: Vec::new(),
                complete: true,
            },
            Some(after) => match self.replay(after).await {
                Ok(replay) => replay,
                Err(err) => {
                    let _caller_may_be_gone = reply.send(Err(err.into()));
                    return;
                }
            },
        };
        // A subscriber whose id the log still holds has every event up to it. One whose id the
        // log lost gets every event after what this room delivered, even ids below its own:
        // leaving those out would be the silent gap this replay just reported.
        subscriber.after = match after {
            Some(after) if replay.complete => after.max(self.last),
            _ => self.last,
        };
        if reply.send(Ok(replay)).is_ok() {
            self.subscribers.push(subscriber);
        }
    }

    /// The logged events after `after`, up to `last`. The log is read even when `after` is at
    /// or past `last`: only the log can tell whether it still reaches `after` (if not, it lost
    /// events whoever holds that id had seen, and the replay is not complete).
    async fn replay(&self, after: EventId) -> Result<Replay, StoreError> {
        // Past `last`, one entry is enough to tell.
        let limit = if after < self.last { LOG_BATCH } else { 1 };
        let mut read = self.store.read_log(&self.room, after, limit).await?;
        let mut replay = Replay {
            events: Vec::new(),
            complete: read.complete,
        };
        while let Some(cursor) = read.events.last().map(|newest| newest.id) {
            replay.events.extend(
                read.events
                    .into_iter()
                    .filter(|event| event.id <= self.last)
                    .map(|event| Arc::new(Frame::new(event))),
            );
            if cursor >= self.last {
                break;
            }
            read = self.store.read_log(&self.room, cursor, LOG_BATCH).await?;
        }
        Ok(replay)
    }
}

/// How many frames of each sort a push carries, for the delivery counters.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    logged: u64,
    presence: u64,
    typing: u64,
}

impl Tally {
    fn of(frames: &[Arc<Frame>]) -> Self {
        let mut tally = Self::default();
        for frame in frames {
            match frame.as_ephemeral().map(|ephemeral| &ephemeral.kind) {
                None => tally.logged += 1,
                Some(EphemeralKind::Presence { .. }) => tally.presence += 1,
                Some(EphemeralKind::Typing { .. }) => tally.typing += 1,
            }
        }
        tally
    }

    fn ephemeral(self) -> u64 {
        self.presence + self.typing
    }

    fn add(&mut self, other: Self) {
        self.logged += other.logged;
        self.presence += other.presence;
        self.typing += other.typing;
    }
}

/// The retry pace while the store is away: from 50 ms, doubling up to a second.
fn store_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(50), Duration::from_secs(1))
}
