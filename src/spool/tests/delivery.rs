//! Delivery from the queue: live records, events first, spilling to disk
//! when unacknowledged or the link is down, nacks, `wal`, the backlog in
//! order, setting aside, and never waiting for the disk.

use super::*;

/// Asserts the lane hands out no batch within 200 ms; `why` says what
/// should have held it back.
async fn nothing_sent(lane: &LaneHandle, why: &str) {
    assert!(
        tokio::time::timeout(Duration::from_millis(200), lane.next_batch(100))
            .await
            .is_err(),
        "{why}"
    );
}

/// The record just pushed is held back until a commit round writes it
/// (`committed` says why it should be on disk), then sent: returns the
/// batch that carries it.
async fn sent_after_its_commit(s: &Spool, lane: &LaneHandle, committed: &str) -> Batch {
    nothing_sent(lane, "nothing is sent before its commit").await;
    s.flush(false).unwrap();
    assert_eq!(rows(s), 1, "{committed}");
    next(lane, 100).await
}

/// The record just pushed is sent from memory without a commit round
/// (waits up to 5 s, so a loaded machine does not fail it).
async fn sent_without_a_commit(lane: &LaneHandle) -> Batch {
    tokio::time::timeout(Duration::from_secs(5), lane.next_batch(100))
        .await
        .expect("sent without a commit")
        .unwrap()
}

/// Acknowledges `b`; the next commit round leaves no row in the store.
fn ack_deletes(s: &Spool, lane: &LaneHandle, b: Batch) {
    lane.ack(b.id);
    s.flush(false).unwrap();
    assert_eq!(rows(s), 0);
}

#[tokio::test]
async fn live_record_acked_never_touches_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
    lane.set_link(true);
    let dev: Arc<str> = Arc::from("d");
    assert_eq!(s.push(&dev, sample(1.0)).unwrap(), 0);
    let b = next(&lane, 100).await;
    assert!(!b.historical);
    assert_eq!(seqs(&b), vec![0]);
    assert_eq!(lane.ack(b.id), 1);
    s.flush(false).unwrap();
    assert_eq!(rows(&s), 0);
    assert_eq!(s.counters().spilled.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn nothing_is_written_before_the_first_connection_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
    s.push(&Arc::from("d"), sample(0.0)).unwrap();
    s.flush(false).unwrap();
    assert_eq!(rows(&s), 0, "link unknown at start: wait in memory");
    lane.set_link(false);
    s.flush(false).unwrap();
    assert_eq!(rows(&s), 1, "link down: written");
}

#[tokio::test]
async fn events_go_first() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
    lane.set_link(true);
    let dev: Arc<str> = Arc::from("d");
    s.push(&dev, sample(1.0)).unwrap();
    s.push(&dev, event()).unwrap();
    assert_eq!(next(&lane, 100).await.kind, Kind::Event);
    assert_eq!(next(&lane, 100).await.kind, Kind::Sample);
}

#[tokio::test]
async fn link_down_spills_and_backlog_is_batched_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
    lane.set_link(false);
    let a: Arc<str> = Arc::from("a");
    let b: Arc<str> = Arc::from("b");
    for i in 0..250 {
        s.push(&a, sample(i as f64)).unwrap();
        s.push(&b, sample(i as f64)).unwrap();
    }
    s.flush(false).unwrap();
    assert_eq!(rows(&s), 500);
    assert_eq!(s.stats().memory, 0);
    lane.set_link(true);
    let mut got: HashMap<String, Vec<u64>> = HashMap::new();
    let mut ids = Vec::new();
    while got.values().map(|v| v.len()).sum::<usize>() < 500 {
        let batch = next(&lane, 100).await;
        assert!(batch.historical);
        assert!(batch.bodies.len() <= 100);
        got.entry(batch.device.to_string())
            .or_default()
            .extend(seqs(&batch));
        ids.push(batch.id);
    }
    for dev in ["a", "b"] {
        assert_eq!(got[dev], (0..250).collect::<Vec<u64>>(), "{dev} in order");
    }
    for id in ids {
        lane.ack(id);
    }
    s.flush(false).unwrap();
    assert_eq!(rows(&s), 0);
}

#[tokio::test]
async fn unacked_after_spill_after_goes_to_disk_and_ack_deletes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, lane) = open(&cfg(dir.path(), "spill", "spill_after = \"0s\""));
    lane.set_link(true);
    let dev: Arc<str> = Arc::from("d");
    s.push(&dev, sample(1.0)).unwrap();
    let b = next(&lane, 100).await;
    s.flush(false).unwrap();
    assert_eq!(rows(&s), 1, "in flight too long: written");
    // The backlog reader does not send it a second time.
    lane.set_link(true);
    s.flush(false).unwrap();
    nothing_sent(&lane, "the backlog reader does not send it a second time").await;
    ack_deletes(&s, &lane, b);
}

#[tokio::test]
async fn nack_requeues_memory_records_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
    lane.set_link(true);
    let a: Arc<str> = Arc::from("a");
    let b: Arc<str> = Arc::from("b");
    s.push(&a, sample(0.0)).unwrap();
    s.push(&b, sample(0.0)).unwrap();
    let first = next(&lane, 100).await;
    let second = next(&lane, 100).await;
    assert_eq!((&*first.device, &*second.device), ("a", "b"));
    lane.nack_all();
    let again = next(&lane, 100).await;
    assert_eq!(&*again.device, "a");
    assert_eq!(seqs(&again), vec![0]);
    // Link down: the next commit writes everything left in memory.
    lane.set_link(false);
    lane.nack_all();
    s.flush(false).unwrap();
    assert_eq!(rows(&s), 2);
}

#[tokio::test]
async fn wal_commits_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, lane) = open(&cfg(dir.path(), "wal", ""));
    lane.set_link(true);
    let dev: Arc<str> = Arc::from("d");
    s.push(&dev, sample(1.0)).unwrap();
    let b = sent_after_its_commit(&s, &lane, "committed").await;
    assert!(!b.historical, "sent live from memory once committed");
    ack_deletes(&s, &lane, b);
}

/// Write-through switched on at run time (the UPS on battery) behaves as
/// policy `wal` until it is switched off again.
#[tokio::test]
async fn write_through_at_run_time_commits_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
    lane.set_link(true);
    let dev: Arc<str> = Arc::from("d");
    assert!(!s.write_through());
    s.set_write_through(true);
    s.push(&dev, sample(1.0)).unwrap();
    let b = sent_after_its_commit(&s, &lane, "committed first").await;
    assert!(!b.historical);
    ack_deletes(&s, &lane, b);
    // Off again: straight from memory, nothing written.
    s.set_write_through(false);
    s.push(&dev, sample(2.0)).unwrap();
    let b = sent_without_a_commit(&lane).await;
    ack_deletes(&s, &lane, b);
}

/// The events that declare what a crash took (gateway.unclean_stop, ...)
/// are committed before they are sent whatever the policy: a kill right
/// after the start must not take the declaration too. Other events are not.
#[tokio::test]
async fn declaring_events_are_committed_before_they_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
    lane.set_link(true);
    let dev: Arc<str> = Arc::from("gateway");
    let ev = |code: &str| Reading::Event {
        severity: Severity::Warning,
        code: code.into(),
        message: "m".into(),
        values: Values::new(),
    };
    s.push(&dev, ev(crate::events::GATEWAY_UNCLEAN_STOP.code))
        .unwrap();
    let b = sent_after_its_commit(&s, &lane, "on the card first").await;
    ack_deletes(&s, &lane, b);
    // An ordinary event goes straight from memory.
    s.push(&dev, ev("t.e")).unwrap();
    let b = sent_without_a_commit(&lane).await;
    lane.ack(b.id);
}

#[tokio::test]
async fn memory_bound_spills_oldest_even_with_link_up() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, lane) = open(&cfg(dir.path(), "spill", "memory_max = 10"));
    lane.set_link(true);
    let dev: Arc<str> = Arc::from("d");
    for i in 0..25 {
        s.push(&dev, sample(i as f64)).unwrap();
    }
    s.flush(false).unwrap();
    assert_eq!(rows(&s), 15);
    assert_eq!(s.stats().memory, 10);
}

#[tokio::test]
async fn push_and_next_batch_never_wait_for_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
    lane.set_link(true);
    let dev: Arc<str> = Arc::from("d");
    s.push(&dev, sample(0.0)).unwrap();
    let b = next(&lane, 10).await;
    lane.ack(b.id);
    // A commit round that takes long (a slow SD card) holds the store,
    // not the queue.
    let store = s.store.take();
    let t = Instant::now();
    for i in 0..100 {
        s.push(&dev, sample(i as f64)).unwrap();
    }
    // The store is held until the end: a queue that waited for it would
    // wait for ever, so a bound of seconds tells the two apart on a
    // loaded machine too.
    let b = tokio::time::timeout(Duration::from_secs(5), lane.next_batch(1000))
        .await
        .expect("a live batch while the store is busy")
        .unwrap();
    assert_eq!(b.bodies.len(), 100);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    s.store.put(store);
}

#[tokio::test]
async fn backlog_leaves_in_seq_order_after_nacks_and_spills() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, lane) = open(&cfg(dir.path(), "spill", "spill_after = \"0s\""));
    lane.set_link(true);
    let dev: Arc<str> = Arc::from("d");
    for i in 0..10 {
        s.push(&dev, sample(i as f64)).unwrap();
        s.push(&dev, event()).unwrap();
    }
    // Some in flight (written because spill_after passed), the rest
    // queued; then the link goes down and everything goes to disk.
    let mut taken = Vec::new();
    for _ in 0..3 {
        taken.push(next(&lane, 2).await);
    }
    s.flush(false).unwrap();
    lane.set_link(false);
    lane.nack_all();
    for i in 10..20 {
        s.push(&dev, sample(i as f64)).unwrap();
    }
    s.flush(false).unwrap();
    lane.set_link(true);
    let mut got: HashMap<Kind, Vec<u64>> = HashMap::new();
    while got.values().map(|v| v.len()).sum::<usize>() < 30 {
        let b = next(&lane, 3).await;
        assert!(b.historical);
        got.entry(b.kind).or_default().extend(seqs(&b));
        lane.ack(b.id);
    }
    assert_eq!(got[&Kind::Sample], (0..20).collect::<Vec<u64>>());
    assert_eq!(got[&Kind::Event], (0..10).collect::<Vec<u64>>());
}

#[tokio::test]
async fn a_set_aside_batch_is_never_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
    lane.set_link(false);
    let dev: Arc<str> = Arc::from("d");
    s.push(&dev, sample(0.0)).unwrap();
    s.push(&dev, sample(1.0)).unwrap();
    s.flush(false).unwrap();
    lane.set_link(true);
    let b = next(&lane, 1).await;
    lane.set_aside(b.id, "too large");
    let b2 = next(&lane, 1).await;
    assert_eq!(seqs(&b2), vec![1]);
    lane.ack(b2.id);
    lane.nack_all();
    s.flush(false).unwrap();
    s.flush(false).unwrap();
    assert_eq!(rows(&s), 0);
    assert_eq!(s.counters().dropped(DropReason::TooLarge), 1);
    assert!(notices(&s)
        .iter()
        .any(|n| matches!(n, Notice::Quarantined { seq: 0, .. })));
}

#[tokio::test]
async fn setting_aside_a_mixed_batch_keeps_the_small_records() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, lane) = open(&cfg(dir.path(), "spill", ""));
    lane.set_link(false);
    let dev: Arc<str> = Arc::from("d");
    s.push(&dev, sample(0.0)).unwrap();
    let mut big = Values::new();
    big.set("blob", "x".repeat(5000));
    s.push(&dev, Reading::Sample(big)).unwrap();
    s.push(&dev, sample(2.0)).unwrap();
    s.flush(false).unwrap();
    lane.set_link(true);
    // Bounds large enough for all three (as read ahead before the sink
    // said its own), then the sink finds the message too large.
    let b = next(&lane, 100).await;
    assert_eq!(seqs(&b), vec![0, 1, 2]);
    lane.set_aside(b.id, "too large");
    let mut got = Vec::new();
    while got.len() < 2 {
        let b = next(&lane, 100).await;
        got.extend(seqs(&b));
        lane.ack(b.id);
    }
    assert_eq!(got, vec![0, 2], "only the large record was set aside");
    assert_eq!(s.counters().dropped(DropReason::TooLarge), 1);
}
