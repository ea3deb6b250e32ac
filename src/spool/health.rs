//! The store's health: why it cannot be written (in the contract's words:
//! `read_only`, `permission_denied`, `disk_full`, `io_error`), reopening a
//! store that could not be opened, and the degraded and restored notices a
//! commit round ends with. Used only by whoever holds the store (opening,
//! a commit round); it names and reports the trouble and schedules the next
//! try, and never drops records itself (what a degraded store cannot keep
//! is counted where it is shed).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::commit::Store;
use super::db::Db;
use super::{lock, DropReason, Notice, Spool, SpoolError, STORE_RETRY};
use crate::model::Kind;

/// Why the store is degraded, since when.
pub(super) struct Degraded {
    pub(super) reason: &'static str,
    pub(super) since: Instant,
    /// `dropped_write_failed` when it began.
    pub(super) lost_at_start: u64,
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

impl Spool {
    /// Tries to open a store that could not be opened before.
    pub(super) fn reopen(&self, store: &mut Store) {
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

    /// Ends a round: on `failure` the store is (still) degraded, reported
    /// once and tried again later; when the round `wrote` to a degraded
    /// store, it is restored and that is reported with what was lost.
    pub(super) fn settle(
        &self,
        store: &mut Store,
        failure: Option<(&'static str, String)>,
        wrote: bool,
        now: Instant,
    ) -> Result<(), SpoolError> {
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
                if wrote {
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
}
