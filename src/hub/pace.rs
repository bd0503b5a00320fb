//! Coalescing pace: when a room pushes its pending events. At once, unless the room is busy
//! *and* its connections are behind; then at most once per coalescing window
//! (`FANOUT_COALESCE_MS`).
//!
//! Why both conditions: a socket write is most of a delivery's cost, so holding a busy room's
//! events for a window makes each connection write several at once, which is what lets two
//! cores keep up with 800 events/s to a thousand connections. But a connection that keeps up
//! gains nothing from a held event except its wait: it would have written it alone at once.
//! So a room holds only while at least half of its connections had not yet taken its last
//! push when it pushed (they are behind: the machine is short of time for their writes);
//! while they keep up, every event goes at once and events share writes only by queueing
//! (see the hub's module docs). Measured in BENCHMARKS.md, "Batching by what is queued".
//!
//! Why apart from the actor: the decision is pure arithmetic over instants, tested here
//! without a runtime, store or connection.

use std::time::Duration;

use tokio::time::Instant;

/// A room with more events per second than this may coalesce them (see the module docs): far
/// above a conversation's pace, so a chat's latency never pays for it.
const BUSY_EVENTS_PER_SEC: u32 = 100;
/// How often a room's busy state is re-decided from its event rate.
const RATE_PERIOD: Duration = Duration::from_millis(100);
/// The most events one batch holds.
pub(super) const MAX_BATCH: usize = 64;

/// When a room pushes its pending events: at once while it is quiet or its connections keep
/// up; while it is busy and they are behind, at most once per coalescing window.
pub(super) struct Pace {
    window: Duration,
    busy: bool,
    /// Whether half or more of the connections the last push reached had not yet taken the
    /// push before it.
    behind: bool,
    counting_since: Instant,
    counted: u32,
    last_push: Instant,
}

impl Pace {
    pub(super) fn new(window: Duration) -> Self {
        let now = Instant::now();
        Self {
            window,
            busy: false,
            behind: false,
            counting_since: now,
            counted: 0,
            last_push: now,
        }
    }

    /// Counts an event, re-deciding `busy` from the rate once per `RATE_PERIOD`, and as soon
    /// as a period holds more events than the busy rate allows for all of it.
    pub(super) fn count(&mut self, now: Instant) {
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

    /// Records a push at `now` that reached `reached` connections, `behind` of them still
    /// holding events of an earlier push.
    pub(super) fn pushed(&mut self, now: Instant, behind: u64, reached: u64) {
        self.last_push = now;
        self.behind = reached > 0 && behind * 2 >= reached;
    }

    /// When `pending` events are to be pushed: `None` for now.
    pub(super) fn push_at(&self, pending: usize, now: Instant) -> Option<Instant> {
        let at = self.last_push + self.window;
        if !self.busy || !self.behind || pending >= MAX_BATCH || at <= now {
            None
        } else {
            Some(at)
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
        pace.pushed(now, 1, 1);
        assert!(!pace.busy);
        assert_eq!(pace.push_at(1, now), None);
    }

    #[test]
    fn a_busy_room_that_is_behind_holds_events_until_a_window_after_its_last_push() {
        let start = Instant::now();
        let mut pace = Pace::new(WINDOW);
        // 1000 events/s for 200 ms.
        let now = feed(&mut pace, start, 200, Duration::from_millis(200));
        assert!(pace.busy);
        pace.pushed(now, 1, 1);
        let soon = now + Duration::from_millis(1);
        assert_eq!(pace.push_at(3, soon), Some(now + WINDOW));
        // A full batch, or a window since the last push, goes at once.
        assert_eq!(pace.push_at(MAX_BATCH, soon), None);
        assert_eq!(pace.push_at(3, now + WINDOW), None);
    }

    #[test]
    fn a_busy_room_whose_connections_keep_up_pushes_every_event_at_once() {
        let start = Instant::now();
        let mut pace = Pace::new(WINDOW);
        let now = feed(&mut pace, start, 200, Duration::from_millis(200));
        assert!(pace.busy);
        // 499 of 1000 connections had not taken the push before: fewer than half.
        pace.pushed(now, 499, 1000);
        assert_eq!(pace.push_at(3, now + Duration::from_millis(1)), None);
        pace.pushed(now, 500, 1000);
        assert_eq!(
            pace.push_at(3, now + Duration::from_millis(1)),
            Some(now + WINDOW)
        );
        // A push that reached nobody says nothing of anyone being behind.
        pace.pushed(now, 0, 0);
        assert_eq!(pace.push_at(3, now + Duration::from_millis(1)), None);
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
        pace.pushed(later, 1, 1);
        assert_eq!(pace.push_at(1, later), None);
    }

    #[test]
    fn a_zero_window_never_holds_events() {
        let start = Instant::now();
        let mut pace = Pace::new(Duration::ZERO);
        let now = feed(&mut pace, start, 500, Duration::from_millis(200));
        assert!(pace.busy);
        pace.pushed(now, 1, 1);
        assert_eq!(pace.push_at(5, now), None);
    }
}
