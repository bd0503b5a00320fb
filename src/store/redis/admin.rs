//! The server API's operations on Redis ([`Admin`]): one room script each, and the room list
//! read from the room index. Its kick and ban are `RoomLog::remove_member` (`remove.lua`),
//! the one removal script members use too.
//!
//! The room index is [`LEASE_BUCKETS`](super::keys::LEASE_BUCKETS) sorted sets of room ids
//! (`rooms:{n}`), split like the lease index so that on a cluster no script touches two
//! slots and no shard holds one hot key. A page is read from every bucket at once
//! (`ZRANGEBYLEX` after the cursor), merged, and cut to the page; each room on it is then
//! read by its own script (rooms live on different shards). The index is a hint kept right by
//! the sweep (see `lease`): an entry whose room is gone (expired, deleted, a create that
//! failed) is left out and removed when read, and a room missing from it comes back at its
//! next sweep.

use super::keys::{rooms_index_of, rooms_indexes};
use super::replies::malformed;
use super::{RedisStore, RoomScript};
use crate::domain::{EventId, EventKind, MessageText, RoomEvent, RoomId, Username};
use crate::store::{
    Admin, RoomSummary, RoomsPage, StoreFuture, StoreResult, count_appended, rooms_page,
};

impl RedisStore {
    /// Up to `want` room ids after `after`, from every bucket, merged in id order.
    async fn indexed_rooms(&self, after: Option<&str>, want: usize) -> StoreResult<Vec<String>> {
        let min = after.map_or_else(|| "-".to_owned(), |after| format!("({after}"));
        let reads = rooms_indexes().map(|index| {
            let min = min.clone();
            async move {
                let mut connection = self.connection.clone();
                let ids: Vec<String> = self
                    .run(
                        "rooms_index",
                        redis::cmd("ZRANGEBYLEX")
                            .arg(&index)
                            .arg(&min)
                            .arg("+")
                            .arg("LIMIT")
                            .arg(0)
                            .arg(want)
                            .query_async(&mut connection),
                    )
                    .await?;
                StoreResult::Ok(ids)
            }
        });
        let mut ids: Vec<String> = futures_util::future::try_join_all(reads)
            .await?
            .into_iter()
            .flatten()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.truncate(want);
        Ok(ids)
    }

    /// One room's summary, `None` when it is gone (its index entry is then removed).
    async fn room_summary(&self, id: &str) -> StoreResult<Option<RoomSummary>> {
        let Ok(room) = RoomId::parse(id) else {
            self.forget_indexed(id, None).await?;
            return Ok(None);
        };
        let reply = self
            .room_script("room_summary", &super::ROOM_SUMMARY, &room, &[], &[], false)
            .await?;
        match reply.status.as_str() {
            "ok" => {
                let count = |index| {
                    reply
                        .int(index)
                        .and_then(|n| usize::try_from(n).map_err(|_| malformed("count")))
                };
                Ok(Some(RoomSummary {
                    members: count(0)?,
                    online: count(1)?,
                    last_event_id: reply.event_id(2)?,
                    room,
                }))
            }
            "gone" => {
                self.forget_indexed(id, Some(&room)).await?;
                Ok(None)
            }
            _ => Err(malformed("room_summary status")),
        }
    }

    /// Drops a room's entry from the room index. A create racing this may lose its entry; its
    /// room's next sweep puts it back (see `lease`).
    async fn forget_indexed(&self, id: &str, room: Option<&RoomId>) -> StoreResult<()> {
        let indexes: Vec<String> = match room {
            Some(room) => vec![rooms_index_of(room)],
            // Not a room id this server wrote: it is in whichever bucket holds it.
            None => rooms_indexes().collect(),
        };
        for index in indexes {
            let mut connection = self.connection.clone();
            let _: i64 = self
                .run(
                    "rooms_index_forget",
                    redis::cmd("ZREM")
                        .arg(index)
                        .arg(id)
                        .query_async(&mut connection),
                )
                .await?;
        }
        Ok(())
    }
}

impl Admin for RedisStore {
    fn list_rooms<'a>(
        &'a self,
        after: Option<&'a RoomId>,
        limit: usize,
    ) -> StoreFuture<'a, RoomsPage> {
        Box::pin(async move {
            let mut cursor = after.map(|room| room.as_str().to_owned());
            let mut live = Vec::with_capacity(limit + 1);
            // Rounds until the page (plus one, which tells whether another follows) is full
            // of live rooms or the index has no more: stale entries only cost another round.
            loop {
                let want = limit + 1 - live.len();
                let ids = self.indexed_rooms(cursor.as_deref(), want).await?;
                let exhausted = ids.len() < want;
                let summaries =
                    futures_util::future::try_join_all(ids.iter().map(|id| self.room_summary(id)))
                        .await?;
                live.extend(summaries.into_iter().flatten());
                cursor = ids.last().cloned();
                if exhausted || live.len() > limit {
                    break;
                }
            }
            Ok(rooms_page(live, limit))
        })
    }

    fn post_as<'a>(
        &'a self,
        room: &'a RoomId,
        username: &'a Username,
        text: MessageText,
    ) -> StoreFuture<'a, Option<RoomEvent>> {
        Box::pin(async move {
            let args = [username.as_str(), text.as_str()];
            let reply = self
                .room_script("post_as", &super::POST_AS, room, &[], &args, false)
                .await?;
            match reply.status.as_str() {
                "ok" => {
                    count_appended("create:chat:success", 1);
                    Ok(Some(RoomEvent {
                        id: reply.event_id(0)?,
                        // As a member's post: the reply is the message; its predecessor
                        // matters only to readers of the log and the feed.
                        prev: EventId::ZERO,
                        room: room.clone(),
                        kind: EventKind::Chat {
                            username: username.as_str().to_owned(),
                            message: text.into_string(),
                        },
                    }))
                }
                "room_not_found" => Ok(None),
                _ => Err(malformed("post_as status")),
            }
        })
    }

    fn delete_room<'a>(&'a self, room: &'a RoomId) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let reply = self
                .room_script("delete_room", &super::DELETE_ROOM, room, &[], &[], false)
                .await?;
            match reply.status.as_str() {
                "ok" => {
                    // Best effort: a failure here leaves a stale entry, which reads skip.
                    let _stale_entry_is_skipped =
                        self.forget_indexed(room.as_str(), Some(room)).await;
                    Ok(true)
                }
                "room_not_found" => Ok(false),
                _ => Err(malformed("delete_room status")),
            }
        })
    }
}

/// The scripts this file runs, for `acknowledged`: a client is told these happened.
pub(super) fn acknowledged_scripts() -> [&'static RoomScript; 2] {
    [&*super::POST_AS, &*super::DELETE_ROOM]
}
