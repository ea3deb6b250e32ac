//! The store's health: why it cannot be written (in the contract's words:
//! `read_only`, `permission_denied`, `disk_full`, `io_error`), when to try
//! it again, and the degraded and restored notices. It names and reports
//! the trouble and schedules the next try; it never drops records itself
//! (what a degraded store cannot keep is counted where it is shed, in the
//! queue).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::spool::error::SpoolError;
use crate::spool::report::{DropReason, Notice, Reporter};

/// How often a degraded store is tried again.
pub(super) const STORE_RETRY: Duration = Duration::from_secs(5);

/// Why the store is degraded, since when.
struct Degraded {
    reason: &'static str,
    since: Instant,
    /// `dropped_write_failed` when it began.
    lost_at_start: u64,
}

/// Whether the store can be written, and when to try it again.
pub(crate) struct Health {
    degraded: Option<Degraded>,
    /// When a degraded store is tried again.
    pub(crate) next_try: Instant,
}

/// The degraded reason for an OS error, in the contract's words.
pub(super) fn io_reason(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EROFS) => "read_only",
        Some(libc::EACCES) | Some(libc::EPERM) => "permission_denied",
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => "disk_full",
        _ => "io_error",
    }
}

/// The degraded reason for an SQLite error.
pub(super) fn sql_reason(e: &rusqlite::Error, path: &Path) -> (&'static str, String) {
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

/// The degraded reason for a failure to open the store.
pub(super) fn spool_error_reason(e: &SpoolError, path: &Path) -> (&'static str, String) {
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

impl Health {
    /// A healthy store, tried again (if it degrades) from `next_try`.
    pub(super) fn new(next_try: Instant) -> Health {
        Health {
            degraded: None,
            next_try,
        }
    }

    pub(crate) fn is_degraded(&self) -> bool {
        self.degraded.is_some()
    }

    /// Whether the store may be tried this round: it is healthy, it is the
    /// last round (`all`), or its retry time has come.
    pub(crate) fn may_try(&self, all: bool, now: Instant) -> bool {
        self.degraded.is_none() || all || now >= self.next_try
    }

    /// The store found degraded at start (already logged and reported).
    pub(crate) fn degraded_at_start(&mut self, reason: &'static str) {
        self.degraded = Some(Degraded {
            reason,
            since: Instant::now(),
            lost_at_start: 0,
        });
    }

    /// A store that could not be opened still cannot: tried again later,
    /// reported once.
    pub(super) fn still_closed(&mut self, reason: &'static str, detail: String, report: &Reporter) {
        tracing::debug!(reason, %detail, "spool still cannot be opened");
        self.next_try = Instant::now() + STORE_RETRY;
        if self.degraded.is_none() {
            report.notice(Notice::Degraded {
                reason,
                detail: detail.clone(),
            });
            report.set_degraded(Some((reason.to_owned(), detail.clone())));
            self.degraded = Some(Degraded {
                reason,
                since: Instant::now(),
                lost_at_start: report.counters.dropped(DropReason::WriteFailed),
            });
        }
    }

    /// Ends a round: on `failure` the store is (still) degraded, reported
    /// once and tried again later; when the round `wrote` to a degraded
    /// store, it is restored and that is reported with what was lost.
    pub(super) fn settle(
        &mut self,
        failure: Option<(&'static str, String)>,
        wrote: bool,
        now: Instant,
        report: &Reporter,
    ) -> Result<(), SpoolError> {
        match failure {
            Some((reason, detail)) => {
                self.next_try = now + STORE_RETRY;
                if self.degraded.as_ref().map(|d| d.reason) != Some(reason) {
                    self.degrade(reason, &detail, now, report);
                }
                Err(SpoolError::Degraded(format!(
                    "{} ({detail})",
                    degraded_words(reason)
                )))
            }
            None => {
                if wrote {
                    self.restore(now, report);
                }
                Ok(())
            }
        }
    }

    /// The store is degraded for `reason` (first time, or a new reason):
    /// logged, reported when it begins, and shown on the status page.
    fn degrade(&mut self, reason: &'static str, detail: &str, now: Instant, report: &Reporter) {
        tracing::error!(reason, %detail, "spool degraded: readings are kept in memory only");
        if self.degraded.is_none() {
            report.notice(Notice::Degraded {
                reason,
                detail: detail.to_owned(),
            });
        }
        report.set_degraded(Some((reason.to_owned(), detail.to_owned())));
        let lost_at_start = self
            .degraded
            .as_ref()
            .map(|d| d.lost_at_start)
            .unwrap_or_else(|| report.counters.dropped(DropReason::WriteFailed));
        let since = self.degraded.as_ref().map(|d| d.since).unwrap_or(now);
        self.degraded = Some(Degraded {
            reason,
            since,
            lost_at_start,
        });
    }

    /// A degraded store was written: restored, with what was lost meanwhile.
    fn restore(&mut self, now: Instant, report: &Reporter) {
        if let Some(d) = self.degraded.take() {
            let lost = report
                .counters
                .dropped(DropReason::WriteFailed)
                .saturating_sub(d.lost_at_start);
            tracing::info!(
                was = d.reason,
                lost,
                "spool writable again; kept readings follow"
            );
            report.set_degraded(None);
            report.notice(Notice::Restored {
                degraded_for: now.duration_since(d.since),
                lost,
            });
        }
    }
}
