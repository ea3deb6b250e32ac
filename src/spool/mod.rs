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
//!
//! The rooms: this file holds the types every room shares (the spool, its
//! queue, counters, notices, stats) and does no I/O. `stamp.rs` is the way
//! in (`push`, epochs) and `handle.rs` the sinks' side ([`LaneHandle`]),
//! both memory only. `retime.rs` corrects the time of readings taken
//! before the clock synchronised. `commit.rs` is the commit round, the one owner of the
//! store, helped by `backlog.rs` (read-ahead) and `health.rs` (a degraded
//! store and its notices); `open.rs` runs once at start.

mod backlog;
mod caps;
mod commit;
pub mod config;
pub mod db;
mod handle;
mod health;
mod open;
#[cfg(feature = "plant-faults")]
mod plant;
pub mod positions;
pub mod queue;
pub mod retime;
mod stamp;
#[cfg(test)]
mod tests;
pub mod used;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use self::config::SpoolConfig;
use crate::model::Kind;

use commit::Store;
pub use db::{row_checksum, valid_device_id};
pub use health::degraded_words;
pub use queue::SEQ_BLOCK;
use queue::{Entry, Lane, SeqState};
use stamp::ClockCache;

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
    /// Records of this boot were delivered (or may have been) with the
    /// unsynchronised time; their true time is `ts + offset_ms`. Covers
    /// those of `first_seq..=last_seq` that went out `unsynced`.
    ClockCorrected {
        device: String,
        kind: Kind,
        epoch: u64,
        first_seq: u64,
        last_seq: u64,
        /// How many records were delivered in that range.
        records: u64,
        offset_ms: i64,
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
    /// Records whose time was corrected once the clock synchronised
    /// (memory, read-ahead and disk copies each count).
    pub clock_corrected: AtomicU64,
    /// Records whose time could not be corrected (a body not as the spool
    /// writes it): sent as taken.
    pub clock_uncorrected: AtomicU64,
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
    /// The clock's base and what was delivered unsynchronised.
    time: retime::TimeState,
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
    /// Write-through asked for at run time (the UPS is on battery): every
    /// record is committed before it is sent, as under policy `wal`.
    write_through: AtomicBool,
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

impl Spool {
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

    /// Completed commit rounds.
    pub fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
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
}
