//! Sequence numbers and epochs across clean and unclean restarts, and
//! when the positions are lost.

use super::*;

#[tokio::test]
async fn sequences_survive_clean_and_unclean_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path(), "spill", "");
    let dev: Arc<str> = Arc::from("d");
    {
        let (s, r, _) = open(&c);
        assert!(r.resumed_unclean.is_empty());
        for _ in 0..3 {
            s.push(&dev, sample(0.0)).unwrap();
        }
        s.push(&dev, event()).unwrap();
        s.close().unwrap();
    }
    {
        let (s, r, _) = open(&c);
        assert!(r.resumed_unclean.is_empty(), "clean stop");
        assert_eq!(s.push(&dev, sample(0.0)).unwrap(), 3);
        assert_eq!(s.push(&dev, event()).unwrap(), 1);
        // Dropped without close: a crash.
    }
    let (s, r, _) = open(&c);
    assert_eq!(s.push(&dev, sample(0.0)).unwrap(), 3 + SEQ_BLOCK);
    let d = r
        .resumed_unclean
        .iter()
        .find(|x| x.device == "d" && x.kind == Kind::Sample)
        .expect("d's samples resumed");
    assert_eq!(d.at, 3 + SEQ_BLOCK);
    assert_eq!(d.last_used, Some(3), "exact after a crash on the same boot");
    // The first run's records were written at its clean stop; the
    // crashed run's two were still in memory (within spill_after) and
    // are the loss a crash may cause.
    assert_eq!(rows(&s), 4);
    drop(s);
    // Another crash before any reading: nothing of the skipped block was
    // used, and the report says so (the last used number stays 3 + block).
    let (s, r, _) = open(&c);
    let d = r
        .resumed_unclean
        .iter()
        .find(|x| x.device == "d" && x.kind == Kind::Sample)
        .expect("d's samples resumed");
    assert_eq!(d.last_used, Some(3 + SEQ_BLOCK));
    drop(s);
    let (_, r, _) = open(&c);
    let d = r
        .resumed_unclean
        .iter()
        .find(|x| x.device == "d" && x.kind == Kind::Sample)
        .expect("d's samples resumed");
    assert_eq!(
        d.last_used,
        Some(3 + SEQ_BLOCK),
        "a run that used nothing does not claim its skipped numbers"
    );
    assert!(d.at > 3 + 2 * SEQ_BLOCK);
}

#[tokio::test]
async fn positions_survive_a_corrupt_spool_and_a_lost_one_starts_a_new_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path(), "spill", "");
    let dev: Arc<str> = Arc::from("d");
    let epoch = {
        let (s, _, _) = open(&c);
        let n = notices(&s);
        assert!(
            n.iter().any(|n| matches!(
                n,
                Notice::SequenceReset {
                    first_start: true,
                    ..
                }
            )),
            "{n:?}"
        );
        for _ in 0..5 {
            s.push(&dev, sample(0.0)).unwrap();
        }
        s.close().unwrap();
        s.epoch()
    };
    std::fs::write(
        dir.path().join("spool.db"),
        b"garbage garbage garbage garbage",
    )
    .unwrap();
    {
        let (s, r, _) = open(&c);
        assert!(r.moved_aside.is_some());
        assert_eq!(s.epoch(), epoch, "same epoch");
        assert_eq!(s.push(&dev, sample(0.0)).unwrap(), 5, "sequence continues");
        assert!(notices(&s).is_empty());
        s.close().unwrap();
    }
    std::fs::remove_file(dir.path().join("spool.db")).unwrap();
    std::fs::remove_file(dir.path().join("spool.db.seq")).unwrap();
    let (s, _, _) = open(&c);
    assert_ne!(s.epoch(), epoch, "everything lost: a new epoch");
    // A replaced card cannot be told from a first start: either way the
    // new epoch is announced.
    let n = notices(&s);
    assert!(
        n.iter()
            .any(|n| matches!(n, Notice::SequenceReset { epoch: e, .. } if *e == s.epoch())),
        "{n:?}"
    );
}

/// A run that cannot write its positions (a full card) counts in an epoch
/// of its own, never resumed; the positions file still names the epoch
/// before it. That run must leave the epoch's used marks alone: the run
/// that resumes the epoch after a crash on the same boot owes the exact
/// `seq_last_used` (docs/mqtt.md), and without the marks it would declare
/// the numbers as after a power cut.
#[tokio::test]
async fn a_run_in_an_epoch_of_its_own_leaves_the_used_marks_of_the_epoch_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path(), "spill", "");
    let dev: Arc<str> = Arc::from("d");
    let last_used = |r: &StartReport| {
        r.resumed_unclean
            .iter()
            .find(|x| x.device == "d" && x.kind == Kind::Sample)
            .expect("d's samples resumed")
            .last_used
    };
    let epoch = {
        let (s, _, _) = open(&c);
        for _ in 0..3 {
            s.push(&dev, sample(0.0)).unwrap();
        }
        // The stream's block is reserved (and its used slot given).
        s.flush(false).unwrap();
        s.epoch()
        // Dropped without close: a crash.
    };
    // The positions cannot be written: their temporary file's name is
    // taken by a directory.
    let blocker = dir.path().join("spool.db.seq.tmp");
    std::fs::create_dir(&blocker).unwrap();
    {
        let (s, r, _) = open(&c);
        assert_ne!(s.epoch(), epoch, "an epoch of its own");
        assert_eq!(last_used(&r), Some(2));
        for _ in 0..5 {
            s.push(&dev, sample(0.0)).unwrap();
        }
        s.flush(false).unwrap();
        // A crash again.
    }
    std::fs::remove_dir(&blocker).unwrap();
    let (s, r, _) = open(&c);
    assert_eq!(s.epoch(), epoch, "the epoch on disk is resumed");
    assert_eq!(
        last_used(&r),
        Some(2),
        "exact after a crash on the same boot, whatever the run between counted in"
    );
}

/// Once the run's own epoch reaches the disk (the card works again), it
/// takes the used marks over: a crash after that is declared exactly.
#[tokio::test]
async fn an_epoch_of_its_own_takes_the_used_marks_over_once_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path(), "spill", "");
    let dev: Arc<str> = Arc::from("d");
    {
        let (s, _, _) = open(&c);
        s.push(&dev, sample(0.0)).unwrap();
        s.flush(false).unwrap();
    }
    let blocker = dir.path().join("spool.db.seq.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let own = {
        let (s, _, _) = open(&c);
        s.push(&dev, sample(0.0)).unwrap();
        std::fs::remove_dir(&blocker).unwrap();
        {
            let mut st = s.store.take();
            st.health.next_try = Instant::now();
            s.store.put(st);
        }
        s.flush(false).unwrap();
        for _ in 0..3 {
            s.push(&dev, sample(0.0)).unwrap();
        }
        s.epoch()
    };
    let (s, r, _) = open(&c);
    assert_eq!(s.epoch(), own, "the run's own epoch was made durable");
    let d = r
        .resumed_unclean
        .iter()
        .find(|x| x.device == "d" && x.kind == Kind::Sample)
        .expect("d's samples resumed");
    assert_eq!(d.last_used, Some(3));
}
