//! Time: the real gateway, in-process with a fake clock (this
//! machine's kernel says unsynced and cannot be stepped by a test), a real
//! mosquitto, every message checked against the schemas. Readings are taken
//! unsynchronised and delivered, then spooled while the broker is down, then
//! NTP steps the clock by +3 days: the spooled readings go out `corrected`
//! with their exact time, and the delivered ones are covered by a
//! `gateway.clock_corrected` event with their exact seq range and offset.
//!
//! The fake clock stands still unless the test moves it, so every reading
//! of a phase has the same, known time.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;
use wardgate::clock::{Clock, FakeClock};

use crate::common::*;

const DAY: i64 = 86_400_000;

/// A number of the event's `values` (numbers travel as JSON numbers that
/// may carry a fraction: `3.0`).
fn num(v: &Value) -> Option<i64> {
    v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)
}

/// The gateway's `gateway.clock_corrected` events about ups1's records of
/// `kind` ("samples", "events"; `None`: either), in the order received.
fn ups1_corrections(sub: &Subscriber, kind: Option<&str>) -> Vec<Value> {
    sub.events("gateway")
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| {
            e["code"] == "gateway.clock_corrected"
                && e["values"]["record.device"] == "ups1"
                && kind.is_none_or(|k| e["values"]["record.kind"] == k)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsynced_then_synced_plus_three_days() {
    let mut broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    // The stale time fake-hwclock restores: three days ago, to the second.
    let w0 = (wardgate::model::now_ms() - 3 * DAY) / 1000 * 1000;
    let b0 = 40_000;
    let clock = Arc::new(FakeClock::new(w0, b0, "it-boot"));
    let extra = sim("ups1", "50ms", "event_every = 10");
    let gw = Gateway::start_with_clock(
        config(broker.port, dir.path(), &extra),
        clock.clone() as Arc<dyn Clock>,
    )
    .await;

    // A: delivered unsynchronised, all at w0.
    eventually(WAIT, "20 unsynced samples delivered", || {
        sub.seqs("ups1").len() >= 20
    })
    .await;
    // B: the broker goes away; readings, 10 s later by the clocks, spool.
    broker.stop();
    clock.advance(10_000);
    eventually(WAIT, "readings spooled to disk", || {
        gw.spool.stats().disk_rows >= 20
    })
    .await;
    // NTP: +3 days. Readings from now on are synced at w0 + 10 s + 3 d.
    clock.sync(3 * DAY);
    let synced_ts = w0 + 10_000 + 3 * DAY;
    broker.start_again();
    let event = |sub: &Subscriber| ups1_corrections(sub, None).into_iter().next();
    eventually(WAIT, "the correction event and synced samples", || {
        event(&sub).is_some()
            && sub
                .samples("ups1")
                .iter()
                .filter(|(_, s)| s["clock"] == "synced")
                .count()
                >= 10
    })
    .await;
    let from = sub.all().len();
    gw.stop().await;
    sub.offline_after(from).await;
    sub.assert_all_valid();

    // Every reading arrived, with the time of its phase.
    let samples = sub.samples("ups1");
    let last = assert_contiguous(&sub.seqs("ups1"), 0, "ups1 samples");
    let mut unsynced = BTreeSet::new();
    let mut corrected = BTreeSet::new();
    for (_, s) in &samples {
        let (seq, ts) = (s["seq"].as_u64().unwrap(), s["ts"].as_i64().unwrap());
        match s["clock"].as_str().unwrap() {
            "unsynced" => {
                assert_eq!(ts, w0, "seq {seq}: taken in phase A");
                unsynced.insert(seq);
            }
            "corrected" => {
                assert!(
                    ts == w0 + 3 * DAY || ts == w0 + 10_000 + 3 * DAY,
                    "seq {seq}: corrected to {ts}, expected w0 + 3 d (phase A, not yet delivered) or w0 + 10 s + 3 d (phase B)"
                );
                corrected.insert(seq);
            }
            "synced" => assert_eq!(ts, synced_ts, "seq {seq}: after the sync"),
            other => panic!("seq {seq}: clock {other}"),
        }
    }
    assert!(
        corrected.iter().any(|s| !unsynced.contains(s)),
        "readings spooled while unsynced went out corrected"
    );
    assert!(last > *corrected.iter().next_back().unwrap());

    // The delivered ones: exactly one event for ups1's samples, covering
    // the seqs acknowledged while unsynced: 0 to the last one delivered.
    let evs = ups1_corrections(&sub, Some("samples"));
    assert_eq!(evs.len(), 1, "one event per device and kind: {evs:#?}");
    let v = &evs[0]["values"];
    assert_eq!(evs[0]["clock"], "synced");
    assert_eq!(num(&v["clock.offset_ms"]), Some(3 * DAY));
    let epoch = sub
        .all()
        .iter()
        .find(|m| m.topic.ends_with("/ups1/telemetry"))
        .map(|m| m.body["epoch"].clone())
        .unwrap();
    assert_eq!(v["record.epoch"], epoch);
    let (first, last_delivered) = (
        num(&v["record.first_seq"]).unwrap() as u64,
        num(&v["record.last_seq"]).unwrap() as u64,
    );
    assert_eq!(first, 0);
    assert_eq!(Some(&first), unsynced.iter().next());
    let missing: Vec<u64> = (first..=last_delivered)
        .filter(|s| !unsynced.contains(s))
        .collect();
    assert!(
        missing.is_empty(),
        "the range holds only readings delivered unsynced; not: {missing:?}"
    );
    // Acknowledged ones: all of the range, unless a PUBACK was lost in the
    // broker's stop (then that reading came again, corrected).
    let count = num(&v["record.count"]).unwrap() as u64;
    assert!(count >= 1 && count <= last_delivered - first + 1, "{count}");
    // Beyond the range, a reading seen unsynced is one the broker had taken
    // without its acknowledgement reaching the gateway before it stopped:
    // it came again, corrected.
    for s in unsynced.iter().filter(|s| **s > last_delivered) {
        assert!(
            corrected.contains(s),
            "seq {s} was seen unsynced, is outside the range, and was never corrected"
        );
    }
    // The IOC's rule applied to what it received gives every reading its
    // true time: unsynced copies in the range + offset = w0 + 3 d.
    for (_, s) in &samples {
        if s["clock"] == "unsynced" {
            let seq = s["seq"].as_u64().unwrap();
            if (first..=last_delivered).contains(&seq) {
                assert_eq!(s["ts"].as_i64().unwrap() + 3 * DAY, w0 + 3 * DAY);
            }
        }
    }
    // ups1's events: those seen only unsynced (never again corrected) are
    // covered by one event of their own, with the same offset.
    let events_only_unsynced: BTreeSet<u64> = {
        let evs = sub.events("ups1");
        let seq = |e: &Value| e["seq"].as_u64().unwrap();
        let fixed: BTreeSet<u64> = evs
            .iter()
            .filter(|(_, e)| e["clock"] == "corrected")
            .map(|(_, e)| seq(e))
            .collect();
        evs.iter()
            .filter(|(_, e)| e["clock"] == "unsynced" && !fixed.contains(&seq(e)))
            .map(|(_, e)| seq(e))
            .collect()
    };
    let ev_events = ups1_corrections(&sub, Some("events"));
    if !events_only_unsynced.is_empty() {
        assert_eq!(ev_events.len(), 1, "{ev_events:#?}");
        let v = &ev_events[0]["values"];
        assert_eq!(num(&v["clock.offset_ms"]), Some(3 * DAY));
        let range = num(&v["record.first_seq"]).unwrap() as u64
            ..=num(&v["record.last_seq"]).unwrap() as u64;
        assert!(
            events_only_unsynced.iter().all(|s| range.contains(s)),
            "{events_only_unsynced:?} in {range:?}"
        );
    }
}
