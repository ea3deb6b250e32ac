//! What the spool tells the gateway: why records were dropped, notices for
//! the operations centre, counters, the status snapshot and the start
//! report; and the [`Reporter`] every part of the spool counts, logs and
//! reports through, so that each notable event is defined once (its log
//! line and its counter together).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use crate::model::Kind;

/// Why records were dropped, each reason counted separately: the
/// contract's reasons (`spool.dropped.<reason>`), which the operations
/// centre's ledger reads back.
pub use wardgate_contract::gateway::DropReason;

/// When the spool is full, events keep their place ahead of telemetry only
/// up to one record in this many (a quarter): past that share the oldest
/// events go first, so a device raising events without end (a flapping
/// link) cannot push the history out. The same share bounds events in
/// memory while the store cannot be written.
pub(super) const EVENT_SHARE: u64 = 4;

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

/// How one time correction went, for the log and the counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Corrected {
    pub(super) records: u64,
    pub(super) unrewritable: u64,
}

/// The spool's counters, its notices waiting for the app, and why the
/// store is degraded (for the status page): shared by the queue's users
/// and the commit round, each behind its own short lock.
pub(super) struct Reporter {
    pub(super) counters: SpoolCounters,
    notices: Mutex<Vec<Notice>>,
    notice_wake: Notify,
    /// The degraded reason and its words, while the store is degraded.
    degraded: Mutex<Option<(String, String)>>,
}

/// Locks a spool mutex. A panic while holding the lock cannot leave the
/// spool's data half written in a way that matters more than stopping:
/// keep going.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Reporter {
    pub(super) fn new(
        counters: SpoolCounters,
        notices: Vec<Notice>,
        degraded: Option<(String, String)>,
    ) -> Reporter {
        Reporter {
            counters,
            notices: Mutex::new(notices),
            notice_wake: Notify::new(),
            degraded: Mutex::new(degraded),
        }
    }

    pub(super) fn notice(&self, n: Notice) {
        lock(&self.notices).push(n);
        self.notice_wake.notify_one();
    }

    /// What happened since the last call, oldest first.
    pub(super) fn take_notices(&self) -> Vec<Notice> {
        std::mem::take(&mut *lock(&self.notices))
    }

    /// Waits for notices and returns them.
    pub(super) async fn next_notices(&self) -> Vec<Notice> {
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

    /// Why the store is degraded and in words, while it is.
    pub(super) fn degraded(&self) -> Option<(String, String)> {
        lock(&self.degraded).clone()
    }

    pub(super) fn set_degraded(&self, d: Option<(String, String)>) {
        *lock(&self.degraded) = d;
    }

    pub(super) fn count_drop(&self, reason: DropReason, n: u64) {
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

    /// Logs and counts a time correction; `what` says which copies.
    pub(super) fn count_corrected(&self, c: Corrected, what: &str) {
        if c.records > 0 {
            self.counters
                .clock_corrected
                .fetch_add(c.records, Ordering::Relaxed);
            tracing::info!(
                records = c.records,
                what,
                "clock synchronised: times of readings taken before corrected"
            );
        }
        if c.unrewritable > 0 {
            self.counters
                .clock_uncorrected
                .fetch_add(c.unrewritable, Ordering::Relaxed);
            tracing::warn!(
                records = c.unrewritable,
                what,
                "readings whose time could not be corrected (body not as the spool writes it); sent as taken"
            );
        }
    }

    /// Counts, logs and reports the damaged rows a commit round found, by
    /// reason.
    pub(super) fn report_corrupt(&self, corrupt: BTreeMap<&'static str, u64>) {
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
    }
}
