//! The InfluxDB 2 sink: the same readings as MQTT, written to the operations
//! centre's time-series database (InfluxDB 2 or a compatible one such as
//! VictoriaMetrics) through `/api/v2/write`, from its own spool lane.
//!
//! The lane (`influxdb`) keeps its own position: a dead, slow or refusing
//! database never delays MQTT, and the reverse. A round takes up to
//! `influxdb.max_batch` points from the lane (several batches, no waiting),
//! writes them, and acknowledges the batches only once every point of them
//! was written, set aside as bad, or dropped by the server as outside its
//! retention. While a round cannot be written, the lane's link is down (new
//! records go to disk under the spool's caps and drop rules) and the same
//! round is tried again, so the backlog is delivered oldest first.
//!
//! Answers are classified like Telegraf's `outputs.influxdb_v2`
//! ([`http::classify`]): 2xx written; 413 halve the batch; 400/422 bisect to
//! find the bad points, set them aside (`influxdb.rejected`, one event, at
//! most one a minute);
//! 401/403 keep everything, critical event, retry slowly; 429/5xx and
//! connection errors jittered back-off honouring `Retry-After`; "outside
//! retention" drop, count, event, never resend.
//!
//! The rooms: `config.rs` the `[influxdb]` section, `line.rs` the line
//! protocol encoder (pure), `http.rs` the client and the classes,
//! `check.rs` what `wardgate check` asks of the database.

mod check;
pub(crate) mod config;
pub(crate) mod http;
pub(crate) mod line;

pub(crate) use check::check;

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use self::config::InfluxSetup;
use self::http::{classify, describe, Class, Client, HttpError};
use super::lane::Lane;
use super::mqtt::{Backoff, EventReport};
use crate::events;
use crate::model::{now_ms, Values};
use crate::spool::Batch;
use crate::status::{InfluxStatus, StatusHub};

/// The name of this sink's lane in the spool.
pub(crate) const SINK_NAME: &str = crate::spool::Lane::Influx.name();

/// A lane batch's bodies total at most this; a round is cut by points.
const MAX_BATCH_BYTES: usize = 8 << 20;
/// Transient errors: 1 s, three fast tries, doubling to a minute.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Refused (401/403/404): 10 s doubling to 5 min.
const REFUSED_MIN: Duration = Duration::from_secs(10);
const REFUSED_MAX: Duration = Duration::from_secs(300);
/// `Retry-After` is honoured up to this.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(600);
/// An outage at least this long is reported when it ends.
const OUTAGE_REPORTED: Duration = Duration::from_secs(10);
/// At most one `influxdb.rejected` and one `influxdb.retention` event this
/// often (a source whose values InfluxDB keeps refusing must not flood the
/// events).
const EVENT_GAP: Duration = Duration::from_secs(60);

/// Raises an event at most once per [`EVENT_GAP`]; the points of the rounds
/// in between are held and counted in the next one.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    /// `n` more points; the count to report now, if an event is due.
    fn add(&mut self, n: u64) -> Option<u64> {
        self.held += n;
        if self.last.is_none_or(|t| t.elapsed() >= EVENT_GAP) {
            self.last = Some(Instant::now());
            Some(std::mem::take(&mut self.held))
        } else {
            None
        }
    }
}

/// Counters this sink keeps for status, metrics and gateway telemetry.
#[derive(Debug, Default)]
pub(crate) struct InfluxCounters {
    /// The last write was answered 2xx.
    pub connected: AtomicBool,
    pub points_written: AtomicU64,
    pub requests: AtomicU64,
    /// Points set aside as bad (400/422 after bisecting, 413 for one point,
    /// unreadable records).
    pub rejected: AtomicU64,
    /// Points the server dropped as outside its retention.
    pub retention_dropped: AtomicU64,
    /// 413 answers (each halved the batch).
    pub too_large: AtomicU64,
    /// 401/403/other 4xx answers (data kept).
    pub refused: AtomicU64,
    /// 429/5xx answers and connection errors (data kept, back-off).
    pub retries: AtomicU64,
    pub last_write_ms: AtomicI64,
    /// The points per request now (halved on 413).
    pub batch_limit: AtomicU64,
    /// Advances at least once a second while the sink's loop runs.
    pub alive: AtomicU64,
}

impl InfluxCounters {
    /// Copies the counters into the status (the app's status refresher,
    /// once a second).
    pub(crate) fn refresh(&self, s: &mut InfluxStatus, depth: u64) {
        s.depth = depth;
        s.written = self.points_written.load(Ordering::Relaxed);
        s.rejected = self.rejected.load(Ordering::Relaxed);
        s.retention_dropped = self.retention_dropped.load(Ordering::Relaxed);
        s.too_large = self.too_large.load(Ordering::Relaxed);
        s.refused = self.refused.load(Ordering::Relaxed);
        s.retries = self.retries.load(Ordering::Relaxed);
        s.batch_limit = self.batch_limit.load(Ordering::Relaxed);
        let last = self.last_write_ms.load(Ordering::Relaxed);
        s.last_write_ms = (last > 0).then_some(last);
    }
}

/// The points of one round and what is left to do with them.
struct Round {
    batches: Vec<Batch>,
    /// One line per record (None: unreadable, rejected), in batch order.
    lines: Vec<Option<String>>,
    /// Ranges of `lines` still to write, in order.
    todo: VecDeque<Range<usize>>,
    /// Points found bad, with the last answer that refused them.
    bad: u64,
    bad_why: Option<(u16, String)>,
    retention: u64,
    retention_why: Option<String>,
}

/// Why a round stopped before it was done.
struct Failure {
    class: &'static str,
    error: String,
    refused: bool,
    status: Option<u16>,
    after: Option<Duration>,
}

pub(crate) struct InfluxSink<L: Lane> {
    cfg: Arc<InfluxSetup>,
    lane: L,
    status: StatusHub,
    counters: Arc<InfluxCounters>,
    report: EventReport,
    /// Device id -> its kind (the `type` tag).
    types: HashMap<String, String>,
}

impl<L: Lane> InfluxSink<L> {
    pub(crate) fn new(
        cfg: Arc<InfluxSetup>,
        lane: L,
        status: StatusHub,
        counters: Arc<InfluxCounters>,
        report: EventReport,
    ) -> Self {
        let types = cfg.device_kinds.clone();
        lane.set_max_bytes(MAX_BATCH_BYTES);
        counters
            .batch_limit
            .store(cfg.influxdb.max_batch.get(), Ordering::Relaxed);
        let url = cfg.influxdb.url.clone().unwrap_or_default();
        status.update(|s| {
            s.influxdb = Some(InfluxStatus {
                url,
                since_ms: now_ms(),
                batch_limit: cfg.influxdb.max_batch.get(),
                ..Default::default()
            })
        });
        InfluxSink {
            cfg,
            lane,
            status,
            counters,
            report,
            types,
        }
    }

    /// Writes rounds until `cancel`; what is in hand then goes back to the
    /// spool (it was not acknowledged).
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let Some(ep) = self.cfg.influxdb.endpoint() else {
            tracing::error!("influxdb.url is not usable; the InfluxDB sink does not run");
            cancel.cancelled().await;
            return;
        };
        let mut client: Option<Client> = None;
        let mut retry = Backoff::new(RETRY_MIN, RETRY_MAX, 3, OUTAGE_REPORTED);
        let mut refused = Backoff::new(REFUSED_MIN, REFUSED_MAX, 1, OUTAGE_REPORTED);
        // Since when writes fail, and whether the refusal was reported.
        let mut down: Option<(Instant, bool)> = None;
        let mut throttles = (Throttle::default(), Throttle::default());
        let max = self.cfg.influxdb.max_batch.as_usize();
        loop {
            let first = tokio::select! {
                _ = cancel.cancelled() => return,
                b = self.alive(self.lane.next_batch(max)) => b,
            };
            let first = match first {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "reading the spool failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut batches = vec![first];
            let mut points = batches[0].bodies.len();
            // More of what is ready now, without waiting.
            while points < max {
                match tokio::time::timeout(Duration::ZERO, self.lane.next_batch(max)).await {
                    Ok(Ok(b)) => {
                        points += b.bodies.len();
                        batches.push(b);
                    }
                    _ => break,
                }
            }
            let mut round = self.round(batches);
            loop {
                if client.is_none() {
                    match Client::new(
                        ep.clone(),
                        self.cfg.influxdb.ca_file.as_deref(),
                        self.cfg.influxdb.token_file.as_deref(),
                        self.cfg.influxdb.timeout.get(),
                    ) {
                        Ok(c) => client = Some(c),
                        Err(e) => {
                            let f = Failure {
                                class: "unreachable",
                                error: e.to_string(),
                                refused: false,
                                status: None,
                                after: None,
                            };
                            let delay = retry.next_delay(&mut rand::rng());
                            self.failed(&f, &mut down, delay);
                            if self.pause(&cancel, delay).await {
                                return;
                            }
                            continue;
                        }
                    }
                }
                let Some(c) = client.as_mut() else { continue };
                let step = tokio::select! {
                    _ = cancel.cancelled() => {
                        self.lane.nack_all();
                        return;
                    }
                    r = self.alive(self.write(c, &mut round)) => r,
                };
                match step {
                    Ok(()) => break,
                    Err(f) => {
                        let delay = if f.refused {
                            refused.next_delay(&mut rand::rng())
                        } else {
                            let d = retry.next_delay(&mut rand::rng());
                            match f.after {
                                // At least what the server asked, jittered up.
                                Some(a) => {
                                    let a = a.min(RETRY_AFTER_MAX);
                                    a + Duration::from_millis(rand::random_range(
                                        0..=a.as_millis() as u64 / 10 + 100,
                                    ))
                                }
                                None => d,
                            }
                        };
                        self.failed(&f, &mut down, delay);
                        if self.pause(&cancel, delay).await {
                            return;
                        }
                    }
                }
            }
            self.finish(round, &mut throttles);
            if let Some((since, _)) = down.take() {
                retry.connection_ended(Duration::MAX);
                refused.connection_ended(Duration::MAX);
                self.restored(since.elapsed());
            } else if !self.counters.connected.load(Ordering::Relaxed) {
                self.restored(Duration::ZERO);
            }
        }
    }

    /// Waits `d` (the sink's loop still shows signs of life); true when
    /// cancelled meanwhile (what is in hand goes back to the spool).
    async fn pause(&self, cancel: &CancellationToken, d: Duration) -> bool {
        tokio::select! {
            _ = cancel.cancelled() => {
                self.lane.nack_all();
                true
            }
            _ = self.alive(tokio::time::sleep(d)) => false,
        }
    }

    /// Runs `f`, advancing the sink's sign of life every second meanwhile.
    async fn alive<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        super::lane::beating(&self.counters.alive, f).await
    }

    fn round(&self, batches: Vec<Batch>) -> Round {
        let site = &self.cfg.site;
        let mut lines = Vec::new();
        for b in &batches {
            // Command replies travel through the spool as records of a
            // reserved device, for the MQTT sink only: acknowledged with
            // the round, never written.
            if &*b.device == crate::ids::REPLY_DEVICE {
                continue;
            }
            let ty = self.types.get(&*b.device).map(String::as_str).unwrap_or("");
            for body in &b.bodies {
                lines.push(line::encode(site, &b.device, ty, b.kind, body));
            }
        }
        let mut round = Round {
            batches,
            todo: VecDeque::new(),
            bad: 0,
            bad_why: None,
            retention: 0,
            retention_why: None,
            lines,
        };
        let unreadable = round.lines.iter().filter(|l| l.is_none()).count() as u64;
        if unreadable > 0 {
            round.bad += unreadable;
            round.bad_why = Some((0, "record unreadable".into()));
        }
        let limit = self.limit();
        let n = round.lines.len();
        let mut a = 0;
        while a < n {
            let b = (a + limit).min(n);
            round.todo.push_back(a..b);
            a = b;
        }
        round
    }

    fn limit(&self) -> usize {
        (self.counters.batch_limit.load(Ordering::Relaxed) as usize).max(1)
    }

    /// Writes what is left of the round; stops at the first answer that
    /// asks to wait (the rest stays in `round.todo`).
    async fn write(&self, client: &mut Client, round: &mut Round) -> Result<(), Failure> {
        let c = &self.cfg.influxdb;
        let path = http::write_path(&client.endpoint().base, &c.org, &c.bucket);
        while let Some(r) = round.todo.pop_front() {
            let body: Vec<&str> = round.lines[r.clone()]
                .iter()
                .filter_map(|l| l.as_deref())
                .collect();
            if body.is_empty() {
                continue;
            }
            let n = body.len();
            let text = body.join("\n");
            let (bytes, headers) = self.body(text);
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let answer = client
                .request(hyper::Method::POST, &path, &headers, bytes)
                .await;
            let answer = match answer {
                Ok(a) => a,
                Err(e) => {
                    round.todo.push_front(r);
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    let class = match e {
                        HttpError::Timeout(_) => "retry",
                        _ => "unreachable",
                    };
                    return Err(Failure {
                        class,
                        error: e.to_string(),
                        refused: false,
                        status: None,
                        after: None,
                    });
                }
            };
            match classify(&answer) {
                Class::Written => {
                    self.counters
                        .points_written
                        .fetch_add(n as u64, Ordering::Relaxed);
                    self.counters
                        .last_write_ms
                        .store(now_ms(), Ordering::Relaxed);
                }
                Class::Retention { dropped } => {
                    // InfluxDB wrote the others; never send these again.
                    round.retention += dropped.unwrap_or(n as u64).min(n as u64);
                    round.retention_why = Some(describe(&answer));
                }
                Class::TooLarge if r.len() > 1 => {
                    self.counters.too_large.fetch_add(1, Ordering::Relaxed);
                    let half = (r.len() / 2).max(1);
                    self.counters
                        .batch_limit
                        .store(half as u64, Ordering::Relaxed);
                    tracing::warn!(
                        points = r.len(),
                        now = half,
                        "InfluxDB: request too large (413); halving the batch"
                    );
                    split(&mut round.todo, r, half);
                    self.note_class("too_large", &describe(&answer));
                }
                Class::BadPoints if r.len() > 1 => {
                    // Bisect: the halves go again, in order.
                    let half = r.len().div_ceil(2);
                    split(&mut round.todo, r, half);
                }
                Class::TooLarge | Class::BadPoints => {
                    if answer.status == 413 {
                        self.counters.too_large.fetch_add(1, Ordering::Relaxed);
                    }
                    round.bad += 1;
                    round.bad_why = Some((answer.status, describe(&answer)));
                    tracing::warn!(
                        status = answer.status,
                        line = ?round.lines[r.start],
                        error = %describe(&answer),
                        "InfluxDB refused a point; set aside"
                    );
                }
                Class::Refused => {
                    round.todo.push_front(r);
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(Failure {
                        class: "refused",
                        error: format!("{} {}", answer.status, describe(&answer)),
                        refused: true,
                        status: Some(answer.status),
                        after: None,
                    });
                }
                Class::Retry { after } => {
                    round.todo.push_front(r);
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    return Err(Failure {
                        class: "retry",
                        error: format!("{} {}", answer.status, describe(&answer)),
                        refused: false,
                        status: Some(answer.status),
                        after,
                    });
                }
            }
        }
        Ok(())
    }

    /// The request body, gzipped when configured, and its headers.
    fn body(&self, text: String) -> (Bytes, Vec<(&'static str, String)>) {
        let mut headers = vec![("content-type", "text/plain; charset=utf-8".to_owned())];
        if self.cfg.influxdb.gzip {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(text.len() / 4),
                flate2::Compression::fast(),
            );
            // Writing to a Vec cannot fail.
            if enc.write_all(text.as_bytes()).is_ok() {
                if let Ok(z) = enc.finish() {
                    headers.push(("content-encoding", "gzip".to_owned()));
                    return (Bytes::from(z), headers);
                }
            }
        }
        (Bytes::from(text), headers)
    }

    /// The round is done: acknowledges its batches, counts and reports
    /// what was set aside or dropped.
    fn finish(&self, round: Round, throttles: &mut (Throttle, Throttle)) {
        for b in &round.batches {
            self.lane.ack(b.id);
        }
        let c = &self.counters;
        if round.bad > 0 {
            c.rejected.fetch_add(round.bad, Ordering::Relaxed);
            let (status, reason) = round.bad_why.clone().unwrap_or((0, String::new()));
            if let Some(count) = throttles.0.add(round.bad) {
                let ev = events::INFLUXDB_REJECTED;
                let msg = ev.render(&[("count", &count), ("status", &status), ("reason", &reason)]);
                let mut v = Values::new();
                v.num("influxdb.points", count as f64);
                v.num("influxdb.status", f64::from(status));
                (self.report)(ev.severity, ev.code, &msg, v);
            }
            self.note_class("bad_points", &reason);
        }
        if round.retention > 0 {
            c.retention_dropped
                .fetch_add(round.retention, Ordering::Relaxed);
            let reason = round.retention_why.clone().unwrap_or_default();
            tracing::warn!(points = round.retention, %reason, "InfluxDB dropped points outside its retention");
            if let Some(count) = throttles.1.add(round.retention) {
                let ev = events::INFLUXDB_RETENTION;
                let msg = ev.render(&[("count", &count), ("reason", &reason)]);
                let mut v = Values::new();
                v.num("influxdb.points", count as f64);
                (self.report)(ev.severity, ev.code, &msg, v);
            }
            self.note_class("retention", &reason);
        }
    }

    fn note_class(&self, class: &str, error: &str) {
        self.status.update(|s| {
            if let Some(i) = s.influxdb.as_mut() {
                i.last_class = Some(class.to_owned());
                i.last_error = Some(error.to_owned());
            }
        });
    }

    /// A round could not be finished: the link is down (new records go to
    /// disk), shown and logged; a refusal raises one critical event per
    /// outage.
    fn failed(&self, f: &Failure, down: &mut Option<(Instant, bool)>, retry_in: Duration) {
        self.lane.set_link(false);
        let was_up = self.counters.connected.swap(false, Ordering::Relaxed);
        let (_, reported) = down.get_or_insert((Instant::now(), false));
        tracing::warn!(
            class = f.class,
            error = %f.error,
            retry_in = %humantime::format_duration(Duration::from_millis(retry_in.as_millis() as u64)),
            "InfluxDB write failed; readings kept"
        );
        if f.refused && !*reported {
            *reported = true;
            let ev = events::INFLUXDB_TOKEN_REFUSED;
            let status = f.status.unwrap_or(0);
            let url = self.cfg.influxdb.url.clone().unwrap_or_default();
            let msg = ev.render(&[("url", &url), ("status", &status), ("reason", &f.error)]);
            let mut v = Values::new();
            v.num("influxdb.status", f64::from(status));
            (self.report)(ev.severity, ev.code, &msg, v);
        }
        self.status.update(|s| {
            if let Some(i) = s.influxdb.as_mut() {
                if was_up || i.since_ms == 0 {
                    i.since_ms = now_ms();
                }
                i.connected = false;
                i.last_class = Some(f.class.to_owned());
                i.last_error = Some(f.error.clone());
            }
        });
    }

    /// Writes go through (again).
    fn restored(&self, after: Duration) {
        self.counters.connected.store(true, Ordering::Relaxed);
        self.lane.set_link(true);
        self.status.update(|s| {
            if let Some(i) = s.influxdb.as_mut() {
                i.connected = true;
                i.since_ms = now_ms();
            }
        });
        if after >= OUTAGE_REPORTED {
            let pending = self.lane.pending();
            tracing::info!(after = ?after, pending, "InfluxDB accepts writes again");
            let ev = events::INFLUXDB_RESTORED;
            let words = humantime::format_duration(Duration::from_secs(after.as_secs()));
            let msg = ev.render(&[("after", &words), ("pending", &pending)]);
            let mut v = Values::new();
            v.num("influxdb.down_for", after.as_secs() as f64);
            (self.report)(ev.severity, ev.code, &msg, v);
        } else {
            tracing::info!("InfluxDB writes going through");
        }
    }
}

/// Puts `r` back at the front of `todo` cut into pieces of `size`, in order.
fn split(todo: &mut VecDeque<Range<usize>>, r: Range<usize>, size: usize) {
    let mut pieces = Vec::new();
    let mut a = r.start;
    while a < r.end {
        let b = (a + size).min(r.end);
        pieces.push(a..b);
        a = b;
    }
    for p in pieces.into_iter().rev() {
        todo.push_front(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_order_and_throttle_holds_counts() {
        let mut todo: VecDeque<Range<usize>> = VecDeque::new();
        todo.push_back(10..12);
        split(&mut todo, 0..10, 4);
        assert_eq!(Vec::from(todo), vec![0..4, 4..8, 8..10, 10..12]);
        let mut t = Throttle::default();
        assert_eq!(t.add(3), Some(3));
        assert_eq!(t.add(2), None);
        assert_eq!(t.add(4), None);
        t.last = Some(Instant::now() - EVENT_GAP);
        assert_eq!(
            t.add(1),
            Some(7),
            "held points are reported with the next event"
        );
    }
}
