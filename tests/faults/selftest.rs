//! The accounting rule on made-up messages (`--self-test`; also run
//! before every suite, so that a broken rule cannot make a binary look
//! good).

use std::time::Instant;

use serde_json::Value;

use crate::accounting::{account, order_violations, Known, CRASH_WINDOW_SPILL_MS};
use crate::recorder::{Rec, Schemas};
use crate::rig::Outcome;
use crate::scenarios::reconnect_verdict;
use crate::skip_as_root;

/// The accounting rule on made-up messages; run before every suite so a
/// broken rule cannot make a binary look good.
pub fn self_test() {
    let rec = |topic: &str, body: &str| Rec {
        at: Instant::now(),
        wall_ms: 0,
        topic: topic.into(),
        retain: false,
        payload: body.as_bytes().to_vec(),
    };
    let t = "ioc/s/ups1/telemetry";
    let g = "ioc/s/gateway/event";
    const E: &str = "00000000000000e1";
    // Readings 20 ms apart from t = 100 s.
    let ts = |seq: u64| 100_000 + seq as i64 * 20;
    let sample = |seq: u64, v: u32| {
        format!(
            r#"{{"site":"s","device":"ups1","epoch":"{E}","samples":[{{"historical":false,"seq":{seq},"ts":{},"clock":"synced","values":{{"a":{v}}}}}]}}"#,
            ts(seq)
        )
    };
    let gw_event = |seq: u64, code: &str, values: &str| {
        format!(
            r#"{{"site":"s","device":"gateway","epoch":"{E}","events":[{{"seq":{seq},"ts":1,"clock":"synced","historical":false,"severity":"warning","code":"{code}","message":"m","values":{{{values}}}}}]}}"#
        )
    };
    let unclean = |seq: u64, r: u64, l: Option<u64>| {
        let last = l
            .map(|l| format!(r#","seq_last_used.ups1.samples":{l}"#))
            .unwrap_or_default();
        gw_event(
            seq,
            "gateway.unclean_stop",
            &format!(r#""seq_resumed.ups1.samples":{r}{last}"#),
        )
    };
    let none = Known {
        first_start_ms: 100_000,
        ..Known::default()
    };
    // A kill 0.5 s after reading 5, and one 10 s later.
    let soon = Known {
        kills: vec![(ts(5) + 500, CRASH_WINDOW_SPILL_MS, 100_000)],
        ..none.clone()
    };
    let late = Known {
        kills: vec![(ts(5) + 10_000, CRASH_WINDOW_SPILL_MS, 100_000)],
        ..none.clone()
    };
    // The made-up messages follow the schemas; one that does not is caught.
    let schemas = Schemas::get();
    let ok: Value = serde_json::from_str(&sample(0, 1)).unwrap();
    assert_eq!(schemas.check(t, &ok), None);
    let ok: Value = serde_json::from_str(&unclean(0, 10, Some(5))).unwrap();
    assert_eq!(schemas.check(g, &ok), None);
    let bad: Value =
        serde_json::from_str(r#"{"site":"s","device":"ups1","epoch":"e1","samples":[{"seq":1}]}"#)
            .unwrap();
    assert!(schemas.check(t, &bad).is_some());
    // 0..=3 and 10: 4..=9 missing, undeclared.
    let mut recs: Vec<Rec> = [0, 1, 2, 3, 10]
        .iter()
        .map(|&s| rec(t, &sample(s, 1)))
        .collect();
    let a = account(&recs, &none);
    assert_eq!(
        (
            a.delivered,
            a.missing,
            a.undeclared,
            a.readings,
            a.schema_invalid
        ),
        (5, 6, 6, 11, 0)
    );
    // An unclean stop without seq_last_used declares everything below R.
    recs.push(rec(g, &unclean(0, 10, None)));
    let a = account(&recs, &none);
    assert_eq!((a.missing, a.crash, a.undeclared), (0, 0, 0));
    // With seq_last_used = 5: 6..=9 unused; 4 and 5 lost in the crash
    // only when a kill came within the bound after they were taken.
    recs.pop();
    recs.push(rec(g, &unclean(0, 10, Some(5))));
    let a = account(&recs, &soon);
    assert_eq!((a.missing, a.crash, a.undeclared), (0, 2, 0));
    let a = account(&recs, &late);
    assert_eq!(
        (a.missing, a.crash, a.undeclared, a.too_old_for_crash),
        (2, 0, 2, 2)
    );
    let a = account(&recs, &none);
    assert_eq!((a.crash, a.undeclared), (0, 2));
    // The tail: nothing received above 3, last used 5, resumed at 10 (no
    // later reading): 4 and 5 are still checked.
    let tail: Vec<Rec> = [0, 1, 2, 3]
        .iter()
        .map(|&s| rec(t, &sample(s, 1)))
        .chain([rec(g, &unclean(0, 10, Some(5)))])
        .collect();
    assert_eq!(account(&tail, &late).undeclared, 2);
    assert_eq!(account(&tail, &soon).crash, 2);
    // A kill soon after, but of a run that started after they were taken
    // (a tail lost at a clean stop before it): not excused.
    let next_run = Known {
        kills: vec![(ts(5) + 500, CRASH_WINDOW_SPILL_MS, ts(5) + 300)],
        ..none.clone()
    };
    assert_eq!(account(&tail, &next_run).undeclared, 2);
    // A duplicate, then a reused seq.
    recs.push(rec(t, &sample(1, 1)));
    recs.push(rec(t, &sample(2, 9)));
    let a = account(&recs, &soon);
    assert_eq!((a.duplicates, a.reused), (2, 1));
    // Drops, by reason: write_failed excuses any one missing reading,
    // corrupt only a row the harness damaged, too_large only the record
    // its event names.
    let mut recs: Vec<Rec> = [0, 4].iter().map(|&s| rec(t, &sample(s, 1))).collect();
    let tel = |seq: u64, reason: &str, d: u32| {
        format!(
            r#"{{"site":"s","device":"gateway","epoch":"{E}","samples":[{{"historical":false,"seq":{seq},"ts":1,"clock":"synced","values":{{"spool.dropped.{reason}":{d}}}}}]}}"#
        )
    };
    recs.push(rec("ioc/s/gateway/telemetry", &tel(0, "write_failed", 0)));
    recs.push(rec("ioc/s/gateway/telemetry", &tel(1, "write_failed", 1)));
    let a = account(&recs, &none);
    assert_eq!((a.missing, a.declared_drops, a.undeclared), (3, 1, 2));
    let mut recs: Vec<Rec> = [0, 4].iter().map(|&s| rec(t, &sample(s, 1))).collect();
    recs.push(rec("ioc/s/gateway/telemetry", &tel(0, "corrupt", 1)));
    let a = account(&recs, &none);
    assert_eq!((a.declared_drops, a.undeclared), (0, 3));
    // The damaged row 1 is excused once, by the corrupt declaration.
    let damaged = Known {
        damaged: [("ups1".to_owned(), "samples", 1)].into_iter().collect(),
        ..none.clone()
    };
    let a = account(&recs, &damaged);
    assert_eq!((a.declared_drops, a.undeclared), (1, 2));
    // Without the declaration the damaged row is undeclared loss.
    recs.pop();
    assert_eq!(account(&recs, &damaged).undeclared, 3);
    recs.push(rec(
        g,
        &gw_event(
            0,
            "spool.quarantined",
            r#""record.device":"ups1","record.kind":"samples","record.seq":2"#,
        ),
    ));
    let a = account(&recs, &none);
    assert_eq!((a.declared_drops, a.undeclared), (1, 2));
    // Destroyed by the harness: not the gateway's loss. Invalid JSON counts.
    let destroyed = Known {
        destroyed: [1, 2, 3]
            .into_iter()
            .map(|s| ("ups1".to_owned(), "samples", s))
            .collect(),
        ..none.clone()
    };
    recs.push(rec(t, "{\"site\":#"));
    let a = account(&recs, &destroyed);
    assert_eq!((a.missing, a.undeclared, a.invalid_json), (0, 0, 1));
    // Order: a historical seq below one already seen is an inversion.
    let hist = |seq: u64| {
        format!(
            r#"{{"device":"ups1","samples":[{{"historical":true,"seq":{seq},"values":{{}}}}]}}"#
        )
    };
    let recs: Vec<Rec> = [5, 6, 4, 6, 7].iter().map(|&s| rec(t, &hist(s))).collect();
    assert_eq!(order_violations(&recs).0, 1);
    // An unclean stop raised by a run that counts in an epoch of its own
    // (E2, announced by a sequence_reset of the same run with
    // previous_epoch E) declares E's numbers: E's tail 4 and 5 is checked.
    const E2: &str = "00000000000000e2";
    let in_e2 = |seq: u64, ts: i64, code: &str, values: &str| {
        format!(
            r#"{{"site":"s","device":"gateway","epoch":"{E2}","events":[{{"seq":{seq},"ts":{ts},"clock":"synced","historical":false,"severity":"warning","code":"{code}","message":"m","values":{{{values}}}}}]}}"#
        )
    };
    let restart = ts(5) + 400;
    let own_epoch = |reset_ts: i64| -> Vec<Rec> {
        [0, 1, 2, 3]
            .iter()
            .map(|&s| rec(t, &sample(s, 1)))
            .chain([
                rec(
                    g,
                    &in_e2(
                        0,
                        reset_ts,
                        "gateway.sequence_reset",
                        &format!(r#""epoch":"{E2}","previous_epoch":"{E}","reason":"r""#),
                    ),
                ),
                rec(
                    g,
                    &in_e2(
                        1,
                        restart + 10,
                        "gateway.unclean_stop",
                        r#""seq_resumed.ups1.samples":10,"seq_last_used.ups1.samples":5"#,
                    ),
                ),
            ])
            .collect()
    };
    let runs = |k: &Known| Known {
        starts: vec![100_000, restart],
        ..k.clone()
    };
    let e2 = own_epoch(restart + 5);
    let a = account(&e2, &runs(&soon));
    assert_eq!((a.crash, a.undeclared), (2, 0), "E's tail lost in the kill");
    let a = account(&e2, &runs(&late));
    assert_eq!(
        (a.undeclared, a.too_old_for_crash),
        (2, 2),
        "E's tail checked, and too old for the kill"
    );
    // A reset of an earlier run does not make it the previous epoch's:
    // the declaration is E2's own (its 0..=5 in the kill's range).
    let e2 = own_epoch(restart - 100);
    let a = account(&e2, &runs(&soon));
    assert_eq!((a.crash, a.undeclared), (6, 0));
    // A stop with the card unwritable: 4 and 5 were only in memory when
    // it was made so (a span from the fill less the bound to the stop),
    // with spool.degraded declared.
    let full_card = |span: (i64, i64)| Known {
        degraded: vec![span],
        ..none.clone()
    };
    let recs: Vec<Rec> = [0, 1, 2, 3]
        .iter()
        .map(|&s| rec(t, &sample(s, 1)))
        .chain([
            rec(g, &unclean(0, 10, Some(5))),
            rec(
                g,
                &gw_event(1, "spool.degraded", r#""spool.reason":"disk_full""#),
            ),
        ])
        .collect();
    let a = account(&recs, &full_card((ts(4) - 1000, ts(5) + 500)));
    assert_eq!((a.degraded_stop, a.undeclared), (2, 0));
    // The card made full well after they were taken: they had to be on
    // the card.
    let a = account(&recs, &full_card((ts(5) + 1000, ts(5) + 2000)));
    assert_eq!((a.degraded_stop, a.undeclared), (0, 2));
    // A stop before they were taken cannot have lost them.
    let a = account(&recs, &full_card((ts(0) - 1000, ts(1))));
    assert_eq!((a.degraded_stop, a.undeclared), (0, 2));
    // Without spool.degraded nothing is excused.
    let a = account(&tail, &full_card((ts(4) - 1000, ts(5) + 500)));
    assert_eq!((a.degraded_stop, a.undeclared), (0, 2));
    // A scenario that cannot inject its fault: SKIP, but FAIL as root.
    let mut out = Outcome::skip("x", "no loop device".into());
    skip_as_root(&mut out, false);
    assert_eq!(out.verdict(), "SKIP");
    skip_as_root(&mut out, true);
    assert_eq!(out.verdict(), "FAIL");
    assert!(out.failures[0].starts_with("SKIP as root: no loop device"));
    // Reconnect times: the short run forgives one slow restart up to 7 s.
    assert!(reconnect_verdict(&[0.5, 0.6, 6.5, 0.4, 0.5], true).is_none());
    assert!(reconnect_verdict(&[0.5, 0.6, 7.5, 0.4, 0.5], true).is_some());
    assert!(reconnect_verdict(&[5.5, 0.6, 6.0, 0.4, 0.5], true).is_some());
    // The long run's p95 of 20 is the second slowest.
    let mut long = vec![0.5; 20];
    long[3] = 9.0;
    assert!(reconnect_verdict(&long, false).is_none());
    long[7] = 5.5;
    assert!(reconnect_verdict(&long, false).is_some());
}
