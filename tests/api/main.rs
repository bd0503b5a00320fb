//! The integration suite: one test binary (one link on a 2-core machine), every test against a
//! real server on a loopback port, through HTTP.
//!
//! - [`support`]: `RedisServer` (a real `redis-server` per test), `TestApp` (the app in-process
//!   on port 0) and the `conformance!` macro that runs a test on both stores.
//! - [`rest`]: API.md's REST table, row by row, on both stores.
//! - [`concurrency`]: one winner under racing creates, joins and idempotent posts.
//! - [`faults`]: Redis going away and coming back (Redis only).
//! - [`durability`]: `REDIS_WAIT_REPLICAS`: writes acknowledged once a replica holds them, 503
//!   when it does not in time, and the retry that finds the write once; on one Redis and on a
//!   Redis Cluster, where a stuck replica fails only its shard's writes.
//! - [`abuse`]: rate limits, caps, slowloris, origins, abusive crowds, no leaked secrets.
//! - [`hardening`]: what one request or address must not cost: secret-check memory, metric
//!   series, slow bodies, per-address connections, writers that never drain.
//! - [`bad_input`]: a table of malformed requests and the exact error each gets.
//! - [`edits`]: editing and deleting chat messages on every transport: who may, history as
//!   last edited without deleted messages, the logged events live and replayed, retries, and
//!   the revisions Redis keeps staying bounded.
//! - [`realtime`]: WebSocket and SSE on both stores: acks, errors, resume, presence, slow
//!   clients, lifetimes, shutdown.
//! - [`ephemeral`]: `presence` and `typing` on every transport and store: no ids, never
//!   replayed, the typing throttle, the grace that hides a quick reconnect, and offline for
//!   the members of a killed instance.
//! - [`gaps`]: no silent gap: a resume after an id the log lost is told `complete: false`
//!   (SSE: `resume:gap`); a live connection whose room's log was lost is closed to resume.
//! - [`server_api`]: `/api/` with `SERVER_API_KEY`: absent without it, the key and its
//!   lockout, the room list, system messages, kicks and bans, deleting a room; a kick seen
//!   by a connection on another instance.
//! - [`moderation`]: room ownership (member lists, cleared on leave, timeout and the server
//!   API's kick) and the owner's kicks and bans over REST, WebSocket and socket.io; a kicked
//!   member's token and connections, also on another instance.
//! - [`session`]: the session core's membership rules on the WebSocket: a held room created
//!   again, a room lost and created anew by someone else.
//! - [`tickets`]: SSE stream tickets: single use, expiry, room and member binding, and
//!   redemption on another instance.
//! - [`readme`]: the README's curl walkthrough, `curl -N`, a standalone WebSocket client and
//!   the socket.io snippet.
//! - [`cluster`]: several instances on one Redis, a killed instance, a Redis restart under
//!   traffic, SIGTERM of the real binary.
//! - [`redis_cluster`]: the service on a real Redis Cluster (`RedisCluster`: 3 masters, 3
//!   replicas): rooms over every master in one slot each, sharded channels only, one order
//!   across instances, history and resume, a master killed under traffic.
//! - [`redis_cluster_faults`]: the sharded feed through node faults: a master that stops
//!   answering (half-open), a live room's slot moved, a manual failover, a restarted node.
//! - [`browser`]: the browser client at `/`, in headless Chromium (playwright-core, run by
//!   node): both transports, the fallback to SSE, a restart under the page, markup as text.
//! - [`socketio`]: the original tutorial's socket.io clients (the real `socket.io-client`,
//!   run by node) over polling, WebSocket and the upgrade; raw Engine.IO for what they never
//!   send; one room shared with `/ws` and SSE across two instances.
//! - [`bench`] (with the `bench` feature): `chat-bench`, the load generator, runs every
//!   scenario and reports what it measured truthfully.
//! - [`telemetry`]: spans exported to OTLP receivers the tests start (HTTP and gRPC), Cloud
//!   Logging JSON lines with the caller's trace, and `/metrics` without ids in labels.
//!
//! Nothing here sleeps to synchronise: servers are bound before they are used, and every
//! condition that needs time (a lease lapsing, Redis coming back) is polled under a deadline.

#[macro_use]
mod support;

mod abuse;
mod bad_input;
#[cfg(feature = "bench")]
mod bench;
mod browser;
mod cluster;
mod concurrency;
mod durability;
mod edits;
mod ephemeral;
mod faults;
mod gaps;
mod hardening;
mod jwt;
mod moderation;
mod readme;
mod realtime;
mod redis_cluster;
mod redis_cluster_faults;
mod rest;
mod server_api;
mod session;
mod socketio;
mod telemetry;
mod tickets;
