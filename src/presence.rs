//! Presence: which members live connections on this instance hold, kept fresh in the store.
//!
//! A member is online while any WebSocket or SSE connection, on any instance, holds it. Each
//! instance counts its own holders per member and, every `presence_refresh`, refreshes their
//! leases and online marks in one store round trip. When the last local holder goes, the
//! online mark is released at once; the lease is left to run, so the member times out after
//! `MEMBER_TTL_SECS` unless a connection holds it again (a `resume`). Expiry itself is the
//! store's sweep, so it does not depend on this instance staying alive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::domain::RoomId;
use crate::store::Store;

type Holds = HashMap<(RoomId, String), usize>;

#[derive(Clone)]
pub struct Presence {
    inner: Arc<PresenceInner>,
}

struct PresenceInner {
    store: Arc<dyn Store>,
    /// (room, username key) → how many local connections hold it.
    holds: Mutex<Holds>,
    /// Members whose last local holder went; the refresher releases them.
    released: mpsc::UnboundedSender<(RoomId, String)>,
}

/// One connection's hold on one member; dropping it lets go.
pub struct Hold {
    presence: Arc<PresenceInner>,
    member: Option<(RoomId, String)>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let Some(member) = self.member.take() else {
            return;
        };
        let mut holds = self.presence.lock_holds();
        if let Some(count) = holds.get_mut(&member) {
            *count -= 1;
            if *count == 0 {
                holds.remove(&member);
                // Fails only when the refresher has stopped (shutdown): marks then lapse.
                let _ = self.presence.released.send(member);
            }
        }
    }
}

impl PresenceInner {
    fn lock_holds(&self) -> std::sync::MutexGuard<'_, Holds> {
        // Counters only; consistent even after a panic elsewhere.
        self.holds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Presence {
    /// Creates the presence tracker and the task that refreshes and releases holds.
    pub fn new(
        store: Arc<dyn Store>,
        every: Duration,
        stopping: CancellationToken,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (released, releases) = mpsc::unbounded_channel();
        let inner = Arc::new(PresenceInner {
            store,
            holds: Mutex::new(HashMap::new()),
            released,
        });
        let refresher = refresh(inner.clone(), releases, every, stopping);
        (Self { inner }, refresher)
    }

    /// Holds a member for a connection and marks it online now.
    pub async fn hold(&self, room: &RoomId, key: &str) -> Hold {
        let member = (room.clone(), key.to_owned());
        let first = {
            let mut holds = self.inner.lock_holds();
            let count = holds.entry(member.clone()).or_insert(0);
            *count += 1;
            *count == 1
        };
        if first {
            // A failure leaves it to the next refresh.
            let _ = self
                .inner
                .store
                .refresh_holds(&[(room.clone(), vec![key.to_owned()])])
                .await;
        }
        Hold {
            presence: self.inner.clone(),
            member: Some(member),
        }
    }
}

async fn refresh(
    presence: Arc<PresenceInner>,
    mut releases: mpsc::UnboundedReceiver<(RoomId, String)>,
    every: Duration,
    stopping: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            _ = ticks.tick() => {
                let mut by_room: HashMap<RoomId, Vec<String>> = HashMap::new();
                for (room, key) in presence.lock_holds().keys() {
                    by_room.entry(room.clone()).or_default().push(key.clone());
                }
                let holds: Vec<(RoomId, Vec<String>)> = by_room.into_iter().collect();
                // A failure is logged by the store; leases are long enough to survive a miss.
                let _ = presence.store.refresh_holds(&holds).await;
            }
            released = releases.recv() => {
                let Some((room, key)) = released else { return };
                // Held again meanwhile: keep it online.
                let still_held = presence.lock_holds().contains_key(&(room.clone(), key.clone()));
                if !still_held {
                    let _ = presence.store.release_hold(&room, &key).await;
                }
            }
        }
    }
}
