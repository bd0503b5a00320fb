//! Rate limits and caps on what one client, connection or room may use.

use std::num::{NonZeroU32, NonZeroUsize};

use super::values::Switch;

section! {
    /// Rate limits (sustained rate and burst) and per-client caps.
    pub struct Limits {
        /// `off` turns every rate limit off (load tests); the caps stay.
        pub rate_limits: Switch = Switch::On,
        /// Chat messages per member.
        pub rate_messages_per_sec: NonZeroU32 = nonzero!(5),
        pub rate_message_burst: NonZeroU32 = nonzero!(100),
        /// Client events per WebSocket connection.
        pub rate_ws_events_per_sec: NonZeroU32 = nonzero!(20),
        pub rate_ws_event_burst: NonZeroU32 = nonzero!(200),
        /// REST requests per client IP.
        pub rate_rest_per_sec: NonZeroU32 = nonzero!(20),
        pub rate_rest_burst: NonZeroU32 = nonzero!(200),
        /// Room creations and joins per client IP (every transport).
        pub rate_joins_per_min: NonZeroU32 = nonzero!(30),
        pub rate_join_burst: NonZeroU32 = nonzero!(20),
        /// Wrong room secrets per client address, per minute (also the burst).
        pub rate_secret_failures_per_min: NonZeroU32 = nonzero!(10),
        /// Wrong room secrets per room, per minute (also the burst).
        pub rate_room_secret_failures_per_min: NonZeroU32 = nonzero!(30),
        /// Open WebSocket and SSE streams per client IP.
        pub max_connections_per_ip: NonZeroUsize = nonzero!(100),
        /// Rooms one WebSocket connection may hold.
        pub max_rooms_per_connection: NonZeroUsize = nonzero!(20),
    }
}
