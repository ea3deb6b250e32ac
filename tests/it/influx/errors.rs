//! The InfluxDB error classes against the scripted server, as Telegraf's
//! `outputs.influxdb_v2` handles them: 413 halves the batch, 400 sets the
//! bad points aside, 401 keeps everything, 503 and 429 back off honouring
//! `Retry-After`, points outside retention are dropped and never resent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::common::*;

/// A gateway writing to the scripted server (MQTT to a real broker).
async fn scripted_gateway(
    server: &Scripted,
    extra: &str,
    interval: &str,
) -> (Broker, tempfile::TempDir, Gateway) {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "{}{}",
        influx_section(&server.url(), extra),
        sim("ups1", interval, "")
    );
    let gw = Gateway::start(config(broker.port, dir.path(), &cfg)).await;
    (broker, dir, gw)
}

/// 413: the batch is halved until it fits; every point lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_413_halves_the_batch() {
    // Busy at first, so that a backlog builds up and batches are full.
    let server = Scripted::start(Box::new(|_| (503, vec![], "busy".into()))).await;
    let too_large = || -> Answerer {
        Box::new(|lines: &[String]| {
            if lines.len() > 10 {
                (
                    413,
                    vec![],
                    r#"{"code":"request too large","message":"too large"}"#.into(),
                )
            } else {
                ok()
            }
        })
    };
    let (_b, _d, gw) = scripted_gateway(&server, "max_batch = 64", "5ms").await;
    eventually(WAIT, "a backlog", || influx_status(&gw).depth > 200).await;
    server.set(too_large());
    eventually(WAIT, "300 ups1 points landed, and shown", || {
        server.landed().iter().filter(|l| is_ups1_sample(l)).count() >= 300
            && influx_status(&gw).written >= 300
    })
    .await;
    let st = influx_status(&gw);
    gw.stop().await;
    assert!(st.too_large >= 1, "{st:?}");
    assert!(st.batch_limit <= 10 && st.batch_limit >= 5, "{st:?}");
    let w = server.writes();
    assert!(w.iter().any(|w| w.status == 413 && w.lines.len() > 10));
    assert!(w
        .iter()
        .filter(|w| w.status < 300)
        .all(|w| w.lines.len() <= 10));
    let seqs: BTreeSet<u64> = server.ups1_seqs().into_iter().collect();
    assert_contiguous(&seqs, 0, "ups1 in the database");
}

/// 400: the bad points are found by bisecting and set aside, counted once
/// each, with one event per write; the rest lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_400_sets_bad_points_aside_and_writes_the_rest() {
    // Every ups1 sample whose seq is a multiple of 17 is "bad".
    let bad = |l: &String| is_ups1_sample(l) && seq_of(l) % 17 == 0;
    let server = Scripted::start(Box::new(move |lines| {
        if lines.iter().any(bad) {
            (
                400,
                vec![],
                r#"{"code":"invalid","message":"unable to parse points"}"#.into(),
            )
        } else {
            ok()
        }
    }))
    .await;
    let (_b, _d, gw) = scripted_gateway(&server, "max_batch = 50", "5ms").await;
    eventually(WAIT, "ups1 points up to seq 400 landed", || {
        server.ups1_seqs().iter().any(|&s| s >= 400)
    })
    .await;
    eventually(WAIT, "the status shows what landed", || {
        let st = influx_status(&gw);
        st.written >= 380 && st.rejected >= 20
    })
    .await;
    let st = influx_status(&gw);
    let events = gw.status.get().events;
    gw.stop().await;
    let landed: BTreeSet<u64> = server.ups1_seqs().into_iter().collect();
    let top = *landed.iter().last().unwrap();
    for s in 0..top {
        assert_eq!(landed.contains(&s), s % 17 != 0, "seq {s}");
    }
    let bad_count = (0..=top).filter(|s| s % 17 == 0).count() as u64;
    assert!(
        st.rejected >= bad_count - 1 && st.rejected <= bad_count + 1,
        "{st:?} vs {bad_count}"
    );
    let rejected: Vec<_> = events
        .iter()
        .filter(|e| e.code == "influxdb.rejected")
        .collect();
    assert!(!rejected.is_empty(), "an influxdb.rejected event");
    assert!(rejected[0].message.contains("400"), "{:?}", rejected[0]);
    // Never sent again once set aside: each bad point was refused at most
    // as often as a bisection needs (log2 of the batch + 1).
    let mut refused_times: BTreeMap<u64, usize> = BTreeMap::new();
    for w in server.writes().iter().filter(|w| w.status == 400) {
        for l in w.lines.iter().filter(|l| bad(l)) {
            *refused_times.entry(seq_of(l)).or_default() += 1;
        }
    }
    assert!(refused_times.values().all(|n| *n <= 8), "{refused_times:?}");
}

/// 401: nothing is dropped, a critical event, retried slowly; once the
/// token is accepted everything lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_401_keeps_everything_and_retries_slowly() {
    let server = Scripted::start(Box::new(|_| {
        (
            401,
            vec![],
            r#"{"code":"unauthorized","message":"unauthorized access"}"#.into(),
        )
    }))
    .await;
    let (_b, _d, gw) = scripted_gateway(&server, "", "20ms").await;
    eventually(WAIT, "a refused write", || !server.writes().is_empty()).await;
    // Refused for 12 s (time passing on purpose).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let st = influx_status(&gw);
    assert!(
        !st.connected && st.written == 0 && st.refused >= 1,
        "{st:?}"
    );
    assert_eq!(st.last_class.as_deref(), Some("refused"));
    assert!(st.depth > 300, "kept: {st:?}");
    let tries = server.writes().len();
    assert!(tries <= 3, "retried slowly: {tries} tries in 12 s");
    let ev: Vec<_> = gw
        .status
        .get()
        .events
        .into_iter()
        .filter(|e| e.code == "influxdb.token_refused")
        .collect();
    assert_eq!(ev.len(), 1, "one event per outage: {ev:?}");
    assert_eq!(ev[0].severity, wardgate::model::Severity::Critical);
    // The class is shown in /api/status, /metrics and the page.
    let web = gw.web.expect("the page listens");
    let (code, body) = http_get(web, "/api/status", "").await;
    assert_eq!(code, 200);
    let json: Value = serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["influxdb"]["last_class"], "refused", "{json}");
    assert_eq!(json["influxdb"]["connected"], false);
    assert!(json["influxdb"]["depth"].as_u64().unwrap() > 300);
    let (_, metrics) = http_get(web, "/metrics", "").await;
    assert!(metrics.contains("wardgate_influxdb_up 0"), "{metrics}");
    assert!(
        metrics.contains("wardgate_influxdb_errors{class=\"refused\"}"),
        "{metrics}"
    );
    let (_, page) = http_get(web, "/?lang=en", "").await;
    assert!(page.contains("token refused, readings kept"), "{page}");
    server.set(Box::new(|_| ok()));
    eventually(
        Duration::from_secs(60),
        "everything landed after the token was accepted",
        || {
            let s = influx_status(&gw);
            s.connected && s.depth < 20
        },
    )
    .await;
    gw.stop().await;
    let seqs: BTreeSet<u64> = server.ups1_seqs().into_iter().collect();
    // Written once each (nothing was in flight twice: every refused write
    // kept its points), and in order: live readings go ahead of the
    // backlog, each in seq order, so the arrival order is two increasing
    // runs interleaved (its longest decreasing subsequence is at most 2).
    let order: Vec<u64> = server.ups1_seqs();
    assert_eq!(order.len(), seqs.len(), "a point written twice");
    let mut lds: Vec<usize> = vec![1; order.len()];
    for i in 0..order.len() {
        for j in 0..i {
            if order[j] > order[i] {
                lds[i] = lds[i].max(lds[j] + 1);
            }
        }
    }
    assert!(lds.iter().all(|n| *n <= 2), "out of order: {order:?}");
    let last = assert_contiguous(&seqs, 0, "ups1 after the refusal");
    assert!(last > 500, "{last}");
}

/// 503 with Retry-After: the next try waits at least that long; nothing
/// is lost; 429 likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_503_and_429_back_off_honouring_retry_after() {
    let n = Arc::new(Mutex::new(0u32));
    let n2 = n.clone();
    let server = Scripted::start(Box::new(move |_| {
        let mut n = n2.lock().unwrap();
        *n += 1;
        match *n {
            1..=2 => (503, vec![("retry-after".into(), "3".into())], "busy".into()),
            3 => (
                429,
                vec![("retry-after".into(), "2".into())],
                "slow down".into(),
            ),
            _ => ok(),
        }
    }))
    .await;
    let (_b, _d, gw) = scripted_gateway(&server, "", "20ms").await;
    eventually(WAIT, "written after the back-off", || {
        influx_status(&gw).written > 200
    })
    .await;
    let st = influx_status(&gw);
    gw.stop().await;
    let w = server.writes();
    assert_eq!((w[0].status, w[1].status, w[2].status), (503, 503, 429));
    let gap = |i: usize| w[i + 1].at.duration_since(w[i].at);
    assert!(gap(0) >= Duration::from_secs(3), "{:?}", gap(0));
    assert!(gap(1) >= Duration::from_secs(3), "{:?}", gap(1));
    assert!(gap(2) >= Duration::from_secs(2), "{:?}", gap(2));
    assert!(st.retries >= 3, "{st:?}");
    let seqs: BTreeSet<u64> = server.ups1_seqs().into_iter().collect();
    assert_contiguous(&seqs, 0, "ups1 after the back-off");
}

/// A body saying the points are outside retention: dropped, counted, one
/// event, never sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_retention_drops_and_never_resends() {
    let server = Scripted::start(Box::new(|lines| {
        // Until the test says otherwise, every write is "too old".
        (
            422,
            vec![],
            format!(r#"{{"code":"unprocessable entity","message":"failure writing points to database: partial write: points beyond retention policy dropped={}"}}"#, lines.len()),
        )
    }))
    .await;
    let (_b, _d, gw) = scripted_gateway(&server, "", "20ms").await;
    eventually(WAIT, "a write", || !server.writes().is_empty()).await;
    server.set(Box::new(|_| ok()));
    eventually(WAIT, "writes go on", || influx_status(&gw).written > 100).await;
    let st = influx_status(&gw);
    let events = gw.status.get().events;
    gw.stop().await;
    let w = server.writes();
    let dropped: BTreeSet<String> = w
        .iter()
        .filter(|x| x.status == 422)
        .flat_map(|x| x.lines.iter().cloned())
        .collect();
    assert_eq!(st.retention_dropped, dropped.len() as u64, "{st:?}");
    assert!(
        w.iter()
            .filter(|x| x.status != 422)
            .all(|x| x.lines.iter().all(|l| !dropped.contains(l))),
        "a point dropped for retention was sent again"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e.code == "influxdb.retention")
            .count(),
        1
    );
}
