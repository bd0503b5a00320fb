//! Live connections (WebSocket and SSE): their pace, their queues and their lifetimes.

use std::num::{NonZeroU64, NonZeroUsize};

use super::values::Bounded;

section! {
    /// Streams.
    pub struct Streams {
        /// SSE keepalive comment interval.
        pub sse_keepalive_secs: NonZeroU64 = nonzero!(15),
        /// How long a stream ticket (`POST /rooms/{roomId}/events/ticket`) stays redeemable:
        /// long enough to open an EventSource, short because it rides in a URL that logs may
        /// keep.
        pub sse_ticket_ttl_secs: Bounded<1, 600> = Bounded::new(30),
        /// WebSocket and SSE connections are closed (1012 / end of stream) after this long,
        /// under Cloud Run's 60-minute request limit, so clients reconnect and resume on their
        /// terms.
        pub ws_max_lifetime_secs: NonZeroU64 = nonzero!(3300),
        /// How often the server pings a WebSocket; one that answers nothing for two intervals
        /// is closed as dead.
        pub ws_ping_secs: NonZeroU64 = nonzero!(25),
        /// How many events may wait for one slow connection before it is closed (1013).
        pub client_queue_len: NonZeroUsize = nonzero!(1024),
        /// A busy room (over 100 events/s) whose connections are behind (half or more had
        /// not taken its last push) pushes its events at most once per this many
        /// milliseconds, in batches; while they keep up, every event goes at once. 0 never
        /// holds an event. Over a second would be felt in a conversation.
        pub fanout_coalesce_ms: Bounded<0, 1000> = Bounded::new(10),
    }
}
