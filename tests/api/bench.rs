//! `chat-bench`, the load generator BENCHMARKS.md is measured with, run against the real server
//! binary on both stores: every scenario, small, over `/ws` and socket.io, and what its report
//! must say (every message delivered once and in order, the server's CPU and memory read from
//! `/proc`, one Redis round trip per post at most), and with two server instances on one Redis,
//! every room spread over both; and the `ephemeral` scenario's counts of `typing` and
//! `presence` in a small room whose members flap. Only with the `bench` feature, which builds
//! the tool; `scripts/test` enables it.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::support::RedisServer;
use crate::support::process::{ServerProcess, run_with_limit};

/// A run is a second of sending plus set-up and drain; this only stops a hung tool.
const RUN_LIMIT: Duration = Duration::from_secs(90);

/// The server as `scripts/bench` starts it: no rate limits, caps above what the runs open.
const LOAD_TEST_VARS: [(&str, &str); 4] = [
    ("RATE_LIMITS", "off"),
    ("MAX_CONNECTIONS_PER_IP", "19900"),
    ("MAX_HTTP_CONNECTIONS_PER_IP", "19900"),
    ("RUST_LOG", "warn"),
];

/// Runs `chat-bench` against `server` and returns its JSON report (an array for `sweep`).
async fn chat_bench(server: &ServerProcess, redis: bool, args: &[String]) -> Value {
    chat_bench_on(std::slice::from_ref(server), redis, args).await
}

/// The host:port `chat-bench --server` takes.
fn address(server: &ServerProcess) -> &str {
    server
        .base_url
        .strip_prefix("http://")
        .expect("the server's base URL is http://host:port")
}

/// Runs `chat-bench` with its members spread over `servers`.
async fn chat_bench_on(servers: &[ServerProcess], redis: bool, args: &[String]) -> Value {
    let join =
        |each: fn(&ServerProcess) -> String| servers.iter().map(each).collect::<Vec<_>>().join(",");
    let mut all = vec![
        "--server".to_owned(),
        join(|server| address(server).to_owned()),
        "--server-pid".to_owned(),
        join(|server| server.pid().to_string()),
    ];
    if redis {
        all.push("--redis".to_owned());
    }
    all.extend_from_slice(args);
    run_chat_bench(all).await
}

/// Runs `chat-bench startup`, which starts the server binary itself.
async fn chat_bench_startup(redis_url: &str, runs: usize) -> Value {
    let args = [
        "startup",
        "--binary",
        env!("CARGO_BIN_EXE_chat-server"),
        "--redis-url",
        redis_url,
        "--runs",
        &runs.to_string(),
    ];
    run_chat_bench(args.map(str::to_owned).to_vec()).await
}

/// Runs the tool to completion (or fails the test at `RUN_LIMIT`) and reads its JSON report.
async fn run_chat_bench(args: Vec<String>) -> Value {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let json_path = std::env::temp_dir().join(format!(
        "chat-bench-test-{}-{}.json",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat-bench"));
    command.arg("--json").arg(&json_path).args(&args);
    let (status, output) = tokio::task::spawn_blocking(move || run_with_limit(command, RUN_LIMIT))
        .await
        .expect("the chat-bench thread");
    assert!(
        status.success(),
        "chat-bench {args:?} failed ({status}): {output}"
    );
    let text = std::fs::read_to_string(&json_path).expect("chat-bench wrote its JSON report");
    let _ = std::fs::remove_file(&json_path);
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("the report is JSON ({err}): {text}"))
}

fn count(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("`{key}` is a count in {report}"))
}

fn figure(report: &Value, key: &str) -> f64 {
    report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` is a number in {report}"))
}

/// A fan-out, chat or SSE report: about `senders × rate × seconds` sent, each to every member
/// of its room, all of it delivered once and in order, with latencies and the server's use.
fn assert_lossless(report: &Value, members: u64, nominal_sent: u64, senders: u64) {
    let sent = count(report, "sent");
    assert!(
        sent >= nominal_sent / 2 && sent <= nominal_sent + senders,
        "sent {sent}, about {nominal_sent} expected: {report}"
    );
    assert_eq!(count(report, "send_failures"), 0, "{report}");
    assert_eq!(count(report, "expected"), sent * members, "{report}");
    assert_eq!(count(report, "delivered"), sent * members, "{report}");
    assert_eq!(count(report, "lost"), 0, "{report}");
    assert_eq!(count(report, "duplicates_or_reordered"), 0, "{report}");
    assert!(figure(report, "deliveries_per_s") > 0.0, "{report}");
    let latency = &report["latency_ms"];
    let (p50, p99, max) = (
        figure(latency, "p50"),
        figure(latency, "p99"),
        figure(latency, "max"),
    );
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= max,
        "latencies in order: {report}"
    );
    // Read in clock ticks (10 ms): a one-second run of ten posts may take the server less
    // than one (seen on Redis, fan-out 1 × 10 at 10 msg/s).
    assert!(figure(report, "server_cpu_s") >= 0.0, "{report}");
    assert!(count(report, "server_rss_kib_after") > 0, "{report}");
    assert!(figure(report, "bench_cpu_s") >= 0.0, "{report}");
}

/// The arguments of a one-second run of a load scenario (`fanout`, `chat`, `sse`, or `sweep`
/// and its options): `rooms` × `members` at `rate` messages per second per sender.
fn load(scenario: &[&str], rooms: u64, members: u64, rate: u64) -> Vec<String> {
    let mut args: Vec<String> = scenario.iter().map(|arg| (*arg).to_owned()).collect();
    for (flag, value) in [
        ("--rooms", rooms),
        ("--members", members),
        ("--rate", rate),
        ("--duration", 1),
    ] {
        args.push(flag.to_owned());
        args.push(value.to_string());
    }
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_bench_runs_every_scenario_on_the_memory_store() {
    let server = ServerProcess::start(&LOAD_TEST_VARS).await;

    let fanout = chat_bench(&server, false, &load(&["fanout"], 2, 20, 20)).await;
    assert_eq!(fanout["scenario"], "fanout");
    assert_eq!(fanout["transport"], "ws");
    assert_lossless(&fanout, 20, 2 * 20, 2);

    let chat = chat_bench(&server, false, &load(&["chat"], 2, 5, 2)).await;
    assert_eq!(chat["scenario"], "chat");
    assert_lossless(&chat, 5, 2 * 5 * 2, 2 * 5);

    // A room's REST sender is four connections sharing the rate.
    let sse = chat_bench(&server, false, &load(&["sse"], 1, 10, 10)).await;
    assert_eq!(sse["scenario"], "sse");
    assert_lossless(&sse, 10, 10, 4);

    let idle_args = ["idle", "--connections", "50", "--members", "10"].map(String::from);
    let idle = chat_bench(&server, false, &idle_args).await;
    assert_eq!(idle["scenario"], "idle");
    assert_eq!(count(&idle, "connections"), 50, "{idle}");
    assert!(count(&idle, "server_rss_kib_after") > 0, "{idle}");
    assert!(idle["server_rss_kib_per_connection"].is_number(), "{idle}");

    // Two steps, 10 then 20 msg/s, under a bound no small run misses: both clean.
    let sweep_of = [
        "sweep",
        "--of",
        "fanout",
        "--factor",
        "2",
        "--max-steps",
        "2",
        "--max-p99-ms",
        "10000",
    ];
    let sweep = chat_bench(&server, false, &load(&sweep_of, 1, 10, 10)).await;
    let steps = sweep
        .as_array()
        .expect("a sweep reports each step and a summary");
    assert_eq!(steps.len(), 3, "{sweep}");
    for (step, rate) in steps[..2].iter().zip([10, 20]) {
        assert_eq!(step["sweep_clean"], true, "{step}");
        assert_lossless(step, 10, rate, 1);
    }
    assert_eq!(steps[2]["scenario"], "sweep");
    assert_eq!(figure(&steps[2], "best_clean_rate"), 20.0, "{sweep}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_bench_speaks_socketio_without_loss() {
    let server = ServerProcess::start(&LOAD_TEST_VARS).await;
    let socketio = |mut args: Vec<String>| {
        args.splice(0..0, ["--transport", "socketio"].map(String::from));
        args
    };

    let fanout = chat_bench(&server, false, &socketio(load(&["fanout"], 2, 20, 20))).await;
    assert_eq!(fanout["scenario"], "fanout");
    assert_eq!(fanout["transport"], "socketio");
    assert_lossless(&fanout, 20, 2 * 20, 2);

    let chat = chat_bench(&server, false, &socketio(load(&["chat"], 2, 5, 2))).await;
    assert_eq!(chat["transport"], "socketio");
    assert_lossless(&chat, 5, 2 * 5 * 2, 2 * 5);

    let idle_args = ["idle", "--connections", "50", "--members", "10"].map(String::from);
    let idle = chat_bench(&server, false, &socketio(idle_args.to_vec())).await;
    assert_eq!(idle["transport"], "socketio");
    assert_eq!(count(&idle, "connections"), 50, "{idle}");
    assert!(idle["server_rss_kib_per_connection"].is_number(), "{idle}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_bench_on_redis_counts_at_most_one_round_trip_per_post() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut vars = LOAD_TEST_VARS.to_vec();
    vars.push(("REDIS_URL", &url));
    let server = ServerProcess::start(&vars).await;

    // (scenario, members, rate per sender, messages its second sends, senders)
    for (scenario, members, rate, nominal_sent, senders) in
        [("fanout", 10, 10, 10, 1), ("chat", 5, 2, 10, 5)]
    {
        let report = chat_bench(&server, true, &load(&[scenario], 1, members, rate)).await;
        assert_lossless(&report, members, nominal_sent, senders);
        let per_post = figure(&report, "redis_post_round_trips_per_message");
        assert!(
            per_post > 0.0 && per_post <= 1.0,
            "Redis round trips per post: {per_post} in {report}"
        );
        assert!(count(&report, "redis_round_trips") > 0, "{report}");
        let (p50, p99) = (
            figure(&report, "redis_post_round_trip_ms_p50"),
            figure(&report, "redis_post_round_trip_ms_p99"),
        );
        assert!(
            p50 > 0.0 && p50 <= p99,
            "post round trip p50 {p50}, p99 {p99} in {report}"
        );
    }

    let startup = chat_bench_startup(&url, 3).await;
    let (median, max) = (
        figure(&startup, "startup_ms_median"),
        figure(&startup, "startup_ms_max"),
    );
    assert!(
        0.0 < median && median <= max,
        "startup median {median} ms, max {max} ms"
    );
}

/// Two servers on `redis`, configured as `scripts/bench` starts them.
async fn two_servers_on(redis: &RedisServer) -> [ServerProcess; 2] {
    let url = redis.url();
    let mut vars = LOAD_TEST_VARS.to_vec();
    vars.push(("REDIS_URL", &url));
    [
        ServerProcess::start(&vars).await,
        ServerProcess::start(&vars).await,
    ]
}

/// The redis-server's process id, for `--redis-pid`.
fn pid_of(redis: &RedisServer) -> String {
    let info = redis.command(&["info", "server"]);
    info.lines()
        .find_map(|line| line.trim().strip_prefix("process_id:"))
        .unwrap_or_else(|| panic!("INFO server names the process: {info}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_bench_spreads_every_room_over_two_servers_on_one_redis() {
    let redis = RedisServer::start();
    let servers = two_servers_on(&redis).await;
    let redis_pid = pid_of(&redis);

    // (scenario, members per room, rate per sender, messages its second sends, senders), in
    // two rooms: fan-out's two senders are on different servers.
    for (scenario, members, rate, nominal_sent, senders) in [
        ("fanout", 10, 10, 2 * 10, 2),
        ("chat", 4, 2, 2 * 4 * 2, 2 * 4),
    ] {
        let mut args = vec!["--redis-pid".to_owned(), redis_pid.clone()];
        args.extend(load(&[scenario], 2, members, rate));
        let report = chat_bench_on(&servers, true, &args).await;
        assert_lossless(&report, members, nominal_sent, senders);
        let sent = count(&report, "sent");
        let shares = report["servers"]
            .as_array()
            .unwrap_or_else(|| panic!("a share per server: {report}"));
        assert_eq!(shares.len(), 2, "{report}");
        let mut sent_by_servers = 0;
        for (share, server) in shares.iter().zip(&servers) {
            assert_eq!(share["server"], address(server), "{report}");
            // Half of every room is on each server, so each delivers every message to its
            // half, the other server's senders' included: those crossed over Redis.
            assert_eq!(count(share, "connections"), members, "{report}");
            assert_eq!(count(share, "delivered"), sent * members / 2, "{report}");
            assert!(count(share, "sent") > 0, "{report}");
            sent_by_servers += count(share, "sent");
            // CPU time is read in clock ticks (10 ms): a server's share of a small run may be 0.
            assert!(figure(share, "cpu_s") >= 0.0, "{report}");
            assert!(count(share, "rss_kib_after") > 0, "{report}");
        }
        assert_eq!(sent_by_servers, sent, "{report}");
        let cpu: f64 = shares.iter().map(|share| figure(share, "cpu_s")).sum();
        assert!(
            (figure(&report, "server_cpu_s") - cpu).abs() < 1e-9,
            "the total is the servers' sum: {report}"
        );
        assert!(
            figure(&report, "redis_post_round_trips_per_message") > 0.0,
            "both servers' metrics are read: {report}"
        );
        // Read, though Redis' part of a small run is often under a clock tick.
        assert!(figure(&report, "redis_cpu_s") >= 0.0, "{report}");
        assert!(
            figure(&report, "redis_cpu_us_per_message") >= 0.0,
            "{report}"
        );
    }
}

/// The arguments of a 3 s `ephemeral` run: `members` in one room typing every 2.5 s (the
/// server's throttle is 2 s, so every typing is broadcast), `flaps` per second away for
/// `away_ms`.
fn ephemeral(members: u64, flaps: &str, away_ms: u64) -> Vec<String> {
    [
        "ephemeral",
        "--members",
        &members.to_string(),
        "--typing-every",
        "2.5",
        "--duration",
        "3",
        "--flaps-per-sec",
        flaps,
        "--away-ms",
        &away_ms.to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// What every `ephemeral` report must say: each member typed, every typing was acked and
/// broadcast, every flap got its membership back with nothing replayed, nothing logged
/// arrived, no connection was lost; the report's totals are the typing and presence counts.
/// Returns its own figures.
fn assert_ephemeral(report: &Value, members: u64) -> &Value {
    assert_eq!(report["scenario"], "ephemeral", "{report}");
    let figures = &report["ephemeral"];
    let sent = count(figures, "typing_sent");
    // At most two typing 2.5 s apart fit in a member's 3 s.
    assert!(0 < sent && sent <= 2 * members, "typing sent: {report}");
    assert_eq!(count(figures, "typing_acked"), sent, "{report}");
    assert_eq!(count(figures, "typing_refused"), 0, "{report}");
    assert_eq!(count(figures, "typing_broadcast"), sent, "{report}");
    for none in [
        "resume_failures",
        "replayed",
        "logged_received",
        "connections_lost",
    ] {
        assert_eq!(count(figures, none), 0, "{none}: {report}");
    }
    let received = count(figures, "typing_received")
        + count(figures, "presence_online_received")
        + count(figures, "presence_offline_received");
    assert_eq!(count(report, "delivered"), received, "{report}");
    assert_eq!(
        count(report, "expected"),
        count(figures, "typing_expected") + count(figures, "presence_expected"),
        "{report}"
    );
    // No member receives its own typing; flapping members miss some.
    assert!(count(figures, "typing_received") > 0, "{report}");
    assert!(
        count(figures, "typing_received") <= sent * (members - 1),
        "{report}"
    );
    let latency = &report["latency_ms"];
    assert!(
        0.0 < figure(latency, "p50") && figure(latency, "p50") <= figure(latency, "p99"),
        "{report}"
    );
    // CPU time is read in clock ticks (10 ms): a few dozen events may cost less than one.
    assert!(figure(report, "server_cpu_s") >= 0.0, "{report}");
    assert!(
        figure(figures, "server_cpu_us_per_event") >= 0.0,
        "{report}"
    );
    figures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_bench_ephemeral_counts_typing_and_presence_in_a_flapping_room() {
    let members = 8;

    // No flaps: every typing reaches every other member, and the room is told nothing else.
    let server = ServerProcess::start(&LOAD_TEST_VARS).await;
    let steady = chat_bench(&server, false, &ephemeral(members, "0", 0)).await;
    let figures = assert_ephemeral(&steady, members);
    let sent = count(figures, "typing_sent");
    // Every member's first typing falls within the first 2.5 s of the run.
    assert!(members <= sent, "every member typed: {steady}");
    assert_eq!(count(figures, "flaps"), 0, "{steady}");
    assert_eq!(
        count(figures, "typing_expected"),
        sent * (members - 1),
        "{steady}"
    );
    assert_eq!(
        count(figures, "typing_received"),
        sent * (members - 1),
        "{steady}"
    );
    assert_eq!(count(figures, "presence_broadcast"), 0, "{steady}");
    assert_eq!(count(&steady, "lost"), 0, "{steady}");
    drop(server);

    // socket.io members flapping within the grace: each gets its membership back, and
    // nobody is told anything (a server of its own: the last run's members went offline).
    let server = ServerProcess::start(&LOAD_TEST_VARS).await;
    let mut args = vec!["--transport".to_owned(), "socketio".to_owned()];
    args.extend(ephemeral(members, "3", 0));
    let within = chat_bench(&server, false, &args).await;
    assert_eq!(within["transport"], "socketio", "{within}");
    let figures = assert_ephemeral(&within, members);
    assert!(count(figures, "flaps") >= 1, "{within}");
    assert_eq!(count(figures, "presence_broadcast"), 0, "{within}");
    assert_eq!(count(figures, "presence_expected"), 0, "{within}");
    assert_eq!(count(figures, "presence_online_received"), 0, "{within}");
    assert_eq!(count(figures, "presence_offline_received"), 0, "{within}");
    drop(server);

    // Beyond the grace, across two instances on one Redis: each flap tells the room offline,
    // then online, and the report reads both servers and Redis.
    let redis = RedisServer::start();
    let servers = two_servers_on(&redis).await;
    let mut args = vec!["--redis-pid".to_owned(), pid_of(&redis)];
    args.extend(ephemeral(members, "2", 4000));
    let beyond = chat_bench_on(&servers, true, &args).await;
    let figures = assert_ephemeral(&beyond, members);
    let flaps = count(figures, "flaps");
    assert!(flaps >= 1, "{beyond}");
    assert_eq!(count(figures, "presence_broadcast"), 2 * flaps, "{beyond}");
    let (online, offline) = (
        count(figures, "presence_online_received"),
        count(figures, "presence_offline_received"),
    );
    assert!(online > 0 && offline > 0, "{beyond}");
    assert!(online + offline <= 2 * flaps * (members - 1), "{beyond}");
    assert!(count(figures, "presence_expected") > 0, "{beyond}");
    assert!(
        figure(figures, "redis_round_trips_per_event") > 0.0,
        "{beyond}"
    );
    // Read, though Redis' part of a small run is often under a clock tick.
    assert!(figure(figures, "redis_cpu_us_per_event") >= 0.0, "{beyond}");
    assert_eq!(
        beyond["servers"].as_array().map(Vec::len),
        Some(2),
        "{beyond}"
    );
}
