//! API.md's REST table, row by row, on both stores: create, join, leave, post, history,
//! members, the probes, `/metrics` and `/openapi.json`, and the member timeout.

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use crate::support::{
    Backend, Joined, Message, RedisServer, TestApp, assert_rfc3339_millis_utc, event_id,
    eventually, unique_room,
};

/// The names that must all count as one username (API.md: NFKC, lowercased, trimmed).
const ALICE_VARIANTS: [&str; 6] = [
    "Alice",
    "alice",
    "ALICE",
    "Ａｌｉｃｅ",
    "ａｌｉｃｅ",
    "  aLiCe\t",
];

/// A member list as `TestApp::member_list` returns it: sorted, everyone offline.
fn members(names: &[&str]) -> Vec<(String, bool)> {
    let mut list: Vec<(String, bool)> = names.iter().map(|n| ((*n).to_owned(), false)).collect();
    list.sort();
    list
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

conformance! {
    // ---- POST /rooms -------------------------------------------------------------------

    async fn create_returns_201_with_the_creator_and_a_token(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("create");
        let reply = app.create(&room, "alice", None).await;
        assert!(
            reply.headers[CONTENT_TYPE].to_str().unwrap().starts_with("application/json"),
            "create replies with JSON"
        );
        let joined: Joined = reply.expect_as(201);
        assert_eq!(joined.room_id, room);
        assert_eq!(joined.username, "alice");
        event_id(&joined.last_event_id);
        // At least 128 random bits: 32 hex or 22 base64 characters at the very least.
        assert!(joined.token.len() >= 22, "token too short: {} chars", joined.token.len());

        let other = app.create_room(&unique_room("create-other"), "alice").await;
        assert_ne!(other.token, joined.token, "every member gets its own token");

        // The token is the creator's membership.
        assert_eq!(app.member_list(&room, &joined.token).await, members(&["alice"]));
    }

    async fn create_of_an_existing_room_is_409_room_exists(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("exists");
        let alice = app.create_room(&room, "alice").await;
        app.create(&room, "alice", None).await.expect_error(409, "room_exists");
        app.create(&room, "bob", None).await.expect_error(409, "room_exists");
        app.create(&room, "bob", Some("s3cret")).await.expect_error(409, "room_exists");
        // The refused creates changed nothing.
        assert_eq!(app.member_list(&room, &alice.token).await, members(&["alice"]));
    }

    async fn room_ids_use_the_whole_alphabet_up_to_64_characters(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let mut room = unique_room("AZaz09._-");
        while room.len() < 64 {
            room.push('Z');
        }
        let joined = app.create_room(&room, "alice").await;
        assert_eq!(joined.room_id, room);
        // One character is enough (each test has a store of its own, so "x" is free).
        app.create_room("x", "alice").await;
        room.push('Z');
        app.create(&room, "alice", None).await.expect_error(400, "invalid_request");
    }

    async fn create_accepts_json_with_a_charset(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("charset");
        let request = app
            .request(reqwest::Method::POST, "/rooms", None)
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .body(json!({"roomId": room, "username": "alice"}).to_string());
        let joined: Joined = app.send(request).await.expect_as(201);
        assert_eq!(joined.room_id, room);
    }

    // ---- POST /rooms/{roomId}/members --------------------------------------------------

    async fn join_returns_201_with_a_new_token(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("join");
        let alice = app.create_room(&room, "alice").await;
        let bob: Joined = app.join(&room, "bob", None).await.expect_as(201);
        assert_eq!(bob.room_id, room);
        assert_eq!(bob.username, "bob");
        assert_ne!(bob.token, alice.token);
        assert!(
            event_id(&bob.last_event_id) > event_id(&alice.last_event_id),
            "the join's event comes after the creation's: {} vs {}",
            bob.last_event_id,
            alice.last_event_id
        );
        assert_eq!(app.member_list(&room, &bob.token).await, members(&["alice", "bob"]));
        assert_eq!(app.member_list(&room, &alice.token).await, members(&["alice", "bob"]));
    }

    async fn join_of_an_unknown_room_is_404_room_not_found(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("nowhere");
        app.join(&room, "bob", None).await.expect_error(404, "room_not_found");
        app.join(&room, "bob", Some("whatever")).await.expect_error(404, "room_not_found");
        // And the failed join did not create it.
        app.create_room(&room, "carol").await;
    }

    async fn usernames_are_one_name_across_case_and_width(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("nfkc");
        let alice = app.create_room(&room, "Alice").await;
        assert_eq!(alice.username, "Alice");
        for variant in ALICE_VARIANTS {
            let reply = app.join(&room, variant, None).await;
            reply.expect_error(409, "username_taken");
            assert_eq!(
                reply.error_message(),
                "Username already exists, please choose another username.",
                "the original server's message for {variant:?}"
            );
        }
        // A full-width creator blocks the ASCII name too.
        let wide_room = unique_room("nfkc-wide");
        let wide = app.create_room(&wide_room, "Ａｌｉｃｅ").await;
        assert_eq!(wide.username, "Ａｌｉｃｅ");
        app.join(&wide_room, "alice", None).await.expect_error(409, "username_taken");
        // A name that only starts the same is another name.
        app.join_room(&room, "Alicea").await;
        assert_eq!(
            app.member_list(&room, &alice.token).await,
            members(&["Alice", "Alicea"])
        );
    }

    async fn look_alike_and_invisible_usernames_are_refused(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("look-alike");
        let alice = app.create_room(&room, "alice").await;
        // UTS #39 skeletons: a Cyrillic а or А is alice, as case and width already were.
        for look_alike in ["\u{430}lice", "\u{410}lice", "ALICE"] {
            let reply = app.join(&room, look_alike, None).await;
            reply.expect_error(409, "username_taken");
        }
        // A zero-width space, a right-to-left override ("admin" on screen), a Hangul filler.
        for hidden in ["a\u{200B}lice", "\u{202E}nimda", "\u{3164}"] {
            app.join(&room, hidden, None).await.expect_error(400, "invalid_request");
        }
        // ß is not ss; every script and emoji sequences are names.
        let family = "👨\u{200D}👩\u{200D}👧";
        for name in ["straße", "strasse", "Zoë", "李雷", "José María", family] {
            assert_eq!(app.join_room(&room, name).await.username, name);
        }
        assert_eq!(
            app.member_list(&room, &alice.token).await,
            members(&["alice", "straße", "strasse", "Zoë", "李雷", "José María", family])
        );
        // Once alice has left, nothing of hers holds the look-alike.
        app.leave(&room, "alice", Some(&alice.token)).await.expect(204);
        app.join_room(&room, "\u{430}lice").await;
        app.join(&room, "alice", None).await.expect_error(409, "username_taken");
    }

    async fn a_timed_out_members_look_alikes_are_free_again(backend: Backend) {
        let app = TestApp::spawn(backend, &[("MEMBER_TTL_SECS", "1")]).await;
        let room = unique_room("look-alike-timeout");
        let bob = app.create_room(&room, "bob").await;
        app.join_room(&room, "alice").await;
        app.join(&room, "\u{430}lice", None).await.expect_error(409, "username_taken");
        // Bob keeps asking (which refreshes his lease); alice is silent.
        eventually("alice to time out", Duration::from_secs(10), || async {
            let list = app.member_list(&room, &bob.token).await;
            (list == members(&["bob"])).then_some(())
        })
        .await;
        app.join_room(&room, "\u{430}lice").await;
    }

    async fn usernames_are_trimmed_and_stored_trimmed(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("trim");
        let alice = app.create_room(&room, " \talice\n ").await;
        assert_eq!(alice.username, "alice");
        let bob = app.join_room(&room, "  bob\t").await;
        assert_eq!(bob.username, "bob");
        // Unicode White_Space too: ideographic space, no-break space.
        let carol = app.join_room(&room, "\u{3000}carol\u{a0}").await;
        assert_eq!(carol.username, "carol");
        let inner = app.join_room(&room, " dave  smith ").await;
        assert_eq!(inner.username, "dave  smith", "inner white space is kept");
        let long = "é".repeat(32);
        let longest = app.join_room(&room, &format!(" {long} ")).await;
        assert_eq!(longest.username, long, "32 characters (64 bytes) is allowed");
        assert_eq!(
            app.member_list(&room, &alice.token).await,
            members(&["alice", "bob", "carol", "dave  smith", &long])
        );
        // The stored (trimmed) name is what chat shows.
        let said = app.say(&room, &bob.token, "hi").await;
        assert_eq!(said.username, "bob");
        // And the trimmed name is the one that is taken.
        app.join(&room, "bob", None).await.expect_error(409, "username_taken");
    }

    async fn secret_rooms_need_their_secret(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("secret");
        let reply = app.create(&room, "alice", Some("open sesame")).await;
        let alice: Joined = reply.expect_as(201);
        assert!(!reply.text.contains("open sesame"), "the secret is never echoed");

        app.join(&room, "bob", None).await.expect_error(403, "forbidden");
        let wrong = app.join(&room, "bob", Some("open sesame!")).await;
        wrong.expect_error(403, "forbidden");
        assert!(!wrong.text.contains("open sesame"));
        app.join(&room, "bob", Some("OPEN SESAME")).await.expect_error(403, "forbidden");
        // The refused joins added nobody: the name is still free.
        assert_eq!(app.member_list(&room, &alice.token).await, members(&["alice"]));
        let bob: Joined = app.join(&room, "bob", Some("open sesame")).await.expect_as(201);
        assert_eq!(bob.username, "bob");

        // 128 characters is the longest secret.
        let long_room = unique_room("secret-long");
        let long_secret = "s".repeat(128);
        app.create(&long_room, "alice", Some(&long_secret)).await.expect_as::<Joined>(201);
        app.join(&long_room, "bob", Some(&long_secret)).await.expect_as::<Joined>(201);
        app.join(&long_room, "carol", Some(&"s".repeat(127))).await.expect_error(403, "forbidden");
    }

    // ---- DELETE /rooms/{roomId}/members/{username} ----------------------------------------

    async fn leave_is_204_and_revokes_the_token(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("leave");
        let alice = app.create_room(&room, "alice").await;
        let bob = app.join_room(&room, "bob").await;

        let reply = app.leave(&room, "bob", Some(&bob.token)).await;
        reply.expect(204);
        assert!(reply.text.is_empty(), "204 has no body: {:?}", reply.text);

        // The room sees the removal.
        assert_eq!(app.member_list(&room, &alice.token).await, members(&["alice"]));
        // The removed member's token no longer works anywhere.
        app.post(&room, Some(&bob.token), "still here?").await.expect_error(401, "unauthorized");
        app.history(&room, Some(&bob.token), "").await.expect_error(401, "unauthorized");
        app.members(&room, Some(&bob.token)).await.expect_error(401, "unauthorized");
        app.leave(&room, "bob", Some(&bob.token)).await.expect_error(401, "unauthorized");
        // Nothing was posted by the revoked token.
        let (messages, _) = app.history_page(&room, &alice.token, "").await;
        assert!(messages.is_empty(), "{messages:?}");

        // The name is free again, with a new token.
        let again = app.join_room(&room, "BOB").await;
        assert_ne!(again.token, bob.token);
        assert_eq!(app.member_list(&room, &alice.token).await, members(&["BOB", "alice"]));
    }

    async fn leave_needs_the_members_own_token(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("leave-auth");
        let alice = app.create_room(&room, "alice").await;
        let bob = app.join_room(&room, "bob").await;
        let elsewhere = app.create_room(&unique_room("leave-auth-other"), "alice").await;

        app.leave(&room, "alice", None).await.expect_error(401, "unauthorized");
        app.leave(&room, "alice", Some(&"0".repeat(64))).await.expect_error(401, "unauthorized");
        app.leave(&room, "alice", Some("garbage")).await.expect_error(401, "unauthorized");
        // A token of another room, even one of a member with the same name.
        app.leave(&room, "alice", Some(&elsewhere.token)).await.expect_error(401, "unauthorized");
        // A current member's token used for another member (or for a name nobody holds).
        app.leave(&room, "alice", Some(&bob.token)).await.expect_error(403, "forbidden");
        app.leave(&room, "nobody", Some(&bob.token)).await.expect_error(403, "forbidden");

        assert_eq!(app.member_list(&room, &alice.token).await, members(&["alice", "bob"]));
        // The last member leaving is fine too.
        app.leave(&room, "bob", Some(&bob.token)).await.expect(204);
        app.leave(&room, "alice", Some(&alice.token)).await.expect(204);
        app.members(&room, Some(&alice.token)).await.expect_error(401, "unauthorized");
    }

    async fn tokens_only_work_in_their_own_room(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("scope");
        let other_room = unique_room("scope-other");
        let alice = app.create_room(&room, "alice").await;
        let other = app.create_room(&other_room, "alice").await;
        app.post(&room, Some(&other.token), "hi").await.expect_error(401, "unauthorized");
        app.history(&room, Some(&other.token), "").await.expect_error(401, "unauthorized");
        app.members(&room, Some(&other.token)).await.expect_error(401, "unauthorized");
        // And a room that does not exist knows no token.
        let missing = unique_room("scope-missing");
        app.post(&missing, Some(&alice.token), "hi").await.expect_error(401, "unauthorized");
        app.history(&missing, Some(&alice.token), "").await.expect_error(401, "unauthorized");
        app.members(&missing, Some(&alice.token)).await.expect_error(401, "unauthorized");
        let (messages, _) = app.history_page(&room, &alice.token, "").await;
        assert!(messages.is_empty());
    }

    // ---- POST /rooms/{roomId}/messages ----------------------------------------------------

    async fn post_returns_201_with_the_stored_message(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("post");
        let alice = app.create_room(&room, "alice").await;
        let bob = app.join_room(&room, " Bob ").await;

        let before = now_ms();
        let text = "héllo  wörld ✓ \"quoted\" <b>";
        let first: Message = app.post(&room, Some(&bob.token), text).await.expect_as(201);
        let after = now_ms();
        assert_eq!(first.room_id, room);
        assert_eq!(first.username, "Bob");
        assert_eq!(first.message, text, "the message is stored as sent");
        let (ms, _) = event_id(&first.id);
        let ts = assert_rfc3339_millis_utc(&first.ts);
        assert_eq!(ts, ms as i64, "ts is when the log stored the message ({})", first.id);
        assert!(
            (before - 5_000..=after + 5_000).contains(&ts),
            "ts {} is not around now",
            first.ts
        );
        assert!(event_id(&first.id) > event_id(&bob.last_event_id));

        let second = app.say(&room, &alice.token, "second").await;
        let third = app.say(&room, &bob.token, "third").await;
        assert!(event_id(&first.id) < event_id(&second.id));
        assert!(event_id(&second.id) < event_id(&third.id));
        assert_eq!(second.username, "alice");

        let (messages, next_before) = app.history_page(&room, &alice.token, "").await;
        assert_eq!(messages, vec![first, second, third]);
        assert_eq!(next_before, None);
    }

    async fn post_needs_a_member_token(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("post-auth");
        let alice = app.create_room(&room, "alice").await;
        app.post(&room, None, "hi").await.expect_error(401, "unauthorized");
        app.post(&room, Some("not-a-token"), "hi").await.expect_error(401, "unauthorized");
        // A token differing only in case is another token.
        app.post(&room, Some(&alice.token.to_uppercase()), "hi")
            .await
            .expect_error(401, "unauthorized");
        let (messages, _) = app.history_page(&room, &alice.token, "").await;
        assert!(messages.is_empty(), "nothing was posted: {messages:?}");
    }

    async fn message_size_is_limited_in_utf8_bytes(backend: Backend) {
        let app = TestApp::spawn(backend, &[("MAX_MESSAGE_BYTES", "10")]).await;
        let room = unique_room("msg-size");
        let alice = app.create_room(&room, "alice").await;
        app.say(&room, &alice.token, "0123456789").await;
        app.say(&room, &alice.token, &"é".repeat(5)).await;
        app.post(&room, Some(&alice.token), "01234567890").await
            .expect_error(413, "payload_too_large");
        // Six characters, twelve bytes.
        app.post(&room, Some(&alice.token), &"é".repeat(6)).await
            .expect_error(413, "payload_too_large");
        let (messages, _) = app.history_page(&room, &alice.token, "").await;
        let texts: Vec<&str> = messages.iter().map(|m| m.message.as_str()).collect();
        assert_eq!(texts, ["0123456789", "ééééé"]);
    }

    async fn same_idempotency_key_lands_once(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("idem");
        let alice = app.create_room(&room, "alice").await;
        let first: Message = app
            .post_with_key(&room, Some(&alice.token), "once", Some("key-1"))
            .await
            .expect_as(201);
        let retry: Message = app
            .post_with_key(&room, Some(&alice.token), "once", Some("key-1"))
            .await
            .expect_as(201);
        assert_eq!(retry, first, "a retry answers the message stored the first time");
        // Even with another text, the key names the first message.
        let changed: Message = app
            .post_with_key(&room, Some(&alice.token), "twice?", Some("key-1"))
            .await
            .expect_as(201);
        assert_eq!(changed, first);
        // Another key is another message.
        let other: Message = app
            .post_with_key(&room, Some(&alice.token), "once", Some("key-2"))
            .await
            .expect_as(201);
        assert_ne!(other.id, first.id);
        // Every allowed character, 64 of them.
        let longest_key = format!("AZaz09._:-{}", "k".repeat(54));
        let longest: Message = app
            .post_with_key(&room, Some(&alice.token), "long key", Some(&longest_key))
            .await
            .expect_as(201);

        let (messages, _) = app.history_page(&room, &alice.token, "").await;
        assert_eq!(messages, vec![first, other, longest]);
    }

    async fn idempotency_keys_belong_to_their_member(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("idem-members");
        let alice = app.create_room(&room, "alice").await;
        let bob = app.join_room(&room, "bob").await;
        let from_alice: Message = app
            .post_with_key(&room, Some(&alice.token), "same key", Some("shared"))
            .await
            .expect_as(201);
        let from_bob: Message = app
            .post_with_key(&room, Some(&bob.token), "same key", Some("shared"))
            .await
            .expect_as(201);
        assert_ne!(from_alice.id, from_bob.id);
        assert_eq!(from_alice.username, "alice");
        assert_eq!(from_bob.username, "bob");
        let (messages, _) = app.history_page(&room, &bob.token, "").await;
        assert_eq!(messages, vec![from_alice, from_bob]);
    }

    // ---- GET /rooms/{roomId}/messages -----------------------------------------------------

    async fn history_of_a_new_room_is_empty(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("history-empty");
        let alice = app.create_room(&room, "alice").await;
        let reply = app.history(&room, Some(&alice.token), "").await;
        assert_eq!(reply.expect(200), &json!({"messages": [], "nextBefore": null}));
        app.history(&room, None, "").await.expect_error(401, "unauthorized");
    }

    async fn history_pages_back_with_next_before(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("history-pages");
        let alice = app.create_room(&room, "alice").await;
        let mut posted = Vec::new();
        for n in 1..=5 {
            posted.push(app.say(&room, &alice.token, &format!("m{n}")).await);
        }

        let (page, next) = app.history_page(&room, &alice.token, "limit=2").await;
        assert_eq!(page, posted[3..5]);
        assert_eq!(next.as_deref(), Some(posted[3].id.as_str()));

        let query = format!("limit=2&before={}", next.unwrap());
        let (page, next) = app.history_page(&room, &alice.token, &query).await;
        assert_eq!(page, posted[1..3]);
        assert_eq!(next.as_deref(), Some(posted[1].id.as_str()));

        let query = format!("limit=2&before={}", next.unwrap());
        let (page, next) = app.history_page(&room, &alice.token, &query).await;
        assert_eq!(page, posted[0..1]);
        assert_eq!(next, None, "no page before the first message");

        // A page that holds exactly what is left has no previous page either.
        let query = format!("limit=2&before={}", posted[2].id);
        let (page, next) = app.history_page(&room, &alice.token, &query).await;
        assert_eq!(page, posted[0..2]);
        assert_eq!(next, None);

        // Nothing comes before the smallest id: an empty page on both stores (Redis once
        // refused the range and answered 503).
        let (page, next) = app.history_page(&room, &alice.token, "before=0-0").await;
        assert_eq!(page, []);
        assert_eq!(next, None);

        // limit=1 and limit=200 are both in range.
        let (page, next) = app.history_page(&room, &alice.token, "limit=1").await;
        assert_eq!(page, posted[4..5]);
        assert_eq!(next.as_deref(), Some(posted[4].id.as_str()));
        let (page, next) = app.history_page(&room, &alice.token, "limit=200").await;
        assert_eq!(page, posted);
        assert_eq!(next, None);

        for outside in ["limit=0", "limit=201"] {
            app.history(&room, Some(&alice.token), outside)
                .await
                .expect_error(400, "invalid_request");
        }
    }

    async fn history_defaults_to_50_and_holds_chat_only(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("history-default");
        let alice = app.create_room(&room, "alice").await;
        let mut posted = Vec::new();
        for n in 1..=55 {
            posted.push(app.say(&room, &alice.token, &format!("message {n}")).await);
            // Membership events in between must not show up in history.
            if n % 10 == 0 {
                let guest = app.join_room(&room, &format!("guest{n}")).await;
                app.leave(&room, &guest.username, Some(&guest.token)).await.expect(204);
            }
        }

        let (page, next) = app.history_page(&room, &alice.token, "").await;
        assert_eq!(page.len(), 50, "limit defaults to 50");
        assert_eq!(page, posted[5..]);
        let ids: Vec<(u64, u64)> = page.iter().map(|m| event_id(&m.id)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first: {ids:?}");
        assert_eq!(next.as_deref(), Some(posted[5].id.as_str()));

        let (page, next) = app
            .history_page(&room, &alice.token, &format!("before={}", next.unwrap()))
            .await;
        assert_eq!(page, posted[..5]);
        assert_eq!(next, None);
    }

    async fn history_keeps_the_last_history_limit_events(backend: Backend) {
        let app = TestApp::spawn(backend, &[("HISTORY_LIMIT", "5")]).await;
        let room = unique_room("history-trim");
        let alice = app.create_room(&room, "alice").await;
        let mut posted = Vec::new();
        for n in 1..=8 {
            posted.push(app.say(&room, &alice.token, &format!("m{n}")).await);
        }
        let (page, next) = app.history_page(&room, &alice.token, "").await;
        assert_eq!(page, posted[3..], "the log keeps the last 5 events");
        assert_eq!(next, None, "nothing older is kept");

        // A membership event takes one of the five places.
        app.join_room(&room, "bob").await;
        let (page, next) = app.history_page(&room, &alice.token, "").await;
        assert_eq!(page, posted[4..]);
        assert_eq!(next, None);
    }

    // ---- GET /rooms/{roomId}/members ------------------------------------------------------

    async fn members_lists_every_member_offline(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("members");
        let alice = app.create_room(&room, "alice").await;
        app.join_room(&room, "bob").await;
        app.join_room(&room, "Ｃａｒｏｌ").await;
        let reply = app.members(&room, Some(&alice.token)).await;
        let mut listed = reply.expect(200)["members"]
            .as_array()
            .expect("members is a list")
            .clone();
        listed.sort_by_key(|entry| entry["username"].as_str().unwrap_or("").to_owned());
        assert_eq!(
            Value::Array(listed),
            json!([
                {"username": "alice", "online": false, "owner": true},
                {"username": "bob", "online": false, "owner": false},
                {"username": "Ｃａｒｏｌ", "online": false, "owner": false},
            ]),
            "no connection holds anyone, so all are offline; the creator owns the room; body was {}",
            reply.text
        );
        app.members(&room, None).await.expect_error(401, "unauthorized");
        app.members(&room, Some("nope")).await.expect_error(401, "unauthorized");
    }

    async fn idle_members_time_out(backend: Backend) {
        let app = TestApp::spawn(backend, &[("MEMBER_TTL_SECS", "1")]).await;
        let room = unique_room("timeout");
        let alice = app.create_room(&room, "alice").await;
        let bob = app.join_room(&room, "bob").await;
        assert_eq!(app.member_list(&room, &alice.token).await, members(&["alice", "bob"]));

        // Alice keeps asking (each authenticated request refreshes her lease); Bob is silent.
        eventually("bob to time out", Duration::from_secs(10), || async {
            let list = app.member_list(&room, &alice.token).await;
            (list == members(&["alice"])).then_some(())
        })
        .await;

        app.post(&room, Some(&bob.token), "back").await.expect_error(401, "unauthorized");
        // Alice, who kept refreshing, is still there, and the name "bob" is free again.
        app.say(&room, &alice.token, "still here").await;
        app.join_room(&room, "bob").await;
    }

    async fn one_member_may_send_a_burst_of_100_messages(backend: Backend) {
        // API.md: the default rate limits let one member send a burst of 100 messages.
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("burst");
        let alice = app.create_room(&room, "alice").await;
        for n in 1..=100 {
            let reply = app.post(&room, Some(&alice.token), &format!("burst {n}")).await;
            assert_eq!(reply.status.as_u16(), 201, "message {n} of the burst: {}", reply.text);
        }
        let (page, _) = app.history_page(&room, &alice.token, "limit=200").await;
        assert_eq!(page.len(), 100);
    }

    // ---- GET /rooms/{roomId}/events and GET / (rows of the REST table) ---------------------

    async fn event_stream_needs_a_token_and_speaks_text_event_stream(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("events");
        let alice = app.create_room(&room, "alice").await;
        let path = format!("/rooms/{room}/events");
        app.get(&path, None).await.expect_error(401, "unauthorized");
        app.get(&path, Some("garbage")).await.expect_error(401, "unauthorized");

        // A Bearer token, and `?token=` for EventSource. Only the head is read: the stream
        // stays open, and dropping the response closes it.
        let with_query = format!("{path}?token={}", alice.token);
        // Surrounding white space is trimmed from both alike (`Bearer  <token> `).
        let padded_query = format!("{path}?token=%20{}%09", alice.token);
        let padded = format!(" {} ", alice.token);
        for (path, token) in [
            (&path, Some(alice.token.as_str())),
            (&with_query, None),
            (&path, Some(padded.as_str())),
            (&padded_query, None),
        ] {
            let response = app
                .request(reqwest::Method::GET, path, token)
                .send()
                .await
                .expect("the request reached the app");
            assert_eq!(response.status().as_u16(), 200, "GET {path}");
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("")
                .to_owned();
            assert!(
                content_type.starts_with("text/event-stream"),
                "GET {path}: content-type {content_type:?}"
            );
        }
    }

    // ---- routes outside the API -----------------------------------------------------------

    async fn unknown_routes_answer_404_and_405_in_the_error_format(backend: Backend) {
        // API.md is silent here; a production service answers the HTTP status that says what
        // is wrong, in the API's error format, never a 5xx or an HTML page.
        let app = TestApp::spawn(backend, &[]).await;
        for (method, path, status) in [
            (reqwest::Method::GET, "/no/such/endpoint", 404),
            (reqwest::Method::PUT, "/rooms", 405),
            (reqwest::Method::DELETE, "/rooms/r/messages", 405),
        ] {
            let reply = app.send(app.request(method.clone(), path, None)).await;
            assert_eq!(reply.status.as_u16(), status, "{method} {path}: {}", reply.text);
            let code = reply.body["error"]["code"].as_str();
            assert!(code.is_some(), "{method} {path}: not the error format: {}", reply.text);
        }
    }

    // ---- probes, metrics, OpenAPI ---------------------------------------------------------

    async fn probes_answer_200(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        app.get("/healthz", None).await.expect(200);
        app.get("/readyz", None).await.expect(200);
    }

    async fn metrics_count_requests_by_route(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("metrics");
        let alice = app.create_room(&room, "alice").await;
        app.say(&room, &alice.token, "hi").await;
        app.history_page(&room, &alice.token, "").await;

        let reply = app.get("/metrics", None).await;
        reply.expect(200);
        let content_type = reply.headers[CONTENT_TYPE].to_str().unwrap();
        assert!(content_type.starts_with("text/plain"), "Prometheus text: {content_type}");
        let counters: Vec<&str> = reply
            .text
            .lines()
            .filter(|line| line.starts_with("chat_http_requests_total{"))
            .collect();
        for route in ["/rooms", "/rooms/{roomId}/messages"] {
            assert!(
                counters.iter().any(|line| line.contains(&format!("route=\"{route}\""))),
                "no chat_http_requests_total for route {route}:\n{}",
                reply.text
            );
        }
        assert!(
            !reply.text.contains(&room),
            "labels hold route templates, never raw paths with room ids"
        );
    }

    async fn openapi_document_lists_every_rest_path(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let reply = app.get("/openapi.json", None).await;
        let doc = reply.expect(200);
        let version = doc["openapi"].as_str().expect("an openapi version string");
        assert!(version.starts_with("3.1."), "OpenAPI 3.1.x, got {version}");
        let expected: [(&str, &[&str]); 9] = [
            ("/rooms", &["post"]),
            ("/rooms/{roomId}/members", &["post", "get"]),
            ("/rooms/{roomId}/members/{username}", &["delete"]),
            ("/rooms/{roomId}/messages", &["post", "get"]),
            ("/rooms/{roomId}/messages/{id}", &["patch", "delete"]),
            ("/rooms/{roomId}/typing", &["post"]),
            ("/healthz", &["get"]),
            ("/readyz", &["get"]),
            ("/metrics", &["get"]),
        ];
        let paths = doc["paths"].as_object().expect("paths is an object");
        for (path, methods) in expected {
            let item = paths
                .get(path)
                .unwrap_or_else(|| panic!("{path} missing; paths: {:?}", paths.keys()));
            for method in methods {
                assert!(item.get(*method).is_some(), "{method} {path} missing from the document");
            }
        }
    }
}

/// Members stored before the look-alike rule have no entries in the room's `names` hash (the
/// test deletes them to make alice one): their member key still holds their exact name and
/// whatever skeleton equals it, and they leave cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_members_from_before_the_names_index_keep_their_name() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Backend::Redis(&redis), &[]).await;
    let room = unique_room("legacy-names");
    let names = format!("room:{{{room}}}:names");
    let alice = app.create_room(&room, "alice").await;
    assert_eq!(
        redis.command(&["DEL", &names]),
        "1",
        "the create indexed alice"
    );

    app.join(&room, "ALICE", None)
        .await
        .expect_error(409, "username_taken");
    app.join(&room, "\u{430}lice", None)
        .await
        .expect_error(409, "username_taken");
    let bob = app.join_room(&room, "bob").await;
    assert_eq!(
        redis.command(&["HLEN", &names]),
        "1",
        "bob's one identity key"
    );

    app.leave(&room, "alice", Some(&alice.token))
        .await
        .expect(204);
    app.join_room(&room, "\u{430}lice").await;
    app.leave(&room, "bob", Some(&bob.token)).await.expect(204);
    let mut held = redis.command_list(&["HKEYS", &names]);
    held.sort();
    assert_eq!(
        held,
        ["alice", "\u{430}lice"].map(String::from),
        "bob's key is gone; the Cyrillic name and its skeleton are held"
    );
}
