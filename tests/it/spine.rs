//! The spine: sources -> spool -> acknowledged MQTT delivery, live and
//! after an outage (issue tests 1, 2 and 10, and backlog pacing).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::*;

/// 1. Sim source -> mosquitto -> every sample arrives, seq contiguous per
/// device, every message schema-valid; birth and shutdown status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_samples_arrive_contiguous_and_valid() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}{}",
        sim("ups1", "20ms", "event_every = 10"),
        sim("env1", "30ms", "profile = \"sensor\"\nevent_every = 25")
    );
    let gw = Gateway::start(config(broker.port, dir.path(), &extra)).await;
    eventually(WAIT, "60 samples of each device", || {
        sub.seqs("ups1").len() >= 60 && sub.seqs("env1").len() >= 60
    })
    .await;
    gw.stop().await;
    eventually(WAIT, "offline status after stop", || {
        sub.statuses()
            .iter()
            .any(|m| m.body["state"] == "offline" && m.body["reason"] == "shutdown")
    })
    .await;
    sub.assert_all_valid();
    for dev in ["ups1", "env1"] {
        assert_contiguous(&sub.seqs(dev), 0, dev);
        let evs: std::collections::BTreeSet<u64> = sub
            .events(dev)
            .iter()
            .map(|(_, e)| e["seq"].as_u64().unwrap())
            .collect();
        assert_contiguous(&evs, 0, &format!("{dev} events"));
        for (_, s) in sub.samples(dev) {
            assert_eq!(s["historical"], false, "healthy broker: all live");
        }
    }
    // The simulator's events (a loaded machine can add device.lost and
    // device.restored when the 20 ms device is late by three intervals).
    let ups_events: Vec<_> = sub
        .events("ups1")
        .into_iter()
        .filter(|(_, e)| e["code"].as_str().is_some_and(|c| c.starts_with("ups.")))
        .collect();
    assert_eq!(ups_events[0].1["code"], "ups.on_battery");
    assert_eq!(ups_events[1].1["code"], "ups.on_line");
    let statuses = sub.statuses();
    assert_eq!(statuses[0].body["state"], "online");
    let site = test_site();
    assert!(sub
        .all()
        .iter()
        .any(|m| m.topic == format!("ioc/{site}/ups1/telemetry")
            && m.body["site"] == site.as_str()
            && m.body["samples"][0]["values"]["ups.status"].is_string()));
}

/// 2. Broker stopped for 30 s, then started: nothing lost, backlog batched
/// and historical, in seq order per device, events ahead of the backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_backlog_arrives_batched_after_events() {
    let mut broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}{}",
        sim("ups1", "20ms", "event_every = 200"),
        sim("env1", "50ms", "profile = \"sensor\"")
    );
    let gw = Gateway::start(config(broker.port, dir.path(), &extra)).await;
    eventually(WAIT, "live samples", || sub.seqs("ups1").len() >= 20).await;
    broker.stop();
    let before_outage = sub.all().len();
    // The outage: 30 s of readings (time passing on purpose).
    tokio::time::sleep(Duration::from_secs(30)).await;
    let pushed_during = gw
        .spool
        .counters()
        .pushed
        .load(std::sync::atomic::Ordering::Relaxed);
    eventually(WAIT, "the outage went to disk (over 1000 rows)", || {
        gw.spool.stats().disk_rows > 1000
    })
    .await;
    broker.restart();
    eventually(Duration::from_secs(90), "backlog drained", || {
        gw.spool.stats().disk_rows == 0 && sub.seqs("ups1").len() as u64 > 1500
    })
    .await;
    // Everything acknowledged before the stop has landed once the offline
    // status has.
    let from = sub.all().len();
    gw.stop().await;
    sub.offline_after(from).await;
    sub.assert_all_valid();
    // About 2,100 readings are due in the 30 s (ups1 every 20 ms, env1
    // every 50 ms); a loaded machine skips sim ticks, so half of that shows
    // that the sources kept reading while the broker was away (a source
    // blocked on the sink would stop within a batch or two).
    assert!(
        pushed_during > 1000,
        "readings went on during the outage: {pushed_during}"
    );
    assert!(
        sub.seqs("ups1").len() as u64 > 1500,
        "ups1 alone read through the outage"
    );

    for dev in ["ups1", "env1"] {
        let all = sub.samples(dev);
        let unique = dedupe(&all);
        let seqs = unique.keys().copied().collect();
        assert_contiguous(&seqs, 0, dev);
        // Each stream (live, historical) is in seq order, counting each
        // record where it first arrived: copies may come again later (at
        // least once; the subscriber's durable session also gets from the
        // restarted broker what it had not acknowledged before the stop).
        let mut seen = BTreeSet::new();
        let first: Vec<&(usize, serde_json::Value)> = all
            .iter()
            .filter(|(_, r)| seen.insert(r["seq"].as_u64().unwrap()))
            .collect();
        for hist in [true, false] {
            let s: Vec<(usize, u64)> = first
                .iter()
                .filter(|(i, r)| *i >= before_outage && r["historical"] == hist)
                .map(|(i, r)| (*i, r["seq"].as_u64().unwrap()))
                .collect();
            if let Some(w) = s.windows(2).find(|w| w[0].1 >= w[1].1) {
                let at = s.iter().position(|x| x == &w[0]).unwrap_or(0);
                let around = &s[at.saturating_sub(5)..(at + 6).min(s.len())];
                panic!(
                    "{dev} historical={hist} out of order at (message index, seq) {w:?}; around: {around:?}; outage began at message {before_outage}"
                );
            }
        }
    }
    let msgs = sub.all();
    // Live ahead of backlog: after the reconnect the first live ups1 sample
    // arrives before the last backlog message of ups1.
    let ups_telemetry = |hist: bool| {
        msgs.iter()
            .enumerate()
            .filter(|(i, m)| *i >= before_outage && m.topic.ends_with("/ups1/telemetry"))
            .filter(move |(_, m)| m.body["samples"][0]["historical"] == hist)
            .map(|(i, _)| i)
    };
    let first_live = ups_telemetry(false).next().expect("live after the outage");
    let last_backlog = ups_telemetry(true).max().expect("backlog after the outage");
    assert!(
        first_live < last_backlog,
        "live readings go ahead of the backlog: first live message {first_live}, last backlog message {last_backlog}"
    );
    let backlog: Vec<(usize, usize)> = msgs
        .iter()
        .enumerate()
        .filter(|(i, m)| *i >= before_outage && m.topic.ends_with("/telemetry"))
        .filter_map(|(i, m)| {
            let s = m.body["samples"].as_array()?;
            (s[0]["historical"] == true).then_some((i, s.len()))
        })
        .collect();
    assert!(!backlog.is_empty(), "a backlog was sent");
    let biggest = backlog.iter().map(|(_, n)| *n).max().unwrap();
    assert_eq!(biggest, 100, "backlog batches fill up to max_batch");
    // Events raised during the outage were sent before any backlog.
    let first_backlog = backlog[0].0;
    let outage_events: Vec<usize> = msgs
        .iter()
        .enumerate()
        .filter(|(i, m)| *i >= before_outage && m.topic.ends_with("/ups1/event"))
        .filter(|(_, m)| m.body["events"][0]["historical"] == true)
        .map(|(i, _)| i)
        .collect();
    assert!(
        !outage_events.is_empty(),
        "events were raised during the outage"
    );
    for i in outage_events {
        assert!(
            i < first_backlog,
            "event message {i} came after backlog message {first_backlog}"
        );
    }
}
/// 10. While the broker is healthy the spool receives no sample rows and
/// no ordinary events: the only rows allowed are the events that declare a
/// loss or a new sequence (here the first start's `gateway.sequence_reset`),
/// which are committed before they are sent under every policy and deleted
/// once acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_broker_writes_no_rows() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(config(
        broker.port,
        dir.path(),
        &format!(
            "{}{}",
            sim("ups1", "5ms", "event_every = 50"),
            sim("env1", "10ms", "profile = \"sensor\"")
        ),
    ))
    .await;
    let db = dir.path().join("spool.db");
    // Looks at the file every 200 ms for 5 s (an observation window, not a
    // wait), then until 300 samples arrived; the `spilled` counter below
    // covers the whole run.
    let no_rows = || {
        let ro = wardgate::spool::db::Db::open_read_only(&db).unwrap();
        let mut unexpected = Vec::new();
        ro.for_each_record(|_, kind, device, seq, _, body| {
            let code = serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["code"].as_str().map(str::to_owned));
            if code.as_deref() != Some("gateway.sequence_reset") {
                unexpected.push(format!("kind {kind} {device}#{seq}: {body}"));
            }
            Ok(())
        })
        .unwrap();
        assert!(
            unexpected.is_empty(),
            "no rows while the broker is healthy, found {unexpected:?}"
        );
    };
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        no_rows();
    }
    eventually(WAIT, "over 300 samples of ups1", || {
        no_rows();
        sub.seqs("ups1").len() > 300
    })
    .await;
    assert_eq!(
        gw.spool
            .counters()
            .spilled
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // The declaring event leaves the spool once the broker acknowledged it.
    eventually(WAIT, "the spool empty", || {
        wardgate::spool::db::Db::open_read_only(&db)
            .unwrap()
            .row_count()
            .unwrap()
            == 0
    })
    .await;
    gw.stop().await;
    sub.assert_all_valid();
}
/// mqtt.backlog_rate paces backlog messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_rate_paces_the_backlog() {
    let mut broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    broker.stop();
    let port = broker.port;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(port, dir.path(), &sim("ups1", "10ms", "count = 100"))
        .replace("[mqtt]\n", "[mqtt]\nmax_batch = 10\nbacklog_rate = 5.0\n");
    let gw = Gateway::start(wardgate::config::Config::from_toml(&text).unwrap()).await;
    // All 100 samples of ups1 on disk (the spool's row count includes the
    // `pi` and `gateway` records, so ask the file itself).
    let db = dir.path().join("spool.db");
    eventually(WAIT, "100 samples of ups1 on disk", || {
        wardgate::spool::db::Db::open_read_only(&db)
            .ok()
            .and_then(|d| d.summary().ok())
            .is_some_and(|rows| {
                rows.iter()
                    .any(|r| r.device == "ups1" && r.kind == 0 && r.records >= 100)
            })
    })
    .await;
    tokio::task::block_in_place(|| broker.start_again());
    let t0 = std::time::Instant::now();
    eventually(WAIT, "backlog delivered", || sub.seqs("ups1").len() == 100).await;
    let took = t0.elapsed();
    gw.stop().await;
    sub.assert_all_valid();
    // 10 messages at 5 per second: at least 9 gaps of 200 ms.
    assert!(took >= Duration::from_millis(1700), "paced: took {took:?}");
    let sizes: Vec<(usize, bool)> = sub
        .all()
        .iter()
        .filter(|m| m.topic.ends_with("ups1/telemetry"))
        .map(|m| {
            let s = m.body["samples"].as_array().unwrap();
            (s.len(), s[0]["historical"] == true)
        })
        .collect();
    assert_eq!(sizes, vec![(10, true); 10], "batches of max_batch");
}
