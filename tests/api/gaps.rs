//! API.md "No silent gap, ever": a client whose events the log no longer holds is told so.
//! A resume (WebSocket) or a `Last-Event-ID` (SSE) after an id the log does not reach gets
//! `complete: false` / `resume:gap`, on both stores.

use serde_json::json;

use crate::support::stream::{SseClient, WsClient};
use crate::support::{TestApp, event_id, unique_room};

/// Opens `room`'s SSE stream for `token`, after `last_event_id` when given.
async fn sse_open(
    app: &TestApp,
    room: &str,
    token: &str,
    last_event_id: Option<&str>,
) -> SseClient {
    let mut request = app
        .client
        .get(format!("{}/rooms/{room}/events", app.base_url))
        .bearer_auth(token);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    SseClient::open(request).await
}

conformance! {
    async fn a_resume_after_an_id_newer_than_the_log_s_newest_says_incomplete(backend: Backend) {
        let app = TestApp::spawn(backend, &[]).await;
        let room = unique_room("beyond");
        let alice = app.create_room(&room, "alice").await;
        let newest = app.say(&room, &alice.token, "newest").await;
        // An id the client saw that the log never reached: the log lost events since.
        let (ms, seq) = event_id(&newest.id);
        let beyond = format!("{}-{seq}", ms + 60_000);

        let (_, up_to_date) = WsClient::resumed(&app.base_url, &room, &alice.token, &newest.id).await;
        assert_eq!(up_to_date["complete"], true, "the newest id is still in the log");
        let (mut ws, resumed) = WsClient::resumed(&app.base_url, &room, &alice.token, &beyond).await;
        assert_eq!(resumed, json!({"roomId": room, "username": "alice", "replayed": 0, "complete": false}));
        let mut sse = sse_open(&app, &room, &alice.token, Some(&beyond)).await;
        let gap = sse.event().await;
        assert_eq!(gap.event.as_deref(), Some("resume:gap"));
        assert_eq!(gap.json(), json!({"roomId": room, "complete": false}));

        // Both continue live, with the events the log appends next.
        let next = app.say(&room, &alice.token, "next").await;
        assert_eq!(ws.event_named("create:chat:success").await["id"], next.id);
        assert_eq!(sse.event().await.id.as_deref(), Some(next.id.as_str()));
    }
}
