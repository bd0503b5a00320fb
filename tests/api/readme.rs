//! What the README shows is what is tested: its curl walkthrough runs as written against a
//! real server process, `curl -N` streams SSE, a standalone WebSocket client (Python's
//! `websockets`, as the README suggests) chats, and so does its socket.io snippet (node, with
//! the `socket.io-client` of the tests' Node setup).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::node::{node_dir, require_module};
use crate::support::process::{ServerProcess, run_with_limit};
use crate::support::unique_room;

const README: &str = include_str!("../../README.md");

/// The first ```<language> block after `heading`.
fn block_after(heading: &str, language: &str) -> String {
    let section = README
        .split_once(heading)
        .unwrap_or_else(|| panic!("README has no {heading:?}"))
        .1;
    let block = section
        .split_once(&format!("```{language}\n"))
        .unwrap_or_else(|| panic!("a {language} block follows {heading:?}"))
        .1;
    block
        .split_once("```")
        .expect("the block is closed")
        .0
        .to_owned()
}

/// Reads a running child's stdout until it contains `needle` (or 10 s pass), then ends the
/// child; returns what it printed. `before_end` runs just before the child is ended.
fn read_until(mut child: std::process::Child, needle: &str, before_end: impl FnOnce()) -> String {
    let mut stdout = child.stdout.take().expect("piped stdout");
    let (chunks, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(read) = std::io::Read::read(&mut stdout, &mut buffer) {
            if read == 0 || chunks.send(buffer[..read].to_vec()).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = String::new();
    while !out.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(chunk) => out.push_str(&String::from_utf8_lossy(&chunk)),
            Err(_) => break,
        }
    }
    before_end();
    let _ = child.kill();
    let _ = child.wait();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_curl_walkthrough_works_as_written() {
    let server = ServerProcess::start(&[]).await;
    let script =
        block_after("## Try it with curl", "sh").replace("http://localhost:8080", &server.base_url);
    let mut command = Command::new("bash");
    command.arg("-euo").arg("pipefail").arg("-c").arg(&script);
    let (status, output) =
        tokio::task::spawn_blocking(move || run_with_limit(command, Duration::from_secs(30)))
            .await
            .expect("the walkthrough thread");
    assert!(status.success(), "the walkthrough failed: {output}");
    assert!(output.contains(r#""message":"hello, bob""#), "{output}");
    assert!(
        output.contains(r#""username":"bob","online":false"#),
        "{output}"
    );
    assert!(output.trim_end().ends_with("204"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_streams_server_sent_events() {
    let server = ServerProcess::start(&[]).await;
    let room = unique_room("curl-sse");
    let client = reqwest::Client::new();
    let created: serde_json::Value = client
        .post(format!("{}/rooms", server.base_url))
        .json(&serde_json::json!({"roomId": room, "username": "alice"}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("create reply");
    let token = created["token"].as_str().unwrap().to_owned();
    // curl -N, as in the README, replaying from the start of the room.
    let curl = Command::new("curl")
        .arg("-sN")
        .arg(format!(
            "{}/rooms/{room}/events?token={token}&lastEventId=0-0",
            server.base_url
        ))
        .stdout(Stdio::piped())
        .spawn()
        .expect("running curl");
    let stream = tokio::task::spawn_blocking(move || read_until(curl, "seen by curl", || {}));
    let posted: serde_json::Value = client
        .post(format!("{}/rooms/{room}/messages", server.base_url))
        .bearer_auth(&token)
        .json(&serde_json::json!({"message": "seen by curl"}))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("post reply");
    let output = stream.await.expect("the curl thread");
    assert!(output.starts_with("retry: 3000\n\n"), "{output}");
    assert!(output.contains("event: create:room:success"), "{output}");
    let id = posted["id"].as_str().unwrap();
    assert!(
        output.contains(&format!("id: {id}\nevent: create:chat:success\ndata: ")),
        "{output}"
    );
    assert!(output.contains(r#""message":"seen by curl""#), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_websocket_client_chats() {
    let server = ServerProcess::start(&[]).await;
    let room = unique_room("cli-ws");
    let url = format!("{}/ws", server.base_url.replacen("http://", "ws://", 1));
    let lines = format!(
        "{{\"event\": \"create:room\", \"ref\": \"c1\", \"data\": {{\"roomId\": \"{room}\", \"username\": \"alice\"}}}}\n\
         {{\"event\": \"create:chat\", \"ref\": \"c2\", \"data\": {{\"roomId\": \"{room}\", \"message\": \"hi\", \"clientMsgId\": \"m-1\"}}}}\n"
    );
    let output = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("python3")
            .arg("-m")
            .arg("websockets")
            .arg(url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 -m websockets (pip install websockets)");
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(lines.as_bytes())
            .expect("writing the events");
        stdin.flush().expect("flushing the events");
        // Read what the client prints until the chat broadcast is in (or time is up), then
        // close its stdin, which ends it.
        read_until(child, "create:chat:success", move || drop(stdin))
    })
    .await
    .expect("the client thread");
    assert!(output.contains(r#""event":"ack","ref":"c1""#), "{output}");
    assert!(
        output.contains(r#""event":"create:room:success""#),
        "{output}"
    );
    assert!(output.contains(r#""event":"ack","ref":"c2""#), "{output}");
    assert!(
        output.contains(r#""event":"create:chat:success""#) && output.contains(r#""message":"hi""#),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socketio_snippet_works_as_written() {
    require_module("socket.io-client");
    let server = ServerProcess::start(&[]).await;
    let script = block_after("### socket.io clients", "js")
        .replace("http://localhost:8080", &server.base_url);
    // An ES module from the command line resolves `socket.io-client` from its directory.
    let mut command = Command::new("node");
    command
        .arg("--input-type=module")
        .arg("--eval")
        .arg(&script)
        .current_dir(node_dir());
    let (status, output) =
        tokio::task::spawn_blocking(move || run_with_limit(command, Duration::from_secs(30)))
            .await
            .expect("the snippet's thread");
    assert!(status.success(), "the snippet failed: {output}");
    assert!(output.starts_with("create:chat:success {"), "{output}");
    for field in [
        "id: '",
        "roomId: 'lobby'",
        "username: 'alice'",
        "message: 'hello'",
        "ts: '",
    ] {
        assert!(output.contains(field), "no {field} in {output}");
    }
}
