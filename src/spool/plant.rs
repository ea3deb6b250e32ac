//! Planted losses, for the fault suite's self-check only (`scripts/faults
//! --planted`): compiled only with the `plant-faults` feature, which no
//! release build enables (scripts/cross-build and cargo-deb build without
//! it), and active only when `WARDGATE_PLANT` names one of them. Each one
//! silently loses one device reading, once per run of the process: no
//! counter, no event, no log line, exactly what the suite must catch.
//!
//! - `spooled`: in a commit round while running, the newest device
//!   reading picked for a spill write (one never sent: a reading taken
//!   while the link is down) is taken out of memory and never written:
//!   lost on its way to the card.
//! - `tail`: at a clean stop, in the round that writes everything left in
//!   memory (the sources have stopped), the newest device reading not yet
//!   written is thrown away: the last record of its stream.
//! - `on_disk`: once the process has run 4.5 s, the first device reading
//!   it committed to the card and that is still there is deleted (the
//!   depth counter follows, so nothing shows): a record lost after it was
//!   safely on disk, and well before any kill that could excuse it.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::db::{Db, NewRow};
use super::queue::{Entry, Queue};
use super::report::SpoolCounters;
use crate::model::Kind;

/// Which loss `WARDGATE_PLANT` asks for, if this is it.
fn wanted(name: &str) -> bool {
    std::env::var("WARDGATE_PLANT").is_ok_and(|v| v == name)
}

fn is_device(kind: Kind, device: &str) -> bool {
    kind == Kind::Sample && device != crate::ids::GATEWAY_DEVICE
}

/// A reading of a device (not the gateway's own telemetry or events).
fn device_reading(e: &Entry) -> bool {
    is_device(e.kind, &e.device)
}

static SPOOLED: AtomicBool = AtomicBool::new(false);
static TAIL: AtomicBool = AtomicBool::new(false);
static ON_DISK: AtomicBool = AtomicBool::new(false);
/// The first row this process wrote for a device reading (0: none yet).
static FIRST_ROW: AtomicI64 = AtomicI64::new(0);
/// When this process first committed to the card.
static STARTED: OnceLock<Instant> = OnceLock::new();

/// `spooled`: drops the newest device reading about to be spilled from a
/// lane's memory queue, from both the write and the queue. Called with the
/// queue locked, after the commit round chose its writes (not in the last
/// round at a stop: that is `tail`).
pub(super) fn spooled(q: &mut Queue, writes: &mut Vec<(Option<usize>, Entry)>) {
    if !wanted("spooled") || SPOOLED.load(Ordering::Relaxed) {
        return;
    }
    let pick = writes
        .iter()
        .enumerate()
        .filter(|(_, (lane, e))| {
            device_reading(e)
                && lane.is_some_and(|li| q.lanes[li].live.iter().any(|m| m.rid == e.rid))
        })
        .max_by_key(|(_, (_, e))| e.rid)
        .map(|(i, _)| i);
    let Some(i) = pick else { return };
    let (lane, e) = writes.remove(i);
    if let Some(li) = lane {
        q.lanes[li].live.retain(|m| m.rid != e.rid);
    }
    SPOOLED.store(true, Ordering::Relaxed);
}

/// `tail`: at a clean stop, in the commit round that writes everything
/// left in memory, throws away the newest device reading not yet written.
/// Called with the queue locked.
pub(super) fn tail(q: &mut Queue) {
    if !wanted("tail") || TAIL.load(Ordering::Relaxed) {
        return;
    }
    let newest = q
        .lanes
        .iter()
        .flat_map(|l| l.live.iter())
        .filter(|e| device_reading(e) && e.row.is_none() && !e.writing)
        .max_by_key(|e| e.rid)
        .map(|e| e.rid);
    if let Some(rid) = newest {
        for lane in q.lanes.iter_mut() {
            lane.live.retain(|m| m.rid != rid);
        }
        TAIL.store(true, Ordering::Relaxed);
    }
}

/// `on_disk`: after a commit that wrote `rows` as `ids`; see the module
/// comment.
pub(super) fn on_disk(db: &mut Db, rows: &[NewRow<'_>], ids: &[i64], counters: &SpoolCounters) {
    if !wanted("on_disk") || ON_DISK.load(Ordering::Relaxed) {
        return;
    }
    let started = *STARTED.get_or_init(Instant::now);
    if FIRST_ROW.load(Ordering::Relaxed) == 0 {
        if let Some((_, id)) = rows
            .iter()
            .zip(ids)
            .find(|(r, _)| is_device(r.kind, r.device))
        {
            FIRST_ROW.store(*id, Ordering::Relaxed);
        }
    }
    let first = FIRST_ROW.load(Ordering::Relaxed);
    if first == 0 || started.elapsed() < Duration::from_millis(4500) {
        return;
    }
    let deleted = db.conn.execute(
        "DELETE FROM rec WHERE id = (SELECT min(id) FROM rec \
         WHERE kind = 0 AND device != ?1 AND id >= ?2)",
        rusqlite::params![crate::ids::GATEWAY_DEVICE, first],
    );
    if let Ok(1) = deleted {
        counters.disk_rows.fetch_sub(1, Ordering::Relaxed);
        ON_DISK.store(true, Ordering::Relaxed);
    }
}
