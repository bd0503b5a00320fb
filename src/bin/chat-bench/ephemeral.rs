//! The `ephemeral` scenario (issue 21): one room of many members over WebSocket (`/ws` or
//! socket.io), spread over the servers, where every member sends `typing` on a schedule and
//! members drop their connection and come back with `resume` (flaps). It owns the members'
//! tasks and the flapper: it counts the `typing` and `presence` events every member receives
//! against what it expects from who was connected, measures typing's latency (a receiver reads
//! the sender's send time, kept here), checks that every flapping member got its membership
//! back with nothing replayed and that nothing with an id arrived after setup, and puts the
//! servers' and Redis' CPU over the ephemeral events the servers say they broadcast.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chat_server::presence::GRACE;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::clients::{self, Received, Reply, Servers, Target, Transport, Ws};
use crate::report::{EphemeralFigures, Process, Report, Watched};
use crate::{BenchResult, Joined, RoundTrips, drain, hosts, read_round_trips, spread, ws_room};

/// The room must settle (every member has the setup's events) within this.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);
/// Setup has settled, and a run has drained, once no ephemeral event arrived for this long
/// (at the end, the expected count is an estimate that a flap's race may leave unreached).
const QUIET: Duration = Duration::from_millis(500);
/// A resuming member waits this long at most for each frame.
const REPLY_LIMIT: Duration = Duration::from_secs(30);
/// After the grace, the time a server may take to tell the room `offline` (PROTOCOL.md: within
/// 3 s of the last close): a flap away for less than the grace plus this is a race.
const TELLING: Duration = Duration::from_secs(1);

#[derive(Args, Clone, Debug)]
pub struct Shape {
    #[arg(long, default_value_t = 1000)]
    members: usize,
    /// Seconds between one member's `typing`. The server broadcasts at most one per member per
    /// 2 s: the default is a little over, so that arrival jitter does not drop any. 0: nobody
    /// types (flaps alone).
    #[arg(long, default_value_t = 2.1)]
    typing_every: f64,
    /// Members per second, across the room, that drop their connection and come back.
    #[arg(long, default_value_t = 10.0)]
    flaps_per_sec: f64,
    /// How long a flapping member stays away before it reconnects and resumes: under the
    /// presence grace (2 s; 0 = at once) the room is told nothing; 3 s or more, it is told
    /// `offline` and `online`. Between the two is refused: the outcome would be a race.
    #[arg(long, default_value_t = 0)]
    away_ms: u64,
    /// Seconds of flapping; typing goes on until the last flap is back (up to `--away-ms`
    /// more), and the rates are over that whole time.
    #[arg(long, default_value_t = 10)]
    duration: u64,
}

/// An event id, `<ms>-<seq>`, as the two numbers it orders by.
type EventId = (u64, u64);

fn event_id(text: &str) -> Option<EventId> {
    let (ms, seq) = text.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// What the member tasks share.
struct Room {
    id: String,
    transport: Transport,
    epoch: Instant,
    away_for: Duration,
    presence_per_flap: bool,
    /// When typing starts; set then.
    start: OnceLock<Instant>,
    /// Members type while this holds: from `start` until every flap asked for is back, so
    /// that typing goes on as long as flaps do.
    typing: AtomicBool,
    /// Per member: when it last sent `typing`, in ns since `epoch`.
    typing_sent_ns: Vec<AtomicU64>,
    /// Per member: in a flap (its connection dropped, its resume not yet answered).
    away: Vec<AtomicBool>,
    /// Members holding a connection as far as the generator knows: not in a flap, not gone.
    connected: AtomicUsize,
    /// Members that lost their connection or their membership for good.
    gone: AtomicUsize,
    /// Flaps over (back, or given up).
    flapped: AtomicU64,
    /// The setup's last logged event: every member receives it, and nothing after it is
    /// logged during the run.
    setup_last: EventId,
    /// Members that received `setup_last`.
    settled: AtomicUsize,
    /// Ephemeral events received since setup began: setup has settled when it stops moving.
    seen: AtomicU64,
    /// Set once setup has settled: from then on deliveries count.
    measuring: AtomicBool,
    /// Ephemeral events received while measuring, for the drain.
    received: AtomicU64,
    /// Deliveries expected: per typing, the other members connected when it was sent; per
    /// flap beyond the grace, the other members connected when it left and when it came back.
    expected_typing: AtomicU64,
    expected_presence: AtomicU64,
}

impl Room {
    fn others_connected(&self) -> u64 {
        self.connected.load(Ordering::Relaxed).saturating_sub(1) as u64
    }
}

/// One member's counts.
#[derive(Default)]
struct Tally {
    typing_sent: u64,
    typing_acked: u64,
    typing_refused: u64,
    typing_received: u64,
    online: u64,
    offline: u64,
    flaps: u64,
    resume_failures: u64,
    replayed: u64,
    logged: u64,
    connections_lost: u64,
}

/// One member: who it is, where it connects, and what it has seen.
struct Member {
    n: usize,
    target: Target,
    token: String,
    /// The newest logged event it received (what it resumes from).
    last_id: EventId,
    last_id_text: String,
    settled: bool,
    typing_seq: u64,
    tally: Tally,
}

/// What a received frame asks of its member.
enum Read {
    Nothing,
    Answer(&'static str),
    Reply(Reply),
}

/// Says the first failure of a kind on stderr (a thousand members would say it a thousand
/// times); the report counts them all.
fn complain(said: &AtomicBool, what: &str) {
    if !said.swap(true, Ordering::Relaxed) {
        eprintln!("chat-bench: {what} (only the first is shown)");
    }
}

static REFUSED: AtomicBool = AtomicBool::new(false);
static RESUME_FAILED: AtomicBool = AtomicBool::new(false);

impl Member {
    /// Counts one text frame.
    fn read(&mut self, room: &Room, text: &str) -> Read {
        if let Some(answer) = room.transport.answer(text) {
            return Read::Answer(answer);
        }
        if let Some(reply) = room.transport.reply(text) {
            return Read::Reply(reply);
        }
        let Some((name, rest)) = room.transport.room_event(text) else {
            return Read::Nothing;
        };
        let measuring = room.measuring.load(Ordering::Relaxed);
        match name {
            "typing" | "presence" => {
                room.seen.fetch_add(1, Ordering::Relaxed);
                if !measuring {
                    return Read::Nothing;
                }
                room.received.fetch_add(1, Ordering::Relaxed);
                if name == "presence" {
                    if rest.contains(r#""online":true"#) {
                        self.tally.online += 1;
                    } else {
                        self.tally.offline += 1;
                    }
                    return Read::Nothing;
                }
                self.tally.typing_received += 1;
                if let Some(sender) = typist(rest).and_then(|n| room.typing_sent_ns.get(n)) {
                    let now_ns = room.epoch.elapsed().as_nanos() as u64;
                    clients::record_latency(now_ns.saturating_sub(sender.load(Ordering::Relaxed)));
                }
            }
            _ => {
                let Some((id, text)) = logged_id(rest) else {
                    return Read::Nothing;
                };
                if id > self.last_id {
                    self.last_id = id;
                    text.clone_into(&mut self.last_id_text);
                }
                if id > room.setup_last {
                    self.tally.logged += 1;
                }
                if !self.settled && id >= room.setup_last {
                    self.settled = true;
                    room.settled.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Read::Nothing
    }

    /// A reply that is not a resume's: a typing's ack or refusal.
    fn typing_reply(&mut self, reply: Reply) {
        match reply.outcome {
            Ok(_) => self.tally.typing_acked += 1,
            Err(err) => {
                self.tally.typing_refused += 1;
                complain(&REFUSED, &format!("a typing was refused: {err}"));
            }
        }
    }

    async fn send_typing(&mut self, room: &Room, ws: &mut Ws) -> BenchResult<()> {
        self.typing_seq += 1;
        let frame =
            room.transport
                .event_frame("typing", self.typing_seq, &json!({"roomId": room.id}));
        let now_ns = room.epoch.elapsed().as_nanos() as u64;
        room.typing_sent_ns[self.n].store(now_ns, Ordering::Relaxed);
        room.expected_typing
            .fetch_add(room.others_connected(), Ordering::Relaxed);
        self.tally.typing_sent += 1;
        ws.send(Message::text(frame)).await?;
        Ok(())
    }

    /// Drops the connection, stays away, reconnects and resumes: the new connection, or
    /// `None` when the membership could not be had back.
    async fn flap(&mut self, room: &Room, ws: Ws) -> Option<Ws> {
        self.tally.flaps += 1;
        room.away[self.n].store(true, Ordering::Relaxed);
        room.connected.fetch_sub(1, Ordering::Relaxed);
        // Gone without a close handshake, as a network's loss is.
        drop(ws);
        if room.presence_per_flap {
            // Its `offline` goes out when the grace ends, to the members connected then.
            tokio::time::sleep(GRACE).await;
            room.expected_presence.fetch_add(
                room.connected.load(Ordering::Relaxed) as u64,
                Ordering::Relaxed,
            );
        }
        tokio::time::sleep(room.away_for.saturating_sub(if room.presence_per_flap {
            GRACE
        } else {
            Duration::ZERO
        }))
        .await;
        let resumed = self.resume(room).await;
        let back = match resumed {
            Ok(ws) => {
                if room.presence_per_flap {
                    // Its `online` went out before the resume was answered.
                    room.expected_presence.fetch_add(
                        room.connected.load(Ordering::Relaxed) as u64,
                        Ordering::Relaxed,
                    );
                }
                room.connected.fetch_add(1, Ordering::Relaxed);
                Some(ws)
            }
            Err(err) => {
                self.tally.resume_failures += 1;
                room.gone.fetch_add(1, Ordering::Relaxed);
                complain(&RESUME_FAILED, &format!("a resume failed: {err}"));
                None
            }
        };
        room.away[self.n].store(false, Ordering::Relaxed);
        room.flapped.fetch_add(1, Ordering::Relaxed);
        back
    }

    /// A new connection holding the membership again: `resume` with the token and the last
    /// event id, answered with nothing replayed and no gap.
    async fn resume(&mut self, room: &Room) -> BenchResult<Ws> {
        let mut ws = self.target.member(self.n).await?;
        let data =
            json!({"roomId": room.id, "token": self.token, "lastEventId": self.last_id_text});
        ws.send(Message::text(
            room.transport.event_frame("resume", 0, &data),
        ))
        .await?;
        loop {
            let message = tokio::time::timeout(REPLY_LIMIT, ws.next())
                .await
                .map_err(|_| "no resume reply within 30 s")?
                .ok_or("connection closed during resume")??;
            let text = match message {
                Message::Text(text) => text,
                Message::Close(frame) => {
                    return Err(format!("closed during resume: {frame:?}").into());
                }
                _ => continue,
            };
            match self.read(room, text.as_str()) {
                Read::Nothing => {}
                Read::Answer(answer) => ws.send(Message::text(answer)).await?,
                Read::Reply(reply) if reply.id.unwrap_or(0) != 0 => self.typing_reply(reply),
                Read::Reply(reply) => {
                    let ack = reply.outcome?;
                    self.tally.replayed += ack["replayed"].as_u64().unwrap_or(0);
                    if ack["complete"] != true {
                        return Err(format!("resume incomplete: {ack}").into());
                    }
                    return Ok(ws);
                }
            }
        }
    }
}

/// The index of the member a `typing` is from (`"username":"m<n>"`).
fn typist(rest: &str) -> Option<usize> {
    const FIELD: &str = r#""username":"m"#;
    let at = rest.find(FIELD)? + FIELD.len();
    let digits = &rest[at..];
    let end = digits.find('"')?;
    digits[..end].parse().ok()
}

/// A logged event's id (`"id":"<ms>-<seq>"`), as numbers and as text.
fn logged_id(rest: &str) -> Option<(EventId, &str)> {
    const FIELD: &str = r#""id":""#;
    let at = rest.find(FIELD)? + FIELD.len();
    let text = rest[at..].split('"').next()?;
    Some((event_id(text)?, text))
}

/// Waits for the next tick, or forever without a schedule.
async fn next_tick(ticks: &mut Option<Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Runs one member until `stop`: reads its connection, types once `go` says so (at its phase
/// of the period, while the room types), and flaps when the flapper asks. Returns its tally.
async fn member(
    room: Arc<Room>,
    mut member: Member,
    mut ws: Ws,
    mut flaps: mpsc::Receiver<()>,
    (period, phase): (Option<Duration>, Duration),
    (go, stop): (CancellationToken, CancellationToken),
) -> Tally {
    let mut ticks: Option<Interval> = None;
    let mut started = false;
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = go.cancelled(), if !started => {
                started = true;
                if let (Some(start), Some(period)) = (room.start.get(), period) {
                    let mut interval = tokio::time::interval_at((*start + phase).into(), period);
                    // A late tick puts the next one a period after it: no typing comes sooner
                    // than the period after the one before (the throttle would drop it).
                    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
                    ticks = Some(interval);
                }
            }
            () = next_tick(&mut ticks) => {
                if !room.typing.load(Ordering::Relaxed) {
                    ticks = None;
                } else if member.send_typing(&room, &mut ws).await.is_err() {
                    member.tally.connections_lost += 1;
                    break;
                }
            }
            Some(()) = flaps.recv() => match member.flap(&room, ws).await {
                Some(resumed) => {
                    ws = resumed;
                    // Back from a flap, the next typing is a period away, as it would be from
                    // the last one.
                    if let Some(ticks) = &mut ticks {
                        ticks.reset();
                    }
                }
                None => return member.tally,
            },
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => match member.read(&room, text.as_str()) {
                    Read::Nothing => {}
                    Read::Answer(answer) => {
                        if ws.send(Message::text(answer)).await.is_err() {
                            member.tally.connections_lost += 1;
                            break;
                        }
                    }
                    Read::Reply(reply) => member.typing_reply(reply),
                },
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    member.tally.connections_lost += 1;
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    if member.tally.connections_lost > 0 {
        room.connected.fetch_sub(1, Ordering::Relaxed);
        room.gone.fetch_add(1, Ordering::Relaxed);
        // Kept open until the run stops, so the room's count of those gone stays right.
        stop.cancelled().await;
    }
    member.tally
}

/// Asks `per_sec` members a second to flap, until the deadline: every member once before any
/// twice, in an order that spreads them over the room (and so over the servers), skipping
/// those in a flap. Returns how many it asked.
async fn flapper(
    room: Arc<Room>,
    flaps: Vec<mpsc::Sender<()>>,
    per_sec: f64,
    deadline: Instant,
) -> u64 {
    let mut asked = 0;
    if per_sec <= 0.0 || flaps.is_empty() {
        return asked;
    }
    let members = flaps.len();
    let stride = stride(members);
    let period = Duration::from_secs_f64(1.0 / per_sec);
    let mut ticks = tokio::time::interval_at((Instant::now() + period).into(), period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut pick = 0;
    loop {
        ticks.tick().await;
        if Instant::now() >= deadline {
            return asked;
        }
        for _ in 0..members {
            let n = pick * stride % members;
            pick += 1;
            if !room.away[n].load(Ordering::Relaxed) && flaps[n].try_send(()).is_ok() {
                asked += 1;
                break;
            }
        }
    }
}

/// A step through `members` that visits each once per round (coprime with it), near the
/// golden ratio of it so that consecutive picks are far apart.
fn stride(members: usize) -> usize {
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let start = (members as f64 * 0.618_033_988_749_895) as usize;
    (start.max(1)..)
        .find(|&stride| gcd(stride, members) == 1)
        .expect("every prime above members is coprime with it")
}

/// The servers' counts of ephemeral events and of Redis round trips, summed.
#[derive(Default)]
struct Counts {
    typing: f64,
    presence: f64,
    delivered: f64,
    typing_throttled: f64,
    grace_resumes: f64,
    round_trips: f64,
}

impl Counts {
    async fn read(servers: &Servers) -> BenchResult<Self> {
        const PUBLISHED: &str = "chat_ephemeral_published_total";
        let mut counts = Self::default();
        let mut round_trips = RoundTrips::default();
        for text in crate::metrics(servers).await? {
            counts.typing += crate::counter(&text, PUBLISHED, r#"kind="typing""#);
            counts.presence += crate::counter(&text, PUBLISHED, r#"kind="presence""#);
            counts.delivered += crate::counter(&text, "chat_ephemeral_delivered_total", "");
            counts.typing_throttled += crate::counter(&text, "chat_typing_throttled_total", "");
            counts.grace_resumes += crate::counter(&text, "chat_presence_grace_resumes_total", "");
            read_round_trips(&text, &mut round_trips);
        }
        counts.round_trips = round_trips.all;
        Ok(counts)
    }
}

/// Waits until `done` holds, checking every 20 ms, for at most `limit`.
async fn until(limit: Duration, what: &str, done: impl Fn() -> bool) -> BenchResult<()> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > limit {
            return Err(format!("{what} within {limit:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

pub async fn run(
    servers: &Servers,
    watched: &Watched,
    shape: &Shape,
    redis: bool,
) -> BenchResult<Report> {
    let away_for = Duration::from_millis(shape.away_ms);
    if away_for >= GRACE && away_for < GRACE + TELLING {
        return Err(format!(
            "--away-ms {}: under {} ms (within the grace) or from {} ms (beyond it); in between, whether the room is told is a race",
            shape.away_ms,
            GRACE.as_millis(),
            (GRACE + TELLING).as_millis()
        )
        .into());
    }
    if shape.members < 2 || !shape.typing_every.is_finite() || shape.typing_every < 0.0 {
        return Err("--members must be at least 2 and --typing-every 0 or more".into());
    }
    let members = shape.members;
    let bench = Process::own();
    let epoch = Instant::now();
    drop(clients::take_latencies());
    let room_id = format!("ephemeral-{}", crate::run_id());

    let setup_started = Instant::now();
    let joined = ws_room(servers, 0, &room_id, members, 0).await?;
    let setup_last = joined
        .iter()
        .filter_map(|member| event_id(&member.last_event_id))
        .max()
        .ok_or("no join gave an event id")?;
    let room = Arc::new(Room {
        id: room_id,
        transport: servers.transport(),
        epoch,
        away_for,
        presence_per_flap: away_for >= GRACE + TELLING,
        start: OnceLock::new(),
        typing: AtomicBool::new(false),
        typing_sent_ns: (0..members).map(|_| AtomicU64::new(0)).collect(),
        away: (0..members).map(|_| AtomicBool::new(false)).collect(),
        connected: AtomicUsize::new(members),
        gone: AtomicUsize::new(0),
        flapped: AtomicU64::new(0),
        setup_last,
        settled: AtomicUsize::new(0),
        seen: AtomicU64::new(0),
        measuring: AtomicBool::new(false),
        received: AtomicU64::new(0),
        expected_typing: AtomicU64::new(0),
        expected_presence: AtomicU64::new(0),
    });
    let period = (shape.typing_every > 0.0).then(|| Duration::from_secs_f64(shape.typing_every));
    let (go, stop) = (CancellationToken::new(), CancellationToken::new());
    let mut tasks = Vec::with_capacity(members);
    let mut flaps = Vec::with_capacity(members);
    for (n, joined) in joined.into_iter().enumerate() {
        let Joined {
            server,
            ws,
            token,
            last_event_id,
        } = joined;
        let member_state = Member {
            n,
            target: servers.member(0, n).1.clone(),
            token,
            last_id: event_id(&last_event_id).unwrap_or_default(),
            last_id_text: last_event_id,
            settled: false,
            typing_seq: 0,
            tally: Tally::default(),
        };
        let (asks, asked) = mpsc::channel(1);
        flaps.push(asks);
        let phase = period.unwrap_or_default().mul_f64(spread(n));
        tasks.push((
            server,
            tokio::spawn(member(
                room.clone(),
                member_state,
                ws,
                asked,
                (period, phase),
                (go.clone(), stop.clone()),
            )),
        ));
    }
    // Setup's events (joins, and the presence each join causes) are all in before measuring.
    until(SETTLE_LIMIT, "every member had the setup's events", || {
        room.settled.load(Ordering::Relaxed) == members
    })
    .await?;
    drain(&room.seen, u64::MAX, QUIET).await;
    let setup = setup_started.elapsed();

    let counts_before = Counts::read(servers).await?;
    let watched_before = watched.sample()?;
    let bench_before = bench.sample()?;
    room.measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(shape.duration);
    room.start.set(start).map_err(|_| "the start is set once")?;
    room.typing.store(true, Ordering::Relaxed);
    go.cancel();
    let flapper = tokio::spawn(flapper(room.clone(), flaps, shape.flaps_per_sec, deadline));
    tokio::time::sleep_until(deadline.into()).await;
    let asked = flapper.await?;
    until(
        away_for + 2 * REPLY_LIMIT,
        "every flapping member came back",
        || room.flapped.load(Ordering::Relaxed) == asked,
    )
    .await?;
    room.typing.store(false, Ordering::Relaxed);
    let sending = start.elapsed();
    let expected = room.expected_typing.load(Ordering::Relaxed)
        + room.expected_presence.load(Ordering::Relaxed);
    drain(&room.received, expected, QUIET).await;
    let elapsed = start.elapsed();
    let watched_after = watched.sample()?;
    let bench_after = bench.sample()?;
    let counts_after = Counts::read(servers).await?;
    stop.cancel();

    let mut report = Report::new("ephemeral");
    report.spread_over(&hosts(servers));
    report.transport = room.transport.name();
    report.rooms = 1;
    report.members = members;
    report.rate_per_sender = period.map_or(0.0, |period| 1.0 / period.as_secs_f64());
    report.setup_s = setup.as_secs_f64();
    report.sending_s = sending.as_secs_f64();
    report.elapsed_s = elapsed.as_secs_f64();
    let mut figures = EphemeralFigures {
        typing_every_s: shape.typing_every,
        flaps_per_s: shape.flaps_per_sec,
        away_ms: shape.away_ms,
        presence_per_flap: room.presence_per_flap,
        typing_expected: room.expected_typing.load(Ordering::Relaxed),
        presence_expected: room.expected_presence.load(Ordering::Relaxed),
        typing_broadcast: (counts_after.typing - counts_before.typing) as u64,
        presence_broadcast: (counts_after.presence - counts_before.presence) as u64,
        server_deliveries: (counts_after.delivered - counts_before.delivered) as u64,
        typing_throttled: (counts_after.typing_throttled - counts_before.typing_throttled) as u64,
        grace_resumes: (counts_after.grace_resumes - counts_before.grace_resumes) as u64,
        ..EphemeralFigures::default()
    };
    for (server, task) in tasks {
        let tally = task.await?;
        figures.typing_sent += tally.typing_sent;
        figures.typing_acked += tally.typing_acked;
        figures.typing_refused += tally.typing_refused;
        figures.typing_received += tally.typing_received;
        figures.presence_online_received += tally.online;
        figures.presence_offline_received += tally.offline;
        figures.flaps += tally.flaps;
        figures.resume_failures += tally.resume_failures;
        figures.replayed += tally.replayed;
        figures.logged_received += tally.logged;
        figures.connections_lost += tally.connections_lost;
        report.add_sent(server, tally.typing_sent);
        report.add(
            server,
            Received {
                delivered: tally.typing_received + tally.online + tally.offline,
                duplicates_or_reordered: 0,
            },
        );
    }
    report.expected = expected;
    report.set_latencies(clients::take_latencies());
    report.finish(&watched_before, &watched_after, bench_before, bench_after);
    let events = figures.events();
    let per_event = |total: Option<f64>| {
        total
            .filter(|_| events > 0)
            .map(|total| total / events as f64)
    };
    figures.events_per_s = events as f64 / report.elapsed_s.max(1e-9);
    figures.server_cpu_us_per_event = per_event(report.server_cpu_s.map(|s| s * 1e6));
    figures.redis_cpu_us_per_event = per_event(report.redis_cpu_s.map(|s| s * 1e6));
    if redis {
        let round_trips = counts_after.round_trips - counts_before.round_trips;
        report.redis_round_trips = Some(round_trips as u64);
        figures.redis_round_trips_per_event = per_event(Some(round_trips));
    }
    report.ephemeral = Some(figures);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flapper_visits_every_member_once_per_round() {
        for members in [2, 3, 8, 10, 1000, 1024] {
            let stride = stride(members);
            let mut seen: Vec<usize> = (0..members).map(|k| k * stride % members).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..members).collect::<Vec<_>>(), "{members} members");
        }
    }

    #[test]
    fn frames_are_read_on_both_transports() {
        let typing = r#"{"event":"typing","data":{"roomId":"r","username":"m17"}}"#;
        let (name, rest) = Transport::Ws.room_event(typing).expect("a room event");
        assert_eq!((name, typist(rest)), ("typing", Some(17)));
        let typing = r#"42["typing",{"roomId":"r","username":"m3"}]"#;
        let (name, rest) = Transport::Socketio
            .room_event(typing)
            .expect("a room event");
        assert_eq!((name, typist(rest)), ("typing", Some(3)));

        let joined = r#"{"event":"add:member:success","id":"1764104412345-7","data":{"roomId":"r","username":"m2"}}"#;
        let (_, rest) = Transport::Ws.room_event(joined).expect("a room event");
        assert_eq!(
            logged_id(rest),
            Some(((1_764_104_412_345, 7), "1764104412345-7"))
        );
        let joined = r#"42["add:member:success",{"roomId":"r","username":"m2","id":"5-0"}]"#;
        let (_, rest) = Transport::Socketio
            .room_event(joined)
            .expect("a room event");
        assert_eq!(logged_id(rest), Some(((5, 0), "5-0")));

        // Replies are not room events, and say which client event they answer.
        let ack = r#"{"event":"ack","ref":"4","data":{"roomId":"r"}}"#;
        assert!(Transport::Ws.room_event(ack).is_none());
        let reply = Transport::Ws.reply(ack).expect("a reply");
        assert_eq!(reply.id, Some(4));
        assert!(reply.outcome.is_ok());
        let refused = Transport::Socketio
            .reply(r#"430[{"error":{"code":"not_member","message":"no"}}]"#)
            .expect("a reply");
        assert_eq!(refused.id, Some(0));
        assert!(refused.outcome.is_err());
    }
}
