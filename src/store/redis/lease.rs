//! The lease index and the sweep. Member expiry must not depend on the instance that held a
//! member, so leases live in Redis and an index (room id → when to look at it) tells any
//! instance's sweeper which rooms may have lapsed leases. The index is split into
//! [`LEASE_BUCKETS`](super::keys::LEASE_BUCKETS) sorted sets, each under its own hash tag, so on a cluster they spread
//! over the shards; every sweeper reads every bucket (and the single index of earlier
//! versions, whose rooms it moves to their bucket).
//!
//! The index is only a hint that must never be *later* than a room's earliest lease: joins
//! mark the room "look now" with a [`marker`] (negative, so always due, and unique per join)
//! and sweepers write back the earliest lease they found only if the score is still the one
//! they read (`lease_index_update.lua`), so a join in between wins. The index keys live outside
//! any room's slot and are never touched in the same script as room keys.
//!
//! Beside each lease bucket, under the same hash tag, is the server API's room index bucket
//! (`keys::rooms_bucket_key`): a mark adds the room to it, and the sweep's write-back keeps it
//! right (out when the room is gone, back in while it lives), so a room the index lost, or one
//! created before the index existed, is listed again after its next sweep.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use redis::Script;

use super::RedisStore;
use super::keys::{
    LEGACY_LEASE_INDEX, lease_index_of, lease_indexes, rooms_index_beside, rooms_index_of,
};
use super::replies::{SweepAnswer, sweep_answer};
use crate::domain::{RoomId, now_ms};
use crate::store::{StoreResult, count_appended};

/// How many rooms one sweep looks at per index, so a sweep stays short.
const SWEEP_BATCH: isize = 256;

static LEASE_INDEX_UPDATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/lease_index_update.lua")));

/// Markers are `-1 - n` for n < 2^52: integers an f64 score holds exactly, all negative.
const MARKER_SPACE: u64 = 1 << 52;

/// A fresh "look now" score for the lease index: negative (due at once) and different from
/// every other marker this process made, however many come in one millisecond. The counter
/// starts at a random point, so two instances' markers coincide only by a 1-in-2^52 chance.
pub(super) fn marker() -> f64 {
    static NEXT: LazyLock<AtomicU64> = LazyLock::new(|| AtomicU64::new(rand::random::<u64>()));
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % MARKER_SPACE;
    // Exact: n < 2^52 fits an f64's mantissa.
    -1.0 - n as f64
}

impl RedisStore {
    /// Sweeps the rooms the index says are due, up to [`SWEEP_BATCH`]. A room that fails (an
    /// unexpected key, a script error) is logged and left in the index for the next sweep;
    /// the others are swept all the same.
    pub(super) async fn sweep_due(&self) -> StoreResult<usize> {
        // Every index at once: on a cluster they are on different shards.
        let reads = lease_indexes().map(|index| async move {
            let mut connection = self.connection.clone();
            let due: Vec<(String, f64)> = self
                .run(
                    "sweep_index",
                    redis::cmd("ZRANGEBYSCORE")
                        .arg(&index)
                        .arg("-inf")
                        .arg(now_ms())
                        .arg("WITHSCORES")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(SWEEP_BATCH)
                        .query_async(&mut connection),
                )
                .await?;
            StoreResult::Ok(
                due.into_iter()
                    .map(move |(room, score)| (index.clone(), room, score)),
            )
        });
        let due = futures_util::future::try_join_all(reads).await?;
        let mut timed_out = 0;
        let mut failed = 0;
        for (index, room, score) in due.into_iter().flatten() {
            match self.sweep_room(&index, &room, score).await {
                Ok(count) => timed_out += count,
                // `run` logged the cause, without the room's keys or arguments.
                Err(_) => failed += 1,
            }
        }
        if failed > 0 {
            metrics::counter!("chat_sweep_room_failures_total").increment(failed);
            tracing::warn!(
                failed,
                "rooms could not be swept; retrying on the next sweep"
            );
        }
        Ok(timed_out)
    }

    /// Marks a room "look now" in its bucket: a join's lease may be the earliest. The room
    /// goes into the room index too (same hash tag, one round trip): before the create that
    /// makes it, so no room is ever missing from the list; an entry whose create then fails
    /// is left out when read.
    pub(super) async fn mark_for_sweep(&self, room: &RoomId) -> StoreResult<()> {
        let mut connection = self.connection.clone();
        // Always due, and never the score a sweeper read: its write-back then loses.
        let _: (i64, i64) = self
            .run(
                "lease_mark",
                redis::pipe()
                    .cmd("ZADD")
                    .arg(lease_index_of(room))
                    .arg(marker())
                    .arg(room.as_str())
                    .cmd("ZADD")
                    .arg(rooms_index_of(room))
                    .arg(0)
                    .arg(room.as_str())
                    .query_async(&mut connection),
            )
            .await?;
        Ok(())
    }

    async fn sweep_room(&self, index: &str, room: &str, score_read: f64) -> StoreResult<usize> {
        let Ok(room_id) = RoomId::parse(room) else {
            // Not a room id this server wrote: drop it from the index.
            self.update_lease_index(index, room, score_read, None)
                .await?;
            return Ok(0);
        };
        let room_ttl = self.settings.room_ttl_secs.to_string();
        let reply = self
            .room_script(
                "sweep_room",
                &super::SWEEP_ROOM,
                &room_id,
                &[],
                &[&room_ttl],
                false,
            )
            .await?;
        let (timed_out, next) = match sweep_answer(&reply)? {
            // Marked (a negative score) and not there: a create marks its room before its
            // script makes it, so this may be a room being made right now. Removing the entry
            // would leave that room out of every sweep; look again after one TTL instead, and
            // drop it then if the room is still not there (a create that failed).
            SweepAnswer::Gone if score_read < 0.0 => {
                (0, Some((now_ms() + self.settings.member_ttl_ms) as f64))
            }
            SweepAnswer::Gone => (0, None),
            SweepAnswer::Swept {
                timed_out,
                next_deadline,
            } => {
                count_appended("remove:member:success", timed_out as u64);
                // No leases left (an empty room): look again after one TTL, by which time the
                // room is either joined (and marked) or on its way to expiry.
                let next = next_deadline
                    .unwrap_or_else(|| (now_ms() + self.settings.member_ttl_ms) as f64);
                (timed_out, Some(next))
            }
        };
        if index == LEGACY_LEASE_INDEX {
            // Moves to its bucket: there first (never later than its earliest lease), then out
            // of the legacy index.
            if next.is_some() {
                self.mark_for_sweep(&room_id).await?;
            }
            self.update_lease_index(index, room, score_read, None)
                .await?;
        } else {
            self.update_lease_index(index, room, score_read, next)
                .await?;
        }
        Ok(timed_out)
    }

    async fn update_lease_index(
        &self,
        index: &str,
        room: &str,
        score_read: f64,
        next: Option<f64>,
    ) -> StoreResult<()> {
        let mut invocation = LEASE_INDEX_UPDATE.prepare_invoke();
        invocation.key(index);
        if let Some(rooms_index) = rooms_index_beside(index) {
            invocation.key(rooms_index);
        }
        invocation
            .arg(room)
            .arg(score_read)
            .arg(next.map(|score| score.to_string()).unwrap_or_default());
        let mut connection = self.connection.clone();
        let _: i64 = self
            .run(
                "lease_index_update",
                invocation.invoke_async(&mut connection),
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_made_in_one_millisecond_differ() {
        let markers: Vec<f64> = (0..10_000).map(|_| marker()).collect();
        let distinct: std::collections::HashSet<u64> =
            markers.iter().map(|marker| marker.to_bits()).collect();
        assert_eq!(distinct.len(), markers.len());
        assert!(markers.iter().all(|marker| *marker < 0.0));
    }
}
