//! The bounded mailbox: one connection's queue of batches, fed by every room actor it
//! subscribes to, and the reason it was closed.
//!
//! Why its own type: a connection must learn *why* its queue stopped (it fell behind, or its
//! room lost events it can no longer deliver) to close with the right code, and an idle
//! connection must stay cheap (a deque under a lock, not a channel).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::frame::Batch;

/// How many batch slots an emptied queue keeps: enough for the few batches a connection that
/// keeps up has waiting, without giving its buffer back and growing it again each time.
const KEPT_SLOTS: usize = 16;

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
    /// Why a room closed the queue; the first reason stays.
    closed_because: Option<Closed>,
}

/// What became of a pushed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pushed {
    /// Queued; the connection had taken everything before it (it keeps up).
    Idle,
    /// Queued behind events the connection has not taken yet: it is behind.
    Behind,
    /// Not queued: the connection is gone or too slow.
    Refused,
}

/// Why a room closed a connection's queue (a stopping server closes it without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The client did not keep up: its queue overflowed.
    Slow,
    /// The room's log lost events after the last one delivered here, which can no longer be
    /// delivered: the client must resume to be told.
    Gap,
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

/// The receiving side: the connection reads batches here and ends when `closed` fires (a room
/// closed it, see [`Closed`], or the server is stopping: `closed` is a child of the stopping
/// token).
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
            closed_because: None,
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
    /// Queues a batch; `Refused` when the connection is gone or too slow (then `closed` fires
    /// and the connection ends with 1013). A batch into an empty queue always fits, so a burst
    /// larger than the queue is not mistaken for a slow client.
    pub(super) fn push(&self, batch: Batch) -> Pushed {
        let pushed;
        {
            let mut state = self.queue.lock();
            if state.inbox_dropped {
                return Pushed::Refused;
            }
            let count = batch.len();
            if state.events > 0 && state.events + count > self.capacity {
                state.closed_because.get_or_insert(Closed::Slow);
                drop(state);
                metrics::counter!("chat_slow_client_disconnects_total").increment(1);
                self.closed.cancel();
                return Pushed::Refused;
            }
            pushed = if state.events > 0 {
                Pushed::Behind
            } else {
                Pushed::Idle
            };
            state.events += count;
            state.batches.push_back(batch);
        }
        self.queue.ready.notify_one();
        pushed
    }
}

impl Mailbox {
    /// Closes the connection's queue for `reason`: `closed` fires and the connection ends.
    pub(super) fn close(&self, reason: Closed) {
        self.queue.lock().closed_because.get_or_insert(reason);
        self.closed.cancel();
    }
}

impl Inbox {
    /// Why a room closed this queue; `None` while it is open or when only a stopping server
    /// closed it.
    pub fn closed_because(&self) -> Option<Closed> {
        self.queue.lock().closed_because
    }

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
        // A connection that fell behind may have queued hundreds of single events; the deque
        // keeps its grown buffer, which an idle connection should not carry for the rest of
        // its life.
        if state.batches.is_empty() && state.batches.capacity() > KEPT_SLOTS {
            state.batches = VecDeque::new();
        }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::{EventId, RoomEvent, RoomId};
    use crate::hub::Frame;

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
        assert_eq!(mailbox.push(batch_of(6)), Pushed::Idle);
        assert_eq!(
            mailbox.push(batch_of(1)),
            Pushed::Refused,
            "6 events wait, the queue holds 4"
        );
        assert!(inbox.closed.is_cancelled());
        assert_eq!(inbox.closed_because(), Some(Closed::Slow));
        assert_eq!(inbox.recv().await.map(|batch| batch.len()), Some(6));
        assert!(inbox.try_recv().is_none());
    }

    #[tokio::test]
    async fn a_mailbox_closes_when_the_server_stops() {
        let stopping = CancellationToken::new();
        let (mailbox, inbox) = mailbox(4, &stopping);
        assert_eq!(mailbox.push(batch_of(2)), Pushed::Idle);
        assert_eq!(
            mailbox.push(batch_of(1)),
            Pushed::Behind,
            "2 events not taken yet"
        );
        stopping.cancel();
        assert!(inbox.closed.is_cancelled());
        assert_eq!(inbox.closed_because(), None);
    }

    #[tokio::test]
    async fn a_mailbox_closed_for_a_gap_says_so_and_keeps_its_first_reason() {
        let stopping = CancellationToken::new();
        let (mailbox, inbox) = mailbox(1, &stopping);
        assert_eq!(inbox.closed_because(), None);
        mailbox.close(Closed::Gap);
        assert!(inbox.closed.is_cancelled());
        assert_eq!(
            mailbox.push(batch_of(1)),
            Pushed::Idle,
            "an empty queue takes a batch"
        );
        assert_eq!(mailbox.push(batch_of(1)), Pushed::Refused);
        assert_eq!(inbox.closed_because(), Some(Closed::Gap));
    }
}
