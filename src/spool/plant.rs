//! Planted losses, for the fault suite's self-check only (`scripts/faults
//! --planted`): compiled only with the `plant-faults` feature, which no
//! release build enables (scripts/cross-build and cargo-deb build without
//! it), and active only when `WARDGATE_PLANT` names one of them. Each one
//! silently loses one record, once per run of the process: no counter, no
//! event, no log line, exactly what the suite must catch.
//!
//! - `spooled`: a record picked for a spill write is taken out of memory
//!   and never written (lost on its way to the card).
//! - `tail`: at a clean stop, the newest reading of a device still in
//!   memory is thrown away instead of written (the last record of its
//!   stream).
//! - `on_disk`: at start, the oldest reading of a device already committed
//!   to the card is deleted.

use std::sync::atomic::{AtomicBool, Ordering};

use super::db::Db;
use super::queue::Entry;
use super::Queue;
use crate::model::Kind;

/// Which loss `WARDGATE_PLANT` asks for, if this is it.
fn wanted(name: &str) -> bool {
    std::env::var("WARDGATE_PLANT").is_ok_and(|v| v == name)
}

/// A reading of a device (not the gateway's own telemetry or events).
fn device_reading(e: &Entry) -> bool {
    e.kind == Kind::Sample && &*e.device != crate::config::GATEWAY_DEVICE
}

static SPOOLED: AtomicBool = AtomicBool::new(false);

/// `spooled`: drops the first device reading about to be spilled from a
/// lane's memory queue, from both the write and the queue. Called with the
/// queue locked, after the commit round chose its writes.
pub(super) fn spooled(q: &mut Queue, writes: &mut Vec<(Option<usize>, Entry)>) {
    if !wanted("spooled") || SPOOLED.load(Ordering::Relaxed) {
        return;
    }
    let pick = writes.iter().position(|(lane, e)| {
        lane.is_some_and(|li| q.lanes[li].live.iter().any(|m| m.rid == e.rid)) && device_reading(e)
    });
    let Some(i) = pick else { return };
    let (lane, e) = writes.remove(i);
    if let Some(li) = lane {
        q.lanes[li].live.retain(|m| m.rid != e.rid);
    }
    SPOOLED.store(true, Ordering::Relaxed);
}

/// `tail`: at a clean stop, before the last commit writes what is in
/// memory, throws away the newest device reading not yet written.
pub(super) fn tail(q: &mut Queue) {
    if !wanted("tail") {
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
    }
}

/// `on_disk`: at start, before the rows are counted, deletes the oldest
/// device reading on disk.
pub(super) fn on_disk(db: Db) -> Db {
    if wanted("on_disk") {
        let _ = db.conn.execute(
            "DELETE FROM rec WHERE id = (SELECT min(id) FROM rec WHERE kind = 0 AND device != ?1)",
            [crate::config::GATEWAY_DEVICE],
        );
    }
    db
}
