//! The session core's membership rules as a client sees them, on the WebSocket: which room
//! events a connection's memberships receive, exactly once, when the client asks for a room
//! it holds again, and when the room it holds is lost and created anew by someone else.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;

use crate::support::stream::{SseClient, WsClient, WsEnd};
use crate::support::{Backend, RedisServer, TestApp, unique_room};

conformance! {
    /// `create:room` for a room the connection holds is `room_exists`, and the events of
    /// the room while the store answers still arrive once. The second `create:room` carries
    /// a secret, so the store's answer waits for an argon2 hash (tens of milliseconds at
    /// least) while another member posts without pause: posts land in that window every
    /// time. (A second subscription made for the create, as there was, pushed each of them
    /// twice.)
    async fn creating_a_held_room_again_delivers_its_events_once(backend: Backend) {
        let app = Arc::new(TestApp::spawn(backend, &[("RATE_LIMITS", "off")]).await);
        let room = unique_room("recreate-held");
        let (mut alice, _) = WsClient::creator_of(&app.base_url, &room, "alice").await;
        let bob = app.join_room(&room, "bob").await;
        assert_eq!(alice.event().await["event"], "add:member:success");

        let stop = Arc::new(AtomicBool::new(false));
        let poster = tokio::spawn({
            let (app, room, stop) = (app.clone(), room.clone(), stop.clone());
            async move {
                let mut posted = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let n = posted.len();
                    posted.push(app.say(&room, &bob.token, &format!("during {n}")).await.id);
                }
                posted
            }
        });
        alice
            .send(
                "create:room",
                "again",
                json!({"roomId": room, "username": "zed", "secret": "a secret to hash"}),
            )
            .await;
        let reply = alice.reply().await;
        stop.store(true, Ordering::Relaxed);
        assert_eq!(reply["ref"], "again", "{reply}");
        assert_eq!(reply["event"], "error", "{reply}");
        assert_eq!(reply["data"]["code"], "room_exists", "{reply}");
        let posted = poster.await.expect("the poster ends");
        assert!(!posted.is_empty(), "bob posted while the create was answered");

        // Alice's own post comes after every one of Bob's: up to its event, she has them all.
        let probe = alice
            .ack_among_events("create:chat", "probe", json!({"roomId": room, "message": "probe"}))
            .await;
        let mut seen: HashMap<String, usize> = HashMap::new();
        loop {
            let event = alice.event_named("create:chat:success").await;
            let id = event["id"].as_str().expect("an event id").to_owned();
            if id == probe["id"] {
                break;
            }
            *seen.entry(id).or_default() += 1;
        }
        for id in &posted {
            assert_eq!(seen.get(id), Some(&1), "bob's {id} reached alice once");
        }
        assert_eq!(seen.len(), posted.len(), "nothing else arrived: {seen:?}");
    }
}

/// A connection stops receiving a room whose membership no longer exists: here Redis loses
/// everything (FLUSHALL) and someone else creates a room under the same id. The new room's
/// events are not the old member's, on the WebSocket or on its SSE stream (which ends). (The memory store cannot lose a room a connection holds:
/// it deletes a room only after `ROOM_TTL_SECS` without members, and a held membership is a
/// member whose lease its connection keeps.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_lost_and_created_anew_is_not_streamed_to_its_old_members() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Backend::Redis(&redis), &[]).await;
    let room = unique_room("lost");
    room_lost_and_created_anew_is_not_streamed(&app, &room, || {
        redis.command(&["FLUSHALL"]);
    })
    .await;
}

/// The check of [`a_room_lost_and_created_anew_is_not_streamed_to_its_old_members`] on `app`,
/// where `lose` makes the store lose `room` (also run on a Redis Cluster).
pub async fn room_lost_and_created_anew_is_not_streamed(
    app: &TestApp,
    room: &str,
    lose: impl FnOnce(),
) {
    let (mut alice, ack) = WsClient::creator_of(&app.base_url, room, "alice").await;
    let token = ack["token"].as_str().expect("a token");
    let mut alice_sse = SseClient::open(
        app.client
            .get(format!("{}/rooms/{room}/events", app.base_url))
            .bearer_auth(token),
    )
    .await;
    alice
        .ack(
            "create:chat",
            "m",
            json!({"roomId": room, "message": "before"}),
        )
        .await;
    assert_eq!(alice.event().await["data"]["message"], "before");
    assert_eq!(alice_sse.event().await.json()["message"], "before");

    lose();
    // Bob's connection is on the same instance: the room's events reach him and alice in one
    // push of the room's actor, so once he has his message, alice's connection has it too.
    let (mut bob, _) = WsClient::creator_of(&app.base_url, room, "bob").await;
    bob.ack(
        "create:chat",
        "b",
        json!({"roomId": room, "message": "not alice's"}),
    )
    .await;
    assert_eq!(bob.event().await["data"]["message"], "not alice's");

    // A connection writes what its inbox holds before it reads the next client frame: the
    // reply to this one comes after anything of the new room alice would be sent. (A
    // connection closed with 1012 to resume is fine too: resuming then tells it.)
    alice.send("no:such:event", "probe", json!({})).await;
    match alice.next().await {
        Ok(frame) => assert_eq!(
            frame["ref"], "probe",
            "alice's connection received the new room's {frame}"
        ),
        Err(end) => assert_eq!(end, WsEnd::Closed(Some(1012)), "alice's connection ended"),
    }
    // Her event stream of the room ends, without an event of the new room.
    alice_sse.ended().await;
}
