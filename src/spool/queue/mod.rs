//! The spool's memory side: one lane per sink ([`lane`]), stamping
//! ([`seq`]), the sinks' side (taking batches, acknowledging them, setting
//! aside what can never be sent), the time correction of records in memory
//! ([`time`]), and what a commit round takes out and gives back
//! ([`work`]).
//!
//! Nothing here does I/O. Tasks (sources, sinks) touch only this, under a
//! short lock the facade holds ([`crate::spool::Spool`]); the commit round
//! takes its work out of it, does the disk work with the lock released,
//! and gives the results back.

mod lane;
pub(crate) mod seq;
mod time;
pub(crate) mod work;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::Notify;

use super::db::StreamKey;
use super::report::SpoolCounters;
use super::retime::TimeState;
use super::used::UsedMarks;
use crate::model::Kind;
use lane::{InFlight, LaneQueue, Link};

pub use lane::{Batch, Lane};
pub(crate) use lane::{Entry, READY_TARGET};

/// A record that can never be sent: (device, kind, seq, body bytes).
pub(crate) type SetAside = (String, Kind, u64, u64);

/// The memory queue: every lane, the streams' sequence numbers, and
/// what waits for a commit.
pub(crate) struct Queue {
    pub(crate) lanes: Vec<LaneQueue>,
    seqs: HashMap<(Arc<str>, Kind), SeqState>,
    epoch: u64,
    /// The epoch's positions are on disk; numbers are sent only once
    /// reserved. An epoch that is not durable is never reused anyway.
    epoch_durable: bool,
    /// Reservations cannot be written: a stream that runs out of reserved
    /// numbers moves everything to a new epoch.
    reserve_failing: bool,
    /// Records waiting for their commit before being queued (policy `wal`,
    /// write-through, declaring events).
    wal_pending: Vec<Entry>,
    next_batch_id: u64,
    next_rid: u64,
    /// Exact last-used marks, when the file could be made.
    used: Option<UsedMarks>,
    /// The clock's base and what was delivered unsynchronised.
    time: TimeState,
}

/// One stream's sequence state.
pub(crate) struct SeqState {
    pub(crate) next: u64,
    /// Numbers below this are covered by a reservation on disk (durable
    /// epochs only).
    pub(crate) durable: u64,
    /// The stream's slot in the used-marks file, once it has one.
    pub(crate) slot: Option<u32>,
    /// What the slot holds: one past the last number known to be used (0:
    /// not known). At start it is the previous run's, not `next`: the
    /// numbers skipped by the resume were never used.
    pub(crate) mark: u64,
}

impl SeqState {
    fn new() -> SeqState {
        SeqState {
            next: 0,
            durable: 0,
            slot: None,
            mark: 0,
        }
    }
}

impl Queue {
    /// A queue for the named lanes (in this order: a record committed
    /// before it is sent gets a row per lane, in it), with the sequence
    /// positions opening found.
    pub(crate) fn new(
        lanes: &[Lane],
        seqs: HashMap<(Arc<str>, Kind), SeqState>,
        (epoch, epoch_durable): (u64, bool),
        used: Option<UsedMarks>,
        boot: Arc<str>,
    ) -> Queue {
        Queue {
            lanes: lanes.iter().map(|l| LaneQueue::new(*l)).collect(),
            seqs,
            epoch,
            epoch_durable,
            reserve_failing: !epoch_durable,
            wal_pending: Vec::new(),
            next_batch_id: 1,
            next_rid: 1,
            used,
            time: TimeState::new(boot),
        }
    }

    /// The current sequence epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Records in memory not yet acknowledged and not on disk (all lanes).
    pub(crate) fn memory(&self) -> usize {
        self.lanes.iter().map(|l| l.memory()).sum::<usize>() + self.wal_pending.len()
    }

    /// Notes the backlog streams the store holds for each lane: `streams`
    /// lists those of a lane and kind (None: they could not be listed).
    pub(crate) fn note_backlog(
        &mut self,
        mut streams: impl FnMut(Lane, Kind) -> Option<Vec<StreamKey>>,
    ) {
        for lane in self.lanes.iter_mut() {
            for kind in [Kind::Sample, Kind::Event] {
                for k in streams(lane.id, kind).unwrap_or_default() {
                    lane.stream_has_rows(&k);
                }
            }
        }
    }

    /// Every stream's next number, by its key in the positions file, with
    /// the epoch and whether it is on disk: what a clean stop records.
    pub(crate) fn exact_positions(&self) -> (u64, bool, Vec<(String, u64)>) {
        let exact = self
            .seqs
            .iter()
            .map(|((dev, kind), s)| (super::positions::stream_key(*kind, dev), s.next))
            .collect();
        (self.epoch, self.epoch_durable, exact)
    }

    /// Whether the queue has a lane of that name.
    pub(crate) fn has_lane(&self, lane: Lane) -> bool {
        self.lanes.iter().any(|l| l.id == lane)
    }

    fn lane_mut(&mut self, lane: Lane) -> &mut LaneQueue {
        self.lanes
            .iter_mut()
            .find(|l| l.id == lane)
            .expect("a lane handle is made only for a lane the queue has")
    }

    fn lane(&self, lane: Lane) -> &LaneQueue {
        self.lanes
            .iter()
            .find(|l| l.id == lane)
            .expect("a lane handle is made only for a lane the queue has")
    }

    /// What wakes the lane's sink when it has something.
    pub(crate) fn lane_notify(&self, lane: Lane) -> Arc<Notify> {
        self.lane(lane).notify.clone()
    }

    /// Whether the sink can deliver; while it cannot, the next commit
    /// writes its queued records to disk.
    pub(crate) fn set_link(&mut self, lane: Lane, up: bool) {
        self.lane_mut(lane).link = if up { Link::Up } else { Link::Down };
    }

    /// The sink's byte bound for a batch (see [`LaneQueue`]'s `max_bytes`).
    /// Batches read ahead for another bound are read again.
    pub(crate) fn set_max_bytes(&mut self, lane: Lane, max_bytes: usize) {
        let lane = self.lane_mut(lane);
        if lane.bounds_known && lane.max_bytes != max_bytes {
            lane.reset();
        }
        lane.max_bytes = max_bytes;
    }

    /// The lane's next batch, if any: events first, then live telemetry,
    /// then the backlog read ahead (each stream in `seq` order), within
    /// `max_records` records. Also says whether a backlog read would help.
    pub(crate) fn next_batch(&mut self, lane: Lane, max_records: usize) -> (Option<Batch>, bool) {
        let id = self.next_batch_id;
        let li = self
            .lanes
            .iter()
            .position(|l| l.id == lane)
            .expect("a lane handle is made only for a lane the queue has");
        let (lanes, sendable) = (&mut self.lanes, {
            let seqs = &self.seqs;
            let epoch = self.epoch;
            let durable = self.epoch_durable;
            move |e: &Entry| {
                !(durable && e.epoch == epoch)
                    || seqs
                        .get(&(e.device.clone(), e.kind))
                        .is_some_and(|s| e.seq < s.durable)
            }
        });
        let lane = &mut lanes[li];
        if lane.bounds_known && lane.max_records != max_records {
            // Batches read ahead were cut for other bounds: read again.
            lane.reset();
        }
        lane.max_records = max_records;
        lane.bounds_known = true;
        let want = lane.wants_backlog(0) || lane.wants_backlog(1);
        let batch = lane
            .take_memory(Kind::Event, id, sendable)
            .or_else(|| lane.backlog[1].ready.pop_front())
            .or_else(|| lane.take_memory(Kind::Sample, id, sendable))
            .or_else(|| lane.backlog[0].ready.pop_front());
        if let Some(b) = &batch {
            self.next_batch_id = self.next_batch_id.max(b.id + 1);
        }
        (batch, want)
    }

    /// The sink acknowledged a batch; returns how many records it held.
    /// Its rows are left for the commit round to delete. A record taken
    /// with the clock unsynchronised and not corrected before it went is
    /// noted (`retime.rs`) when the lane reports clock corrections.
    pub(crate) fn ack(&mut self, lane: Lane, batch_id: u64) -> usize {
        let note = lane.reports_clock_corrections();
        let Queue { lanes, time, .. } = self;
        let lane = lanes
            .iter_mut()
            .find(|l| l.id == lane)
            .expect("a lane handle is made only for a lane the queue has");
        let Some(f) = lane.inflight.remove(&batch_id) else {
            return 0;
        };
        match f {
            InFlight::Memory(v) => {
                for e in &v {
                    if note && !e.synced {
                        time.note_delivered(&e.device, e.kind, e.epoch, e.seq, e.ts - e.boottime);
                    }
                    if let Some(r) = e.row {
                        lane.mem_rows.remove(&r);
                        lane.gone_rows.insert(r);
                        lane.to_delete.push(r);
                    }
                }
                v.len()
            }
            InFlight::Disk(rows, key) => {
                let device: Arc<str> = Arc::from(key.device.as_str());
                for (r, seq, _, unsynced) in &rows {
                    lane.gone_rows.insert(*r);
                    lane.to_delete.push(*r);
                    if let (true, Some((_, k))) = (note, unsynced) {
                        time.note_delivered(&device, key.kind, key.epoch, *seq, *k);
                    }
                }
                rows.len()
            }
        }
    }

    /// The link went down: nothing in flight will be acknowledged (see
    /// [`LaneQueue::reset`]).
    pub(crate) fn nack_all(&mut self, lane: Lane) {
        self.lane_mut(lane).reset();
    }

    /// Takes a batch out of flight for good and returns the records that
    /// can never be sent (None: no such batch in flight). Only those that cannot go in any message are set
    /// aside (over the byte bound, or the largest); when the batch held
    /// others too, they are sent again (the lane starts over, in order).
    pub(crate) fn set_aside(&mut self, lane: Lane, batch_id: u64) -> Option<Vec<SetAside>> {
        let lane = self.lane_mut(lane);
        let f = lane.inflight.remove(&batch_id)?;
        let mut out: Vec<SetAside> = Vec::new();
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
                for (r, seq, len, _) in rows {
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
        Some(out)
    }

    /// Records of this lane not yet acknowledged (memory and disk). The
    /// disk rows are counted only while this lane's backlog may hold some
    /// (a stream not read to its end): once a sink has caught up, the rows
    /// another sink keeps (InfluxDB down, MQTT fine) are not its own, and
    /// must not look like a stuck link. While two sinks both have a
    /// backlog, each counts every row on disk (the store keeps no count
    /// per sink).
    pub(crate) fn pending(&self, lane: Lane, counters: &SpoolCounters) -> u64 {
        let lane = self.lane(lane);
        let inflight: usize = lane
            .inflight
            .values()
            .map(|f| match f {
                InFlight::Memory(v) => v.len(),
                InFlight::Disk(r, _) => r.len(),
            })
            .sum();
        let disk = if lane.backlog.iter().any(|b| b.maybe()) {
            counters.disk_rows.load(Ordering::Relaxed).max(0) as u64
        } else {
            0
        };
        (lane.events.len() + lane.live.len() + inflight + self.wal_pending.len()) as u64 + disk
    }
}
