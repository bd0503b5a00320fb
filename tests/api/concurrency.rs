//! Races, on both stores: many clients at once, exactly one winner where API.md promises one,
//! and no lost or doubled messages.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::task::JoinSet;

use crate::support::{Joined, Message, Reply, TestApp, event_id, unique_room};

const RACERS: usize = 20;

/// Runs `RACERS` requests at once (each on its own task, so they really overlap on the
/// multi-threaded runtime) and returns their replies.
async fn race<F, Fut>(app: &Arc<TestApp>, request: F) -> Vec<Reply>
where
    F: Fn(Arc<TestApp>, usize) -> Fut,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    for n in 0..RACERS {
        tasks.spawn(request(Arc::clone(app), n));
    }
    let mut replies = Vec::with_capacity(RACERS);
    while let Some(reply) = tasks.join_next().await {
        replies.push(reply.expect("a racing request panicked"));
    }
    replies
}

/// Splits replies into the successes (with `status`) and asserts all others are this error.
#[track_caller]
fn winners(replies: Vec<Reply>, status: u16, error_status: u16, code: &str) -> Vec<Reply> {
    let (won, lost): (Vec<Reply>, Vec<Reply>) = replies
        .into_iter()
        .partition(|reply| reply.status.as_u16() == status);
    for reply in &lost {
        reply.expect_error(error_status, code);
    }
    won
}

conformance! {
    async fn concurrent_creates_of_one_room_have_one_winner(backend: Backend) {
        let app = Arc::new(TestApp::spawn(backend, &[]).await);
        let room = Arc::new(unique_room("race-create"));
        let replies = race(&app, |app, n| {
            let room = Arc::clone(&room);
            async move { app.create(&room, &format!("creator{n}"), None).await }
        })
        .await;
        let won = winners(replies, 201, 409, "room_exists");
        assert_eq!(won.len(), 1, "exactly one create wins");
        let winner: Joined = won[0].expect_as(201);
        // The room is the winner's, whole: it is its only member.
        assert_eq!(
            app.member_list(&room, &winner.token).await,
            vec![(winner.username.clone(), false)]
        );
    }

    async fn concurrent_joins_of_one_name_have_one_winner(backend: Backend) {
        // 21 joins from one address: more than the per-IP join burst allows.
        let app = Arc::new(TestApp::spawn(backend, &[("RATE_LIMITS", "off")]).await);
        let room = Arc::new(unique_room("race-join"));
        let alice = app.create_room(&room, "alice").await;
        let spellings = ["dave", "Dave", "DAVE", "ｄａｖｅ", "Ｄａｖｅ", " dave", "dAvE\t"];
        let replies = race(&app, |app, n| {
            let room = Arc::clone(&room);
            let name = spellings[n % spellings.len()];
            async move { app.join(&room, name, None).await }
        })
        .await;
        let won = winners(replies, 201, 409, "username_taken");
        assert_eq!(won.len(), 1, "exactly one join of the name wins");
        let winner: Joined = won[0].expect_as(201);
        let mut expected = vec![("alice".to_owned(), false), (winner.username.clone(), false)];
        expected.sort();
        assert_eq!(app.member_list(&room, &alice.token).await, expected);
    }

    async fn concurrent_retries_with_one_idempotency_key_land_once(backend: Backend) {
        let app = Arc::new(TestApp::spawn(backend, &[]).await);
        let room = Arc::new(unique_room("race-idem"));
        let alice = app.create_room(&room, "alice").await;
        let token = Arc::new(alice.token.clone());
        let replies = race(&app, |app, _| {
            let (room, token) = (Arc::clone(&room), Arc::clone(&token));
            async move {
                app.post_with_key(&room, Some(&token), "exactly once", Some("retry-key"))
                    .await
            }
        })
        .await;
        let stored: Vec<Message> = replies.iter().map(|reply| reply.expect_as(201)).collect();
        assert!(
            stored.iter().all(|message| *message == stored[0]),
            "every retry answers the same stored message: {stored:?}"
        );
        let (messages, _) = app.history_page(&room, &alice.token, "").await;
        assert_eq!(messages, vec![stored[0].clone()]);
    }

    async fn concurrent_posts_all_land_in_one_order(backend: Backend) {
        let app = Arc::new(TestApp::spawn(backend, &[]).await);
        let room = Arc::new(unique_room("race-post"));
        let mut tokens = vec![app.create_room(&room, "m0").await.token];
        for n in 1..4 {
            tokens.push(app.join_room(&room, &format!("m{n}")).await.token);
        }
        let tokens = Arc::new(tokens);
        let replies = race(&app, |app, n| {
            let (room, tokens) = (Arc::clone(&room), Arc::clone(&tokens));
            async move {
                app.post(&room, Some(&tokens[n % tokens.len()]), &format!("message {n}"))
                    .await
            }
        })
        .await;
        let mut stored: Vec<Message> = replies.iter().map(|reply| reply.expect_as(201)).collect();
        let ids: HashSet<&str> = stored.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids.len(), RACERS, "every message gets its own id");

        stored.sort_by_key(|m| event_id(&m.id));
        let (history, next) = app.history_page(&room, &tokens[0], "limit=200").await;
        assert_eq!(history, stored, "history holds each message once, in id order");
        assert_eq!(next, None);
    }
}
