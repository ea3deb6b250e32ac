//! The store: the one owner of the SQLite database ([`Db`]) and of the
//! sequence files (positions, used marks) while the gateway runs. A commit
//! round takes it out of its slot ([`StoreSlot`]) for its duration and
//! calls it with the queue lock released; opening makes it once
//! ([`open`]). Every method here is blocking: it runs on the commit task's
//! blocking thread, never on a source's or a sink's task.
//!
//! The store keeps the spool within its caps ([`caps`]) and knows its own
//! health ([`health`]): a store that cannot be written is degraded, tried
//! again every few seconds, and reported.

mod caps;
mod health;
pub(crate) mod open;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use super::config::SpoolConfig;
use super::db::{BadRow, Db, NewRow, Row, StreamKey};
use super::error::SpoolError;
use super::positions::{self, Mark, Positions};
use super::report::{lock, Corrected, Reporter, SpoolCounters};
use super::retime::ClockCache;
use super::used::{self, UsedMarks};
use crate::model::now_ms;
use caps::Caps;
use health::{io_reason, spool_error_reason, sql_reason, Health};

pub use health::degraded_words;

/// Rows corrected per commit round (one transaction), so that a large
/// backlog does not hold up the round; rows read before their pass are
/// corrected as they are read.
const CORRECT_CHUNK: usize = 2000;

/// A failure of the store: its degraded reason (`read_only`, ...) and
/// the error in words.
pub(crate) type Failure = (&'static str, String);

/// The disk side: the database, the positions it has written, and its
/// health and caps.
pub(crate) struct Store {
    path: PathBuf,
    pos_path: PathBuf,
    /// None while the store cannot be opened.
    pub(super) db: Option<Db>,
    pub(super) health: Health,
    pub(super) caps: Caps,
    /// What the positions file holds.
    marks: BTreeMap<String, Mark>,
    /// `dropped_total` last written to the database.
    dropped_written: u64,
    /// The clock correction's pass over the rows: (the base's generation,
    /// the last row id done).
    correct_at: (u64, i64),
    /// The last disk correction pass failed (logged once until one works).
    correct_failing: bool,
}

/// What [`Store::write`] managed.
pub(crate) struct Written {
    /// The new rows' ids, in order; None: no row was written (nothing to
    /// write, or the write failed).
    pub(crate) ids: Option<Vec<i64>>,
    /// The acknowledged rows were deleted.
    pub(crate) deleted_ok: bool,
    pub(crate) failure: Option<Failure>,
}

/// Where the store waits between commit rounds: taken out by a round for
/// its duration (no lock is held across disk work); a second caller waits
/// until it is given back.
pub(crate) struct StoreSlot {
    slot: Mutex<Option<Store>>,
    free: Condvar,
}

impl StoreSlot {
    pub(crate) fn new(store: Store) -> StoreSlot {
        StoreSlot {
            slot: Mutex::new(Some(store)),
            free: Condvar::new(),
        }
    }

    pub(crate) fn take(&self) -> Store {
        let mut slot = lock(&self.slot);
        loop {
            if let Some(s) = slot.take() {
                return s;
            }
            slot = self.free.wait(slot).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub(crate) fn put(&self, s: Store) {
        *lock(&self.slot) = Some(s);
        self.free.notify_one();
    }
}

impl Store {
    pub(crate) fn is_open(&self) -> bool {
        self.db.is_some()
    }

    /// What the positions file holds.
    pub(crate) fn marks(&self) -> &BTreeMap<String, Mark> {
        &self.marks
    }

    /// Tries to open a store that could not be opened before; once open,
    /// `found` lists its backlog for the lanes (a read under the queue
    /// lock, the only one: it happens once per reopening).
    pub(crate) fn reopen(&mut self, report: &Reporter, found: impl FnOnce(&Db)) {
        match Db::open(&self.path) {
            Ok((db, opened)) => {
                if let Some((aside, reason)) = opened.moved_aside {
                    tracing::error!(moved_to = %aside.display(), %reason, "spool was unreadable");
                }
                found(&db);
                if let Ok(n) = db.row_count() {
                    report.counters.disk_rows.store(n as i64, Ordering::Relaxed);
                }
                self.db = Some(db);
            }
            Err(e) => {
                let (reason, detail) = spool_error_reason(&e, &self.path);
                self.health.still_closed(reason, detail, report);
            }
        }
    }

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
    pub(crate) fn write_positions(&mut self, epoch: u64, clean: bool) -> Result<(), Failure> {
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

    /// At start: reserves ahead for every known stream (`marks`; a stream
    /// without a slot gets a free one) in `epoch`, marking the run unclean
    /// until a clean stop says otherwise. Once that is on disk, the
    /// positions a spool of the first version kept in its database are
    /// removed: the positions file is the only authority, so the old copy
    /// must not outlive it.
    pub(crate) fn reserve_ahead(
        &mut self,
        epoch: u64,
        marks: Vec<(String, Mark)>,
    ) -> Result<(), Failure> {
        for (key, mut mark) in marks {
            mark.slot = mark.slot.or_else(|| self.free_slot());
            self.marks.insert(key, mark);
        }
        self.write_positions(epoch, false)?;
        if let Some(d) = self.db.as_mut() {
            if let Err(e) = d.forget_positions() {
                tracing::warn!(error = %e, "could not remove old sequence positions from the spool");
            }
        }
        Ok(())
    }

    /// Forgets every mark: a run whose positions cannot be written counts
    /// in an epoch of its own.
    pub(crate) fn forget_marks(&mut self) {
        self.marks.clear();
    }

    /// Reserves numbers for the `wanted` streams (their marks without
    /// slots: each keeps its slot, or gets a free one) in `epoch`; with
    /// `make_durable`, the marks of every other stream are forgotten (the
    /// epoch is new on disk). None: nothing to reserve. A failed write
    /// leaves the marks as they were.
    pub(crate) fn reserve(
        &mut self,
        epoch: u64,
        make_durable: bool,
        wanted: Vec<(String, Mark)>,
    ) -> Option<Result<(), Failure>> {
        if make_durable {
            self.marks.clear();
        }
        let mut reserve: Vec<(String, Mark)> = Vec::with_capacity(wanted.len());
        for (key, mut mark) in wanted {
            mark.slot = self
                .marks
                .get(&key)
                .and_then(|m| m.slot)
                .or_else(|| self.free_slot_except(&reserve));
            reserve.push((key, mark));
        }
        if reserve.is_empty() && !make_durable {
            return None;
        }
        let before = self.marks.clone();
        for (k, m) in reserve {
            self.marks.insert(k, m);
        }
        let written = self.write_positions(epoch, false);
        if written.is_err() {
            self.marks = before;
        }
        Some(written)
    }

    /// Takes the used-marks file over for `epoch`; None (logged) leaves
    /// the run without exact marks (a read-only card, say).
    pub(crate) fn take_over_used(&self, epoch: u64) -> Option<UsedMarks> {
        create_used(&used::path_for(&self.path), epoch, &used::boot_id())
    }

    /// One commit of new rows and deletions, with the meta values that go
    /// with them (a sign of life while degraded, the dropped total when it
    /// changed); counts the rows on disk and write errors.
    pub(crate) fn write(&mut self, rows: &[NewRow<'_>], del: &[i64], report: &Reporter) -> Written {
        // Sequence positions live in the positions file alone (a stale
        // copy here could be trusted one day and reuse numbers).
        let mut meta: Vec<(String, i64)> = Vec::new();
        if self.health.is_degraded() {
            // Proves the store writable again even with nothing to write.
            meta.push(("alive".into(), now_ms()));
        }
        let dropped = report.counters.dropped_total();
        if dropped != self.dropped_written {
            meta.push(("dropped".into(), dropped as i64));
        }
        let mut out = Written {
            ids: None,
            deleted_ok: false,
            failure: None,
        };
        if rows.is_empty() && del.is_empty() && meta.is_empty() {
            return out;
        }
        let db = self.db.as_mut().expect("a usable store is open");
        let done = commit_or_free(
            db,
            (rows, del, &meta),
            |db, r, d, m| db.commit(r, d, m),
            |db| {
                let _ = db.checkpoint();
            },
        );
        out.deleted_ok = done.deleted.is_some();
        let n_deleted = done.deleted.unwrap_or(0);
        let counters = &report.counters;
        match done.written {
            Ok(ids) => {
                out.ids = Some(ids);
                self.dropped_written = dropped;
                let net = rows.len() as i64 - n_deleted as i64;
                counters.disk_rows.fetch_add(net, Ordering::Relaxed);
            }
            Err(e) => {
                if n_deleted > 0 {
                    counters
                        .disk_rows
                        .fetch_sub(n_deleted as i64, Ordering::Relaxed);
                }
                counters.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, records = rows.len(), "spool write failed; records stay in memory");
                out.failure = Some(sql_reason(&e, &self.path));
            }
        }
        #[cfg(feature = "plant-faults")]
        if let (Some(ids), Some(db)) = (&out.ids, self.db.as_mut()) {
            super::plant::on_disk(db, rows, ids, counters);
        }
        out
    }

    /// One pass of the time correction over the rows of `boot` on disk
    /// (clock base `base`, of generation `gen`), [`CORRECT_CHUNK`] rows at
    /// most. Returns (`gen`, whether the pass is finished), or None when
    /// it failed: not a failure of the store (the rows stay as they are, a
    /// row read before its correction is corrected as it is read, the pass
    /// is tried again next round, and a full or failing card shows in the
    /// writes themselves).
    pub(crate) fn correct_pass(
        &mut self,
        (boot, base, gen): (&str, i64, u64),
        report: &Reporter,
    ) -> Option<(u64, bool)> {
        if self.correct_at.0 != gen {
            self.correct_at = (gen, 0);
        }
        let db = self.db.as_mut().expect("a usable store is open");
        match db.correct_boot(boot, base, self.correct_at.1, CORRECT_CHUNK) {
            Ok(r) => {
                self.correct_at.1 = r.last_id;
                if std::mem::take(&mut self.correct_failing) {
                    tracing::info!("correcting the time of stored readings works again");
                }
                report.count_corrected(
                    Corrected {
                        records: r.corrected,
                        unrewritable: r.unrewritable,
                    },
                    "disk",
                );
                Some((gen, r.seen < CORRECT_CHUNK as u64))
            }
            Err(e) => {
                if !std::mem::replace(&mut self.correct_failing, true) {
                    tracing::error!(error = %e, "correcting the time of stored readings failed; tried again every round (logged once)");
                }
                report.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Keeps the store within the spool's caps (see [`Caps::enforce`]).
    pub(crate) fn enforce_caps(
        &mut self,
        cfg: &SpoolConfig,
        now: Instant,
        clock: &ClockCache,
        report: &Reporter,
    ) -> Result<(), SpoolError> {
        let Some(db) = self.db.as_mut() else {
            return Ok(());
        };
        self.caps.enforce(db, cfg, (now, clock), report)
    }

    /// Reads a window of one backlog stream of `sink` after `after`, at
    /// most `limit` rows (good and bad); a reader in WAL mode is not
    /// blocked by writers. Nothing when the store is not open.
    pub(crate) fn window(
        &self,
        sink: &str,
        key: &StreamKey,
        after: Option<u64>,
        limit: usize,
    ) -> rusqlite::Result<(Vec<Row>, Vec<BadRow>)> {
        match self.db.as_ref() {
            Some(d) => d.window(sink, key, after, limit),
            None => Ok((Vec::new(), Vec::new())),
        }
    }

    /// The degraded reason an SQLite error means for this store.
    pub(crate) fn sql_failure(&self, e: &rusqlite::Error) -> Failure {
        sql_reason(e, &self.path)
    }

    /// Ends a round (see [`Health::settle`]).
    pub(crate) fn settle(
        &mut self,
        failure: Option<Failure>,
        wrote: bool,
        now: Instant,
        report: &Reporter,
    ) -> Result<(), SpoolError> {
        self.health.settle(failure, wrote, now, report)
    }

    /// A clean stop: the exact next number of every stream (`exact`, by
    /// key) recorded as clean in the positions file, and the dropped total
    /// in the database. A positions file that cannot be written is an
    /// error (the next start resumes after the reserved block).
    pub(crate) fn record_clean_stop(
        &mut self,
        epoch: u64,
        exact: &[(String, u64)],
        counters: &SpoolCounters,
    ) -> Result<(), SpoolError> {
        for (k, next) in exact {
            let slot = self.marks.get(k).and_then(|m| m.slot);
            self.marks.insert(
                k.clone(),
                Mark {
                    reserved: *next,
                    used: *next as i64 - 1,
                    slot,
                },
            );
        }
        let mut result = Ok(());
        if let Err((reason, detail)) = self.write_positions(epoch, true) {
            tracing::error!(reason, %detail, "could not record exact sequence positions; the next start resumes after the reserved block");
            result = Err(SpoolError::Degraded(detail));
        }
        if let Some(db) = self.db.as_mut() {
            let pairs = vec![("dropped".into(), counters.dropped_total() as i64)];
            if let Err(e) = db.commit(&[], &[], &pairs) {
                tracing::warn!(error = %e, "could not record positions in the spool");
            }
            if let Err(e) = db.checkpoint() {
                tracing::debug!(error = %e, "checkpoint at close failed");
            }
        }
        result
    }
}

/// What [`commit_or_free`] managed: the new rows' ids (or why they could
/// not be written), and how many acknowledged rows were deleted (None: the
/// deletion did not happen, the rows are still on disk).
struct Committed {
    written: rusqlite::Result<Vec<i64>>,
    deleted: Option<usize>,
}

/// One commit of new rows, deletions and meta values; on a full disk, gives
/// the write-ahead log's space back (`checkpoint`) and tries the deletions
/// alone (freeing room is what a full disk needs first), then the rows.
/// `commit` is [`Db::commit`] and `checkpoint` [`Db::checkpoint`]; passed
/// in so the fallback's bookkeeping can be tested without filling a disk.
fn commit_or_free<D>(
    db: &mut D,
    (rows, del, meta): (&[NewRow<'_>], &[i64], &[(String, i64)]),
    mut commit: impl FnMut(
        &mut D,
        &[NewRow<'_>],
        &[i64],
        &[(String, i64)],
    ) -> rusqlite::Result<(Vec<i64>, usize)>,
    checkpoint: impl FnOnce(&mut D),
) -> Committed {
    match commit(db, rows, del, meta) {
        Ok((ids, n)) => Committed {
            written: Ok(ids),
            deleted: Some(n),
        },
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) => {
            checkpoint(db);
            // Only a deletion that committed counts: rows still on disk
            // must stay out of the backlog (`gone_rows`), or the run sends
            // them again.
            let deleted = if del.is_empty() {
                Some(0)
            } else {
                commit(db, &[], del, &[]).ok().map(|(_, n)| n)
            };
            Committed {
                written: commit(db, rows, &[], meta).map(|(ids, _)| ids),
                deleted,
            }
        }
        Err(e) => Committed {
            written: Err(e),
            deleted: None,
        },
    }
}

/// Takes over the used-marks file for `epoch`; None (logged) leaves the run
/// without exact marks (a read-only card, say).
fn create_used(path: &std::path::Path, epoch: u64, boot: &str) -> Option<UsedMarks> {
    match UsedMarks::create(path, epoch, boot) {
        Ok(u) => Some(u),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "no exact last-used marks this run");
            None
        }
    }
}
