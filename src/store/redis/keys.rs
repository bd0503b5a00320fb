//! Every Redis key and pub/sub channel name the store uses, in one place. The room scripts get
//! a room's keys in the order [`RoomKeys`] lists them; `scripts/prelude.lua` names them in the
//! same order and finds a script's own keys from [`FIRST_OWN_KEY`] on.

use crate::domain::{RoomId, TokenHash};

/// How many buckets the sweepers' index of rooms with leases is split into. Each bucket is
/// one sorted set (room id → when to look at it) under its own hash tag, so on a cluster the
/// buckets spread over the shards and no shard holds one hot index key. Changing the count
/// moves rooms between buckets: a room in a bucket no longer swept would be forgotten.
pub(super) const LEASE_BUCKETS: u32 = 16;

/// The single index of earlier versions, still swept so the rooms it holds move to their
/// bucket. Nothing adds to it any more.
pub(super) const LEGACY_LEASE_INDEX: &str = "leases:rooms";

/// The lease index bucket of `bucket` (`0..LEASE_BUCKETS`): outside any room's hash tag, so it
/// is never touched in the same script as room keys.
pub(super) fn lease_bucket_key(bucket: u32) -> String {
    format!("leases:{{{bucket}}}")
}

/// The bucket a room belongs to, in the lease index and the room index alike. FNV-1a of the
/// id: stable across processes and versions, which every instance's sweeper and marker must
/// agree on.
fn bucket_of(room: &RoomId) -> u32 {
    let hash = room.as_str().bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    hash % LEASE_BUCKETS
}

/// The lease index bucket a room belongs to.
pub(super) fn lease_index_of(room: &RoomId) -> String {
    lease_bucket_key(bucket_of(room))
}

/// The room index bucket of `bucket`: a sorted set of room ids (all scored 0, so ordered by
/// id) that the server API's room list reads with `ZRANGEBYLEX`. It shares its lease bucket's
/// hash tag, so the lease index scripts keep both in one step on a cluster.
pub(super) fn rooms_bucket_key(bucket: u32) -> String {
    format!("rooms:{{{bucket}}}")
}

/// The room index bucket a room belongs to.
pub(super) fn rooms_index_of(room: &RoomId) -> String {
    rooms_bucket_key(bucket_of(room))
}

/// The room index bucket beside a lease index bucket key (`leases:{n}` → `rooms:{n}`); `None`
/// for the legacy lease index, which has no bucket.
pub(super) fn rooms_index_beside(lease_index: &str) -> Option<String> {
    lease_index
        .strip_prefix("leases:{")
        .and_then(|rest| rest.strip_suffix('}'))
        .map(|bucket| format!("rooms:{{{bucket}}}"))
}

/// Every room index bucket.
pub(super) fn rooms_indexes() -> impl Iterator<Item = String> {
    (0..LEASE_BUCKETS).map(rooms_bucket_key)
}

/// Every lease index a sweeper reads: the buckets, then the legacy index.
pub(super) fn lease_indexes() -> impl Iterator<Item = String> {
    (0..LEASE_BUCKETS)
        .map(lease_bucket_key)
        .chain(std::iter::once(LEGACY_LEASE_INDEX.to_owned()))
}

/// How many keys every room script gets before its own: prelude.lua's `room_key_count`.
pub(super) const ROOM_KEY_COUNT: usize = 8;
/// The 1-based index of a script's first own key: prelude.lua's `first_own_key`.
pub(super) const FIRST_OWN_KEY: usize = ROOM_KEY_COUNT + 1;

/// The key suffixes of a room, in prelude.lua's order (`KEYS[1]` … `KEYS[8]`).
const ROOM_KEY_SUFFIXES: [&str; ROOM_KEY_COUNT] = [
    "meta", "members", "tokens", "leases", "log", "online", "names", "holders",
];
const META: usize = 0;

/// The keys of one room, in the order every room script expects them.
pub(crate) struct RoomKeys {
    keys: [String; ROOM_KEY_COUNT],
    channel: String,
}

impl RoomKeys {
    pub(crate) fn new(room: &RoomId) -> Self {
        Self {
            keys: ROOM_KEY_SUFFIXES.map(|suffix| room_key(room, suffix)),
            channel: channel_of(room),
        }
    }

    /// All of them, in script order.
    pub(super) fn all(&self) -> &[String] {
        &self.keys
    }

    pub(crate) fn meta(&self) -> &str {
        &self.keys[META]
    }

    /// The pub/sub channel the room's events are published on.
    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }
}

/// `room:{id}:<suffix>`: under the room's hash tag, so one script touches one Cluster slot.
fn room_key(room: &RoomId, suffix: &str) -> String {
    format!("room:{{{room}}}:{suffix}")
}

/// Where a stream ticket of `room` is kept: under the room's hash tag, so the scripts that
/// issue and redeem it touch one slot with the room's members.
pub(super) fn ticket_key(room: &RoomId, ticket_hash: &TokenHash) -> String {
    room_key(room, &format!("ticket:{}", ticket_hash.as_str()))
}

/// A member's `typing` throttle, by its token hash (known before the script that finds its
/// member): set for `TYPING_EVERY` by the `typing` that is published.
pub(super) fn typing_key(room: &RoomId, token_hash: &TokenHash) -> String {
    room_key(room, &format!("typing:{}", token_hash.as_str()))
}

/// Where an idempotency key of a member's message is kept (`key` is `""` for none: the
/// script then leaves the slot unused).
pub(super) fn idempotency_key(room: &RoomId, token_hash: &TokenHash, key: &str) -> String {
    room_key(room, &format!("idem:{}:{key}", token_hash.as_str()))
}

/// The pub/sub channel of a room's events.
pub(super) fn channel_of(room: &RoomId) -> String {
    format!("room:{{{room}}}")
}

/// The room a channel of [`channel_of`] belongs to.
pub(super) fn room_of_channel(channel: &str) -> Option<RoomId> {
    let room = channel.strip_prefix("room:{")?.strip_suffix('}')?;
    RoomId::parse(room).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_prelude() {
        let prelude = include_str!("scripts/prelude.lua");
        assert!(prelude.contains(&format!("local room_key_count = {ROOM_KEY_COUNT}\n")));
        assert!(prelude.contains("local first_own_key = room_key_count + 1\n"));
        assert_eq!(FIRST_OWN_KEY, ROOM_KEY_COUNT + 1);
        for (index, suffix) in ROOM_KEY_SUFFIXES.iter().enumerate() {
            let line = format!("--   {} room:{{id}}:{suffix} ", index + 1);
            assert!(prelude.contains(&line), "prelude.lua lacks {line:?}");
        }
        let room = RoomId::parse("lobby").expect("a valid room id");
        assert_eq!(room_of_channel(&channel_of(&room)), Some(room));
    }

    #[test]
    fn rooms_spread_over_every_lease_bucket() {
        let buckets: std::collections::HashSet<String> = (0..1000)
            .map(|n| lease_index_of(&RoomId::parse(&format!("room-{n}")).expect("a valid room id")))
            .collect();
        assert_eq!(buckets.len(), LEASE_BUCKETS as usize);
        assert!(lease_indexes().all(|index| !index.contains("{lobby}")));
        // Fixed forever: every instance, of every version, must find a room in one bucket.
        let lobby = RoomId::parse("lobby").expect("a valid room id");
        assert_eq!(lease_index_of(&lobby), "leases:{3}");
        // A room's two index entries share a hash tag, so one script keeps both.
        assert_eq!(rooms_index_of(&lobby), "rooms:{3}");
        assert_eq!(
            rooms_index_beside("leases:{3}").as_deref(),
            Some("rooms:{3}")
        );
        assert_eq!(rooms_index_beside(LEGACY_LEASE_INDEX), None);
        assert_eq!(rooms_indexes().count(), LEASE_BUCKETS as usize);
    }
}
