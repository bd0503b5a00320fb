//! The service on a real Redis Cluster (3 masters, 3 replicas; `REDIS_CLUSTER=true`): rooms
//! spread over every master while each room stays in one slot; room events go by sharded
//! pub/sub only; a shard that does not answer fails only its rooms; two instances deliver one
//! order to WebSocket and SSE clients; history and resume work; a room its shard lost and
//! someone created anew is not streamed to the old room's connections; a master killed under traffic
//! loses no acknowledged message and delivers each one once, in order; a replica promoted
//! without the newest events (it lagged) is no silent gap: the live connection that had them
//! is closed, a resume on any instance is told, and later ids stay greater. Each test starts
//! its own cluster (a few seconds) and checks several things on it. The lease index's buckets
//! replaced one global key on single Redis too: rooms an earlier version left in that key move
//! to their bucket.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cluster::{assert_strictly_increasing, chat_ids};
use crate::support::redis_cluster::RedisCluster;
use crate::support::stream::{SseClient, WsClient, WsEnd};
use crate::support::{Backend, Message, RedisServer, TestApp, event_id, eventually, unique_room};

/// Rooms created at most while looking for one on every master.
const MAX_ROOMS: usize = 60;

pub(crate) async fn app_on(cluster: &RedisCluster) -> TestApp {
    app_with(cluster, &[]).await
}

pub(crate) async fn app_with(cluster: &RedisCluster, extra: &[(&str, &str)]) -> TestApp {
    let vars = cluster.app_vars();
    let mut vars: Vec<(&str, &str)> = vars
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    vars.extend_from_slice(extra);
    TestApp::spawn(Backend::Memory, &vars).await
}

/// The keys on the node at `port` matching `pattern`.
fn keys(cluster: &RedisCluster, port: u16, pattern: &str) -> Vec<String> {
    cluster.command(port, &["KEYS", pattern])
}

/// Which master holds each of `rooms`' keys: room → the masters holding any of its keys.
pub(crate) fn holders(cluster: &RedisCluster, rooms: &[String]) -> HashMap<String, BTreeSet<u16>> {
    let mut held: HashMap<String, BTreeSet<u16>> = HashMap::new();
    for port in cluster.masters() {
        for room in rooms {
            if !keys(cluster, port, &format!("room:{{{room}}}:*")).is_empty() {
                held.entry(room.clone()).or_default().insert(port);
            }
        }
    }
    held
}

/// Chat event ids from `sse` until `count` have arrived, in order.
async fn sse_chat_ids(sse: &mut SseClient, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    while ids.len() < count {
        let event = sse.event().await;
        if event.event.as_deref() == Some("create:chat:success") {
            ids.push(event.id.expect("chat events carry an id"));
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_spread_over_every_master_in_one_slot_each_on_sharded_channels() {
    let cluster = RedisCluster::start();
    let app = app_on(&cluster).await;
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3);
    let mut rooms: Vec<String> = Vec::new();
    let mut owners = Vec::new();
    // Rooms are spread by their id's hash slot: create rooms until every master has one.
    let held = loop {
        assert!(
            rooms.len() < MAX_ROOMS,
            "{MAX_ROOMS} rooms all missed a master"
        );
        let room = unique_room("shard");
        owners.push(app.create_room(&room, "owner").await);
        rooms.push(room);
        let held = holders(&cluster, &rooms);
        let used: HashSet<u16> = held.values().flatten().copied().collect();
        if used.len() == masters.len() {
            break held;
        }
    };
    for room in &rooms {
        let on = &held[room];
        assert_eq!(on.len(), 1, "room {room}'s keys are on masters {on:?}");
        let port = *on.iter().next().expect("one master");
        let room_keys = keys(&cluster, port, &format!("room:{{{room}}}:*"));
        assert!(room_keys.len() >= 5, "room {room} has keys {room_keys:?}");
        let slots: HashSet<i64> = room_keys
            .iter()
            .map(|key| cluster.command::<i64>(port, &["CLUSTER", "KEYSLOT", key]))
            .collect();
        assert_eq!(slots.len(), 1, "room {room}'s keys span slots {slots:?}");
    }
    // The lease index is in buckets, each its own key; the single global one is gone.
    let mut buckets = Vec::new();
    for port in &masters {
        buckets.extend(keys(&cluster, *port, "leases:*"));
    }
    assert!(!buckets.is_empty());
    for bucket in &buckets {
        let n: u32 = bucket
            .strip_prefix("leases:{")
            .and_then(|rest| rest.strip_suffix('}'))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected lease index key {bucket}"));
        assert!(n < 16, "{bucket}");
    }

    // One watched room per master: a connection here subscribes its channel on its shard.
    let mut watched: Vec<(String, u16, WsClient)> = Vec::new();
    for port in &masters {
        let room = rooms
            .iter()
            .find(|room| held[*room].contains(port))
            .expect("a room on every master")
            .clone();
        let ws = WsClient::member_of(&app.base_url, &room, "watcher").await;
        watched.push((room, *port, ws));
    }
    for (room, port, _) in &watched {
        let sharded: Vec<String> = cluster.command(*port, &["PUBSUB", "SHARDCHANNELS", "room:*"]);
        assert_eq!(
            sharded,
            vec![format!("room:{{{room}}}")],
            "on master {port}"
        );
    }
    for port in cluster.masters().into_iter().chain(cluster.replicas()) {
        let plain: Vec<String> = cluster.command(port, &["PUBSUB", "CHANNELS", "*"]);
        assert!(plain.is_empty(), "plain channels on node {port}: {plain:?}");
    }
    // Events reach the watchers through their shards.
    for (room, _, ws) in &mut watched {
        let index = rooms
            .iter()
            .position(|r| r == room)
            .expect("a created room");
        let posted = app.say(room, &owners[index].token, "via the shard").await;
        assert_eq!(chat_ids(ws, 1).await, vec![posted.id]);
    }

    // A shard that does not answer is its rooms' outage only: while one master holds its
    // writes, its room answers 503 and a room on another master 201. (`/readyz` PINGs one
    // node at random, and a PING queues behind the held write on that node's connection,
    // so it is not asserted here.)
    let owner_of = |room: &str| {
        let index = rooms
            .iter()
            .position(|r| r == room)
            .expect("a created room");
        owners[index].token.clone()
    };
    let (stuck_room, stuck_master, _) = &watched[0];
    let (other_room, _, _) = &watched[1];
    let _: String = cluster.command(*stuck_master, &["CLIENT", "PAUSE", "5000", "WRITE"]);
    let stuck = app
        .post(stuck_room, Some(&owner_of(stuck_room)), "held")
        .await;
    stuck.expect_error(503, "unavailable");
    let other = app
        .post(other_room, Some(&owner_of(other_room)), "elsewhere")
        .await;
    assert_eq!(other.status, 201, "{}", other.text);
    let _: String = cluster.command(*stuck_master, &["CLIENT", "UNPAUSE"]);
    let again = app
        .post(stuck_room, Some(&owner_of(stuck_room)), "after")
        .await;
    assert_eq!(again.status, 201, "{}", again.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_a_cluster_deliver_one_order_with_history_and_resume() {
    let cluster = RedisCluster::start();
    let first = app_on(&cluster).await;
    let second = app_on(&cluster).await;
    let room = unique_room("cluster-order");
    let owner = first.create_room(&room, "owner").await;
    let guest = second.join_room(&room, "guest").await;
    let mut ws = WsClient::member_of(&first.base_url, &room, "ws").await;
    let sse_url = format!("{}/rooms/{room}/events", second.base_url);
    let watcher = second.join_room(&room, "sse").await;
    let mut sse = SseClient::open(second.client.get(sse_url).bearer_auth(&watcher.token)).await;

    // Both instances post at once, each waiting for its own replies.
    const PER_SENDER: usize = 20;
    let senders = [(&first, &owner.token), (&second, &guest.token)].map(|(app, token)| {
        let app_url = app.base_url.clone();
        let client = app.client.clone();
        let room = room.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0..PER_SENDER {
                let reply = client
                    .post(format!("{app_url}/rooms/{room}/messages"))
                    .bearer_auth(&token)
                    .json(&json!({"message": format!("m{n}")}))
                    .send()
                    .await
                    .expect("a post");
                assert_eq!(reply.status().as_u16(), 201);
                let body: serde_json::Value = reply.json().await.expect("a JSON reply");
                acked.push(body["id"].as_str().expect("an id").to_owned());
            }
            acked
        })
    });
    let mut acked = HashSet::new();
    for sender in senders {
        acked.extend(sender.await.expect("a sender task"));
    }
    assert_eq!(acked.len(), 2 * PER_SENDER);
    let by_ws = chat_ids(&mut ws, acked.len()).await;
    let by_sse = sse_chat_ids(&mut sse, acked.len()).await;
    assert_eq!(by_ws, by_sse, "WebSocket and SSE disagree on the order");
    assert_eq!(by_ws.iter().cloned().collect::<HashSet<_>>(), acked);
    assert_strictly_increasing(&by_ws);

    // History, from either instance, is the same order.
    let (page, _) = first
        .history_page(&room, &owner.token, &format!("limit={}", 2 * PER_SENDER))
        .await;
    let history: Vec<String> = page.into_iter().map(|message| message.id).collect();
    assert_eq!(history, by_ws);
    // A resume on the other instance replays what followed the id it is given.
    let half = PER_SENDER;
    let (mut resumed, ack) =
        WsClient::resumed(&second.base_url, &room, &owner.token, &by_ws[half - 1]).await;
    assert_eq!(ack["complete"], true);
    assert_eq!(
        chat_ids(&mut resumed, by_ws.len() - half).await,
        by_ws[half..]
    );

    // A room its shard lost (as a failover to a replica that never had it would), created
    // anew by someone else, is not streamed to the old room's connections.
    let lost_room = unique_room("cluster-lost");
    crate::session::room_lost_and_created_anew_is_not_streamed(&first, &lost_room, || {
        let held = holders(&cluster, std::slice::from_ref(&lost_room));
        let master = *held[&lost_room].iter().next().expect("the room's master");
        for key in keys(&cluster, master, &format!("room:{{{lost_room}}}:*")) {
            let _: i64 = cluster.command(master, &["DEL", &key]);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_traffic_loses_no_acked_message() {
    let mut cluster = RedisCluster::start();
    // Retries during the failover are many and quick: no rate limit may answer them.
    let app = app_with(&cluster, &[("RATE_LIMITS", "off")]).await;
    let watcher_app = app_on(&cluster).await;
    let room = unique_room("failover");
    let owner = app.create_room(&room, "owner").await;
    let held = holders(&cluster, std::slice::from_ref(&room));
    let master = *held[&room].iter().next().expect("the room's master");
    let mut ws = WsClient::member_of(&watcher_app.base_url, &room, "watcher").await;

    // A sender retries each message with its idempotency key until it is acknowledged.
    const MESSAGES: usize = 40;
    let url = format!("{}/rooms/{room}/messages", app.base_url);
    let client = app.client.clone();
    let token = owner.token.clone();
    let sender = tokio::spawn(async move {
        let mut acked = Vec::new();
        for n in 0..MESSAGES {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let reply = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("Idempotency-Key", format!("k{n}"))
                    .json(&json!({"message": format!("m{n}")}))
                    .send()
                    .await
                    .expect("a post");
                if reply.status().as_u16() == 201 {
                    let body: serde_json::Value = reply.json().await.expect("a JSON reply");
                    acked.push(body["id"].as_str().expect("an id").to_owned());
                    break;
                }
                let status = reply.status().as_u16();
                let body = reply.text().await.unwrap_or_default();
                assert_eq!(
                    status, 503,
                    "only unavailability is retried: message {n}: {body}"
                );
                assert!(Instant::now() < deadline, "message {n} never acknowledged");
                // A retry pace, not a synchronisation: the next attempt is the check.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        acked
    });
    // Kill the room's master while the sender runs. Its writes are paused first and the
    // replica caught up: without REDIS_WAIT_REPLICAS an acknowledged write the replica had
    // not received would be lost with the master, which this test is not about.
    let first_events = chat_ids(&mut ws, 5).await;
    let _: String = cluster.command(master, &["CLIENT", "PAUSE", "10000", "WRITE"]);
    cluster.wait_replica_caught_up(master);
    cluster.kill(master);
    cluster.wait_for_failover();
    let acked = sender.await.expect("the sender task");
    assert_eq!(acked.len(), MESSAGES);
    assert_eq!(
        acked.iter().collect::<HashSet<_>>().len(),
        MESSAGES,
        "a retried message was stored twice"
    );
    let mut delivered = first_events;
    delivered.extend(chat_ids(&mut ws, MESSAGES - delivered.len()).await);
    assert_eq!(
        delivered, acked,
        "delivered once each, in the acknowledged order"
    );
    assert_strictly_increasing(&delivered);
    // Nothing twice: the next chat event is one posted after all of them.
    let last = app.say(&room, &owner.token, "the end").await;
    assert_eq!(chat_ids(&mut ws, 1).await, vec![last.id]);
    let (page, _) = app
        .history_page(&room, &owner.token, &format!("limit={}", MESSAGES + 10))
        .await;
    let history: Vec<String> = page.into_iter().map(|message| message.id).collect();
    assert_eq!(
        history[..MESSAGES],
        acked,
        "every acknowledged message in history, once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_in_the_old_global_lease_index_move_to_their_bucket() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Backend::Redis(&redis), &[]).await;
    let room = unique_room("legacy-lease");
    app.create_room(&room, "owner").await;
    // As an earlier version left it: the room in the one global index, due now, and in no
    // bucket.
    let bucket = redis
        .command_list(&["KEYS", "leases:{*}"])
        .into_iter()
        .find(|bucket| !redis.command(&["ZSCORE", bucket, &room]).is_empty())
        .expect("the room is marked in its bucket");
    redis.command(&["ZREM", &bucket, &room]);
    redis.command(&["ZADD", "leases:rooms", "0", &room]);
    eventually(
        "the sweeper to move the room to its bucket",
        Duration::from_secs(10),
        || async {
            (redis.command(&["EXISTS", "leases:rooms"]) == "0"
                && !redis.command(&["ZSCORE", &bucket, &room]).is_empty())
            .then_some(())
        },
    )
    .await;
}

/// A room marked for a sweep (a create marks it before its script makes it) that a sweep finds
/// not there yet keeps its entry, due again later: removing it would leave a room made a moment
/// later out of every sweep, its members never timed out. An entry of a room that is gone and
/// was not marked is dropped.
#[tokio::test]
async fn a_sweep_keeps_a_marked_room_that_is_not_made_yet() {
    let redis = RedisServer::start();
    let _app = TestApp::spawn(Backend::Redis(&redis), &[]).await;
    let (being_made, gone) = (unique_room("being-made"), unique_room("gone"));
    // Any bucket is swept; the room ids need not hash there.
    redis.command(&["ZADD", "leases:{0}", "-5", &being_made]);
    redis.command(&["ZADD", "leases:{0}", "1", &gone]);
    eventually(
        "a sweep to look at both rooms",
        Duration::from_secs(10),
        || async {
            let entries = redis.command_list(&["ZRANGE", "leases:{0}", "0", "-1", "WITHSCORES"]);
            let score_of = |room: &str| {
                entries
                    .chunks(2)
                    .find(|entry| entry[0] == room)
                    .map(|entry| entry[1].parse::<f64>().expect("a score is a number"))
            };
            let swept = score_of(&being_made).is_some_and(|score| score > 0.0);
            (swept && score_of(&gone).is_none()).then_some(())
        },
    )
    .await;
}

/// Posts `message` as `token`'s member, retrying while the cluster answers 503 (a failover
/// under way); the stored message.
async fn say_once_available(app: &TestApp, room: &str, token: &str, message: &str) -> Message {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = app
            .post_with_key(room, Some(token), message, Some(message))
            .await;
        if reply.status != 503 {
            return reply.expect_as(201);
        }
        assert!(Instant::now() < deadline, "the room never became available");
        // A retry pace, not a synchronisation: the next attempt is the check.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_promoted_without_the_newest_events_tells_every_instance() {
    let mut cluster = RedisCluster::start();
    let first = app_with(&cluster, &[("RATE_LIMITS", "off")]).await;
    let second = app_on(&cluster).await;
    let room = unique_room("lagging");
    let owner = first.create_room(&room, "owner").await;
    let master = *holders(&cluster, std::slice::from_ref(&room))[&room]
        .iter()
        .next()
        .expect("the room's master");
    let replica = cluster.replica_of(master);
    let (mut ws, _) =
        WsClient::resumed(&first.base_url, &room, &owner.token, &owner.last_event_id).await;
    let kept = first.say(&room, &owner.token, "kept").await;
    assert_eq!(chat_ids(&mut ws, 1).await, vec![kept.id.clone()]);
    cluster.wait_replica_caught_up(master);

    // The replica falls behind: stopped, and its link cut, it never receives what the master
    // acknowledges next (a stopped process's socket would still buffer the master's writes).
    cluster.freeze(replica);
    let cut: i64 = cluster.command(master, &["CLIENT", "KILL", "TYPE", "replica"]);
    assert_eq!(cut, 1, "the master's link to its replica");
    let lost = first.say(&room, &owner.token, "lost").await;
    assert_eq!(chat_ids(&mut ws, 1).await, vec![lost.id.clone()]);
    cluster.kill(master);
    cluster.thaw(replica);
    cluster.wait_for_failover();
    assert!(
        cluster.masters().contains(&replica),
        "the lagging replica was promoted"
    );

    // The instance that delivered `lost` finds the log without it and closes its connection.
    assert_eq!(ws.closed().await, WsEnd::Closed(Some(1012)));
    let after = say_once_available(&first, &room, &owner.token, "after").await;
    assert!(
        event_id(&after.id) > event_id(&lost.id),
        "a later id ({}) is greater than the lost one ({})",
        after.id,
        lost.id
    );
    // The other instance never saw `lost`: the log and the id tell it, on both transports.
    let (mut resumed_ws, ack) =
        WsClient::resumed(&second.base_url, &room, &owner.token, &lost.id).await;
    assert_eq!(ack["complete"], false, "{ack}");
    assert_eq!(chat_ids(&mut resumed_ws, 1).await, vec![after.id.clone()]);
    let mut sse = SseClient::open(
        second
            .client
            .get(format!("{}/rooms/{room}/events", second.base_url))
            .bearer_auth(&owner.token)
            .header("Last-Event-ID", &lost.id),
    )
    .await;
    let gap = sse.event().await;
    assert_eq!(gap.event.as_deref(), Some("resume:gap"));
    assert_eq!(gap.json(), json!({"roomId": room, "complete": false}));
    assert_eq!(sse_chat_ids(&mut sse, 1).await, vec![after.id.clone()]);
    // After an id the promoted replica holds, nothing is missing.
    let (mut whole, ack) = WsClient::resumed(&first.base_url, &room, &owner.token, &kept.id).await;
    assert_eq!(ack["complete"], true, "{ack}");
    assert_eq!(chat_ids(&mut whole, 1).await, vec![after.id]);
}
