//! Editing and deleting chat messages (API.md, "Editing, deleting and moderating"), on every
//! store: REST `PATCH` / `DELETE /rooms/{roomId}/messages/{id}` and the WebSocket and
//! socket.io events `update:chat` / `delete:chat`; who may do what (author, owner, others,
//! non-members); history showing each message as last edited and leaving deleted ones out
//! with full pages; the logged `update:chat:success` / `delete:chat:success` events with ids
//! of their own, live and replayed (resume, SSE `Last-Event-ID`), on a second instance too;
//! retries (an edit to the same text lands once, a delete again is 404); and the revisions
//! Redis keeps for history staying bounded like the log.

use serde_json::{Value, json};

use crate::support::socketio::{SioClient, websocket_only};
use crate::support::stream::{SseClient, WsClient};
use crate::support::{
    Backend, Message, RedisServer, TestApp, assert_rfc3339_millis_utc, event_id, unique_room,
};

/// Edits `id` as `token`'s member; asserts 200 and the exact shape of the answer.
async fn edit(app: &TestApp, room: &str, id: &str, token: &str, text: &str) -> Message {
    app.edit(room, id, Some(token), text).await.expect_as(200)
}

/// A WebSocket room event's envelope id and data, for an event named `name`.
#[track_caller]
fn named(frame: &Value, name: &str) -> (String, Value) {
    assert_eq!(frame["event"], name, "{frame}");
    let id = frame["id"].as_str().expect("a logged event has an id");
    (id.to_owned(), frame["data"].clone())
}

conformance! {
    async fn an_edit_shows_in_history_with_the_original_ts_and_its_own_edited_ts(backend: Backend) {
        let app = TestApp::spawn(backend, &[("MAX_MESSAGE_BYTES", "16")]).await;
        let room = unique_room("edit");
        let alice = app.create_room(&room, "alice").await;
        let bob = app.join_room(&room, "bob").await;
        let first = app.say(&room, &alice.token, "helo").await;
        let second = app.say(&room, &bob.token, "hi").await;

        let edited = edit(&app, &room, &first.id, &alice.token, "hello").await;
        assert_eq!((&edited.id, &edited.ts, edited.message.as_str()), (&first.id, &first.ts, "hello"));
        assert_eq!((&edited.room_id, edited.username.as_str()), (&room, "alice"));
        let edited_ts = edited.edited_ts.clone().expect("an edited message has editedTs");
        assert!(
            assert_rfc3339_millis_utc(&edited_ts) >= assert_rfc3339_millis_utc(&first.ts),
            "edited after posted: {edited:?}"
        );
        let (page, next) = app.history_page(&room, &bob.token, "").await;
        assert_eq!(page, [edited.clone(), second.clone()], "the edit in history, the other untouched");
        assert_eq!(next, None);

        // The same text again changes nothing (a retried PATCH lands once)...
        assert_eq!(edit(&app, &room, &first.id, &alice.token, "hello").await, edited);
        // ...another text is a new edit, with a later time.
        let again = edit(&app, &room, &first.id, &alice.token, "hello!").await;
        assert_eq!((again.message.as_str(), &again.ts), ("hello!", &first.ts));
        let again_ts = again.edited_ts.clone().expect("still edited");
        assert!(assert_rfc3339_millis_utc(&again_ts) >= assert_rfc3339_millis_utc(&edited_ts));
        assert_eq!(app.history_page(&room, &alice.token, "").await.0, [again.clone(), second.clone()]);

        // Only the author edits; the message is as validated as a post.
        app.edit(&room, &first.id, Some(&bob.token), "mine now").await.expect_error(403, "forbidden");
        app.edit(&room, &first.id, Some(&alice.token), " \t ").await.expect_error(400, "invalid_request");
        app.edit(&room, &first.id, Some(&alice.token), &"x".repeat(17)).await.expect_error(413, "payload_too_large");
        // Not a member's token here: 401, before anything about the message.
        app.edit(&room, &first.id, None, "x").await.expect_error(401, "unauthorized");
        let elsewhere = unique_room("edit-elsewhere");
        let carol = app.create_room(&elsewhere, "carol").await;
        app.edit(&room, &first.id, Some(&carol.token), "x").await.expect_error(401, "unauthorized");
        // Not a chat message of this room: a membership event, an unknown id, another room's
        // message, a text that is no event id at all.
        let theirs = app.say(&elsewhere, &carol.token, "theirs").await;
        for id in [bob.last_event_id.as_str(), "1-0", theirs.id.as_str()] {
            app.edit(&room, id, Some(&alice.token), "x").await.expect_error(404, "not_found");
        }
        app.edit(&elsewhere, &first.id, Some(&carol.token), "x").await.expect_error(404, "not_found");
        for id in ["nope", "1-", "12"] {
            app.edit(&room, id, Some(&alice.token), "x").await.expect_error(404, "not_found");
            app.delete_message(&room, id, Some(&alice.token)).await.expect_error(404, "not_found");
        }
        // Nothing of the refusals changed anything.
        assert_eq!(app.history_page(&room, &alice.token, "").await.0, [again, second]);
    }

    async fn a_deleted_message_leaves_history_and_pages_stay_full(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("delete");
        let alice = app.create_room(&room, "alice").await;
        let bob = app.join_room(&room, "bob").await;
        let mut posted = Vec::new();
        for n in 1..=6 {
            posted.push(app.say(&room, &bob.token, &format!("m{n}")).await);
        }
        // Bob deletes his own m5; Alice, the owner (the room's creator), deletes Bob's m2.
        app.delete_message(&room, &posted[4].id, Some(&bob.token)).await.expect(204);
        app.delete_message(&room, &posted[1].id, Some(&alice.token)).await.expect(204);

        let (page, next) = app.history_page(&room, &bob.token, "limit=2").await;
        assert_eq!(page, [posted[3].clone(), posted[5].clone()], "two messages, m5 left out");
        assert_eq!(next.as_deref(), Some(posted[3].id.as_str()));
        let query = format!("limit=2&before={}", posted[3].id);
        let (page, next) = app.history_page(&room, &bob.token, &query).await;
        assert_eq!(page, [posted[0].clone(), posted[2].clone()], "two messages, m2 left out");
        assert_eq!(next, None, "nothing but the deleted m2 before m1's page");
        let (page, _) = app.history_page(&room, &bob.token, "").await;
        assert_eq!(page, [posted[0].clone(), posted[2].clone(), posted[3].clone(), posted[5].clone()]);

        // Gone: deleting again (a retry) or editing it is 404.
        app.delete_message(&room, &posted[4].id, Some(&bob.token)).await.expect_error(404, "not_found");
        app.edit(&room, &posted[4].id, Some(&bob.token), "back").await.expect_error(404, "not_found");
        // Alice's own message: Bob is neither its author nor the owner.
        let from_alice = app.say(&room, &alice.token, "owner's").await;
        app.delete_message(&room, &from_alice.id, Some(&bob.token)).await.expect_error(403, "forbidden");
        app.delete_message(&room, &from_alice.id, None).await.expect_error(401, "unauthorized");
        app.delete_message(&room, &alice.last_event_id, Some(&alice.token)).await.expect_error(404, "not_found");

        // Leaving ends ownership: back under the same name, Alice is a member like any other.
        app.leave(&room, "alice", Some(&alice.token)).await.expect(204);
        app.delete_message(&room, &posted[0].id, Some(&alice.token)).await.expect_error(401, "unauthorized");
        let back = app.join_room(&room, "alice").await;
        app.delete_message(&room, &posted[0].id, Some(&back.token)).await.expect_error(403, "forbidden");
        // Her own messages are still hers (the author is the name the message shows).
        app.delete_message(&room, &from_alice.id, Some(&back.token)).await.expect(204);
        let (page, _) = app.history_page(&room, &bob.token, "").await;
        assert_eq!(page, [posted[0].clone(), posted[2].clone(), posted[3].clone(), posted[5].clone()]);
    }

    async fn edits_and_deletions_are_logged_events_replayed_with_their_own_ids(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("edit-events");
        let (mut alice_ws, created) = WsClient::creator_of(&app.base_url, &room, "alice").await;
        let alice_token = created["token"].as_str().expect("a token").to_owned();
        let bob = app.join_room(&room, "bob").await;
        assert_eq!(alice_ws.event().await["id"], bob.last_event_id.as_str());

        let posted = app.say(&room, &bob.token, "typo").await;
        let edited = edit(&app, &room, &posted.id, &bob.token, "fixed").await;
        app.delete_message(&room, &posted.id, Some(&alice_token)).await.expect(204);
        let after = app.say(&room, &bob.token, "after").await;

        // Live: each with its own id, in log order; the data names the message as `id`.
        let (chat_id, _) = named(&alice_ws.event().await, "create:chat:success");
        assert_eq!(chat_id, posted.id);
        let (update_id, update) = named(&alice_ws.event().await, "update:chat:success");
        assert_eq!(
            update,
            json!({"roomId": room, "id": posted.id, "username": "bob", "message": "fixed",
                   "ts": posted.ts, "editedTs": edited.edited_ts})
        );
        let (delete_id, delete) = named(&alice_ws.event().await, "delete:chat:success");
        assert_eq!(delete, json!({"roomId": room, "id": posted.id, "username": "bob"}));
        let (after_id, _) = named(&alice_ws.event().await, "create:chat:success");
        assert_eq!(after_id, after.id);
        let ids = [chat_id, update_id.clone(), delete_id.clone(), after_id];
        let parsed: Vec<(u64, u64)> = ids.iter().map(|id| event_id(id)).collect();
        assert!(parsed.windows(2).all(|pair| pair[0] < pair[1]), "log order: {ids:?}");
        // editedTs is the edit's own id's time.
        assert_eq!(
            assert_rfc3339_millis_utc(update["editedTs"].as_str().expect("editedTs")),
            i64::try_from(event_id(&update_id).0).expect("a millisecond time")
        );

        // Replayed by a resume, with the same ids and data.
        let (mut resumed, ack) = WsClient::resumed(&app.base_url, &room, &bob.token, &bob.last_event_id).await;
        assert_eq!(ack["replayed"], 4);
        let mut replayed = Vec::new();
        for _ in 0..4 {
            let frame = resumed.event().await;
            replayed.push((frame["event"].clone(), frame["id"].clone(), frame["data"].clone()));
        }
        assert_eq!(replayed[1], (json!("update:chat:success"), json!(update_id), update.clone()));
        assert_eq!(replayed[2], (json!("delete:chat:success"), json!(delete_id), delete.clone()));

        // And by SSE after Last-Event-ID.
        let mut sse = SseClient::open(
            app.client
                .get(format!("{}/rooms/{room}/events", app.base_url))
                .bearer_auth(&bob.token)
                .header("Last-Event-ID", ids[0].as_str()),
        )
        .await;
        let event = sse.event().await;
        assert_eq!((event.event.as_deref(), event.id.as_deref()), (Some("update:chat:success"), Some(update_id.as_str())));
        assert_eq!(event.json(), update);
        let event = sse.event().await;
        assert_eq!((event.event.as_deref(), event.id.as_deref()), (Some("delete:chat:success"), Some(delete_id.as_str())));
        assert_eq!(event.json(), delete);
        // A retried edit appended nothing: the next live event is the next post.
        assert_eq!(sse.event().await.id.as_deref(), Some(ids[3].as_str()));
        let unchanged = app.say(&room, &bob.token, "same").await;
        assert_eq!(edit(&app, &room, &unchanged.id, &bob.token, "same").await, unchanged);
        let last = app.say(&room, &bob.token, "last").await;
        assert_eq!(sse.event().await.id.as_deref(), Some(unchanged.id.as_str()));
        assert_eq!(sse.event().await.id.as_deref(), Some(last.id.as_str()));
    }

    async fn websocket_edits_and_deletes_are_acked_before_their_broadcasts(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("ws-edit");
        let (mut alice, _) = WsClient::creator_of(&app.base_url, &room, "alice").await;
        let posted = alice.ack("create:chat", "c", json!({"roomId": room, "message": "helo"})).await;
        assert_eq!(alice.event().await["id"], posted["id"]);

        let edited = alice
            .ack("update:chat", "u", json!({"roomId": room, "id": posted["id"], "message": "hello"}))
            .await;
        let mut keys: Vec<&String> = edited.as_object().expect("an object").keys().collect();
        keys.sort();
        assert_eq!(keys, ["editedTs", "id", "message", "roomId", "ts", "username"], "{edited}");
        assert_eq!((&edited["id"], &edited["ts"], &edited["message"]), (&posted["id"], &posted["ts"], &json!("hello")));
        let (_, update) = named(&alice.event().await, "update:chat:success");
        assert_eq!(update["editedTs"], edited["editedTs"]);

        // Another connection acts with the token, or not at all.
        let bob = app.join_room(&room, "bob").await;
        assert_eq!(alice.event().await["event"], "add:member:success");
        let mut other = WsClient::connect(&app.base_url).await;
        other.expect_error("delete:chat", "d0", json!({"roomId": room, "id": posted["id"]}), "not_member").await;
        other.expect_error("update:chat", "u0", json!({"roomId": room, "id": posted["id"], "message": "x", "token": "wrong"}), "not_member").await;
        other.expect_error("delete:chat", "d1", json!({"roomId": room, "id": posted["id"], "token": bob.token}), "forbidden").await;
        other.expect_error("delete:chat", "d2", json!({"roomId": room, "id": "1-0", "token": bob.token}), "not_found").await;
        other.expect_error("update:chat", "u1", json!({"roomId": room, "id": "x", "message": "x", "token": bob.token}), "not_found").await;
        other.expect_error("update:chat", "u2", json!({"roomId": room, "id": 7, "message": "x", "token": bob.token}), "invalid_request").await;

        let deleted = alice.ack("delete:chat", "d", json!({"roomId": room, "id": posted["id"]})).await;
        assert_eq!(deleted, json!({"roomId": room, "id": posted["id"]}));
        let (_, delete) = named(&alice.event().await, "delete:chat:success");
        assert_eq!(delete, json!({"roomId": room, "id": posted["id"], "username": "alice"}));
        alice.expect_error("delete:chat", "again", json!({"roomId": room, "id": posted["id"]}), "not_found").await;
    }
}

/// The member's message rate limit counts edits and deletions as it counts posts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_deletions_count_against_the_message_rate_limit() {
    let app = TestApp::spawn(
        Backend::Memory,
        &[("RATE_MESSAGE_BURST", "3"), ("RATE_MESSAGES_PER_SEC", "1")],
    )
    .await;
    let room = unique_room("edit-rate");
    let alice = app.create_room(&room, "alice").await;
    let posted = app.say(&room, &alice.token, "m0").await;
    // The burst holds 3: the post took one. At one a second, ten quick edits run out.
    let mut limited = None;
    for n in 1..=10 {
        let reply = app
            .edit(&room, &posted.id, Some(&alice.token), &format!("m{n}"))
            .await;
        if reply.status.as_u16() != 200 {
            limited = Some(reply);
            break;
        }
    }
    let limited = limited.expect("the edits ran out of the burst");
    limited.expect_error(429, "rate_limited");
    assert!(limited.headers.contains_key("retry-after"));
    app.delete_message(&room, &posted.id, Some(&alice.token))
        .await
        .expect_error(429, "rate_limited");
}

/// An edit and a deletion made on one instance reach a member connected to another, with the
/// same ids and data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_reach_a_member_on_another_instance() {
    let redis = RedisServer::start();
    let one = TestApp::spawn(Backend::Redis(&redis), &[]).await;
    let other = TestApp::spawn(Backend::Redis(&redis), &[]).await;
    let room = unique_room("edit-instances");
    let alice = one.create_room(&room, "alice").await;
    let mut bob = WsClient::member_of(&other.base_url, &room, "bob").await;
    assert_eq!(bob.event().await["event"], "add:member:success");

    let posted = one.say(&room, &alice.token, "one").await;
    let edited = edit(&one, &room, &posted.id, &alice.token, "two").await;
    one.delete_message(&room, &posted.id, Some(&alice.token))
        .await
        .expect(204);
    assert_eq!(bob.event().await["id"], posted.id.as_str());
    let (_, update) = named(&bob.event().await, "update:chat:success");
    assert_eq!(
        update,
        json!({"roomId": room, "id": posted.id, "username": "alice", "message": "two",
               "ts": posted.ts, "editedTs": edited.edited_ts})
    );
    let (_, delete) = named(&bob.event().await, "delete:chat:success");
    assert_eq!(
        delete,
        json!({"roomId": room, "id": posted.id, "username": "alice"})
    );
    // History on the other instance agrees.
    let (page, _) = other.history_page(&room, &alice.token, "").await;
    assert_eq!(page, []);
}

/// socket.io: `update:chat` and `delete:chat` with ack callbacks; their broadcasts carry the
/// contract's fields, the message's id as `id` and the event's own as `eventId`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_edits_carry_the_message_id_and_the_event_id() {
    let app = TestApp::spawn(Backend::Memory, &[]).await;
    let room = unique_room("sio-edit");
    let mut alice = SioClient::connect(&app.base_url, Some(websocket_only())).await;
    alice
        .call("create:room", json!({"roomId": room, "username": "alice"}))
        .await;
    alice.event("create:room:success").await;
    alice.event("add:member:success").await;
    let posted = alice
        .call("create:chat", json!({"roomId": room, "message": "helo"}))
        .await;
    assert_eq!(alice.event("create:chat:success").await, posted);

    let edited = alice
        .call(
            "update:chat",
            json!({"roomId": room, "id": posted["id"], "message": "hello"}),
        )
        .await;
    assert_eq!(edited["id"], posted["id"]);
    assert_eq!(edited["message"], "hello");
    let update = alice.event("update:chat:success").await;
    let event_id_of = |data: &Value| {
        let id = data["eventId"].as_str().expect("eventId is the event's id");
        event_id(id)
    };
    assert!(event_id_of(&update) > event_id(posted["id"].as_str().expect("an id")));
    let mut expected = edited.clone();
    expected["eventId"] = update["eventId"].clone();
    assert_eq!(update, expected, "the ack's fields and eventId");

    let deleted = alice
        .call("delete:chat", json!({"roomId": room, "id": posted["id"]}))
        .await;
    assert_eq!(deleted, json!({"roomId": room, "id": posted["id"]}));
    let delete = alice.event("delete:chat:success").await;
    assert!(event_id_of(&delete) > event_id_of(&update));
    assert_eq!(
        delete,
        json!({"roomId": room, "id": posted["id"], "username": "alice", "eventId": delete["eventId"]})
    );
    let again = alice
        .call("delete:chat", json!({"roomId": room, "id": posted["id"]}))
        .await;
    assert_eq!(again["error"]["code"], "not_found", "{again}");
    alice.close().await;
}

/// Redis keeps each edited or deleted message's revision in the room's meta for history; the
/// revisions of messages trimmed from the log are pruned, so they stay bounded like the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keeps_revisions_bounded_like_the_log() {
    const LIMIT: usize = 5;
    let redis = RedisServer::start();
    let app = TestApp::spawn(
        Backend::Redis(&redis),
        &[("HISTORY_LIMIT", "5"), ("RATE_LIMITS", "off")],
    )
    .await;
    let room = unique_room("edit-bounded");
    let alice = app.create_room(&room, "alice").await;
    let meta = format!("room:{{{room}}}:meta");
    let revisions = || {
        redis
            .command_list(&["HKEYS", &meta])
            .into_iter()
            .filter(|field| field.starts_with("rev:"))
            .count()
    };
    let mut most = 0;
    let mut last = Vec::new();
    for n in 0..40 {
        let posted = app.say(&room, &alice.token, &format!("m{n}")).await;
        let edited = edit(&app, &room, &posted.id, &alice.token, &format!("e{n}")).await;
        if n % 3 == 0 {
            app.delete_message(&room, &posted.id, Some(&alice.token))
                .await
                .expect(204);
        } else {
            last.push(edited);
        }
        most = most.max(revisions());
    }
    assert!(most > LIMIT, "revisions piled up past a prune ({most})");
    assert!(
        most <= 2 * LIMIT,
        "at most twice HISTORY_LIMIT revisions ({most})"
    );
    // History (the last LIMIT events: edits, deletions and posts alike) still shows the last
    // text of what it keeps.
    let (page, _) = app.history_page(&room, &alice.token, "").await;
    assert!(!page.is_empty());
    assert!(
        page.iter().all(|message| last.contains(message)),
        "{page:?}"
    );
}
