//! What a commit round takes out of the queue ([`Queue::take_work`]: records
//! to write, rows to delete, numbers to reserve, backlog to read) and what
//! it gives back ([`Queue::give_back`]: rows written, deletions done,
//! reservations made, batches read ahead). Both run under the queue lock
//! and do no I/O; the round does the disk work between them, with the lock
//! released (`commit.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lane::{Entry, InFlight, LaneQueue, Link};
use super::seq::{needs_reservation, SEQ_BLOCK};
use super::Queue;
use crate::spool::db::{BadRow, Row, StreamKey};
use crate::spool::positions::{self, Mark};
use crate::spool::report::{DropReason, Reporter, EVENT_SHARE};
use crate::spool::used::UsedMarks;

/// What the round may do this time, as the store and the spool's config
/// say.
pub(crate) struct WorkRules {
    /// The last round at shutdown: every unacknowledged record is written.
    pub(crate) all: bool,
    /// The store can be written this round.
    pub(crate) usable: bool,
    /// The store is degraded (whether or not it is tried this round).
    pub(crate) degraded: bool,
    /// The store is open (its backlog can be read).
    pub(crate) open: bool,
    /// `spool.memory_max`.
    pub(crate) memory_max: usize,
    /// `spool.spill_after`.
    pub(crate) spill_after: Duration,
    pub(crate) now: Instant,
}

/// A lane's backlog read wanted this round.
pub(crate) struct ReadWant {
    /// The lane's position in the queue, and its name in the store.
    pub(crate) lane: usize,
    pub(crate) sink: &'static str,
    /// The lane's generation: a read for a lane that started over since is
    /// thrown away.
    pub(crate) gen: u64,
    /// The streams with their cursors (the last seq handed out).
    pub(crate) streams: Vec<(StreamKey, Option<u64>)>,
    /// Records per batch.
    pub(crate) max: usize,
}

/// What one stream's read found.
pub(crate) struct ReadResult {
    pub(crate) lane: usize,
    pub(crate) gen: u64,
    pub(crate) key: StreamKey,
    pub(crate) good: Vec<Row>,
    pub(crate) bad: Vec<BadRow>,
    /// The stream has nothing more.
    pub(crate) done: bool,
}

/// The round's work, taken out of the queue.
pub(crate) struct Work {
    /// Records to write: for one lane (its position), or for every lane
    /// (None: a record committed before it is sent).
    pub(crate) writes: Vec<(Option<usize>, Entry)>,
    /// Acknowledged rows to delete, per lane.
    pub(crate) deletes: Vec<(usize, Vec<i64>)>,
    /// Streams whose numbers must be reserved: (key, mark without its
    /// slot; the store gives the slots).
    pub(crate) reserve: Vec<(String, Mark)>,
    pub(crate) reads: Vec<ReadWant>,
    pub(crate) epoch: u64,
    /// The epoch is not on disk yet and the store can take it: every
    /// stream is reserved anew.
    pub(crate) make_durable: bool,
    /// Each lane's name in the store, by position.
    pub(crate) lane_names: Vec<&'static str>,
    /// The rows on disk to correct, when the clock's base is known: (boot,
    /// base, the base's generation).
    pub(crate) correct: Option<(Arc<str>, i64, u64)>,
}

/// What the round's disk work did, given back to the queue.
pub(crate) struct Done<'a> {
    /// The new rows' ids, in the order of [`Work::writes`] (a record for
    /// every lane has one per lane); None: nothing was written.
    pub(crate) written: Option<Vec<i64>>,
    pub(crate) deleted_ok: bool,
    pub(crate) reserved_ok: bool,
    /// The store failed this round.
    pub(crate) failed: bool,
    /// The used-marks file, taken over by an epoch just made durable.
    pub(crate) fresh_used: Option<UsedMarks>,
    /// What the positions file holds now.
    pub(crate) marks: &'a BTreeMap<String, Mark>,
    pub(crate) reads: Vec<ReadResult>,
    /// The disk correction's pass: (the base's generation, finished).
    pub(crate) disk_pass: Option<(u64, bool)>,
}

/// Whether a record has waited in memory long enough under the spill
/// policy.
fn due(born: Instant, now: Instant, spill_after: Duration) -> bool {
    now.duration_since(born) >= spill_after
}

fn stream_of(e: &Entry) -> StreamKey {
    StreamKey {
        kind: e.kind,
        device: e.device.to_string(),
        epoch: e.epoch,
    }
}

impl Queue {
    /// Takes the round's work out of the queue. A degraded store keeps
    /// memory bounded instead: what is shed is counted.
    pub(crate) fn take_work(&mut self, rules: &WorkRules, report: &Reporter) -> Work {
        let correct = match (self.time.disk_pending, self.time.base) {
            (true, Some(base)) => Some((self.time.boot.clone(), base, self.time.gen)),
            _ => None,
        };
        let mut work = Work {
            writes: Vec::new(),
            deletes: Vec::new(),
            reserve: Vec::new(),
            reads: Vec::new(),
            epoch: self.epoch,
            make_durable: !self.epoch_durable && rules.usable,
            lane_names: self.lanes.iter().map(|l| l.id.name()).collect(),
            correct,
        };
        self.take_wal(rules, &mut work);
        for (li, lane) in self.lanes.iter_mut().enumerate() {
            if rules.usable {
                take_spills(li, lane, rules, &mut work);
            } else if rules.degraded {
                shed(lane, rules.memory_max, report);
            }
            if rules.open {
                wants(li, lane, &mut work.reads);
            }
        }
        work.reserve = self.reservations(work.make_durable);
        work
    }

    /// Records waiting for their commit: written when the store can be,
    /// else (a degraded store, or the last round) sent from memory.
    fn take_wal(&mut self, rules: &WorkRules, work: &mut Work) {
        if rules.usable {
            for e in self.wal_pending.iter_mut().filter(|e| !e.writing) {
                e.writing = true;
                work.writes.push((None, e.clone_for_lane()));
            }
        } else if !self.wal_pending.is_empty() && (rules.degraded || rules.all) {
            for e in std::mem::take(&mut self.wal_pending) {
                for lane in self.lanes.iter_mut() {
                    lane.enqueue(e.clone_for_lane());
                    lane.notify.notify_one();
                }
            }
        }
    }

    /// The streams whose numbers must be reserved now: all of them when
    /// the epoch is made durable, else those running low (durable epochs
    /// only).
    fn reservations(&self, make_durable: bool) -> Vec<(String, Mark)> {
        if !(self.epoch_durable || make_durable) {
            return Vec::new();
        }
        self.seqs
            .iter()
            .filter(|(_, s)| make_durable || needs_reservation(s))
            .map(|((dev, kind), s)| {
                let mark = Mark {
                    reserved: s.next + SEQ_BLOCK,
                    used: s.next as i64 - 1,
                    slot: None,
                };
                (positions::stream_key(*kind, dev), mark)
            })
            .collect()
    }

    /// Gives the round's results back: written records leave memory (or
    /// learn their row), acknowledged rows leave the skip list once
    /// deleted, reserved numbers may be sent, and the backlog read becomes
    /// ready batches. Returns the damaged rows found, by reason, for the
    /// caller to report once the lock is released.
    pub(crate) fn give_back(
        &mut self,
        work: Work,
        done: Done<'_>,
        report: &Reporter,
    ) -> BTreeMap<&'static str, u64> {
        match &done.written {
            Some(ids) => self.place_written(&work.writes, ids, report),
            None => self.unmark_writing(),
        }
        for (li, rows) in work.deletes {
            let lane = &mut self.lanes[li];
            if done.deleted_ok {
                for r in rows {
                    lane.gone_rows.remove(&r);
                }
            } else {
                lane.to_delete.extend(rows);
            }
        }
        if done.reserved_ok {
            self.take_reservations(done.marks, done.fresh_used);
        } else if done.failed && self.epoch_durable {
            self.reserve_failing = true;
        }
        let mut corrupt = BTreeMap::new();
        let timed = self.file_reads(done.reads, &mut corrupt);
        report.count_corrected(timed, "disk read");
        if let Some((gen, true)) = done.disk_pass {
            if self.time.gen == gen {
                self.time.disk_pending = false;
            }
        }
        corrupt
    }

    /// Records written this round: queued ones leave memory (they are
    /// backlog now), ones in flight learn their row, and records committed
    /// before they are sent go to every lane with their rows.
    fn place_written(&mut self, writes: &[(Option<usize>, Entry)], ids: &[i64], report: &Reporter) {
        let mut ids = ids.iter().copied();
        let mut lane_rows: Vec<HashMap<u64, i64>> = vec![HashMap::new(); self.lanes.len()];
        let mut wal_rows: HashMap<u64, Vec<i64>> = HashMap::new();
        for (lane, e) in writes {
            match lane {
                Some(li) => {
                    if let Some(id) = ids.next() {
                        lane_rows[*li].insert(e.rid, id);
                    }
                }
                None => {
                    let rows: Vec<i64> = ids.by_ref().take(self.lanes.len()).collect();
                    wal_rows.insert(e.rid, rows);
                }
            }
        }
        let mut spilled = 0u64;
        for (lane, map) in self.lanes.iter_mut().zip(lane_rows.iter_mut()) {
            spilled += spilled_from(lane, map);
        }
        report
            .counters
            .spilled
            .fetch_add(spilled, Ordering::Relaxed);
        let pending = std::mem::take(&mut self.wal_pending);
        for e in pending {
            match wal_rows.remove(&e.rid) {
                Some(rows) => {
                    for (li, row) in rows.into_iter().enumerate() {
                        let lane = &mut self.lanes[li];
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
                None => self.wal_pending.push(e),
            }
        }
    }

    /// Nothing was written: the records stay where they are and are tried
    /// again.
    fn unmark_writing(&mut self) {
        for e in self.wal_pending.iter_mut() {
            e.writing = false;
        }
        for lane in self.lanes.iter_mut() {
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

    /// The reservations are on disk (`marks`): the epoch is durable, the
    /// numbers below each mark may be sent, and an epoch just made durable
    /// takes the used-marks file over.
    fn take_reservations(&mut self, marks: &BTreeMap<String, Mark>, fresh_used: Option<UsedMarks>) {
        self.epoch_durable = true;
        self.reserve_failing = false;
        if fresh_used.is_some() {
            self.used = fresh_used;
        }
        let Queue { seqs, used, .. } = self;
        for ((dev, kind), s) in seqs.iter_mut() {
            if let Some(m) = marks.get(&positions::stream_key(*kind, dev)) {
                s.durable = s.durable.max(m.reserved);
                s.slot = m.slot;
                if let (Some(slot), Some(u)) = (s.slot, used.as_mut()) {
                    u.set(slot, s.mark);
                }
            }
        }
        for lane in &self.lanes {
            lane.notify.notify_one();
        }
    }

    /// Files what the reads found into the lanes: good rows become ready
    /// batches, bad rows are counted in `corrupt` by reason and queued for
    /// deletion. A read for a lane that started over meanwhile is
    /// discarded.
    ///
    /// Rows of this boot taken unsynchronised are corrected here when the
    /// clock's base is known (`retime.rs`); returns how many.
    fn file_reads(
        &mut self,
        reads: Vec<ReadResult>,
        corrupt: &mut BTreeMap<&'static str, u64>,
    ) -> crate::spool::report::Corrected {
        let mut next_id = self.next_batch_id;
        let mut timed = crate::spool::report::Corrected::default();
        for r in reads {
            let ReadResult {
                lane: li,
                gen,
                key,
                mut good,
                bad,
                done,
            } = r;
            if self.lanes[li].gen != gen {
                continue;
            }
            let timing = self.time_rows(&mut good, &mut timed);
            let lane = &mut self.lanes[li];
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
            lane.add_backlog(&key, good, timing, &mut next_id);
            let c = lane.backlog[k].streams.entry(key).or_default();
            // Bad rows carry no trustworthy seq; the cursor stays at the
            // last good one, and the bad rows are skipped as gone.
            c.after = last;
            c.exhausted = done;
            lane.notify.notify_one();
        }
        self.next_batch_id = next_id;
        timed
    }
}

/// A usable store: the lane's records due on disk (all at the last round,
/// all while the link is down, those past `memory_max`, those waiting
/// longer than `spill_after`), and its acknowledged rows to delete.
fn take_spills(li: usize, lane: &mut LaneQueue, rules: &WorkRules, work: &mut Work) {
    let (all, now, spill_after) = (rules.all, rules.now, rules.spill_after);
    let down = lane.link == Link::Down;
    for qu in [&mut lane.events, &mut lane.live] {
        let over = qu.len().saturating_sub(rules.memory_max);
        for (i, e) in qu.iter_mut().enumerate() {
            if e.row.is_none()
                && !e.writing
                && (all || down || i < over || due(e.born, now, spill_after))
            {
                e.writing = true;
                work.writes.push((Some(li), e.clone_for_lane()));
            }
        }
    }
    for f in lane.inflight.values_mut() {
        if let InFlight::Memory(v) = f {
            for e in v.iter_mut() {
                if e.row.is_none() && !e.writing && (all || due(e.born, now, spill_after)) {
                    e.writing = true;
                    work.writes.push((Some(li), e.clone_for_lane()));
                }
            }
        }
    }
    if !lane.to_delete.is_empty() {
        work.deletes.push((li, std::mem::take(&mut lane.to_delete)));
    }
}

/// Nothing can be written: keeps memory bounded, oldest telemetry first,
/// events past their share too (counted).
fn shed(lane: &mut LaneQueue, memory_max: usize, report: &Reporter) {
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
        report.count_drop(DropReason::WriteFailed, shed);
    }
}

/// Records which streams of lane `li` want reading this round.
fn wants(li: usize, lane: &LaneQueue, reads: &mut Vec<ReadWant>) {
    for k in 0..2 {
        if lane.wants_backlog(k) {
            let streams: Vec<(StreamKey, Option<u64>)> = lane.backlog[k]
                .streams
                .iter()
                .filter(|(_, c)| !c.exhausted)
                .map(|(key, c)| (key.clone(), c.after))
                .collect();
            reads.push(ReadWant {
                lane: li,
                sink: lane.id.name(),
                gen: lane.gen,
                streams,
                max: lane.max_records.max(1),
            });
        }
    }
}

/// The lane's records written this round (`map`: record id to row):
/// queued ones leave memory, ones in flight learn their row; a row whose
/// record is gone meanwhile (acknowledged or set aside) is deleted.
/// Returns how many records were spilled.
fn spilled_from(lane: &mut LaneQueue, map: &mut HashMap<u64, i64>) -> u64 {
    let mut spilled = 0u64;
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
    for (_, id) in map.drain() {
        lane.gone_rows.insert(id);
        lane.to_delete.push(id);
    }
    for k in keys {
        lane.stream_has_rows(&k);
    }
    lane.notify.notify_one();
    spilled
}
