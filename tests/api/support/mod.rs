//! Test support: a real Redis per test, the app in-process (or as a real process), HTTP
//! helpers, node scripts (the browser scenarios, socket.io clients), unique names and bounded
//! waits.
//!
//! A conformance test is written once as `async fn name(backend: Backend) { … }` inside
//! [`conformance!`], which expands it into `name::memory`, `name::redis` and `name::cluster`;
//! the Redis variant starts its own `redis-server` (about 10 ms), so those tests never share a
//! store and can run in parallel. The cluster variants share one Redis Cluster per test run
//! (`SharedCluster`; starting one takes seconds), each on rooms of its own.

mod app;
pub mod browser;
mod checks;
pub mod jwks;
pub mod node;
pub mod process;
pub mod redis_cluster;
mod redis_server;
pub mod socketio;
pub mod stream;

pub use app::{Backend, Joined, Message, Reply, TestApp};
pub use checks::{assert_rfc3339_millis_utc, event_id, eventually, metric_sample, unique_room};
pub use redis_server::RedisServer;

/// Writes each `async fn name(backend: Backend) { … }` once and runs it on every store, as
/// the tests `name::memory`, `name::redis` and `name::cluster`.
macro_rules! conformance {
    ($( $(#[$attr:meta])* async fn $name:ident($backend:ident: Backend) $body:block )*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                $(#[$attr])*
                async fn run($backend: $crate::support::Backend<'_>) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    run($crate::support::Backend::Memory).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    let server = $crate::support::RedisServer::start();
                    run($crate::support::Backend::Redis(&server)).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn cluster() {
                    let cluster = $crate::support::redis_cluster::SharedCluster::get();
                    run($crate::support::Backend::Cluster(cluster)).await;
                }
            }
        )*
    };
}
