//! Presence: which members live connections on this instance hold, kept fresh in the store,
//! and the `presence` events their comings and goings cause.
//!
//! A member is online while any WebSocket, socket.io or SSE connection, on any instance, holds
//! it. Each instance counts its own holders per member; one task (the refresher) does every
//! store call for them, so they land in the order they were decided:
//!
//! - **First hold.** A member's first local hold writes its online mark at once (the store
//!   says `presence` `online: true` when it is the member's first mark anywhere), before the
//!   join or resume that took it is answered. First holds that queue while the refresher is
//!   busy go together, one store step per room, so a crowd reconnecting at once costs one
//!   round trip per room rather than one per member.
//! - **Grace.** When the last local hold goes, the member is released only after [`GRACE`]:
//!   a connection that drops and resumes within it (a flap, a reload, a network change)
//!   releases nothing and tells nobody anything (it is marked again like a first hold, and
//!   the store, finding its mark, stays silent; a new member of the same name, after a kick,
//!   is told online by that same step). Meanwhile its mark and lease are refreshed as
//!   if it were held. After the grace the release is one store step per room for every member
//!   due together, and the store says `online: false` when no instance holds the member any
//!   more. So `offline` comes about `GRACE` after the last close (plus a round trip).
//! - **Refresh.** Every `presence_refresh` the leases and marks of every member held here (or
//!   in its grace) are refreshed in one round trip; the store clears other instances' lapsed
//!   marks in the same steps and says `offline` for members they held alone (their instance
//!   died): within the mark's lifetime plus one refresh of the death.
//!
//! The lease is left to run after a release, so the member times out after `MEMBER_TTL_SECS`
//! unless a connection holds it again. Expiry itself is the store's sweep, so it does not
//! depend on this instance staying alive.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::domain::RoomId;
use crate::store::Holds;

/// How long a member stays held after its last local connection goes: a resume within it
/// changes nothing. Short enough that `offline` comes within 3 s of the last close; long
/// enough for a reconnect and resume.
pub const GRACE: Duration = Duration::from_secs(2);

/// A member of a room, by username key.
type Member = (RoomId, String);

/// One member's local holds.
struct Held {
    /// How many local connections hold it; 0 during the grace.
    count: usize,
    /// When the grace of its last release ends (`None` while held).
    release_at: Option<Instant>,
}

#[derive(Clone)]
pub struct Presence {
    inner: Arc<PresenceInner>,
}

struct PresenceInner {
    /// Every member held here, or in its grace.
    holds: Mutex<HashMap<Member, Held>>,
    /// To the refresher, which makes every store call.
    requests: mpsc::UnboundedSender<Request>,
    grace: Duration,
}

enum Request {
    /// A member's first local hold: mark it online, then answer.
    First(Member, oneshot::Sender<()>),
    /// A member's last local hold went: release it when its grace ends (at this instant).
    Released(Member, Instant),
}

/// One connection's hold on one member; dropping it lets go.
pub struct Hold {
    presence: Arc<PresenceInner>,
    member: Option<Member>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let Some(member) = self.member.take() else {
            return;
        };
        let release_at = Instant::now() + self.presence.grace;
        let mut holds = self.presence.lock_holds();
        if let Some(held) = holds.get_mut(&member) {
            held.count -= 1;
            if held.count == 0 {
                held.release_at = Some(release_at);
                // Fails only when the refresher has stopped (shutdown): marks then lapse.
                let _ = self
                    .presence
                    .requests
                    .send(Request::Released(member, release_at));
            }
        }
    }
}

impl PresenceInner {
    fn lock_holds(&self) -> std::sync::MutexGuard<'_, HashMap<Member, Held>> {
        // Counters only; consistent even after a panic elsewhere.
        self.holds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Presence {
    /// Creates the presence tracker and the task that marks, refreshes and releases holds.
    pub fn new(
        store: Arc<dyn Holds>,
        every: Duration,
        stopping: CancellationToken,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        Self::with_grace(store, every, GRACE, stopping)
    }

    fn with_grace(
        store: Arc<dyn Holds>,
        every: Duration,
        grace: Duration,
        stopping: CancellationToken,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (requests, incoming) = mpsc::unbounded_channel();
        let inner = Arc::new(PresenceInner {
            holds: Mutex::new(HashMap::new()),
            requests,
            grace,
        });
        let refresher = Refresher {
            presence: inner.clone(),
            store,
            due: VecDeque::new(),
        }
        .run(incoming, every, stopping);
        (Self { inner }, refresher)
    }

    /// Holds a member for a connection. When no live local connection holds it yet (its first
    /// hold here, or one in its grace), it is marked online before this returns (a store
    /// failure leaves that to the next refresh).
    ///
    /// A hold in the grace is marked too, not just held again: the name may belong to a new
    /// member by now (the old one was kicked and its page, closing, let go with the grace; the
    /// store cleared that member's marks with its removal), and only the store knows. For a
    /// member that merely flapped the mark is still there, so the store tells nobody: the
    /// grace still saves every broadcast, at the cost of one round trip batched per room.
    pub async fn hold(&self, room: &RoomId, key: &str) -> Hold {
        let member = (room.clone(), key.to_owned());
        // Whether no live local connection held it, and whether it was in its grace.
        let (unheld, resumed) = match self.inner.lock_holds().entry(member.clone()) {
            Entry::Occupied(mut held) => {
                let held = held.get_mut();
                let resumed = held.count == 0;
                held.release_at = None;
                held.count += 1;
                (resumed, resumed)
            }
            Entry::Vacant(vacant) => {
                vacant.insert(Held {
                    count: 1,
                    release_at: None,
                });
                (true, false)
            }
        };
        if resumed {
            metrics::counter!("chat_presence_grace_resumes_total").increment(1);
        }
        if unheld {
            let (marked, done) = oneshot::channel();
            if self
                .inner
                .requests
                .send(Request::First(member.clone(), marked))
                .is_ok()
            {
                // Dropped unanswered only when the refresher stops.
                let _ = done.await;
            }
        }
        Hold {
            presence: self.inner.clone(),
            member: Some(member),
        }
    }
}

/// The one task that calls the store for presence.
struct Refresher {
    presence: Arc<PresenceInner>,
    store: Arc<dyn Holds>,
    /// Releases waiting for their grace to end, oldest first (every grace is as long, so
    /// this is also deadline order).
    due: VecDeque<(Instant, Member)>,
}

impl Refresher {
    async fn run(
        mut self,
        mut incoming: mpsc::UnboundedReceiver<Request>,
        every: Duration,
        stopping: CancellationToken,
    ) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let grace_ends = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(grace_ends);
        loop {
            let next_release = self.due.front().map(|(at, _)| *at);
            if let Some(at) = next_release {
                grace_ends.as_mut().reset(at);
            }
            tokio::select! {
                () = stopping.cancelled() => return,
                request = incoming.recv() => {
                    let Some(request) = request else { return };
                    self.take(request, &mut incoming).await;
                }
                () = &mut grace_ends, if next_release.is_some() => self.release_due().await,
                _ = ticks.tick() => self.refresh_all().await,
            }
        }
    }

    /// Takes `request` and every request queued behind it: releases wait for their grace,
    /// first holds are marked together.
    async fn take(&mut self, request: Request, incoming: &mut mpsc::UnboundedReceiver<Request>) {
        let mut firsts = Vec::new();
        let mut next = Some(request);
        while let Some(request) = next.take() {
            match request {
                Request::First(member, marked) => firsts.push((member, marked)),
                Request::Released(member, at) => self.due.push_back((at, member)),
            }
            next = incoming.try_recv().ok();
        }
        if firsts.is_empty() {
            return;
        }
        let holds = by_room(firsts.iter().map(|(member, _)| member.clone()));
        // A failure is logged by the store; the next refresh marks them.
        let _ = self.store.refresh_holds(&holds).await;
        for (_, marked) in firsts {
            let _holder_may_be_gone = marked.send(());
        }
    }

    /// Releases the members whose grace ended and who were not held again meanwhile.
    async fn release_due(&mut self) {
        let now = Instant::now();
        let mut released = Vec::new();
        {
            let mut holds = self.presence.lock_holds();
            while self.due.front().is_some_and(|(at, _)| *at <= now) {
                let Some((at, member)) = self.due.pop_front() else {
                    break;
                };
                // Held again since (its count is up), or released again later (a later
                // grace runs): not this release's to make.
                let ends = holds
                    .get(&member)
                    .is_some_and(|held| held.count == 0 && held.release_at == Some(at));
                if ends {
                    holds.remove(&member);
                    released.push(member);
                }
            }
        }
        if released.is_empty() {
            return;
        }
        // Failures are logged by the store; marks lapse by themselves. A member held again
        // from now on is a first hold again, marked after this lands.
        let _ = self.store.release_holds(&by_room(released)).await;
    }

    /// Refreshes every member held here, or in its grace.
    async fn refresh_all(&mut self) {
        let members: Vec<Member> = self.presence.lock_holds().keys().cloned().collect();
        if members.is_empty() {
            return;
        }
        // A failure is logged by the store; leases and marks outlive a missed refresh.
        let _ = self.store.refresh_holds(&by_room(members)).await;
    }
}

/// Members grouped by room, as the store takes them (one step per room).
fn by_room(members: impl IntoIterator<Item = Member>) -> Vec<(RoomId, Vec<String>)> {
    let mut rooms: HashMap<RoomId, Vec<String>> = HashMap::new();
    for (room, key) in members {
        rooms.entry(room).or_default().push(key);
    }
    rooms.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use tokio::sync::Notify;

    use super::*;
    use crate::store::StoreFuture;

    /// One store call: `refresh` or `release`, with its members by room (sorted).
    type Call = (&'static str, Vec<(RoomId, Vec<String>)>);

    /// Holds that keep who is online and every call made, and whose first `release_holds`
    /// waits for the test to let it land (after telling it that it started).
    #[derive(Default)]
    struct GatedHolds {
        gated_once: std::sync::atomic::AtomicBool,
        online: Mutex<HashSet<Member>>,
        calls: Mutex<Vec<Call>>,
        release_started: Notify,
        release_may_land: Notify,
    }

    impl GatedHolds {
        fn is_online(&self, room: &RoomId, key: &str) -> bool {
            self.online
                .lock()
                .expect("no test thread panics holding it")
                .contains(&(room.clone(), key.to_owned()))
        }

        fn calls(&self) -> Vec<Call> {
            self.calls
                .lock()
                .expect("no test thread panics holding it")
                .clone()
        }

        fn record(&self, call: &'static str, holds: &[(RoomId, Vec<String>)]) {
            let mut holds = holds.to_vec();
            holds.sort();
            for (_, keys) in &mut holds {
                keys.sort();
            }
            self.calls
                .lock()
                .expect("no test thread panics holding it")
                .push((call, holds));
        }
    }

    impl Holds for GatedHolds {
        fn refresh_holds<'a>(&'a self, holds: &'a [(RoomId, Vec<String>)]) -> StoreFuture<'a, ()> {
            self.record("refresh", holds);
            let mut online = self
                .online
                .lock()
                .expect("no test thread panics holding it");
            for (room, keys) in holds {
                for key in keys {
                    online.insert((room.clone(), key.clone()));
                }
            }
            Box::pin(std::future::ready(Ok(())))
        }

        fn release_holds<'a>(&'a self, holds: &'a [(RoomId, Vec<String>)]) -> StoreFuture<'a, ()> {
            self.record("release", holds);
            Box::pin(async move {
                if !self
                    .gated_once
                    .swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    self.release_started.notify_one();
                    self.release_may_land.notified().await;
                }
                let mut online = self
                    .online
                    .lock()
                    .expect("no test thread panics holding it");
                for (room, keys) in holds {
                    for key in keys {
                        online.remove(&(room.clone(), key.clone()));
                    }
                }
                Ok(())
            })
        }

        fn sweep(&self) -> StoreFuture<'_, usize> {
            Box::pin(std::future::ready(Ok(0)))
        }
    }

    fn lobby() -> RoomId {
        RoomId::parse("lobby").expect("a valid room id")
    }

    /// Presence with periodic refreshes an hour apart, and a hold of `warm-up` kept by the
    /// caller: when this returns, the periodic refresh's first tick (at once) is past, and it
    /// and the warm-up's mark are the store's two calls so far.
    async fn presence(
        store: &Arc<GatedHolds>,
        grace: Duration,
    ) -> (Presence, Hold, CancellationToken) {
        let stopping = CancellationToken::new();
        let (presence, refresher) = Presence::with_grace(
            store.clone(),
            Duration::from_secs(3600),
            grace,
            stopping.clone(),
        );
        tokio::spawn(refresher);
        let warm_up = presence.hold(&lobby(), "warm-up").await;
        // Paused time moves on only once every task is idle: the first tick is taken.
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(store.calls().len(), 2, "{:?}", store.calls());
        (presence, warm_up, stopping)
    }

    /// A new hold taken while the release of the previous one is in flight: the member must
    /// end up online (its mark lands after the release), not wait for the next periodic
    /// refresh.
    #[tokio::test(start_paused = true)]
    async fn a_hold_taken_while_its_release_is_in_flight_ends_online() {
        let store = Arc::new(GatedHolds::default());
        let (presence, _warm_up, stopping) = presence(&store, Duration::from_millis(100)).await;
        let room = lobby();
        drop(presence.hold(&room, "alice").await);
        store.release_started.notified().await;
        let again = tokio::spawn({
            let presence = presence.clone();
            let room = room.clone();
            async move { presence.hold(&room, "alice").await }
        });
        tokio::task::yield_now().await;
        store.release_may_land.notify_one();
        let again = again.await.expect("the hold is taken");
        assert!(
            store.is_online(&room, "alice"),
            "alice is held but shows offline"
        );
        drop(again);
        stopping.cancel();
    }

    /// A connection that goes and comes back within the grace: no release; it is marked again
    /// (the store tells nobody when its mark is still there).
    #[tokio::test(start_paused = true)]
    async fn a_resume_within_the_grace_releases_nothing_and_marks_again() {
        let store = Arc::new(GatedHolds::default());
        let (presence, _warm_up, stopping) = presence(&store, GRACE).await;
        let room = lobby();
        let calls_before = store.calls().len();
        let first = presence.hold(&room, "alice").await;
        assert_eq!(
            store.calls().len(),
            calls_before + 1,
            "the first hold marks"
        );
        drop(first);
        tokio::time::sleep(GRACE / 2).await;
        let again = presence.hold(&room, "alice").await;
        // Well past the first grace: nothing is released, and the hold was marked again.
        tokio::time::sleep(GRACE * 2).await;
        let calls = store.calls();
        assert_eq!(calls.len(), calls_before + 2, "{calls:?}");
        assert_eq!(calls[calls_before + 1].0, "refresh", "{calls:?}");
        assert!(store.is_online(&room, "alice"));
        drop(again);
        stopping.cancel();
    }

    /// First holds that queue together are marked in one call, and members released together
    /// are released in one call, both grouped by room.
    #[tokio::test(start_paused = true)]
    async fn holds_and_releases_that_come_together_go_together() {
        let store = Arc::new(GatedHolds::default());
        // No release waits here.
        store.release_may_land.notify_one();
        let (presence, _warm_up, stopping) = presence(&store, Duration::from_millis(100)).await;
        let calls_before = store.calls().len();
        let (lobby, other) = (lobby(), RoomId::parse("other").expect("a valid room id"));
        let holds = futures_util::future::join_all([
            presence.hold(&lobby, "alice"),
            presence.hold(&lobby, "bob"),
            presence.hold(&other, "carol"),
        ])
        .await;
        let expected = vec![
            (lobby.clone(), vec!["alice".to_owned(), "bob".to_owned()]),
            (other.clone(), vec!["carol".to_owned()]),
        ];
        assert_eq!(
            store.calls()[calls_before..],
            [("refresh", expected.clone())],
            "one call marks all three"
        );
        drop(holds);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            store.calls()[calls_before + 1..],
            [("release", expected)],
            "one call releases all three"
        );
        assert!(!store.is_online(&lobby, "alice"));
        stopping.cancel();
    }
}
