use super::*;
use wardgate_contract::command::{ReplyStatus as State, Target};

fn reply(id: &str) -> Reply {
    Reply::new(
        &Target {
            op: "identify".into(),
            id: id.into(),
        },
        State::Successful,
        1,
    )
}

const NOW: i64 = 1_800_000_000_000;

#[test]
fn remembers_across_reopen_and_forgets_after_7_days() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool.db");
    let s = ReplayStore::open(&spool, NOW);
    assert!(s.get("a", NOW).is_none());
    s.put(&reply("a"), Some("d1"), NOW);
    s.put(&reply("old"), None, NOW - KEEP_MS - 1);
    assert_eq!(s.get("a", NOW).map(|x| x.reply), Some(reply("a")));
    assert!(
        s.get("old", NOW).is_none(),
        "older than 7 days, in memory too"
    );
    drop(s);
    assert!(path_for(&spool).is_file(), "a file of its own");
    assert!(!spool.exists(), "the spool's file is not touched");
    let s = ReplayStore::open(&spool, NOW + 1000);
    let got = s.get("a", NOW + 1000).unwrap();
    assert_eq!((got.reply, got.digest.as_deref()), (reply("a"), Some("d1")));
    assert!(s.get("old", NOW + 1000).is_none(), "older than 7 days");
    assert!(s.get("a", NOW + KEEP_MS + 1).is_none());
}

#[test]
fn without_a_file_memory_still_prevents_a_second_run() {
    let s = ReplayStore::open(Path::new("/nonexistent-dir/x/spool.db"), 5);
    s.put(&reply("a"), None, 5);
    assert_eq!(s.get("a", 5).map(|x| x.reply), Some(reply("a")));
    let m = ReplayStore::in_memory();
    assert!(m.get("a", 5).is_none());
}

/// A request answers a stored reply only with the same op and digest
/// (a stored reply without a digest, from an older version, by op).
#[test]
fn a_stored_reply_answers_only_its_own_request() {
    let s = Stored {
        reply: reply("a"),
        digest: Some("d1".into()),
    };
    assert!(s.answers("identify", "d1"));
    assert!(!s.answers("identify", "d2"));
    assert!(!s.answers("restart", "d1"));
    let old = Stored {
        reply: reply("a"),
        digest: None,
    };
    assert!(old.answers("identify", "anything"));
    assert!(!old.answers("restart", "anything"));
}

#[test]
fn keep_newest_fits_both_caps() {
    assert_eq!(keep_newest([10, 10, 10], 5, 100), 3);
    assert_eq!(keep_newest([10, 10, 10], 2, 100), 2);
    assert_eq!(keep_newest([10, 10, 10], 5, 25), 2);
    assert_eq!(
        keep_newest([30, 1, 1], 5, 25),
        0,
        "the newest alone too big"
    );
    assert_eq!(keep_newest([], 5, 25), 0);
    // No overflow on absurd sizes.
    let half = usize::MAX / 2 + 1;
    assert_eq!(keep_newest([half, half], 5, usize::MAX - 1), 1);
}

/// Past [`MAX_REPLIES`] the oldest go, on disk and in memory; past
/// [`MAX_BYTES`] too, whatever their number.
#[test]
fn the_oldest_go_past_either_cap() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool.db");
    let s = ReplayStore::open(&spool, NOW);
    for i in 0..MAX_REPLIES + 200 {
        s.put(&reply(&format!("r{i}")), Some("d"), NOW + i as i64);
    }
    assert_eq!(s.len_on_disk(), Some(MAX_REPLIES));
    assert_eq!(s.len_in_memory(), MAX_REPLIES);
    assert!(s.get("r199", NOW + 5000).is_none(), "among the oldest");
    assert!(s.get("r200", NOW + 5000).is_some());
    let last = format!("r{}", MAX_REPLIES + 199);
    assert!(s.get(&last, NOW + 5000).is_some());
    drop(s);
    // Reopened: what is on disk is what memory held.
    let s = ReplayStore::open(&spool, NOW + 5000);
    assert!(s.get("r199", NOW + 5000).is_none());
    assert!(s.get("r200", NOW + 5000).is_some());

    // Large replies: the byte cap.
    let big = |i: usize| reply(&format!("big{i}")).with_reason("x".repeat(10_000));
    let t = NOW + 10_000;
    for i in 0..200 {
        s.put(&big(i), Some("d"), t + i as i64);
    }
    let n = s.len_on_disk().unwrap();
    assert!((90..=105).contains(&n), "{n} replies of 10 kB in 1 MiB");
    assert_eq!(s.len_in_memory(), n);
    assert!(s.get("big199", t + 500).is_some());
    assert!(s.get("big0", t + 500).is_none());
    assert!(
        s.get("r200", t + 500).is_none(),
        "small and older: gone first"
    );
}

/// A `cmd_replies` table an older version kept in the spool's file (with
/// or without the digest column) moves to the store's own file and
/// leaves the spool's; its rows answer as before.
#[test]
fn a_table_in_the_spool_file_moves_out() {
    for with_digest in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool.db");
        {
            let c = Connection::open(&spool).unwrap();
            c.execute_batch(
                "PRAGMA journal_mode=WAL; CREATE TABLE rec (id INTEGER PRIMARY KEY, body TEXT);",
            )
            .unwrap();
            let cols = if with_digest { ", digest TEXT" } else { "" };
            c.execute_batch(&format!(
                "CREATE TABLE cmd_replies (id TEXT PRIMARY KEY, op TEXT NOT NULL, ts INTEGER NOT NULL, reply TEXT NOT NULL{cols});
                 CREATE INDEX cmd_replies_ts ON cmd_replies(ts);"
            ))
            .unwrap();
            for (id, ts) in [("a", NOW), ("gone", NOW - KEEP_MS - 1)] {
                c.execute(
                    "INSERT INTO cmd_replies (id, op, ts, reply) VALUES (?1, 'identify', ?2, ?3)",
                    params![id, ts, reply(id).to_json()],
                )
                .unwrap();
            }
        }
        let s = ReplayStore::open(&spool, NOW);
        let got = s.get("a", NOW).unwrap();
        assert_eq!((got.reply, got.digest), (reply("a"), None));
        assert!(s.get("gone", NOW).is_none());
        assert_eq!(s.len_on_disk(), Some(1));
        let c = Connection::open(&spool).unwrap();
        let left: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'cmd_replies%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0, "the spool's file keeps no command replies");
        let rec: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'rec'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rec, 1, "the spool's own table stays");
    }
}

/// A damaged file is moved aside and replaced: ids are forgotten, the
/// store works on disk again.
#[test]
fn a_damaged_file_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool.db");
    std::fs::write(path_for(&spool), vec![0x5a; 8192]).unwrap();
    let s = ReplayStore::open(&spool, NOW);
    s.put(&reply("a"), None, NOW);
    assert_eq!(s.len_on_disk(), Some(1));
    assert!(dir.path().join("spool.db.replies.corrupt").is_file());
}
