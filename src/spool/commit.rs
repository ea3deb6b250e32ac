//! The commit round, the one owner of the store. Each round takes its work
//! out of the memory queue under the lock (records to write, rows to
//! delete, numbers to reserve, backlog to read), does the disk work with
//! the lock released, and gives the results back; it keeps the spool within
//! its caps, and the last round at shutdown marks it clean. Blocking: it
//! runs on the commit task's blocking thread ([`Spool::run_flusher`]),
//! never on a source's or a sink's task, and never holds the queue lock
//! across a disk write (the one read under it: listing a reopened store's
//! streams, in `health.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::backlog::{self, ReadWant};
use super::caps::EVENT_SHARE;
use super::db::{Db, NewRow, StreamKey};
use super::health::{io_reason, sql_reason, Degraded};
use super::positions::{self, Mark, Positions};
use super::queue::{due, needs_reservation, Entry, InFlight, Link, SEQ_BLOCK};
use super::{lock, used, DropReason, Queue, Spool, SpoolError};
use crate::model::now_ms;

/// The disk side, owned by whoever runs a commit round.
pub(super) struct Store {
    pub(super) path: PathBuf,
    pub(super) pos_path: PathBuf,
    pub(super) db: Option<Db>,
    pub(super) degraded: Option<Degraded>,
    pub(super) next_try: Instant,
    pub(super) last_age_check: Option<Instant>,
    /// The wall clock's offset from `CLOCK_BOOTTIME` (ms) at the first age
    /// check with a synchronised clock: a later offset more than
    /// [`super::caps::MAX_AGE_STEP_MS`] away is a step, and the wall time
    /// is then not trusted to age records (see `enforce_caps`).
    pub(super) age_base: Option<i64>,
    /// A step was seen and logged (once until the offset comes back).
    pub(super) age_step_seen: bool,
    /// What the positions file holds.
    pub(super) marks: BTreeMap<String, Mark>,
    /// `dropped_total` last written to the database.
    pub(super) dropped_written: u64,
    /// The clock correction's pass over the rows: (the base's generation,
    /// the last row id done).
    pub(super) correct_at: (u64, i64),
    /// The last disk correction pass failed (logged once until one works).
    pub(super) correct_failing: bool,
}

/// Rows corrected per commit round (one transaction), so that a large
/// backlog does not hold up the round; rows read before their pass are
/// corrected as they are read.
pub(super) const CORRECT_CHUNK: usize = 2000;

impl Spool {
    pub(super) fn take_store(&self) -> Store {
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

    pub(super) fn put_store(&self, s: Store) {
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
        let (epoch, make_durable, lane_names, correct) = {
            let mut q = lock(&self.q);
            let q = &mut *q;
            #[cfg(feature = "plant-faults")]
            if all {
                super::plant::tail(q);
            }
            // The clock is looked at here too, so that a sync is acted on
            // even when no reading comes.
            self.observe_clock(q);
            let correct = match (q.time.disk_pending, q.time.base) {
                (true, Some(base)) => Some((q.time.boot.clone(), base, q.time.gen)),
                _ => None,
            };
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
                    // telemetry first, events past their share too
                    // (counted).
                    let limit = memory_max.saturating_mul(2);
                    let mut shed = 0u64;
                    while lane.live.len() > limit {
                        lane.live.pop_front();
                        shed += 1;
                    }
                    let events_limit = (limit / EVENT_SHARE as usize).max(1);
                    while lane.events.len() > events_limit {
                        lane.events.pop_front();
                        shed += 1;
                    }
                    if shed > 0 {
                        self.count_drop(DropReason::WriteFailed, shed);
                    }
                }
                if store.db.is_some() {
                    backlog::wants(li, lane, &mut reads);
                }
            }
            #[cfg(feature = "plant-faults")]
            if !all {
                super::plant::spooled(q, &mut writes);
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
            (q.epoch, make_durable, lane_names, correct)
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
        // An epoch now on disk takes the used-marks file over (until now it
        // kept the marks of the epoch the positions file named).
        let fresh_used = if reserved_ok && make_durable {
            super::open::create_used(&used::path_for(&store.path), epoch, &used::boot_id())
        } else {
            None
        };
        let mut written: Option<Vec<i64>> = None;
        let mut deleted_ok = false;
        let mut disk_pass: Option<(u64, bool)> = None;
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
                    boot: &e.boot,
                    boottime: e.boottime,
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
                let done = commit_or_free(
                    db,
                    (&rows, &del, &meta),
                    |db, r, d, m| db.commit(r, d, m),
                    |db| {
                        let _ = db.checkpoint();
                    },
                );
                deleted_ok = done.deleted.is_some();
                let n_deleted = done.deleted.unwrap_or(0);
                match done.written {
                    Ok(ids) => {
                        written = Some(ids);
                        store.dropped_written = dropped;
                        let net = rows.len() as i64 - n_deleted as i64;
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
                #[cfg(feature = "plant-faults")]
                if let (Some(ids), Some(db)) = (&written, store.db.as_mut()) {
                    super::plant::on_disk(db, &rows, ids, &self.counters);
                }
            }
            if let (None, Some((boot, base, gen))) = (&failure, &correct) {
                if store.correct_at.0 != *gen {
                    store.correct_at = (*gen, 0);
                }
                let db = store.db.as_mut().expect("usable means open");
                match db.correct_boot(boot, *base, store.correct_at.1, CORRECT_CHUNK) {
                    Ok(r) => {
                        store.correct_at.1 = r.last_id;
                        if std::mem::take(&mut store.correct_failing) {
                            tracing::info!("correcting the time of stored readings works again");
                        }
                        self.count_corrected(
                            super::retime::Corrected {
                                records: r.corrected,
                                unrewritable: r.unrewritable,
                            },
                            "disk",
                        );
                        let finished = r.seen < CORRECT_CHUNK as u64;
                        if !finished {
                            self.wake.notify_one();
                        }
                        disk_pass = Some((*gen, finished));
                    }
                    // Not a failure of the store: the rows stay as they are
                    // (a row read before its correction is corrected as it
                    // is read), the pass is tried again next round, and a
                    // full or failing card shows in the writes themselves.
                    Err(e) => {
                        if !std::mem::replace(&mut store.correct_failing, true) {
                            tracing::error!(error = %e, "correcting the time of stored readings failed; tried again every round (logged once)");
                        }
                        self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
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
        let read_results = backlog::read(store, &reads, &lane_names, &mut failure);

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
                if fresh_used.is_some() {
                    q.used = fresh_used;
                }
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
            let timed = backlog::give_back(q, read_results, &mut corrupt);
            self.count_corrected(timed, "disk read");
            if let Some((gen, true)) = disk_pass {
                if q.time.gen == gen {
                    q.time.disk_pending = false;
                }
            }
        }
        self.report_corrupt(corrupt);

        // Degraded or restored.
        let wrote = usable && (written.is_some() || reserved_ok || deleted_ok);
        self.settle(store, failure, wrote, now)
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

/// What [`commit_or_free`] managed: the new rows' ids (or why they could
/// not be written), and how many acknowledged rows were deleted (None: the
/// deletion did not happen, the rows are still on disk).
pub(super) struct Committed {
    pub written: rusqlite::Result<Vec<i64>>,
    pub deleted: Option<usize>,
}

/// One commit of new rows, deletions and meta values; on a full disk, gives
/// the write-ahead log's space back (`checkpoint`) and tries the deletions
/// alone (freeing room is what a full disk needs first), then the rows.
/// `commit` is [`Db::commit`] and `checkpoint` [`Db::checkpoint`]; passed in so the fallback's bookkeeping can
/// be tested without filling a disk.
pub(super) fn commit_or_free<D>(
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

fn stream_of(e: &Entry) -> StreamKey {
    StreamKey {
        kind: e.kind,
        device: e.device.to_string(),
        epoch: e.epoch,
    }
}

impl Store {
    /// A slot in the used-marks file no stream has.
    pub(super) fn free_slot(&self) -> Option<u32> {
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
    pub(super) fn write_positions(
        &mut self,
        epoch: u64,
        clean: bool,
    ) -> Result<(), (&'static str, String)> {
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

#[cfg(test)]
mod tests;
