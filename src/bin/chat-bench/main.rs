//! `chat-bench`: the project's load generator. It speaks the wire contract (WebSocket, `/ws`
//! or socket.io by `--transport`, and SSE + REST for the `sse` scenario) with many
//! connections from one process and reports deliveries, loss, order, latency and the CPU and
//! memory of both sides.
//!
//! Scenarios: `idle` (memory per idle connection), `fanout` (one sender per room), `chat`
//! (every member sends), `sse` (fan-out to SSE receivers, REST senders) and `sweep` (raises a
//! scenario's rate until loss appears or p99 passes a bound). Every chat message carries its
//! sender, sequence number and send time (`b <sender> <seq> <ns> …`), so receivers measure
//! latency and detect loss, duplicates and reordering without any shared state.

mod clients;
mod report;
mod socketio;

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use futures_util::{SinkExt, StreamExt, stream};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use clients::{Http, Incoming, Received, Tally, Target, Transport, Ws, bench_message, receive};
use report::{Process, Report};

pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// How many connections are opened at once during setup.
const SETUP_CONCURRENCY: usize = 128;

#[derive(Parser)]
#[command(name = "chat-bench", about = "Load generator for chat-server")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// The server, host:port.
    #[arg(long, global = true, default_value = "127.0.0.1:8080")]
    server: String,
    /// The server's process id, to report its CPU time and memory.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Also write the report as JSON here.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// The server runs on Redis: report its Redis round trips per chat message.
    #[arg(long, global = true)]
    redis: bool,
    /// Spread connections over this many loopback source addresses (127.0.0.1 …).
    #[arg(long, global = true, default_value_t = 8)]
    source_addrs: u8,
    /// What the WebSocket members of `idle`, `fanout` and `chat` speak.
    #[arg(long, global = true, value_enum, default_value_t = Transport::Ws)]
    transport: Transport,
    /// Another process whose CPU time is reported over the server's window (a load run's
    /// sending and draining, not its setup; an idle run's `--hold`), as NAME=PID; repeatable.
    /// For the Redis nodes behind the server, whose cost per message setup would blur.
    #[arg(long = "cpu-of", global = true, value_parser = named_process)]
    cpu_of: Vec<(String, u32)>,
}

/// A `NAME=PID` of `--cpu-of`.
fn named_process(text: &str) -> Result<(String, u32), String> {
    let (name, pid) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=PID"))?;
    let pid = pid
        .parse()
        .map_err(|err| format!("{pid:?} is not a process id: {err}"))?;
    Ok((name.to_owned(), pid))
}

#[derive(Subcommand)]
enum Scenario {
    /// N connections, each a member of a room; reports server RSS per connection.
    Idle {
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Members per room.
        #[arg(long, default_value_t = 10)]
        members: usize,
        /// Seconds to hold the connections open and idle after setup, measuring the CPU the
        /// server and `--cpu-of` processes spend on them meanwhile (pings, presence refreshes)
        /// and, with `--redis`, the server's Redis round trips. `/ws` members are not read, so
        /// the server closes them once two pings went unanswered (`WS_PING_SECS` × 2, 50 s by
        /// default, counted from their join): hold them for less.
        #[arg(long, default_value_t = 0)]
        hold: u64,
    },
    /// R rooms × M members over WebSocket (`/ws` or socket.io), one sender per room.
    Fanout(Load),
    /// R rooms × M members over WebSocket (`/ws` or socket.io), every member sends.
    Chat(Load),
    /// R rooms × M SSE receivers, one REST sender per room (4 connections sharing its rate).
    Sse(Load),
    /// Starts the server binary and measures the time until `/readyz` answers 200.
    Startup {
        /// The server binary to start.
        #[arg(long, default_value = "target/release/chat-server")]
        binary: PathBuf,
        /// REDIS_URL for the started server (unset: the in-memory store).
        #[arg(long)]
        redis_url: Option<String>,
        /// How many starts to measure.
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// Raises the rate of a scenario until loss appears or p99 passes a bound.
    Sweep {
        #[arg(long, value_enum)]
        of: SweepOf,
        #[command(flatten)]
        load: Load,
        /// The p99 bound, in milliseconds.
        #[arg(long, default_value_t = 25.0)]
        max_p99_ms: f64,
        /// Each step multiplies the rate by this.
        #[arg(long, default_value_t = 1.5)]
        factor: f64,
        #[arg(long, default_value_t = 12)]
        max_steps: usize,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum SweepOf {
    Fanout,
    Chat,
    Sse,
}

#[derive(Args, Clone, Debug)]
struct Load {
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    #[arg(long, default_value_t = 100)]
    members: usize,
    /// Messages per second per sender.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Many connections need many files: take everything the hard limit allows.
    if let Err(err) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("chat-bench: could not raise the file limit: {err}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("chat-bench: cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chat-bench: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> BenchResult<()> {
    let addr = cli
        .server
        .to_socket_addrs()?
        .next()
        .ok_or("the server address does not resolve")?;
    let target = Target {
        addr,
        host: cli.server.clone(),
        source_addrs: cli.source_addrs.max(1),
        transport: cli.transport,
    };
    let websocket_scenario = matches!(
        cli.scenario,
        Scenario::Idle { .. } | Scenario::Fanout(_) | Scenario::Chat(_)
    ) || matches!(cli.scenario, Scenario::Sweep { of, .. } if of != SweepOf::Sse);
    if target.transport != Transport::Ws && !websocket_scenario {
        return Err("--transport applies to idle, fanout and chat (and their sweeps)".into());
    }
    let server = cli.server_pid.map(Process::of);
    let others: Vec<(String, Process)> = cli
        .cpu_of
        .iter()
        .map(|(name, pid)| (name.clone(), Process::of(*pid)))
        .collect();
    let watched = Watched {
        server: server.as_ref(),
        others: &others,
    };
    let reports = match &cli.scenario {
        Scenario::Idle {
            connections,
            members,
            hold,
        } => {
            let shape = IdleShape {
                connections: *connections,
                members: (*members).max(1),
                hold: Duration::from_secs(*hold),
            };
            vec![idle(&target, watched, shape, cli.redis).await?]
        }
        Scenario::Fanout(load) | Scenario::Chat(load) | Scenario::Sse(load) => {
            let kind = match &cli.scenario {
                Scenario::Fanout(_) => SweepOf::Fanout,
                Scenario::Chat(_) => SweepOf::Chat,
                _ => SweepOf::Sse,
            };
            let run = load_run(&target, watched, kind, load);
            vec![with_redis_calls(&target, cli.redis, run).await?]
        }
        Scenario::Startup {
            binary,
            redis_url,
            runs,
        } => vec![startup(binary, redis_url.as_deref(), *runs).await?],
        Scenario::Sweep {
            of,
            load,
            max_p99_ms,
            factor,
            max_steps,
        } => {
            sweep(
                &target,
                watched,
                *of,
                load,
                *max_p99_ms,
                *factor,
                *max_steps,
            )
            .await?
        }
    };
    for report in &reports {
        println!("{}", report.summary());
    }
    let json = if reports.len() == 1 {
        serde_json::to_string_pretty(&reports[0])?
    } else {
        serde_json::to_string_pretty(&reports)?
    };
    match &cli.json {
        Some(path) => std::fs::write(path, json)?,
        None => println!("{json}"),
    }
    Ok(())
}

fn run_id() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    )
}

/// Creates `room` with a first member and joins `members - 1` more, each a WebSocket of its
/// own speaking the target's transport.
async fn ws_room(
    target: &Target,
    room: &str,
    members: usize,
    first_conn: usize,
) -> BenchResult<Vec<Ws>> {
    let transport = target.transport;
    let mut creator = target.member(first_conn).await?;
    transport
        .call(
            &mut creator,
            "create:room",
            json!({"roomId": room, "username": "m0"}),
        )
        .await?;
    let mut all = vec![creator];
    let joined: Vec<BenchResult<Ws>> = stream::iter(1..members)
        .map(|n| {
            let target = target.clone();
            let room = room.to_owned();
            async move {
                let mut ws = target.member(first_conn + n).await?;
                transport
                    .call(
                        &mut ws,
                        "add:member",
                        json!({"roomId": room, "username": format!("m{n}")}),
                    )
                    .await?;
                Ok(ws)
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    for member in joined {
        all.push(member?);
    }
    Ok(all)
}

/// The processes a run measures: the server (`--server-pid`) and others (`--cpu-of`).
#[derive(Clone, Copy)]
struct Watched<'a> {
    server: Option<&'a Process>,
    others: &'a [(String, Process)],
}

/// What `idle` opens and how long it holds it.
struct IdleShape {
    connections: usize,
    members: usize,
    hold: Duration,
}

async fn idle(
    target: &Target,
    Watched { server, others }: Watched<'_>,
    IdleShape {
        connections,
        members,
        hold,
    }: IdleShape,
    redis: bool,
) -> BenchResult<Report> {
    let bench = Process::own();
    let before = server.map(Process::sample).transpose()?;
    let started = Instant::now();
    let id = run_id();
    let transport = target.transport;
    let rooms = connections.div_ceil(members);
    let mut held = Vec::with_capacity(connections);
    // socket.io members are read, to answer Engine.IO's pings: the server drops a socket that
    // leaves them unanswered for 45 s, less than setting up thousands may take. `/ws` members
    // are held unread, as they always were (the server's WebSocket pings wait in the kernel).
    let stop = CancellationToken::new();
    let mut readers = Vec::new();
    for room in 0..rooms {
        let size = members.min(connections - room * members);
        let name = format!("idle-{id}-{room}");
        for ws in ws_room(target, &name, size, room * members).await? {
            if transport == Transport::Ws {
                held.push(ws);
                continue;
            }
            let tally = Tally::new(0, started, Arc::new(AtomicU64::new(0)));
            readers.push(tokio::spawn(receive(
                Incoming::Whole(Box::new(ws)),
                transport,
                tally,
                stop.clone(),
            )));
        }
    }
    let setup = started.elapsed();
    // Let allocations settle (the server has answered every join already).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counting = redis && !hold.is_zero();
    let round_trips_held = if counting {
        Some(round_trips(target).await?.1)
    } else {
        None
    };
    let (server_held, others_held) = (
        server.map(Process::sample).transpose()?,
        sample_all(others)?,
    );
    tokio::time::sleep(hold).await;
    let after = server.map(Process::sample).transpose()?;
    let others_after = sample_all(others)?;
    let round_trips_during_hold = match round_trips_held {
        Some(held) => Some(round_trips(target).await?.1 - held),
        None => None,
    };
    // A reader that ended early lost its connection: it would not be measured.
    let open = held.len()
        + readers
            .iter()
            .filter(|reader| !reader.is_finished())
            .count();
    if open != connections {
        return Err(format!("{} of {connections} connections closed", connections - open).into());
    }
    let mut report = Report::new("idle");
    report.transport = transport.name();
    report.connections = open;
    report.rooms = rooms;
    report.members = members;
    report.setup_s = setup.as_secs_f64();
    report.with_process(before, after, &bench);
    if !hold.is_zero() {
        report.held_s = Some(hold.as_secs_f64());
        if let (Some(held), Some(after)) = (server_held, after) {
            report.server_cpu_s = Some(after.cpu_s - held.cpu_s);
        }
        report.set_others_cpu(others, &others_held, &others_after);
        report.redis_round_trips = round_trips_during_hold.map(|all| all as u64);
    }
    stop.cancel();
    for reader in readers {
        reader.await?;
    }
    drop(held);
    Ok(report)
}

async fn load_run(
    target: &Target,
    Watched { server, others }: Watched<'_>,
    kind: SweepOf,
    load: &Load,
) -> BenchResult<Report> {
    let bench = Process::own();
    let transport = target.transport;
    let epoch = Instant::now();
    let id = run_id();
    // Nothing from an earlier run (a sweep makes several) counts in this one.
    drop(clients::take_latencies());
    let delivered_total = Arc::new(AtomicU64::new(0));
    let stop_receiving = CancellationToken::new();
    let senders_per_room = if kind == SweepOf::Chat {
        load.members
    } else {
        1
    };
    let mut receivers: Vec<tokio::task::JoinHandle<Received>> = Vec::new();
    // Per room: the senders' sending halves (WebSocket), or a REST connection and token.
    let mut ws_senders: Vec<(String, Vec<clients::WsSink>)> = Vec::new();
    let mut rest_senders: Vec<(String, Vec<Http>, String)> = Vec::new();
    let setup_started = Instant::now();
    for room_index in 0..load.rooms {
        let room = format!("bench-{id}-{room_index}");
        let first_conn = room_index * (2 * load.members + REST_SENDERS_PER_ROOM);
        if kind == SweepOf::Sse {
            let (sender, streams) = sse_room(
                target,
                &room,
                load.members,
                first_conn,
                epoch,
                &delivered_total,
                &stop_receiving,
            )
            .await?;
            rest_senders.push(sender);
            receivers.extend(streams);
            continue;
        }
        let members = ws_room(target, &room, load.members, first_conn).await?;
        let mut sinks = Vec::new();
        for (n, ws) in members.into_iter().enumerate() {
            let tally = Tally::new(senders_per_room, epoch, delivered_total.clone());
            // Only senders split their connection: the halves' lock costs every read.
            let incoming = if n < senders_per_room {
                let (sink, stream) = ws.split();
                let sink = Arc::new(tokio::sync::Mutex::new(sink));
                sinks.push(sink.clone());
                Incoming::Half(stream, sink)
            } else {
                Incoming::Whole(Box::new(ws))
            };
            let stop = stop_receiving.clone();
            receivers.push(tokio::spawn(receive(incoming, transport, tally, stop)));
        }
        ws_senders.push((room, sinks));
    }
    let setup = setup_started.elapsed();

    // Send for `duration` seconds at `rate` per sender.
    let server_before = server.map(Process::sample).transpose()?;
    let others_before = sample_all(others)?;
    let bench_before = bench.sample()?;
    let sending_started = Instant::now();
    let deadline = sending_started + Duration::from_secs(load.duration);
    let period = Duration::from_secs_f64(1.0 / load.rate.max(0.001));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for (room, sinks) in ws_senders {
        for (n, sink) in sinks.into_iter().enumerate() {
            let (sent, failed, room, size) =
                (sent.clone(), failed.clone(), room.clone(), load.size);
            let phase = period.mul_f64(spread(senders.len()));
            senders.push(tokio::spawn(async move {
                let mut pace = Pace::start(phase, period, deadline).await;
                while let Some(seq) = pace.next().await {
                    let message = bench_message(n, seq, epoch, size);
                    let text = transport.chat_frame(&room, &message, seq);
                    if sink.lock().await.send(Message::text(text)).await.is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                // Keep the connection: its receiving half is still counting.
                sink
            }));
        }
    }
    let mut rest_tasks = Vec::new();
    for (room, connections, token) in rest_senders {
        // Each of a room's REST connections sends its share of the room's rate.
        let share = period.mul_f64(connections.len() as f64);
        for (n, mut http) in connections.into_iter().enumerate() {
            let (sent, failed, size) = (sent.clone(), failed.clone(), load.size);
            let (room, token) = (room.clone(), token.clone());
            let phase = share.mul_f64(spread(rest_tasks.len()));
            rest_tasks.push(tokio::spawn(async move {
                let path = format!("/rooms/{room}/messages");
                let mut pace = Pace::start(phase, share, deadline).await;
                while let Some(seq) = pace.next().await {
                    let body = json!({"message": bench_message(n, seq, epoch, size)}).to_string();
                    match http.json("POST", &path, Some(&token), Some(body)).await {
                        Ok((201, _)) => sent.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
    }
    let mut sinks = Vec::new();
    for sender in senders {
        sinks.push(sender.await?);
    }
    for task in rest_tasks {
        task.await?;
    }
    let sending = sending_started.elapsed();
    let sent = sent.load(Ordering::Relaxed);
    let receivers_per_room = load.members as u64;
    let expected = sent * receivers_per_room;
    // Drain: until everything expected arrived, or nothing moved for 2 s.
    let mut last = delivered_total.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    while last < expected && quiet_since.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = delivered_total.load(Ordering::Relaxed);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
    let elapsed = sending_started.elapsed();
    let server_after = server.map(Process::sample).transpose()?;
    let others_after = sample_all(others)?;
    let bench_after = bench.sample()?;
    stop_receiving.cancel();
    let mut report = Report::new(match kind {
        SweepOf::Fanout => "fanout",
        SweepOf::Chat => "chat",
        SweepOf::Sse => "sse",
    });
    report.transport = if kind == SweepOf::Sse {
        "sse"
    } else {
        transport.name()
    };
    report.rooms = load.rooms;
    report.members = load.members;
    report.connections = receivers.len() + if kind == SweepOf::Sse { load.rooms } else { 0 };
    report.rate_per_sender = load.rate;
    report.message_bytes = load.size;
    report.setup_s = setup.as_secs_f64();
    report.sending_s = sending.as_secs_f64();
    report.elapsed_s = elapsed.as_secs_f64();
    report.sent = sent;
    report.send_failures = failed.load(Ordering::Relaxed);
    report.expected = expected;
    for receiver in receivers {
        report.add(receiver.await?);
    }
    report.set_latencies(clients::take_latencies());
    report.finish(server_before, server_after, bench_before, bench_after);
    report.set_others_cpu(others, &others_before, &others_after);
    drop(sinks);
    Ok(report)
}

/// One reading of each of `others`, in their order.
fn sample_all(others: &[(String, Process)]) -> BenchResult<Vec<report::Sample>> {
    others.iter().map(|(_, process)| process.sample()).collect()
}

/// An SSE room: a REST sender (its connection and token) and `members` SSE receivers.
/// A REST sender waits for each reply before its next post (HTTP/1 has one request at a time
/// per connection): a room's sender is this many connections, each its own sequence, so the
/// rate asked for is not capped by one request's round trip.
const REST_SENDERS_PER_ROOM: usize = 4;

async fn sse_room(
    target: &Target,
    room: &str,
    members: usize,
    first_conn: usize,
    epoch: Instant,
    delivered_total: &Arc<AtomicU64>,
    stop: &CancellationToken,
) -> BenchResult<(
    (String, Vec<Http>, String),
    Vec<tokio::task::JoinHandle<Received>>,
)> {
    let mut http = Http::connect(target, first_conn).await?;
    let body = json!({"roomId": room, "username": "sender"}).to_string();
    let (status, reply) = http.json("POST", "/rooms", None, Some(body)).await?;
    if status != 201 {
        return Err(format!("creating {room}: {status}").into());
    }
    let mut connections = vec![http];
    for n in 1..REST_SENDERS_PER_ROOM {
        connections.push(Http::connect(target, first_conn + 2 * members + n).await?);
    }
    let sender = (room.to_owned(), connections, token_of(&reply)?);
    let opened: Vec<BenchResult<tokio::task::JoinHandle<Received>>> = stream::iter(0..members)
        .map(|n| {
            let (target, room, total, stop) = (
                target.clone(),
                room.to_owned(),
                delivered_total.clone(),
                stop.clone(),
            );
            async move {
                let conn = first_conn + 1 + 2 * n;
                let mut http = Http::connect(&target, conn).await?;
                let body = json!({"username": format!("m{n}")}).to_string();
                let (status, reply) = http
                    .json("POST", &format!("/rooms/{room}/members"), None, Some(body))
                    .await?;
                if status != 201 {
                    return Err(format!("joining {room}: {status}").into());
                }
                let token = token_of(&reply)?;
                let stream_http = Http::connect(&target, conn + 1).await?;
                let (opened, is_open) = tokio::sync::oneshot::channel();
                let tally = Tally::new(REST_SENDERS_PER_ROOM, epoch, total);
                let path = format!("/rooms/{room}/events");
                let task = tokio::spawn(async move {
                    stream_http
                        .receive_sse(&path, &token, tally, stop, opened)
                        .await
                        .unwrap_or_else(|err| {
                            eprintln!("chat-bench: an SSE receiver failed: {err}");
                            Received::default()
                        })
                });
                is_open.await.map_err(|_| "an SSE stream did not open")?;
                Ok(task)
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    let streams = opened.into_iter().collect::<BenchResult<Vec<_>>>()?;
    Ok((sender, streams))
}

/// Runs a load and adds the server's Redis round trips per chat message, from its own
/// `chat_redis_round_trip_seconds_count` (every exchange, posts and background work alike).
async fn with_redis_calls(
    target: &Target,
    redis: bool,
    run: impl std::future::Future<Output = BenchResult<Report>>,
) -> BenchResult<Report> {
    if !redis {
        return run.await;
    }
    let before = round_trips(target).await?;
    let mut report = run.await?;
    let after = round_trips(target).await?;
    let posts = after.0 - before.0;
    let all = after.1 - before.1;
    report.redis_round_trips = Some(all as u64);
    if report.sent > 0 {
        report.redis_round_trips_per_message = Some(all / report.sent as f64);
        report.redis_post_round_trips_per_message = Some(posts / report.sent as f64);
    }
    Ok(report)
}

/// (round trips of posts, all round trips) so far, from the server's `/metrics`.
async fn round_trips(target: &Target) -> BenchResult<(f64, f64)> {
    let mut http = Http::connect(target, 0).await?;
    let (status, body) = http.json("GET", "/metrics", None, None).await?;
    if status != 200 {
        return Err(format!("/metrics answered {status}").into());
    }
    let text = String::from_utf8_lossy(&body);
    let mut posts = 0.0;
    let mut all = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("chat_redis_round_trip_seconds_count") else {
            continue;
        };
        let value: f64 = rest
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        all += value;
        if rest.contains("op=\"post\"") {
            posts += value;
        }
    }
    Ok((posts, all))
}

/// Starts the server `runs` times and measures start to the first `/readyz` 200.
async fn startup(
    binary: &std::path::Path,
    redis_url: Option<&str>,
    runs: usize,
) -> BenchResult<Report> {
    let mut times_ms = Vec::new();
    for _ in 0..runs.max(1) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut command = std::process::Command::new(binary);
        command
            .env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(url) = redis_url {
            command.env("REDIS_URL", url);
        }
        let started = Instant::now();
        let mut child = command.spawn()?;
        let target = Target {
            addr: ([127, 0, 0, 1], port).into(),
            host: format!("127.0.0.1:{port}"),
            source_addrs: 1,
            transport: Transport::Ws,
        };
        let ready = loop {
            if started.elapsed() > Duration::from_secs(10) {
                break None;
            }
            if let Ok(mut http) = Http::connect(&target, 0).await
                && let Ok((200, _)) = http.json("GET", "/readyz", None, None).await
            {
                break Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        };
        let _ = child.kill();
        let _ = child.wait();
        times_ms.push(ready.ok_or("the server never became ready")?.as_secs_f64() * 1000.0);
    }
    times_ms.sort_by(f64::total_cmp);
    let mut report = Report::new("startup");
    report.startup_ms_median = Some(times_ms[times_ms.len() / 2]);
    report.startup_ms_max = times_ms.last().copied();
    Ok(report)
}

/// One sender's schedule: a message every `period` until `deadline`, starting after `phase`
/// so that senders are out of step, as people are (no synchronized bursts).
struct Pace {
    ticks: tokio::time::Interval,
    deadline: Instant,
    seq: u64,
}

impl Pace {
    async fn start(phase: Duration, period: Duration, deadline: Instant) -> Self {
        tokio::time::sleep(phase).await;
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            ticks,
            deadline,
            seq: 0,
        }
    }

    /// The next message's sequence number (from 1), or `None` once time is up.
    async fn next(&mut self) -> Option<u64> {
        self.ticks.tick().await;
        if Instant::now() >= self.deadline {
            return None;
        }
        self.seq += 1;
        Some(self.seq)
    }
}

/// A fraction in [0, 1) for the `n`th sender, evenly spread (golden-ratio sequence).
fn spread(n: usize) -> f64 {
    (n as f64 * 0.618_033_988_749_895).fract()
}

fn token_of(reply: &[u8]) -> BenchResult<String> {
    let value: serde_json::Value = serde_json::from_slice(reply)?;
    value["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "no token in the reply".into())
}

async fn sweep(
    target: &Target,
    watched: Watched<'_>,
    of: SweepOf,
    load: &Load,
    max_p99_ms: f64,
    factor: f64,
    max_steps: usize,
) -> BenchResult<Vec<Report>> {
    let mut reports = Vec::new();
    let mut load = load.clone();
    let mut best: Option<f64> = None;
    for _ in 0..max_steps {
        let mut report = load_run(target, watched, of, &load).await?;
        let clean = report.lost == 0
            && report.duplicates_or_reordered == 0
            && report.latency_ms.p99 <= max_p99_ms;
        report.sweep_clean = Some(clean);
        reports.push(report);
        if !clean {
            break;
        }
        best = Some(load.rate);
        load.rate *= factor;
    }
    let mut summary = Report::new("sweep");
    summary.best_clean_rate = best;
    reports.push(summary);
    Ok(reports)
}
