//! The memory store's expiry index: rooms ordered by the earliest time each may need the
//! sweep, so a sweep looks at the rooms that have something due and not at the others.

use std::collections::{BTreeSet, HashMap};

use crate::domain::RoomId;

/// Rooms ordered by the earliest time each may need the sweep. A hint that is never later
/// than the room's real earliest deadline (only ever moved earlier between sweeps): a room
/// looked at too early is just rescheduled.
#[derive(Default)]
pub(super) struct ExpiryIndex {
    by_time: BTreeSet<(u64, RoomId)>,
    at: HashMap<RoomId, u64>,
}

impl ExpiryIndex {
    /// The room needs looking at by `at_ms` (kept if an earlier time is already scheduled).
    pub(super) fn schedule(&mut self, room: &RoomId, at_ms: u64) {
        match self.at.get(room) {
            Some(&current) if current <= at_ms => {}
            current => {
                if let Some(&current) = current {
                    self.by_time.remove(&(current, room.clone()));
                }
                self.by_time.insert((at_ms, room.clone()));
                self.at.insert(room.clone(), at_ms);
            }
        }
    }

    /// When the room is scheduled, if it is.
    #[cfg(test)]
    pub(super) fn scheduled(&self, room: &RoomId) -> Option<u64> {
        self.at.get(room).copied()
    }

    /// Takes the rooms due by `now`, earliest first.
    pub(super) fn take_due(&mut self, now: u64) -> Vec<RoomId> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.by_time.first()
            && *at <= now
        {
            let Some((_, room)) = self.by_time.pop_first() else {
                break;
            };
            self.at.remove(&room);
            due.push(room);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomId {
        RoomId::parse(name).expect("a valid room id")
    }

    #[test]
    fn the_expiry_index_hands_out_due_rooms_in_order_and_keeps_the_earliest_time() {
        let mut index = ExpiryIndex::default();
        index.schedule(&room("late"), 300);
        index.schedule(&room("early"), 100);
        index.schedule(&room("later-first"), 200);
        // A later time for a scheduled room changes nothing; an earlier one moves it.
        index.schedule(&room("early"), 250);
        index.schedule(&room("later-first"), 50);
        assert_eq!(index.take_due(99), [room("later-first")]);
        assert_eq!(index.take_due(99), Vec::<RoomId>::new());
        assert_eq!(index.take_due(1000), [room("early"), room("late")]);
        assert!(index.by_time.is_empty() && index.at.is_empty());
    }
}
