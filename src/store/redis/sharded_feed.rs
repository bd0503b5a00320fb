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

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::feed::{Command, FIRST_BACKOFF, MAX_BACKOFF, deliver_message, pause};
use super::keys::room_of_channel;
use crate::backoff::Backoff;
use crate::config::ClusterSeeds;
use crate::store::{FeedItem, FeedSink};

/// How often subscriptions that are not live are tried again.
const REPAIR_EVERY: Duration = Duration::from_millis(250);

pub(super) async fn run(
    seeds: ClusterSeeds,
    mut commands: mpsc::UnboundedReceiver<Command>,
    sink: Arc<dyn FeedSink>,
    stopping: CancellationToken,
    timeout: Duration,
) {
    let (push_sender, mut pushes) = mpsc::unbounded_channel::<PushInfo>();
    let client = match seeds
        .builder()
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(push_sender)
        .connection_timeout(timeout)
        .response_timeout(timeout)
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
    let connection = loop {
        let connected = tokio::select! {
            () = stopping.cancelled() => return,
            connected = tokio::time::timeout(timeout, client.get_async_connection()) => connected,
        };
        if let Ok(Ok(connection)) = connected {
            break connection;
        }
        tracing::warn!("redis cluster feed cannot connect; retrying");
        if !pause(&mut commands, &mut wanted, backoff.next_delay(), &stopping).await {
            return;
        }
    };
    metrics::gauge!("chat_feed_connected").set(1.0);
    // Wanted while the connection was being made: subscribed by the first repair.
    let mut lost: HashSet<String> = wanted.clone();
    let mut repair = tokio::time::interval(REPAIR_EVERY);
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            push = pushes.recv() => match push {
                Some(push) => on_push(push, &wanted, &mut lost, sink.as_ref()),
                None => return,
            },
            command = commands.recv() => match command {
                None => return,
                Some(Command::Subscribe { channel, done }) => {
                    wanted.insert(channel.clone());
                    let live = subscribe(&connection, &channel, timeout).await;
                    if !live {
                        lost.insert(channel);
                    }
                    let _receiver_may_be_gone = done.send(live);
                }
                Some(Command::Unsubscribe(channel)) => {
                    wanted.remove(&channel);
                    lost.remove(&channel);
                    let mut connection = connection.clone();
                    if !matches!(
                        tokio::time::timeout(timeout, connection.sunsubscribe(&channel)).await,
                        Ok(Ok(()))
                    ) {
                        // Its events keep coming until the shard forgets it; the hub has no
                        // room to give them to.
                        tracing::warn!("redis SUNSUBSCRIBE failed");
                    }
                }
            },
            _ = repair.tick(), if !lost.is_empty() => {
                let attempts = lost.iter().map(|channel| {
                    let connection = &connection;
                    async move { (channel.clone(), subscribe(connection, channel, timeout).await) }
                });
                for (channel, live) in futures_util::future::join_all(attempts).await {
                    if live {
                        lost.remove(&channel);
                    }
                }
            }
        }
    }
}

/// Subscribes one channel under the timeout; whether it is live now. Its confirmation push
/// follows (and resyncs the room).
async fn subscribe(connection: &ClusterConnection, channel: &str, timeout: Duration) -> bool {
    let mut connection = connection.clone();
    matches!(
        tokio::time::timeout(timeout, connection.ssubscribe(channel)).await,
        Ok(Ok(()))
    )
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
