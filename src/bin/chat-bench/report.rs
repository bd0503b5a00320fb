//! What a run reports (JSON and a human summary), and the `/proc` readings behind the CPU and
//! memory figures of the server (`--server-pid`), of other processes (`--cpu-of`) and of the
//! load generator itself.

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
#[derive(Debug, Clone, Copy)]
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
    pub server_rss_kib_before: Option<u64>,
    pub server_rss_kib_after: Option<u64>,
    /// Idle scenario: server RSS growth per connection.
    pub server_rss_kib_per_connection: Option<f64>,
    /// Idle scenario with `--hold`: how long the connections were held idle, over which
    /// `server_cpu_s` and `others_cpu_s` were measured.
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
    /// CPU seconds of each `--cpu-of` process over the server's window, by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub others_cpu_s: BTreeMap<String, f64>,
    pub startup_ms_median: Option<f64>,
    pub startup_ms_max: Option<f64>,
    pub best_clean_rate: Option<f64>,
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

    /// Adds one receiver's tally.
    pub fn add(&mut self, received: Received) {
        self.delivered += received.delivered;
        self.duplicates_or_reordered += received.duplicates_or_reordered;
    }

    /// The run's send-to-receive latencies, in microseconds.
    pub fn set_latencies(&mut self, latencies_us: Histogram<u64>) {
        self.histogram = Some(latencies_us);
    }

    pub fn finish(
        &mut self,
        server_before: Option<Sample>,
        server_after: Option<Sample>,
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
        if let (Some(before), Some(after)) = (server_before, server_after) {
            let cpu = after.cpu_s - before.cpu_s;
            self.server_cpu_s = Some(cpu);
            if self.delivered > 0 {
                self.server_cpu_us_per_delivery = Some(cpu * 1e6 / self.delivered as f64);
            }
            self.server_rss_kib_before = Some(before.rss_kib);
            self.server_rss_kib_after = Some(after.rss_kib);
        }
        self.bench_cpu_s = bench_after.cpu_s - bench_before.cpu_s;
        self.bench_cpu_utilization = self.bench_cpu_s / self.elapsed_s.max(1e-9);
    }

    /// The CPU each of `others` spent between its two readings.
    pub fn set_others_cpu(
        &mut self,
        others: &[(String, Process)],
        before: &[Sample],
        after: &[Sample],
    ) {
        for (((name, _), before), after) in others.iter().zip(before).zip(after) {
            self.others_cpu_s
                .insert(name.clone(), after.cpu_s - before.cpu_s);
        }
    }

    /// `--cpu-of` processes: seconds, and microseconds per message sent if any were.
    fn others_summary(&self) -> String {
        self.others_cpu_s
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
    pub fn with_process(&mut self, before: Option<Sample>, after: Option<Sample>, bench: &Process) {
        if let (Some(before), Some(after)) = (before, after) {
            self.server_rss_kib_before = Some(before.rss_kib);
            self.server_rss_kib_after = Some(after.rss_kib);
            if self.connections > 0 {
                self.server_rss_kib_per_connection = Some(
                    after.rss_kib.saturating_sub(before.rss_kib) as f64 / self.connections as f64,
                );
            }
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
                        "; held {held:.0} s: server CPU {} s, {} Redis round trips",
                        self.server_cpu_s
                            .map_or("?".to_owned(), |s| format!("{s:.2}")),
                        opt(self.redis_round_trips)
                    )
                }) + &self.others_summary()
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
                    + &self.others_summary()
            }
        }
    }
}

fn opt(value: Option<u64>) -> String {
    value.map_or("?".to_owned(), |v| v.to_string())
}
