//! One sink's lane of the memory queue: its name ([`Lane`]), its records
//! (events, live telemetry, batches in flight), the backlog read ahead for
//! it, and the batches cut from both. Nothing here does I/O or locks.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;

use crate::model::Kind;
use crate::spool::db::{Row, StreamKey};

/// Batches kept ready from the backlog, per lane and kind.
pub(crate) const READY_TARGET: usize = 8;

/// Bytes a record adds to a message besides its body (the `historical` flag
/// and separators), and the envelope's own bytes: batches are cut so that the
/// encoded message stays within the byte bound.
const RECORD_OVERHEAD: usize = 24;
const ENVELOPE_OVERHEAD: usize = 256;

/// A sink's lane: each sink keeps its own position in the spool. The name
/// is what the store's rows carry (`rec.sink`): never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// The MQTT sink's: what the operations centre receives.
    Mqtt,
    /// The InfluxDB sink's.
    Influx,
}

impl Lane {
    /// The lane's name in the store.
    pub const fn name(self) -> &'static str {
        match self {
            Lane::Mqtt => "mqtt",
            Lane::Influx => "influxdb",
        }
    }

    /// Whether a record this lane delivered with the unsynchronised time is
    /// noted for the `gateway.clock_corrected` event: the event is for the
    /// operations centre's MQTT copies, and a record that also went to
    /// InfluxDB is not counted twice.
    pub(super) fn reports_clock_corrections(self) -> bool {
        self == Lane::Mqtt
    }
}

/// A group of records of one device, kind and epoch, sent as one message.
#[derive(Debug, Clone)]
pub struct Batch {
    pub id: u64,
    pub kind: Kind,
    pub device: Arc<str>,
    /// The sequence epoch of every record in it.
    pub epoch: u64,
    /// The first record's `seq` (for logs and events).
    pub first_seq: u64,
    /// Sent from the disk backlog rather than live.
    pub historical: bool,
    /// Each record's JSON object, without the `historical` flag.
    pub bodies: Vec<Arc<str>>,
}

impl Batch {
    /// The bodies' bytes.
    pub fn bytes(&self) -> usize {
        self.bodies.iter().map(|b| b.len()).sum()
    }
}

/// A record in memory; each lane holds its own copy.
pub(crate) struct Entry {
    /// Unique per run: how the commit task finds the entry again.
    pub(crate) rid: u64,
    pub(crate) kind: Kind,
    pub(crate) device: Arc<str>,
    pub(crate) epoch: u64,
    pub(crate) seq: u64,
    pub(crate) ts: i64,
    /// `ts` can be trusted: taken synchronised, or corrected since.
    pub(crate) synced: bool,
    /// The kernel boot it was taken in, and `CLOCK_BOOTTIME` then (ms):
    /// how its `ts` is corrected once the clock syncs (`retime.rs`).
    pub(crate) boot: Arc<str>,
    pub(crate) boottime: i64,
    pub(crate) body: Arc<str>,
    pub(crate) born: Instant,
    /// The row holding this record on disk, once written.
    pub(crate) row: Option<i64>,
    /// Handed to the commit task, not yet written.
    pub(crate) writing: bool,
}

impl Entry {
    pub(super) fn clone_for_lane(&self) -> Entry {
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
pub(super) type DiskRec = (i64, u64, usize, Option<(i64, i64)>);

/// A batch handed to the sink, until it is acknowledged: records from
/// memory, or rows read from one backlog stream.
pub(super) enum InFlight {
    Memory(Vec<Entry>),
    Disk(Vec<DiskRec>, StreamKey),
}

/// What the queue knows of a sink's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Link {
    /// Not tried yet (start-up): records wait in memory as if the link were up.
    Unknown,
    Up,
    /// Records go to disk at the next commit.
    Down,
}

/// One backlog stream's read position.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Cursor {
    /// The last `seq` handed out from disk (None: from the start).
    pub(super) after: Option<u64>,
    /// The last read found nothing more.
    pub(super) exhausted: bool,
}

/// One kind's backlog on disk: each stream's read position, and the
/// batches read ahead.
#[derive(Default)]
pub(super) struct KindBacklog {
    pub(super) streams: BTreeMap<StreamKey, Cursor>,
    pub(super) ready: VecDeque<Batch>,
}

impl KindBacklog {
    /// Some stream may hold more rows.
    pub(super) fn maybe(&self) -> bool {
        self.streams.values().any(|c| !c.exhausted)
    }
}

/// One sink's lane in memory.
pub(crate) struct LaneQueue {
    pub(super) id: Lane,
    pub(super) link: Link,
    pub(super) events: VecDeque<Entry>,
    pub(crate) live: VecDeque<Entry>,
    pub(super) inflight: HashMap<u64, InFlight>,
    /// Rows whose records are in flight from memory: the backlog skips them.
    pub(super) mem_rows: HashSet<i64>,
    /// Rows acknowledged, set aside or found damaged, not yet deleted: the
    /// backlog skips them, so a row that cannot be deleted (full disk) is
    /// never sent twice in one run.
    pub(super) gone_rows: HashSet<i64>,
    /// Rows to delete at the next commit.
    pub(super) to_delete: Vec<i64>,
    /// [samples, events].
    pub(super) backlog: [KindBacklog; 2],
    /// Bumped on every reset, so a backlog read started before it is thrown away.
    pub(super) gen: u64,
    /// The records per batch the sink last asked for; the backlog is not
    /// read before the sink has said it (`bounds_known`).
    pub(super) max_records: usize,
    pub(super) bounds_known: bool,
    /// About how many bytes of bodies a batch holds (a single larger record
    /// goes alone): said once by the sink when it takes its lane
    /// (`LaneHandle::set_max_bytes`), this default until then.
    pub(super) max_bytes: usize,
    pub(super) notify: Arc<Notify>,
}

impl LaneQueue {
    pub(super) fn new(id: Lane) -> LaneQueue {
        LaneQueue {
            id,
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
            bounds_known: false,
            max_bytes: 256 * 1024,
            notify: Arc::new(Notify::new()),
        }
    }

    fn queue(&mut self, kind: Kind) -> &mut VecDeque<Entry> {
        match kind {
            Kind::Event => &mut self.events,
            Kind::Sample => &mut self.live,
        }
    }

    pub(super) fn enqueue(&mut self, e: Entry) {
        self.queue(e.kind).push_back(e);
    }

    /// Records in memory not yet acknowledged and not on disk.
    pub(super) fn memory(&self) -> usize {
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
    pub(super) fn take_memory(
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
    pub(super) fn reset(&mut self) {
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
    pub(super) fn wants_backlog(&self, k: usize) -> bool {
        self.link != Link::Down
            && self.bounds_known
            && self.backlog[k].ready.len() < READY_TARGET / 2
            && self.backlog[k].maybe()
    }

    /// Notes that `key` has rows on disk (again).
    pub(super) fn stream_has_rows(&mut self, key: &StreamKey) {
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
    pub(super) fn add_backlog(
        &mut self,
        key: &StreamKey,
        rows: Vec<Row>,
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
    fn memory_batches_respect_count_bytes_device_and_the_send_gate() {
        let mut lane = LaneQueue::new(Lane::Mqtt);
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
        let mut lane = LaneQueue::new(Lane::Mqtt);
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
        let mut lane = LaneQueue::new(Lane::Mqtt);
        lane.max_records = 2;
        let key = StreamKey {
            kind: Kind::Sample,
            device: "a".into(),
            epoch: 1,
        };
        lane.mem_rows.insert(2);
        lane.gone_rows.insert(3);
        let rows = (1..=6)
            .map(|i| Row {
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
