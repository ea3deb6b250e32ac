//! The way in: stamping a reading (sequence number, time, clock state) and
//! queueing it for every lane; when a stream's reserved numbers run out
//! and no more can be reserved on disk, the queue moves to a new epoch.
//! Memory only: the commit round makes the reservations
//! ([`Queue::take_work`](super::Queue::take_work) says which are wanted).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::lane::Entry;
use super::{Queue, SeqState};
use crate::clock::Now;
use crate::events;
use crate::model::{ClockState, Event, Kind, Reading, Sample};
use crate::spool::error::SpoolError;
use crate::spool::positions;
use crate::spool::report::{Notice, Reporter};

/// Sequence numbers are reserved on disk this many at a time, so that a
/// healthy gateway writes almost nothing per sample; after a power cut a
/// device's sequence resumes after the reserved block (a declared jump).
pub const SEQ_BLOCK: u64 = 65_536;

/// Events committed before they are sent whatever the policy: they
/// declare what a crash or a power cut took (which numbers were never used,
/// that the sequence started again, that the Pi is going down), so a kill
/// right after them must not take them too. One commit each, at start or
/// once in a long while.
const WRITE_THROUGH_EVENTS: &[&str] = &[
    events::GATEWAY_UNCLEAN_STOP.code,
    events::GATEWAY_SEQUENCE_RESET.code,
    events::SPOOL_CORRUPT.code,
    events::POWER_SHUTDOWN.code,
];

/// How far ahead of use numbers are reserved again: once per block, with
/// an eighth of a block left, so a reservation is on disk well before a
/// stream needs it.
pub(super) fn needs_reservation(s: &SeqState) -> bool {
    s.durable.saturating_sub(s.next) < SEQ_BLOCK / 8
}

/// Rewrites the `seq` at the front of a body this spool encoded
/// (`{"seq":N,…`); None if the body does not start that way.
fn restamp(body: &str, seq: u64) -> Option<String> {
    let rest = body.strip_prefix("{\"seq\":")?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    Some(format!("{{\"seq\":{seq}{}", &rest[end..]))
}

/// A new random epoch (never 0: epoch 0 holds the numbers of a spool of
/// the first version).
pub(crate) fn new_epoch() -> u64 {
    loop {
        let e = rand::random::<u64>();
        if e != 0 {
            return e;
        }
    }
}

/// What [`Queue::push`] did: the record's number, and whether the commit
/// task is wanted now (a record to commit before it is sent, or numbers to
/// reserve).
pub(crate) struct Pushed {
    pub(crate) seq: u64,
    pub(crate) wake: bool,
}

impl Queue {
    /// Stamps a reading taken at `now` with its stream's next number and
    /// queues it for every lane; with `write_through` (or for an event
    /// that declares a loss) it waits for its commit first.
    pub(crate) fn push(
        &mut self,
        device: &Arc<str>,
        reading: Reading,
        now: Now,
        write_through: bool,
        report: &Reporter,
    ) -> Result<Pushed, SpoolError> {
        let kind = match reading {
            Reading::Sample(_) => Kind::Sample,
            Reading::Event { .. } => Kind::Event,
        };
        let key = (device.clone(), kind);
        let exhausted = self.epoch_durable
            && self.reserve_failing
            && self.seqs.get(&key).is_none_or(|s| s.next >= s.durable);
        if exhausted {
            self.leave_exhausted_epoch(report);
        }
        let (seq, reserve) = self.number(key);
        let declares = matches!(&reading, Reading::Event { code, .. } if WRITE_THROUGH_EVENTS.contains(&code.as_str()));
        let body = encode(reading, seq, &now)?;
        let rid = self.next_rid;
        self.next_rid += 1;
        let entry = Entry {
            rid,
            kind,
            device: device.clone(),
            epoch: self.epoch,
            seq,
            ts: now.wall_ms,
            synced: now.synced,
            boot: self.time.boot.clone(),
            boottime: now.boottime_ms,
            body: Arc::from(body),
            born: Instant::now(),
            row: None,
            writing: false,
        };
        report.counters.pushed.fetch_add(1, Ordering::Relaxed);
        let wal = write_through || declares;
        if wal {
            self.wal_pending.push(entry);
        } else {
            self.enqueue_everywhere(entry);
        }
        Ok(Pushed {
            seq,
            wake: wal || reserve,
        })
    }

    /// Takes a stream's next number and keeps its used mark; says whether
    /// the stream wants more numbers reserved.
    fn number(&mut self, key: (Arc<str>, Kind)) -> (u64, bool) {
        let durable = self.epoch_durable;
        let s = self.seqs.entry(key).or_insert_with(SeqState::new);
        let seq = s.next;
        s.next += 1;
        s.mark = s.next;
        if let (Some(slot), Some(u)) = (s.slot, self.used.as_mut()) {
            u.set(slot, s.mark);
        }
        (seq, durable && needs_reservation(s))
    }

    /// Queues a record for every lane (a copy each; the last lane takes
    /// the original).
    pub(super) fn enqueue_everywhere(&mut self, entry: Entry) {
        let n = self.lanes.len();
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
            self.lanes[i].enqueue(e);
            self.lanes[i].notify.notify_one();
        }
    }

    /// A stream ran out of reserved numbers and none can be reserved on
    /// disk: everything moves to a new epoch, logged and announced.
    fn leave_exhausted_epoch(&mut self, report: &Reporter) {
        let old = self.epoch;
        let (new, renumbered) = self.switch_epoch();
        tracing::error!(
            old = %positions::epoch_hex(old),
            new = %positions::epoch_hex(new),
            renumbered,
            "sequence numbers ran out of their reservation and cannot be reserved on disk: new epoch"
        );
        report.notice(Notice::SequenceReset {
            epoch: new,
            previous: Some(old),
            reason: "sequence numbers could not be reserved on disk (spool not writable)".into(),
            first_start: false,
        });
    }

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
            let s = self.seqs.entry((dev, kind)).or_insert_with(SeqState::new);
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
                if let Some(body) = restamp(&e.body, *seq) {
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

/// The record's JSON body: seq, time and clock state first (the time
/// correction and a renumbering rewrite only that head).
fn encode(reading: Reading, seq: u64, now: &Now) -> Result<String, SpoolError> {
    let ts = now.wall_ms;
    let clock = if now.synced {
        ClockState::Synced
    } else {
        ClockState::Unsynced
    };
    match reading {
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
    .map_err(|e| SpoolError::Task(format!("encoding record: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restamp_rewrites_only_the_leading_seq() {
        assert_eq!(
            restamp("{\"seq\":65536,\"ts\":1,\"values\":{\"seq\":3}}", 0).as_deref(),
            Some("{\"seq\":0,\"ts\":1,\"values\":{\"seq\":3}}")
        );
        assert_eq!(restamp("{\"ts\":1}", 5), None);
        assert_eq!(restamp("{\"seq\":", 5), None);
    }
}
