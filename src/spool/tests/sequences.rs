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
