//! Reading the disk backlog ahead, for the commit round: which streams a
//! lane wants read, the read itself, and filing what was found into the
//! lanes' ready batches. Only the commit round calls these (the read runs
//! with no lock held, on the commit task's blocking thread); sinks never
//! read the disk, they take batches that were read for them.
//!
//! Damaged rows met here are counted, reported and deleted, never sent and
//! never read again.

use std::collections::BTreeMap;

use super::commit::Store;
use super::db::{self, StreamKey};
use super::health::sql_reason;
use super::queue::{self, Lane};
use super::{DropReason, Notice, Queue, Spool};

/// A lane's backlog read wanted this round: (lane, its generation, streams
/// with their cursors, records per batch).
pub(super) type ReadWant = (usize, u64, Vec<(StreamKey, Option<u64>)>, usize);
/// What a read found: (lane, generation, stream, good rows, bad rows,
/// whether the stream has nothing more).
pub(super) type ReadResult = (usize, u64, StreamKey, Vec<db::Row>, Vec<db::BadRow>, bool);
/// Records which streams of lane `li` want reading this round (under the
/// queue lock; no I/O).
pub(super) fn wants(li: usize, lane: &Lane, reads: &mut Vec<ReadWant>) {
    for k in 0..2 {
        if lane.wants_backlog(k) {
            let streams: Vec<(StreamKey, Option<u64>)> = lane.backlog[k]
                .streams
                .iter()
                .filter(|(_, c)| !c.exhausted)
                .map(|(key, c)| (key.clone(), c.after))
                .collect();
            reads.push((li, lane.gen, streams, lane.max_records.max(1)));
        }
    }
}

/// Reads the wanted windows of the backlog (a reader in WAL mode is not
/// blocked by writers). Runs with no lock held. A read that fails sets
/// `failure` (if nothing failed before) and stops that lane's reads.
pub(super) fn read(
    store: &Store,
    reads: &[ReadWant],
    lane_names: &[String],
    failure: &mut Option<(&'static str, String)>,
) -> Vec<ReadResult> {
    let mut read_results: Vec<ReadResult> = Vec::new();
    if let Some(d) = store.db.as_ref() {
        for (li, gen, streams, max) in reads {
            let limit = (max * 4).clamp(16, 4000);
            let mut batches = 0usize;
            for (key, after) in streams {
                if batches >= queue::READY_TARGET {
                    break;
                }
                match d.window(&lane_names[*li], key, *after, limit) {
                    Ok((good, bad)) => {
                        let done = good.len() + bad.len() < limit;
                        batches += good.len().div_ceil(*max).max(1);
                        read_results.push((*li, *gen, key.clone(), good, bad, done));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reading the backlog failed");
                        if failure.is_none() {
                            *failure = Some(sql_reason(&e, &store.path));
                        }
                        break;
                    }
                }
            }
        }
    }
    read_results
}

/// Files what the reads found into the lanes (under the queue lock): good
/// rows become ready batches, bad rows are counted in `corrupt` by reason
/// and queued for deletion. A read for a lane that started over meanwhile
/// is discarded.
///
/// Rows of this boot taken unsynchronised are corrected here when the
/// clock's base is known (`retime.rs`); returns how many.
pub(super) fn give_back(
    q: &mut Queue,
    read_results: Vec<ReadResult>,
    corrupt: &mut BTreeMap<&'static str, u64>,
) -> super::retime::Corrected {
    let mut next_id = q.next_batch_id;
    let mut timed = super::retime::Corrected::default();
    for (li, gen, key, mut good, bad, done) in read_results {
        if q.lanes[li].gen != gen {
            continue;
        }
        let timing = q.time_rows(&mut good, &mut timed);
        let lane = &mut q.lanes[li];
        if lane.gen != gen {
            continue;
        }
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
    q.next_batch_id = next_id;
    timed
}

impl Spool {
    /// Counts, logs and reports the damaged rows a round found.
    pub(super) fn report_corrupt(&self, corrupt: BTreeMap<&'static str, u64>) {
        if !corrupt.is_empty() {
            let count: u64 = corrupt.values().sum();
            let reason = corrupt
                .iter()
                .map(|(r, n)| format!("{r} ({n})"))
                .collect::<Vec<_>>()
                .join(", ");
            tracing::error!(records = count, %reason, "damaged spool rows dropped");
            self.count_drop(DropReason::Corrupt, count);
            self.notice(Notice::CorruptRecords { count, reason });
        }
    }
}
