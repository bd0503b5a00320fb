//! The store's command connection: a connection manager on one Redis, or a cluster
//! connection that sends each command to the shard owning its key's slot. Both reconnect by
//! themselves; the cluster one also follows MOVED/ASK redirections and refreshes its slot map
//! after a failover, so the store needs no restart either way.
//!
//! A cluster connection first needs a seed to answer with the slot map; until one does, each
//! command tries again (under the store's timeout) instead of failing the store for good.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::config::{ClusterSeeds, RedisTarget};

/// How many times the cluster connection retries a command after a redirection or a lost
/// node before it gives up (the store's timeout bounds the whole anyway).
const CLUSTER_RETRIES: u32 = 4;

#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    Cluster(LazyCluster),
}

impl Connection {
    /// A connection that connects on its first command, within `timeout`; a reply may take
    /// `response_timeout` (longer than `timeout` for a write that waits for replicas).
    pub(super) fn new(
        target: &RedisTarget,
        timeout: Duration,
        response_timeout: Duration,
    ) -> redis::RedisResult<Self> {
        Ok(match target {
            RedisTarget::Single(client) => {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(response_timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                Self::Single(ConnectionManager::new_lazy_with_config(
                    (**client).clone(),
                    config,
                )?)
            }
            RedisTarget::Cluster(seeds) => {
                Self::Cluster(LazyCluster::new(seeds, timeout, response_timeout)?)
            }
        })
    }
}

/// A cluster connection made on first use, and made again on a later command if the first
/// attempt found no seed answering.
#[derive(Clone)]
pub(super) struct LazyCluster {
    client: Arc<ClusterClient>,
    connection: Arc<tokio::sync::Mutex<Option<ClusterConnection>>>,
}

impl LazyCluster {
    fn new(
        seeds: &ClusterSeeds,
        timeout: Duration,
        response_timeout: Duration,
    ) -> redis::RedisResult<Self> {
        // The response timeout is also the bound of a command's retries together.
        let client = seeds
            .builder()
            .connection_timeout(timeout)
            .response_timeout(response_timeout)
            .retries(CLUSTER_RETRIES)
            .build()?;
        Ok(Self {
            client: Arc::new(client),
            connection: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    async fn get(&self) -> redis::RedisResult<ClusterConnection> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let connection = self.client.get_async_connection().await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }
}

impl Connection {
    /// PINGs the server; on a cluster, any one node (a plain PING would go to every node, and
    /// one shard down would make the whole store look down, not just its rooms).
    pub(super) async fn ping(&mut self) -> redis::RedisResult<String> {
        match self {
            Self::Single(connection) => redis::cmd("PING").query_async(connection).await,
            Self::Cluster(cluster) => {
                let mut connection = cluster.get().await?;
                let routing = redis::cluster_routing::RoutingInfo::SingleNode(
                    redis::cluster_routing::SingleNodeRoutingInfo::Random,
                );
                let pong = connection
                    .route_command(redis::cmd("PING"), routing)
                    .await?;
                redis::from_redis_value(pong).map_err(Into::into)
            }
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(cluster) => Box::pin(async move {
                let mut connection = cluster.get().await?;
                connection.req_packed_command(cmd).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(cluster) => Box::pin(async move {
                let mut connection = cluster.get().await?;
                connection
                    .req_packed_commands(pipeline, offset, count)
                    .await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(_) => 0,
        }
    }
}
