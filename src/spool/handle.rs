//! A sink's side of the spool ([`LaneHandle`]): taking batches (events,
//! then live telemetry, then the backlog the commit round read ahead),
//! acknowledging them, giving everything in flight back when the link
//! drops, and setting aside what can never be sent. Touches only the memory
//! queue, under its short lock: never waits for the disk (acknowledged rows
//! are left for the commit round to delete).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::queue::{Entry, InFlight, Link};
use super::{lock, Batch, DropReason, LaneHandle, Notice, Queue, Spool, SpoolError};
use crate::model::Kind;

impl LaneHandle {
    pub fn name(&self) -> String {
        lock(&self.spool.q).lanes[self.idx].name.clone()
    }

    pub fn spool(&self) -> &Arc<Spool> {
        &self.spool
    }

    /// Tells the spool whether this sink can deliver. While it cannot, the
    /// next commit writes its queued records to disk.
    pub fn set_link(&self, up: bool) {
        let mut q = lock(&self.spool.q);
        q.lanes[self.idx].link = if up { Link::Up } else { Link::Down };
        drop(q);
        if up {
            self.spool.wake.notify_one();
        }
    }

    /// Waits for the next batch: events first, then live telemetry, then the
    /// disk backlog (each stream in `seq` order), within `max_records`
    /// records and about `max_bytes` bytes (a single larger record goes
    /// alone). Never waits for the disk: the commit task reads the backlog
    /// ahead.
    pub async fn next_batch(
        &self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Batch, SpoolError> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (batch, want) = self.try_next(max_records.max(1), max_bytes.max(1));
            if want {
                self.spool.wake.notify_one();
            }
            if let Some(b) = batch {
                return Ok(b);
            }
            notified.await;
        }
    }

    fn try_next(&self, max_records: usize, max_bytes: usize) -> (Option<Batch>, bool) {
        let mut q = lock(&self.spool.q);
        let q = &mut *q;
        let id = q.next_batch_id;
        let (lanes, sendable) = (&mut q.lanes, {
            let seqs = &q.seqs;
            let epoch = q.epoch;
            let durable = q.epoch_durable;
            move |e: &Entry| {
                !(durable && e.epoch == epoch)
                    || seqs
                        .get(&(e.device.clone(), e.kind))
                        .is_some_and(|s| e.seq < s.durable)
            }
        });
        let lane = &mut lanes[self.idx];
        if lane.bounds_known && (lane.max_records, lane.max_bytes) != (max_records, max_bytes) {
            // Batches read ahead were cut for other bounds: read again.
            lane.reset();
        }
        lane.max_records = max_records;
        lane.max_bytes = max_bytes;
        lane.bounds_known = true;
        let want = lane.wants_backlog(0) || lane.wants_backlog(1);
        let batch = lane
            .take_memory(Kind::Event, id, sendable)
            .or_else(|| lane.backlog[1].ready.pop_front())
            .or_else(|| lane.take_memory(Kind::Sample, id, sendable))
            .or_else(|| lane.backlog[0].ready.pop_front());
        if let Some(b) = &batch {
            q.next_batch_id = q.next_batch_id.max(b.id + 1);
        }
        (batch, want)
    }

    /// The sink's broker acknowledged a batch; returns how many records it held.
    /// A record taken with the clock unsynchronised and not corrected
    /// before it went is noted (`retime.rs`): the operations centre is told
    /// how to correct it once the clock syncs.
    pub fn ack(&self, batch_id: u64) -> usize {
        let mut q = lock(&self.spool.q);
        let Queue { lanes, time, .. } = &mut *q;
        let lane = &mut lanes[self.idx];
        let Some(f) = lane.inflight.remove(&batch_id) else {
            return 0;
        };
        // The correction event is for the operations centre's MQTT copies:
        // the first lane is the MQTT sink's (app.rs), and a record that
        // also went to InfluxDB is not counted twice.
        let note = self.idx == 0;
        let n = match f {
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
        };
        self.spool
            .counters
            .acked
            .fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// The link went down: nothing in flight will be acknowledged. Memory
    /// records go back to the front of their queues (those already on disk
    /// are left to the backlog), and the backlog is read again from the
    /// start of each stream, in `seq` order.
    pub fn nack_all(&self) {
        let mut q = lock(&self.spool.q);
        q.lanes[self.idx].reset();
    }

    /// Sets a batch aside for good: its records are never sent, counted as
    /// dropped (`too_large`, or `corrupt` for any other reason), and each
    /// reported in a `spool.quarantined` notice. For records the broker can
    /// never take.
    pub fn set_aside(&self, batch_id: u64, reason: &str) {
        let mut q = lock(&self.spool.q);
        let lane = &mut q.lanes[self.idx];
        let Some(f) = lane.inflight.remove(&batch_id) else {
            return;
        };
        let mut out: Vec<(String, Kind, u64, u64)> = Vec::new();
        // Only the records that cannot go in any message are set aside; when
        // a batch held others too, they are sent again (the lane starts
        // over, in order).
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
        drop(q);
        // A record that cannot be sent is either too large for the broker
        // or carries a device id no topic can (damage the checksum missed).
        let why = if reason.contains("large") {
            DropReason::TooLarge
        } else {
            DropReason::Corrupt
        };
        self.spool.count_drop(why, out.len() as u64);
        for (device, kind, seq, bytes) in out {
            tracing::error!(%device, ?kind, seq, bytes, reason, "record set aside: it can never be sent");
            self.spool.notice(Notice::Quarantined {
                device,
                kind,
                seq,
                bytes,
                reason: reason.to_owned(),
            });
        }
    }

    /// Records of this sink not yet acknowledged (memory and disk). The
    /// disk rows are counted only while this lane's backlog may hold some
    /// (a stream not read to its end): once a sink has caught up, the rows
    /// another sink keeps (InfluxDB down, MQTT fine) are not its own, and
    /// must not look like a stuck link. While two sinks both have a
    /// backlog, each counts every row on disk (the store keeps no count
    /// per sink).
    pub fn pending(&self) -> u64 {
        let q = lock(&self.spool.q);
        let lane = &q.lanes[self.idx];
        let inflight: usize = lane
            .inflight
            .values()
            .map(|f| match f {
                InFlight::Memory(v) => v.len(),
                InFlight::Disk(r, _) => r.len(),
            })
            .sum();
        let disk = if lane.backlog.iter().any(|b| b.maybe()) {
            self.spool.counters.disk_rows.load(Ordering::Relaxed).max(0) as u64
        } else {
            0
        };
        (lane.events.len() + lane.live.len() + inflight + q.wal_pending.len()) as u64 + disk
    }

    /// Batches in flight.
    pub fn inflight(&self) -> usize {
        lock(&self.spool.q).lanes[self.idx].inflight.len()
    }
}
