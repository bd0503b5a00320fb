//! `App`: the whole server built from a [`Config`] on a bound listener, and run until a
//! shutdown signal. Tests build it on port 0 in-process; `main.rs` on `$HOST:$PORT`.
//!
//! Every background task (the feed, presence refresh, the lease sweeper, WebSocket
//! connections) is owned by one tracker and stopped by one cancellation token. Shutdown:
//! stop accepting, cancel (streams close with 1012 / end), let requests in flight finish, and
//! give up after `SHUTDOWN_GRACE_SECS` whatever is left.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::http::serve::{ServeSettings, serve};
use crate::http::{
    AppState, HttpSettings, Origins, Realtime, StreamSettings, metrics_router, router,
};
use crate::hub::Hub;
use crate::identity::Identity;
use crate::limits::Limits;
use crate::presence::Presence;
use crate::room_secrets::SecretHasher;
use crate::rooms::Rooms;
use crate::session;
use crate::store::memory::{LocalFeed, MemoryStore};
use crate::store::redis::{RedisFeed, RedisStore};
use crate::store::traced::{TracedFeed, TracedStore};
use crate::store::{Feed, FeedSink, Store, StoreSettings};
use crate::telemetry;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("REDIS_URL is not a usable Redis URL")]
    RedisUrl,
    #[error("cannot listen on METRICS_PORT: {0}")]
    MetricsPort(std::io::Error),
    #[error("cannot build the HTTP client for AUTH_JWKS_URL")]
    JwksClient,
}

pub struct App {
    listener: TcpListener,
    /// `METRICS_PORT`'s listener, serving `/metrics` alone.
    metrics_listener: Option<TcpListener>,
    state: AppState,
    stopping: CancellationToken,
    tasks: TaskTracker,
    grace: Duration,
    serve_settings: ServeSettings,
    /// Stops the background tasks if the app is dropped without being run.
    _stop_on_drop: DropGuard,
}

impl App {
    pub async fn build(config: Config, listener: TcpListener) -> Result<Self, BuildError> {
        // Before any TLS client (rediss://, the JWKS client) is made.
        crate::tls::install_crypto_provider();
        let metrics_listener = match config.listen.metrics_port {
            Some(port) => Some(
                TcpListener::bind(SocketAddr::new(config.listen.host, port.get()))
                    .await
                    .map_err(BuildError::MetricsPort)?,
            ),
            None => None,
        };
        let presence_refresh = config.rooms.presence_refresh();
        let settings = StoreSettings {
            history_limit: config.rooms.history_limit.get(),
            member_ttl_ms: config.rooms.member_ttl_secs.get().saturating_mul(1000),
            room_ttl_secs: config.rooms.room_ttl_secs,
            idempotency_ttl_secs: config.rooms.idempotency_ttl_secs.get(),
            // Three refreshes may be missed before a member shows offline.
            online_ttl_ms: u64::try_from(presence_refresh.as_millis() * 3).unwrap_or(u64::MAX),
            max_members_per_room: config.rooms.max_members_per_room.get(),
        };
        let stopping = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (store, feed, kind): (Arc<dyn Store>, StoreFeed, _) = match config.redis.target() {
            Some(target) => {
                let target = target.map_err(|_| BuildError::RedisUrl)?;
                if config.redis.redis_cluster {
                    tracing::info!(
                        "store: Redis Cluster (REDIS_URL lists seeds, REDIS_CLUSTER=true)"
                    );
                } else {
                    tracing::info!("store: Redis (REDIS_URL is set)");
                }
                let feed = Arc::new(RedisFeed::new(target.clone(), config.redis.timeout()));
                let store = RedisStore::new(
                    target,
                    settings,
                    config.redis.timeout(),
                    config.redis.durability(),
                )
                .map_err(|_| BuildError::RedisUrl)?;
                (Arc::new(store), StoreFeed::Redis(feed), "redis")
            }
            None => {
                tracing::warn!(
                    "store: in-memory (REDIS_URL is unset): one instance only, nothing survives a restart"
                );
                let feed = Arc::new(LocalFeed::new());
                let store = MemoryStore::new(settings, feed.clone());
                (Arc::new(store), StoreFeed::Local(feed), "memory")
            }
        };
        // Every caller (requests, the hub, presence, the sweeper) goes through the spans.
        let store: Arc<dyn Store> = Arc::new(TracedStore::new(store, kind));
        let hub = Hub::new(
            store.clone(),
            Arc::new(TracedFeed::new(feed.as_feed(), kind)),
            Duration::from_millis(config.streams.fanout_coalesce_ms.get()),
            tasks.clone(),
            stopping.clone(),
        );
        feed.start(hub.sink(), &tasks, stopping.clone());
        let (presence, refresher) =
            Presence::new(store.clone(), presence_refresh, stopping.clone());
        tasks.spawn(refresher);
        let limits = Arc::new(Limits::new(&config));
        let origins = Origins::new(
            config.hardening.origins(),
            config.effective_trusted_proxy_hops(),
        );
        if config.limits.rate_limits == crate::config::Switch::Off {
            tracing::warn!("RATE_LIMITS=off: no rate limits apply");
        }
        let identity =
            Identity::from_settings(config.auth.jwt()).map_err(|_| BuildError::JwksClient)?;
        if identity.required() {
            tracing::info!("identity: joins need a JWT (AUTH_JWKS_URL is set)");
        }
        let rooms = Rooms::new(
            store,
            // At most 65536 (its type's bound), so it fits any usize.
            config.rooms.max_message_bytes.get() as usize,
            limits.clone(),
            SecretHasher::new(config.hardening.effective_secret_hash_concurrency()),
            identity,
        );
        // A quarter of the lease, so a lapsed member goes within 25% of MEMBER_TTL_SECS.
        let sweep_interval = Duration::from_millis((settings.member_ttl_ms / 4).clamp(50, 1000));
        tasks.spawn(sweep_leases(
            rooms.clone(),
            sweep_interval,
            stopping.clone(),
        ));
        tasks.spawn(forget_idle_clients(limits.clone(), stopping.clone()));
        tasks.spawn(telemetry::metrics_upkeep(
            telemetry::metrics_handle(),
            stopping.clone(),
        ));
        let sessions = Arc::new(session::Core {
            rooms: rooms.clone(),
            hub,
            presence,
            max_rooms: limits.max_rooms_per_connection,
            queue_len: config.streams.client_queue_len.get(),
            stopping: stopping.clone(),
        });
        let state = AppState {
            limits,
            origins: Arc::new(origins),
            rooms,
            metrics: telemetry::metrics_handle(),
            realtime: Arc::new(Realtime {
                sessions,
                settings: StreamSettings {
                    ping_every: Duration::from_secs(config.streams.ws_ping_secs.get()),
                    max_lifetime: Duration::from_secs(config.streams.ws_max_lifetime_secs.get()),
                    sse_keepalive: Duration::from_secs(config.streams.sse_keepalive_secs.get()),
                    sse_ticket_ttl: Duration::from_secs(config.streams.sse_ticket_ttl_secs.get()),
                },
                stopping: stopping.clone(),
                tasks: tasks.clone(),
            }),
            http: HttpSettings {
                request_body_timeout: Duration::from_secs(
                    config.hardening.request_body_timeout_secs.get(),
                ),
                metrics_on_main_port: metrics_listener.is_none(),
            },
            server_api_key: config.server_api.server_api_key.clone().map(Arc::new),
        };
        Ok(Self {
            listener,
            metrics_listener,
            state,
            _stop_on_drop: stopping.clone().drop_guard(),
            stopping,
            tasks,
            grace: Duration::from_secs(config.listen.shutdown_grace_secs),
            serve_settings: ServeSettings {
                max_connections: config.hardening.max_connections.get(),
                header_read_timeout: Duration::from_secs(
                    config.hardening.header_read_timeout_secs.get(),
                ),
                write_timeout: Duration::from_secs(config.hardening.write_timeout_secs.get()),
            },
        })
    }

    /// Whose names members join under (tests shorten its JWKS refetch interval).
    pub fn identity(&self) -> &Identity {
        self.state.rooms.identity()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where `/metrics` is served alone, when `METRICS_PORT` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then drains within the grace period.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let stopping = self.stopping.clone();
        let limits = self.state.limits.clone();
        if let Some(listener) = self.metrics_listener {
            let metrics = axum::serve(listener, metrics_router(self.state.clone()))
                .with_graceful_shutdown(stopping.clone().cancelled_owned());
            self.tasks.spawn(async move {
                if let Err(err) = metrics.await {
                    tracing::error!(error = %err, "the metrics listener failed");
                }
            });
        }
        let app = router(self.state);
        let serve = serve(
            self.listener,
            app,
            limits,
            self.serve_settings,
            stopping.clone(),
        );
        tokio::pin!(serve);
        let served = tokio::select! {
            served = &mut serve => served,
            () = shutdown => {
                // Streams close (1012 / end of stream), the listener stops accepting.
                stopping.cancel();
                let drain = async {
                    let served = (&mut serve).await;
                    self.tasks.close();
                    self.tasks.wait().await;
                    served
                };
                match tokio::time::timeout(self.grace, drain).await {
                    Ok(served) => served,
                    Err(_) => {
                        tracing::warn!("grace period over; exiting with connections still open");
                        Ok(())
                    }
                }
            }
        };
        stopping.cancel();
        self.tasks.close();
        served
    }
}

/// The feed that goes with the store, until it is started with the hub's sink.
enum StoreFeed {
    Redis(Arc<RedisFeed>),
    Local(Arc<LocalFeed>),
}

impl StoreFeed {
    fn as_feed(&self) -> Arc<dyn Feed> {
        match self {
            Self::Redis(feed) => feed.clone(),
            Self::Local(feed) => feed.clone(),
        }
    }

    fn start(&self, sink: Arc<dyn FeedSink>, tasks: &TaskTracker, stopping: CancellationToken) {
        match self {
            Self::Redis(feed) => feed.start(sink, tasks, stopping),
            Self::Local(feed) => feed.start(sink),
        }
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

/// Rate-limit buckets of clients not seen for a while are dropped once a minute.
async fn forget_idle_clients(limits: Arc<Limits>, stopping: CancellationToken) {
    let mut ticks = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            _ = ticks.tick() => limits.forget_idle(),
        }
    }
}
