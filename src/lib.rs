//! chat-server: a realtime chat service on one ordered log per room.
//!
//! ```text
//!  browser / curl / EventSource / WebSocket client
//!         │            │              │
//!      http::rest    http::sse      http::ws        transports: frame I/O only
//!         │            └──────┬───────┘
//!         │                session                  a connection's memberships: admit, resume,
//!         │                   │                     end, runs of posts, replies, close reasons
//!         └───────────────────┤
//!                    rooms                          every business rule, transport-free
//!               ┌──────┴───────┐
//!            store            hub                   store: the room log + membership (atomic)
//!    (memory | redis)   (local fan-out)             hub: per-room subscribers on this instance
//!               └──── feed ────┘                    feed: events appended anywhere → this hub
//! ```
//!
//! - [`config`]: the environment, parsed once into typed sections.
//! - [`domain`]: validated values (room ids, usernames, tokens, event ids, events).
//! - [`error`]: API.md's error codes (transport-free; `http::error` maps them to HTTP).
//! - [`store`]: the store contract and its two implementations.
//! - [`rooms`]: the operations every transport calls.
//! - [`session`]: a connection's memberships and their rules, shared by every streaming
//!   transport; typed replies and close reasons.
//! - [`identity`]: JWT joins (the app's own users): the JWKS, the token check, the username.
//! - [`room_secrets`]: argon2id hashing of room secrets, bounded in memory and concurrency.
//! - [`hub`]: this instance's fan-out: per-room actors, replay then live, bounded queues.
//! - [`presence`]: which members live connections hold; leases and online marks, whose
//!   changes the store tells the room as ephemeral `presence` events.
//! - [`limits`]: rate limits, connection caps, the client's IP address.
//! - [`protocol`]: WebSocket client frames decoded into typed, validated events.
//! - [`http`]: the router, extractors and handlers.
//! - [`backoff`]: the one retry pace of the background loops.
//! - [`app`]: build the server on a listener and run it until shutdown.
//! - [`telemetry`]: logs (text or Cloud Logging JSON), OpenTelemetry traces, metrics.

pub mod app;
pub mod backoff;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod hub;
pub mod identity;
pub mod limits;
pub mod presence;
pub mod protocol;
pub mod room_secrets;
pub mod rooms;
pub mod session;
pub mod store;
pub mod telemetry;
pub mod tls;

pub use app::App;
pub use config::Config;
