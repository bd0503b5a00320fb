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
use crate::store::Holds;

type HoldCounts = HashMap<(RoomId, String), usize>;

#[derive(Clone)]
pub struct Presence {
    inner: Arc<PresenceInner>,
}

struct PresenceInner {
    store: Arc<dyn Holds>,
    /// (room, username key) → how many local connections hold it.
    holds: Mutex<HoldCounts>,
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
    fn lock_holds(&self) -> std::sync::MutexGuard<'_, HoldCounts> {
        // Counters only; consistent even after a panic elsewhere.
        self.holds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Presence {
    /// Creates the presence tracker and the task that refreshes and releases holds.
    pub fn new(
        store: Arc<dyn Holds>,
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
                release(&presence, room, key).await;
            }
        }
    }
}

/// Releases a member whose last local holder went, unless it is held again. A new hold taken
/// while the release is in flight may have refreshed before the release lands; so once it
/// has landed, a member held again is refreshed, or it would show offline until the next
/// periodic refresh.
async fn release(presence: &PresenceInner, room: RoomId, key: String) {
    let member = (room, key);
    let held = || presence.lock_holds().contains_key(&member);
    if held() {
        return;
    }
    let (room, key) = &member;
    // Failures are logged by the store; marks lapse by themselves.
    let _ = presence.store.release_hold(room, key).await;
    if held() {
        let _ = presence
            .store
            .refresh_holds(&[(room.clone(), vec![key.clone()])])
            .await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use tokio::sync::Notify;

    use super::*;
    use crate::store::StoreFuture;

    /// Holds that keep who is online, and whose first `release_hold` waits for the test to
    /// let it land (after telling it that it started).
    #[derive(Default)]
    struct GatedHolds {
        gated_once: std::sync::atomic::AtomicBool,
        online: Mutex<HashSet<(RoomId, String)>>,
        release_started: Notify,
        release_may_land: Notify,
        release_landed: Notify,
        refreshed: Notify,
    }

    impl GatedHolds {
        fn is_online(&self, room: &RoomId, key: &str) -> bool {
            self.online
                .lock()
                .expect("no test thread panics holding it")
                .contains(&(room.clone(), key.to_owned()))
        }
    }

    impl Holds for GatedHolds {
        fn refresh_holds<'a>(&'a self, holds: &'a [(RoomId, Vec<String>)]) -> StoreFuture<'a, ()> {
            let mut online = self
                .online
                .lock()
                .expect("no test thread panics holding it");
            for (room, keys) in holds {
                for key in keys {
                    online.insert((room.clone(), key.clone()));
                }
            }
            self.refreshed.notify_one();
            Box::pin(std::future::ready(Ok(())))
        }

        fn release_hold<'a>(&'a self, room: &'a RoomId, key: &'a str) -> StoreFuture<'a, ()> {
            Box::pin(async move {
                if !self
                    .gated_once
                    .swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    self.release_started.notify_one();
                    self.release_may_land.notified().await;
                }
                self.online
                    .lock()
                    .expect("no test thread panics holding it")
                    .remove(&(room.clone(), key.to_owned()));
                self.release_landed.notify_one();
                Ok(())
            })
        }

        fn sweep(&self) -> StoreFuture<'_, usize> {
            Box::pin(std::future::ready(Ok(0)))
        }
    }

    /// A new hold whose refresh lands while the release of the previous one is in flight:
    /// the member must end up online, not wait for the next periodic refresh.
    #[tokio::test]
    async fn a_hold_taken_while_its_release_is_in_flight_stays_online() {
        let store = Arc::new(GatedHolds::default());
        let stopping = CancellationToken::new();
        // Periodic refreshes far away: only the release path may put things right.
        let (presence, refresher) =
            Presence::new(store.clone(), Duration::from_secs(3600), stopping.clone());
        let refresher = tokio::spawn(refresher);
        // The interval's immediate first tick, out of the way.
        store.refreshed.notified().await;
        let room = RoomId::parse("lobby").expect("a valid room id");

        drop(presence.hold(&room, "alice").await);
        store.release_started.notified().await;
        let again = presence.hold(&room, "alice").await;
        assert!(store.is_online(&room, "alice"));
        store.release_may_land.notify_one();
        store.release_landed.notified().await;

        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !store.is_online(&room, "alice") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "alice is held but shows offline"
            );
            tokio::task::yield_now().await;
        }
        drop(again);
        stopping.cancel();
        refresher.await.expect("the refresher stops cleanly");
    }
}
