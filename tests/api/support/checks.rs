//! Small shared checks: unique room ids, event id and timestamp formats, a bounded poll, and
//! reading one sample of `/metrics`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A room id no other test in this run uses: the tag (cleaned to the room id alphabet), the
/// process id and a counter. Always a valid room id (at most 64 characters).
pub fn unique_room(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    format!("{tag}-{}-{n}", std::process::id())
}

/// Parses an event id `<milliseconds>-<sequence>` into its two numbers (which order ids, part
/// by part); panics with the id when it has another form.
#[track_caller]
pub fn event_id(raw: &str) -> (u64, u64) {
    let parsed = raw.split_once('-').and_then(|(ms, seq)| {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if digits(ms) && digits(seq) {
            Some((ms.parse().ok()?, seq.parse().ok()?))
        } else {
            None
        }
    });
    parsed.unwrap_or_else(|| panic!("{raw:?} is not an event id like 1732560000000-0"))
}

/// Asserts `ts` is RFC 3339 in UTC with exactly three fractional digits, like
/// `2026-11-25T21:00:00.000Z`, and returns it as milliseconds since the epoch.
#[track_caller]
pub fn assert_rfc3339_millis_utc(ts: &str) -> i64 {
    let shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    let matches_shape = ts.len() == shape.len()
        && ts.bytes().zip(shape.bytes()).all(|(got, want)| match want {
            b'd' => got.is_ascii_digit(),
            other => got == other,
        });
    assert!(
        matches_shape,
        "ts {ts:?} is not RFC 3339 UTC with milliseconds"
    );
    chrono::DateTime::parse_from_rfc3339(ts)
        .unwrap_or_else(|err| panic!("ts {ts:?} is not a valid RFC 3339 time: {err}"))
        .timestamp_millis()
}

/// Polls `attempt` until it returns `Some`, at most until `timeout`; panics naming `what`
/// when time runs out. The pause between attempts is only the poll interval.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    const POLL_INTERVAL: Duration = Duration::from_millis(50);
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The value of the sample `series` (name and labels exactly as rendered) in `/metrics` text.
pub fn metric_sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.trim();
        value.parse().ok()
    })
}
