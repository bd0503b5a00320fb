//! The browser client (`GET /`): its files over plain HTTP, then the page itself in real
//! headless Chromium (Debian's package, driven by playwright-core from
//! `tests/browser/scenarios.mjs`): both transports across two instances, the fallback to SSE
//! when WebSocket upgrades fail, an instance restarting under two pages, markup shown as text
//! and every refusal shown as a sentence, the app's sign-in hook when joins need a JWT, and
//! the room's live life across two instances: presence dots and the typing line, editing and
//! deleting messages, and the owner's kick and ban.
//!
//! The servers are owned here; the scenarios drive the pages and ask for restarts over
//! stdin/stdout ([`BrowserScenario`]). The screenshot of a chat goes to
//! `target/browser/chat.png` on every run, and to `docs/screenshot.png` (the README's) when
//! `UPDATE_SCREENSHOT=1`, so an ordinary test run never changes a tracked file.

use std::path::{Path, PathBuf};

use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};

use crate::support::browser::{BrowserScenario, Step};
use crate::support::jwks::{Provider, SigningKey, claims};
use crate::support::process::ServerProcess;
use crate::support::{Backend, RedisServer, TestApp, unique_room};

/// Every code of API.md's error table, each of which the page must put into words.
const API_ERROR_CODES: [&str; 11] = [
    "invalid_request",
    "unsupported_media_type",
    "unauthorized",
    "forbidden",
    "room_not_found",
    "not_member",
    "room_exists",
    "username_taken",
    "payload_too_large",
    "rate_limited",
    "unavailable",
];

#[tokio::test]
async fn client_files_are_served_with_types_and_revalidation() {
    let app = TestApp::spawn(Backend::Memory, &[]).await;

    let page = app.get("/", None).await;
    page.expect(200);
    assert_eq!(page.headers[CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(page.headers[CACHE_CONTROL], "no-cache");
    let policy = page.headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'"), "CSP: {policy}");
    for id in [
        "room",
        "username",
        "secret",
        "create",
        "join",
        "leave",
        "message",
        "send",
        "messages",
        "members",
        "transport",
        "status",
        "typing",
    ] {
        assert!(
            page.text.contains(&format!("id=\"{id}\"")),
            "the page has no #{id}"
        );
    }

    for (file, content_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("api.js", "text/javascript; charset=utf-8"),
        ("connection.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
    ] {
        let path = format!("/client/{file}");
        let reply = app.get(&path, None).await;
        reply.expect(200);
        assert_eq!(reply.headers[CONTENT_TYPE], content_type, "{path}");
        assert_eq!(reply.headers["x-content-type-options"], "nosniff", "{path}");
        let etag = reply.headers[ETAG].to_str().unwrap().to_owned();
        let revalidated = app
            .send(
                app.request(reqwest::Method::GET, &path, None)
                    .header(IF_NONE_MATCH, &etag),
            )
            .await;
        assert_eq!(
            revalidated.status.as_u16(),
            304,
            "{path} with If-None-Match"
        );
        assert!(revalidated.text.is_empty());
        assert_eq!(revalidated.headers[ETAG], etag.as_str());
    }

    for path in [
        "/client/nope.js",
        "/client/index.html",
        "/client/..%2Fclient.rs",
    ] {
        app.get(path, None)
            .await
            .expect_error(404, "invalid_request");
    }

    let api_js = app.get("/client/api.js", None).await.text;
    for code in API_ERROR_CODES {
        assert!(
            api_js.contains(&format!("  {code}: '")),
            "the page has no sentence for {code}"
        );
    }
}

/// Where the scenario saves its screenshot: `docs/screenshot.png` when asked to update it.
fn screenshot_path() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = if std::env::var_os("UPDATE_SCREENSHOT").is_some_and(|value| value == "1") {
        root.join("docs/screenshot.png")
    } else {
        root.join("target/browser/chat.png")
    };
    std::fs::create_dir_all(path.parent().expect("a parent directory"))
        .expect("creating the screenshot directory");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_websocket_and_sse_pages_on_two_instances_see_one_order() {
    let redis = RedisServer::start();
    let a = TestApp::spawn(Backend::Redis(&redis), &[]).await;
    let b = TestApp::spawn(Backend::Redis(&redis), &[]).await;
    let screenshot = screenshot_path();
    let _ = std::fs::remove_file(&screenshot);
    BrowserScenario::run(
        "two-instances",
        &[
            ("CHAT_URL_A", a.base_url.clone()),
            ("CHAT_URL_B", b.base_url.clone()),
            // A Redis of its own, so a plain name (it shows in the screenshot).
            ("CHAT_ROOM", "lobby".to_owned()),
            ("CHAT_SCREENSHOT", screenshot.display().to_string()),
        ],
    )
    .await;
    let png = std::fs::read(&screenshot).expect("the scenario saved a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_falls_back_to_sse_when_websocket_upgrades_fail_or_hang() {
    let app = TestApp::spawn(Backend::Memory, &[]).await;
    BrowserScenario::run(
        "fallback",
        &[
            ("CHAT_URL_A", app.base_url.clone()),
            ("CHAT_ROOM", unique_room("browser-fallback")),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_pages_resume_after_their_server_restarts() {
    let redis = RedisServer::start();
    let redis_url = redis.url();
    // The instance under the pages is a real process, so it can die and come back on its
    // port; the other one, which a REST member posts through meanwhile, stays up.
    let mut restarted = ServerProcess::start(&[("REDIS_URL", redis_url.as_str())]).await;
    let other = TestApp::spawn(Backend::Redis(&redis), &[]).await;
    let mut scenario = BrowserScenario::start(
        "restart",
        &[
            ("CHAT_URL_A", restarted.base_url.clone()),
            ("CHAT_URL_B", other.base_url.clone()),
            ("CHAT_ROOM", unique_room("browser-restart")),
        ],
    );
    loop {
        let what = match scenario.next().await {
            Step::Passed => break,
            Step::Control(what) => what,
        };
        match what.as_str() {
            "stop-a" => restarted.kill(),
            "start-a" => restarted.start_again().await,
            other => panic!("the scenario asked for {other:?}, which this test does not do"),
        }
        scenario.done(&what);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_shows_markup_as_text_and_errors_as_sentences() {
    let app = TestApp::spawn(Backend::Memory, &[]).await;
    let phone = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser/phone.png");
    std::fs::create_dir_all(phone.parent().expect("a parent directory"))
        .expect("creating target/browser");
    BrowserScenario::run(
        "text-and-errors",
        &[
            ("CHAT_URL_A", app.base_url.clone()),
            ("CHAT_ROOM", unique_room("browser-text")),
            ("CHAT_SCREENSHOT", phone.display().to_string()),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_signs_in_through_the_apps_hook_when_the_server_requires_it() {
    let key = SigningKey::ec("browser-1");
    let provider = Provider::start(&[&key]).await;
    let vars = provider.vars();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = TestApp::spawn(Backend::Memory, &vars).await;
    let name = "Ada Lovelace";
    BrowserScenario::run(
        "sign-in",
        &[
            ("CHAT_URL_A", app.base_url.clone()),
            ("CHAT_ROOM", unique_room("browser-sign-in")),
            ("CHAT_ID_TOKEN", key.sign(&claims(name))),
            ("CHAT_ID_NAME", name.to_owned()),
        ],
    )
    .await;
}

/// Runs `scenario` with two instances on one Redis (`CHAT_URL_A`, `CHAT_URL_B`) and a room
/// of its own.
async fn run_on_two_instances(scenario: &str) {
    let redis = RedisServer::start();
    let a = TestApp::spawn(Backend::Redis(&redis), &[]).await;
    let b = TestApp::spawn(Backend::Redis(&redis), &[]).await;
    BrowserScenario::run(
        scenario,
        &[
            ("CHAT_URL_A", a.base_url.clone()),
            ("CHAT_URL_B", b.base_url.clone()),
            ("CHAT_ROOM", unique_room(&format!("browser-{scenario}"))),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_presence_dots_and_typing_line_follow_the_other_page() {
    run_on_two_instances("presence-and-typing").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_edits_and_deletes_show_live_in_history_and_after_a_replay() {
    run_on_two_instances("edit-and-delete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_owner_kicks_and_bans_and_the_removed_page_says_so() {
    run_on_two_instances("moderation").await;
}
