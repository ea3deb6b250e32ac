//! The durable buffer between sources and sinks, split in two:
//!
//! - the **queue** (memory, [`queue`]): stamping, lanes (one per sink),
//!   batches, acknowledgements, priorities. Sources and sinks touch only
//!   this, under a short lock that is never held across disk I/O, so `push`
//!   and `next_batch` never wait for the SD card.
//! - the **store** (SQLite, [`db`], and the sequence positions file,
//!   [`positions`]): owned by one commit task ([`Spool::run_flusher`]). Each
//!   commit round takes its work out of the queue, does the disk work with
//!   the lock released, and gives the results back.
//!
//! Under the default `spill` policy a record goes to the sinks from memory
//! and is written to SQLite only when it was not acknowledged within
//! `spill_after`, when the sink's link is down, or when the memory queue is
//! full; under `wal` every record is committed before it is sent. A row is
//! deleted only after its sink acknowledged it; each sink has its own rows.
//!
//! When the store cannot be used (read-only or full disk, permission denied)
//! the spool is *degraded*: readings keep flowing from memory, the store is
//! tried again every few seconds, and what cannot be kept is counted.
//!
//! Sequence numbers belong to an *epoch*: a number is published only once it
//! is covered by a reservation on disk, so no `(device, kind, epoch, seq)` is
//! ever used twice. When no reservation can be made or found, a new epoch is
//! started and announced.

pub mod config;
pub mod db;
pub mod positions;
pub mod queue;
pub mod used;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use self::config::{SpoolConfig, SpoolPolicy};
use crate::model::{now_ms, ClockState, Event, Kind, Reading, Sample};

pub use db::{row_checksum, valid_device_id};
use db::{Db, NewRow, StreamKey};
use positions::{Mark, Positions};
pub use queue::SEQ_BLOCK;
use queue::{due, needs_reservation, Entry, InFlight, Lane, Link, SeqState};

/// How often a degraded store is tried again.
pub const STORE_RETRY: Duration = Duration::from_secs(5);

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
    /// spool aside): the store is degraded and tried again later.
    #[error("spool {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A spool stayed unreadable even after being replaced: degraded.
    #[error("spool is corrupt and could not be replaced: {0}")]
    Corrupt(String),
    /// The store cannot be written now (the reason in words): records stay in
    /// memory; the caller need not do anything, the spool retries.
    #[error("spool degraded: {0}")]
    Degraded(String),
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
    /// Memory overflowed while the disk could not be written.
    WriteFailed,
    /// A row read back from disk failed its checks.
    Corrupt,
    /// A record too large for the broker was set aside.
    TooLarge,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::Full,
        DropReason::Age,
        DropReason::WriteFailed,
        DropReason::Corrupt,
        DropReason::TooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Full => "full",
            DropReason::Age => "age",
            DropReason::WriteFailed => "write_failed",
            DropReason::Corrupt => "corrupt",
            DropReason::TooLarge => "too_large",
        }
    }
}

/// A group of records of one device, kind and epoch, sent as one message.
#[derive(Debug, Clone)]
pub struct Batch {
    pub id: u64,
    pub kind: Kind,
    pub device: Arc<str>,
    /// The sequence epoch of every record in it.
    pub epoch: u64,
    /// The first record's `seq` (for logs and events).
    pub first_seq: u64,
    /// Sent from the disk backlog rather than live.
    pub historical: bool,
    /// Each record's JSON object, without the `historical` flag.
    pub bodies: Vec<Arc<str>>,
}

impl Batch {
    /// The bodies' bytes.
    pub fn bytes(&self) -> usize {
        self.bodies.iter().map(|b| b.len()).sum()
    }
}

/// Something the spool wants the operations centre and the page to know;
/// the app turns each into a gateway event.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// Rows failed their checks when read back and were dropped.
    CorruptRecords { count: u64, reason: String },
    /// The store cannot be written; `reason` is one of `read_only`,
    /// `permission_denied`, `disk_full`, `io_error`.
    Degraded {
        reason: &'static str,
        detail: String,
    },
    /// The store works again.
    Restored { degraded_for: Duration, lost: u64 },
    /// A record too large to send was set aside.
    Quarantined {
        device: String,
        kind: Kind,
        seq: u64,
        bytes: u64,
        reason: String,
    },
    /// Sequence numbers start again in a new epoch.
    SequenceReset {
        epoch: u64,
        previous: Option<u64>,
        reason: String,
        first_start: bool,
    },
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
    pub dropped_too_large: AtomicU64,
    /// Dropped before this run (persisted).
    pub dropped_before: AtomicU64,
    pub write_errors: AtomicU64,
    pub disk_rows: AtomicI64,
    pub disk_bytes: AtomicU64,
}

impl SpoolCounters {
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.counter(reason).load(Ordering::Relaxed)
    }

    fn counter(&self, reason: DropReason) -> &AtomicU64 {
        match reason {
            DropReason::Full => &self.dropped_full,
            DropReason::Age => &self.dropped_age,
            DropReason::WriteFailed => &self.dropped_write_failed,
            DropReason::Corrupt => &self.dropped_corrupt,
            DropReason::TooLarge => &self.dropped_too_large,
        }
    }

    /// Every record ever dropped by this spool, this run and before.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_before.load(Ordering::Relaxed)
            + DropReason::ALL
                .iter()
                .map(|r| self.dropped(*r))
                .sum::<u64>()
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
    /// Why the store cannot be written (`read_only`, `permission_denied`,
    /// `disk_full`, `io_error`), while it cannot.
    pub degraded: Option<String>,
    /// The same in words, with the OS's message.
    pub degraded_detail: Option<String>,
    /// The current sequence epoch, 16 hex digits.
    pub epoch: String,
}

/// One stream's position after an unclean stop.
#[derive(Debug, Clone, PartialEq)]
pub struct Resumed {
    pub device: String,
    pub kind: Kind,
    /// The first number of this run.
    pub at: u64,
    /// The highest number known to have been used before the stop.
    pub last_used: Option<u64>,
}

/// What opening the spool found, for the gateway to report.
#[derive(Debug, Default)]
pub struct StartReport {
    pub moved_aside: Option<(PathBuf, String)>,
    /// Streams whose sequence resumed after an unclean stop.
    pub resumed_unclean: Vec<Resumed>,
}

struct Queue {
    lanes: Vec<Lane>,
    seqs: HashMap<(Arc<str>, Kind), SeqState>,
    epoch: u64,
    /// The epoch's positions are on disk; numbers are sent only once
    /// reserved. An epoch that is not durable is never reused anyway.
    epoch_durable: bool,
    /// Reservations cannot be written: a stream that runs out of reserved
    /// numbers moves everything to a new epoch.
    reserve_failing: bool,
    /// `wal` policy: records waiting for their commit before being queued.
    wal_pending: Vec<Entry>,
    next_batch_id: u64,
    next_rid: u64,
    /// Exact last-used marks, when the file could be made.
    used: Option<used::UsedMarks>,
}

impl Queue {
    /// Starts a new epoch that is not (yet) on disk, renumbering records
    /// still waiting in memory whose numbers were never reserved. Returns
    /// the new epoch and how many records were renumbered.
    fn switch_epoch(&mut self) -> (u64, u64) {
        let old = self.epoch;
        let new = new_epoch();
        let limits: HashMap<(Arc<str>, Kind), u64> = self
            .seqs
            .iter()
            .map(|(k, s)| (k.clone(), s.durable))
            .collect();
        let stuck = |e: &Entry| {
            e.epoch == old
                && e.row.is_none()
                && e.seq
                    >= limits
                        .get(&(e.device.clone(), e.kind))
                        .copied()
                        .unwrap_or(0)
        };
        // Each lane holds its own copy of a record: number by record id,
        // in push order, so every copy gets the same new number and each
        // stream keeps its order.
        let mut rids: Vec<(u64, Arc<str>, Kind)> = self
            .wal_pending
            .iter()
            .chain(
                self.lanes
                    .iter()
                    .flat_map(|l| l.events.iter().chain(l.live.iter())),
            )
            .filter(|e| stuck(e))
            .map(|e| (e.rid, e.device.clone(), e.kind))
            .collect();
        rids.sort_by_key(|r| r.0);
        rids.dedup_by_key(|r| r.0);
        self.seqs.clear();
        let mut renumber: HashMap<u64, u64> = HashMap::new();
        for (rid, dev, kind) in rids {
            let s = self.seqs.entry((dev, kind)).or_insert(SeqState {
                next: 0,
                durable: 0,
                slot: None,
                mark: 0,
            });
            renumber.insert(rid, s.next);
            s.next += 1;
        }
        let n = renumber.len() as u64;
        let entries = self.wal_pending.iter_mut().chain(
            self.lanes
                .iter_mut()
                .flat_map(|l| l.events.iter_mut().chain(l.live.iter_mut())),
        );
        for e in entries {
            if let Some(seq) = renumber.get(&e.rid) {
                if let Some(body) = queue::restamp(&e.body, *seq) {
                    e.body = Arc::from(body);
                    e.seq = *seq;
                    e.epoch = new;
                }
            }
        }
        self.epoch = new;
        self.epoch_durable = false;
        self.reserve_failing = false;
        if let Some(u) = self.used.as_mut() {
            u.clear();
            u.set_epoch(new);
        }
        (new, n)
    }
}

fn new_epoch() -> u64 {
    loop {
        let e = rand::random::<u64>();
        if e != 0 {
            return e;
        }
    }
}

/// Why the store is degraded, since when.
struct Degraded {
    reason: &'static str,
    since: Instant,
    /// `dropped_write_failed` when it began.
    lost_at_start: u64,
}

/// The disk side, owned by whoever runs a commit round.
struct Store {
    path: PathBuf,
    pos_path: PathBuf,
    db: Option<Db>,
    degraded: Option<Degraded>,
    next_try: Instant,
    last_age_check: Option<Instant>,
    /// What the positions file holds.
    marks: BTreeMap<String, Mark>,
    /// `dropped_total` last written to the database.
    dropped_written: u64,
}

pub struct Spool {
    cfg: SpoolConfig,
    site: Arc<str>,
    q: Mutex<Queue>,
    /// Taken out by a commit round for its duration (no lock is held across
    /// disk work); `store_free` wakes a second caller.
    store: Mutex<Option<Store>>,
    store_free: Condvar,
    /// Wakes the commit task early (a reservation, a wal record, a backlog
    /// read is wanted).
    wake: Notify,
    counters: SpoolCounters,
    clock: ClockCache,
    closed: AtomicBool,
    /// Completed commit rounds.
    progress: AtomicU64,
    notices: Mutex<Vec<Notice>>,
    notice_wake: Notify,
    degraded: Mutex<Option<(String, String)>>,
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

/// The degraded reason for an OS error, in the contract's words.
fn io_reason(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EROFS) => "read_only",
        Some(libc::EACCES) | Some(libc::EPERM) => "permission_denied",
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => "disk_full",
        _ => "io_error",
    }
}

/// The degraded reason for an SQLite error.
fn sql_reason(e: &rusqlite::Error, path: &Path) -> (&'static str, String) {
    use rusqlite::ErrorCode as C;
    let code = e.sqlite_error_code();
    let reason = match code {
        Some(C::ReadOnly) => "read_only",
        Some(C::DiskFull) => "disk_full",
        Some(C::PermissionDenied) | Some(C::AuthorizationForStatementDenied) => "permission_denied",
        Some(C::CannotOpen) => {
            // SQLite does not say why it could not open: ask the file system.
            probe_dir(path)
        }
        _ => "io_error",
    };
    let reason = if reason == "io_error" {
        // An I/O error on a file system that went read-only or full says
        // so only through the file system.
        probe_dir(path)
    } else {
        reason
    };
    (reason, e.to_string())
}

/// Tries to create a file beside the spool to learn why it cannot be written.
fn probe_dir(path: &Path) -> &'static str {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let probe = dir.join(".wardgate-probe");
    match std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
            {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => io_reason(&e),
                _ => "io_error",
            }
        }
        Err(e) => io_reason(&e),
    }
}

fn spool_error_reason(e: &SpoolError, path: &Path) -> (&'static str, String) {
    match e {
        SpoolError::Sql { source, .. } => {
            let (r, _) = sql_reason(source, path);
            (r, e.to_string())
        }
        SpoolError::Io { source, .. } => (io_reason(source), e.to_string()),
        other => ("io_error", other.to_string()),
    }
}

/// Plain words for a degraded reason.
pub fn degraded_words(reason: &str) -> &'static str {
    match reason {
        "read_only" => "the SD card or disk is read-only",
        "permission_denied" => "permission denied on the spool directory",
        "disk_full" => "the disk is full",
        _ => "the spool cannot be written (input/output error)",
    }
}

impl Spool {
    /// Opens the spool at `cfg.path` for the named sinks. Never fails on the
    /// disk's account: a corrupt file is moved aside and replaced, and a
    /// store that cannot be opened or written leaves the spool degraded
    /// (reported by [`Spool::take_notices`]), retried every few seconds.
    pub fn open(
        cfg: &SpoolConfig,
        site: &str,
        sinks: &[&str],
    ) -> Result<(Arc<Spool>, StartReport), SpoolError> {
        let path = cfg.path.clone();
        let pos_path = positions::path_for(&path);
        let mut report = StartReport::default();
        let mut notices = Vec::new();
        let counters = SpoolCounters::default();

        let file = positions::read(&pos_path);
        let mut degraded: Option<(&'static str, String)> = None;
        let mut db = match Db::open(&path) {
            Ok((db, r)) => {
                report.moved_aside = r.moved_aside;
                Some(db)
            }
            Err(e) => {
                degraded = Some(spool_error_reason(&e, &path));
                tracing::error!(spool = %path.display(), error = %e, "spool cannot be opened; readings stay in memory");
                None
            }
        };
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "sequence positions unreadable");
                if let (None, Some(io)) = (&degraded, e.io_error()) {
                    degraded = Some((io_reason(io), e.to_string()));
                }
                None
            }
        };

        // Where each stream stands, from the positions file, else from the
        // database (a spool of the first version keeps them only there).
        let mut known: Option<(u64, bool, BTreeMap<String, Mark>)> =
            file.and_then(|p| Some((positions::parse_epoch(&p.epoch)?, p.clean, p.streams)));
        let mut empty_db = true;
        if let Some(d) = db.as_mut() {
            match read_db_positions(d) {
                Ok((db_pos, rows)) => {
                    empty_db = rows == 0 && db_pos.is_none();
                    counters.disk_rows.store(rows as i64, Ordering::Relaxed);
                    if let Ok(b) = d.used_bytes() {
                        counters.disk_bytes.store(b, Ordering::Relaxed);
                    }
                    if let Ok(Some(n)) = d.meta_get("dropped") {
                        counters
                            .dropped_before
                            .store(n.max(0) as u64, Ordering::Relaxed);
                    }
                    match (&mut known, db_pos) {
                        (None, Some(p)) => known = Some(p),
                        // The database may know streams the file lost track
                        // of (never: the file is written first), or used
                        // marks from commits since the last reservation.
                        (Some((fe, _, fm)), Some((de, _, dm))) if *fe == de => {
                            for (k, m) in dm {
                                let e = fm.entry(k).or_insert(m);
                                e.reserved = e.reserved.max(m.reserved);
                                e.used = e.used.max(m.used);
                            }
                        }
                        _ => {}
                    }
                }
                Err(e) => {
                    degraded = Some(sql_reason(&e, &path));
                    db = None;
                }
            }
        }

        let used_path = used::path_for(&path);
        let prev_used = used::read_previous(&used_path);
        let boot = used::boot_id();
        let mut seqs = HashMap::new();
        let (epoch, reset) = match known {
            Some((epoch, clean, marks)) => {
                for (key, m) in &marks {
                    let Some((kind, dev)) = positions::parse_stream_key(key) else {
                        tracing::warn!(%key, "ignoring unknown sequence entry");
                        continue;
                    };
                    let mut last_used_here = None;
                    if !clean && m.reserved > 0 {
                        // Exact only from the used-marks file of the same
                        // epoch and the same boot (a crash, not a power cut).
                        let last_used = prev_used
                            .as_ref()
                            .filter(|p| p.epoch == epoch && p.boot_id == boot && !boot.is_empty())
                            .and_then(|p| p.next.get(m.slot? as usize).copied())
                            .filter(|n| *n > 0)
                            .map(|n| n - 1);
                        last_used_here = last_used;
                        report.resumed_unclean.push(Resumed {
                            device: dev.to_owned(),
                            kind,
                            at: m.reserved,
                            last_used,
                        });
                    }
                    seqs.insert(
                        (Arc::<str>::from(dev), kind),
                        SeqState {
                            next: m.reserved,
                            durable: m.reserved,
                            slot: m.slot,
                            mark: if clean {
                                m.reserved
                            } else {
                                last_used_here.map(|u| u + 1).unwrap_or(0)
                            },
                        },
                    );
                }
                (epoch, None)
            }
            None => {
                let first_start = empty_db && report.moved_aside.is_none() && degraded.is_none();
                let reason = if first_start {
                    "first start: no sequence positions yet".to_owned()
                } else if report.moved_aside.is_some() {
                    "the spool was unreadable and no sequence positions were kept beside it"
                        .to_owned()
                } else {
                    "no sequence positions could be read".to_owned()
                };
                (new_epoch(), Some((reason, first_start)))
            }
        };

        let mut store = Store {
            path: path.clone(),
            pos_path,
            db,
            degraded: None,
            next_try: Instant::now() + STORE_RETRY,
            last_age_check: None,
            marks: BTreeMap::new(),
            dropped_written: counters.dropped_total(),
        };
        // Reserve ahead for every known stream and mark the run unclean
        // until a clean stop says otherwise.
        for ((dev, kind), s) in seqs.iter_mut() {
            let key = positions::stream_key(*kind, dev);
            let reserved = s.next + SEQ_BLOCK;
            let slot = s.slot.or_else(|| store.free_slot());
            store.marks.insert(
                key,
                Mark {
                    reserved,
                    used: s.next as i64 - 1,
                    slot,
                },
            );
        }
        let persisted = store.write_positions(epoch, false);
        if persisted.is_ok() {
            // A spool of the first version kept positions in its database;
            // from now on the positions file is the only authority, so the
            // old copy must not outlive it.
            if let Some(d) = store.db.as_mut() {
                if let Err(e) = d.forget_positions() {
                    tracing::warn!(error = %e, "could not remove old sequence positions from the spool");
                }
            }
        }
        let (epoch, epoch_durable, reset) = match persisted {
            Ok(()) => {
                for ((dev, kind), s) in seqs.iter_mut() {
                    if let Some(m) = store.marks.get(&positions::stream_key(*kind, dev)) {
                        s.durable = m.reserved;
                        s.slot = m.slot;
                    }
                }
                (epoch, true, reset)
            }
            Err((reason, detail)) => {
                if degraded.is_none() {
                    degraded = Some((reason, detail));
                }
                // Numbers that cannot be reserved must not be reused after
                // a restart: this run counts in an epoch of its own.
                let previous = Some(epoch);
                seqs.clear();
                store.marks.clear();
                let why = match &reset {
                    Some((r, _)) => format!("{r}; the spool cannot be written"),
                    None => "the spool cannot be written, so sequence positions cannot be kept"
                        .to_owned(),
                };
                let new = new_epoch();
                notices.push(Notice::SequenceReset {
                    epoch: new,
                    previous,
                    reason: why,
                    first_start: false,
                });
                (new, false, None)
            }
        };
        if let Some((reason, first_start)) = reset {
            notices.push(Notice::SequenceReset {
                epoch,
                previous: None,
                reason,
                first_start,
            });
        }

        let used = match used::UsedMarks::create(&used_path, epoch, &boot) {
            Ok(mut u) => {
                for s in seqs.values() {
                    if let Some(slot) = s.slot {
                        u.set(slot, s.mark);
                    }
                }
                Some(u)
            }
            Err(e) => {
                tracing::warn!(path = %used_path.display(), error = %e, "no exact last-used marks this run");
                None
            }
        };
        let mut lanes: Vec<Lane> = sinks.iter().map(|n| Lane::new(n)).collect();
        if let Some(d) = store.db.as_ref() {
            for lane in lanes.iter_mut() {
                for kind in [Kind::Sample, Kind::Event] {
                    match d.streams(&lane.name, kind) {
                        Ok(keys) => {
                            for k in keys {
                                lane.stream_has_rows(&k);
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "listing the backlog failed"),
                    }
                }
            }
        }
        let rows = counters.disk_rows.load(Ordering::Relaxed);
        if rows > 0 {
            tracing::info!(rows, "spool holds a backlog from before");
        }
        let mut degraded_now = None;
        if let Some((reason, detail)) = degraded {
            tracing::error!(reason, %detail, "spool degraded: readings are kept in memory only");
            notices.push(Notice::Degraded {
                reason,
                detail: detail.clone(),
            });
            degraded_now = Some((reason.to_owned(), detail.clone()));
            store.degraded = Some(Degraded {
                reason,
                since: Instant::now(),
                lost_at_start: 0,
            });
        }
        let spool = Arc::new(Spool {
            cfg: cfg.clone(),
            site: Arc::from(site),
            q: Mutex::new(Queue {
                lanes,
                seqs,
                epoch,
                epoch_durable,
                reserve_failing: !epoch_durable,
                wal_pending: Vec::new(),
                next_batch_id: 1,
                next_rid: 1,
                used,
            }),
            store: Mutex::new(Some(store)),
            store_free: Condvar::new(),
            wake: Notify::new(),
            counters,
            clock: ClockCache::default(),
            closed: AtomicBool::new(false),
            progress: AtomicU64::new(0),
            notices: Mutex::new(notices),
            notice_wake: Notify::new(),
            degraded: Mutex::new(degraded_now),
        });
        Ok((spool, report))
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

    /// The current sequence epoch.
    pub fn epoch(&self) -> u64 {
        lock(&self.q).epoch
    }

    /// The handle of the named sink's lane.
    pub fn lane(self: &Arc<Self>, sink: &str) -> Option<LaneHandle> {
        let q = lock(&self.q);
        let idx = q.lanes.iter().position(|l| l.name == sink)?;
        Some(LaneHandle {
            spool: self.clone(),
            idx,
            notify: q.lanes[idx].notify.clone(),
        })
    }

    fn notice(&self, n: Notice) {
        lock(&self.notices).push(n);
        self.notice_wake.notify_one();
    }

    /// What happened since the last call, oldest first.
    pub fn take_notices(&self) -> Vec<Notice> {
        std::mem::take(&mut *lock(&self.notices))
    }

    /// Waits for notices and returns them.
    pub async fn next_notices(&self) -> Vec<Notice> {
        loop {
            let wait = self.notice_wake.notified();
            tokio::pin!(wait);
            wait.as_mut().enable();
            let n = self.take_notices();
            if !n.is_empty() {
                return n;
            }
            wait.await;
        }
    }

    /// Stamps a reading with seq, time and clock state and queues it for
    /// every sink. Never waits for the disk. Returns the record's sequence
    /// number.
    pub fn push(&self, device: &Arc<str>, reading: Reading) -> Result<u64, SpoolError> {
        let ts = now_ms();
        let clock = self.clock.get();
        let kind = match reading {
            Reading::Sample(_) => Kind::Sample,
            Reading::Event { .. } => Kind::Event,
        };
        let mut q = lock(&self.q);
        let key = (device.clone(), kind);
        let exhausted = q.epoch_durable
            && q.reserve_failing
            && q.seqs.get(&key).is_none_or(|s| s.next >= s.durable);
        if exhausted {
            let (old, ..) = (q.epoch, ());
            let (new, renumbered) = q.switch_epoch();
            tracing::error!(
                old = %positions::epoch_hex(old),
                new = %positions::epoch_hex(new),
                renumbered,
                "sequence numbers ran out of their reservation and cannot be reserved on disk: new epoch"
            );
            self.notice(Notice::SequenceReset {
                epoch: new,
                previous: Some(old),
                reason: "sequence numbers could not be reserved on disk (spool not writable)"
                    .into(),
                first_start: false,
            });
        }
        let epoch = q.epoch;
        let durable = q.epoch_durable;
        let Queue { seqs, used, .. } = &mut *q;
        let s = seqs.entry(key).or_insert(SeqState {
            next: 0,
            durable: 0,
            slot: None,
            mark: 0,
        });
        let seq = s.next;
        s.next += 1;
        s.mark = s.next;
        if let (Some(slot), Some(u)) = (s.slot, used.as_mut()) {
            u.set(slot, s.mark);
        }
        let reserve = durable && needs_reservation(s);
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
        let rid = q.next_rid;
        q.next_rid += 1;
        let entry = Entry {
            rid,
            kind,
            device: device.clone(),
            epoch,
            seq,
            ts,
            synced: clock == ClockState::Synced,
            body: Arc::from(body),
            born: Instant::now(),
            row: None,
            writing: false,
        };
        self.counters.pushed.fetch_add(1, Ordering::Relaxed);
        let wal = self.cfg.policy == SpoolPolicy::Wal;
        if wal {
            q.wal_pending.push(entry);
        } else {
            let n = q.lanes.len();
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
                q.lanes[i].enqueue(e);
                q.lanes[i].notify.notify_one();
            }
        }
        drop(q);
        if wal || reserve {
            self.wake.notify_one();
        }
        Ok(seq)
    }

    /// Completed commit rounds.
    pub fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    fn take_store(&self) -> Store {
        let mut slot = lock(&self.store);
        loop {
            if let Some(s) = slot.take() {
                return s;
            }
            slot = self
                .store_free
                .wait(slot)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    fn put_store(&self, s: Store) {
        *lock(&self.store) = Some(s);
        self.store_free.notify_one();
    }

    /// One commit round: writes what must go to disk, deletes what was
    /// acknowledged, reserves sequence numbers, enforces the caps and reads
    /// the backlog ahead. Blocking; run it on a blocking thread. `all`
    /// writes every unacknowledged record in memory (shutdown).
    pub fn flush(&self, all: bool) -> Result<(), SpoolError> {
        let mut store = self.take_store();
        let r = self.round(&mut store, all);
        self.put_store(store);
        self.progress.fetch_add(1, Ordering::Relaxed);
        r
    }

    fn round(&self, store: &mut Store, all: bool) -> Result<(), SpoolError> {
        let now = Instant::now();
        let may_try = store.degraded.is_none() || all || now >= store.next_try;
        if store.db.is_none() && may_try {
            self.reopen(store);
        }
        let usable = store.db.is_some() && may_try;
        let memory_max = self.cfg.memory_max.as_usize();
        let spill_after = self.cfg.spill_after;

        // 1. Take the work out of the queue.
        let mut writes: Vec<(Option<usize>, Entry)> = Vec::new();
        let mut deletes: Vec<(usize, Vec<i64>)> = Vec::new();
        let mut reserve: Vec<(String, Mark)> = Vec::new();
        let mut reads: Vec<ReadWant> = Vec::new();
        let (epoch, make_durable, lane_names) = {
            let mut q = lock(&self.q);
            let q = &mut *q;
            let lane_names: Vec<String> = q.lanes.iter().map(|l| l.name.clone()).collect();
            if usable {
                for e in q.wal_pending.iter_mut().filter(|e| !e.writing) {
                    e.writing = true;
                    writes.push((None, e.clone_for_lane()));
                }
            } else if !q.wal_pending.is_empty() && (store.degraded.is_some() || all) {
                // The store cannot take them: they go out from memory.
                for e in std::mem::take(&mut q.wal_pending) {
                    for lane in q.lanes.iter_mut() {
                        lane.enqueue(e.clone_for_lane());
                        lane.notify.notify_one();
                    }
                }
            }
            for (li, lane) in q.lanes.iter_mut().enumerate() {
                if usable {
                    let down = lane.link == Link::Down;
                    for qu in [&mut lane.events, &mut lane.live] {
                        let over = qu.len().saturating_sub(memory_max);
                        for (i, e) in qu.iter_mut().enumerate() {
                            if e.row.is_none()
                                && !e.writing
                                && (all || down || i < over || due(e.born, now, spill_after))
                            {
                                e.writing = true;
                                writes.push((Some(li), e.clone_for_lane()));
                            }
                        }
                    }
                    for f in lane.inflight.values_mut() {
                        if let InFlight::Memory(v) = f {
                            for e in v.iter_mut() {
                                if e.row.is_none()
                                    && !e.writing
                                    && (all || due(e.born, now, spill_after))
                                {
                                    e.writing = true;
                                    writes.push((Some(li), e.clone_for_lane()));
                                }
                            }
                        }
                    }
                    if !lane.to_delete.is_empty() {
                        deletes.push((li, std::mem::take(&mut lane.to_delete)));
                    }
                } else if store.degraded.is_some() {
                    // Nothing can be written: keep memory bounded, oldest
                    // telemetry first (counted).
                    let limit = memory_max.saturating_mul(2);
                    let mut shed = 0u64;
                    while lane.live.len() > limit {
                        lane.live.pop_front();
                        shed += 1;
                    }
                    if shed > 0 {
                        self.count_drop(DropReason::WriteFailed, shed);
                    }
                }
                if store.db.is_some() {
                    for k in 0..2 {
                        if lane.wants_backlog(k) {
                            let streams: Vec<(StreamKey, Option<u64>)> = lane.backlog[k]
                                .streams
                                .iter()
                                .filter(|(_, c)| !c.exhausted)
                                .map(|(key, c)| (key.clone(), c.after))
                                .collect();
                            reads.push((li, lane.gen, streams, lane.max_records.max(1)));
                        }
                    }
                }
            }
            let make_durable = !q.epoch_durable && usable;
            if make_durable {
                store.marks.clear();
            }
            if q.epoch_durable || make_durable {
                for ((dev, kind), s) in q.seqs.iter() {
                    let key = positions::stream_key(*kind, dev);
                    if make_durable || needs_reservation(s) {
                        let slot = store
                            .marks
                            .get(&key)
                            .and_then(|m| m.slot)
                            .or_else(|| store.free_slot_except(&reserve));
                        reserve.push((
                            key.clone(),
                            Mark {
                                reserved: s.next + SEQ_BLOCK,
                                used: s.next as i64 - 1,
                                slot,
                            },
                        ));
                    }
                }
            }
            (q.epoch, make_durable, lane_names)
        };

        // 2. Disk work, with no lock held.
        let mut failure: Option<(&'static str, String)> = None;
        let mut reserved_ok = false;
        if !reserve.is_empty() || make_durable {
            let before = store.marks.clone();
            for (k, m) in &reserve {
                store.marks.insert(k.clone(), *m);
            }
            match store.write_positions(epoch, false) {
                Ok(()) => reserved_ok = true,
                Err(f) => {
                    store.marks = before;
                    failure = Some(f);
                }
            }
        }
        let mut written: Option<Vec<i64>> = None;
        let mut deleted_ok = false;
        if usable && failure.is_none() {
            let rows: Vec<NewRow<'_>> = writes
                .iter()
                .flat_map(|(lane, e)| {
                    let lanes: Vec<usize> = match lane {
                        Some(li) => vec![*li],
                        None => (0..lane_names.len()).collect(),
                    };
                    lanes.into_iter().map(move |li| (li, e))
                })
                .map(|(li, e)| NewRow {
                    sink: &lane_names[li],
                    kind: e.kind,
                    device: &e.device,
                    epoch: e.epoch,
                    seq: e.seq,
                    ts: e.ts,
                    synced: e.synced,
                    body: &e.body,
                })
                .collect();
            let del: Vec<i64> = deletes
                .iter()
                .flat_map(|(_, v)| v.iter().copied())
                .collect();
            // Sequence positions live in the positions file alone (a stale
            // copy here could be trusted one day and reuse numbers).
            let mut meta: Vec<(String, i64)> = Vec::new();
            if store.degraded.is_some() {
                // Proves the store writable again even with nothing to write.
                meta.push(("alive".into(), now_ms()));
            }
            let dropped = self.counters.dropped_total();
            if dropped != store.dropped_written {
                meta.push(("dropped".into(), dropped as i64));
            }
            if !rows.is_empty() || !del.is_empty() || !meta.is_empty() {
                let db = store.db.as_mut().expect("usable means open");
                let mut result = db.commit(&rows, &del, &meta);
                let mut n_deleted = 0;
                if let Err(e) = &result {
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
                        // A full disk: give the write-ahead log's space back
                        // and at least delete what was acknowledged.
                        let _ = db.checkpoint();
                        if let Ok((_, n)) = db.commit(&[], &del, &[]) {
                            deleted_ok = true;
                            n_deleted = n;
                        }
                        result = db.commit(&rows, &[], &meta);
                    }
                }
                match result {
                    Ok((ids, n)) => {
                        let n = n + n_deleted;
                        written = Some(ids);
                        deleted_ok = true;
                        store.dropped_written = dropped;
                        let net = rows.len() as i64 - n as i64;
                        self.counters.disk_rows.fetch_add(net, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if n_deleted > 0 {
                            self.counters
                                .disk_rows
                                .fetch_sub(n_deleted as i64, Ordering::Relaxed);
                        }
                        self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, records = rows.len(), "spool write failed; records stay in memory");
                        failure = Some(sql_reason(&e, &store.path));
                    }
                }
            }
            if failure.is_none() {
                if let Err(e) = self.enforce_caps(store, now) {
                    tracing::warn!(error = %e, "enforcing the spool's caps failed");
                }
            }
        }

        // Backlog reads (a reader in WAL mode is not blocked by writers).
        let mut read_results: Vec<ReadResult> = Vec::new();
        if let Some(d) = store.db.as_ref() {
            for (li, gen, streams, max) in &reads {
                let limit = (max * 4).clamp(16, 4000);
                let mut batches = 0usize;
                for (key, after) in streams {
                    if batches >= queue::READY_TARGET {
                        break;
                    }
                    match d.window(&lane_names[*li], key, *after, limit) {
                        Ok((good, bad)) => {
                            let done = good.len() + bad.len() < limit;
                            batches += good.len().div_ceil(*max).max(1);
                            read_results.push((*li, *gen, key.clone(), good, bad, done));
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "reading the backlog failed");
                            if failure.is_none() {
                                failure = Some(sql_reason(&e, &store.path));
                            }
                            break;
                        }
                    }
                }
            }
        }

        // 3. Results back into the queue.
        let mut corrupt: BTreeMap<&'static str, u64> = BTreeMap::new();
        {
            let mut q = lock(&self.q);
            let q = &mut *q;
            match &written {
                Some(ids) => {
                    let mut ids = ids.iter().copied();
                    let mut lane_rows: Vec<HashMap<u64, i64>> = vec![HashMap::new(); q.lanes.len()];
                    let mut wal_rows: HashMap<u64, Vec<i64>> = HashMap::new();
                    for (lane, e) in &writes {
                        match lane {
                            Some(li) => {
                                if let Some(id) = ids.next() {
                                    lane_rows[*li].insert(e.rid, id);
                                }
                            }
                            None => {
                                let rows: Vec<i64> = ids.by_ref().take(q.lanes.len()).collect();
                                wal_rows.insert(e.rid, rows);
                            }
                        }
                    }
                    let mut spilled = 0u64;
                    for (li, lane) in q.lanes.iter_mut().enumerate() {
                        let map = &mut lane_rows[li];
                        let mut keys: HashSet<StreamKey> = HashSet::new();
                        for qu in [&mut lane.events, &mut lane.live] {
                            qu.retain_mut(|e| match map.remove(&e.rid) {
                                Some(_) => {
                                    keys.insert(stream_of(e));
                                    spilled += 1;
                                    false
                                }
                                None => true,
                            });
                        }
                        for f in lane.inflight.values_mut() {
                            if let InFlight::Memory(v) = f {
                                for e in v.iter_mut() {
                                    if let Some(id) = map.remove(&e.rid) {
                                        e.row = Some(id);
                                        e.writing = false;
                                        lane.mem_rows.insert(id);
                                        keys.insert(stream_of(e));
                                        spilled += 1;
                                    }
                                }
                            }
                        }
                        // Written but no longer in memory: acknowledged or
                        // set aside meanwhile.
                        for (_, id) in map.drain() {
                            lane.gone_rows.insert(id);
                            lane.to_delete.push(id);
                        }
                        for k in keys {
                            lane.stream_has_rows(&k);
                        }
                        lane.notify.notify_one();
                    }
                    self.counters.spilled.fetch_add(spilled, Ordering::Relaxed);
                    // wal: committed records now go to every sink, with rows.
                    let pending = std::mem::take(&mut q.wal_pending);
                    for e in pending {
                        match wal_rows.remove(&e.rid) {
                            Some(rows) => {
                                for (li, row) in rows.into_iter().enumerate() {
                                    let lane = &mut q.lanes[li];
                                    let mut le = e.clone_for_lane();
                                    le.row = Some(row);
                                    if lane.link != Link::Down {
                                        lane.mem_rows.insert(row);
                                        lane.enqueue(le);
                                    } else {
                                        lane.stream_has_rows(&stream_of(&le));
                                    }
                                    lane.notify.notify_one();
                                }
                            }
                            None => q.wal_pending.push(e),
                        }
                    }
                }
                None => {
                    // Not written: the records stay where they are and are
                    // tried again.
                    for e in q.wal_pending.iter_mut() {
                        e.writing = false;
                    }
                    for lane in q.lanes.iter_mut() {
                        for e in lane.events.iter_mut().chain(lane.live.iter_mut()) {
                            e.writing = false;
                        }
                        for f in lane.inflight.values_mut() {
                            if let InFlight::Memory(v) = f {
                                for e in v.iter_mut() {
                                    e.writing = false;
                                }
                            }
                        }
                    }
                }
            }
            for (li, rows) in deletes {
                let lane = &mut q.lanes[li];
                if deleted_ok {
                    for r in rows {
                        lane.gone_rows.remove(&r);
                    }
                } else {
                    lane.to_delete.extend(rows);
                }
            }
            if reserved_ok {
                q.epoch_durable = true;
                q.reserve_failing = false;
                let Queue { seqs, used, .. } = &mut *q;
                for ((dev, kind), s) in seqs.iter_mut() {
                    if let Some(m) = store.marks.get(&positions::stream_key(*kind, dev)) {
                        s.durable = s.durable.max(m.reserved);
                        s.slot = m.slot;
                        if let (Some(slot), Some(u)) = (s.slot, used.as_mut()) {
                            u.set(slot, s.mark);
                        }
                    }
                }
                for lane in &q.lanes {
                    lane.notify.notify_one();
                }
            } else if failure.is_some() && q.epoch_durable {
                q.reserve_failing = true;
            }
            let mut next_id = q.next_batch_id;
            for (li, gen, key, good, bad, done) in read_results {
                let lane = &mut q.lanes[li];
                if lane.gen != gen {
                    continue;
                }
                let k = key.kind.as_i64() as usize;
                let last = good
                    .iter()
                    .map(|r| r.seq)
                    .max()
                    .into_iter()
                    .chain(lane.backlog[k].streams.get(&key).and_then(|c| c.after))
                    .max();
                for b in &bad {
                    *corrupt.entry(b.reason).or_default() += 1;
                    lane.gone_rows.insert(b.id);
                    lane.to_delete.push(b.id);
                }
                lane.add_backlog(&key, good, &mut next_id);
                let c = lane.backlog[k].streams.entry(key).or_default();
                // Bad rows carry no trustworthy seq; the cursor stays at the
                // last good one, and the bad rows are skipped as gone.
                c.after = last;
                c.exhausted = done;
                lane.notify.notify_one();
            }
            q.next_batch_id = next_id;
        }
        if !corrupt.is_empty() {
            let count: u64 = corrupt.values().sum();
            let reason = corrupt
                .iter()
                .map(|(r, n)| format!("{r} ({n})"))
                .collect::<Vec<_>>()
                .join(", ");
            tracing::error!(records = count, %reason, "damaged spool rows dropped");
            self.count_drop(DropReason::Corrupt, count);
            self.notice(Notice::CorruptRecords { count, reason });
        }

        // Degraded or restored.
        match failure {
            Some((reason, detail)) => {
                store.next_try = now + STORE_RETRY;
                if store.degraded.as_ref().map(|d| d.reason) != Some(reason) {
                    tracing::error!(reason, %detail, "spool degraded: readings are kept in memory only");
                    if store.degraded.is_none() {
                        self.notice(Notice::Degraded {
                            reason,
                            detail: detail.clone(),
                        });
                    }
                    *lock(&self.degraded) = Some((reason.to_owned(), detail.clone()));
                    let lost_at_start = store
                        .degraded
                        .as_ref()
                        .map(|d| d.lost_at_start)
                        .unwrap_or_else(|| self.counters.dropped(DropReason::WriteFailed));
                    let since = store.degraded.as_ref().map(|d| d.since).unwrap_or(now);
                    store.degraded = Some(Degraded {
                        reason,
                        since,
                        lost_at_start,
                    });
                }
                Err(SpoolError::Degraded(format!(
                    "{} ({detail})",
                    degraded_words(reason)
                )))
            }
            None => {
                if usable && (written.is_some() || reserved_ok || deleted_ok) {
                    if let Some(d) = store.degraded.take() {
                        let lost = self
                            .counters
                            .dropped(DropReason::WriteFailed)
                            .saturating_sub(d.lost_at_start);
                        tracing::info!(
                            was = d.reason,
                            lost,
                            "spool writable again; kept readings follow"
                        );
                        *lock(&self.degraded) = None;
                        self.notice(Notice::Restored {
                            degraded_for: now.duration_since(d.since),
                            lost,
                        });
                    }
                }
                Ok(())
            }
        }
    }

    /// Tries to open a store that could not be opened before.
    fn reopen(&self, store: &mut Store) {
        match Db::open(&store.path) {
            Ok((db, report)) => {
                if let Some((aside, reason)) = report.moved_aside {
                    tracing::error!(moved_to = %aside.display(), %reason, "spool was unreadable");
                }
                let mut q = lock(&self.q);
                for lane in q.lanes.iter_mut() {
                    for kind in [Kind::Sample, Kind::Event] {
                        if let Ok(keys) = db.streams(&lane.name, kind) {
                            for k in keys {
                                lane.stream_has_rows(&k);
                            }
                        }
                    }
                }
                drop(q);
                if let Ok(n) = db.row_count() {
                    self.counters.disk_rows.store(n as i64, Ordering::Relaxed);
                }
                store.db = Some(db);
            }
            Err(e) => {
                let (reason, detail) = spool_error_reason(&e, &store.path);
                tracing::debug!(reason, %detail, "spool still cannot be opened");
                store.next_try = Instant::now() + STORE_RETRY;
                if store.degraded.is_none() {
                    self.notice(Notice::Degraded {
                        reason,
                        detail: detail.clone(),
                    });
                    *lock(&self.degraded) = Some((reason.to_owned(), detail.clone()));
                    store.degraded = Some(Degraded {
                        reason,
                        since: Instant::now(),
                        lost_at_start: self.counters.dropped(DropReason::WriteFailed),
                    });
                }
            }
        }
    }

    fn count_drop(&self, reason: DropReason, n: u64) {
        self.counters
            .counter(reason)
            .fetch_add(n, Ordering::Relaxed);
        tracing::warn!(
            reason = reason.as_str(),
            dropped = n,
            total = self.counters.dropped_total(),
            "spool dropped records"
        );
    }

    /// Keeps the spool within `max_bytes` (oldest telemetry first, events
    /// only when no telemetry is left) and `max_age`.
    fn enforce_caps(&self, store: &mut Store, now: Instant) -> Result<(), SpoolError> {
        let sql = |what: &str| {
            let what = what.to_owned();
            move |e| SpoolError::Sql { what, source: e }
        };
        let age_due = store
            .last_age_check
            .map(|t| now.duration_since(t) >= Duration::from_secs(60))
            .unwrap_or(true);
        let Some(db) = store.db.as_mut() else {
            return Ok(());
        };
        let max = self.cfg.max_bytes.as_u64();
        if age_due {
            store.last_age_check = Some(now);
            if self.clock.get() == ClockState::Synced {
                let age_ms = i64::try_from(self.cfg.max_age.as_millis()).unwrap_or(i64::MAX);
                let cutoff = now_ms().saturating_sub(age_ms);
                let n = db
                    .drop_older_than(cutoff)
                    .map_err(sql("dropping old records"))?;
                if n > 0 {
                    self.counters
                        .disk_rows
                        .fetch_sub(n as i64, Ordering::Relaxed);
                    self.count_drop(DropReason::Age, n as u64);
                }
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
            self.count_drop(DropReason::Full, n as u64);
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
    /// spool marked clean. A store that cannot be written is reported, not
    /// an error: what it could not keep is the loss a degraded store
    /// declares.
    pub fn close(&self) -> Result<(), SpoolError> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let flushed = self.flush(true);
        let mut store = self.take_store();
        let (epoch, durable, exact) = {
            let q = lock(&self.q);
            let exact: Vec<(String, u64)> = q
                .seqs
                .iter()
                .map(|((dev, kind), s)| (positions::stream_key(*kind, dev), s.next))
                .collect();
            (q.epoch, q.epoch_durable, exact)
        };
        let mut result = flushed;
        if durable {
            for (k, next) in &exact {
                let slot = store.marks.get(k).and_then(|m| m.slot);
                store.marks.insert(
                    k.clone(),
                    Mark {
                        reserved: *next,
                        used: *next as i64 - 1,
                        slot,
                    },
                );
            }
            match store.write_positions(epoch, true) {
                Ok(()) => {}
                Err((reason, detail)) => {
                    tracing::error!(reason, %detail, "could not record exact sequence positions; the next start resumes after the reserved block");
                    result = Err(SpoolError::Degraded(detail));
                }
            }
            if let Some(db) = store.db.as_mut() {
                let pairs = vec![("dropped".into(), self.counters.dropped_total() as i64)];
                if let Err(e) = db.commit(&[], &[], &pairs) {
                    tracing::warn!(error = %e, "could not record positions in the spool");
                }
                if let Err(e) = db.checkpoint() {
                    tracing::debug!(error = %e, "checkpoint at close failed");
                }
            }
        }
        let memory = self.stats().memory;
        self.put_store(store);
        match &result {
            Ok(()) => tracing::info!(
                rows = self.counters.disk_rows.load(Ordering::Relaxed),
                "spool closed cleanly"
            ),
            Err(e) => {
                tracing::error!(error = %e, lost = memory, "spool closed without keeping everything")
            }
        }
        result
    }

    pub fn stats(&self) -> SpoolStats {
        let (memory, epoch) = {
            let q = lock(&self.q);
            let m: usize = q.lanes.iter().map(|l| l.memory()).sum::<usize>() + q.wal_pending.len();
            (m, q.epoch)
        };
        let degraded = lock(&self.degraded).clone();
        SpoolStats {
            disk_rows: self.counters.disk_rows.load(Ordering::Relaxed).max(0) as u64,
            disk_bytes: self.counters.disk_bytes.load(Ordering::Relaxed),
            memory: memory as u64,
            dropped: self.counters.dropped_total(),
            write_errors: self.counters.write_errors.load(Ordering::Relaxed),
            spilled: self.counters.spilled.load(Ordering::Relaxed),
            degraded: degraded.as_ref().map(|d| d.0.clone()),
            degraded_detail: degraded.map(|d| d.1),
            epoch: positions::epoch_hex(epoch),
        }
    }

    /// Runs the commit loop until `cancel`; the caller calls [`Spool::close`]
    /// afterwards.
    pub async fn run_flusher(self: Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.commit_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
            }
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.flush(false)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "spool commit round"),
                Err(e) => tracing::error!(error = %e, "spool commit task failed"),
            }
        }
    }
}

/// A lane's backlog read wanted this round: (lane, its generation, streams
/// with their cursors, records per batch).
type ReadWant = (usize, u64, Vec<(StreamKey, Option<u64>)>, usize);
/// What a read found: (lane, generation, stream, good rows, bad rows,
/// whether the stream has nothing more).
type ReadResult = (usize, u64, StreamKey, Vec<db::Row>, Vec<db::BadRow>, bool);

fn stream_of(e: &Entry) -> StreamKey {
    StreamKey {
        kind: e.kind,
        device: e.device.to_string(),
        epoch: e.epoch,
    }
}

/// Positions kept in the database: (epoch, clean, marks) and the row count.
#[allow(clippy::type_complexity)]
fn read_db_positions(
    d: &Db,
) -> rusqlite::Result<(Option<(u64, bool, BTreeMap<String, Mark>)>, u64)> {
    let rows = d.row_count()?;
    let clean = d.meta_get("clean")? == Some(1);
    let epoch = d.meta_get("epoch")?;
    let mut marks: BTreeMap<String, Mark> = BTreeMap::new();
    for (key, value) in d.meta_all("seq/")? {
        let k = key.trim_start_matches("seq/").to_owned();
        marks
            .entry(k)
            .or_insert(Mark {
                reserved: 0,
                used: -1,
                slot: None,
            })
            .reserved = value.max(0) as u64;
    }
    for (key, value) in d.meta_all("used/")? {
        let k = key.trim_start_matches("used/").to_owned();
        if let Some(m) = marks.get_mut(&k) {
            m.used = m.used.max(value);
        }
    }
    if marks.is_empty() && epoch.is_none() {
        return Ok((None, rows));
    }
    // A spool of the first version has positions but no epoch: its numbers
    // continue in epoch 0.
    Ok((Some((epoch.unwrap_or(0) as u64, clean, marks)), rows))
}

impl Store {
    /// A slot in the used-marks file no stream has.
    fn free_slot(&self) -> Option<u32> {
        self.free_slot_except(&[])
    }

    fn free_slot_except(&self, pending: &[(String, Mark)]) -> Option<u32> {
        let taken: HashSet<u32> = self
            .marks
            .values()
            .chain(pending.iter().map(|(_, m)| m))
            .filter_map(|m| m.slot)
            .collect();
        (0..used::SLOTS as u32).find(|s| !taken.contains(s))
    }

    /// Writes the positions file (and so makes reservations durable).
    fn write_positions(&mut self, epoch: u64, clean: bool) -> Result<(), (&'static str, String)> {
        let p = Positions {
            epoch: positions::epoch_hex(epoch),
            clean,
            streams: self.marks.clone(),
        };
        match positions::write(&self.pos_path, &p) {
            Ok(()) => Ok(()),
            Err(e) => {
                let reason = e.io_error().map(io_reason).unwrap_or("io_error");
                Err((reason, e.to_string()))
            }
        }
    }
}

impl LaneHandle {
    pub fn name(&self) -> String {
        lock(&self.spool.q).lanes[self.idx].name.clone()
    }

    pub fn spool(&self) -> &Arc<Spool> {
        &self.spool
    }

    /// Tells the spool whether this sink can deliver. While it cannot, the
    /// next commit writes its queued records to disk.
    pub fn set_link(&self, up: bool) {
        let mut q = lock(&self.spool.q);
        q.lanes[self.idx].link = if up { Link::Up } else { Link::Down };
        drop(q);
        if up {
            self.spool.wake.notify_one();
        }
    }

    /// Waits for the next batch: events first, then live telemetry, then the
    /// disk backlog (each stream in `seq` order), within `max_records`
    /// records and about `max_bytes` bytes (a single larger record goes
    /// alone). Never waits for the disk: the commit task reads the backlog
    /// ahead.
    pub async fn next_batch(
        &self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Batch, SpoolError> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (batch, want) = self.try_next(max_records.max(1), max_bytes.max(1));
            if want {
                self.spool.wake.notify_one();
            }
            if let Some(b) = batch {
                return Ok(b);
            }
            notified.await;
        }
    }

    fn try_next(&self, max_records: usize, max_bytes: usize) -> (Option<Batch>, bool) {
        let mut q = lock(&self.spool.q);
        let q = &mut *q;
        let id = q.next_batch_id;
        let (lanes, sendable) = (&mut q.lanes, {
            let seqs = &q.seqs;
            let epoch = q.epoch;
            let durable = q.epoch_durable;
            move |e: &Entry| {
                !(durable && e.epoch == epoch)
                    || seqs
                        .get(&(e.device.clone(), e.kind))
                        .is_some_and(|s| e.seq < s.durable)
            }
        });
        let lane = &mut lanes[self.idx];
        if lane.bounds_known && (lane.max_records, lane.max_bytes) != (max_records, max_bytes) {
            // Batches read ahead were cut for other bounds: read again.
            lane.reset();
        }
        lane.max_records = max_records;
        lane.max_bytes = max_bytes;
        lane.bounds_known = true;
        let want = lane.wants_backlog(0) || lane.wants_backlog(1);
        let batch = lane
            .take_memory(Kind::Event, id, sendable)
            .or_else(|| lane.backlog[1].ready.pop_front())
            .or_else(|| lane.take_memory(Kind::Sample, id, sendable))
            .or_else(|| lane.backlog[0].ready.pop_front());
        if let Some(b) = &batch {
            q.next_batch_id = q.next_batch_id.max(b.id + 1);
        }
        (batch, want)
    }

    /// The sink's broker acknowledged a batch; returns how many records it held.
    pub fn ack(&self, batch_id: u64) -> usize {
        let mut q = lock(&self.spool.q);
        let lane = &mut q.lanes[self.idx];
        let Some(f) = lane.inflight.remove(&batch_id) else {
            return 0;
        };
        let n = match f {
            InFlight::Memory(v) => {
                for e in &v {
                    if let Some(r) = e.row {
                        lane.mem_rows.remove(&r);
                        lane.gone_rows.insert(r);
                        lane.to_delete.push(r);
                    }
                }
                v.len()
            }
            InFlight::Disk(rows, _) => {
                for (r, ..) in &rows {
                    lane.gone_rows.insert(*r);
                    lane.to_delete.push(*r);
                }
                rows.len()
            }
        };
        self.spool
            .counters
            .acked
            .fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// The link went down: nothing in flight will be acknowledged. Memory
    /// records go back to the front of their queues (those already on disk
    /// are left to the backlog), and the backlog is read again from the
    /// start of each stream, in `seq` order.
    pub fn nack_all(&self) {
        let mut q = lock(&self.spool.q);
        q.lanes[self.idx].reset();
    }

    /// Sets a batch aside for good: its records are never sent, counted as
    /// dropped (`too_large`, or `corrupt` for any other reason), and each
    /// reported in a `spool.quarantined` notice. For records the broker can
    /// never take.
    pub fn set_aside(&self, batch_id: u64, reason: &str) {
        let mut q = lock(&self.spool.q);
        let lane = &mut q.lanes[self.idx];
        let Some(f) = lane.inflight.remove(&batch_id) else {
            return;
        };
        let mut out: Vec<(String, Kind, u64, u64)> = Vec::new();
        // Only the records that cannot go in any message are set aside; when
        // a batch held others too, they are sent again (the lane starts
        // over, in order).
        let limit = lane.max_bytes;
        let several = match &f {
            InFlight::Memory(v) => v.len() > 1,
            InFlight::Disk(r, _) => r.len() > 1,
        };
        let largest = match &f {
            InFlight::Memory(v) => v.iter().map(|e| e.body.len()).max(),
            InFlight::Disk(r, _) => r.iter().map(|x| x.2).max(),
        }
        .unwrap_or(0);
        let doomed = |len: usize| !several || len > limit || len == largest;
        match f {
            InFlight::Memory(v) => {
                let mut keep = Vec::new();
                for e in v {
                    if !doomed(e.body.len()) {
                        keep.push(e);
                        continue;
                    }
                    if let Some(r) = e.row {
                        lane.mem_rows.remove(&r);
                        lane.gone_rows.insert(r);
                        lane.to_delete.push(r);
                    }
                    out.push((e.device.to_string(), e.kind, e.seq, e.body.len() as u64));
                }
                if !keep.is_empty() {
                    lane.inflight.insert(batch_id, InFlight::Memory(keep));
                }
            }
            InFlight::Disk(rows, key) => {
                for (r, seq, len) in rows {
                    if doomed(len) {
                        lane.gone_rows.insert(r);
                        lane.to_delete.push(r);
                        out.push((key.device.clone(), key.kind, seq, len as u64));
                    }
                }
            }
        }
        if several {
            lane.reset();
        }
        drop(q);
        // A record that cannot be sent is either too large for the broker
        // or carries a device id no topic can (damage the checksum missed).
        let why = if reason.contains("large") {
            DropReason::TooLarge
        } else {
            DropReason::Corrupt
        };
        self.spool.count_drop(why, out.len() as u64);
        for (device, kind, seq, bytes) in out {
            tracing::error!(%device, ?kind, seq, bytes, reason, "record set aside: it can never be sent");
            self.spool.notice(Notice::Quarantined {
                device,
                kind,
                seq,
                bytes,
                reason: reason.to_owned(),
            });
        }
    }

    /// Records of this sink not yet acknowledged (memory and disk).
    pub fn pending(&self) -> u64 {
        let q = lock(&self.spool.q);
        let lane = &q.lanes[self.idx];
        let inflight: usize = lane
            .inflight
            .values()
            .map(|f| match f {
                InFlight::Memory(v) => v.len(),
                InFlight::Disk(r, _) => r.len(),
            })
            .sum();
        (lane.events.len() + lane.live.len() + inflight + q.wal_pending.len()) as u64
            + self.spool.counters.disk_rows.load(Ordering::Relaxed).max(0) as u64
    }

    /// Batches in flight.
    pub fn inflight(&self) -> usize {
        lock(&self.spool.q).lanes[self.idx].inflight.len()
    }
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

    /// Waits for a batch, running commit rounds meanwhile as the commit
    /// task would (backlog reads, reservations).
    async fn next(lane: &LaneHandle, max: usize) -> Batch {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout(Duration::from_millis(20), lane.next_batch(max, 1 << 20))
                .await
            {
                Ok(b) => return b.unwrap(),
                Err(_) => {
                    assert!(tokio::time::Instant::now() < deadline, "a batch is ready");
                    let _ = lane.spool().flush(false);
                }
            }
        }
    }

    /// The store's database, for looking inside in tests.
    fn with_db<T>(s: &Spool, f: impl FnOnce(&mut Db) -> T) -> T {
        let mut st = s.take_store();
        let r = f(st.db.as_mut().expect("store open"));
        s.put_store(st);
        r
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
        with_db(s, |d| d.row_count().unwrap())
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
        s.flush(false).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(200), lane.next_batch(100, 1 << 20))
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
            tokio::time::timeout(Duration::from_millis(200), lane.next_batch(100, 1 << 20))
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
        let d = r
            .resumed_unclean
            .iter()
            .find(|x| x.device == "d" && x.kind == Kind::Sample)
            .expect("d's samples resumed");
        assert_eq!(d.at, 3 + SEQ_BLOCK);
        assert_eq!(d.last_used, Some(3), "exact after a crash on the same boot");
        // The first run's records were written at its clean stop; the
        // crashed run's two were still in memory (within spill_after) and
        // are the loss a crash may cause.
        assert_eq!(rows(&s), 4);
        drop(s);
        // Another crash before any reading: nothing of the skipped block was
        // used, and the report says so (the last used number stays 3 + block).
        let (s, r, _) = open(&c);
        let d = r
            .resumed_unclean
            .iter()
            .find(|x| x.device == "d" && x.kind == Kind::Sample)
            .expect("d's samples resumed");
        assert_eq!(d.last_used, Some(3 + SEQ_BLOCK));
        drop(s);
        let (_, r, _) = open(&c);
        let d = r
            .resumed_unclean
            .iter()
            .find(|x| x.device == "d" && x.kind == Kind::Sample)
            .expect("d's samples resumed");
        assert_eq!(
            d.last_used,
            Some(3 + SEQ_BLOCK),
            "a run that used nothing does not claim its skipped numbers"
        );
        assert!(d.at > 3 + 2 * SEQ_BLOCK);
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
        with_db(&s, |db| {
            assert!(db.used_bytes().unwrap() <= 64 * 1024);
            assert_eq!(db.count_kind(Kind::Event).unwrap(), 30, "every event kept");
            let oldest: i64 = db
                .conn
                .query_row("SELECT MIN(seq) FROM rec WHERE kind = 0", [], |r| r.get(0))
                .unwrap();
            assert!(oldest > 0, "oldest telemetry went first");
        });
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
        let mut st = s.take_store();
        let db = st.db.as_mut().unwrap();
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
        with_db(&s, |d| {
            d.conn
                .execute("UPDATE rec SET body = 'garbage'", [])
                .unwrap()
        });
        s.push(&dev, sample(1.0)).unwrap();
        s.flush(false).unwrap();
        lane.set_link(true);
        let b = next(&lane, 100).await;
        assert_eq!(seqs(&b), vec![1]);
        assert_eq!(s.counters().dropped_corrupt.load(Ordering::Relaxed), 1);
    }

    fn notices(s: &Spool) -> Vec<Notice> {
        s.take_notices()
    }

    #[tokio::test]
    async fn push_and_next_batch_never_wait_for_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
        lane.set_link(true);
        let dev: Arc<str> = Arc::from("d");
        s.push(&dev, sample(0.0)).unwrap();
        let b = next(&lane, 10).await;
        lane.ack(b.id);
        // A commit round that takes long (a slow SD card) holds the store,
        // not the queue.
        let store = s.take_store();
        let t = Instant::now();
        for i in 0..100 {
            s.push(&dev, sample(i as f64)).unwrap();
        }
        let b = tokio::time::timeout(Duration::from_millis(500), lane.next_batch(1000, 1 << 20))
            .await
            .expect("a live batch while the store is busy")
            .unwrap();
        assert_eq!(b.bodies.len(), 100);
        assert!(t.elapsed() < Duration::from_millis(500));
        s.put_store(store);
    }

    #[tokio::test]
    async fn backlog_leaves_in_seq_order_after_nacks_and_spills() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, lane) = open(&cfg(dir.path(), "spill", "spill_after = \"0s\""));
        lane.set_link(true);
        let dev: Arc<str> = Arc::from("d");
        for i in 0..10 {
            s.push(&dev, sample(i as f64)).unwrap();
            s.push(&dev, event()).unwrap();
        }
        // Some in flight (written because spill_after passed), the rest
        // queued; then the link goes down and everything goes to disk.
        let mut taken = Vec::new();
        for _ in 0..3 {
            taken.push(next(&lane, 2).await);
        }
        s.flush(false).unwrap();
        lane.set_link(false);
        lane.nack_all();
        for i in 10..20 {
            s.push(&dev, sample(i as f64)).unwrap();
        }
        s.flush(false).unwrap();
        lane.set_link(true);
        let mut got: HashMap<Kind, Vec<u64>> = HashMap::new();
        while got.values().map(|v| v.len()).sum::<usize>() < 30 {
            let b = next(&lane, 3).await;
            assert!(b.historical);
            got.entry(b.kind).or_default().extend(seqs(&b));
            lane.ack(b.id);
        }
        assert_eq!(got[&Kind::Sample], (0..20).collect::<Vec<u64>>());
        assert_eq!(got[&Kind::Event], (0..10).collect::<Vec<u64>>());
    }

    #[tokio::test]
    async fn damaged_rows_are_dropped_counted_reported_and_never_block() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
        lane.set_link(false);
        let dev: Arc<str> = Arc::from("c");
        for i in 0..6 {
            s.push(&dev, sample(i as f64)).unwrap();
        }
        s.flush(false).unwrap();
        notices(&s);
        with_db(&s, |d| {
            // A bit flip inside a body, a device id that a topic cannot
            // carry (c -> #), a body that is not text.
            d.conn
                .execute(
                    "UPDATE rec SET body = replace(body, '\"x\"', '\"y\"') WHERE seq = 1",
                    [],
                )
                .unwrap();
            d.conn
                .execute("UPDATE rec SET device = '#' WHERE seq = 2", [])
                .unwrap();
            d.conn
                .execute("UPDATE rec SET body = x'00ff10' WHERE seq = 4", [])
                .unwrap();
        });
        // Damage is found when the rows are read back after a restart.
        s.close().unwrap();
        drop((s, lane));
        let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
        lane.set_link(true);
        let mut got = Vec::new();
        while got.len() < 3 {
            let b = next(&lane, 100).await;
            assert_eq!(&*b.device, "c");
            for body in &b.bodies {
                serde_json::from_str::<serde_json::Value>(body).expect("only valid JSON is sent");
            }
            got.extend(seqs(&b));
            lane.ack(b.id);
        }
        assert_eq!(got, vec![0, 3, 5]);
        // The '#' row sits in a stream of its own: read it too.
        for _ in 0..3 {
            s.flush(false).unwrap();
        }
        assert_eq!(s.counters().dropped(DropReason::Corrupt), 3);
        let n = notices(&s);
        let count: u64 = n
            .iter()
            .map(|n| match n {
                Notice::CorruptRecords { count, .. } => *count,
                _ => 0,
            })
            .sum();
        assert_eq!(count, 3, "{n:?}");
        assert_eq!(rows(&s), 0, "damaged and acknowledged rows deleted");
    }

    #[tokio::test]
    async fn positions_survive_a_corrupt_spool_and_a_lost_one_starts_a_new_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), "spill", "");
        let dev: Arc<str> = Arc::from("d");
        let epoch = {
            let (s, _, _) = open(&c);
            let n = notices(&s);
            assert!(
                n.iter().any(|n| matches!(
                    n,
                    Notice::SequenceReset {
                        first_start: true,
                        ..
                    }
                )),
                "{n:?}"
            );
            for _ in 0..5 {
                s.push(&dev, sample(0.0)).unwrap();
            }
            s.close().unwrap();
            s.epoch()
        };
        std::fs::write(
            dir.path().join("spool.db"),
            b"garbage garbage garbage garbage",
        )
        .unwrap();
        {
            let (s, r, _) = open(&c);
            assert!(r.moved_aside.is_some());
            assert_eq!(s.epoch(), epoch, "same epoch");
            assert_eq!(s.push(&dev, sample(0.0)).unwrap(), 5, "sequence continues");
            assert!(notices(&s).is_empty());
            s.close().unwrap();
        }
        std::fs::remove_file(dir.path().join("spool.db")).unwrap();
        std::fs::remove_file(dir.path().join("spool.db.seq")).unwrap();
        let (s, _, _) = open(&c);
        assert_ne!(s.epoch(), epoch, "everything lost: a new epoch");
        // A replaced card cannot be told from a first start: either way the
        // new epoch is announced.
        let n = notices(&s);
        assert!(
            n.iter()
                .any(|n| matches!(n, Notice::SequenceReset { epoch: e, .. } if *e == s.epoch())),
            "{n:?}"
        );
    }

    #[tokio::test]
    async fn unwritable_store_degrades_live_readings_flow_and_it_recovers() {
        let dir = tempfile::tempdir().unwrap();
        // The spool's directory is a file: nothing can be created there.
        let blocker = dir.path().join("state");
        std::fs::write(&blocker, b"").unwrap();
        let text = format!(
            "site = \"s\"\n[spool]\npath = \"{}\"\n",
            blocker.join("spool.db").display()
        );
        let c = crate::config::Config::from_toml(&text).unwrap().spool;
        let (s, _, lane) = open(&c);
        let n = notices(&s);
        assert!(
            n.iter().any(|n| matches!(n, Notice::Degraded { .. })),
            "{n:?}"
        );
        assert!(
            n.iter().any(|n| matches!(n, Notice::SequenceReset { .. })),
            "{n:?}"
        );
        assert!(s.stats().degraded.is_some());
        lane.set_link(true);
        let dev: Arc<str> = Arc::from("d");
        s.push(&dev, sample(1.0)).unwrap();
        let b = next(&lane, 10).await;
        assert_eq!(seqs(&b), vec![0], "live readings flow from memory");
        lane.ack(b.id);
        // The card is fixed: the store is tried again and works.
        std::fs::remove_file(&blocker).unwrap();
        std::fs::create_dir(&blocker).unwrap();
        {
            let mut st = s.take_store();
            st.next_try = Instant::now();
            s.put_store(st);
        }
        s.flush(false).unwrap();
        assert!(s.stats().degraded.is_none());
        assert!(notices(&s)
            .iter()
            .any(|n| matches!(n, Notice::Restored { .. })));
        s.push(&dev, sample(2.0)).unwrap();
        lane.set_link(false);
        s.flush(false).unwrap();
        assert_eq!(rows(&s), 1);
        s.close().unwrap();
        assert!(
            blocker.join("spool.db.seq").exists(),
            "positions kept once writable"
        );
    }

    #[tokio::test]
    async fn a_first_version_spool_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = rusqlite::Connection::open(dir.path().join("spool.db")).unwrap();
            c.execute_batch(
                "CREATE TABLE rec (id INTEGER PRIMARY KEY, sink TEXT NOT NULL, kind INTEGER NOT NULL,
                   device TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL,
                   synced INTEGER NOT NULL, body TEXT NOT NULL);
                 CREATE INDEX rec_lane ON rec(sink, kind, id);
                 CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
                 INSERT INTO meta VALUES ('seq/0/d', 7), ('clean', 1);
                 INSERT INTO rec (sink, kind, device, seq, ts, synced, body) VALUES
                   ('mqtt', 0, 'd', 5, 1, 1, '{\"seq\":5,\"ts\":1,\"clock\":\"synced\",\"values\":{}}'),
                   ('mqtt', 0, 'd', 6, 2, 1, '{\"seq\":6,\"ts\":2,\"clock\":\"synced\",\"values\":{}}');",
            )
            .unwrap();
        }
        let c = cfg(dir.path(), "spill", "");
        {
            let (s, r, lane) = open(&c);
            assert!(r.moved_aside.is_none() && r.resumed_unclean.is_empty());
            assert_eq!(s.epoch(), 0, "the old numbers continue in epoch 0");
            assert!(notices(&s).is_empty(), "no reset: positions were kept");
            assert_eq!(s.push(&Arc::from("d"), sample(0.0)).unwrap(), 7);
            lane.set_link(true);
            let live = next(&lane, 10).await;
            assert_eq!(
                (live.historical, seqs(&live)),
                (false, vec![7]),
                "live first"
            );
            let b = next(&lane, 10).await;
            assert!(b.historical, "then the old backlog");
            assert_eq!((seqs(&b), b.epoch), (vec![5, 6], 0));
            lane.ack(b.id);
            lane.ack(live.id);
            s.close().unwrap();
        }
        // The old copy of the positions is gone: losing the positions file
        // now starts a new epoch instead of trusting it.
        std::fs::remove_file(dir.path().join("spool.db.seq")).unwrap();
        let (s, _, _) = open(&c);
        assert_ne!(s.epoch(), 0);
    }

    #[tokio::test]
    async fn wrong_schema_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = rusqlite::Connection::open(dir.path().join("spool.db")).unwrap();
            c.execute_batch("CREATE TABLE rec (x); INSERT INTO rec VALUES (1);")
                .unwrap();
        }
        let (s, r, _) = open(&cfg(dir.path(), "spill", ""));
        let (_, reason) = r.moved_aside.expect("moved aside");
        assert!(reason.contains("not a wardgate spool"), "{reason}");
        s.push(&Arc::from("d"), sample(0.0)).unwrap();
    }

    #[tokio::test]
    async fn a_set_aside_batch_is_never_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
        lane.set_link(false);
        let dev: Arc<str> = Arc::from("d");
        s.push(&dev, sample(0.0)).unwrap();
        s.push(&dev, sample(1.0)).unwrap();
        s.flush(false).unwrap();
        lane.set_link(true);
        let b = next(&lane, 1).await;
        lane.set_aside(b.id, "too large");
        let b2 = next(&lane, 1).await;
        assert_eq!(seqs(&b2), vec![1]);
        lane.ack(b2.id);
        lane.nack_all();
        s.flush(false).unwrap();
        s.flush(false).unwrap();
        assert_eq!(rows(&s), 0);
        assert_eq!(s.counters().dropped(DropReason::TooLarge), 1);
        assert!(notices(&s)
            .iter()
            .any(|n| matches!(n, Notice::Quarantined { seq: 0, .. })));
    }

    #[tokio::test]
    async fn setting_aside_a_mixed_batch_keeps_the_small_records() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
        lane.set_link(false);
        let dev: Arc<str> = Arc::from("d");
        s.push(&dev, sample(0.0)).unwrap();
        let mut big = Values::new();
        big.set("blob", "x".repeat(5000));
        s.push(&dev, Reading::Sample(big)).unwrap();
        s.push(&dev, sample(2.0)).unwrap();
        s.flush(false).unwrap();
        lane.set_link(true);
        // Bounds large enough for all three (as read ahead before the sink
        // said its own), then the sink finds the message too large.
        let b = next(&lane, 100).await;
        assert_eq!(seqs(&b), vec![0, 1, 2]);
        lane.set_aside(b.id, "too large");
        let mut got = Vec::new();
        while got.len() < 2 {
            let b = next(&lane, 100).await;
            got.extend(seqs(&b));
            lane.ack(b.id);
        }
        assert_eq!(got, vec![0, 2], "only the large record was set aside");
        assert_eq!(s.counters().dropped(DropReason::TooLarge), 1);
    }

    #[tokio::test]
    async fn acknowledged_rows_that_cannot_be_deleted_are_not_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
        lane.set_link(false);
        let dev: Arc<str> = Arc::from("d");
        for i in 0..3 {
            s.push(&dev, sample(i as f64)).unwrap();
        }
        s.flush(false).unwrap();
        lane.set_link(true);
        let b = next(&lane, 100).await;
        assert_eq!(seqs(&b), vec![0, 1, 2]);
        lane.ack(b.id);
        // The store is busy (or failing) and has not deleted them yet; the
        // link drops and comes back: they are not read again.
        lane.nack_all();
        s.push(&dev, sample(3.0)).unwrap();
        let b = next(&lane, 100).await;
        assert_eq!(seqs(&b), vec![3]);
    }
}
