//! The Redis feed: one pub/sub connection per instance, subscribed to the channels of the
//! rooms that have connections here, delivering their events to the hub. On a cluster the
//! feed is `sharded_feed`'s instead; both take the same commands.
//!
//! Pub/sub is at-most-once: whatever is published while the connection is down is lost. So on
//! every (re)connection the feed resubscribes to every wanted channel and then tells the hub to
//! resync, and the hub reads what it missed from the log. A connection that stops answering
//! pings is treated as down. Every failure (a connect, a SUBSCRIBE, a lost connection) is
//! followed by a growing pause before the next connection, during which subscriptions are
//! answered at once as not live.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::keys::{channel_of, room_of_channel};
use super::replies::event_kind;
use crate::backoff::Backoff;
use crate::config::RedisTarget;
use crate::domain::{Ephemeral, EphemeralKind, RoomEvent, RoomId};
use crate::store::{Feed, FeedItem, FeedSink, StoreError, StoreFuture};

/// How often the idle pub/sub connection is pinged to find out it is gone.
pub(super) const PING_EVERY: Duration = Duration::from_secs(5);
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The Redis [`Feed`]: a handle on the pub/sub task that [`RedisFeed::start`] spawns.
pub struct RedisFeed {
    target: RedisTarget,
    timeout: Duration,
    commands: mpsc::UnboundedSender<Command>,
    /// Taken by `start`.
    inbox: Mutex<Option<mpsc::UnboundedReceiver<Command>>>,
}

impl RedisFeed {
    /// A feed on `target` whose commands give up after `timeout`. Nothing connects until
    /// [`RedisFeed::start`].
    pub fn new(target: RedisTarget, timeout: Duration) -> Self {
        let (commands, inbox) = mpsc::unbounded_channel();
        Self {
            target,
            timeout,
            commands,
            inbox: Mutex::new(Some(inbox)),
        }
    }

    /// Starts delivering subscribed rooms' events to `sink`: the pub/sub task, owned by
    /// `tasks` and stopped by `stopping`. Only the first call starts anything.
    pub fn start(&self, sink: Arc<dyn FeedSink>, tasks: &TaskTracker, stopping: CancellationToken) {
        let inbox = self
            .inbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let Some(inbox) = inbox else {
            return;
        };
        match &self.target {
            RedisTarget::Single(client) => {
                tasks.spawn(run(*client.clone(), inbox, sink, stopping, self.timeout));
            }
            RedisTarget::Cluster(seeds) => {
                tasks.spawn(super::sharded_feed::run(
                    seeds.clone(),
                    inbox,
                    sink,
                    stopping,
                    self.timeout,
                ));
            }
        }
    }
}

impl Feed for RedisFeed {
    fn subscribe<'a>(&'a self, room: &'a RoomId) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let (done, live) = oneshot::channel();
            self.commands
                .send(Command::Subscribe {
                    channel: channel_of(room),
                    done,
                })
                .map_err(|_| StoreError::Unavailable)?;
            match live.await {
                Ok(true) => Ok(()),
                _ => Err(StoreError::Unavailable),
            }
        })
    }

    fn unsubscribe(&self, room: &RoomId) {
        // Fails only once the feed has stopped, when there is nothing left to unsubscribe.
        let _feed_stopped = self.commands.send(Command::Unsubscribe(channel_of(room)));
    }
}

pub(super) enum Command {
    Subscribe {
        channel: String,
        /// Answers whether the subscription is live now.
        done: oneshot::Sender<bool>,
    },
    Unsubscribe(String),
}

/// One event as the scripts publish it: as stored (see prelude.lua's `publish_appended`).
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
    #[serde(default)]
    i: Option<String>,
}

/// One ephemeral event as the scripts publish it (ephemeral.lua's `tell`).
#[derive(serde::Deserialize)]
struct Told {
    k: String,
    u: String,
    #[serde(default)]
    o: Option<bool>,
}

/// What marks a message of ephemeral events (never a JSON event, which starts with `{` or
/// `[`): they share the room's channel with its logged events, so no other subscription is
/// needed, and this is how the feed tells them apart.
const EPHEMERAL_PREFIX: &str = "ephemeral:";

/// What one pub/sub message carries, in order: a script publishes the one event it appended
/// as a JSON object, several (a run of posts) as an array, and the ephemeral events it
/// decided on as an array after [`EPHEMERAL_PREFIX`]. `None` when malformed.
pub(super) fn parse_message(channel: &str, payload: &str) -> Option<Vec<FeedItem>> {
    let room = room_of_channel(channel)?;
    if let Some(told) = payload.strip_prefix(EPHEMERAL_PREFIX) {
        let told: Vec<Told> = serde_json::from_str(told).ok()?;
        return told
            .into_iter()
            .map(|told| {
                let kind = match (told.k.as_str(), told.o) {
                    ("presence", Some(online)) => EphemeralKind::Presence {
                        username: told.u,
                        online,
                    },
                    ("typing", None) => EphemeralKind::Typing { username: told.u },
                    _ => return None,
                };
                Some(FeedItem::Ephemeral(Ephemeral {
                    room: room.clone(),
                    kind,
                }))
            })
            .collect();
    }
    let published: Vec<Published> = if payload.trim_start().starts_with('[') {
        serde_json::from_str(payload).ok()?
    } else {
        vec![serde_json::from_str(payload).ok()?]
    };
    published
        .into_iter()
        .map(|published| {
            let kind = event_kind(
                Some(&published.t),
                Some(published.u),
                published.m,
                published.r.as_deref(),
                published.i.as_deref(),
            )
            .ok()?;
            Some(FeedItem::Event(RoomEvent {
                id: published.id.parse().ok()?,
                prev: published.p.parse().ok()?,
                room: room.clone(),
                kind,
            }))
        })
        .collect()
}

/// Hands what one pub/sub message carries to the hub, in order (the plain and the sharded
/// feed alike).
pub(super) fn deliver_message(channel: &str, payload: Option<&str>, sink: &dyn FeedSink) {
    match payload.and_then(|payload| parse_message(channel, payload)) {
        Some(items) => {
            for item in items {
                sink.deliver(item);
            }
        }
        None => tracing::warn!("ignored a malformed pub/sub message"),
    }
}

async fn run(
    client: redis::Client,
    mut commands: mpsc::UnboundedReceiver<Command>,
    sink: Arc<dyn FeedSink>,
    stopping: CancellationToken,
    timeout: Duration,
) {
    let mut wanted: HashSet<String> = HashSet::new();
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    let mut first_attempt = true;
    loop {
        if !std::mem::take(&mut first_attempt)
            && !pause(&mut commands, &mut wanted, backoff.next_delay(), &stopping).await
        {
            return;
        }
        let connected = tokio::select! {
            () = stopping.cancelled() => return,
            connected = tokio::time::timeout(timeout, client.get_async_pubsub()) => connected,
        };
        let Ok(Ok(pubsub)) = connected else {
            continue;
        };
        let (mut control, mut messages) = pubsub.split();
        if !wanted.is_empty() {
            let channels: Vec<&String> = wanted.iter().collect();
            if !matches!(
                tokio::time::timeout(timeout, control.subscribe(channels)).await,
                Ok(Ok(()))
            ) {
                tracing::warn!("redis pub/sub subscribe failed; reconnecting");
                continue;
            }
        }
        backoff.reset();
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
                        let payload = message.get_payload::<String>().ok();
                        deliver_message(&channel, payload.as_deref(), sink.as_ref());
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

/// Waits out a pause between connections while down: subscriptions are answered at once as
/// not live (their rooms retry), and what is wanted is remembered. False when it is time to
/// stop.
pub(super) async fn pause(
    commands: &mut mpsc::UnboundedReceiver<Command>,
    wanted: &mut HashSet<String>,
    delay: Duration,
    stopping: &CancellationToken,
) -> bool {
    let pause = tokio::time::sleep(delay);
    tokio::pin!(pause);
    loop {
        tokio::select! {
            () = stopping.cancelled() => return false,
            () = &mut pause => return true,
            command = commands.recv() => match command {
                None => return false,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EventId, EventKind};

    /// The logged events of a parsed message; panics on anything else.
    fn logged(items: Option<Vec<FeedItem>>) -> Vec<RoomEvent> {
        items
            .expect("a well-formed message")
            .into_iter()
            .map(|item| match item {
                FeedItem::Event(event) => event,
                other => panic!("expected a logged event, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn published_events_parse() {
        let events = logged(parse_message(
            "room:{lobby}",
            r#"{"id":"5-1","p":"5-0","t":"create:chat:success","u":"alice","m":"hi"}"#,
        ));
        let [event] = &events[..] else {
            panic!("one event: {events:?}")
        };
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
        let run = logged(parse_message(
            "room:{lobby}",
            r#"[{"id":"5-1","p":"5-0","t":"create:chat:success","u":"a","m":"x"},
                {"id":"5-2","p":"5-1","t":"create:chat:success","u":"a","m":"y"}]"#,
        ));
        let ids: Vec<EventId> = run.iter().map(|event| event.id).collect();
        assert_eq!(ids, [EventId::new(5, 1), EventId::new(5, 2)]);
        assert!(
            parse_message("room:{lobby}", r#"[{"id":"5-1"}]"#).is_none(),
            "one malformed event fails the message"
        );
        let revised = logged(parse_message(
            "room:{lobby}",
            r#"[{"id":"6-0","p":"5-2","t":"update:chat:success","u":"a","m":"z","i":"5-1"},
                {"id":"6-1","p":"6-0","t":"delete:chat:success","u":"a","i":"5-1"}]"#,
        ));
        let kinds: Vec<&EventKind> = revised.iter().map(|event| &event.kind).collect();
        assert_eq!(
            kinds,
            [
                &EventKind::ChatEdited {
                    target: EventId::new(5, 1),
                    username: "a".into(),
                    message: "z".into()
                },
                &EventKind::ChatDeleted {
                    target: EventId::new(5, 1),
                    username: "a".into()
                },
            ]
        );
        assert!(
            parse_message(
                "room:{lobby}",
                r#"{"id":"6-1","p":"6-0","t":"delete:chat:success","u":"a"}"#
            )
            .is_none(),
            "a deletion names its message"
        );
    }

    #[test]
    fn ephemeral_events_parse_apart_from_logged_ones() {
        let items = parse_message(
            "room:{lobby}",
            r#"ephemeral:[{"k":"presence","u":"alice","o":true},{"k":"typing","u":"bob"}]"#,
        )
        .expect("a well-formed message");
        let room = RoomId::parse("lobby").unwrap();
        assert_eq!(
            items,
            [
                FeedItem::Ephemeral(Ephemeral {
                    room: room.clone(),
                    kind: EphemeralKind::Presence {
                        username: "alice".into(),
                        online: true
                    }
                }),
                FeedItem::Ephemeral(Ephemeral {
                    room,
                    kind: EphemeralKind::Typing {
                        username: "bob".into()
                    }
                }),
            ]
        );
        for malformed in [
            r#"ephemeral:[{"k":"presence","u":"alice"}]"#,
            r#"ephemeral:[{"k":"typing","u":"bob","o":true}]"#,
            r#"ephemeral:[{"k":"shouting","u":"bob"}]"#,
            r#"ephemeral:{"k":"typing","u":"bob"}"#,
        ] {
            assert!(
                parse_message("room:{lobby}", malformed).is_none(),
                "{malformed}"
            );
        }
    }
}
