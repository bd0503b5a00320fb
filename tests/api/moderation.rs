//! Room ownership and moderation (API.md, "Editing, deleting and moderating"): the creator
//! owns its room and member lists say so; the owner stops owning it when it leaves, times out
//! or is removed by the server API, for good; the owner kicks and bans over REST, WebSocket
//! and socket.io, and nobody else may; a kicked member's token stops at once, its WebSocket
//! and SSE connections get the removal and then nothing more of the room (also on another
//! instance), and a banned name stays out in every form compared equal to it.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::socketio::{SioClient, websocket_only};
use crate::support::stream::{SseClient, WsClient};
use crate::support::{Backend, RedisServer, TestApp, eventually, unique_room};

const API_KEY: &str = "test-server-api-key-moderation-0123456789";

/// `bob` written with a Cyrillic `о`: the same name as `bob` by its confusable skeleton.
const CYRILLIC_BOB: &str = "b\u{43e}b";

/// An event stream of `room` for the member whose token this is, live from now.
async fn event_stream(app: &TestApp, room: &str, token: &str) -> SseClient {
    let url = format!("{}/rooms/{room}/events", app.base_url);
    SseClient::open(app.client.get(url).bearer_auth(token)).await
}

/// Reads an event stream until `remove:member:success`; returns its id and data.
async fn removal_on_stream(sse: &mut SseClient) -> (String, Value) {
    loop {
        let event = sse.event().await;
        if event.event.as_deref() == Some("remove:member:success") {
            let data = event.json();
            return (event.id.expect("a logged event has an id"), data);
        }
    }
}

/// Sends a client event that must be refused with `code`, on a connection that may have room
/// events waiting before the reply (they are kept for later reads).
async fn refused(ws: &mut WsClient, event: &str, data: Value, code: &str) {
    ws.send(event, "refused", data).await;
    let reply = ws.reply().await;
    assert_eq!(
        reply["event"], "error",
        "{event} should have failed: {reply}"
    );
    assert_eq!(reply["data"]["code"], code, "{event}: {reply}");
}

/// The one `remove:member:success` the connection sees next among its room events: its data
/// must be `{roomId: room, username, reason}`; answers its id.
async fn removal_on_ws(ws: &mut WsClient, room: &str, username: &str, reason: &str) -> String {
    let removed = ws.event_named("remove:member:success").await;
    assert_eq!(
        removed["data"],
        json!({"roomId": room, "username": username, "reason": reason})
    );
    removed["id"].as_str().expect("an event id").to_owned()
}

conformance! {
    async fn the_creator_owns_the_room_until_it_leaves_and_never_again(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("owner");
        let alice = app.create_room(&room, "alice").await;
        let bob = app.join_room(&room, "bob").await;
        assert_eq!(app.owners(&room, &bob.token).await, ["alice"]);
        assert_eq!(app.owners(&room, &alice.token).await, ["alice"]);

        app.leave(&room, "alice", Some(&alice.token)).await.expect(204);
        assert!(app.owners(&room, &bob.token).await.is_empty(), "the owner left: no owner");
        // The same name back (in another case) is a new member, not the owner.
        let again = app.join_room(&room, "ALICE").await;
        assert!(app.owners(&room, &again.token).await.is_empty());
        app.remove(&room, "bob", Some(&again.token), "").await.expect_error(403, "forbidden");
        app.remove(&room, "ALICE", Some(&bob.token), "").await.expect_error(403, "forbidden");
        assert_eq!(
            app.member_list(&room, &bob.token).await,
            [("ALICE".to_owned(), false), ("bob".to_owned(), false)]
        );
    }

    async fn the_owner_is_cleared_when_it_times_out(backend: Backend) {
        let app = TestApp::spawn(backend, &[("MEMBER_TTL_SECS", "1")]).await;
        let room = unique_room("owner-timeout");
        let alice = app.create_room(&room, "alice").await;
        let bob = app.join_room(&room, "bob").await;
        assert_eq!(app.owners(&room, &bob.token).await, ["alice"]);
        // Bob keeps asking (refreshing his lease); Alice is silent and times out.
        eventually("alice to time out", Duration::from_secs(10), || async {
            let list = app.member_list(&room, &bob.token).await;
            (list == [("bob".to_owned(), false)]).then_some(())
        })
        .await;
        assert!(app.owners(&room, &bob.token).await.is_empty());
        app.post(&room, Some(&alice.token), "back").await.expect_error(401, "unauthorized");
        let again = app.join_room(&room, "alice").await;
        assert!(app.owners(&room, &again.token).await.is_empty(), "a returning name owns nothing");
    }

    async fn the_owner_removed_by_the_server_api_leaves_the_room_without_one(backend: Backend) {
        let app = TestApp::spawn(backend, &[("SERVER_API_KEY", API_KEY)]).await;
        let room = unique_room("owner-api");
        app.create_room(&room, "alice").await;
        let bob = app.join_room(&room, "bob").await;
        let kick = app
            .request(Method::DELETE, &format!("/api/rooms/{room}/members/alice"), None)
            .header("Authorization", format!("ApiKey {API_KEY}"));
        app.send(kick).await.expect(204);
        assert!(app.owners(&room, &bob.token).await.is_empty());
        let again = app.join_room(&room, "alice").await;
        assert!(app.owners(&room, &again.token).await.is_empty());
        app.remove(&room, "bob", Some(&again.token), "").await.expect_error(403, "forbidden");
    }

    async fn only_the_owner_kicks_over_rest_and_the_kicked_member_is_out_at_once(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("kick-rest");
        let other = unique_room("kick-rest-other");
        let alice = app.create_room(&room, "alice").await;
        let bob = app.join_room(&room, "bob").await;
        let carol = app.join_room(&room, "carol").await;
        let olga = app.create_room(&other, "olga").await;
        // Bob's connections: a WebSocket holding this room and another, and an event stream.
        let (mut ws, _) =
            WsClient::resumed(&app.base_url, &room, &bob.token, &bob.last_event_id).await;
        ws.ack_among_events("add:member", "o", json!({"roomId": other, "username": "bob"})).await;
        let mut sse = event_stream(&app, &room, &bob.token).await;

        // Who may not, and what is not a removal: nothing changes.
        app.remove(&room, "bob", None, "").await.expect_error(401, "unauthorized");
        app.remove(&room, "bob", Some(&carol.token), "").await.expect_error(403, "forbidden");
        app.remove(&room, "bob", Some(&carol.token), "ban=true").await.expect_error(403, "forbidden");
        app.remove(&room, "bob", Some(&alice.token), "ban=yes").await.expect_error(400, "invalid_request");
        app.remove(&room, "bob", Some(&alice.token), "ban=").await.expect_error(400, "invalid_request");
        app.remove(&room, "alice", Some(&alice.token), "ban=true").await.expect_error(403, "forbidden");
        app.remove(&room, "nobody", Some(&alice.token), "").await.expect_error(404, "not_member");
        app.remove(&room, "nobody", Some(&alice.token), "ban=true").await.expect_error(404, "not_member");
        app.join_room(&room, "nobody").await;
        assert_eq!(app.owners(&room, &alice.token).await, ["alice"]);
        assert_eq!(app.member_list(&room, &alice.token).await.len(), 4);

        // The owner kicks bob, named as usernames compare.
        app.remove(&room, "BOB", Some(&alice.token), "ban=false").await.expect(204);
        let (sse_id, data) = removal_on_stream(&mut sse).await;
        assert_eq!(data, json!({"roomId": room, "username": "bob", "reason": "kicked"}));
        sse.ended().await;
        assert_eq!(removal_on_ws(&mut ws, &room, "bob", "kicked").await, sse_id);
        let said = app.say(&room, &alice.token, "after the kick").await;
        let marker = app.say(&other, &olga.token, "marker").await;
        let next = ws.event_named("create:chat:success").await;
        assert_eq!(next["id"], marker.id.as_str(), "got {next}, not the room's {}", said.id);
        refused(&mut ws, "create:chat", json!({"roomId": room, "message": "still here?"}), "not_member").await;

        // Bob's token is revoked; the owner is still the owner.
        app.post(&room, Some(&bob.token), "hello?").await.expect_error(401, "unauthorized");
        app.history(&room, Some(&bob.token), "").await.expect_error(401, "unauthorized");
        app.members(&room, Some(&bob.token)).await.expect_error(401, "unauthorized");
        app.leave(&room, "bob", Some(&bob.token)).await.expect_error(401, "unauthorized");
        assert_eq!(app.owners(&room, &alice.token).await, ["alice"]);
        // A kicked member may join again.
        let again = app.join_room(&room, "bob").await;
        assert_eq!(app.member_list(&room, &again.token).await.len(), 4);
        ws.close().await;
    }

    async fn a_name_the_owner_bans_stays_out_in_every_form(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("ban-rest");
        let alice = app.create_room(&room, "alice").await;
        let bob = app.join_room(&room, "bob").await;
        let (mut watcher, _) =
            WsClient::resumed(&app.base_url, &room, &alice.token, &bob.last_event_id).await;

        app.remove(&room, "bob", Some(&alice.token), "ban=true").await.expect(204);
        removal_on_ws(&mut watcher, &room, "bob", "banned").await;
        app.post(&room, Some(&bob.token), "hello?").await.expect_error(401, "unauthorized");
        for name in ["bob", "BOB", "Ｂｏｂ", " bob ", CYRILLIC_BOB] {
            app.join(&room, name, None).await.expect_error(403, "forbidden");
        }
        let mut ws = WsClient::connect(&app.base_url).await;
        ws.expect_error("add:member", "j", json!({"roomId": room, "username": "Bob"}), "forbidden").await;
        // Other names still join, and the owner still owns the room.
        let bobby = app.join_room(&room, "bobby").await;
        assert_eq!(app.owners(&room, &bobby.token).await, ["alice"]);
        watcher.close().await;
    }

    async fn the_owner_kicks_and_bans_over_websocket(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("kick-ws");
        let other = unique_room("kick-ws-other");
        let (mut alice, created) = WsClient::creator_of(&app.base_url, &room, "alice").await;
        let alice_token = created["token"].as_str().expect("a token").to_owned();
        let mut bob = WsClient::member_of(&app.base_url, &room, "bob").await;
        let olga = app.create_room(&other, "olga").await;
        bob.ack_among_events("add:member", "o", json!({"roomId": other, "username": "bob"})).await;
        let mut carol = WsClient::member_of(&app.base_url, &room, "carol").await;
        assert_eq!(alice.event_named("add:member:success").await["data"]["username"], "bob");
        assert_eq!(alice.event_named("add:member:success").await["data"]["username"], "carol");

        // Not the owner, or any member banning itself: forbidden. A ban that is not a boolean:
        // invalid_request.
        refused(&mut carol, "remove:member", json!({"roomId": room, "username": "bob"}), "forbidden").await;
        refused(&mut carol, "remove:member", json!({"roomId": room, "username": "carol", "ban": true}), "forbidden").await;
        refused(&mut alice, "remove:member", json!({"roomId": room, "username": "alice", "ban": true}), "forbidden").await;
        refused(&mut alice, "remove:member", json!({"roomId": room, "username": "bob", "ban": "yes"}), "invalid_request").await;
        refused(&mut alice, "remove:member", json!({"roomId": room, "username": "nobody"}), "not_member").await;

        // The owner kicks bob on the connection holding its membership.
        let kicked = alice.ack("remove:member", "k", json!({"roomId": room, "username": "bob"})).await;
        assert_eq!(kicked["roomId"], room.as_str());
        assert_eq!(kicked["username"], "bob");
        let id = removal_on_ws(&mut alice, &room, "bob", "kicked").await;
        assert_eq!(kicked["lastEventId"], id.as_str());
        assert_eq!(removal_on_ws(&mut bob, &room, "bob", "kicked").await, id);
        assert_eq!(removal_on_ws(&mut carol, &room, "bob", "kicked").await, id);
        // The owner's connection still holds the room; bob's no longer does.
        let after = alice.ack("create:chat", "c", json!({"roomId": room, "message": "after the kick"})).await;
        assert_eq!(alice.event_named("create:chat:success").await["id"], after["id"]);
        let marker = app.say(&other, &olga.token, "marker").await;
        let next = bob.event_named("create:chat:success").await;
        assert_eq!(next["id"], marker.id.as_str(), "got {next}, not the room's {}", after["id"]);
        refused(&mut bob, "create:chat", json!({"roomId": room, "message": "still here?"}), "not_member").await;

        // Back in (a kick is no ban), then banned with the owner's token from a connection
        // that holds nothing.
        let again = app.join_room(&room, "bob").await;
        let mut desk = WsClient::connect(&app.base_url).await;
        let banned = desk
            .ack("remove:member", "b", json!({"roomId": room, "username": "bob", "token": alice_token, "ban": true}))
            .await;
        assert_eq!(removal_on_ws(&mut carol, &room, "bob", "banned").await, banned["lastEventId"].as_str().expect("an id"));
        app.post(&room, Some(&again.token), "hello?").await.expect_error(401, "unauthorized");
        refused(&mut bob, "add:member", json!({"roomId": room, "username": CYRILLIC_BOB}), "forbidden").await;
        desk.close().await;
    }
}

/// The original clients' `remove:member` over socket.io: the owner's kicks, and its ban; a
/// non-owner's refusal; the kicked socket receives the removal and then nothing of the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_kicks_and_bans_over_socketio() {
    let app = TestApp::spawn(Backend::Memory, &[]).await;
    let room = unique_room("kick-sio");
    let other = unique_room("kick-sio-other");
    let mut alice = SioClient::connect(&app.base_url, Some(websocket_only())).await;
    let mut bob = SioClient::connect(&app.base_url, Some(websocket_only())).await;
    let created = alice
        .call("create:room", json!({"roomId": room, "username": "alice"}))
        .await;
    let alice_token = created["token"].as_str().expect("a token").to_owned();
    alice.event("create:room:success").await;
    alice.event("add:member:success").await;
    bob.call("add:member", json!({"roomId": room, "username": "bob"}))
        .await;
    assert_eq!(bob.event("add:member:success").await["username"], "bob");
    assert_eq!(alice.event("add:member:success").await["username"], "bob");
    let olga = app.create_room(&other, "olga").await;
    bob.call("add:member", json!({"roomId": other, "username": "bob"}))
        .await;
    assert_eq!(
        bob.event("add:member:success").await["roomId"],
        other.as_str()
    );

    let refusal = bob
        .call(
            "remove:member",
            json!({"roomId": room, "username": "alice"}),
        )
        .await;
    assert_eq!(refusal["error"]["code"], "forbidden", "{refusal}");

    let kicked = alice
        .call("remove:member", json!({"roomId": room, "username": "bob"}))
        .await;
    assert_eq!(kicked["username"], "bob", "{kicked}");
    let removed = bob.event("remove:member:success").await;
    assert_eq!(removed["id"], kicked["lastEventId"]);
    assert_eq!(
        (removed["username"].as_str(), removed["reason"].as_str()),
        (Some("bob"), Some("kicked"))
    );
    assert_eq!(alice.event("remove:member:success").await, removed);
    // Alice's socket still receives the room; bob's gets the other room's next message.
    let after = app.say(&room, &alice_token, "after the kick").await;
    assert_eq!(
        alice.event("create:chat:success").await["id"],
        after.id.as_str()
    );
    let marker = app.say(&other, &olga.token, "marker").await;
    assert_eq!(
        bob.event("create:chat:success").await["id"],
        marker.id.as_str()
    );

    // Back on the same socket (a kick is no ban), then banned.
    bob.call("add:member", json!({"roomId": room, "username": "bob"}))
        .await;
    let joined = bob.event("add:member:success").await;
    assert_eq!(alice.event("add:member:success").await, joined);
    let banned = alice
        .call(
            "remove:member",
            json!({"roomId": room, "username": "bob", "ban": true}),
        )
        .await;
    let removed = bob.event("remove:member:success").await;
    assert_eq!(removed["id"], banned["lastEventId"]);
    assert_eq!(removed["reason"], "banned");
    assert_eq!(alice.event("remove:member:success").await, removed);
    let refusal = bob
        .call("add:member", json!({"roomId": room, "username": "BOB"}))
        .await;
    assert_eq!(refusal["error"]["code"], "forbidden", "{refusal}");
    alice.close().await;
    bob.close().await;
}

/// Two instances on one Redis: the owner kicks through one, and the kicked member's WebSocket
/// and event stream on the other get the removal and then nothing more of the room; its
/// token is refused there at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owners_kick_on_one_instance_ends_the_membership_on_another() {
    let redis = RedisServer::start();
    let first = TestApp::spawn(Backend::Redis(&redis), &[]).await;
    let second = TestApp::spawn(Backend::Redis(&redis), &[]).await;
    let room = unique_room("kick-two");
    let other = unique_room("kick-two-other");
    let alice = first.create_room(&room, "alice").await;
    let olga = first.create_room(&other, "olga").await;
    let bob = second.join_room(&room, "bob").await;
    let (mut ws, _) =
        WsClient::resumed(&second.base_url, &room, &bob.token, &bob.last_event_id).await;
    ws.ack_among_events(
        "add:member",
        "o",
        json!({"roomId": other, "username": "bob"}),
    )
    .await;
    let mut sse = event_stream(&second, &room, &bob.token).await;

    first
        .remove(&room, "bob", Some(&alice.token), "")
        .await
        .expect(204);
    let (id, data) = removal_on_stream(&mut sse).await;
    assert_eq!(
        data,
        json!({"roomId": room, "username": "bob", "reason": "kicked"})
    );
    sse.ended().await;
    assert_eq!(removal_on_ws(&mut ws, &room, "bob", "kicked").await, id);
    second
        .post(&room, Some(&bob.token), "hello?")
        .await
        .expect_error(401, "unauthorized");
    let said = first.say(&room, &alice.token, "bob is gone").await;
    let marker = first.say(&other, &olga.token, "marker").await;
    let next = ws.event_named("create:chat:success").await;
    assert_eq!(
        next["id"],
        marker.id.as_str(),
        "got {next}, not the room's {}",
        said.id
    );
    ws.close().await;
}

/// `/openapi.json` describes moderation: the `ban` query parameter of the member DELETE (a
/// boolean), its 404, and `owner` on every member list entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_describes_ban_and_owner() {
    let app = TestApp::spawn(Backend::Memory, &[]).await;
    let reply = app.get("/openapi.json", None).await;
    let doc = reply.expect(200);
    let delete = &doc["paths"]["/rooms/{roomId}/members/{username}"]["delete"];
    let ban = delete["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|parameter| parameter["name"] == "ban")
        .unwrap_or_else(|| panic!("no ban parameter: {delete}"));
    assert_eq!(ban["in"], "query");
    assert_eq!(ban["required"], false);
    assert!(ban["schema"].to_string().contains("\"boolean\""), "{ban}");
    assert!(delete["responses"].get("404").is_some(), "{delete}");
    let entry = &doc["components"]["schemas"]["MemberEntry"];
    assert_eq!(entry["properties"]["owner"]["type"], "boolean", "{entry}");
    let required = entry["required"].as_array().expect("required fields");
    assert!(required.contains(&json!("owner")), "{entry}");
}
