//! The feed on a Redis Cluster: sharded pub/sub. The scripts `SPUBLISH` a room's events on its
//! channel, which lives on the shard owning the room's slot, and this instance `SSUBSCRIBE`s
//! only the rooms it has connections for, each on its shard, through one cluster connection
//! speaking RESP3 (its messages arrive as push messages).
//!
//! Sharded pub/sub is at-most-once per shard, and shards fail one at a time: a room's
//! subscription may lapse while the others carry on. redis-rs resubscribes after a reconnect
//! or a slot-map change, and a shard that gives a slot away (a failover, a slot move) sends
//! `SUNSUBSCRIBE` for its channels. So every confirmation of a wanted room's subscription
//! (`ssubscribe` push) tells the hub to resync that room from the log — the subscription is
//! live again, and whatever was published before it is in the log — and every subscription
//! the server drops, and every one on a lost connection, is subscribed again until that
//! succeeds. A resubscription that was not needed costs a confirmation and one log read.
//!
//! A node's connection can also go half-open (the node stopped or vanished without a reset):
//! redis-rs then only times its commands out, reconnects nothing and keeps its slot map, so
//! the subscriptions on that node stay silent and the rooms it gave away are never found
//! again. Every `PING_EVERY` the feed pings every master; when one does not answer within the
//! timeout, a new cluster connection (fresh nodes, fresh slot map) replaces the whole old one
//! (redis-rs cannot be told to reconnect one node) and every wanted room is subscribed and
//! resynced on it. So a stuck shard's rooms get their events at most about `PING_EVERY` plus
//! a few timeouts late (the log fills in what was published meanwhile), and while the shard
//! stays stuck the connection is replaced again each `PING_EVERY`, each time costing one log
//! read per room on the other shards. Those rooms lose no time meanwhile: the replaced
//! connection's messages are still delivered until every room is live on the new one (or a
//! few timeouts have passed), and subscribing, unsubscribing and pinging all run under the
//! timeout beside the message loop.
//!
//! After a failover or a slot move redis-rs's slot map is stale until a command is
//! redirected, and the old master turned replica accepts `SSUBSCRIBE` (replicas serve
//! sharded pub/sub); in the failover test a message published just after the failover did
//! not reach a subscription made there. So a lost subscription is first looked up by a key
//! of its slot, whose `MOVED` makes redis-rs refresh its map, and then subscribed on the
//! slot's master.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::feed::{Command, FIRST_BACKOFF, MAX_BACKOFF, PING_EVERY, deliver_message, pause};
use super::keys::room_of_channel;
use crate::backoff::Backoff;
use crate::config::ClusterSeeds;
use crate::store::{FeedItem, FeedSink};

/// How often subscriptions that are not live are tried again.
const REPAIR_EVERY: Duration = Duration::from_millis(250);
/// Making a cluster connection may take this many timeouts: a seed that does not answer
/// holds its connection attempt (connect, then the first command) for up to two, and the
/// nodes of the slot map are connected after it.
const CONNECT_TIMEOUTS: u32 = 6;

/// One cluster connection and the push messages of its nodes. Each connection has its own
/// channel: once a connection is replaced, what its nodes still had to say is not read (the
/// new connection's confirmations resync every room instead).
struct Connected {
    connection: ClusterConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    /// Its push channel closed: nothing more to read there.
    ended: bool,
}

/// What a command sent beside the loop came to.
enum Outcome {
    Subscribed {
        channel: String,
        live: bool,
        /// The hub's question, when it asked.
        done: Option<oneshot::Sender<bool>>,
    },
    Unsubscribed,
}

pub(super) async fn run(
    seeds: ClusterSeeds,
    mut commands: mpsc::UnboundedReceiver<Command>,
    sink: Arc<dyn FeedSink>,
    stopping: CancellationToken,
    timeout: Duration,
) {
    let client = match seeds
        .builder()
        .use_protocol(redis::ProtocolVersion::RESP3)
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            // The seeds were checked when the configuration was read: not expected.
            tracing::error!(error = %err, "redis cluster feed cannot start");
            return;
        }
    };
    let mut wanted: HashSet<String> = HashSet::new();
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    let mut current = loop {
        let connected = tokio::select! {
            () = stopping.cancelled() => return,
            connected = connect(&client, timeout) => connected,
        };
        if let Some(connected) = connected {
            break connected;
        }
        tracing::warn!("redis cluster feed cannot connect; retrying");
        if !pause(&mut commands, &mut wanted, backoff.next_delay(), &stopping).await {
            return;
        }
    };
    metrics::gauge!("chat_feed_connected").set(1.0);
    // Wanted while the connection was being made: subscribed by the first repair.
    let mut lost: HashSet<String> = wanted.clone();
    let mut sent: FuturesUnordered<BoxFuture<'static, Outcome>> = FuturesUnordered::new();
    // Channels with a subscription under way, which a repair does not send again.
    let mut subscribing: HashSet<String> = HashSet::new();
    // A ping of every master, then a new connection if one did not answer.
    let mut probe: Option<BoxFuture<'static, Option<Connected>>> = None;
    // The connection replaced last, whose messages are still delivered until every wanted
    // room is live on the new one (or `retire_at`): the shards that work lose no time while
    // the new connection subscribes, which redis-rs holds up while it waits on a stuck node.
    let mut retiring: Option<Connected> = None;
    let retire_at = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(retire_at);
    let mut repair = tokio::time::interval(REPAIR_EVERY);
    repair.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ping.reset();
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            push = current.pushes.recv(), if !current.ended => match push {
                Some(push) => on_push(push, &wanted, &mut lost, sink.as_ref()),
                None => {
                    // Its nodes are gone with it (not expected while it is held): a new one.
                    current.ended = true;
                    let client = client.clone();
                    probe = Some(Box::pin(async move { connect(&client, timeout).await }));
                }
            },
            push = async {
                match retiring.as_mut() {
                    Some(old) => old.pushes.recv().await,
                    None => std::future::pending().await,
                }
            }, if retiring.is_some() => match push {
                // Only its messages: what it says of its subscriptions is past.
                Some(push) if push.kind == PushKind::SMessage => {
                    on_push(push, &wanted, &mut lost, sink.as_ref());
                }
                Some(_) => {}
                None => retiring = None,
            },
            () = &mut retire_at, if retiring.is_some() => retiring = None,
            command = commands.recv() => match command {
                None => return,
                Some(Command::Subscribe { channel, done }) => {
                    wanted.insert(channel.clone());
                    subscribing.insert(channel.clone());
                    sent.push(subscribe(&current.connection, channel, timeout, Some(done)));
                }
                Some(Command::Unsubscribe(channel)) => {
                    wanted.remove(&channel);
                    lost.remove(&channel);
                    sent.push(unsubscribe(&current.connection, channel, timeout));
                }
            },
            Some(outcome) = sent.next() => {
                if let Outcome::Subscribed { channel, live, done } = outcome {
                    subscribing.remove(&channel);
                    if let Some(done) = done {
                        let _receiver_may_be_gone = done.send(live);
                    }
                    if !wanted.contains(&channel) {
                        lost.remove(&channel);
                        if live {
                            // Unsubscribed while this was under way.
                            sent.push(unsubscribe(&current.connection, channel, timeout));
                        }
                    } else if live {
                        lost.remove(&channel);
                    } else {
                        lost.insert(channel);
                    }
                }
            },
            _ = repair.tick(), if !lost.is_empty() => {
                for channel in &lost {
                    if subscribing.insert(channel.clone()) {
                        sent.push(subscribe(&current.connection, channel.clone(), timeout, None));
                    }
                }
            },
            _ = ping.tick(), if probe.is_none() => {
                probe = Some(Box::pin(check(
                    client.clone(),
                    current.connection.clone(),
                    timeout,
                )));
            },
            replacement = async {
                match probe.as_mut() {
                    Some(probe) => probe.await,
                    None => std::future::pending().await,
                }
            }, if probe.is_some() => {
                probe = None;
                if let Some(replacement) = replacement {
                    retiring = Some(std::mem::replace(&mut current, replacement));
                    let retire_by = tokio::time::Instant::now() + timeout * CONNECT_TIMEOUTS;
                    retire_at.as_mut().reset(retire_by);
                    // What was under way went to the old connection: the hub's questions
                    // are answered by their senders' drop (its rooms retry), and every
                    // wanted room is subscribed on the new one and resynced.
                    sent = FuturesUnordered::new();
                    subscribing.clear();
                    lost = wanted.clone();
                    ping.reset();
                    metrics::counter!("chat_feed_reconnects_total").increment(1);
                }
            }
        }
        if lost.is_empty() && subscribing.is_empty() {
            retiring = None;
        }
    }
}

/// A new cluster connection with a push channel of its own; `None` if it could not be made in
/// time.
async fn connect(client: &ClusterClient, timeout: Duration) -> Option<Connected> {
    let (push_sender, pushes) = mpsc::unbounded_channel::<PushInfo>();
    let config = ClusterConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout)
        .set_push_sender(push_sender);
    match tokio::time::timeout(
        timeout * CONNECT_TIMEOUTS,
        client.get_async_connection_with_config(config),
    )
    .await
    {
        Ok(Ok(connection)) => Some(Connected {
            connection,
            pushes,
            ended: false,
        }),
        _ => None,
    }
}

/// Pings every master; if one does not answer in time, a new connection to replace this one
/// (`None` when all answered, or when no new connection could be made: the next ping tries
/// again).
async fn check(
    client: ClusterClient,
    mut connection: ClusterConnection,
    timeout: Duration,
) -> Option<Connected> {
    let every_master = RoutingInfo::MultiNode((
        MultipleNodeRoutingInfo::AllMasters,
        Some(ResponsePolicy::AllSucceeded),
    ));
    let answered = tokio::time::timeout(
        timeout,
        connection.route_command(redis::cmd("PING"), every_master),
    )
    .await;
    if matches!(answered, Ok(Ok(_))) {
        return None;
    }
    tracing::warn!("a redis cluster node does not answer; connecting to the cluster anew");
    let replacement = connect(&client, timeout).await;
    if replacement.is_none() {
        tracing::warn!("redis cluster feed cannot connect; keeping the old connection");
    }
    replacement
}

/// Subscribes one channel under the timeout: whether it is live now. Its confirmation push
/// follows (and resyncs the room).
///
/// A repair (`done` is `None`) first looks the channel's slot up by a key (see the module's
/// doc): a node that no longer owns it answers `MOVED`, and redis-rs refreshes its map.
fn subscribe(
    connection: &ClusterConnection,
    channel: String,
    timeout: Duration,
    done: Option<oneshot::Sender<bool>>,
) -> BoxFuture<'static, Outcome> {
    let mut connection = connection.clone();
    Box::pin(async move {
        let attempt = async {
            if done.is_none() {
                // The channel's name is a key of its slot (`room:{id}`); whether it exists
                // does not matter, only which node answers. (A one-key command: redis-rs
                // fans out `EXISTS`, and ignores a redirection of a fanned-out one.)
                let _: Value = redis::cmd("TYPE")
                    .arg(&channel)
                    .query_async(&mut connection)
                    .await?;
            }
            connection.ssubscribe(&channel).await
        };
        let live = matches!(tokio::time::timeout(timeout, attempt).await, Ok(Ok(())));
        Outcome::Subscribed {
            channel,
            live,
            done,
        }
    })
}

fn unsubscribe(
    connection: &ClusterConnection,
    channel: String,
    timeout: Duration,
) -> BoxFuture<'static, Outcome> {
    let mut connection = connection.clone();
    Box::pin(async move {
        if !matches!(
            tokio::time::timeout(timeout, connection.sunsubscribe(&channel)).await,
            Ok(Ok(()))
        ) {
            // Its events keep coming until the shard forgets it; the hub has no room to give
            // them to.
            tracing::warn!("redis SUNSUBSCRIBE failed");
        }
        Outcome::Unsubscribed
    })
}

fn on_push(
    push: PushInfo,
    wanted: &HashSet<String>,
    lost: &mut HashSet<String>,
    sink: &dyn FeedSink,
) {
    let mut data = push.data.into_iter();
    let channel = data.next().and_then(text);
    match (push.kind, channel) {
        (PushKind::SMessage, Some(channel)) => {
            let payload = data.next().and_then(text);
            deliver_message(&channel, payload.as_deref(), sink);
        }
        (PushKind::SSubscribe, Some(channel)) if wanted.contains(&channel) => {
            if let Some(room) = room_of_channel(&channel) {
                sink.deliver(FeedItem::ResyncRoom(room));
            }
        }
        (PushKind::SUnsubscribe, Some(channel)) if wanted.contains(&channel) => {
            // The shard gave the room's slot away (a failover, a slot move): subscribe again,
            // which finds the new owner.
            metrics::counter!("chat_feed_reconnects_total").increment(1);
            lost.insert(channel);
        }
        (PushKind::Disconnection, _) => {
            // Which rooms were on the lost node is not said: every room is subscribed again
            // (a no-op on the shards still there, but for one log read).
            metrics::counter!("chat_feed_reconnects_total").increment(1);
            tracing::warn!("a redis cluster node connection was lost; resubscribing");
            lost.extend(wanted.iter().cloned());
        }
        _ => {}
    }
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}
