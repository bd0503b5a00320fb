//! The Redis feed: one pub/sub connection per instance, subscribed to the channels of the
//! rooms that have connections here, delivering their events to the hub.
//!
//! Pub/sub is at-most-once: whatever is published while the connection is down is lost. So on
//! every (re)connection the feed resubscribes to every wanted channel and then tells the hub to
//! resync, and the hub reads what it missed from the log. A connection that stops answering
//! pings is treated as down.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::event_kind;
use crate::domain::{EventId, RoomEvent, RoomId};
use crate::store::{FeedItem, FeedSink};

/// How often the idle pub/sub connection is pinged to find out it is gone.
const PING_EVERY: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub(super) enum Command {
    Subscribe {
        channel: String,
        /// Answers whether the subscription is live now.
        done: oneshot::Sender<bool>,
    },
    Unsubscribe(String),
}

/// What `post.lua` and the other scripts publish: the event as stored.
#[derive(serde::Deserialize)]
struct Published {
    id: String,
    p: String,
    t: String,
    u: String,
    #[serde(default)]
    m: Option<String>,
    #[serde(default)]
    r: Option<String>,
}

pub(super) fn channel_of(room: &RoomId) -> String {
    format!("room:{{{room}}}")
}

fn parse_message(channel: &str, payload: &str) -> Option<RoomEvent> {
    let room = channel.strip_prefix("room:{")?.strip_suffix('}')?;
    let room = RoomId::parse(room).ok()?;
    let published: Published = serde_json::from_str(payload).ok()?;
    let id: EventId = published.id.parse().ok()?;
    let prev: EventId = published.p.parse().ok()?;
    let kind = event_kind(
        Some(&published.t),
        Some(published.u),
        published.m,
        published.r.as_deref(),
    )
    .ok()?;
    Some(RoomEvent {
        id,
        prev,
        room,
        kind,
    })
}

pub(super) async fn run(
    client: redis::Client,
    mut commands: mpsc::UnboundedReceiver<Command>,
    sink: Arc<dyn FeedSink>,
    stopping: CancellationToken,
    timeout: Duration,
) {
    let mut wanted: HashSet<String> = HashSet::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = tokio::select! {
            () = stopping.cancelled() => return,
            connected = tokio::time::timeout(timeout, client.get_async_pubsub()) => connected,
        };
        let Ok(Ok(pubsub)) = connected else {
            // Down: answer subscriptions at once (their rooms retry), remember what is wanted.
            let pause = tokio::time::sleep(backoff);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    () = stopping.cancelled() => return,
                    () = &mut pause => break,
                    command = commands.recv() => match command {
                        None => return,
                        Some(Command::Subscribe { channel, done }) => {
                            wanted.insert(channel);
                            let _receiver_may_be_gone = done.send(false);
                        }
                        Some(Command::Unsubscribe(channel)) => {
                            wanted.remove(&channel);
                        }
                    },
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        };
        let (mut control, mut messages) = pubsub.split();
        if !wanted.is_empty() {
            let channels: Vec<&String> = wanted.iter().collect();
            if !matches!(
                tokio::time::timeout(timeout, control.subscribe(channels)).await,
                Ok(Ok(()))
            ) {
                continue;
            }
        }
        backoff = Duration::from_millis(100);
        metrics::gauge!("chat_feed_connected").set(1.0);
        // Before any message of the new connection: everyone catches up from the log.
        sink.deliver(FeedItem::Resync);
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.reset();
        loop {
            tokio::select! {
                () = stopping.cancelled() => return,
                message = messages.next() => match message {
                    Some(message) => {
                        let channel = message.get_channel_name().to_owned();
                        match message.get_payload::<String>().ok().and_then(|payload| parse_message(&channel, &payload)) {
                            Some(event) => sink.deliver(FeedItem::Event(event)),
                            None => tracing::warn!("ignored a malformed pub/sub message"),
                        }
                    }
                    None => break,
                },
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Subscribe { channel, done }) => {
                        wanted.insert(channel.clone());
                        let live = matches!(
                            tokio::time::timeout(timeout, control.subscribe(&channel)).await,
                            Ok(Ok(()))
                        );
                        let _receiver_may_be_gone = done.send(live);
                        if !live {
                            break;
                        }
                    }
                    Some(Command::Unsubscribe(channel)) => {
                        wanted.remove(&channel);
                        if !matches!(
                            tokio::time::timeout(timeout, control.unsubscribe(&channel)).await,
                            Ok(Ok(()))
                        ) {
                            break;
                        }
                    }
                },
                _ = ping.tick() => {
                    // A subscribed RESP2 connection answers PING with `["pong", ""]`, not the
                    // `PONG` status of an ordinary one: any answer in time means alive.
                    if !matches!(
                        tokio::time::timeout(timeout, control.ping::<redis::Value>()).await,
                        Ok(Ok(_))
                    ) {
                        break;
                    }
                }
            }
        }
        metrics::gauge!("chat_feed_connected").set(0.0);
        metrics::counter!("chat_feed_reconnects_total").increment(1);
        tracing::warn!("redis pub/sub connection lost; reconnecting");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventKind;

    #[test]
    fn published_events_parse() {
        let event = parse_message(
            "room:{lobby}",
            r#"{"id":"5-1","p":"5-0","t":"create:chat:success","u":"alice","m":"hi"}"#,
        )
        .unwrap();
        assert_eq!(event.id, EventId::new(5, 1));
        assert_eq!(event.prev, EventId::new(5, 0));
        assert_eq!(event.room.as_str(), "lobby");
        assert_eq!(
            event.kind,
            EventKind::Chat {
                username: "alice".into(),
                message: "hi".into()
            }
        );
        assert!(parse_message("other", "{}").is_none());
    }
}
