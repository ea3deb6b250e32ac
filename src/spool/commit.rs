//! The commit round, where the queue and the store meet. Each round takes
//! its work out of the queue under the lock (records to write, rows to
//! delete, numbers to reserve, backlog to read), does the disk work with
//! the lock released, gives the results back, and ends by settling the
//! store's health. Blocking: it runs on the commit task's blocking thread
//! ([`crate::spool::Spool::run_flusher`]), never on a source's or a sink's
//! task, and never holds the queue lock across a disk write (the one read
//! under it: listing a reopened store's backlog).
//!
//! Damaged rows met while reading the backlog are counted, reported and
//! deleted, never sent and never read again.

use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::Notify;

use super::config::SpoolConfig;
use super::db::NewRow;
use super::error::SpoolError;
use super::queue::work::{Done, ReadResult, ReadWant, Work, WorkRules};
use super::queue::{Queue, READY_TARGET};
use super::report::{lock, Reporter};
use super::retime::ClockCache;
use super::store::{Failure, Store};
use super::used::UsedMarks;

/// What a commit round works with: the spool's parts but the store, which
/// the caller took out of its slot for the round.
pub(super) struct Round<'a> {
    pub(super) cfg: &'a SpoolConfig,
    pub(super) queue: &'a Mutex<Queue>,
    pub(super) report: &'a Reporter,
    pub(super) clock: &'a ClockCache,
    /// Wakes the commit task for another round soon.
    pub(super) wake: &'a Notify,
}

/// What the disk work of a round did, before the backlog reads.
struct DiskWork {
    failure: Option<Failure>,
    reserved_ok: bool,
    fresh_used: Option<UsedMarks>,
    written: Option<Vec<i64>>,
    deleted_ok: bool,
    disk_pass: Option<(u64, bool)>,
}

impl Round<'_> {
    /// One commit round: writes what must go to disk, deletes what was
    /// acknowledged, reserves sequence numbers, enforces the caps and reads
    /// the backlog ahead. `all` writes every unacknowledged record in
    /// memory (shutdown).
    pub(super) fn run(&self, store: &mut Store, all: bool) -> Result<(), SpoolError> {
        let now = Instant::now();
        let may_try = store.health.may_try(all, now);
        if !store.is_open() && may_try {
            self.reopen(store);
        }
        let usable = store.is_open() && may_try;

        // 1. Take the work out of the queue.
        let mut work = self.take_work(store, all, usable, now);

        // 2. Disk work, with no lock held.
        let disk = self.disk_work(store, &mut work, usable, now);
        let mut failure = disk.failure;
        let reads = read_backlog(store, &work.reads, &mut failure);

        // 3. Results back into the queue.
        let wrote = usable && (disk.written.is_some() || disk.reserved_ok || disk.deleted_ok);
        let corrupt = {
            let done = Done {
                written: disk.written,
                deleted_ok: disk.deleted_ok,
                reserved_ok: disk.reserved_ok,
                failed: failure.is_some(),
                fresh_used: disk.fresh_used,
                marks: store.marks(),
                reads,
                disk_pass: disk.disk_pass,
            };
            lock(self.queue).give_back(work, done, self.report)
        };
        self.report.report_corrupt(corrupt);

        // 4. Degraded or restored.
        store.settle(failure, wrote, now, self.report)
    }

    /// Reopens a store that could not be opened, and notes its backlog in
    /// every lane.
    fn reopen(&self, store: &mut Store) {
        store.reopen(self.report, |db| {
            lock(self.queue).note_backlog(|lane, kind| db.streams(lane.name(), kind).ok());
        });
    }

    fn take_work(&self, store: &Store, all: bool, usable: bool, now: Instant) -> Work {
        let mut q = lock(self.queue);
        #[cfg(feature = "plant-faults")]
        if all {
            super::plant::tail(&mut q);
        }
        // The clock is looked at here too, so that a sync is acted on even
        // when no reading comes.
        q.see_clock(self.clock, self.report, self.wake);
        let rules = WorkRules {
            all,
            usable,
            degraded: store.health.is_degraded(),
            open: store.is_open(),
            memory_max: self.cfg.memory_max.as_usize(),
            spill_after: self.cfg.spill_after,
            now,
        };
        #[allow(unused_mut)]
        let mut work = q.take_work(&rules, self.report);
        #[cfg(feature = "plant-faults")]
        if !all {
            super::plant::spooled(&mut q, &mut work.writes);
        }
        work
    }

    /// Reserves numbers (the positions file first: a number is sent only
    /// once it is reserved on disk), then, when the store is usable and
    /// that worked, writes and deletes rows, corrects the time of a chunk
    /// of rows, and keeps the caps.
    fn disk_work(
        &self,
        store: &mut Store,
        work: &mut Work,
        usable: bool,
        now: Instant,
    ) -> DiskWork {
        let mut out = DiskWork {
            failure: None,
            reserved_ok: false,
            fresh_used: None,
            written: None,
            deleted_ok: false,
            disk_pass: None,
        };
        let wanted = std::mem::take(&mut work.reserve);
        match store.reserve(work.epoch, work.make_durable, wanted) {
            Some(Ok(())) => out.reserved_ok = true,
            Some(Err(f)) => out.failure = Some(f),
            None => {}
        }
        // An epoch just put on disk takes the used-marks file over (until
        // then the file keeps the marks of the epoch the positions file
        // named before).
        if out.reserved_ok && work.make_durable {
            out.fresh_used = store.take_over_used(work.epoch);
        }
        if !usable || out.failure.is_some() {
            return out;
        }
        let rows = new_rows(work);
        let del: Vec<i64> = work
            .deletes
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        let written = store.write(&rows, &del, self.report);
        out.written = written.ids;
        out.deleted_ok = written.deleted_ok;
        out.failure = written.failure;
        if let (None, Some((boot, base, gen))) = (&out.failure, &work.correct) {
            out.disk_pass = store.correct_pass((boot, *base, *gen), self.report);
            if let Some((_, false)) = out.disk_pass {
                self.wake.notify_one();
            }
        }
        if out.failure.is_none() {
            if let Err(e) = store.enforce_caps(self.cfg, now, self.clock, self.report) {
                tracing::warn!(error = %e, "enforcing the spool's caps failed");
            }
        }
        out
    }
}

/// The rows to write: one per record and lane (a record committed before
/// it is sent has one for every lane, in lane order).
fn new_rows(work: &Work) -> Vec<NewRow<'_>> {
    let lanes = work.lane_names.len();
    work.writes
        .iter()
        .flat_map(|(lane, e)| {
            let lanes: Vec<usize> = match lane {
                Some(li) => vec![*li],
                None => (0..lanes).collect(),
            };
            lanes.into_iter().map(move |li| (li, e))
        })
        .map(|(li, e)| NewRow {
            sink: work.lane_names[li],
            kind: e.kind,
            device: &e.device,
            epoch: e.epoch,
            seq: e.seq,
            ts: e.ts,
            synced: e.synced,
            body: &e.body,
            boot: &e.boot,
            boottime: e.boottime,
        })
        .collect()
}

/// Reads the wanted windows of the backlog, a few batches' worth per lane.
/// A read that fails sets `failure` (if nothing failed before) and stops
/// that lane's reads.
fn read_backlog(
    store: &Store,
    reads: &[ReadWant],
    failure: &mut Option<Failure>,
) -> Vec<ReadResult> {
    let mut out: Vec<ReadResult> = Vec::new();
    if !store.is_open() {
        return out;
    }
    for want in reads {
        let limit = (want.max * 4).clamp(16, 4000);
        let mut batches = 0usize;
        for (key, after) in &want.streams {
            if batches >= READY_TARGET {
                break;
            }
            match store.window(want.sink, key, *after, limit) {
                Ok((good, bad)) => {
                    let done = good.len() + bad.len() < limit;
                    batches += good.len().div_ceil(want.max).max(1);
                    out.push(ReadResult {
                        lane: want.lane,
                        gen: want.gen,
                        key: key.clone(),
                        good,
                        bad,
                        done,
                    });
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading the backlog failed");
                    if failure.is_none() {
                        *failure = Some(store.sql_failure(&e));
                    }
                    break;
                }
            }
        }
    }
    out
}
