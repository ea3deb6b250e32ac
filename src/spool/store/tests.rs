//! The store's rules: a full spool drops events past their share first,
//! and a full disk deletes before it writes.

use std::sync::Arc;

use super::caps::first_to_drop;
use super::*;
use crate::model::Kind;
use crate::model::{Reading, Severity, Values};
use crate::spool::report::EVENT_SHARE;
use crate::spool::{DropReason, Lane, Spool};

#[test]
fn events_past_their_share_go_first() {
    assert_eq!(first_to_drop(1000, 10, 50), (Kind::Sample, 50));
    assert_eq!(first_to_drop(1000, 250, 50), (Kind::Sample, 50));
    assert_eq!(first_to_drop(1000, 260, 50), (Kind::Event, 10));
    assert_eq!(first_to_drop(1000, 900, 50), (Kind::Event, 50));
    assert_eq!(first_to_drop(3, 3, 1), (Kind::Event, 1));
}

/// A device flapping ten events per sample into a full spool: the
/// telemetry stays, the events are held to their share.
#[tokio::test]
async fn an_event_storm_cannot_push_telemetry_out() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "site = \"s\"\n[spool]\npath = \"{}\"\nmax_bytes = \"64 KiB\"\n",
        dir.path().join("spool.db").display()
    );
    let cfg = crate::config::Config::from_toml(&text).unwrap().spool;
    let (s, _) = Spool::open(&cfg, "s", &[Lane::Mqtt]).unwrap();
    s.lane(Lane::Mqtt).unwrap().set_link(false);
    let dev: Arc<str> = Arc::from("d");
    for i in 0..4000 {
        let r = if i % 11 == 0 {
            let mut v = Values::new();
            v.num("x", f64::from(i));
            Reading::Sample(v)
        } else {
            Reading::Event {
                severity: Severity::Warning,
                code: "device.fault".into(),
                message: format!("flap {i}"),
                values: Values::new(),
            }
        };
        s.push(&dev, r).unwrap();
        if i % 200 == 0 {
            s.flush(false).unwrap();
        }
    }
    s.flush(false).unwrap();
    let mut st = s.store.take();
    let db = st.db.as_mut().unwrap();
    let (rows, events) = (db.row_count().unwrap(), db.count_kind(Kind::Event).unwrap());
    assert!(db.used_bytes().unwrap() <= 64 * 1024);
    s.store.put(st);
    assert!(events > 0, "events are kept too");
    assert!(rows - events >= rows / 2, "{events} events of {rows} rows");
    assert!(
        events <= rows / EVENT_SHARE + rows / 10,
        "{events} events of {rows} rows"
    );
    assert!(s.counters().dropped(DropReason::Full) > 0);
}

fn disk_full() -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
        Some("database or disk is full".into()),
    )
}

/// The full-disk fallback: the deletions count as done only when the
/// commit that carried them succeeded (rows still on disk must stay on the
/// backlog's skip list, or they are sent again in the same run).
#[test]
fn a_full_disk_deletes_first_and_says_what_was_deleted() {
    let new = NewRow {
        sink: "mqtt",
        kind: Kind::Sample,
        device: "d",
        epoch: 1,
        seq: 0,
        ts: 0,
        synced: true,
        body: "{}",
        boot: "b",
        boottime: 0,
    };
    let rows = [new];
    let meta = [("dropped".to_owned(), 1)];
    // (rows, deletions) of each call, and what each call answers.
    let run = |answers: Vec<rusqlite::Result<(Vec<i64>, usize)>>| {
        // (calls, checkpoints)
        let mut seen: (Vec<(usize, usize)>, u32) = (Vec::new(), 0);
        let mut answers = answers.into_iter();
        let out = commit_or_free(
            &mut seen,
            (&rows, &[7, 8], &meta),
            |seen, r, d, _| {
                seen.0.push((r.len(), d.len()));
                answers.next().expect("an answer per call")
            },
            |seen| seen.1 += 1,
        );
        (out, seen.0, seen.1)
    };

    // Healthy: one commit carries everything.
    let (out, calls, cp) = run(vec![Ok((vec![11], 2))]);
    assert_eq!((out.written.unwrap(), out.deleted), (vec![11], Some(2)));
    assert_eq!((calls, cp), (vec![(1, 2)], 0));

    // Full, the deletions free room, the rows then fit.
    let (out, calls, cp) = run(vec![Err(disk_full()), Ok((vec![], 2)), Ok((vec![12], 0))]);
    assert_eq!((out.written.unwrap(), out.deleted), (vec![12], Some(2)));
    assert_eq!((calls, cp), (vec![(1, 2), (0, 2), (1, 0)], 1));

    // Full, the deletions fail, the rows fit anyway: NOT deleted.
    let (out, _, _) = run(vec![Err(disk_full()), Err(disk_full()), Ok((vec![13], 0))]);
    assert_eq!((out.written.unwrap(), out.deleted), (vec![13], None));

    // Full, deleted, the rows still do not fit.
    let (out, _, _) = run(vec![Err(disk_full()), Ok((vec![], 2)), Err(disk_full())]);
    assert!(out.written.is_err());
    assert_eq!(out.deleted, Some(2));

    // Another error: no second try, nothing deleted.
    let (out, calls, cp) = run(vec![Err(rusqlite::Error::InvalidQuery)]);
    assert!(out.written.is_err());
    assert_eq!((out.deleted, calls.len(), cp), (None, 1, 0));
}
