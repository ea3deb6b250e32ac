//! The store: caps (size, age), damaged rows and files, a store that
//! cannot be written, upgrades and deletes that fail.

use super::*;

#[tokio::test]
async fn full_spool_drops_oldest_telemetry_keeps_events() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, lane) = open(&cfg(dir.path(), "spill", "max_bytes = \"64 KiB\""));
    lane.set_link(false);
    let dev: Arc<str> = Arc::from("d");
    for i in 0..3000 {
        s.push(&dev, sample(i as f64)).unwrap();
        if i % 100 == 0 {
            s.push(&dev, event()).unwrap();
        }
        if i % 500 == 0 {
            s.flush(false).unwrap();
        }
    }
    s.flush(false).unwrap();
    with_db(&s, |db| {
        assert!(db.used_bytes().unwrap() <= 64 * 1024);
        assert_eq!(db.count_kind(Kind::Event).unwrap(), 30, "every event kept");
        let oldest: i64 = db
            .conn
            .query_row("SELECT MIN(seq) FROM rec WHERE kind = 0", [], |r| r.get(0))
            .unwrap();
        assert!(oldest > 0, "oldest telemetry went first");
    });
    assert!(s.counters().dropped_full.load(Ordering::Relaxed) > 0);
    assert_eq!(s.stats().dropped, s.counters().dropped_total());
}

#[tokio::test]
async fn max_age_drops_old_synced_records_only() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
    lane.set_link(false);
    let dev: Arc<str> = Arc::from("d");
    for i in 0..4 {
        s.push(&dev, sample(i as f64)).unwrap();
    }
    s.flush(false).unwrap();
    let mut st = s.store.take();
    let db = st.db.as_mut().unwrap();
    // Two old readings, one taken with a synchronised clock, one not.
    db.conn
        .execute("UPDATE rec SET ts = 1000, synced = 1 WHERE seq = 0", [])
        .unwrap();
    db.conn
        .execute("UPDATE rec SET ts = 1000, synced = 0 WHERE seq = 1", [])
        .unwrap();
    db.conn
        .execute("UPDATE rec SET synced = 1 WHERE seq >= 2", [])
        .unwrap();
    assert_eq!(db.drop_older_than(now_ms() - 86_400_000).unwrap(), 1);
    assert_eq!(
        db.row_count().unwrap(),
        3,
        "an unsynced timestamp is not trusted"
    );
}

#[tokio::test]
async fn garbage_file_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("spool.db"),
        b"this is not a database, not at all....",
    )
    .unwrap();
    let (s, r, _) = open(&cfg(dir.path(), "spill", ""));
    let (aside, reason) = r.moved_aside.expect("moved aside");
    assert!(aside
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("spool.db.corrupt-"));
    assert!(!reason.is_empty());
    assert!(aside.exists());
    s.push(&Arc::from("d"), sample(0.0)).unwrap();
}

#[tokio::test]
async fn corrupt_rows_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
    lane.set_link(false);
    let dev: Arc<str> = Arc::from("d");
    s.push(&dev, sample(0.0)).unwrap();
    s.flush(false).unwrap();
    with_db(&s, |d| {
        d.conn
            .execute("UPDATE rec SET body = 'garbage'", [])
            .unwrap()
    });
    s.push(&dev, sample(1.0)).unwrap();
    s.flush(false).unwrap();
    lane.set_link(true);
    let b = next(&lane, 100).await;
    assert_eq!(seqs(&b), vec![1]);
    assert_eq!(s.counters().dropped_corrupt.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn damaged_rows_are_dropped_counted_reported_and_never_block() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
    lane.set_link(false);
    let dev: Arc<str> = Arc::from("c");
    for i in 0..6 {
        s.push(&dev, sample(i as f64)).unwrap();
    }
    s.flush(false).unwrap();
    notices(&s);
    with_db(&s, |d| {
        // A bit flip inside a body, a device id that a topic cannot
        // carry (c -> #), a body that is not text.
        d.conn
            .execute(
                "UPDATE rec SET body = replace(body, '\"x\"', '\"y\"') WHERE seq = 1",
                [],
            )
            .unwrap();
        d.conn
            .execute("UPDATE rec SET device = '#' WHERE seq = 2", [])
            .unwrap();
        d.conn
            .execute("UPDATE rec SET body = x'00ff10' WHERE seq = 4", [])
            .unwrap();
    });
    // Damage is found when the rows are read back after a restart.
    s.close().unwrap();
    drop((s, lane));
    let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
    lane.set_link(true);
    let mut got = Vec::new();
    while got.len() < 3 {
        let b = next(&lane, 100).await;
        assert_eq!(&*b.device, "c");
        for body in &b.bodies {
            serde_json::from_str::<serde_json::Value>(body).expect("only valid JSON is sent");
        }
        got.extend(seqs(&b));
        lane.ack(b.id);
    }
    assert_eq!(got, vec![0, 3, 5]);
    // The '#' row sits in a stream of its own: read it too.
    for _ in 0..3 {
        s.flush(false).unwrap();
    }
    assert_eq!(s.counters().dropped(DropReason::Corrupt), 3);
    let n = notices(&s);
    let count: u64 = n
        .iter()
        .map(|n| match n {
            Notice::CorruptRecords { count, .. } => *count,
            _ => 0,
        })
        .sum();
    assert_eq!(count, 3, "{n:?}");
    assert_eq!(rows(&s), 0, "damaged and acknowledged rows deleted");
}

#[tokio::test]
async fn unwritable_store_degrades_live_readings_flow_and_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    // The spool's directory is a file: nothing can be created there.
    let blocker = dir.path().join("state");
    std::fs::write(&blocker, b"").unwrap();
    let text = format!(
        "site = \"s\"\n[spool]\npath = \"{}\"\n",
        blocker.join("spool.db").display()
    );
    let c = crate::config::Config::from_toml(&text).unwrap().spool;
    let (s, _, lane) = open(&c);
    let n = notices(&s);
    assert!(
        n.iter().any(|n| matches!(n, Notice::Degraded { .. })),
        "{n:?}"
    );
    assert!(
        n.iter().any(|n| matches!(n, Notice::SequenceReset { .. })),
        "{n:?}"
    );
    assert!(s.stats().degraded.is_some());
    lane.set_link(true);
    let dev: Arc<str> = Arc::from("d");
    s.push(&dev, sample(1.0)).unwrap();
    let b = next(&lane, 10).await;
    assert_eq!(seqs(&b), vec![0], "live readings flow from memory");
    lane.ack(b.id);
    // The card is fixed: the store is tried again and works.
    std::fs::remove_file(&blocker).unwrap();
    std::fs::create_dir(&blocker).unwrap();
    {
        let mut st = s.store.take();
        st.health.next_try = Instant::now();
        s.store.put(st);
    }
    s.flush(false).unwrap();
    assert!(s.stats().degraded.is_none());
    assert!(notices(&s)
        .iter()
        .any(|n| matches!(n, Notice::Restored { .. })));
    s.push(&dev, sample(2.0)).unwrap();
    lane.set_link(false);
    s.flush(false).unwrap();
    assert_eq!(rows(&s), 1);
    s.close().unwrap();
    assert!(
        blocker.join("spool.db.seq").exists(),
        "positions kept once writable"
    );
}

#[tokio::test]
async fn a_first_version_spool_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = rusqlite::Connection::open(dir.path().join("spool.db")).unwrap();
        c.execute_batch(
            "CREATE TABLE rec (id INTEGER PRIMARY KEY, sink TEXT NOT NULL, kind INTEGER NOT NULL,
               device TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL,
               synced INTEGER NOT NULL, body TEXT NOT NULL);
             CREATE INDEX rec_lane ON rec(sink, kind, id);
             CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
             INSERT INTO meta VALUES ('seq/0/d', 7), ('clean', 1);
             INSERT INTO rec (sink, kind, device, seq, ts, synced, body) VALUES
               ('mqtt', 0, 'd', 5, 1, 1, '{\"seq\":5,\"ts\":1,\"clock\":\"synced\",\"values\":{}}'),
               ('mqtt', 0, 'd', 6, 2, 1, '{\"seq\":6,\"ts\":2,\"clock\":\"synced\",\"values\":{}}');",
        )
        .unwrap();
    }
    let c = cfg(dir.path(), "spill", "");
    {
        let (s, r, lane) = open(&c);
        assert!(r.moved_aside.is_none() && r.resumed_unclean.is_empty());
        assert_eq!(s.epoch(), 0, "the old numbers continue in epoch 0");
        assert!(notices(&s).is_empty(), "no reset: positions were kept");
        assert_eq!(s.push(&Arc::from("d"), sample(0.0)).unwrap(), 7);
        lane.set_link(true);
        let live = next(&lane, 10).await;
        assert_eq!(
            (live.historical, seqs(&live)),
            (false, vec![7]),
            "live first"
        );
        let b = next(&lane, 10).await;
        assert!(b.historical, "then the old backlog");
        assert_eq!((seqs(&b), b.epoch), (vec![5, 6], 0));
        lane.ack(b.id);
        lane.ack(live.id);
        s.close().unwrap();
    }
    // The old copy of the positions is gone: losing the positions file
    // now starts a new epoch instead of trusting it.
    std::fs::remove_file(dir.path().join("spool.db.seq")).unwrap();
    let (s, _, _) = open(&c);
    assert_ne!(s.epoch(), 0);
}

#[tokio::test]
async fn wrong_schema_file_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = rusqlite::Connection::open(dir.path().join("spool.db")).unwrap();
        c.execute_batch("CREATE TABLE rec (x); INSERT INTO rec VALUES (1);")
            .unwrap();
    }
    let (s, r, _) = open(&cfg(dir.path(), "spill", ""));
    let (_, reason) = r.moved_aside.expect("moved aside");
    assert!(reason.contains("not a wardgate spool"), "{reason}");
    s.push(&Arc::from("d"), sample(0.0)).unwrap();
}

#[tokio::test]
async fn acknowledged_rows_that_cannot_be_deleted_are_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
    lane.set_link(false);
    let dev: Arc<str> = Arc::from("d");
    for i in 0..3 {
        s.push(&dev, sample(i as f64)).unwrap();
    }
    s.flush(false).unwrap();
    lane.set_link(true);
    let b = next(&lane, 100).await;
    assert_eq!(seqs(&b), vec![0, 1, 2]);
    lane.ack(b.id);
    // The store is busy (or failing) and has not deleted them yet; the
    // link drops and comes back: they are not read again.
    lane.nack_all();
    s.push(&dev, sample(3.0)).unwrap();
    let b = next(&lane, 100).await;
    assert_eq!(seqs(&b), vec![3]);
}
