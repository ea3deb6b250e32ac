//! The spool's unit tests: the whole spool (queue, commit rounds, store)
//! driven through its API, with a real SQLite file in a temporary directory.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::db::Db;
use super::*;
use crate::model::{now_ms, Kind, Reading, Severity, Values};

mod clock;
mod delivery;
mod sequences;
mod store;

fn cfg(dir: &Path, policy: &str, extra: &str) -> SpoolConfig {
    let text = format!(
        "site = \"s\"\n[spool]\npath = \"{}\"\npolicy = \"{policy}\"\n{extra}\n",
        dir.join("spool.db").display()
    );
    crate::config::Config::from_toml(&text).unwrap().spool
}

fn open(c: &SpoolConfig) -> (Arc<Spool>, StartReport, LaneHandle) {
    let (s, r) = Spool::open(c, "s", &[Lane::Mqtt]).unwrap();
    let lane = s.lane(Lane::Mqtt).unwrap();
    lane.set_max_bytes(1 << 20);
    (s, r, lane)
}

fn sample(n: f64) -> Reading {
    let mut v = Values::new();
    v.num("x", n);
    Reading::Sample(v)
}

fn event() -> Reading {
    Reading::Event {
        severity: Severity::Warning,
        code: "t.e".into(),
        message: "m".into(),
        values: Values::new(),
    }
}

/// Waits for a batch, running commit rounds meanwhile as the commit
/// task would (backlog reads, reservations).
async fn next(lane: &LaneHandle, max: usize) -> Batch {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout(Duration::from_millis(20), lane.next_batch(max)).await {
            Ok(b) => return b.unwrap(),
            Err(_) => {
                assert!(tokio::time::Instant::now() < deadline, "a batch is ready");
                let _ = lane.spool().flush(false);
            }
        }
    }
}

/// The store's database, for looking inside in tests.
fn with_db<T>(s: &Spool, f: impl FnOnce(&mut Db) -> T) -> T {
    let mut st = s.store.take();
    let r = f(st.db.as_mut().expect("store open"));
    s.store.put(st);
    r
}

fn seqs(b: &Batch) -> Vec<u64> {
    b.bodies
        .iter()
        .map(|x| {
            serde_json::from_str::<serde_json::Value>(x).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

fn rows(s: &Spool) -> u64 {
    with_db(s, |d| d.row_count().unwrap())
}

fn notices(s: &Spool) -> Vec<Notice> {
    s.take_notices()
}
