//! The spool's memory side: lanes (one per sink), stamping, batches,
//! acknowledgements, and what the store must write, delete, reserve or read.
//!
//! Nothing here does I/O. Tasks (sources, sinks) touch only this, under a
//! short lock; the commit task takes work out of it, does the disk work with
//! the lock released, and gives the results back (`commit.rs`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::db::StreamKey;
use super::Batch;
use crate::model::Kind;

/// Sequence numbers are reserved on disk this many at a time, so that a
/// healthy gateway writes almost nothing per sample; after a power cut a
/// device's sequence resumes after the reserved block (a declared jump).
pub const SEQ_BLOCK: u64 = 65_536;

/// Batches kept ready from the backlog, per lane and kind.
pub(crate) const READY_TARGET: usize = 8;

/// Bytes a record adds to a message besides its body (the `historical` flag
/// and separators), and the envelope's own bytes: batches are cut so that the
/// encoded message stays within the byte bound.
pub const RECORD_OVERHEAD: usize = 24;
pub const ENVELOPE_OVERHEAD: usize = 256;

pub(crate) struct Entry {
    /// Unique per run: how the commit task finds the entry again.
    pub rid: u64,
    pub kind: Kind,
    pub device: Arc<str>,
    pub epoch: u64,
    pub seq: u64,
    pub ts: i64,
    /// `ts` can be trusted: taken synchronised, or corrected since.
    pub synced: bool,
    /// The kernel boot it was taken in, and `CLOCK_BOOTTIME` then (ms):
    /// how its `ts` is corrected once the clock syncs (`retime.rs`).
    pub boot: Arc<str>,
    pub boottime: i64,
    pub body: Arc<str>,
    pub born: Instant,
    /// The row holding this record on disk, once written.
    pub row: Option<i64>,
    /// Handed to the commit task, not yet written.
    pub writing: bool,
}

impl Entry {
    pub fn clone_for_lane(&self) -> Entry {
        Entry {
            rid: self.rid,
            kind: self.kind,
            device: self.device.clone(),
            epoch: self.epoch,
            seq: self.seq,
            ts: self.ts,
            synced: self.synced,
            boot: self.boot.clone(),
            boottime: self.boottime,
            body: self.body.clone(),
            born: self.born,
            row: None,
            writing: false,
        }
    }
}

/// A record read from disk: (row id, seq, body length, and for a record
/// of this boot taken unsynchronised and not yet corrected, its boottime
/// and clock distance `ts - boottime`).
pub(crate) type DiskRec = (i64, u64, usize, Option<(i64, i64)>);

pub(crate) enum InFlight {
    Memory(Vec<Entry>),
    Disk(Vec<DiskRec>, StreamKey),
}

/// What the queue knows of a sink's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// Not tried yet (start-up): records wait in memory as if the link were up.
    Unknown,
    Up,
    /// Records go to disk at the next commit.
    Down,
}

/// One backlog stream's read position.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cursor {
    /// The last `seq` handed out from disk (None: from the start).
    pub after: Option<u64>,
    /// The last read found nothing more.
    pub exhausted: bool,
}

#[derive(Default)]
pub(crate) struct KindBacklog {
    pub streams: BTreeMap<StreamKey, Cursor>,
    pub ready: VecDeque<Batch>,
}

impl KindBacklog {
    pub fn maybe(&self) -> bool {
        self.streams.values().any(|c| !c.exhausted)
    }
}

pub(crate) struct Lane {
    pub name: String,
    pub link: Link,
    pub events: VecDeque<Entry>,
    pub live: VecDeque<Entry>,
    pub inflight: HashMap<u64, InFlight>,
    /// Rows whose records are in flight from memory: the backlog skips them.
    pub mem_rows: HashSet<i64>,
    /// Rows acknowledged, set aside or found damaged, not yet deleted: the
    /// backlog skips them, so a row that cannot be deleted (full disk) is
    /// never sent twice in one run.
    pub gone_rows: HashSet<i64>,
    /// Rows to delete at the next commit.
    pub to_delete: Vec<i64>,
    /// [samples, events].
    pub backlog: [KindBacklog; 2],
    /// Bumped on every reset, so a backlog read started before it is thrown away.
    pub gen: u64,
    /// The batch bounds the sink last asked for; the backlog is not read
    /// before the sink has said them (`bounds_known`).
    pub max_records: usize,
    pub max_bytes: usize,
    pub bounds_known: bool,
    pub notify: Arc<Notify>,
}

impl Lane {
    pub fn new(name: &str) -> Lane {
        Lane {
            name: name.to_owned(),
            link: Link::Unknown,
            events: VecDeque::new(),
            live: VecDeque::new(),
            inflight: HashMap::new(),
            mem_rows: HashSet::new(),
            gone_rows: HashSet::new(),
            to_delete: Vec::new(),
            backlog: Default::default(),
            gen: 0,
            max_records: 100,
            max_bytes: 256 * 1024,
            bounds_known: false,
            notify: Arc::new(Notify::new()),
        }
    }

    fn queue(&mut self, kind: Kind) -> &mut VecDeque<Entry> {
        match kind {
            Kind::Event => &mut self.events,
            Kind::Sample => &mut self.live,
        }
    }

    pub fn enqueue(&mut self, e: Entry) {
        self.queue(e.kind).push_back(e);
    }

    /// Records in memory not yet acknowledged and not on disk.
    pub fn memory(&self) -> usize {
        self.events.len()
            + self.live.len()
            + self
                .inflight
                .values()
                .map(|f| match f {
                    InFlight::Memory(v) => v.iter().filter(|e| e.row.is_none()).count(),
                    InFlight::Disk(..) => 0,
                })
                .sum::<usize>()
    }

    /// Takes the front record of a memory queue and, when the queue is deep,
    /// the records of the same device right behind it, within the bounds.
    /// `sendable` says whether a record's number may leave yet.
    pub fn take_memory(
        &mut self,
        kind: Kind,
        id: u64,
        sendable: impl Fn(&Entry) -> bool,
    ) -> Option<Batch> {
        let (max, max_bytes) = (self.max_records.max(1), self.max_bytes);
        let q = self.queue(kind);
        if !q.front().is_some_and(&sendable) {
            return None;
        }
        let first = q.pop_front()?;
        let device = first.device.clone();
        let epoch = first.epoch;
        let mut bytes = ENVELOPE_OVERHEAD + first.body.len() + RECORD_OVERHEAD;
        let mut entries = vec![first];
        while entries.len() < max {
            match q.front() {
                Some(e)
                    if e.device == device
                        && e.epoch == epoch
                        && bytes + e.body.len() + RECORD_OVERHEAD <= max_bytes
                        && sendable(e) =>
                {
                    bytes += e.body.len() + RECORD_OVERHEAD;
                    if let Some(e) = q.pop_front() {
                        entries.push(e);
                    }
                }
                _ => break,
            }
        }
        let bodies = entries.iter().map(|e| e.body.clone()).collect();
        let first_seq = entries.first().map(|e| e.seq).unwrap_or(0);
        self.inflight.insert(id, InFlight::Memory(entries));
        Some(Batch {
            id,
            kind,
            device,
            epoch,
            first_seq,
            historical: false,
            bodies,
        })
    }

    /// The link went down or the sink restarts: nothing in flight will be
    /// acknowledged. Memory records go back to the front of their queues
    /// (those already on disk are left to the backlog), and the backlog is
    /// read again from the start of each stream.
    pub fn reset(&mut self) {
        let mut back: Vec<Entry> = Vec::new();
        for (_, f) in self.inflight.drain() {
            if let InFlight::Memory(v) = f {
                for e in v {
                    match e.row {
                        Some(r) => {
                            self.mem_rows.remove(&r);
                        }
                        None => back.push(e),
                    }
                }
            }
        }
        back.sort_by_key(|e| e.rid);
        for e in back.into_iter().rev() {
            self.queue(e.kind).push_front(e);
        }
        for b in self.backlog.iter_mut() {
            b.ready.clear();
            for c in b.streams.values_mut() {
                *c = Cursor::default();
            }
        }
        self.gen += 1;
        self.notify.notify_one();
    }

    /// Whether a backlog read would help: the link is up, some stream may
    /// have more, and few batches are ready.
    pub fn wants_backlog(&self, k: usize) -> bool {
        self.link != Link::Down
            && self.bounds_known
            && self.backlog[k].ready.len() < READY_TARGET / 2
            && self.backlog[k].maybe()
    }

    /// Notes that `key` has rows on disk (again).
    pub fn stream_has_rows(&mut self, key: &StreamKey) {
        let k = key.kind.as_i64() as usize;
        self.backlog[k]
            .streams
            .entry(key.clone())
            .or_default()
            .exhausted = false;
    }

    /// Cuts rows read from one stream into batches within the bounds and
    /// makes them ready. `timing` (one per row, or none at all) says which
    /// rows were taken unsynchronised in this boot ([`DiskRec`]). Returns
    /// the batches' count.
    pub fn add_backlog(
        &mut self,
        key: &StreamKey,
        rows: Vec<super::db::Row>,
        timing: Vec<Option<(i64, i64)>>,
        next_id: &mut u64,
    ) -> usize {
        let k = key.kind.as_i64() as usize;
        let (max, max_bytes) = (self.max_records.max(1), self.max_bytes);
        let device: Arc<str> = Arc::from(key.device.as_str());
        let mut n = 0;
        let mut cur: Vec<(DiskRec, Arc<str>)> = Vec::new();
        let mut bytes = ENVELOPE_OVERHEAD;
        let mut batches = Vec::new();
        let mut timing = timing.into_iter();
        for r in rows {
            let t = timing.next().flatten();
            if self.mem_rows.contains(&r.id) || self.gone_rows.contains(&r.id) {
                continue;
            }
            let len = r.body.len() + RECORD_OVERHEAD;
            if !cur.is_empty() && (cur.len() >= max || bytes + len > max_bytes) {
                batches.push(std::mem::take(&mut cur));
                bytes = ENVELOPE_OVERHEAD;
            }
            bytes += len;
            let body: Arc<str> = Arc::from(r.body);
            cur.push(((r.id, r.seq, body.len(), t), body));
        }
        if !cur.is_empty() {
            batches.push(cur);
        }
        for rows in batches {
            let id = *next_id;
            *next_id += 1;
            let first_seq = rows.first().map(|r| r.0 .1).unwrap_or(0);
            let bodies: Vec<Arc<str>> = rows.iter().map(|r| r.1.clone()).collect();
            let ids = rows.into_iter().map(|r| r.0).collect();
            self.inflight.insert(id, InFlight::Disk(ids, key.clone()));
            self.backlog[k].ready.push_back(Batch {
                id,
                kind: key.kind,
                device: device.clone(),
                epoch: key.epoch,
                first_seq,
                historical: true,
                bodies,
            });
            n += 1;
        }
        n
    }
}

/// One stream's sequence state.
pub(crate) struct SeqState {
    pub next: u64,
    /// Numbers below this are covered by a reservation on disk (durable
    /// epochs only).
    pub durable: u64,
    /// The stream's slot in the used-marks file, once it has one.
    pub slot: Option<u32>,
    /// What the slot holds: one past the last number known to be used (0:
    /// not known). At start it is the previous run's, not `next`: the
    /// numbers skipped by the resume were never used.
    pub mark: u64,
}

/// How far ahead of use numbers are reserved again: once per block, with
/// an eighth of a block left, so a reservation is on disk well before a
/// stream needs it.
pub(crate) fn needs_reservation(s: &SeqState) -> bool {
    s.durable.saturating_sub(s.next) < SEQ_BLOCK / 8
}

/// Rewrites the `seq` at the front of a body this spool encoded
/// (`{"seq":N,…`); None if the body does not start that way.
pub fn restamp(body: &str, seq: u64) -> Option<String> {
    let rest = body.strip_prefix("{\"seq\":")?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    Some(format!("{{\"seq\":{seq}{}", &rest[end..]))
}

/// How long a record may wait in memory under the spill policy.
pub fn due(born: Instant, now: Instant, spill_after: Duration) -> bool {
    now.duration_since(born) >= spill_after
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rid: u64, dev: &str, seq: u64, body: &str) -> Entry {
        Entry {
            rid,
            kind: Kind::Sample,
            device: Arc::from(dev),
            epoch: 7,
            seq,
            ts: 0,
            synced: true,
            boot: Arc::from("b"),
            boottime: 0,
            body: Arc::from(body),
            born: Instant::now(),
            row: None,
            writing: false,
        }
    }

    #[test]
    fn restamp_rewrites_only_the_leading_seq() {
        assert_eq!(
            restamp("{\"seq\":65536,\"ts\":1,\"values\":{\"seq\":3}}", 0).as_deref(),
            Some("{\"seq\":0,\"ts\":1,\"values\":{\"seq\":3}}")
        );
        assert_eq!(restamp("{\"ts\":1}", 5), None);
        assert_eq!(restamp("{\"seq\":", 5), None);
    }

    #[test]
    fn memory_batches_respect_count_bytes_device_and_the_send_gate() {
        let mut lane = Lane::new("mqtt");
        lane.max_records = 3;
        lane.max_bytes = ENVELOPE_OVERHEAD + 3 * (10 + RECORD_OVERHEAD);
        let body = "0123456789";
        for (i, dev) in ["a", "a", "a", "a", "b"].iter().enumerate() {
            lane.enqueue(entry(i as u64, dev, i as u64, body));
        }
        let b = lane.take_memory(Kind::Sample, 1, |_| true).unwrap();
        assert_eq!((b.bodies.len(), &*b.device), (3, "a"), "count bound");
        let b = lane.take_memory(Kind::Sample, 2, |_| true).unwrap();
        assert_eq!((b.bodies.len(), &*b.device), (1, "a"), "device boundary");
        // The gate holds back a record whose number is not reserved yet.
        assert!(lane.take_memory(Kind::Sample, 3, |e| e.seq < 4).is_none());
        lane.max_bytes = 10;
        let b = lane.take_memory(Kind::Sample, 4, |_| true).unwrap();
        assert_eq!(
            b.bodies.len(),
            1,
            "a record larger than the bound goes alone"
        );
    }

    #[test]
    fn reset_puts_memory_records_back_in_push_order() {
        let mut lane = Lane::new("mqtt");
        for i in 0..4 {
            lane.enqueue(entry(i, "a", i, "{}"));
        }
        lane.max_records = 2;
        let _ = lane.take_memory(Kind::Sample, 1, |_| true).unwrap();
        let _ = lane.take_memory(Kind::Sample, 2, |_| true).unwrap();
        lane.enqueue(entry(9, "a", 4, "{}"));
        lane.reset();
        let seqs: Vec<u64> = lane.live.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
        assert!(lane.inflight.is_empty());
    }

    #[test]
    fn backlog_batches_skip_rows_in_memory_or_gone() {
        let mut lane = Lane::new("mqtt");
        lane.max_records = 2;
        let key = StreamKey {
            kind: Kind::Sample,
            device: "a".into(),
            epoch: 1,
        };
        lane.mem_rows.insert(2);
        lane.gone_rows.insert(3);
        let rows = (1..=6)
            .map(|i| super::super::db::Row {
                id: i,
                seq: i as u64,
                body: "{}".into(),
                taken: None,
            })
            .collect();
        let mut next = 10;
        assert_eq!(lane.add_backlog(&key, rows, Vec::new(), &mut next), 2);
        let b: Vec<u64> = lane.backlog[0].ready.iter().map(|b| b.first_seq).collect();
        assert_eq!(b, vec![1, 5]);
        assert_eq!(next, 12);
    }
}
