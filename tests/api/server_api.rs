//! The server API (`/api/`, API.md "Server API"): absent without `SERVER_API_KEY`; with it,
//! the key (401, the lockout after wrong keys), the room list and its pages, messages as a
//! system name, kicks and bans, and deleting a room, on every store; and a kick seen by a
//! connection on another instance.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::stream::WsClient;
use crate::support::{Backend, Message, RedisServer, TestApp, event_id, unique_room};

const KEY: &str = "test-server-api-key-0123456789abcdef";

async fn spawn_with_key(backend: Backend<'_>) -> TestApp {
    TestApp::spawn(backend, &[("SERVER_API_KEY", KEY)]).await
}

/// A server API request with the key.
async fn api(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> crate::support::Reply {
    let mut request = app
        .request(method, path, None)
        .header("Authorization", format!("ApiKey {KEY}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    app.send(request).await
}

/// `GET /api/rooms?{query}`: asserts 200 and `{rooms, nextAfter}`; the rooms as
/// `(roomId, members, online, lastEventId)` and `nextAfter`.
async fn list(app: &TestApp, query: &str) -> (Vec<(String, u64, u64, String)>, Option<String>) {
    let reply = api(app, Method::GET, &format!("/api/rooms?{query}"), None).await;
    let body = reply.expect(200);
    let object = body.as_object().expect("an object");
    assert_eq!(object.len(), 2, "exactly rooms and nextAfter: {body}");
    let rooms = body["rooms"]
        .as_array()
        .expect("rooms is an array")
        .iter()
        .map(|room| {
            assert_eq!(room.as_object().map(|o| o.len()), Some(4), "{room}");
            (
                room["roomId"].as_str().expect("roomId").to_owned(),
                room["members"].as_u64().expect("members"),
                room["online"].as_u64().expect("online"),
                room["lastEventId"]
                    .as_str()
                    .expect("lastEventId")
                    .to_owned(),
            )
        })
        .collect();
    let next = match &body["nextAfter"] {
        Value::Null => None,
        Value::String(next) => Some(next.clone()),
        other => panic!("nextAfter is a string or null: {other}"),
    };
    (rooms, next)
}

fn ids(rooms: &[(String, u64, u64, String)]) -> Vec<&str> {
    rooms.iter().map(|(id, ..)| id.as_str()).collect()
}

conformance! {
    async fn without_a_key_every_api_path_is_404(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("no-api");
        app.create_room(&room, "alice").await;
        for (method, path) in [
            (Method::GET, "/api/rooms".to_owned()),
            (Method::POST, format!("/api/rooms/{room}/messages")),
            (Method::DELETE, format!("/api/rooms/{room}/members/alice")),
            (Method::DELETE, format!("/api/rooms/{room}")),
            (Method::GET, "/api/".to_owned()),
        ] {
            let request = app
                .request(method.clone(), &path, None)
                .header("Authorization", format!("ApiKey {KEY}"))
                .json(&json!({"username": "bot", "message": "hi"}));
            app.send(request).await.expect_error(404, "invalid_request");
        }
        let doc = app.get("/openapi.json", None).await;
        let doc = doc.expect(200);
        assert!(doc["paths"].as_object().expect("paths").keys().all(|path| !path.starts_with("/api")));
        assert!(doc["components"]["securitySchemes"].get("server_api_key").is_none());
    }

    async fn a_missing_or_wrong_key_is_401_and_repeated_failures_are_locked_out(backend: Backend) {
        let app = TestApp::spawn(
            backend,
            &[("SERVER_API_KEY", KEY), ("RATE_SECRET_FAILURES_PER_MIN", "3")],
        )
        .await;
        list(&app, "").await;
        app.get("/api/rooms", None).await.expect_error(401, "unauthorized");
        let wrong = format!("{KEY}x");
        for header in [format!("ApiKey {wrong}"), format!("Bearer {KEY}")] {
            let request = app.request(Method::GET, "/api/rooms", None).header("Authorization", header);
            let reply = app.send(request).await;
            reply.expect_error(401, "unauthorized");
            assert!(!reply.text.contains(KEY), "the key is never echoed: {}", reply.text);
        }
        // The third failure locks the address out: now even the right key waits.
        let reply = api(&app, Method::GET, "/api/rooms", None).await;
        reply.expect_error(429, "rate_limited");
        assert!(reply.headers.contains_key("retry-after"));
    }

    async fn the_document_lists_the_server_api_with_its_scheme(backend: Backend) {
        let app = spawn_with_key(backend).await;
        let doc = app.get("/openapi.json", None).await;
        let doc = doc.expect(200);
        for (path, method) in [
            ("/api/rooms", "get"),
            ("/api/rooms/{roomId}/messages", "post"),
            ("/api/rooms/{roomId}/members/{username}", "delete"),
            ("/api/rooms/{roomId}", "delete"),
        ] {
            let operation = &doc["paths"][path][method];
            assert_eq!(operation["security"], json!([{"server_api_key": []}]), "{path}");
            assert!(operation["responses"].get("429").is_some(), "{path}");
        }
        let scheme = &doc["components"]["securitySchemes"]["server_api_key"];
        assert_eq!(scheme["type"], "apiKey");
        assert_eq!(scheme["in"], "header");
        assert_eq!(scheme["name"], "Authorization");
    }

    async fn rooms_are_listed_by_id_a_page_at_a_time_with_their_counts(backend: Backend) {
        let app = spawn_with_key(backend).await;
        let prefix = unique_room("list");
        let (a, b, c) = (format!("{prefix}-a"), format!("{prefix}-b"), format!("{prefix}-c"));
        // Created out of order: the list is by id.
        app.create_room(&c, "carol").await;
        app.create_room(&a, "alice").await;
        let bob = app.join_room(&a, "bob").await;
        let (dave, _) = WsClient::creator_of(&app.base_url, &b, "dave").await;

        let (page, next) = list(&app, &format!("after={prefix}&limit=2")).await;
        assert_eq!(ids(&page), [a.as_str(), b.as_str()]);
        assert_eq!(next.as_deref(), Some(b.as_str()));
        assert_eq!((page[0].1, page[0].2), (2, 0), "two members, none connected");
        assert_eq!(page[0].3, bob.last_event_id, "the last event is bob's join");
        event_id(&page[1].3);
        // Dave's connection holds him: online once its presence is written (at its join).
        assert_eq!((page[1].1, page[1].2), (1, 1), "{page:?}");

        let (page, next) = list(&app, &format!("after={b}&limit=2")).await;
        assert_eq!(page.first().map(|room| room.0.as_str()), Some(c.as_str()));
        if !matches!(backend, Backend::Cluster(_)) {
            // The cluster is shared with other tests' rooms; a store of its own ends here.
            assert_eq!(ids(&page), [c.as_str()]);
            assert_eq!(next, None);
            let (all, next) = list(&app, "").await;
            assert_eq!(ids(&all), [a.as_str(), b.as_str(), c.as_str()]);
            assert_eq!(next, None);
        }
        for query in ["limit=0", "limit=201", "limit=ten", "after=no%20spaces"] {
            api(&app, Method::GET, &format!("/api/rooms?{query}"), None)
                .await
                .expect_error(400, "invalid_request");
        }
        dave.close().await;
    }

    async fn a_system_message_is_stored_and_sent_under_any_valid_name(backend: Backend) {
        let app = spawn_with_key(backend).await;
        let room = unique_room("system");
        let (mut alice, ack) = WsClient::creator_of(&app.base_url, &room, "alice").await;
        let path = format!("/api/rooms/{room}/messages");
        let reply = api(&app, Method::POST, &path, Some(json!({"username": " System ", "message": "maintenance at noon"}))).await;
        let stored: Message = reply.expect_as(201);
        assert_eq!((stored.room_id.as_str(), stored.username.as_str()), (room.as_str(), "System"));
        assert_eq!(stored.message, "maintenance at noon");
        let event = alice.event().await;
        assert_eq!(event["event"], "create:chat:success");
        assert_eq!(event["id"], stored.id.as_str());
        assert_eq!(event["data"]["username"], "System");
        let (history, _) = app
            .history_page(&room, ack["token"].as_str().expect("a token"), "")
            .await;
        assert_eq!(history, [stored]);

        api(&app, Method::POST, &format!("/api/rooms/{}/messages", unique_room("none")), Some(json!({"username": "bot", "message": "hi"})))
            .await
            .expect_error(404, "room_not_found");
        for body in [
            json!({"username": "", "message": "hi"}),
            json!({"username": "bot", "message": "   "}),
            json!({"message": "hi"}),
        ] {
            api(&app, Method::POST, &path, Some(body)).await.expect_error(400, "invalid_request");
        }
        let big = "x".repeat(5000);
        api(&app, Method::POST, &path, Some(json!({"username": "bot", "message": big})))
            .await
            .expect_error(413, "payload_too_large");
    }

    async fn a_kicked_member_is_out_at_once_and_a_banned_name_stays_out(backend: Backend) {
        let app = spawn_with_key(backend).await;
        let room = unique_room("kick");
        let other = unique_room("kick-other");
        let (mut alice, _) = WsClient::creator_of(&app.base_url, &room, "alice").await;
        let mut bob = WsClient::member_of(&app.base_url, &room, "bob").await;
        // Bob's connection holds a second room, whose events show what still reaches it.
        app.create_room(&other, "olga").await;
        bob.ack_among_events("add:member", "o", json!({"roomId": other, "username": "bob"})).await;
        let poster = app.join_room(&room, "poster").await;
        assert_eq!(alice.event_named("add:member:success").await["data"]["username"], "bob");

        let kick = format!("/api/rooms/{room}/members/bob");
        api(&app, Method::DELETE, &kick, None).await.expect(204);
        let removed = bob.event_named("remove:member:success").await;
        assert_eq!(removed["data"], json!({"roomId": room, "username": "bob", "reason": "kicked"}));
        assert_eq!(alice.event_named("remove:member:success").await["data"]["reason"], "kicked");
        // Bob's connection no longer receives the room: alice's next message does not reach
        // it, the other room's later one does.
        let said = app.say(&room, &poster.token, "after the kick").await;
        let marker = app.say(&other, &app.join_room(&other, "mark").await.token, "marker").await;
        let next = bob.event_named("create:chat:success").await;
        assert_eq!(next["id"], marker.id.as_str(), "got {next}, not the kicked room's {}", said.id);
        // The name is free again after a kick.
        let again = app.join_room(&room, "bob").await;

        api(&app, Method::DELETE, &format!("{kick}?ban=true"), None).await.expect(204);
        assert_eq!(alice.event_named("remove:member:success").await["data"]["reason"], "banned");
        app.post(&room, Some(&again.token), "hello?").await.expect_error(401, "unauthorized");
        for name in ["bob", "BOB", "Ｂｏｂ", " bob "] {
            app.join(&room, name, None).await.expect_error(403, "forbidden");
        }
        // A ban of a name nobody holds is kept all the same; a kick of one is 404.
        api(&app, Method::DELETE, &format!("/api/rooms/{room}/members/mallory?ban=true"), None)
            .await
            .expect(204);
        app.join(&room, "Mallory", None).await.expect_error(403, "forbidden");
        api(&app, Method::DELETE, &format!("/api/rooms/{room}/members/carol"), None)
            .await
            .expect_error(404, "not_member");
        api(&app, Method::DELETE, &format!("/api/rooms/{}/members/bob", unique_room("none")), None)
            .await
            .expect_error(404, "room_not_found");
        api(&app, Method::DELETE, &format!("{kick}?ban=yes"), None)
            .await
            .expect_error(400, "invalid_request");
        // Others still join.
        app.join_room(&room, "carol").await;
    }

    async fn a_deleted_room_tells_its_connections_and_can_be_made_anew(backend: Backend) {
        let app = spawn_with_key(backend).await;
        let room = unique_room("delete");
        let other = unique_room("delete-other");
        let (mut alice, ack) = WsClient::creator_of(&app.base_url, &room, "alice").await;
        let alice_token = ack["token"].as_str().expect("a token").to_owned();
        let olga = app.create_room(&other, "olga").await;
        alice.ack_among_events("add:member", "o", json!({"roomId": other, "username": "alice"})).await;
        // Her join's broadcast in the other room follows the ack, in no order with the first
        // room's events: taken here, so that what follows on the connection is the first room's.
        let joined = alice.event_named("add:member:success").await;
        assert_eq!(joined["data"], json!({"roomId": other, "username": "alice"}));
        let before = app.say(&room, &alice_token, "before").await;
        assert_eq!(alice.event_named("create:chat:success").await["id"], before.id.as_str());

        api(&app, Method::DELETE, &format!("/api/rooms/{room}"), None).await.expect(204);
        let deleted = alice.recv().await;
        assert_eq!(deleted, json!({"event": "room:deleted", "data": {"roomId": room}}));
        app.post(&room, Some(&alice_token), "after").await.expect_error(401, "unauthorized");
        app.join(&room, "bob", None).await.expect_error(404, "room_not_found");
        api(&app, Method::DELETE, &format!("/api/rooms/{room}"), None)
            .await
            .expect_error(404, "room_not_found");
        let (listed, _) = list(&app, &format!("after={}&limit=200", &room[..room.len() - 1])).await;
        assert!(!ids(&listed).contains(&room.as_str()), "{listed:?}");

        // Made anew by someone else: none of its events reach alice's old connection.
        let zed = app.create_room(&room, "zed").await;
        let new_message = app.say(&room, &zed.token, "a new room").await;
        let marker = app.say(&other, &olga.token, "marker").await;
        let next = alice.event_named("create:chat:success").await;
        assert_eq!(next["id"], marker.id.as_str(), "got {next}, not the new room's {}", new_message.id);
        let (listed, _) = list(&app, &format!("after={}&limit=200", &room[..room.len() - 1])).await;
        assert!(ids(&listed).contains(&room.as_str()), "{listed:?}");
    }
}

/// Two instances on one Redis: a member kicked through one instance stops receiving the room
/// on its connection to the other, right after its removal event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_on_one_instance_ends_the_membership_on_another() {
    let redis = RedisServer::start();
    let first = spawn_with_key(Backend::Redis(&redis)).await;
    let second = spawn_with_key(Backend::Redis(&redis)).await;
    let room = unique_room("kick-two");
    let other = unique_room("kick-two-other");
    let alice = first.create_room(&room, "alice").await;
    let olga = first.create_room(&other, "olga").await;
    let mut bob = WsClient::member_of(&second.base_url, &room, "bob").await;
    bob.ack_among_events(
        "add:member",
        "o",
        json!({"roomId": other, "username": "bob"}),
    )
    .await;

    api(
        &first,
        Method::DELETE,
        &format!("/api/rooms/{room}/members/bob"),
        None,
    )
    .await
    .expect(204);
    let removed = bob.event_named("remove:member:success").await;
    assert_eq!(
        removed["data"],
        json!({"roomId": room, "username": "bob", "reason": "kicked"})
    );
    let said = first.say(&room, &alice.token, "bob is gone").await;
    let marker = first.say(&other, &olga.token, "marker").await;
    let next = bob.event_named("create:chat:success").await;
    assert_eq!(
        next["id"],
        marker.id.as_str(),
        "got {next}, not the room's {}",
        said.id
    );
    // Its connection no longer holds the room: posting there needs a membership.
    bob.expect_error(
        "create:chat",
        "p",
        json!({"roomId": room, "message": "still here?"}),
        "not_member",
    )
    .await;
}
