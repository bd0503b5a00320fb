//! Many instances on one Redis, and faults: every member sees the same ids in the same order
//! on every instance; a killed instance's members time out while its reconnecting clients
//! resume elsewhere without loss; a Redis restart loses no acknowledged message; SIGTERM
//! closes streams with 1012 and exits within the grace period.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::process::ServerProcess;
use crate::support::stream::{SseClient, WsClient, WsEnd};
use crate::support::{Backend, RedisServer, TestApp, eventually, metric_sample, unique_room};

/// Reads chat events from `ws` until `count` have arrived; returns their ids in order.
pub(crate) async fn chat_ids(ws: &mut WsClient, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    while ids.len() < count {
        let event = ws.event().await;
        if event["event"] == "create:chat:success" {
            ids.push(event["id"].as_str().expect("ids are strings").to_owned());
        }
    }
    ids
}

pub(crate) fn assert_strictly_increasing(ids: &[String]) {
    let parsed: Vec<(u64, u64)> = ids.iter().map(|id| crate::support::event_id(id)).collect();
    assert!(
        parsed.windows(2).all(|pair| pair[0] < pair[1]),
        "ids are not in log order: {ids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_deliver_one_order_to_everyone() {
    let redis = RedisServer::start();
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(TestApp::spawn(Backend::Redis(&redis), &[]).await);
    }
    let room = unique_room("cluster");
    let mut members = Vec::new();
    let mut creator = WsClient::connect(&instances[0].base_url).await;
    creator
        .ack(
            "create:room",
            "c",
            json!({"roomId": room, "username": "m0"}),
        )
        .await;
    members.push(creator);
    for n in 1..6 {
        members
            .push(WsClient::member_of(&instances[n % 3].base_url, &room, &format!("m{n}")).await);
    }
    // Three senders, one per instance, interleave their bursts; each waits for its own acks.
    const PER_SENDER: usize = 30;
    let mut senders = Vec::new();
    for (n, instance) in instances.iter().enumerate() {
        senders.push(WsClient::member_of(&instance.base_url, &room, &format!("sender{n}")).await);
    }
    let bursts = senders.into_iter().enumerate().map(|(n, mut sender)| {
        let room = room.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..PER_SENDER {
                let ack = sender
                    .ack_among_events(
                        "create:chat",
                        &format!("s{n}-{i}"),
                        json!({"roomId": room, "message": format!("{n}/{i}")}),
                    )
                    .await;
                acked.push(ack["id"].as_str().unwrap().to_owned());
            }
            acked
        })
    });
    let mut all_acked = HashSet::new();
    for burst in bursts.collect::<Vec<_>>() {
        all_acked.extend(burst.await.expect("a sender task failed"));
    }
    assert_eq!(all_acked.len(), 3 * PER_SENDER);
    let mut sequences = Vec::new();
    for member in &mut members {
        sequences.push(chat_ids(member, 3 * PER_SENDER).await);
    }
    for sequence in &sequences {
        assert_eq!(sequence, &sequences[0], "members disagree on the order");
        assert_eq!(sequence.iter().cloned().collect::<HashSet<_>>(), all_acked);
    }
    assert_strictly_increasing(&sequences[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_while_the_feed_is_down_are_filled_from_the_log() {
    let redis = RedisServer::start();
    let receiving = TestApp::spawn(Backend::Redis(&redis), &[]).await;
    let sending = TestApp::spawn(Backend::Redis(&redis), &[]).await;
    let room = unique_room("feed-gap");
    let sender = sending.create_room(&room, "sender").await;
    let mut receiver = WsClient::member_of(&receiving.base_url, &room, "receiver").await;
    // Cut every pub/sub connection, then publish at once: the event is published while the
    // receiving instance is not subscribed, and nothing follows it that could reveal the gap.
    // Only the resync after the feed reconnects can bring it. Then a burst, whose first events
    // are lost the same way and whose later ones reveal the gap through their `prev`.
    for round in 0..5 {
        let killed = redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        assert_ne!(
            killed, "0",
            "the receiving instance had a pub/sub connection"
        );
        let lone = sending
            .say(&room, &sender.token, &format!("lone {round}"))
            .await
            .id;
        assert_eq!(chat_ids(&mut receiver, 1).await, vec![lone]);
    }
    let killed = redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_ne!(killed, "0");
    let mut sent = Vec::new();
    for n in 0..20 {
        sent.push(
            sending
                .say(&room, &sender.token, &format!("burst {n}"))
                .await
                .id,
        );
    }
    assert_eq!(chat_ids(&mut receiver, sent.len()).await, sent);
}

/// The id and last command of every pub/sub connection, from `CLIENT LIST TYPE pubsub`.
fn pubsub_clients(redis: &RedisServer) -> Vec<(String, String)> {
    let field = |line: &str, name: &str| {
        line.split(' ')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no {name} in CLIENT LIST line {line:?}"))
    };
    redis
        .command(&["CLIENT", "LIST", "TYPE", "pubsub"])
        .lines()
        .map(|line| (field(line, "id"), field(line, "cmd")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_keeps_its_connection_when_it_pings() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Backend::Redis(&redis), &[]).await;
    let room = unique_room("pinged");
    let sender = app.create_room(&room, "sender").await;
    let mut receiver = WsClient::member_of(&app.base_url, &room, "receiver").await;
    let clients = pubsub_clients(&redis);
    let [(feed, _)] = clients.as_slice() else {
        panic!("one pub/sub connection expected: {clients:?}");
    };
    // The feed pings its idle connection every 5 s; a subscribed connection answers in a
    // shape an ordinary one does not, which once read as a failure and cut the connection.
    eventually("the feed's ping", Duration::from_secs(15), || async {
        let clients = pubsub_clients(&redis);
        assert!(
            clients.iter().any(|(id, _)| id == feed),
            "the feed's connection {feed} was dropped: {clients:?}"
        );
        clients
            .iter()
            .any(|(id, cmd)| id == feed && cmd == "ping")
            .then_some(())
    })
    .await;
    let posted = app.say(&room, &sender.token, "after the ping").await.id;
    assert_eq!(chat_ids(&mut receiver, 1).await, vec![posted]);
    assert_eq!(pubsub_clients(&redis)[0].0, *feed, "the feed reconnected");
    let metrics = app.get("/metrics", None).await.text;
    assert_eq!(
        metric_sample(&metrics, "chat_feed_reconnects_total"),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_listens_only_to_rooms_with_connections_here() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Backend::Redis(&redis), &[]).await;
    let watched = unique_room("watched");
    let quiet = unique_room("quiet");
    app.create_room(&watched, "a").await;
    app.create_room(&quiet, "b").await;
    let channels = || redis.command_list(&["PUBSUB", "CHANNELS", "room:*"]);
    assert!(channels().is_empty(), "no connection yet: {:?}", channels());
    let ws = WsClient::member_of(&app.base_url, &watched, "w").await;
    assert_eq!(channels(), vec![format!("room:{{{watched}}}")]);
    ws.close().await;
    eventually(
        "the room's channel to be dropped",
        Duration::from_secs(10),
        || {
            let empty = channels().is_empty();
            async move { empty.then_some(()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_s_members_time_out_and_its_clients_resume_elsewhere() {
    let redis = RedisServer::start();
    let url = redis.url();
    let vars = [("REDIS_URL", url.as_str()), ("MEMBER_TTL_SECS", "2")];
    let mut doomed = ServerProcess::start(&vars).await;
    let survivor = ServerProcess::start(&vars).await;
    let room = unique_room("killed");

    let mut watcher = WsClient::connect(&survivor.base_url).await;
    watcher
        .ack(
            "create:room",
            "c",
            json!({"roomId": room, "username": "watcher"}),
        )
        .await;
    let vanishing = WsClient::member_of(&doomed.base_url, &room, "vanishing").await;
    let mut returning = WsClient::connect(&doomed.base_url).await;
    let returning_ack = returning
        .ack(
            "add:member",
            "j",
            json!({"roomId": room, "username": "returning"}),
        )
        .await;
    let token = returning_ack["token"].as_str().unwrap().to_owned();
    let last_seen = returning.event().await["id"].as_str().unwrap().to_owned();
    assert_eq!(last_seen, returning_ack["lastEventId"].as_str().unwrap());

    doomed.kill();
    assert_eq!(returning.closed().await, WsEnd::Gone);
    // Messages sent while the client is away.
    let mut missed = Vec::new();
    for n in 0..3 {
        let ack = watcher
            .ack_among_events(
                "create:chat",
                &format!("m{n}"),
                json!({"roomId": room, "message": format!("while away {n}")}),
            )
            .await;
        missed.push(ack["id"].clone());
    }
    let (mut back, resumed) =
        WsClient::resumed(&survivor.base_url, &room, &token, &last_seen).await;
    assert_eq!(resumed["complete"], true);
    let replayed = resumed["replayed"].as_u64().unwrap() as usize;
    let mut replay = Vec::new();
    for _ in 0..replayed {
        replay.push(back.event().await);
    }
    let replayed_chat: Vec<Value> = replay
        .iter()
        .filter(|event| event["event"] == "create:chat:success")
        .map(|event| event["id"].clone())
        .collect();
    assert_eq!(
        replayed_chat, missed,
        "exactly the missed messages, in order"
    );

    // The member whose client never came back times out; everyone still here sees it once.
    for client in [&mut watcher, &mut back] {
        let removal = loop {
            let event = client.event_named("remove:member:success").await;
            if event["data"]["username"] == "vanishing" {
                break event;
            }
        };
        assert_eq!(removal["data"]["reason"], "timeout");
    }
    // The resumed member is still a member, held by its new connection.
    back.ack(
        "create:chat",
        "still",
        json!({"roomId": room, "message": "still here"}),
    )
    .await;
    drop(vanishing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_loses_no_acknowledged_message() {
    let mut redis = RedisServer::start_persistent();
    let first = TestApp::spawn(Backend::Redis(&redis), &[("REDIS_TIMEOUT_MS", "500")]).await;
    let second = TestApp::spawn(Backend::Redis(&redis), &[("REDIS_TIMEOUT_MS", "500")]).await;
    let room = unique_room("restart");
    let sender = first.create_room(&room, "sender").await;
    let mut receivers = Vec::new();
    for (n, app) in [&first, &second, &first, &second].iter().enumerate() {
        receivers.push(WsClient::member_of(&app.base_url, &room, &format!("r{n}")).await);
    }

    const TOTAL: usize = 40;
    let mut acknowledged = Vec::new();
    for n in 0..TOTAL {
        if n == TOTAL / 2 {
            redis.stop();
            // While Redis is away, posts fail fast with 503 and nothing crashes.
            let reply = first
                .post(&room, Some(&sender.token), "during the outage")
                .await;
            reply.expect_error(503, "unavailable");
            redis.start_again();
        }
        let key = format!("msg-{n}");
        let stored = eventually(
            "the post to be acknowledged",
            Duration::from_secs(20),
            || {
                let request = first
                    .request(
                        reqwest::Method::POST,
                        &format!("/rooms/{room}/messages"),
                        Some(&sender.token),
                    )
                    .header("Idempotency-Key", key.clone())
                    .json(&json!({"message": format!("message {n}")}));
                async {
                    let reply = first.send(request).await;
                    (reply.status == 201).then(|| reply.body["id"].as_str().unwrap().to_owned())
                }
            },
        )
        .await;
        acknowledged.push(stored);
    }
    for receiver in &mut receivers {
        let ids = chat_ids(receiver, TOTAL).await;
        assert_eq!(
            ids, acknowledged,
            "every acknowledged message, once, in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_streams_and_exits_within_the_grace_period() {
    let mut server = ServerProcess::start(&[("SHUTDOWN_GRACE_SECS", "3")]).await;
    let room = unique_room("sigterm");
    let mut ws = WsClient::connect(&server.base_url).await;
    let ack = ws
        .ack(
            "create:room",
            "c",
            json!({"roomId": room, "username": "alice"}),
        )
        .await;
    let token = ack["token"].as_str().unwrap();
    let client = reqwest::Client::new();
    let mut sse = SseClient::open(
        client
            .get(format!("{}/rooms/{room}/events", server.base_url))
            .bearer_auth(token),
    )
    .await;
    let (status, took) = server.terminate(Duration::from_secs(3)).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let log = server.log();
    assert!(
        log.contains("shutting down") && log.contains("stopped"),
        "log: {log}"
    );
    assert_eq!(ws.closed().await, WsEnd::Closed(Some(1012)));
    sse.ended().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_sent_without_waiting_keep_their_order_across_a_redis_restart() {
    let mut redis = RedisServer::start_persistent();
    let app = TestApp::spawn(
        Backend::Redis(&redis),
        &[("REDIS_TIMEOUT_MS", "500"), ("RATE_LIMITS", "off")],
    )
    .await;
    let room = unique_room("unwaited");
    let mut sender = WsClient::connect(&app.base_url).await;
    let created = sender
        .ack(
            "create:room",
            "c",
            json!({"roomId": room, "username": "sender"}),
        )
        .await;
    let token = created["token"].as_str().expect("a token").to_owned();
    // Posts sent without waiting for their acks, with Redis going away and coming back in
    // the middle.
    const TOTAL: usize = 60;
    for n in 0..TOTAL {
        if n == TOTAL / 2 {
            redis.stop();
            redis.start_again();
        }
        let data = json!({"roomId": room, "message": format!("unwaited {n}"), "clientMsgId": format!("k{n}")});
        sender.send("create:chat", &format!("m{n}"), data).await;
    }
    // One reply per post, in the order sent: an ack, or an error such as `unavailable`.
    let mut acked = Vec::new();
    let mut replied = 0;
    while replied < TOTAL {
        let frame = sender.recv().await;
        match frame["event"].as_str() {
            Some("ack") | Some("error") => {
                assert_eq!(
                    frame["ref"],
                    format!("m{replied}"),
                    "replies in order: {frame}"
                );
                if frame["event"] == "ack" {
                    acked.push(replied);
                }
                replied += 1;
            }
            _ => {}
        }
    }
    assert!(!acked.is_empty(), "some posts were acknowledged");
    // The log holds every acknowledged post, and the sender's posts in the order it sent
    // them (one that failed may or may not have been stored before Redis went away).
    let (messages, _) = app
        .history_page(&room, &token, &format!("limit={}", TOTAL + 10))
        .await;
    let mut stored: Vec<((u64, u64), usize)> = messages
        .iter()
        .filter_map(|message| {
            let n = message.message.strip_prefix("unwaited ")?.parse().ok()?;
            let (ms, seq) = message.id.split_once('-')?;
            Some(((ms.parse().ok()?, seq.parse().ok()?), n))
        })
        .collect();
    stored.sort();
    let order: Vec<usize> = stored.iter().map(|(_, n)| *n).collect();
    assert!(
        order.windows(2).all(|pair| pair[0] < pair[1]),
        "stored in the order sent: {order:?}"
    );
    for n in &acked {
        assert!(
            order.contains(n),
            "acknowledged post {n} is stored: {order:?}"
        );
    }
}
