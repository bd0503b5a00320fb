//! What a run reports (JSON and a human summary), and the `/proc` readings behind the CPU and
//! memory figures of the servers (`--server-pid`), of Redis (`--redis-pid`, a cluster's nodes
//! by name) and of the load generator itself. With several servers the server figures are their
//! sums, and each server's share is listed too.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::BenchResult;
use crate::clients::Received;

/// A process whose CPU time and resident memory are read from `/proc`.
pub struct Process {
    stat: String,
    status: String,
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub cpu_s: f64,
    pub rss_kib: u64,
}

impl Process {
    pub fn of(pid: u32) -> Self {
        Self {
            stat: format!("/proc/{pid}/stat"),
            status: format!("/proc/{pid}/status"),
        }
    }

    pub fn own() -> Self {
        Self {
            stat: "/proc/self/stat".to_owned(),
            status: "/proc/self/status".to_owned(),
        }
    }

    pub fn sample(&self) -> BenchResult<Sample> {
        let stat = std::fs::read_to_string(&self.stat)?;
        // Fields after the command name (which may hold spaces) start at state: utime and
        // stime are the 14th and 15th fields overall, so the 12th and 13th after it.
        let after_name = stat.rsplit_once(')').ok_or("unreadable /proc stat")?.1;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks: u64 = fields.get(11).ok_or("no utime")?.parse::<u64>()?
            + fields.get(12).ok_or("no stime")?.parse::<u64>()?;
        let status = std::fs::read_to_string(&self.status)?;
        let rss_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or("no VmRSS")?;
        Ok(Sample {
            cpu_s: ticks as f64 / clock_ticks_per_second(),
            rss_kib,
        })
    }
}

/// The processes a run reports on besides itself: the servers, in `--server` order, and the
/// Redis processes (several for a cluster). Either list may be empty.
pub struct Watched {
    servers: Vec<Process>,
    redis: Vec<Process>,
    redis_names: Vec<String>,
}

/// One reading of each watched process.
pub struct Readings<'a> {
    servers: Vec<Sample>,
    redis: Vec<Sample>,
    /// The watched Redis processes' names, in `redis`'s order.
    redis_names: &'a [String],
}

impl Watched {
    /// `redis` names each Redis process (a cluster node's role, or its pid).
    pub fn new(server_pids: &[u32], redis: &[(String, u32)]) -> Self {
        Self {
            servers: server_pids.iter().copied().map(Process::of).collect(),
            redis: redis.iter().map(|(_, pid)| Process::of(*pid)).collect(),
            redis_names: redis.iter().map(|(name, _)| name.clone()).collect(),
        }
    }

    pub fn sample(&self) -> BenchResult<Readings<'_>> {
        let all = |processes: &[Process]| -> BenchResult<Vec<Sample>> {
            processes.iter().map(Process::sample).collect()
        };
        Ok(Readings {
            servers: all(&self.servers)?,
            redis: all(&self.redis)?,
            redis_names: &self.redis_names,
        })
    }
}

/// The sum of several readings (`None` for none).
fn total(samples: &[Sample]) -> Option<Sample> {
    (!samples.is_empty()).then(|| Sample {
        cpu_s: samples.iter().map(|sample| sample.cpu_s).sum(),
        rss_kib: samples.iter().map(|sample| sample.rss_kib).sum(),
    })
}

/// `getconf CLK_TCK`: the unit of `/proc/<pid>/stat` times (100 on Linux).
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// One server's share of a run with several.
#[derive(Debug, Default, Serialize)]
pub struct ServerShare {
    /// host:port, as given to `--server`.
    pub server: String,
    /// The run's connections to it that receive (members, or SSE streams).
    pub connections: usize,
    /// Messages sent through it.
    pub sent: u64,
    /// Messages delivered by it.
    pub delivered: u64,
    pub cpu_s: Option<f64>,
    /// Its CPU time per message sent through any server: what each message costs it.
    pub cpu_us_per_message: Option<f64>,
    pub rss_kib_before: Option<u64>,
    pub rss_kib_after: Option<u64>,
}

/// What the `ephemeral` scenario counts besides a load run's figures (its `sent` is the typing
/// sent, its `expected` and `delivered` are `typing` and `presence` events together, its
/// latencies are typing's).
#[derive(Debug, Default, Serialize)]
pub struct EphemeralFigures {
    pub typing_every_s: f64,
    pub flaps_per_s: f64,
    pub away_ms: u64,
    /// Whether each flap should tell the room `offline` and then `online` (away beyond the
    /// grace), or nothing (back within it).
    pub presence_per_flap: bool,
    pub typing_sent: u64,
    pub typing_acked: u64,
    /// Typing answered with an error.
    pub typing_refused: u64,
    /// `typing` events received, and expected: each typing sent, times the other members
    /// connected when it was sent.
    pub typing_received: u64,
    pub typing_expected: u64,
    pub presence_online_received: u64,
    pub presence_offline_received: u64,
    /// `presence` events expected: per flap beyond the grace, the other members connected
    /// when it left and when it came back.
    pub presence_expected: u64,
    pub flaps: u64,
    /// Flaps whose member did not get its membership back (no connection, or a refused or
    /// incomplete `resume`).
    pub resume_failures: u64,
    /// Events the resumes replayed (none: nothing is logged during the run).
    pub replayed: u64,
    /// Events with an id received after setup (none should be: nothing is logged).
    pub logged_received: u64,
    /// Connections the servers closed.
    pub connections_lost: u64,
    /// From the servers' metrics (of every room: run on servers with nothing else): ephemeral
    /// events published, by kind, and pushed into connections' queues, the member's own
    /// connections included, which drop them (`chat_ephemeral_published_total`,
    /// `chat_ephemeral_delivered_total`).
    pub typing_broadcast: u64,
    pub presence_broadcast: u64,
    pub server_deliveries: u64,
    /// Typing the servers took but did not broadcast (`chat_typing_throttled_total`): the
    /// member's previous one went out less than 2 s before.
    pub typing_throttled: u64,
    /// Members held again within the grace (`chat_presence_grace_resumes_total`): flaps that
    /// told nobody.
    pub grace_resumes: u64,
    pub events_per_s: f64,
    /// The servers' CPU time per ephemeral event broadcast (typing and presence).
    pub server_cpu_us_per_event: Option<f64>,
    pub redis_cpu_us_per_event: Option<f64>,
    pub redis_round_trips_per_event: Option<f64>,
}

impl EphemeralFigures {
    /// Ephemeral events broadcast, by the servers' count.
    pub fn events(&self) -> u64 {
        self.typing_broadcast + self.presence_broadcast
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    /// What the receivers speak: `ws`, `socketio` or `sse`.
    pub transport: &'static str,
    pub rooms: usize,
    pub members: usize,
    pub connections: usize,
    pub rate_per_sender: f64,
    pub message_bytes: usize,
    pub setup_s: f64,
    pub sending_s: f64,
    pub elapsed_s: f64,
    pub sent: u64,
    pub send_failures: u64,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates_or_reordered: u64,
    pub deliveries_per_s: f64,
    pub latency_ms: Latency,
    pub server_cpu_s: Option<f64>,
    pub server_cpu_us_per_delivery: Option<f64>,
    /// The servers' CPU time per message sent.
    pub server_cpu_us_per_message: Option<f64>,
    pub server_rss_kib_before: Option<u64>,
    pub server_rss_kib_after: Option<u64>,
    /// Idle scenario: server RSS growth per connection.
    pub server_rss_kib_per_connection: Option<f64>,
    /// Idle scenario with `--hold`: how long the connections were held idle, over which
    /// `server_cpu_s` and the Redis CPU figures were measured.
    pub held_s: Option<f64>,
    pub bench_cpu_s: f64,
    /// CPU seconds per wall second: near the core count means the load generator was the
    /// limit.
    pub bench_cpu_utilization: f64,
    pub sweep_clean: Option<bool>,
    /// The server's Redis round trips during the run (posts, presence, sweeps, reads); for
    /// `idle` with `--hold`, during the hold.
    pub redis_round_trips: Option<u64>,
    pub redis_round_trips_per_message: Option<f64>,
    /// Round trips of the post operation itself per chat message.
    pub redis_post_round_trips_per_message: Option<f64>,
    /// The posts' Redis round trip over the run (the servers' histogram buckets, interpolated).
    pub redis_post_round_trip_ms_p50: Option<f64>,
    pub redis_post_round_trip_ms_p99: Option<f64>,
    /// Redis' CPU time over the servers' window (`--redis-pid`, all of them summed), and per
    /// message sent.
    pub redis_cpu_s: Option<f64>,
    pub redis_cpu_us_per_message: Option<f64>,
    /// Each `--redis-pid`'s CPU seconds, by name (a cluster's nodes each).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub redis_cpu_s_by_process: BTreeMap<String, f64>,
    pub startup_ms_median: Option<f64>,
    pub startup_ms_max: Option<f64>,
    pub best_clean_rate: Option<f64>,
    /// The `ephemeral` scenario's own figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<EphemeralFigures>,
    /// Only with several servers: each one's share (the server figures above are sums).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<ServerShare>,
    #[serde(skip)]
    histogram: Option<Histogram<u64>>,
}

impl Report {
    pub fn new(scenario: &'static str) -> Self {
        Self {
            scenario,
            ..Self::default()
        }
    }

    /// With several servers, gives each a share in the report.
    pub fn spread_over(&mut self, servers: &[String]) {
        if servers.len() > 1 {
            self.servers = servers
                .iter()
                .map(|server| ServerShare {
                    server: server.clone(),
                    ..ServerShare::default()
                })
                .collect();
        }
    }

    /// Counts a receiving connection to the `server`th server.
    pub fn add_connection(&mut self, server: usize) {
        self.connections += 1;
        if let Some(share) = self.servers.get_mut(server) {
            share.connections += 1;
        }
    }

    /// Adds one receiver's tally; it read from the `server`th server.
    pub fn add(&mut self, server: usize, received: Received) {
        self.add_connection(server);
        self.delivered += received.delivered;
        self.duplicates_or_reordered += received.duplicates_or_reordered;
        if let Some(share) = self.servers.get_mut(server) {
            share.delivered += received.delivered;
        }
    }

    /// Adds one sender's count; it sent through the `server`th server.
    pub fn add_sent(&mut self, server: usize, sent: u64) {
        self.sent += sent;
        if let Some(share) = self.servers.get_mut(server) {
            share.sent += sent;
        }
    }

    /// The run's send-to-receive latencies, in microseconds.
    pub fn set_latencies(&mut self, latencies_us: Histogram<u64>) {
        self.histogram = Some(latencies_us);
    }

    /// The figures of a load run, from its counts and from readings of the watched processes
    /// and of the load generator.
    pub fn finish(
        &mut self,
        before: &Readings<'_>,
        after: &Readings<'_>,
        bench_before: Sample,
        bench_after: Sample,
    ) {
        self.lost = self.expected.saturating_sub(self.delivered);
        self.deliveries_per_s = self.delivered as f64 / self.elapsed_s.max(1e-9);
        if let Some(histogram) = &self.histogram {
            let ms = |us: u64| us as f64 / 1000.0;
            self.latency_ms = Latency {
                p50: ms(histogram.value_at_quantile(0.50)),
                p90: ms(histogram.value_at_quantile(0.90)),
                p99: ms(histogram.value_at_quantile(0.99)),
                max: ms(histogram.max()),
            };
        }
        self.set_servers(&before.servers, &after.servers);
        let per = |cpu_s: Option<f64>, count: u64| {
            cpu_s
                .filter(|_| count > 0)
                .map(|cpu| cpu * 1e6 / count as f64)
        };
        self.server_cpu_us_per_delivery = per(self.server_cpu_s, self.delivered);
        self.server_cpu_us_per_message = per(self.server_cpu_s, self.sent);
        for share in &mut self.servers {
            share.cpu_us_per_message = per(share.cpu_s, self.sent);
        }
        self.set_redis(before, after);
        self.bench_cpu_s = bench_after.cpu_s - bench_before.cpu_s;
        self.bench_cpu_utilization = self.bench_cpu_s / self.elapsed_s.max(1e-9);
    }

    /// The servers' CPU time and memory between two readings of each, in total and (with
    /// several) per server.
    fn set_servers(&mut self, before: &[Sample], after: &[Sample]) {
        let (Some(sum_before), Some(sum_after)) = (total(before), total(after)) else {
            return;
        };
        self.server_cpu_s = Some(sum_after.cpu_s - sum_before.cpu_s);
        self.server_rss_kib_before = Some(sum_before.rss_kib);
        self.server_rss_kib_after = Some(sum_after.rss_kib);
        for ((share, before), after) in self.servers.iter_mut().zip(before).zip(after) {
            share.cpu_s = Some(after.cpu_s - before.cpu_s);
            share.rss_kib_before = Some(before.rss_kib);
            share.rss_kib_after = Some(after.rss_kib);
        }
    }

    /// Redis' CPU time between two readings: the sum, per message sent if any were, and with
    /// several processes each one's share by name.
    fn set_redis(&mut self, before: &Readings<'_>, after: &Readings<'_>) {
        let (Some(sum_before), Some(sum_after)) = (total(&before.redis), total(&after.redis))
        else {
            return;
        };
        let cpu_s = sum_after.cpu_s - sum_before.cpu_s;
        self.redis_cpu_s = Some(cpu_s);
        self.redis_cpu_us_per_message = (self.sent > 0).then(|| cpu_s * 1e6 / self.sent as f64);
        self.redis_cpu_s_by_process = before
            .redis_names
            .iter()
            .zip(&before.redis)
            .zip(&after.redis)
            .map(|((name, before), after)| (name.clone(), after.cpu_s - before.cpu_s))
            .collect();
    }

    /// For an idle run held open (`--hold`): the servers' and Redis' CPU over the hold.
    pub fn with_hold(&mut self, held: &Readings<'_>, after: &Readings<'_>) {
        if let (Some(held), Some(after)) = (total(&held.servers), total(&after.servers)) {
            self.server_cpu_s = Some(after.cpu_s - held.cpu_s);
        }
        self.set_redis(held, after);
    }

    /// With several Redis processes, each one's CPU seconds by name, and per message sent if
    /// any were.
    fn redis_processes_summary(&self) -> String {
        if self.redis_cpu_s_by_process.len() < 2 {
            return String::new();
        }
        self.redis_cpu_s_by_process
            .iter()
            .map(|(name, cpu)| match self.sent {
                0 => format!("; {name} CPU {cpu:.2} s"),
                sent => format!(
                    "; {name} CPU {cpu:.2} s ({:.1} us/message)",
                    cpu * 1e6 / sent as f64
                ),
            })
            .collect()
    }

    /// For the idle scenario: memory only.
    pub fn with_process(&mut self, before: &Readings<'_>, after: &Readings<'_>, bench: &Process) {
        self.set_servers(&before.servers, &after.servers);
        // Connection set-up is not what idle measures.
        self.server_cpu_s = None;
        for share in &mut self.servers {
            share.cpu_s = None;
        }
        if let (Some(before), Some(after), true) = (
            self.server_rss_kib_before,
            self.server_rss_kib_after,
            self.connections > 0,
        ) {
            self.server_rss_kib_per_connection =
                Some(after.saturating_sub(before) as f64 / self.connections as f64);
        }
        if let Ok(sample) = bench.sample() {
            self.bench_cpu_s = sample.cpu_s;
        }
    }

    pub fn summary(&self) -> String {
        match self.scenario {
            "idle" => {
                format!(
                    "idle over {}: {} connections in {} rooms (set up in {:.1} s); server RSS {} -> {} KiB = {} KiB per connection",
                    self.transport,
                    self.connections,
                    self.rooms,
                    self.setup_s,
                    opt(self.server_rss_kib_before),
                    opt(self.server_rss_kib_after),
                    self.server_rss_kib_per_connection
                        .map_or("?".to_owned(), |kib| format!("{kib:.2}")),
                ) + &self.held_s.map_or(String::new(), |held| {
                    format!(
                        "; held {held:.0} s: server CPU {} s, {} Redis round trips{}",
                        self.server_cpu_s
                            .map_or("?".to_owned(), |s| format!("{s:.2}")),
                        opt(self.redis_round_trips),
                        self.redis_cpu_s
                            .map_or(String::new(), |s| format!(", Redis CPU {s:.2} s"))
                    )
                }) + &self.redis_processes_summary()
            }
            "startup" => format!(
                "startup: process start to /readyz 200: median {:.1} ms, max {:.1} ms",
                self.startup_ms_median.unwrap_or(f64::NAN),
                self.startup_ms_max.unwrap_or(f64::NAN)
            ),
            "sweep" => format!(
                "sweep: highest clean rate per sender: {}",
                self.best_clean_rate
                    .map_or("none".to_owned(), |rate| format!("{rate:.1} msg/s"))
            ),
            "ephemeral" => self.ephemeral_summary() + &self.servers_summary(),
            scenario => {
                format!(
                    "{scenario} over {}: {} rooms x {} members, {:.1} msg/s per sender, {} B: sent {} (failed {}), delivered {}/{} (lost {}, dup/reordered {}), {:.0} deliveries/s; latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}; server CPU {} s ({} us/delivery), RSS {} KiB; bench CPU {:.2} s ({:.0}% of a core)",
                    self.transport,
                    self.rooms,
                    self.members,
                    self.rate_per_sender,
                    self.message_bytes,
                    self.sent,
                    self.send_failures,
                    self.delivered,
                    self.expected,
                    self.lost,
                    self.duplicates_or_reordered,
                    self.deliveries_per_s,
                    self.latency_ms.p50,
                    self.latency_ms.p90,
                    self.latency_ms.p99,
                    self.latency_ms.max,
                    self.server_cpu_s
                        .map_or("?".to_owned(), |s| format!("{s:.2}")),
                    self.server_cpu_us_per_delivery
                        .map_or("?".to_owned(), |us| format!("{us:.2}")),
                    opt(self.server_rss_kib_after),
                    self.bench_cpu_s,
                    self.bench_cpu_utilization * 100.0,
                ) + &self
                    .redis_post_round_trips_per_message
                    .map_or(String::new(), |posts| {
                        format!(
                            "; Redis round trips per message: {posts:.2} to post, {:.2} in all",
                            self.redis_round_trips_per_message.unwrap_or(f64::NAN)
                        )
                    })
                    + &self
                        .redis_post_round_trip_ms_p99
                        .map_or(String::new(), |p99| {
                            format!(
                                "; post round trip p50 {:.2} ms, p99 {p99:.2} ms",
                                self.redis_post_round_trip_ms_p50.unwrap_or(f64::NAN)
                            )
                        })
                    + &self.server_cpu_us_per_message.map_or(String::new(), |us| {
                        format!("; server CPU {us:.1} us per message sent")
                    })
                    + &self.redis_cpu_us_per_message.map_or(String::new(), |us| {
                        format!("; Redis CPU {us:.1} us per message sent")
                    })
                    + &self.redis_processes_summary()
                    + &self.servers_summary()
            }
        }
    }

    fn ephemeral_summary(&self) -> String {
        let Some(figures) = &self.ephemeral else {
            return "ephemeral: no figures".to_owned();
        };
        let us = |us: Option<f64>| us.map_or("?".to_owned(), |us| format!("{us:.2}"));
        format!(
            "ephemeral over {}: {} members, typing every {:.2} s, {:.1} flaps/s away {} ms: typing sent {} (acked {}, refused {}), broadcast {} (throttled {}), presence broadcast {} (grace resumes {}); received typing {}/{} expected, presence {} online + {} offline /{} expected ({} pushed by the servers); {:.0} events/s, {:.0} deliveries/s; typing latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}; flaps {} (resume failures {}, replayed {}), logged events received {}, connections lost {}; server CPU {} s: {} us per ephemeral event, {} us per delivery; Redis CPU {} us per event, {} round trips per event; bench CPU {:.2} s ({:.0}% of a core)",
            self.transport,
            self.members,
            figures.typing_every_s,
            figures.flaps_per_s,
            figures.away_ms,
            figures.typing_sent,
            figures.typing_acked,
            figures.typing_refused,
            figures.typing_broadcast,
            figures.typing_throttled,
            figures.presence_broadcast,
            figures.grace_resumes,
            figures.typing_received,
            figures.typing_expected,
            figures.presence_online_received,
            figures.presence_offline_received,
            figures.presence_expected,
            figures.server_deliveries,
            figures.events_per_s,
            self.deliveries_per_s,
            self.latency_ms.p50,
            self.latency_ms.p90,
            self.latency_ms.p99,
            self.latency_ms.max,
            figures.flaps,
            figures.resume_failures,
            figures.replayed,
            figures.logged_received,
            figures.connections_lost,
            self.server_cpu_s
                .map_or("?".to_owned(), |s| format!("{s:.2}")),
            us(figures.server_cpu_us_per_event),
            us(self.server_cpu_us_per_delivery),
            us(figures.redis_cpu_us_per_event),
            figures
                .redis_round_trips_per_event
                .map_or("?".to_owned(), |n| format!("{n:.2}")),
            self.bench_cpu_s,
            self.bench_cpu_utilization * 100.0,
        )
    }

    fn servers_summary(&self) -> String {
        self.servers
            .iter()
            .map(|share| {
                format!(
                    "; {}: {} connections, sent {}, delivered {}, CPU {} s ({} us/message), RSS {} KiB",
                    share.server,
                    share.connections,
                    share.sent,
                    share.delivered,
                    share.cpu_s.map_or("?".to_owned(), |s| format!("{s:.2}")),
                    share
                        .cpu_us_per_message
                        .map_or("?".to_owned(), |us| format!("{us:.1}")),
                    opt(share.rss_kib_after),
                )
            })
            .collect()
    }
}

fn opt(value: Option<u64>) -> String {
    value.map_or("?".to_owned(), |v| v.to_string())
}
