//! Stream tickets (`POST /rooms/{roomId}/events/ticket`, then `GET /rooms/{roomId}/events?ticket=`)
//! on both stores: a ticket opens the stream once, resumes like `?token=`, and is refused with
//! the same 401 when spent, expired, used in another room or after its member left; one
//! instance's ticket works on another that shares the Redis.

use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;

use crate::support::stream::SseClient;
use crate::support::{Backend, RedisServer, Reply, TestApp, eventually, unique_room};

/// A ticket reply: exactly `{ticket, expiresInSecs}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Ticket {
    ticket: String,
    expires_in_secs: u64,
}

/// `POST /rooms/{room}/events/ticket`, with `token` as the Bearer token.
async fn request_ticket(app: &TestApp, room: &str, token: Option<&str>) -> Reply {
    let path = format!("/rooms/{room}/events/ticket");
    app.send(app.request(Method::POST, &path, token)).await
}

/// A ticket for the member `token` names; asserts 201 and the reply's shape.
async fn ticket(app: &TestApp, room: &str, token: &str) -> String {
    request_ticket(app, room, Some(token))
        .await
        .expect_as::<Ticket>(201)
        .ticket
}

/// `GET /rooms/{room}/events?{query}` without an `Authorization` header.
fn events(app: &TestApp, room: &str, query: &str) -> reqwest::RequestBuilder {
    app.client
        .get(format!("{}/rooms/{room}/events?{query}", app.base_url))
}

/// Opens the stream with `ticket` and drops it: the reply is a refusal, or a 200.
async fn redeem(app: &TestApp, room: &str, ticket: &str) -> Reply {
    app.send_for_stream(events(app, room, &format!("ticket={ticket}")))
        .await
}

/// Asserts a refused ticket: 401 `unauthorized`, the same body whatever the reason.
#[track_caller]
fn assert_refused(reply: &Reply, why: &str) {
    if let Err(problem) = reply.check_error(401, "unauthorized") {
        panic!("{why}: {problem}");
    }
}

conformance! {
    async fn a_ticket_opens_the_stream_once_and_resumes_like_a_token(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("ticket");
        let alice = app.create_room(&room, "alice").await;
        let bob = app.join_room(&room, "bob").await;
        let missed = app.say(&room, &alice.token, "before the stream").await;

        let reply = request_ticket(&app, &room, Some(&bob.token)).await;
        let issued: Ticket = reply.expect_as(201);
        assert_eq!(issued.expires_in_secs, 30, "SSE_TICKET_TTL_SECS defaults to 30");
        assert!(issued.ticket.len() >= 32, "a ticket is a long random secret");
        assert_ne!(issued.ticket, bob.token);

        // The ticket replaces ?token=: lastEventId replays, then the stream is live.
        let query = format!("ticket={}&lastEventId={}", issued.ticket, bob.last_event_id);
        let mut sse = SseClient::open(events(&app, &room, &query)).await;
        assert!(sse.content_type.starts_with("text/event-stream"));
        assert_eq!(sse.event().await.id.as_deref(), Some(missed.id.as_str()));
        let live = app.say(&room, &alice.token, "live").await;
        let event = sse.event().await;
        assert_eq!(event.id.as_deref(), Some(live.id.as_str()));
        assert_eq!(event.json()["message"], "live");

        // Single use: the same ticket again is refused, like any unknown one.
        assert_refused(&redeem(&app, &room, &issued.ticket).await, "a spent ticket");
        assert_refused(&redeem(&app, &room, &"0".repeat(64)).await, "an unknown ticket");

        // Issuing needs a member's Bearer token of this room.
        let path = format!("/rooms/{room}/events/ticket");
        request_ticket(&app, &room, None).await.expect_error(401, "unauthorized");
        request_ticket(&app, &room, Some("garbage")).await.expect_error(401, "unauthorized");
        let elsewhere = app.create_room(&unique_room("ticket-else"), "olga").await;
        request_ticket(&app, &room, Some(&elsewhere.token)).await.expect_error(401, "unauthorized");
        let on_query = format!("{path}?token={}", bob.token);
        app.send(app.request(Method::POST, &on_query, None)).await.expect_error(401, "unauthorized");
        request_ticket(&app, "bad%20id", Some(&bob.token)).await.expect_error(400, "invalid_request");

        // A ticket and a token together are refused, whichever way the token comes, and the
        // refusal does not spend the ticket.
        let both = ticket(&app, &room, &bob.token).await;
        app.send(events(&app, &room, &format!("ticket={both}")).bearer_auth(&bob.token))
            .await
            .expect_error(400, "invalid_request");
        app.send(events(&app, &room, &format!("ticket={both}&token={}", bob.token)))
            .await
            .expect_error(400, "invalid_request");
        assert_eq!(redeem(&app, &room, &both).await.status, 200);
    }

    async fn a_ticket_works_only_in_its_room_and_for_a_current_member(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("ticket-room");
        let other = unique_room("ticket-other");
        let alice = app.create_room(&room, "alice").await;
        // Alice is a member of the other room too: the ticket, not the member, is refused there.
        app.create_room(&other, "alice").await;
        let bob = app.join_room(&room, "bob").await;

        let for_room = ticket(&app, &room, &alice.token).await;
        assert_refused(&redeem(&app, &other, &for_room).await, "a ticket of another room");

        let bobs = ticket(&app, &room, &bob.token).await;
        app.leave(&room, "bob", Some(&bob.token)).await.expect(204);
        assert_refused(&redeem(&app, &room, &bobs).await, "a ticket of a member who left");
        // A new member under the same name is another member: the old ticket stays refused.
        let again = app.join_room(&room, "bob").await;
        let stale = ticket(&app, &room, &again.token).await;
        app.leave(&room, "bob", Some(&again.token)).await.expect(204);
        app.join_room(&room, "bob").await;
        assert_refused(&redeem(&app, &room, &stale).await, "a ticket of an earlier bob");
    }

    async fn a_ticket_expires_after_sse_ticket_ttl_secs(backend: Backend) {
        let app = TestApp::spawn(backend, &[("SSE_TICKET_TTL_SECS", "1")]).await;
        let room = unique_room("ticket-ttl");
        let alice = app.create_room(&room, "alice").await;
        let reply = request_ticket(&app, &room, Some(&alice.token)).await;
        let kept = reply.expect_as::<Ticket>(201);
        assert_eq!(kept.expires_in_secs, 1);
        // Canaries issued after the kept ticket expire no earlier than it: redeeming one at a
        // time (each works once) until one is refused shows the time is up without a sleep.
        let mut canaries = Vec::new();
        for _ in 0..60 {
            canaries.push(ticket(&app, &room, &alice.token).await);
        }
        let mut canaries = canaries.into_iter();
        let redeemed = std::cell::Cell::new(0);
        eventually("a canary ticket to expire", Duration::from_secs(10), || {
            let canary = canaries.next().expect("enough canaries for the ticket lifetime");
            let (app, room, redeemed) = (&app, &room, &redeemed);
            async move {
                let reply = redeem(app, room, &canary).await;
                if reply.status == 200 {
                    redeemed.set(redeemed.get() + 1);
                    return None;
                }
                assert_refused(&reply, "an expired canary");
                Some(())
            }
        })
        .await;
        assert!(redeemed.get() > 0, "a fresh ticket works: the first canaries were redeemed");
        assert_refused(&redeem(&app, &room, &kept.ticket).await, "an expired ticket");
        // The member is not affected: a new ticket works.
        let fresh = ticket(&app, &room, &alice.token).await;
        assert_eq!(redeem(&app, &room, &fresh).await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_issued_on_one_instance_is_redeemed_once_on_another() {
    let redis = RedisServer::start();
    let issuing = TestApp::spawn(Backend::Redis(&redis), &[]).await;
    let streaming = TestApp::spawn(Backend::Redis(&redis), &[]).await;
    let room = unique_room("ticket-cluster");
    let alice = issuing.create_room(&room, "alice").await;
    let issued = ticket(&issuing, &room, &alice.token).await;

    let query = format!("ticket={issued}");
    let mut sse = SseClient::open(events(&streaming, &room, &query)).await;
    let posted = issuing.say(&room, &alice.token, "across instances").await;
    assert_eq!(sse.event().await.id.as_deref(), Some(posted.id.as_str()));
    for app in [&issuing, &streaming] {
        assert_refused(
            &redeem(app, &room, &issued).await,
            "a ticket spent on another instance",
        );
    }
}
