//! The queue's side of the time correction (`retime.rs`): looking at the
//! clock under the queue lock, so that a reading is stamped either before
//! the clock is seen synchronised (and then corrected with the others) or
//! after (and then synced), none slipping between; correcting every record
//! of this boot in memory once the sync is seen; and preparing rows read
//! back from disk.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Notify;

use super::lane::{Entry, InFlight};
use super::Queue;
use crate::clock::Now;
use crate::spool::db::Row;
use crate::spool::report::{Corrected, Notice, Reporter};
use crate::spool::retime::{retime, true_ts, unsynced_ts, ClockCache};

impl Queue {
    /// Reads the clock and acts on what it says: counts what was corrected
    /// in memory, wakes the commit task for the rows on disk, and reports
    /// what delivered records need correcting. Returns the reading.
    pub(crate) fn see_clock(
        &mut self,
        clock: &ClockCache,
        report: &Reporter,
        wake: &Notify,
    ) -> Now {
        let now = clock.now();
        let (notices, done) = self.observe_clock(now);
        if let Some(done) = done {
            report.count_corrected(done, "memory");
            if self.time.disk_pending {
                wake.notify_one();
            }
        }
        for n in notices {
            report.notice(n);
        }
        now
    }

    /// Looks at the clock (under the queue lock, so no reading is stamped
    /// in between): when it is synchronised and was not, the base is set and
    /// every record of this boot in memory is corrected; when it is not, the
    /// base is forgotten (a later sync sets it again). Returns what
    /// delivered records need reporting, and what was corrected.
    fn observe_clock(&mut self, now: Now) -> (Vec<Notice>, Option<Corrected>) {
        if !now.synced {
            self.time.base = None;
            return (Vec::new(), None);
        }
        let mut done = None;
        if self.time.base.is_none() {
            let base = now.wall_ms - now.boottime_ms;
            self.time.base = Some(base);
            self.time.gen += 1;
            self.time.disk_pending = !self.time.boot.is_empty();
            done = Some(self.correct_memory(base));
        }
        (self.time.take_corrections(), done)
    }

    /// Corrects every unsynchronised record in memory (all lanes, waiting
    /// for a commit, queued, in flight, read ahead from disk). Records in
    /// flight may already have reached their sink: they are also noted as
    /// delivered. Memory only.
    fn correct_memory(&mut self, base: i64) -> Corrected {
        let mut done = Corrected::default();
        // Every lane holds its own copy of a record: rewrite once per record.
        let mut bodies: HashMap<u64, Option<Arc<str>>> = HashMap::new();
        let mut fix = |e: &mut Entry, done: &mut Corrected| {
            if e.synced {
                return;
            }
            let ts = true_ts(e.boottime, base);
            let new = bodies.entry(e.rid).or_insert_with(|| {
                let b = retime(&e.body, ts).map(Arc::from);
                match b {
                    Some(_) => done.records += 1,
                    None => done.unrewritable += 1,
                }
                b
            });
            if let Some(b) = new {
                e.body = b.clone();
                e.ts = ts;
                e.synced = true;
            }
        };
        let Queue {
            wal_pending,
            lanes,
            time,
            ..
        } = self;
        for e in wal_pending.iter_mut() {
            fix(e, &mut done);
        }
        for lane in lanes.iter_mut() {
            for e in lane.events.iter_mut().chain(lane.live.iter_mut()) {
                fix(e, &mut done);
            }
            let ready: HashMap<u64, (usize, usize)> = lane
                .backlog
                .iter()
                .enumerate()
                .flat_map(|(k, b)| b.ready.iter().enumerate().map(move |(i, x)| (x.id, (k, i))))
                .collect();
            for (id, f) in lane.inflight.iter_mut() {
                match f {
                    InFlight::Memory(v) => {
                        for e in v.iter_mut() {
                            if !e.synced {
                                time.note_delivered(
                                    &e.device,
                                    e.kind,
                                    e.epoch,
                                    e.seq,
                                    e.ts - e.boottime,
                                );
                            }
                            fix(e, &mut done);
                        }
                    }
                    InFlight::Disk(rows, key) => match ready.get(id) {
                        // Read ahead, not yet taken: the batch's bodies
                        // (one per row, in order) are rewritten.
                        Some((k, i)) => {
                            let batch = &mut lane.backlog[*k].ready[*i];
                            for (row, body) in rows.iter_mut().zip(batch.bodies.iter_mut()) {
                                let Some((boottime, _)) = row.3 else {
                                    continue;
                                };
                                match retime(body, true_ts(boottime, base)) {
                                    Some(b) => {
                                        row.2 = b.len();
                                        row.3 = None;
                                        *body = Arc::from(b);
                                        done.records += 1;
                                    }
                                    None => done.unrewritable += 1,
                                }
                            }
                        }
                        // Taken by the sink: possibly delivered.
                        None => {
                            let device: Arc<str> = Arc::from(key.device.as_str());
                            for row in rows.iter_mut() {
                                if let Some((_, k)) = row.3.take() {
                                    time.note_delivered(&device, key.kind, key.epoch, row.1, k);
                                }
                            }
                        }
                    },
                }
            }
        }
        done
    }

    /// Prepares rows read from disk: a row taken unsynchronised in this
    /// boot is corrected now when the base is known (its disk pass may not
    /// have reached it yet), else it keeps its timing so that its
    /// acknowledgement is noted. Returns the rows' timings, in order.
    pub(super) fn time_rows(
        &self,
        rows: &mut [Row],
        done: &mut Corrected,
    ) -> Vec<Option<(i64, i64)>> {
        rows.iter_mut()
            .map(|r| {
                let (boot, boottime) = r.taken.as_ref()?;
                if self.time.boot.is_empty() || **boot != *self.time.boot {
                    // Another boot's boottime: never this boot's base.
                    return None;
                }
                let ts = unsynced_ts(&r.body)?;
                match self.time.base {
                    Some(base) => {
                        match retime(&r.body, true_ts(*boottime, base)) {
                            Some(b) => {
                                r.body = b;
                                done.records += 1;
                            }
                            None => done.unrewritable += 1,
                        }
                        None
                    }
                    None => Some((*boottime, ts - boottime)),
                }
            })
            .collect()
    }
}
