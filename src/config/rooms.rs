//! What a room keeps and for how long: messages, history, members, idempotency keys.

use std::num::{NonZeroU64, NonZeroUsize};
use std::time::Duration;

use super::values::Bounded;

section! {
    /// History and lifetimes.
    pub struct Rooms {
        /// The largest chat message, in bytes of UTF-8; the upper bound keeps one message
        /// within a WebSocket frame any client accepts.
        pub max_message_bytes: Bounded<1, 65_536> = Bounded::new(4096),
        /// Events kept per room.
        pub history_limit: NonZeroUsize = nonzero!(1000),
        /// A member with no connection and no authenticated request for this long is removed.
        pub member_ttl_secs: NonZeroU64 = nonzero!(120),
        /// A room with no members for this long is deleted; 0 keeps empty rooms forever.
        pub room_ttl_secs: u64 = 604_800,
        /// How long an `Idempotency-Key` / `clientMsgId` is remembered.
        pub idempotency_ttl_secs: NonZeroU64 = nonzero!(86_400),
        /// Members one room may have.
        pub max_members_per_room: NonZeroUsize = nonzero!(5000),
    }
}

impl Rooms {
    /// How often live connections refresh their members' leases and online marks: a sixth
    /// of the lease, at most every 10 s. Marks live three refreshes (`App::build`), so the
    /// marks of a dead instance's members lapse (and they are told offline) at half the lease
    /// at most, well before the members time out: `remove:member:success` never overtakes the
    /// `presence` that says they went.
    pub fn presence_refresh(&self) -> Duration {
        Duration::from_millis(
            (self.member_ttl_secs.get().saturating_mul(1000) / 6).clamp(100, 10_000),
        )
    }
}
