//! chat-server: a realtime chat service on one ordered log per room.
//!
//! ```text
//!  browser / curl / EventSource / WebSocket client
//!                 │
//!               http        transports: parse, authorize, adapt (REST today)
//!                 │
//!               rooms       every business rule, transport-free
//!                 │
//!               store       the room log + membership, atomic (memory | redis)
//! ```
//!
//! - [`config`]: the environment, parsed once.
//! - [`domain`]: validated values (room ids, usernames, tokens, event ids, events).
//! - [`error`]: API.md's error codes and their one HTTP mapping.
//! - [`store`]: the store contract and its two implementations.
//! - [`rooms`]: the operations every transport calls.
//! - [`limits`]: rate limits, connection caps, the client's IP address.
//! - [`protocol`]: WebSocket client frames decoded into typed, validated events.
//! - [`http`]: the router, extractors and handlers.
//! - [`app`]: build the server on a listener and run it until shutdown.
//! - [`telemetry`]: logs and metrics.

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod hub;
pub mod limits;
pub mod presence;
pub mod protocol;
pub mod rooms;
pub mod store;
pub mod telemetry;

pub use app::App;
pub use config::Config;
