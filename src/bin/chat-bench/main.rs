//! `chat-bench`: the project's load generator. It speaks the wire contract (WebSocket, `/ws`
//! or socket.io by `--transport`, and SSE + REST for the `sse` scenario) with many
//! connections from one process and reports deliveries, loss, order, latency and the CPU and
//! memory of both sides.
//!
//! Scenarios: `idle` (memory per idle connection), `fanout` (one sender per room), `chat`
//! (every member sends), `sse` (fan-out to SSE receivers, REST senders) and `sweep` (raises a
//! scenario's rate until loss appears or p99 passes a bound; `--svg` draws it, and `plot`
//! draws several sweeps' JSON reports in one picture) and `ephemeral` (one big room where every
//! member types and members drop their connection and resume: [`ephemeral`]). Every chat message carries its
//! sender, sequence number and send time (`b <sender> <seq> <ns> …`), so receivers measure
//! latency and detect loss, duplicates and reordering without any shared state. With several
//! `--server`s (instances on one Redis) each room's members are spread over all of them.

mod clients;
mod ephemeral;
mod plot;
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

use clients::{
    Http, Incoming, Received, Servers, Tally, Target, Transport, Ws, bench_message, receive,
};
use report::{Process, Report, Watched};

pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// How many connections are opened at once during setup.
const SETUP_CONCURRENCY: usize = 128;

#[derive(Parser)]
#[command(name = "chat-bench", about = "Load generator for chat-server")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// The server, host:port; or several, comma-separated or the flag repeated, over which
    /// each room's members (and the senders) are spread in turn.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:8080"
    )]
    server: Vec<String>,
    /// The server's process id, to report its CPU time and memory; with several servers, one
    /// per server in the same order.
    #[arg(long, global = true, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Redis' process id, to report its CPU time per message over the servers' window (a load
    /// run's sending and draining, not its setup; an idle run's `--hold`). Several for a
    /// cluster, comma-separated or repeated, each `PID` or `NAME=PID`: the report gives their
    /// sum and each one's share by name (the PID when unnamed).
    #[arg(long, global = true, value_delimiter = ',', value_parser = redis_process)]
    redis_pid: Vec<(String, u32)>,
    /// Also write the report as JSON here.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// The server runs on Redis: report its Redis round trips per chat message.
    #[arg(long, global = true)]
    redis: bool,
    /// Spread connections over this many loopback source addresses (127.0.0.1 …).
    #[arg(long, global = true, default_value_t = 8)]
    source_addrs: u8,
    /// What the WebSocket members of `idle`, `fanout`, `chat` and `ephemeral` speak.
    #[arg(long, global = true, value_enum, default_value_t = Transport::Ws)]
    transport: Transport,
}

/// A `PID` or `NAME=PID` of `--redis-pid`.
fn redis_process(text: &str) -> Result<(String, u32), String> {
    let (name, pid) = text.split_once('=').unwrap_or((text, text));
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
    /// One room of `--members` over WebSocket (`/ws` or socket.io): every member sends
    /// `typing`, and members drop their connection and resume; reports the `typing` and
    /// `presence` events received and the servers' and Redis' CPU per ephemeral event.
    Ephemeral(ephemeral::Shape),
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
        /// Also draw the sweep here, as SVG: p99 and delivered/s against the asked rate.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// Draws sweeps' JSON reports (`--json`) into one SVG, a line per report.
    Plot {
        /// The SVG file to write.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "chat-bench sweep")]
        title: String,
        /// `[LABEL=]FILE`: a report and its line's label (default: the file's name).
        #[arg(required = true)]
        reports: Vec<String>,
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
    if let Scenario::Plot {
        out,
        title,
        reports,
    } = &cli.scenario
    {
        let series = reports
            .iter()
            .map(|arg| plot::Series::read(arg))
            .collect::<BenchResult<Vec<_>>>()?;
        return Ok(std::fs::write(out, plot::svg(title, &series)?)?);
    }
    let mut targets = Vec::new();
    for server in &cli.server {
        let addr = server
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| format!("{server} does not resolve"))?;
        targets.push(Target {
            addr,
            host: server.clone(),
            source_addrs: cli.source_addrs.max(1),
            transport: cli.transport,
        });
    }
    let servers = Servers::new(targets)?;
    let websocket_scenario = matches!(
        cli.scenario,
        Scenario::Idle { .. } | Scenario::Fanout(_) | Scenario::Chat(_) | Scenario::Ephemeral(_)
    ) || matches!(cli.scenario, Scenario::Sweep { of, .. } if of != SweepOf::Sse);
    if cli.transport != Transport::Ws && !websocket_scenario {
        return Err(
            "--transport applies to idle, fanout, chat (and their sweeps) and ephemeral".into(),
        );
    }
    if !cli.server_pid.is_empty() && cli.server_pid.len() != cli.server.len() {
        return Err("--server-pid needs one process id per --server".into());
    }
    let watched = Watched::new(&cli.server_pid, &cli.redis_pid);
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
            vec![idle(&servers, &watched, shape, cli.redis).await?]
        }
        Scenario::Fanout(load) | Scenario::Chat(load) | Scenario::Sse(load) => {
            let kind = match &cli.scenario {
                Scenario::Fanout(_) => SweepOf::Fanout,
                Scenario::Chat(_) => SweepOf::Chat,
                _ => SweepOf::Sse,
            };
            let run = load_run(&servers, &watched, kind, load);
            vec![with_redis_calls(&servers, cli.redis, run).await?]
        }
        Scenario::Ephemeral(shape) => {
            vec![ephemeral::run(&servers, &watched, shape, cli.redis).await?]
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
            svg: _,
        } => {
            sweep(
                &servers,
                &watched,
                *of,
                load,
                *max_p99_ms,
                *factor,
                *max_steps,
            )
            .await?
        }
        Scenario::Plot { .. } => unreachable!("plot returned above"),
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
    // Drawn once the report is safe, from its JSON as `plot` would read it.
    if let Scenario::Sweep {
        svg: Some(path), ..
    } = &cli.scenario
    {
        let label = format!("{} over {}", reports[0].scenario, reports[0].transport);
        let series = plot::Series::from_report(&label, &serde_json::to_value(&reports)?)?;
        std::fs::write(path, plot::svg(&label, &[series])?)?;
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

/// A member `ws_room` joined: its server's index, its connection, and what its join's ack
/// gave it.
pub struct Joined {
    pub server: usize,
    pub ws: Ws,
    pub token: String,
    /// The id of the last event of the room when it joined (its own join).
    pub last_event_id: String,
}

impl Joined {
    fn of(server: usize, ws: Ws, ack: &serde_json::Value) -> BenchResult<Self> {
        let field = |name: &str| {
            ack[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("no {name} in the join's ack: {ack}"))
        };
        Ok(Self {
            server,
            ws,
            token: field("token")?,
            last_event_id: field("lastEventId")?,
        })
    }
}

/// Creates `room`, the `room_index`th, with a first member and joins `members - 1` more, each
/// a WebSocket of its own speaking the servers' transport, spread over the servers. Member
/// `n` is `m<n>` and comes `n`th; the creator is first.
async fn ws_room(
    servers: &Servers,
    room_index: usize,
    room: &str,
    members: usize,
    first_conn: usize,
) -> BenchResult<Vec<Joined>> {
    let (server, target) = servers.member(room_index, 0);
    let transport = target.transport;
    let mut creator = target.member(first_conn).await?;
    let ack = transport
        .call(
            &mut creator,
            "create:room",
            json!({"roomId": room, "username": "m0"}),
        )
        .await?;
    let mut all = vec![Joined::of(server, creator, &ack)?];
    let joined: Vec<BenchResult<(usize, Joined)>> = stream::iter(1..members)
        .map(|n| {
            let (server, target) = servers.member(room_index, n);
            let target = target.clone();
            let room = room.to_owned();
            async move {
                let mut ws = target.member(first_conn + n).await?;
                let ack = transport
                    .call(
                        &mut ws,
                        "add:member",
                        json!({"roomId": room, "username": format!("m{n}")}),
                    )
                    .await?;
                Ok((n, Joined::of(server, ws, &ack)?))
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    let mut joined = joined.into_iter().collect::<BenchResult<Vec<_>>>()?;
    joined.sort_by_key(|(n, _)| *n);
    all.extend(joined.into_iter().map(|(_, member)| member));
    Ok(all)
}

/// What `idle` opens and how long it holds it.
struct IdleShape {
    connections: usize,
    members: usize,
    hold: Duration,
}

async fn idle(
    servers: &Servers,
    watched: &Watched,
    IdleShape {
        connections,
        members,
        hold,
    }: IdleShape,
    redis: bool,
) -> BenchResult<Report> {
    let bench = Process::own();
    let before = watched.sample()?;
    let started = Instant::now();
    let id = run_id();
    let transport = servers.transport();
    let mut report = Report::new("idle");
    report.spread_over(&hosts(servers));
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
        for Joined { server, ws, .. } in ws_room(servers, room, &name, size, room * members).await?
        {
            report.add_connection(server);
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
    let after = watched.sample()?;
    let counting = redis && !hold.is_zero();
    let round_trips_held = if counting {
        Some(round_trips(servers).await?.all)
    } else {
        None
    };
    tokio::time::sleep(hold).await;
    let after_hold = watched.sample()?;
    let round_trips_during_hold = match round_trips_held {
        Some(held) => Some(round_trips(servers).await?.all - held),
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
    report.transport = transport.name();
    report.rooms = rooms;
    report.members = members;
    report.setup_s = setup.as_secs_f64();
    report.with_process(&before, &after, &bench);
    if !hold.is_zero() {
        report.held_s = Some(hold.as_secs_f64());
        report.with_hold(&after, &after_hold);
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
    servers: &Servers,
    watched: &Watched,
    kind: SweepOf,
    load: &Load,
) -> BenchResult<Report> {
    let bench = Process::own();
    let transport = servers.transport();
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
    // Each receiver and each sender with the index of its server.
    let mut receivers: Vec<(usize, tokio::task::JoinHandle<Received>)> = Vec::new();
    // Per room: the senders' sending halves (WebSocket), or REST connections and a token.
    let mut ws_senders: Vec<(String, Vec<(usize, clients::WsSink)>)> = Vec::new();
    let mut rest_senders: Vec<RestSender> = Vec::new();
    let setup_started = Instant::now();
    for room_index in 0..load.rooms {
        let room = format!("bench-{id}-{room_index}");
        let first_conn = room_index * (2 * load.members + REST_SENDERS_PER_ROOM);
        if kind == SweepOf::Sse {
            let (sender, streams) = sse_room(
                servers,
                (room_index, &room),
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
        let members = ws_room(servers, room_index, &room, load.members, first_conn).await?;
        let mut sinks = Vec::new();
        for (n, Joined { server, ws, .. }) in members.into_iter().enumerate() {
            let tally = Tally::new(senders_per_room, epoch, delivered_total.clone());
            // Only senders split their connection: the halves' lock costs every read.
            let incoming = if n < senders_per_room {
                let (sink, stream) = ws.split();
                let sink = Arc::new(tokio::sync::Mutex::new(sink));
                sinks.push((server, sink.clone()));
                Incoming::Half(stream, sink)
            } else {
                Incoming::Whole(Box::new(ws))
            };
            let stop = stop_receiving.clone();
            receivers.push((
                server,
                tokio::spawn(receive(incoming, transport, tally, stop)),
            ));
        }
        ws_senders.push((room, sinks));
    }
    let setup = setup_started.elapsed();

    // Send for `duration` seconds at `rate` per sender.
    let watched_before = watched.sample()?;
    let bench_before = bench.sample()?;
    let sending_started = Instant::now();
    let deadline = sending_started + Duration::from_secs(load.duration);
    let period = Duration::from_secs_f64(1.0 / load.rate.max(0.001));
    let failed = Arc::new(AtomicU64::new(0));
    // Each sender counts what it sent and gives it back with its server's index.
    let mut senders = Vec::new();
    for (room, sinks) in ws_senders {
        for (n, (server, sink)) in sinks.into_iter().enumerate() {
            let (failed, room, size) = (failed.clone(), room.clone(), load.size);
            let phase = period.mul_f64(spread(senders.len()));
            senders.push(tokio::spawn(async move {
                let mut pace = Pace::start(phase, period, deadline).await;
                let mut sent = 0;
                while let Some(seq) = pace.next().await {
                    let message = bench_message(n, seq, epoch, size);
                    let text = transport.chat_frame(&room, &message, seq);
                    if sink.lock().await.send(Message::text(text)).await.is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    sent += 1;
                }
                // Keep the connection: its receiving half is still counting.
                (server, sent, Some(sink))
            }));
        }
    }
    for (room, connections, token) in rest_senders {
        // Each of a room's REST connections sends its share of the room's rate.
        let share = period.mul_f64(connections.len() as f64);
        for (n, (server, mut http)) in connections.into_iter().enumerate() {
            let (failed, size) = (failed.clone(), load.size);
            let (room, token) = (room.clone(), token.clone());
            let phase = share.mul_f64(spread(senders.len()));
            senders.push(tokio::spawn(async move {
                let path = format!("/rooms/{room}/messages");
                let mut pace = Pace::start(phase, share, deadline).await;
                let mut sent = 0;
                while let Some(seq) = pace.next().await {
                    let body = json!({"message": bench_message(n, seq, epoch, size)}).to_string();
                    match http.json("POST", &path, Some(&token), Some(body)).await {
                        Ok((201, _)) => sent += 1,
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                (server, sent, None)
            }));
        }
    }
    let mut sent_by = Vec::new();
    let mut sinks = Vec::new();
    for sender in senders {
        let (server, sent, sink) = sender.await?;
        sent_by.push((server, sent));
        sinks.extend(sink);
    }
    let sending = sending_started.elapsed();
    let sent: u64 = sent_by.iter().map(|(_, sent)| sent).sum();
    let receivers_per_room = load.members as u64;
    let expected = sent * receivers_per_room;
    drain(&delivered_total, expected, Duration::from_secs(2)).await;
    let elapsed = sending_started.elapsed();
    let watched_after = watched.sample()?;
    let bench_after = bench.sample()?;
    stop_receiving.cancel();
    let mut report = Report::new(match kind {
        SweepOf::Fanout => "fanout",
        SweepOf::Chat => "chat",
        SweepOf::Sse => "sse",
    });
    report.spread_over(&hosts(servers));
    report.transport = if kind == SweepOf::Sse {
        "sse"
    } else {
        transport.name()
    };
    report.rooms = load.rooms;
    report.members = load.members;
    report.rate_per_sender = load.rate;
    report.message_bytes = load.size;
    report.setup_s = setup.as_secs_f64();
    report.sending_s = sending.as_secs_f64();
    report.elapsed_s = elapsed.as_secs_f64();
    for (server, sent) in sent_by {
        report.add_sent(server, sent);
    }
    report.send_failures = failed.load(Ordering::Relaxed);
    report.expected = expected;
    for (server, receiver) in receivers {
        report.add(server, receiver.await?);
    }
    // An SSE room's REST sender counted as one connection, as it always has.
    if kind == SweepOf::Sse {
        report.connections += load.rooms;
    }
    report.set_latencies(clients::take_latencies());
    report.finish(&watched_before, &watched_after, bench_before, bench_after);
    drop(sinks);
    Ok(report)
}

/// Waits until `delivered` reaches `expected`, or until it has not moved for `quiet`.
async fn drain(delivered: &AtomicU64, expected: u64, quiet: Duration) {
    let mut last = delivered.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    while last < expected && quiet_since.elapsed() < quiet {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = delivered.load(Ordering::Relaxed);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
}

/// An SSE room: a REST sender (its connection and token) and `members` SSE receivers.
/// A REST sender waits for each reply before its next post (HTTP/1 has one request at a time
/// per connection): a room's sender is this many connections, each its own sequence, so the
/// rate asked for is not capped by one request's round trip.
const REST_SENDERS_PER_ROOM: usize = 4;

/// A room's REST sender: its name, its connections (each with its server's index), its token.
type RestSender = (String, Vec<(usize, Http)>, String);

/// Creates a room for SSE, given as its index and name: its REST sender and its receivers'
/// streams, each receiver with its server's index; both are spread over the servers.
async fn sse_room(
    servers: &Servers,
    (room_index, room): (usize, &str),
    members: usize,
    first_conn: usize,
    epoch: Instant,
    delivered_total: &Arc<AtomicU64>,
    stop: &CancellationToken,
) -> BenchResult<(RestSender, Vec<(usize, tokio::task::JoinHandle<Received>)>)> {
    let (server, target) = servers.member(room_index, 0);
    let mut http = Http::connect(target, first_conn).await?;
    let body = json!({"roomId": room, "username": "sender"}).to_string();
    let (status, reply) = http.json("POST", "/rooms", None, Some(body)).await?;
    if status != 201 {
        return Err(format!("creating {room}: {status}").into());
    }
    let mut connections = vec![(server, http)];
    for n in 1..REST_SENDERS_PER_ROOM {
        let (server, target) = servers.member(room_index, n);
        let http = Http::connect(target, first_conn + 2 * members + n).await?;
        connections.push((server, http));
    }
    let sender = (room.to_owned(), connections, token_of(&reply)?);
    type Opened = BenchResult<(usize, tokio::task::JoinHandle<Received>)>;
    let opened: Vec<Opened> = stream::iter(0..members)
        .map(|n| {
            let (server, target) = servers.member(room_index, n);
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
                Ok((server, task))
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    let streams = opened.into_iter().collect::<BenchResult<Vec<_>>>()?;
    Ok((sender, streams))
}

/// Runs a load and adds the servers' Redis round trips per chat message, from their own
/// `chat_redis_round_trip_seconds` (every exchange, posts and background work alike), and the
/// posts' round-trip p50 and p99 over the run, from the histogram's buckets.
async fn with_redis_calls(
    servers: &Servers,
    redis: bool,
    run: impl std::future::Future<Output = BenchResult<Report>>,
) -> BenchResult<Report> {
    if !redis {
        return run.await;
    }
    let before = round_trips(servers).await?;
    let mut report = run.await?;
    let after = round_trips(servers).await?;
    let posts = after.posts - before.posts;
    let all = after.all - before.all;
    report.redis_round_trips = Some(all as u64);
    if report.sent > 0 {
        report.redis_round_trips_per_message = Some(all / report.sent as f64);
        report.redis_post_round_trips_per_message = Some(posts / report.sent as f64);
    }
    let during = after.post_buckets.since(&before.post_buckets);
    report.redis_post_round_trip_ms_p50 = during.quantile(0.50).map(|s| s * 1e3);
    report.redis_post_round_trip_ms_p99 = during.quantile(0.99).map(|s| s * 1e3);
    Ok(report)
}

/// The servers' Redis round trips so far, from every server's `/metrics`.
#[derive(Default)]
struct RoundTrips {
    posts: f64,
    all: f64,
    post_buckets: Buckets,
}

/// A Prometheus histogram's cumulative buckets: (upper bound in seconds, count), by bound.
#[derive(Default)]
struct Buckets(std::collections::BTreeMap<u64, f64>);

impl Buckets {
    fn add(&mut self, le_seconds: f64, count: f64) {
        *self.0.entry(le_seconds.to_bits()).or_default() += count;
    }

    /// What was recorded after `earlier`.
    fn since(&self, earlier: &Buckets) -> Buckets {
        Buckets(
            self.0
                .iter()
                .map(|(le, count)| (*le, count - earlier.0.get(le).copied().unwrap_or(0.0)))
                .collect(),
        )
    }

    /// The q-quantile in seconds, interpolated inside its bucket as Prometheus's
    /// `histogram_quantile` does; `None` without samples or beyond the last finite bound.
    fn quantile(&self, q: f64) -> Option<f64> {
        let mut bounds: Vec<(f64, f64)> = self
            .0
            .iter()
            .map(|(le, count)| (f64::from_bits(*le), *count))
            .collect();
        bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = bounds.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for (le, count) in bounds {
            if count >= rank {
                if le.is_infinite() {
                    return None;
                }
                let inside = count - below;
                let share = if inside > 0.0 {
                    (rank - below) / inside
                } else {
                    1.0
                };
                return Some(lower + (le - lower) * share);
            }
            (lower, below) = (le, count);
        }
        None
    }
}

async fn round_trips(servers: &Servers) -> BenchResult<RoundTrips> {
    let mut total = RoundTrips::default();
    for text in metrics(servers).await? {
        read_round_trips(&text, &mut total);
    }
    Ok(total)
}

/// Every server's `/metrics` text, in `--server` order.
async fn metrics(servers: &Servers) -> BenchResult<Vec<String>> {
    let mut texts = Vec::new();
    for target in servers.all() {
        let mut http = Http::connect(target, 0).await?;
        let (status, body) = http.json("GET", "/metrics", None, None).await?;
        if status != 200 {
            return Err(format!("{}: /metrics answered {status}", target.host).into());
        }
        texts.push(String::from_utf8_lossy(&body).into_owned());
    }
    Ok(texts)
}

/// A metrics line's value (0 when unreadable).
fn value(line: &str) -> f64 {
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The sum of counter `name`'s samples that carry `label` (e.g. `kind="typing"`) in a
/// server's metrics text.
fn counter(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter_map(|line| line.strip_prefix(name))
        .filter(|rest| rest.starts_with(['{', ' ']) && rest.contains(label))
        .map(value)
        .sum()
}

/// Adds a server's round trips (its metrics text) to `total`.
fn read_round_trips(text: &str, total: &mut RoundTrips) {
    const METRIC: &str = "chat_redis_round_trip_seconds";
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(METRIC) else {
            continue;
        };
        let post = rest.contains("op=\"post\"");
        if rest.starts_with("_count") {
            total.all += value(rest);
            if post {
                total.posts += value(rest);
            }
        } else if post && rest.starts_with("_bucket") {
            let le = rest
                .split_once("le=\"")
                .and_then(|(_, tail)| tail.split_once('"'))
                .and_then(|(le, _)| match le {
                    "+Inf" => Some(f64::INFINITY),
                    le => le.parse().ok(),
                });
            if let Some(le) = le {
                total.post_buckets.add(le, value(rest));
            }
        }
    }
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

/// The servers' host:port, in order.
fn hosts(servers: &Servers) -> Vec<String> {
    servers
        .all()
        .iter()
        .map(|target| target.host.clone())
        .collect()
}

fn token_of(reply: &[u8]) -> BenchResult<String> {
    let value: serde_json::Value = serde_json::from_slice(reply)?;
    value["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "no token in the reply".into())
}

async fn sweep(
    servers: &Servers,
    watched: &Watched,
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
        let mut report = load_run(servers, watched, of, &load).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = r#"chat_redis_round_trip_seconds_bucket{op="post",le="0.001"} 50
chat_redis_round_trip_seconds_bucket{op="post",le="0.002"} 90
chat_redis_round_trip_seconds_bucket{op="post",le="0.004"} 100
chat_redis_round_trip_seconds_bucket{op="post",le="+Inf"} 100
chat_redis_round_trip_seconds_count{op="post"} 100
chat_redis_round_trip_seconds_bucket{op="read_log",le="0.001"} 7
chat_redis_round_trip_seconds_count{op="read_log"} 7
"#;

    #[test]
    fn post_round_trips_and_their_quantiles_come_from_the_buckets() {
        let mut total = RoundTrips::default();
        read_round_trips(METRICS, &mut total);
        assert_eq!((total.posts, total.all), (100.0, 107.0));
        let seconds = |q| total.post_buckets.quantile(q).expect("samples recorded");
        assert!((seconds(0.5) - 0.001).abs() < 1e-12, "{}", seconds(0.5));
        // The 99th of 100 is 9/10 of the way into (0.002, 0.004].
        assert!((seconds(0.99) - 0.0038).abs() < 1e-12, "{}", seconds(0.99));
    }

    #[test]
    fn quantiles_are_of_what_was_recorded_in_between() {
        let mut before = RoundTrips::default();
        read_round_trips(METRICS, &mut before);
        let mut after = RoundTrips::default();
        read_round_trips(&METRICS.replace("} 100", "} 200"), &mut after);
        let during = after.post_buckets.since(&before.post_buckets);
        // The 100 samples in between all fell in (0.002, 0.004].
        let median = during.quantile(0.5).expect("samples recorded in between");
        assert!((median - 0.003).abs() < 1e-12, "{median}");
        assert_eq!(Buckets::default().quantile(0.5), None);
    }
}
