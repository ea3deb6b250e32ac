//! The spool file and the sequence numbers: a backlog left by a stop with
//! a hung broker, a corrupt or lost spool (never a number used twice; a
//! new epoch announced), a file of another schema, and the exact last
//! numbers an unclean stop reports.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::common::storage::*;
use crate::common::*;

/// After a clean stop with a hung broker (SIGSTOP: nothing is
/// acked, many records in flight), the backlog of every (device, kind)
/// arrives in strictly increasing seq order, across messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_after_hung_broker_stop_arrives_in_seq_order() {
    let devices = format!(
        "{}{}",
        sim("ups1", "5ms", "event_every = 10"),
        sim("env1", "10ms", "profile = \"sensor\"\nevent_every = 5")
    );
    let rig = Rig::with_devices(&devices).await;
    let sub = &rig.sub;
    let mut gw = rig.start();
    gw.until(WAIT, "live samples", || sub.seqs("ups1").len() >= 50)
        .await;
    rig.broker.pause();
    // Time passing on purpose: long enough for in-flight records to pass spill_after (2 s) and for
    // new ones to queue behind them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    gw.stop_clean("with a hung broker").await;
    rig.broker.resume();
    let rows = spool_rows(&open_spool(&rig.spool));
    assert!(
        rows.len() > 100,
        "the stop left a backlog on disk: {} rows",
        rows.len()
    );
    let mut gw = rig.start();
    let ok = wait_for(WAIT, || missing_backlog(sub, &rows, &[]).is_empty()).await;
    assert!(
        ok,
        "backlog not delivered: {} rows missing; log tail:\n{}",
        missing_backlog(sub, &rows, &[]).len(),
        gw.log_tail()
    );
    gw.stop_clean("after the backlog").await;
    sub.assert_all_valid();

    let mut streams: BTreeMap<(String, &str), Vec<(usize, u64)>> = BTreeMap::new();
    for r in records(sub).into_iter().filter(|r| r.historical) {
        streams
            .entry((r.device.clone(), r.kind))
            .or_default()
            .push((r.msg, r.seq));
    }
    assert!(
        streams.contains_key(&("ups1".to_owned(), "samples"))
            && streams.contains_key(&("ups1".to_owned(), "events")),
        "historical samples and events of ups1 arrived: {:?}",
        streams.keys().collect::<Vec<_>>()
    );
    for ((dev, kind), seqs) in &streams {
        if let Some(i) = seqs.windows(2).position(|w| w[1].1 <= w[0].1) {
            let around: Vec<u64> = seqs[i.saturating_sub(5)..(i + 6).min(seqs.len())]
                .iter()
                .map(|(_, s)| *s)
                .collect();
            panic!(
                "{dev} {kind}: historical records out of seq order: seq {} (message {}) then {} (message {}); around it: {around:?}",
                seqs[i].1,
                seqs[i].0,
                seqs[i + 1].1,
                seqs[i + 1].0
            );
        }
    }
}

/// A stream's records received before and after a restart.
type BeforeAfter<'a> = (Vec<&'a Rec>, Vec<&'a Rec>);

/// A spool overwritten with garbage after some readings were
/// delivered: no (device, kind, epoch, seq) ever arrives twice with
/// different content. Either the sequence continues above what was
/// delivered (positions kept in `<spool.path>.seq`), or a new epoch is used
/// and announced by `gateway.sequence_reset` with `values.epoch` = the new
/// epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_spool_never_reuses_a_sequence_number() {
    let devices = sim("ups1", "10ms", "event_every = 10");
    let rig = Rig::with_devices(&devices).await;
    let sub = &rig.sub;
    let mut gw = rig.start();
    gw.until(WAIT, "60 samples and 3 events", || {
        sub.seqs("ups1").len() >= 60 && sub.events("ups1").len() >= 3
    })
    .await;
    let from = sub.all().len();
    gw.stop_clean("first run").await;
    // Everything acknowledged has reached the subscriber too.
    sub.offline_after(from).await;
    let mark = sub.all().len();

    let garbage: Vec<u8> = (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&rig.spool, &garbage).unwrap();
    let mut gw = rig.start();
    gw.until(WAIT, "60 samples after the restart", || {
        sub.samples("ups1")
            .iter()
            .filter(|(i, _)| *i >= mark)
            .count()
            >= 60
    })
    .await;
    gw.until(WAIT, "spool.corrupt event", || {
        !gateway_events(sub, "spool.corrupt").is_empty()
    })
    .await;
    gw.stop_clean("second run").await;
    sub.assert_all_valid();

    let recs = records(sub);
    for r in &recs {
        assert!(
            r.epoch.is_empty()
                || (r.epoch.len() == 16
                    && r.epoch
                        .chars()
                        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))),
            "epoch {:?} is not 16 lowercase hex digits",
            r.epoch
        );
    }
    // 1. No key twice with different content.
    let mut first: BTreeMap<(String, &str, String, u64), &Rec> = BTreeMap::new();
    let mut clashes = Vec::new();
    for r in &recs {
        let key = (r.device.clone(), r.kind, r.epoch.clone(), r.seq);
        match first.get(&key) {
            Some(prev) if prev.content != r.content => {
                clashes.push(format!("{} then {}", prev.content, r.content))
            }
            Some(_) => {}
            None => {
                first.insert(key, r);
            }
        }
    }
    assert!(
        clashes.is_empty(),
        "{} (device, kind, epoch, seq) keys arrived twice with different content; first: {}",
        clashes.len(),
        clashes.first().map(String::as_str).unwrap_or("")
    );
    // 2. Per stream: continued, or a new epoch that was announced.
    let resets = spool_event_values(sub, "gateway.sequence_reset");
    let mut streams: BTreeMap<(String, &str), BeforeAfter> = BTreeMap::new();
    for r in &recs {
        let e = streams.entry((r.device.clone(), r.kind)).or_default();
        if r.msg < mark {
            e.0.push(r);
        } else {
            e.1.push(r);
        }
    }
    let mut checked = 0;
    for ((dev, kind), (before, after)) in &streams {
        if before.is_empty() || after.is_empty() {
            continue;
        }
        checked += 1;
        let old_epoch = &before.last().unwrap().epoch;
        let top = before.iter().map(|r| r.seq).max().unwrap();
        for r in after {
            if &r.epoch == old_epoch {
                assert!(
                    r.seq > top,
                    "{dev} {kind}: seq {} after the corrupt spool, in the same epoch {old_epoch:?}, but {top} was already delivered before it",
                    r.seq
                );
            } else {
                assert!(
                    resets.iter().any(|v| v["epoch"] == r.epoch.as_str()),
                    "{dev} {kind}: new epoch {:?} after the corrupt spool was never announced by gateway.sequence_reset (values.epoch); resets seen: {resets:?}",
                    r.epoch
                );
            }
        }
    }
    assert!(checked >= 2, "ups1 samples and events arrived in both runs");
}

/// Everything lost: the spool file and its positions file
/// (`<spool.path>.seq`) both gone. The gateway starts a new epoch, announces
/// it with `gateway.sequence_reset` (`values.epoch` = the new epoch,
/// `values.reason` set), and no (device, kind, epoch, seq) arrives twice
/// with different content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_spool_and_positions_start_an_announced_epoch() {
    let devices = sim("ups1", "10ms", "event_every = 10");
    let rig = Rig::with_devices(&devices).await;
    let sub = &rig.sub;
    let mut gw = rig.start();
    gw.until(WAIT, "40 samples", || sub.seqs("ups1").len() >= 40)
        .await;
    let from = sub.all().len();
    gw.stop_clean("first run").await;
    sub.offline_after(from).await;
    let mark = sub.all().len();
    let positions = rig.spool.with_file_name("spool.db.seq");
    assert!(
        positions.exists(),
        "the positions file {} exists after a run",
        positions.display()
    );
    for f in ["spool.db", "spool.db-wal", "spool.db-shm", "spool.db.seq"] {
        let _ = std::fs::remove_file(rig.spool.with_file_name(f));
    }
    let mut gw = rig.start();
    gw.until(WAIT, "40 samples after the restart", || {
        sub.samples("ups1")
            .iter()
            .filter(|(i, _)| *i >= mark)
            .count()
            >= 40
    })
    .await;
    let _ = wait_for(WAIT, || {
        gateway_events(sub, "gateway.sequence_reset").len() >= 2
    })
    .await;
    gw.stop_clean("second run").await;
    sub.assert_all_valid();

    let recs = records(sub);
    let ups: Vec<&Rec> = recs
        .iter()
        .filter(|r| r.device == "ups1" && r.kind == "samples")
        .collect();
    let old = &ups.iter().find(|r| r.msg < mark).expect("first run").epoch;
    let new = &ups
        .iter()
        .find(|r| r.msg >= mark)
        .expect("second run")
        .epoch;
    assert_ne!(
        old, new,
        "with the spool and its positions lost, a new epoch starts"
    );
    let resets = spool_event_values(sub, "gateway.sequence_reset");
    assert!(
        resets
            .iter()
            .any(|v| v["epoch"] == new.as_str()
                && v["reason"].as_str().is_some_and(|r| !r.is_empty())),
        "gateway.sequence_reset with values.epoch = {new:?} and a reason; got {resets:?}"
    );
    let mut first: BTreeMap<(String, &str, String, u64), &Value> = BTreeMap::new();
    for r in &recs {
        let key = (r.device.clone(), r.kind, r.epoch.clone(), r.seq);
        if let Some(prev) = first.get(&key) {
            assert_eq!(
                *prev, &r.content,
                "{key:?} arrived twice with different content"
            );
        } else {
            first.insert(key, &r.content);
        }
    }
}

/// spool.db is a valid SQLite file with a `rec` table of another
/// shape: the gateway starts, publishes live readings and raises
/// `spool.corrupt`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_schema_spool_is_replaced_and_reported() {
    let devices = sim("ups1", "10ms", "");
    let rig = Rig::with_devices(&devices).await;
    {
        let c = open_spool(&rig.spool);
        c.execute_batch("CREATE TABLE rec(x); INSERT INTO rec VALUES (42);")
            .unwrap();
    }
    let sub = &rig.sub;
    let mut gw = rig.start();
    gw.until(WAIT, "live ups1 readings", || sub.seqs("ups1").len() >= 30)
        .await;
    gw.until(WAIT, "spool.corrupt event", || {
        !gateway_events(sub, "spool.corrupt").is_empty()
    })
    .await;
    let v = spool_event_values(sub, "spool.corrupt");
    assert!(
        v.iter()
            .any(|v| v["spool.moved_to"].is_string() && v["spool.reason"].is_string()),
        "spool.corrupt carries spool.moved_to and spool.reason: {v:?}"
    );
    gw.stop_clean("after a wrong-schema spool").await;
    sub.assert_all_valid();
}

/// kill -9 with readings flowing: `gateway.unclean_stop` carries
/// `seq_last_used.ups1.samples` next to `seq_resumed.ups1.samples`, with
/// last_used >= every seq delivered before the kill, last_used < resumed,
/// and no seq in (last_used, resumed) ever delivered. The numbers in
/// (highest delivered, last_used] are what the IOC counts as lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unclean_stop_reports_the_last_sequence_used() {
    let devices = sim("ups1", "5ms", "");
    let rig = Rig::with_devices(&devices).await;
    let sub = &rig.sub;
    let mut gw = rig.start();
    gw.until(WAIT, "200 live samples", || sub.seqs("ups1").len() >= 200)
        .await;
    let from = sub.all().len();
    gw.signal(libc::SIGKILL);
    gw.wait(WAIT).await;
    // What was on its way has landed (the last will comes after it).
    sub.offline_after(from).await;
    let mark = sub.all().len();
    let before = records(sub);
    let epoch = before.last().map(|r| r.epoch.clone()).unwrap_or_default();
    let top = sub.seqs("ups1").into_iter().max().unwrap();

    let mut gw = rig.start();
    gw.until(WAIT, "gateway.unclean_stop and 50 new samples", || {
        !gateway_events(sub, "gateway.unclean_stop").is_empty()
            && sub
                .samples("ups1")
                .iter()
                .filter(|(i, _)| *i >= mark)
                .count()
                >= 50
    })
    .await;
    gw.stop_clean("after the restart").await;
    sub.assert_all_valid();

    let ev = gateway_events(sub, "gateway.unclean_stop");
    let v = &ev[0]["values"];
    let last_used = v["seq_last_used.ups1.samples"]
        .as_f64()
        .unwrap_or_else(|| panic!("gateway.unclean_stop lacks seq_last_used.ups1.samples: {v}"))
        as u64;
    let resumed = v["seq_resumed.ups1.samples"]
        .as_f64()
        .unwrap_or_else(|| panic!("gateway.unclean_stop lacks seq_resumed.ups1.samples: {v}"))
        as u64;
    assert!(
        last_used < resumed,
        "seq_last_used {last_used} < seq_resumed {resumed}"
    );
    assert!(
        last_used >= top,
        "seq {top} was delivered before the kill, yet seq_last_used is {last_used}"
    );
    let ups: Vec<Rec> = records(sub)
        .into_iter()
        .filter(|r| r.device == "ups1" && r.kind == "samples")
        .collect();
    for r in &ups {
        assert_eq!(r.epoch, epoch, "a kill -9 keeps the epoch");
        assert!(
            r.seq <= last_used || r.seq >= resumed,
            "seq {} is in the range ({last_used}, {resumed}) the unclean_stop event declared unused",
            r.seq
        );
    }
    let after: Vec<u64> = ups
        .iter()
        .filter(|r| r.msg >= mark && !r.historical)
        .map(|r| r.seq)
        .collect();
    assert_eq!(
        after.iter().min(),
        Some(&resumed),
        "the first sample after the restart has seq_resumed"
    );
    let delivered: std::collections::BTreeSet<u64> = ups.iter().map(|r| r.seq).collect();
    let lost = (top + 1..=last_used)
        .filter(|s| !delivered.contains(s))
        .count();
    eprintln!(
        "kill -9: highest delivered {top}, last used {last_used}, resumed {resumed}: {lost} lost"
    );
}
