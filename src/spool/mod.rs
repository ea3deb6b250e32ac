//! The durable buffer between sources and sinks.
//!
//! Every record (sample or event) is stamped here with its device's next
//! sequence number, the time and the clock state, then queued for each sink
//! ("lane"). Under the default `spill` policy a record goes to the sinks from
//! memory and is written to SQLite only when it was not acknowledged within
//! `spill_after`, when the sink's link is down, or when the memory queue is
//! full; writes are batched into one commit per `commit_interval`. Under `wal`
//! every record is committed before it is sent. A row is deleted only after
//! its sink acknowledged it; each sink has its own rows and its own position.
//!
//! Locking: `state` may be held while taking `db`, never the other way round.

pub mod db;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::{SpoolConfig, SpoolPolicy};
use crate::model::{now_ms, ClockState, Event, Kind, Reading, Sample};

use db::{Db, NewRow};

/// Sequence numbers are reserved on disk this many at a time, so that a
/// healthy gateway writes almost nothing per sample; after a power cut a
/// device's sequence resumes after the reserved block (a visible jump).
pub const SEQ_BLOCK: u64 = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// SQLite refused an operation: logged and counted; records stay in
    /// memory and the write is retried at the next commit.
    #[error("spool {what}: {source}")]
    Sql {
        what: String,
        #[source]
        source: rusqlite::Error,
    },
    /// A file operation failed (creating the directory, moving a corrupt
    /// spool aside): fatal at start, the operator fixes permissions or space.
    #[error("spool {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A spool stayed unreadable even after being replaced: fatal at start.
    #[error("spool is corrupt and could not be replaced: {0}")]
    Corrupt(String),
    /// A blocking task failed to complete (runtime shutting down).
    #[error("spool task failed: {0}")]
    Task(String),
}

/// Why records were dropped; each reason is counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// `spool.max_bytes` reached: oldest telemetry went first.
    Full,
    /// Older than `spool.max_age`.
    Age,
    /// Memory queue overflowed while the disk could not be written.
    WriteFailed,
    /// A row read back from disk was not a valid record.
    Corrupt,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Full => "full",
            DropReason::Age => "age",
            DropReason::WriteFailed => "write_failed",
            DropReason::Corrupt => "corrupt",
        }
    }
}

struct Entry {
    kind: Kind,
    device: Arc<str>,
    seq: u64,
    ts: i64,
    synced: bool,
    body: Arc<str>,
    born: Instant,
    /// The row holding this record on disk, once written.
    row: Option<i64>,
}

impl Entry {
    fn clone_for_lane(&self) -> Entry {
        Entry {
            kind: self.kind,
            device: self.device.clone(),
            seq: self.seq,
            ts: self.ts,
            synced: self.synced,
            body: self.body.clone(),
            born: self.born,
            row: None,
        }
    }
}

/// A group of records of one device and kind, sent as one message.
pub struct Batch {
    pub id: u64,
    pub kind: Kind,
    pub device: Arc<str>,
    /// Sent from the disk backlog rather than live.
    pub historical: bool,
    /// Each record's JSON object, without the `historical` flag.
    pub bodies: Vec<Arc<str>>,
}

enum InFlight {
    Memory(Vec<Entry>),
    Disk(Vec<i64>),
}

/// Backlog rows of one device: (device, [(row id, body)]).
type DeviceRows = (String, Vec<(i64, String)>);

/// What the spool knows of a sink's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Not tried yet (start-up): records wait in memory as if the link were up.
    Unknown,
    Up,
    /// Records go to disk at the next commit.
    Down,
}

struct Lane {
    name: String,
    link: Link,
    events: VecDeque<Entry>,
    live: VecDeque<Entry>,
    inflight: HashMap<u64, InFlight>,
    /// Rows on disk that are in flight from memory: the backlog reader skips them.
    mem_rows: HashSet<i64>,
    /// Highest row id handed out from disk, per kind (index = Kind::as_i64).
    cursor: [i64; 2],
    /// Whether the disk may hold unsent rows of this kind.
    disk_maybe: [bool; 2],
    /// Batches read from disk, waiting to be sent.
    disk_ready: [VecDeque<Batch>; 2],
    /// The last, partial batch of each device from a full window, held back
    /// to be filled from the next window (so backlog batches stay full).
    carry: [Vec<DeviceRows>; 2],
    notify: Arc<Notify>,
}

struct SeqState {
    next: u64,
    reserved: u64,
}

struct State {
    lanes: Vec<Lane>,
    seqs: HashMap<(Arc<str>, Kind), SeqState>,
    /// Acknowledged rows not yet deleted.
    to_delete: Vec<i64>,
    /// `wal` policy: records waiting for their commit before being queued.
    wal_pending: Vec<Entry>,
    next_batch_id: u64,
    last_age_check: Option<Instant>,
}

/// Counters the gateway reports about its spool.
#[derive(Debug, Default)]
pub struct SpoolCounters {
    pub pushed: AtomicU64,
    pub acked: AtomicU64,
    pub spilled: AtomicU64,
    pub dropped_full: AtomicU64,
    pub dropped_age: AtomicU64,
    pub dropped_write_failed: AtomicU64,
    pub dropped_corrupt: AtomicU64,
    /// Dropped before this run (persisted).
    pub dropped_before: AtomicU64,
    pub write_errors: AtomicU64,
    pub disk_rows: AtomicI64,
    pub disk_bytes: AtomicU64,
}

impl SpoolCounters {
    /// Every record ever dropped by this spool, this run and before.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_before.load(Ordering::Relaxed)
            + self.dropped_full.load(Ordering::Relaxed)
            + self.dropped_age.load(Ordering::Relaxed)
            + self.dropped_write_failed.load(Ordering::Relaxed)
            + self.dropped_corrupt.load(Ordering::Relaxed)
    }
}

/// A snapshot of the spool for status and telemetry.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SpoolStats {
    /// Records on disk (all sinks).
    pub disk_rows: u64,
    pub disk_bytes: u64,
    /// Records in memory not yet acknowledged (all sinks).
    pub memory: u64,
    pub dropped: u64,
    pub write_errors: u64,
    /// Records written to disk since start (not acknowledged in time, or
    /// the link was down).
    pub spilled: u64,
}

/// What opening the spool found, for the gateway to report.
#[derive(Debug, Default)]
pub struct StartReport {
    pub moved_aside: Option<(PathBuf, String)>,
    /// Devices whose sequence resumed after an unclean stop.
    pub resumed_unclean: Vec<(String, Kind, u64)>,
}

pub struct Spool {
    cfg: SpoolConfig,
    site: Arc<str>,
    state: Mutex<State>,
    db: Mutex<Db>,
    /// Wakes the flusher (wal policy: a record waits for its commit).
    flush_wake: Notify,
    counters: SpoolCounters,
    clock: ClockCache,
    closed: AtomicBool,
    /// Completed commit rounds (the watchdog's sign of life).
    progress: AtomicU64,
}

/// A handle a sink uses to take batches and acknowledge them.
#[derive(Clone)]
pub struct LaneHandle {
    spool: Arc<Spool>,
    idx: usize,
    notify: Arc<Notify>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the spool's data half
    // written in a way that matters more than stopping: keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Spool {
    /// Opens the spool at `cfg.path` for the named sinks. A corrupt file is
    /// moved aside and replaced (reported in the [`StartReport`]).
    pub fn open(
        cfg: &SpoolConfig,
        site: &str,
        sinks: &[&str],
    ) -> Result<(Arc<Spool>, StartReport), SpoolError> {
        let (mut db, report) = Db::open(&cfg.path)?;
        let sql = |what: &str| {
            let what = what.to_owned();
            move |e| SpoolError::Sql { what, source: e }
        };
        let clean = db.meta_get("clean").map_err(sql("reading state"))?;
        let dropped_before = db
            .meta_get("dropped")
            .map_err(sql("reading counters"))?
            .unwrap_or(0);
        let mut seqs = HashMap::new();
        let mut resumed_unclean = Vec::new();
        for (key, value) in db.meta_all("seq/").map_err(sql("reading sequences"))? {
            // key: seq/<kind>/<device>
            let mut parts = key.splitn(3, '/');
            let (_, k, dev) = (parts.next(), parts.next(), parts.next());
            let (Some(k), Some(dev)) = (
                k.and_then(|k| k.parse::<i64>().ok())
                    .and_then(Kind::from_i64),
                dev,
            ) else {
                tracing::warn!(%key, "ignoring unknown sequence entry in spool");
                continue;
            };
            let value = value.max(0) as u64;
            if clean != Some(1) && value > 0 {
                resumed_unclean.push((dev.to_owned(), k, value));
            }
            seqs.insert(
                (Arc::<str>::from(dev), k),
                SeqState {
                    next: value,
                    reserved: value,
                },
            );
        }
        db.meta_set(&[("clean".into(), 0)])
            .map_err(sql("writing state"))?;
        let rows = db.row_count().map_err(sql("counting rows"))?;
        let bytes = db.used_bytes().map_err(sql("measuring"))?;
        let counters = SpoolCounters::default();
        counters
            .dropped_before
            .store(dropped_before.max(0) as u64, Ordering::Relaxed);
        counters.disk_rows.store(rows as i64, Ordering::Relaxed);
        counters.disk_bytes.store(bytes, Ordering::Relaxed);
        let lanes = sinks
            .iter()
            .map(|name| Lane {
                name: (*name).to_owned(),
                link: Link::Unknown,
                events: VecDeque::new(),
                live: VecDeque::new(),
                inflight: HashMap::new(),
                mem_rows: HashSet::new(),
                cursor: [0, 0],
                disk_maybe: [true, true],
                disk_ready: [VecDeque::new(), VecDeque::new()],
                carry: [Vec::new(), Vec::new()],
                notify: Arc::new(Notify::new()),
            })
            .collect();
        if rows > 0 {
            tracing::info!(rows, bytes, "spool holds a backlog from before");
        }
        let spool = Arc::new(Spool {
            cfg: cfg.clone(),
            site: Arc::from(site),
            state: Mutex::new(State {
                lanes,
                seqs,
                to_delete: Vec::new(),
                wal_pending: Vec::new(),
                next_batch_id: 1,
                last_age_check: None,
            }),
            db: Mutex::new(db),
            flush_wake: Notify::new(),
            counters,
            clock: ClockCache::default(),
            closed: AtomicBool::new(false),
            progress: AtomicU64::new(0),
        });
        Ok((
            spool,
            StartReport {
                moved_aside: report.moved_aside,
                resumed_unclean,
            },
        ))
    }

    pub fn site(&self) -> &str {
        &self.site
    }

    pub fn path(&self) -> &Path {
        &self.cfg.path
    }

    pub fn counters(&self) -> &SpoolCounters {
        &self.counters
    }

    /// The handle of the named sink's lane.
    pub fn lane(self: &Arc<Self>, sink: &str) -> Option<LaneHandle> {
        let st = lock(&self.state);
        let idx = st.lanes.iter().position(|l| l.name == sink)?;
        Some(LaneHandle {
            spool: self.clone(),
            idx,
            notify: st.lanes[idx].notify.clone(),
        })
    }

    /// Stamps a reading with seq, time and clock state and queues it for
    /// every sink. Returns the record's sequence number.
    pub fn push(&self, device: &Arc<str>, reading: Reading) -> Result<u64, SpoolError> {
        let ts = now_ms();
        let clock = self.clock.get();
        let kind = match reading {
            Reading::Sample(_) => Kind::Sample,
            Reading::Event { .. } => Kind::Event,
        };
        let mut st = lock(&self.state);
        let seq = self.next_seq(&mut st, device, kind)?;
        let body = match reading {
            Reading::Sample(values) => serde_json::to_string(&Sample {
                seq,
                ts,
                clock,
                values,
            }),
            Reading::Event {
                severity,
                code,
                message,
                values,
            } => serde_json::to_string(&Event {
                seq,
                ts,
                clock,
                severity,
                code,
                message,
                values,
            }),
        }
        .map_err(|e| SpoolError::Task(format!("encoding record: {e}")))?;
        let entry = Entry {
            kind,
            device: device.clone(),
            seq,
            ts,
            synced: clock == ClockState::Synced,
            body: Arc::from(body),
            born: Instant::now(),
            row: None,
        };
        self.counters.pushed.fetch_add(1, Ordering::Relaxed);
        match self.cfg.policy {
            SpoolPolicy::Wal => {
                st.wal_pending.push(entry);
                drop(st);
                self.flush_wake.notify_one();
            }
            SpoolPolicy::Spill => {
                let n = st.lanes.len();
                let mut entry = Some(entry);
                for i in 0..n {
                    let e = if i + 1 == n {
                        entry
                            .take()
                            .expect("the last lane takes the original entry")
                    } else {
                        entry
                            .as_ref()
                            .expect("entry is present until the last lane")
                            .clone_for_lane()
                    };
                    let lane = &mut st.lanes[i];
                    match kind {
                        Kind::Event => lane.events.push_back(e),
                        Kind::Sample => lane.live.push_back(e),
                    }
                    lane.notify.notify_one();
                }
            }
        }
        Ok(seq)
    }

    fn next_seq(&self, st: &mut State, device: &Arc<str>, kind: Kind) -> Result<u64, SpoolError> {
        let s = st.seqs.entry((device.clone(), kind)).or_insert(SeqState {
            next: 0,
            reserved: 0,
        });
        if s.next >= s.reserved {
            let reserved = s.next + SEQ_BLOCK;
            let key = format!("seq/{}/{}", kind.as_i64(), device);
            lock(&self.db)
                .meta_set(&[(key, reserved as i64)])
                .map_err(|e| SpoolError::Sql {
                    what: "reserving sequence numbers".into(),
                    source: e,
                })?;
            s.reserved = reserved;
        }
        let seq = s.next;
        s.next += 1;
        Ok(seq)
    }

    /// One commit round: writes what must go to disk, deletes what was
    /// acknowledged, enforces the caps. Blocking; run it on a blocking thread.
    /// `all` writes every unacknowledged record in memory (shutdown).
    pub fn flush(&self, all: bool) -> Result<(), SpoolError> {
        let mut st = lock(&self.state);
        let spill_after = self.cfg.spill_after;
        let memory_max = self.cfg.memory_max.max(1) as usize;
        let now = Instant::now();

        // Records that must get a row, by where they sit, so the new row ids
        // can be given back to them.
        let mut locs: Vec<Loc> = Vec::new();
        for i in 0..st.wal_pending.len() {
            locs.push(Loc::Wal(i));
        }
        for (li, lane) in st.lanes.iter().enumerate() {
            let down = lane.link == Link::Down;
            for (kind, q) in [(Kind::Event, &lane.events), (Kind::Sample, &lane.live)] {
                let over = q.len().saturating_sub(memory_max);
                for (qi, e) in q.iter().enumerate() {
                    if e.row.is_none()
                        && (all || down || qi < over || now.duration_since(e.born) >= spill_after)
                    {
                        locs.push(Loc::Queue(li, kind, qi));
                    }
                }
            }
            for (bid, f) in &lane.inflight {
                if let InFlight::Memory(entries) = f {
                    for (ei, e) in entries.iter().enumerate() {
                        if e.row.is_none() && (all || now.duration_since(e.born) >= spill_after) {
                            locs.push(Loc::Flight(li, *bid, ei));
                        }
                    }
                }
            }
        }

        let mut result = Ok(());
        if !locs.is_empty() {
            let lane_names: Vec<String> = st.lanes.iter().map(|l| l.name.clone()).collect();
            let ids = {
                let rows: Vec<NewRow<'_>> = locs
                    .iter()
                    .filter_map(|loc| {
                        let (sink, e) = match *loc {
                            Loc::Wal(i) => (None, st.wal_pending.get(i)?),
                            Loc::Queue(li, k, qi) => {
                                let l = &st.lanes[li];
                                let q = if k == Kind::Event { &l.events } else { &l.live };
                                (Some(li), q.get(qi)?)
                            }
                            Loc::Flight(li, bid, ei) => match st.lanes[li].inflight.get(&bid)? {
                                InFlight::Memory(v) => (Some(li), v.get(ei)?),
                                InFlight::Disk(_) => return None,
                            },
                        };
                        Some((sink, e))
                    })
                    .flat_map(|(sink, e)| {
                        // A wal record gets one row per sink.
                        let sinks: Vec<usize> = match sink {
                            Some(li) => vec![li],
                            None => (0..lane_names.len()).collect(),
                        };
                        sinks.into_iter().map(move |li| (li, e))
                    })
                    .map(|(li, e)| NewRow {
                        sink: &lane_names[li],
                        kind: e.kind,
                        device: &e.device,
                        seq: e.seq,
                        ts: e.ts,
                        synced: e.synced,
                        body: &e.body,
                    })
                    .collect();
                lock(&self.db).insert(&rows)
            };
            match ids {
                Ok(ids) => {
                    self.counters
                        .disk_rows
                        .fetch_add(ids.len() as i64, Ordering::Relaxed);
                    self.apply_rows(&mut st, locs, ids, lane_names.len());
                }
                Err(e) => {
                    self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, records = locs.len(), "spool write failed; records stay in memory");
                    self.shed_memory(&mut st, memory_max);
                    result = Err(SpoolError::Sql {
                        what: "writing records".into(),
                        source: e,
                    });
                }
            }
        }

        // Acknowledged rows.
        let del = std::mem::take(&mut st.to_delete);
        if !del.is_empty() {
            match lock(&self.db).delete(&del) {
                Ok(n) => {
                    self.counters
                        .disk_rows
                        .fetch_sub(n as i64, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "deleting acknowledged rows failed; will retry");
                    st.to_delete = del;
                }
            }
        }

        let age_due = st
            .last_age_check
            .map(|t| now.duration_since(t) >= Duration::from_secs(60))
            .unwrap_or(true);
        if age_due {
            st.last_age_check = Some(now);
        }
        drop(st);
        self.enforce_caps(age_due)?;
        self.progress.fetch_add(1, Ordering::Relaxed);
        result
    }

    /// Completed commit rounds.
    pub fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    /// Gives disk rows back to the records that were written.
    fn apply_rows(&self, st: &mut State, locs: Vec<Loc>, ids: Vec<i64>, n_lanes: usize) {
        let mut ids = ids.into_iter();
        let mut spilled = 0u64;
        // Queue entries now owned by disk are removed afterwards, highest
        // index first so earlier indices stay valid.
        let mut remove: Vec<(usize, Kind, usize)> = Vec::new();
        let mut wal_rows: Vec<Vec<i64>> = Vec::new();
        for loc in locs {
            match loc {
                Loc::Wal(_) => {
                    let rows: Vec<i64> = ids.by_ref().take(n_lanes).collect();
                    wal_rows.push(rows);
                }
                Loc::Queue(li, k, qi) => {
                    if ids.next().is_some() {
                        remove.push((li, k, qi));
                        spilled += 1;
                    }
                }
                Loc::Flight(li, bid, ei) => {
                    if let Some(id) = ids.next() {
                        let lane = &mut st.lanes[li];
                        if let Some(InFlight::Memory(v)) = lane.inflight.get_mut(&bid) {
                            if let Some(e) = v.get_mut(ei) {
                                e.row = Some(id);
                                lane.mem_rows.insert(id);
                                spilled += 1;
                            }
                        }
                    }
                }
            }
        }
        remove.sort_by_key(|r| std::cmp::Reverse(r.2));
        for (li, k, qi) in remove {
            let lane = &mut st.lanes[li];
            let q = if k == Kind::Event {
                &mut lane.events
            } else {
                &mut lane.live
            };
            q.remove(qi);
            lane.disk_maybe[k.as_i64() as usize] = true;
            lane.notify.notify_one();
        }
        // wal: committed records are now queued for every sink, with rows.
        let pending = std::mem::take(&mut st.wal_pending);
        for (e, rows) in pending.into_iter().zip(wal_rows) {
            for (li, row) in rows.into_iter().enumerate() {
                let lane = &mut st.lanes[li];
                let mut le = e.clone_for_lane();
                le.row = Some(row);
                lane.mem_rows.insert(row);
                if lane.link != Link::Down {
                    match le.kind {
                        Kind::Event => lane.events.push_back(le),
                        Kind::Sample => lane.live.push_back(le),
                    }
                } else {
                    lane.mem_rows.remove(&row);
                    lane.disk_maybe[le.kind.as_i64() as usize] = true;
                }
                lane.notify.notify_one();
            }
        }
        // wal: records that are on disk need not stay in memory while the
        // link is down.
        for lane in st.lanes.iter_mut() {
            if lane.link == Link::Down {
                for q in [&mut lane.events, &mut lane.live] {
                    let before = q.len();
                    q.retain(|e| match e.row {
                        Some(r) => {
                            lane.mem_rows.remove(&r);
                            false
                        }
                        None => true,
                    });
                    if q.len() != before {
                        lane.disk_maybe = [true, true];
                    }
                }
            }
        }
        self.counters.spilled.fetch_add(spilled, Ordering::Relaxed);
    }

    /// The disk cannot be written: keep at most twice `memory_max` samples
    /// per sink in memory, dropping the oldest telemetry (counted).
    fn shed_memory(&self, st: &mut State, memory_max: usize) {
        let limit = memory_max.saturating_mul(2);
        let mut dropped = 0u64;
        for lane in st.lanes.iter_mut() {
            while lane.live.len() > limit {
                lane.live.pop_front();
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.count_drop(DropReason::WriteFailed, dropped);
        }
    }

    fn count_drop(&self, reason: DropReason, n: u64) {
        let c = match reason {
            DropReason::Full => &self.counters.dropped_full,
            DropReason::Age => &self.counters.dropped_age,
            DropReason::WriteFailed => &self.counters.dropped_write_failed,
            DropReason::Corrupt => &self.counters.dropped_corrupt,
        };
        c.fetch_add(n, Ordering::Relaxed);
        tracing::warn!(
            reason = reason.as_str(),
            dropped = n,
            total = self.counters.dropped_total(),
            "spool dropped records"
        );
        let total = self.counters.dropped_total() as i64;
        if let Err(e) = lock(&self.db).meta_set(&[("dropped".into(), total)]) {
            tracing::warn!(error = %e, "could not persist the drop counter");
        }
    }

    /// Keeps the spool within `max_bytes` (oldest telemetry first, events
    /// only when no telemetry is left) and `max_age`.
    fn enforce_caps(&self, check_age: bool) -> Result<(), SpoolError> {
        let sql = |what: &str| {
            let what = what.to_owned();
            move |e| SpoolError::Sql { what, source: e }
        };
        let max = self.cfg.max_bytes.as_u64();
        let mut db = lock(&self.db);
        if check_age && self.clock.get() == ClockState::Synced {
            let cutoff = now_ms() - self.cfg.max_age.as_millis() as i64;
            let n = db
                .drop_older_than(cutoff)
                .map_err(sql("dropping old records"))?;
            if n > 0 {
                self.counters
                    .disk_rows
                    .fetch_sub(n as i64, Ordering::Relaxed);
                drop(db);
                self.count_drop(DropReason::Age, n as u64);
                db = lock(&self.db);
            }
        }
        let mut used = db.used_bytes().map_err(sql("measuring"))?;
        let mut rounds = 0;
        while used > max && rounds < 64 {
            rounds += 1;
            let rows = db.row_count().map_err(sql("counting"))?.max(1);
            let per_row = (used / rows).max(1);
            // Free a tenth of the cap at a time so a full spool does not
            // trim on every commit.
            let want = (((used - max) + max / 10) / per_row).max(1) as usize;
            let mut n = db
                .drop_oldest(Kind::Sample, want)
                .map_err(sql("dropping oldest telemetry"))?;
            if n == 0 {
                n = db
                    .drop_oldest(Kind::Event, want)
                    .map_err(sql("dropping oldest events"))?;
            }
            if n == 0 {
                break;
            }
            self.counters
                .disk_rows
                .fetch_sub(n as i64, Ordering::Relaxed);
            drop(db);
            self.count_drop(DropReason::Full, n as u64);
            db = lock(&self.db);
            used = db.used_bytes().map_err(sql("measuring"))?;
        }
        // Give free pages back a little at a time (the file shrinks once a
        // backlog has drained).
        if let Err(e) = db.vacuum_some(256) {
            tracing::debug!(error = %e, "incremental vacuum failed");
        }
        used = db.used_bytes().map_err(sql("measuring"))?;
        self.counters.disk_bytes.store(used, Ordering::Relaxed);
        Ok(())
    }

    /// The last commit at shutdown: everything unacknowledged is written,
    /// acknowledged rows deleted, exact sequence positions recorded and the
    /// spool marked clean.
    pub fn close(&self) -> Result<(), SpoolError> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.flush(true)?;
        let st = lock(&self.state);
        let mut pairs: Vec<(String, i64)> = st
            .seqs
            .iter()
            .map(|((dev, kind), s)| (format!("seq/{}/{}", kind.as_i64(), dev), s.next as i64))
            .collect();
        pairs.push(("clean".into(), 1));
        pairs.push(("dropped".into(), self.counters.dropped_total() as i64));
        let mut db = lock(&self.db);
        db.meta_set(&pairs).map_err(|e| SpoolError::Sql {
            what: "recording sequence positions".into(),
            source: e,
        })?;
        if let Err(e) = db.checkpoint() {
            tracing::debug!(error = %e, "checkpoint at close failed");
        }
        tracing::info!(
            rows = self.counters.disk_rows.load(Ordering::Relaxed),
            "spool closed cleanly"
        );
        Ok(())
    }

    pub fn stats(&self) -> SpoolStats {
        let st = lock(&self.state);
        let memory: usize = st
            .lanes
            .iter()
            .map(|l| {
                l.events.len()
                    + l.live.len()
                    + l.inflight
                        .values()
                        .map(|f| match f {
                            InFlight::Memory(v) => v.iter().filter(|e| e.row.is_none()).count(),
                            InFlight::Disk(_) => 0,
                        })
                        .sum::<usize>()
            })
            .sum::<usize>()
            + st.wal_pending.len();
        SpoolStats {
            disk_rows: self.counters.disk_rows.load(Ordering::Relaxed).max(0) as u64,
            disk_bytes: self.counters.disk_bytes.load(Ordering::Relaxed),
            memory: memory as u64,
            dropped: self.counters.dropped_total(),
            write_errors: self.counters.write_errors.load(Ordering::Relaxed),
            spilled: self.counters.spilled.load(Ordering::Relaxed),
        }
    }

    /// Runs the commit loop until `cancel`; the caller calls [`Spool::close`]
    /// afterwards.
    pub async fn run_flusher(self: Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
        let wal = self.cfg.policy == SpoolPolicy::Wal;
        let mut tick = tokio::time::interval(self.cfg.commit_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
                _ = self.flush_wake.notified(), if wal => {}
            }
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.flush(false)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "spool commit failed"),
                Err(e) => tracing::error!(error = %e, "spool commit task failed"),
            }
        }
    }
}

/// Where a record waiting for a disk row sits.
enum Loc {
    /// `wal_pending[i]` (one row per sink).
    Wal(usize),
    /// A lane's memory queue: (lane, kind, index).
    Queue(usize, Kind, usize),
    /// A lane's in-flight batch: (lane, batch id, index).
    Flight(usize, u64, usize),
}

impl LaneHandle {
    pub fn name(&self) -> String {
        lock(&self.spool.state).lanes[self.idx].name.clone()
    }

    pub fn spool(&self) -> &Arc<Spool> {
        &self.spool
    }

    /// Tells the spool whether this sink can deliver. While it cannot, the
    /// next commit writes its queued records to disk.
    pub fn set_link(&self, up: bool) {
        let mut st = lock(&self.spool.state);
        st.lanes[self.idx].link = if up { Link::Up } else { Link::Down };
    }

    /// Waits for the next batch: events first, then live telemetry, then the
    /// disk backlog (oldest first, up to `max` records per batch).
    pub async fn next_batch(&self, max: usize) -> Result<Batch, SpoolError> {
        let max = max.max(1);
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_next(max) {
                Next::Ready(b) => return Ok(b),
                Next::ReadDisk(kind, after) => {
                    let spool = self.spool.clone();
                    let idx = self.idx;
                    tokio::task::spawn_blocking(move || spool.read_disk(idx, kind, after, max))
                        .await
                        .map_err(|e| SpoolError::Task(e.to_string()))??;
                    continue;
                }
                Next::Empty => notified.await,
            }
        }
    }

    fn try_next(&self, max: usize) -> Next {
        let mut st = lock(&self.spool.state);
        let id = st.next_batch_id;
        let lane = &mut st.lanes[self.idx];
        let batch = if let Some(b) = lane.take_memory(Kind::Event, id, 1) {
            Some(b)
        } else if let Some(b) = lane.disk_ready[1].pop_front() {
            Some(b)
        } else if lane.disk_maybe[1] {
            return Next::ReadDisk(Kind::Event, lane.cursor[1]);
        } else if let Some(b) = lane.take_memory(Kind::Sample, id, max) {
            Some(b)
        } else if let Some(b) = lane.disk_ready[0].pop_front() {
            Some(b)
        } else if lane.disk_maybe[0] {
            return Next::ReadDisk(Kind::Sample, lane.cursor[0]);
        } else {
            None
        };
        match batch {
            Some(b) => {
                st.next_batch_id = st.next_batch_id.max(b.id) + 1;
                Next::Ready(b)
            }
            None => Next::Empty,
        }
    }

    /// The sink's broker acknowledged a batch; returns how many records it held.
    pub fn ack(&self, batch_id: u64) -> usize {
        let mut st = lock(&self.spool.state);
        let lane = &mut st.lanes[self.idx];
        let Some(f) = lane.inflight.remove(&batch_id) else {
            return 0;
        };
        let (n, rows) = match f {
            InFlight::Memory(v) => {
                let n = v.len();
                let rows: Vec<i64> = v.iter().filter_map(|e| e.row).collect();
                for r in &rows {
                    lane.mem_rows.remove(r);
                }
                (n, rows)
            }
            InFlight::Disk(rows) => (rows.len(), rows),
        };
        st.to_delete.extend(rows);
        self.spool
            .counters
            .acked
            .fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// The link went down: nothing in flight will be acknowledged. Memory
    /// records go back to the front of their queues (those already on disk
    /// are left to the backlog), and the backlog is read again from the start.
    pub fn nack_all(&self) {
        let mut st = lock(&self.spool.state);
        let lane = &mut st.lanes[self.idx];
        let mut back: Vec<Entry> = Vec::new();
        for (_, f) in lane.inflight.drain() {
            if let InFlight::Memory(v) = f {
                for e in v {
                    match e.row {
                        Some(r) => {
                            lane.mem_rows.remove(&r);
                        }
                        None => back.push(e),
                    }
                }
            }
        }
        back.sort_by_key(|e| (e.born, e.seq));
        for e in back.into_iter().rev() {
            match e.kind {
                Kind::Event => lane.events.push_front(e),
                Kind::Sample => lane.live.push_front(e),
            }
        }
        lane.cursor = [0, 0];
        lane.disk_maybe = [true, true];
        lane.disk_ready = [VecDeque::new(), VecDeque::new()];
        lane.carry = [Vec::new(), Vec::new()];
        lane.notify.notify_one();
    }

    /// Batches in flight.
    pub fn inflight(&self) -> usize {
        lock(&self.spool.state).lanes[self.idx].inflight.len()
    }
}

enum Next {
    Ready(Batch),
    ReadDisk(Kind, i64),
    Empty,
}

impl Spool {
    /// Reads the next window of a lane's backlog into ready batches.
    fn read_disk(&self, idx: usize, kind: Kind, after: i64, max: usize) -> Result<(), SpoolError> {
        // Deleting what was acknowledged first keeps acknowledged rows from
        // being read (and sent) again after a cursor reset.
        let del = std::mem::take(&mut lock(&self.state).to_delete);
        let sink = lock(&self.state).lanes[idx].name.clone();
        let window = max.saturating_mul(8).min(10_000);
        let rows = {
            let mut db = lock(&self.db);
            if !del.is_empty() {
                match db.delete(&del) {
                    Ok(n) => {
                        self.counters
                            .disk_rows
                            .fetch_sub(n as i64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "deleting acknowledged rows failed; will retry");
                        lock(&self.state).to_delete.extend(del);
                    }
                }
            }
            db.window(&sink, kind, after, window)
                .map_err(|e| SpoolError::Sql {
                    what: "reading backlog".into(),
                    source: e,
                })?
        };
        let mut st = lock(&self.state);
        let k = kind.as_i64() as usize;
        if st.lanes[idx].cursor[k] != after {
            // The lane was reset while we read: this window is stale.
            return Ok(());
        }
        let full = rows.len() >= window;
        if rows.is_empty() && st.lanes[idx].carry[k].is_empty() {
            st.lanes[idx].disk_maybe[k] = false;
            return Ok(());
        }
        let last = rows.last().map(|r| r.id).unwrap_or(after);
        let mut corrupt = Vec::new();
        // Group by device, keeping each device's rows in order, after what
        // the previous window held back.
        let mut groups = std::mem::take(&mut st.lanes[idx].carry[k]);
        for r in rows {
            if st.lanes[idx].mem_rows.contains(&r.id) {
                continue;
            }
            if !plausible_record(&r.body) {
                corrupt.push(r.id);
                continue;
            }
            match groups.iter_mut().find(|(d, _)| *d == r.device) {
                Some((_, v)) => v.push((r.id, r.body)),
                None => groups.push((r.device, vec![(r.id, r.body)])),
            }
        }
        let mut carry = Vec::new();
        let lane_batches: Vec<Batch> = {
            let mut out = Vec::new();
            for (device, mut rows) in groups {
                if full && rows.len() % max != 0 {
                    let keep = rows.split_off(rows.len() - rows.len() % max);
                    carry.push((device.clone(), keep));
                }
                let device: Arc<str> = Arc::from(device);
                for chunk in rows.chunks(max) {
                    let id = st.next_batch_id;
                    st.next_batch_id += 1;
                    let ids: Vec<i64> = chunk.iter().map(|(id, _)| *id).collect();
                    let bodies = chunk.iter().map(|(_, b)| Arc::from(b.as_str())).collect();
                    st.lanes[idx].inflight_reserve(id, ids);
                    out.push(Batch {
                        id,
                        kind,
                        device: device.clone(),
                        historical: true,
                        bodies,
                    });
                }
            }
            out
        };
        st.lanes[idx].carry[k] = carry;
        let lane = &mut st.lanes[idx];
        lane.cursor[k] = last;
        lane.disk_ready[k].extend(lane_batches);
        st.to_delete.extend(corrupt.iter().copied());
        drop(st);
        if !corrupt.is_empty() {
            tracing::error!(rows = corrupt.len(), "spool rows unreadable; dropped");
            self.count_drop(DropReason::Corrupt, corrupt.len() as u64);
        }
        Ok(())
    }
}

impl Lane {
    /// Takes the front record of a memory queue and, when the queue is deep,
    /// the records of the same device right behind it (up to `max`).
    fn take_memory(&mut self, kind: Kind, id: u64, max: usize) -> Option<Batch> {
        let q = match kind {
            Kind::Event => &mut self.events,
            Kind::Sample => &mut self.live,
        };
        let first = q.pop_front()?;
        let device = first.device.clone();
        let mut entries = vec![first];
        while entries.len() < max && q.front().is_some_and(|e| e.device == device) {
            if let Some(e) = q.pop_front() {
                entries.push(e);
            }
        }
        let bodies = entries.iter().map(|e| e.body.clone()).collect();
        self.inflight.insert(id, InFlight::Memory(entries));
        Some(Batch {
            id,
            kind,
            device,
            historical: false,
            bodies,
        })
    }

    /// Disk batches count as in flight from the moment they are read: a
    /// reset (link down) forgets them and the cursor starts over.
    fn inflight_reserve(&mut self, id: u64, rows: Vec<i64>) {
        self.inflight.insert(id, InFlight::Disk(rows));
    }
}

/// A cheap check that a stored body is a JSON object (a full parse of every
/// backlog row would cost more than the rest of the drain).
fn plausible_record(body: &str) -> bool {
    let b = body.trim();
    b.len() > 2 && b.starts_with('{') && b.ends_with('}')
}

/// The kernel's NTP state, asked at most every few seconds.
#[derive(Default)]
struct ClockCache {
    checked_ms: AtomicI64,
    synced: AtomicBool,
}

impl ClockCache {
    fn get(&self) -> ClockState {
        let now = now_ms();
        let last = self.checked_ms.load(Ordering::Relaxed);
        if last == 0 || (now - last).abs() > 5_000 {
            let s = ClockState::from_kernel();
            self.synced
                .store(s == ClockState::Synced, Ordering::Relaxed);
            self.checked_ms.store(now.max(1), Ordering::Relaxed);
            return s;
        }
        if self.synced.load(Ordering::Relaxed) {
            ClockState::Synced
        } else {
            ClockState::Unsynced
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Severity, Values};

    fn cfg(dir: &Path, policy: &str, extra: &str) -> SpoolConfig {
        let text = format!(
            "site = \"s\"\n[spool]\npath = \"{}\"\npolicy = \"{policy}\"\n{extra}\n",
            dir.join("spool.db").display()
        );
        crate::config::Config::from_toml(&text).unwrap().spool
    }

    fn open(c: &SpoolConfig) -> (Arc<Spool>, StartReport, LaneHandle) {
        let (s, r) = Spool::open(c, "s", &["mqtt"]).unwrap();
        let lane = s.lane("mqtt").unwrap();
        (s, r, lane)
    }

    fn sample(n: f64) -> Reading {
        let mut v = Values::new();
        v.num("x", n);
        Reading::Sample(v)
    }

    fn event() -> Reading {
        Reading::Event {
            severity: Severity::Warning,
            code: "t.e".into(),
            message: "m".into(),
            values: Values::new(),
        }
    }

    async fn next(lane: &LaneHandle, max: usize) -> Batch {
        tokio::time::timeout(Duration::from_secs(5), lane.next_batch(max))
            .await
            .expect("a batch is ready")
            .unwrap()
    }

    fn seqs(b: &Batch) -> Vec<u64> {
        b.bodies
            .iter()
            .map(|x| {
                serde_json::from_str::<serde_json::Value>(x).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    fn rows(s: &Spool) -> u64 {
        lock(&s.db).row_count().unwrap()
    }

    #[tokio::test]
    async fn live_record_acked_never_touches_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
        lane.set_link(true);
        let dev: Arc<str> = Arc::from("d");
        assert_eq!(s.push(&dev, sample(1.0)).unwrap(), 0);
        let b = next(&lane, 100).await;
        assert!(!b.historical);
        assert_eq!(seqs(&b), vec![0]);
        assert_eq!(lane.ack(b.id), 1);
        s.flush(false).unwrap();
        assert_eq!(rows(&s), 0);
        assert_eq!(s.counters().spilled.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn nothing_is_written_before_the_first_connection_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
        s.push(&Arc::from("d"), sample(0.0)).unwrap();
        s.flush(false).unwrap();
        assert_eq!(rows(&s), 0, "link unknown at start: wait in memory");
        lane.set_link(false);
        s.flush(false).unwrap();
        assert_eq!(rows(&s), 1, "link down: written");
    }

    #[tokio::test]
    async fn events_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
        lane.set_link(true);
        let dev: Arc<str> = Arc::from("d");
        s.push(&dev, sample(1.0)).unwrap();
        s.push(&dev, event()).unwrap();
        assert_eq!(next(&lane, 100).await.kind, Kind::Event);
        assert_eq!(next(&lane, 100).await.kind, Kind::Sample);
    }

    #[tokio::test]
    async fn link_down_spills_and_backlog_is_batched_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
        lane.set_link(false);
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        for i in 0..250 {
            s.push(&a, sample(i as f64)).unwrap();
            s.push(&b, sample(i as f64)).unwrap();
        }
        s.flush(false).unwrap();
        assert_eq!(rows(&s), 500);
        assert_eq!(s.stats().memory, 0);
        lane.set_link(true);
        let mut got: HashMap<String, Vec<u64>> = HashMap::new();
        let mut ids = Vec::new();
        while got.values().map(|v| v.len()).sum::<usize>() < 500 {
            let batch = next(&lane, 100).await;
            assert!(batch.historical);
            assert!(batch.bodies.len() <= 100);
            got.entry(batch.device.to_string())
                .or_default()
                .extend(seqs(&batch));
            ids.push(batch.id);
        }
        for dev in ["a", "b"] {
            assert_eq!(got[dev], (0..250).collect::<Vec<u64>>(), "{dev} in order");
        }
        for id in ids {
            lane.ack(id);
        }
        s.flush(false).unwrap();
        assert_eq!(rows(&s), 0);
    }

    #[tokio::test]
    async fn unacked_after_spill_after_goes_to_disk_and_ack_deletes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, lane) = open(&cfg(dir.path(), "spill", "spill_after = \"0s\""));
        lane.set_link(true);
        let dev: Arc<str> = Arc::from("d");
        s.push(&dev, sample(1.0)).unwrap();
        let b = next(&lane, 100).await;
        s.flush(false).unwrap();
        assert_eq!(rows(&s), 1, "in flight too long: written");
        // The backlog reader does not send it a second time.
        lane.set_link(true);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), lane.next_batch(100))
                .await
                .is_err()
        );
        lane.ack(b.id);
        s.flush(false).unwrap();
        assert_eq!(rows(&s), 0);
    }

    #[tokio::test]
    async fn nack_requeues_memory_records_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
        lane.set_link(true);
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        s.push(&a, sample(0.0)).unwrap();
        s.push(&b, sample(0.0)).unwrap();
        let first = next(&lane, 100).await;
        let second = next(&lane, 100).await;
        assert_eq!((&*first.device, &*second.device), ("a", "b"));
        lane.nack_all();
        let again = next(&lane, 100).await;
        assert_eq!(&*again.device, "a");
        assert_eq!(seqs(&again), vec![0]);
        // Link down: the next commit writes everything left in memory.
        lane.set_link(false);
        lane.nack_all();
        s.flush(false).unwrap();
        assert_eq!(rows(&s), 2);
    }

    #[tokio::test]
    async fn wal_commits_before_sending() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, lane) = open(&cfg(dir.path(), "wal", ""));
        lane.set_link(true);
        let dev: Arc<str> = Arc::from("d");
        s.push(&dev, sample(1.0)).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(200), lane.next_batch(100))
                .await
                .is_err(),
            "nothing is sent before its commit"
        );
        s.flush(false).unwrap();
        assert_eq!(rows(&s), 1);
        let b = next(&lane, 100).await;
        assert!(!b.historical, "sent live from memory once committed");
        lane.ack(b.id);
        s.flush(false).unwrap();
        assert_eq!(rows(&s), 0);
    }

    #[tokio::test]
    async fn sequences_survive_clean_and_unclean_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), "spill", "");
        let dev: Arc<str> = Arc::from("d");
        {
            let (s, r, _) = open(&c);
            assert!(r.resumed_unclean.is_empty());
            for _ in 0..3 {
                s.push(&dev, sample(0.0)).unwrap();
            }
            s.push(&dev, event()).unwrap();
            s.close().unwrap();
        }
        {
            let (s, r, _) = open(&c);
            assert!(r.resumed_unclean.is_empty(), "clean stop");
            assert_eq!(s.push(&dev, sample(0.0)).unwrap(), 3);
            assert_eq!(s.push(&dev, event()).unwrap(), 1);
            // Dropped without close: a crash.
        }
        let (s, r, _) = open(&c);
        assert_eq!(s.push(&dev, sample(0.0)).unwrap(), 3 + SEQ_BLOCK);
        assert!(r
            .resumed_unclean
            .iter()
            .any(|(d, k, at)| d == "d" && *k == Kind::Sample && *at == 3 + SEQ_BLOCK));
        // The first run's records were written at its clean stop; the
        // crashed run's two were still in memory (within spill_after) and
        // are the loss a crash may cause.
        assert_eq!(rows(&s), 4);
    }

    #[tokio::test]
    async fn full_spool_drops_oldest_telemetry_keeps_events() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, lane) = open(&cfg(dir.path(), "spill", "max_bytes = \"64 KiB\""));
        lane.set_link(false);
        let dev: Arc<str> = Arc::from("d");
        for i in 0..3000 {
            s.push(&dev, sample(i as f64)).unwrap();
            if i % 100 == 0 {
                s.push(&dev, event()).unwrap();
            }
            if i % 500 == 0 {
                s.flush(false).unwrap();
            }
        }
        s.flush(false).unwrap();
        let db = lock(&s.db);
        assert!(db.used_bytes().unwrap() <= 64 * 1024);
        assert_eq!(db.count_kind(Kind::Event).unwrap(), 30, "every event kept");
        let oldest: i64 = db
            .conn
            .query_row("SELECT MIN(seq) FROM rec WHERE kind = 0", [], |r| r.get(0))
            .unwrap();
        assert!(oldest > 0, "oldest telemetry went first");
        drop(db);
        assert!(s.counters().dropped_full.load(Ordering::Relaxed) > 0);
        assert_eq!(s.stats().dropped, s.counters().dropped_total());
    }

    #[tokio::test]
    async fn max_age_drops_old_synced_records_only() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
        lane.set_link(false);
        let dev: Arc<str> = Arc::from("d");
        for i in 0..4 {
            s.push(&dev, sample(i as f64)).unwrap();
        }
        s.flush(false).unwrap();
        let mut db = lock(&s.db);
        // Two old readings, one taken with a synchronised clock, one not.
        db.conn
            .execute("UPDATE rec SET ts = 1000, synced = 1 WHERE seq = 0", [])
            .unwrap();
        db.conn
            .execute("UPDATE rec SET ts = 1000, synced = 0 WHERE seq = 1", [])
            .unwrap();
        db.conn
            .execute("UPDATE rec SET synced = 1 WHERE seq >= 2", [])
            .unwrap();
        assert_eq!(db.drop_older_than(now_ms() - 86_400_000).unwrap(), 1);
        assert_eq!(
            db.row_count().unwrap(),
            3,
            "an unsynced timestamp is not trusted"
        );
    }

    #[tokio::test]
    async fn memory_bound_spills_oldest_even_with_link_up() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, lane) = open(&cfg(dir.path(), "spill", "memory_max = 10"));
        lane.set_link(true);
        let dev: Arc<str> = Arc::from("d");
        for i in 0..25 {
            s.push(&dev, sample(i as f64)).unwrap();
        }
        s.flush(false).unwrap();
        assert_eq!(rows(&s), 15);
        assert_eq!(s.stats().memory, 10);
    }

    #[tokio::test]
    async fn garbage_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("spool.db"),
            b"this is not a database, not at all....",
        )
        .unwrap();
        let (s, r, _) = open(&cfg(dir.path(), "spill", ""));
        let (aside, reason) = r.moved_aside.expect("moved aside");
        assert!(aside
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("spool.db.corrupt-"));
        assert!(!reason.is_empty());
        assert!(aside.exists());
        s.push(&Arc::from("d"), sample(0.0)).unwrap();
    }

    #[tokio::test]
    async fn corrupt_rows_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
        lane.set_link(false);
        let dev: Arc<str> = Arc::from("d");
        s.push(&dev, sample(0.0)).unwrap();
        s.flush(false).unwrap();
        lock(&s.db)
            .conn
            .execute("UPDATE rec SET body = 'garbage'", [])
            .unwrap();
        s.push(&dev, sample(1.0)).unwrap();
        s.flush(false).unwrap();
        lane.set_link(true);
        let b = next(&lane, 100).await;
        assert_eq!(seqs(&b), vec![1]);
        assert_eq!(s.counters().dropped_corrupt.load(Ordering::Relaxed), 1);
    }
}
