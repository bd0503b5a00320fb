//! [`Backoff`]: the one retry pace of the background loops (the Redis feed reconnecting, a hub
//! room starting or catching up while the store is away): a delay that doubles from `first`
//! up to `max`, and starts over once an attempt succeeds.
//!
//! A helper rather than a crate: the loops wait inside their own `select!` (a stop signal,
//! commands to answer meanwhile), which retry crates that own the loop do not fit.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The pause before the next attempt; each call doubles the one after, up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// An attempt succeeded: the next failure pauses `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Waits out the next pause; false if `stopping` fired first.
    pub async fn pause(&mut self, stopping: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            () = stopping.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_starts_over_after_a_success() {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
        let delays: Vec<u128> = (0..5).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [50, 100, 200, 300, 300]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(50));
    }
}
