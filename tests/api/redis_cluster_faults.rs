//! The sharded feed through a Redis Cluster's node faults, each on a cluster of its own: a
//! master whose connections stop answering (half-open) is found by the feed's pings and its
//! room misses nothing; a live room's slot moved to another master; a manual failover and a
//! restarted (fresh, empty) node, after which every shard still works.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use crate::cluster::{assert_strictly_increasing, chat_ids};
use crate::redis_cluster::{app_on, app_with, holders};
use crate::support::redis_cluster::RedisCluster;
use crate::support::stream::WsClient;
use crate::support::{Joined, TestApp, eventually, metric_sample, unique_room};

/// Rooms created at most while looking for one on each master.
const MAX_ROOMS: usize = 60;
/// How long the feed may take to find a node that stopped answering and connect anew: its
/// ping period (5 s), the ping's timeout, then a new connection (a few timeouts).
const DETECTION: Duration = Duration::from_secs(9);
/// How long the stuck master answers nobody: longer than [`DETECTION`].
const PAUSE: Duration = Duration::from_secs(10);
/// How soon a room on a shard that works gets its events while another shard is stuck, also
/// while the feed replaces its connection (the old one delivers until the new one is live).
const PROMPT: Duration = Duration::from_secs(1);

/// A room with its master and its creator.
struct Placed {
    room: String,
    master: u16,
    owner: Joined,
}

/// One room on each master: rooms are created until every master holds one.
async fn room_on_each_master(app: &TestApp, cluster: &RedisCluster) -> Vec<Placed> {
    let masters = cluster.masters();
    let mut placed: BTreeMap<u16, Placed> = BTreeMap::new();
    for _ in 0..MAX_ROOMS {
        let room = unique_room("shard");
        let owner = app.create_room(&room, "owner").await;
        let held = holders(cluster, std::slice::from_ref(&room));
        let master = *held[&room].iter().next().expect("the room's master");
        placed.entry(master).or_insert(Placed {
            room,
            master,
            owner,
        });
        if placed.len() == masters.len() {
            return placed.into_values().collect();
        }
    }
    panic!("{MAX_ROOMS} rooms all missed a master");
}

/// The ids of the clients of the node at `port` holding sharded subscriptions (`ssub` > 0).
fn sharded_subscribers(cluster: &RedisCluster, port: u16) -> Vec<String> {
    let list: String = cluster.command(port, &["CLIENT", "LIST"]);
    list.lines()
        .filter(|line| {
            line.split(' ')
                .find_map(|pair| pair.strip_prefix("ssub="))
                .is_some_and(|count| count != "0")
        })
        .map(|line| {
            line.split(' ')
                .find_map(|pair| pair.strip_prefix("id="))
                .expect("CLIENT LIST lines have an id")
                .to_owned()
        })
        .collect()
}

fn shard_channels(cluster: &RedisCluster, port: u16) -> Vec<String> {
    cluster.command(port, &["PUBSUB", "SHARDCHANNELS", "room:*"])
}

async fn reconnects(app: &TestApp) -> f64 {
    let metrics = app.get("/metrics", None).await.text;
    metric_sample(&metrics, "chat_feed_reconnects_total").unwrap_or(0.0)
}

/// Chat event ids in `room`'s history, oldest first.
async fn history(app: &TestApp, placed: &Placed) -> Vec<String> {
    let (page, _) = app
        .history_page(&placed.room, &placed.owner.token, "limit=100")
        .await;
    page.into_iter().map(|message| message.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_stops_answering_is_found_and_its_room_misses_nothing() {
    let cluster = RedisCluster::start();
    // A short timeout: the stuck shard's requests fail fast, and the feed's ping gives up soon.
    // The rooms are made by an instance with the usual one, which a busy machine can need.
    let app = app_with(&cluster, &[("REDIS_TIMEOUT_MS", "500")]).await;
    let placed = room_on_each_master(&app_on(&cluster).await, &cluster).await;
    let (stuck, other) = (&placed[0], &placed[1]);
    let mut stuck_ws = WsClient::member_of(&app.base_url, &stuck.room, "watcher").await;
    let mut other_ws = WsClient::member_of(&app.base_url, &other.room, "watcher").await;
    let mut sent = vec![app.say(&stuck.room, &stuck.owner.token, "before").await.id];
    assert_eq!(chat_ids(&mut stuck_ws, 1).await, sent);
    let subscribers = sharded_subscribers(&cluster, stuck.master);
    let [feed_before] = subscribers.as_slice() else {
        panic!(
            "one sharded subscriber expected on {}: {subscribers:?}",
            stuck.master
        );
    };
    let reconnects_before = reconnects(&app).await;

    // The master's process runs and its sockets stay open, but it answers no client: no
    // reset, no error, only silence, as from a node gone from the network. (The cluster bus
    // is not paused: no failover.) Nothing is asked of it until it is unpaused.
    // `CLIENT UNPAUSE` would wait out the pause like any command: it is long enough for the
    // feed's ping to find it, and it ends by itself.
    let paused = Instant::now();
    let _: String = cluster.command(
        stuck.master,
        &["CLIENT", "PAUSE", &PAUSE.as_millis().to_string(), "ALL"],
    );
    // A post on it is refused, and it happens once the node answers again: the script waits
    // in the node's socket. Its event is published while the feed's old connection is gone
    // and perhaps before the new one's subscription.
    app.post_with_key(&stuck.room, Some(&stuck.owner.token), "held", Some("held"))
        .await
        .expect_error(503, "unavailable");
    // The other shards work meanwhile, promptly.
    let elsewhere = app
        .say(&other.room, &other.owner.token, "meanwhile")
        .await
        .id;
    let delivered = tokio::time::timeout(PROMPT, chat_ids(&mut other_ws, 1)).await;
    assert_eq!(delivered.expect("delivered promptly"), vec![elsewhere]);
    eventually("the feed to find the stuck master", DETECTION, || async {
        (reconnects(&app).await > reconnects_before).then_some(())
    })
    .await;
    // Replacing the connection resubscribed every room: the other shard's still delivers.
    let elsewhere = app.say(&other.room, &other.owner.token, "after").await.id;
    let delivered = tokio::time::timeout(PROMPT, chat_ids(&mut other_ws, 1)).await;
    assert_eq!(delivered.expect("delivered promptly"), vec![elsewhere]);

    assert!(
        paused.elapsed() < PAUSE,
        "the stuck master was found only after its pause"
    );
    eventually("the master to answer again", PAUSE, || async {
        cluster.answers(stuck.master).then_some(())
    })
    .await;
    let held = app
        .post_with_key(&stuck.room, Some(&stuck.owner.token), "held", Some("held"))
        .await;
    sent.push(held.expect(201)["id"].as_str().expect("an id").to_owned());
    sent.push(app.say(&stuck.room, &stuck.owner.token, "later").await.id);
    let mut delivered = vec![sent[0].clone()];
    delivered.extend(chat_ids(&mut stuck_ws, 2).await);
    assert_eq!(delivered, sent, "every event once, in order");
    assert_strictly_increasing(&delivered);
    assert_eq!(history(&app, stuck).await, sent);
    // The stuck connection was dropped for a new one, which holds the room's subscription.
    let subscribers = sharded_subscribers(&cluster, stuck.master);
    assert_eq!(subscribers.len(), 1, "{subscribers:?}");
    assert_ne!(
        &subscribers[0], feed_before,
        "the old connection still subscribed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_rooms_slot_moved_to_another_master_keeps_its_feed_and_history() {
    let cluster = RedisCluster::start();
    let app = app_on(&cluster).await;
    let placed = room_on_each_master(&app, &cluster).await;
    let (moved, to) = (&placed[0], placed[1].master);
    let from = moved.master;
    let channel = format!("room:{{{}}}", moved.room);
    let slot = cluster.key_slot(&channel);
    let mut ws = WsClient::member_of(&app.base_url, &moved.room, "watcher").await;
    let say = |message: &'static str| app.say(&moved.room, &moved.owner.token, message);
    let mut sent = vec![say("before").await.id];
    assert_eq!(shard_channels(&cluster, from), vec![channel.clone()]);

    // While the slot's keys are in transit a room script is refused `TRYAGAIN` (its keys
    // include some that do not exist yet, such as the post's idempotency slot, and Redis
    // cannot tell whether they moved): the post gets 503 and nothing of it is written. Reads
    // of keys that exist are served, by the old master and then, after `ASK`, by the new.
    async fn during(app: &TestApp, moved: &Placed, sent: &[String], when: &str) {
        app.post_with_key(
            &moved.room,
            Some(&moved.owner.token),
            "during",
            Some("during"),
        )
        .await
        .check_error(503, "unavailable")
        .unwrap_or_else(|err| panic!("a post {when}: {err}"));
        assert_eq!(history(app, moved).await, sent, "history {when}");
    }
    cluster.begin_slot_move(slot, from, to);
    during(&app, moved, &sent, "while the slot is migrating").await;
    cluster.migrate_slot_keys(slot, from, to);
    during(&app, moved, &sent, "once its keys moved").await;
    cluster.finish_slot_move(slot, from, to);
    // `from` answers MOVED now; the retry of the refused post is its first write.
    let retried = app
        .post_with_key(
            &moved.room,
            Some(&moved.owner.token),
            "during",
            Some("during"),
        )
        .await;
    sent.push(
        retried.expect(201)["id"]
            .as_str()
            .expect("an id")
            .to_owned(),
    );
    sent.push(say("after").await.id);

    assert_eq!(
        chat_ids(&mut ws, sent.len()).await,
        sent,
        "every event once, in order"
    );
    assert_strictly_increasing(&sent);
    eventually(
        "the room's subscription on its new master",
        Duration::from_secs(5),
        || async {
            (shard_channels(&cluster, to).contains(&channel)
                && !shard_channels(&cluster, from).contains(&channel))
            .then_some(())
        },
    )
    .await;
    sent.push(say("settled").await.id);
    assert_eq!(chat_ids(&mut ws, 1).await, sent[sent.len() - 1..]);
    assert_eq!(history(&app, moved).await, sent);
    assert!(
        cluster
            .command::<Vec<String>>(from, &["KEYS", &format!("room:{{{}}}:*", moved.room)])
            .is_empty(),
        "keys left on the old master"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_and_a_restarted_node_leave_every_shard_working() {
    let mut cluster = RedisCluster::start();
    let app = app_on(&cluster).await;
    let placed = room_on_each_master(&app, &cluster).await;
    let mut watchers = Vec::new();
    let mut sent: Vec<Vec<String>> = Vec::new();
    for room in &placed {
        let mut ws = WsClient::member_of(&app.base_url, &room.room, "watcher").await;
        let id = app.say(&room.room, &room.owner.token, "before").await.id;
        assert_eq!(chat_ids(&mut ws, 1).await, vec![id.clone()]);
        watchers.push(ws);
        sent.push(vec![id]);
    }
    let every_shard_works = async |watchers: &mut Vec<WsClient>, sent: &mut Vec<Vec<String>>| {
        for ((room, ws), sent) in placed.iter().zip(watchers.iter_mut()).zip(sent.iter_mut()) {
            let id = app.say(&room.room, &room.owner.token, "again").await.id;
            assert_eq!(
                chat_ids(ws, 1).await,
                vec![id.clone()],
                "room {}",
                room.room
            );
            sent.push(id);
            assert_eq!(&history(&app, room).await, sent, "room {}", room.room);
        }
    };

    // A replica promoted: its old master steps down and gives its slots (and their
    // subscriptions) to it. The replica must hold its master's data, which the harness does
    // not promise: in some runs a replica whose `INFO` named its master, with the link up
    // and the same offset, held another master's keys (every post on the promoted shard was
    // then refused 401). So the promoted one is a replica that holds its master's room.
    let room_keys = |port: u16, room: &Placed| -> HashSet<String> {
        cluster
            .command::<Vec<String>>(port, &["KEYS", &format!("room:{{{}}}:*", room.room)])
            .into_iter()
            .collect()
    };
    let (failed_over, promoted) = eventually(
        "a replica holding its master's room",
        Duration::from_secs(5),
        || async {
            placed.iter().find_map(|room| {
                let replica = cluster.replica_of(room.master);
                (room_keys(replica, room) == room_keys(room.master, room))
                    .then_some((room, replica))
            })
        },
    )
    .await;
    let old_master = failed_over.master;
    cluster.wait_for_replica_in_sync(promoted);
    cluster.promote(promoted);
    every_shard_works(&mut watchers, &mut sent).await;
    assert!(
        shard_channels(&cluster, promoted).contains(&format!("room:{{{}}}", failed_over.room)),
        "the room is subscribed on its new master"
    );

    // The old master, a replica now, crashes and comes back fresh and empty on its port: it
    // rejoins from its nodes file and copies its master's data again.
    cluster.restart(old_master);
    cluster.wait_for_replica_in_sync(old_master);
    assert_eq!(cluster.replica_of(promoted), old_master);
    let keys = |port: u16| -> HashSet<String> {
        cluster
            .command::<Vec<String>>(port, &["KEYS", "room:*"])
            .into_iter()
            .collect()
    };
    eventually(
        "the restarted replica to hold its master's rooms",
        Duration::from_secs(5),
        || async { (keys(old_master) == keys(promoted)).then_some(()) },
    )
    .await;
    every_shard_works(&mut watchers, &mut sent).await;
}
