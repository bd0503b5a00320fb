//! The hub's pacing on the memory store, in paused time: whether an event waits for anything
//! but its turn. Paused time makes a held event visible without timing anything: a runtime
//! with nothing to do jumps to its next timer, so an event held by the coalescing window
//! arrives at a later instant than it was stored, and one pushed at once at the same instant.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Batch, Hub, Inbox, Subscription, mailbox};
use crate::domain::{EventKind, MessageText, RoomId, TokenHash, Username};
use crate::store::memory::{LocalFeed, MemoryStore};
use crate::store::{NewMember, NewMessage, NewMessages, RoomLog, StoreSettings};

/// The coalescing window (`FANOUT_COALESCE_MS`'s default).
const WINDOW: Duration = Duration::from_millis(10);

struct Room {
    store: Arc<MemoryStore>,
    id: RoomId,
    token_hash: TokenHash,
    inbox: Inbox,
    _subscription: Subscription,
    _hub: Hub,
}

/// A room on the memory store, with one subscriber (`capacity` events may wait for it) on a
/// hub with the coalescing window `window`.
async fn room(window: Duration, capacity: usize) -> Room {
    let feed = Arc::new(LocalFeed::new());
    let store = Arc::new(MemoryStore::new(
        StoreSettings {
            history_limit: 10_000,
            member_ttl_ms: 60_000,
            room_ttl_secs: 3600,
            idempotency_ttl_secs: 60,
            online_ttl_ms: 60_000,
            max_members_per_room: 10,
        },
        feed.clone(),
    ));
    let stopping = CancellationToken::new();
    let hub = Hub::new(
        store.clone(),
        feed.clone(),
        window,
        TaskTracker::new(),
        stopping.clone(),
    );
    feed.start(hub.sink());
    let id = RoomId::parse("pace").expect("a valid room id");
    let token_hash = TokenHash::from_stored("a".repeat(64));
    let member = NewMember {
        room: id.clone(),
        username: Username::parse("alice").expect("a valid username"),
        token_hash: token_hash.clone(),
    };
    store
        .create_room(member, None)
        .await
        .expect("the memory store answers");
    let (mailbox, inbox) = mailbox(capacity, &stopping);
    let (subscription, _) = hub
        .subscribe(&id, None, &mailbox)
        .await
        .expect("the room's actor answers");
    Room {
        store,
        id,
        token_hash,
        inbox,
        _subscription: subscription,
        _hub: hub,
    }
}

impl Room {
    /// Stores `count` chat messages as one step: their events reach the room's actor
    /// together, before it runs.
    async fn post(&self, first: usize, count: usize) {
        let messages = (first..first + count)
            .map(|n| NewMessage {
                text: MessageText::parse(format!("m{n}"), 100).expect("a short message"),
                idempotency_key: None,
            })
            .collect();
        self.store
            .post(NewMessages {
                room: self.id.clone(),
                token_hash: self.token_hash.clone(),
                messages,
            })
            .await
            .expect("the memory store answers");
    }

    async fn recv(&mut self) -> Batch {
        tokio::time::timeout(Duration::from_secs(5), self.inbox.recv())
            .await
            .expect("a batch within 5 s")
            .expect("the mailbox is open")
    }
}

/// The chat messages of `batch`, as their texts' numbers.
fn numbers(batch: &Batch) -> Vec<usize> {
    batch
        .iter()
        .map(|frame| match &frame.event().expect("a logged event").kind {
            EventKind::Chat { message, .. } => message[1..].parse().expect("m<number>"),
            other => panic!("a chat message, not {other:?}"),
        })
        .collect()
}

/// Posts `count` messages one at a time, each read before the next is stored (a connection
/// that keeps up); answers how long they waited in all.
async fn one_at_a_time(room: &mut Room, count: usize) -> Duration {
    let started = Instant::now();
    for n in 0..count {
        room.post(n, 1).await;
        assert_eq!(numbers(&room.recv().await), vec![n]);
    }
    started.elapsed()
}

#[tokio::test(start_paused = true)]
async fn a_busy_room_holds_no_event_for_a_connection_that_keeps_up() {
    let mut room = room(WINDOW, 1024).await;
    // 300 events at one instant: far over the busy rate.
    assert_eq!(one_at_a_time(&mut room, 300).await, Duration::ZERO);
}

/// Posts `count` messages one at a time while the connection reads nothing, then reads
/// them; answers how long that took and how many batches they came in.
async fn behind(room: &mut Room, count: usize) -> (Duration, usize) {
    let started = Instant::now();
    for n in 0..count {
        room.post(n, 1).await;
        // Lets the room's actor take the event before the next one.
        tokio::task::yield_now().await;
    }
    let (mut seen, mut batches) = (Vec::new(), 0);
    while seen.len() < count {
        seen.extend(numbers(&room.recv().await));
        batches += 1;
    }
    assert_eq!(
        seen,
        (0..count).collect::<Vec<_>>(),
        "every event once, in order"
    );
    (started.elapsed(), batches)
}

#[tokio::test(start_paused = true)]
async fn a_busy_room_coalesces_while_its_connection_is_behind() {
    let mut room = room(WINDOW, 1024).await;
    let (waited, batches) = behind(&mut room, 300).await;
    assert!(waited >= WINDOW, "held for a window: {waited:?}");
    assert!(batches < 100, "300 events in {batches} batches");
}

#[tokio::test(start_paused = true)]
async fn events_queued_together_are_pushed_together_up_to_a_batch() {
    let mut room = room(WINDOW, 1024).await;
    // 100 events reach the actor before it runs: one push of a full batch, then the rest.
    room.post(0, 100).await;
    let first = room.recv().await;
    assert_eq!(numbers(&first), (0..64).collect::<Vec<_>>());
    let rest = room.recv().await;
    assert_eq!(numbers(&rest), (64..100).collect::<Vec<_>>());
    assert!(room.inbox.try_recv().is_none());
}

#[tokio::test(start_paused = true)]
async fn without_a_window_a_connection_that_falls_behind_gets_every_event_once_in_order() {
    let mut room = room(Duration::ZERO, 1024).await;
    // Each event is pushed on its own: nothing holds them.
    let (waited, batches) = behind(&mut room, 1000).await;
    assert_eq!((waited, batches), (Duration::ZERO, 1000));
    assert!(!room.inbox.closed.is_cancelled(), "1000 events fit in 1024");
}
