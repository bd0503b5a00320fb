//! `App`: the whole server built from a [`Config`] on a bound listener, and run until a
//! shutdown signal. Tests build it on port 0 in-process; `main.rs` on `$HOST:$PORT`.
//!
//! Every background task (the lease sweeper) is owned here: it is started by
//! [`App::run_until_stopped`] and cancelled when that returns.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::http::{AppState, router};
use crate::rooms::Rooms;
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;
use crate::store::{Store, StoreSettings};
use crate::telemetry;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("could not read the listener's address: {0}")]
    Listener(#[from] std::io::Error),
    #[error("REDIS_URL is not a usable Redis URL")]
    RedisUrl,
}

pub struct App {
    listener: TcpListener,
    state: AppState,
    sweep_interval: Duration,
}

impl App {
    pub async fn build(config: Config, listener: TcpListener) -> Result<Self, BuildError> {
        let settings = StoreSettings {
            history_limit: config.history_limit,
            member_ttl_ms: config.member_ttl_secs.saturating_mul(1000),
            room_ttl_secs: config.room_ttl_secs,
            idempotency_ttl_secs: config.idempotency_ttl_secs,
        };
        let store: Arc<dyn Store> = match &config.redis_url {
            Some(url) => {
                let client = redis::Client::open(url.expose()).map_err(|_| BuildError::RedisUrl)?;
                tracing::info!("store: Redis (REDIS_URL is set)");
                Arc::new(
                    RedisStore::new(client, settings, config.redis_timeout())
                        .map_err(|_| BuildError::RedisUrl)?,
                )
            }
            None => {
                tracing::warn!(
                    "store: in-memory (REDIS_URL is unset): one instance only, nothing survives a restart"
                );
                Arc::new(MemoryStore::new(settings))
            }
        };
        let state = AppState {
            rooms: Rooms::new(store, config.max_message_bytes),
            metrics: telemetry::metrics_handle(),
        };
        // A quarter of the lease, so a lapsed member goes within 25% of MEMBER_TTL_SECS.
        let sweep_interval = Duration::from_millis((settings.member_ttl_ms / 4).clamp(50, 1000));
        Ok(Self {
            listener,
            state,
            sweep_interval,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets requests in flight
    /// finish, and stops the background tasks.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let stopping = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(sweep_leases(
            self.state.rooms.clone(),
            self.sweep_interval,
            stopping.clone(),
        ));
        let app = router(self.state);
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        stopping.cancel();
        tasks.close();
        tasks.wait().await;
        served
    }
}

/// Times out members whose lease lapsed. Every instance runs one; the store makes concurrent
/// sweeps safe, and a dead instance's members are swept by the others.
async fn sweep_leases(rooms: Rooms, every: Duration, stopping: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match rooms.store().sweep().await {
            Ok(0) => {}
            Ok(timed_out) => tracing::info!(timed_out, "members timed out"),
            // The store logged the cause; the next tick tries again.
            Err(_) => {}
        }
    }
}
