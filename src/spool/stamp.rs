//! The way in: [`Spool::push`] stamps a reading (sequence number, time,
//! clock state) and queues it for every lane; when a stream's reserved
//! numbers run out and no more can be reserved on disk, the queue moves to
//! a new epoch. Touches only the memory queue, under its short lock: never
//! waits for the disk (the commit round makes the reservations; the
//! kernel's clock state is asked at most every few seconds). The clock is
//! read under the lock, so that a reading is stamped either before the
//! clock is seen synchronised (and then corrected with the others) or
//! after (and then synced): none slips between (`retime.rs`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::config::SpoolPolicy;
use super::queue::{self, needs_reservation, Entry, SeqState};
use super::{lock, positions, Notice, Queue, Spool, SpoolError};
use crate::clock::{Clock, Now};
use crate::events;
use crate::model::{ClockState, Event, Kind, Reading, Sample};

impl Queue {
    /// Starts a new epoch that is not (yet) on disk, renumbering records
    /// still waiting in memory whose numbers were never reserved. Returns
    /// the new epoch and how many records were renumbered.
    fn switch_epoch(&mut self) -> (u64, u64) {
        let old = self.epoch;
        let new = new_epoch();
        let limits: HashMap<(Arc<str>, Kind), u64> = self
            .seqs
            .iter()
            .map(|(k, s)| (k.clone(), s.durable))
            .collect();
        let stuck = |e: &Entry| {
            e.epoch == old
                && e.row.is_none()
                && e.seq
                    >= limits
                        .get(&(e.device.clone(), e.kind))
                        .copied()
                        .unwrap_or(0)
        };
        // Each lane holds its own copy of a record: number by record id,
        // in push order, so every copy gets the same new number and each
        // stream keeps its order.
        let mut rids: Vec<(u64, Arc<str>, Kind)> = self
            .wal_pending
            .iter()
            .chain(
                self.lanes
                    .iter()
                    .flat_map(|l| l.events.iter().chain(l.live.iter())),
            )
            .filter(|e| stuck(e))
            .map(|e| (e.rid, e.device.clone(), e.kind))
            .collect();
        rids.sort_by_key(|r| r.0);
        rids.dedup_by_key(|r| r.0);
        self.seqs.clear();
        let mut renumber: HashMap<u64, u64> = HashMap::new();
        for (rid, dev, kind) in rids {
            let s = self.seqs.entry((dev, kind)).or_insert(SeqState {
                next: 0,
                durable: 0,
                slot: None,
                mark: 0,
            });
            renumber.insert(rid, s.next);
            s.next += 1;
        }
        let n = renumber.len() as u64;
        let entries = self.wal_pending.iter_mut().chain(
            self.lanes
                .iter_mut()
                .flat_map(|l| l.events.iter_mut().chain(l.live.iter_mut())),
        );
        for e in entries {
            if let Some(seq) = renumber.get(&e.rid) {
                if let Some(body) = queue::restamp(&e.body, *seq) {
                    e.body = Arc::from(body);
                    e.seq = *seq;
                    e.epoch = new;
                }
            }
        }
        self.epoch = new;
        self.epoch_durable = false;
        self.reserve_failing = false;
        // The used marks stay the old epoch's, which the positions file
        // still names; the new one takes the file over once it is on disk.
        self.used = None;
        (new, n)
    }
}

pub(super) fn new_epoch() -> u64 {
    loop {
        let e = rand::random::<u64>();
        if e != 0 {
            return e;
        }
    }
}

impl Spool {
    /// Stamps a reading with seq, time and clock state and queues it for
    /// every sink. Never waits for the disk. Returns the record's sequence
    /// number.
    pub fn push(&self, device: &Arc<str>, reading: Reading) -> Result<u64, SpoolError> {
        let kind = match reading {
            Reading::Sample(_) => Kind::Sample,
            Reading::Event { .. } => Kind::Event,
        };
        let mut q = lock(&self.q);
        let now = self.observe_clock(&mut q);
        let ts = now.wall_ms;
        let clock = if now.synced {
            ClockState::Synced
        } else {
            ClockState::Unsynced
        };
        let key = (device.clone(), kind);
        let exhausted = q.epoch_durable
            && q.reserve_failing
            && q.seqs.get(&key).is_none_or(|s| s.next >= s.durable);
        if exhausted {
            let (old, ..) = (q.epoch, ());
            let (new, renumbered) = q.switch_epoch();
            tracing::error!(
                old = %positions::epoch_hex(old),
                new = %positions::epoch_hex(new),
                renumbered,
                "sequence numbers ran out of their reservation and cannot be reserved on disk: new epoch"
            );
            self.notice(Notice::SequenceReset {
                epoch: new,
                previous: Some(old),
                reason: "sequence numbers could not be reserved on disk (spool not writable)"
                    .into(),
                first_start: false,
            });
        }
        let epoch = q.epoch;
        let durable = q.epoch_durable;
        let Queue { seqs, used, .. } = &mut *q;
        let s = seqs.entry(key).or_insert(SeqState {
            next: 0,
            durable: 0,
            slot: None,
            mark: 0,
        });
        let seq = s.next;
        s.next += 1;
        s.mark = s.next;
        if let (Some(slot), Some(u)) = (s.slot, used.as_mut()) {
            u.set(slot, s.mark);
        }
        let reserve = durable && needs_reservation(s);
        let declares = matches!(&reading, Reading::Event { code, .. } if WRITE_THROUGH_EVENTS.contains(&code.as_str()));
        let body = match reading {
            Reading::Sample(values) => serde_json::to_string(&Sample {
                seq,
                ts,
                clock,
                values,
            }),
            Reading::Event {
                severity,
                code,
                message,
                values,
            } => serde_json::to_string(&Event {
                seq,
                ts,
                clock,
                severity,
                code,
                message,
                values,
            }),
        }
        .map_err(|e| SpoolError::Task(format!("encoding record: {e}")))?;
        let rid = q.next_rid;
        q.next_rid += 1;
        let entry = Entry {
            rid,
            kind,
            device: device.clone(),
            epoch,
            seq,
            ts,
            synced: clock == ClockState::Synced,
            boot: q.time.boot.clone(),
            boottime: now.boottime_ms,
            body: Arc::from(body),
            born: Instant::now(),
            row: None,
            writing: false,
        };
        self.counters.pushed.fetch_add(1, Ordering::Relaxed);
        let wal = self.write_through() || declares;
        if wal {
            q.wal_pending.push(entry);
        } else {
            let n = q.lanes.len();
            let mut entry = Some(entry);
            for i in 0..n {
                let e = if i + 1 == n {
                    entry
                        .take()
                        .expect("the last lane takes the original entry")
                } else {
                    entry
                        .as_ref()
                        .expect("entry is present until the last lane")
                        .clone_for_lane()
                };
                q.lanes[i].enqueue(e);
                q.lanes[i].notify.notify_one();
            }
        }
        drop(q);
        if wal || reserve {
            self.wake.notify_one();
        }
        Ok(seq)
    }
}

/// Events committed before they are sent whatever the policy: they
/// declare what a crash or a power cut took (which numbers were never used,
/// that the sequence started again, that the Pi is going down), so a kill
/// right after them must not take them too. One commit each, at start or
/// once in a long while.
pub(super) const WRITE_THROUGH_EVENTS: &[&str] = &[
    events::GATEWAY_UNCLEAN_STOP.code,
    events::GATEWAY_SEQUENCE_RESET.code,
    events::SPOOL_CORRUPT.code,
    events::POWER_SHUTDOWN.code,
];

impl Spool {
    /// Switches write-through on or off at run time (on while the UPS is
    /// on battery, so a power cut that follows loses nothing). Under
    /// policy `wal` it is always on.
    pub fn set_write_through(&self, on: bool) {
        let was = self.write_through.swap(on, Ordering::SeqCst);
        if was != on {
            tracing::info!(
                on,
                "spool write-through (every reading committed before it is sent)"
            );
        }
    }

    /// Whether records are committed before they are sent: policy `wal`,
    /// or write-through asked for at run time.
    pub fn write_through(&self) -> bool {
        self.cfg.policy == SpoolPolicy::Wal || self.write_through.load(Ordering::SeqCst)
    }
}

/// The spool's clock ([`crate::clock::Clock`]: the kernel's, or a test's).
pub(super) struct ClockCache {
    clock: Arc<dyn Clock>,
}

impl ClockCache {
    pub(super) fn new(clock: Arc<dyn Clock>) -> ClockCache {
        ClockCache { clock }
    }

    pub(super) fn now(&self) -> Now {
        crate::clock::now(&*self.clock)
    }

    pub(super) fn boot_id(&self) -> Arc<str> {
        self.clock.boot_id()
    }
}
