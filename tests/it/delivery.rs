//! At least once under a lost acknowledgement, with a real mosquitto: a
//! proxy between the gateway and the broker drops chosen PUBACKs, or cuts
//! the connection right after a chosen PUBLISH. What the broker got but the
//! gateway never saw acknowledged is sent again, the copies carry the same
//! epoch, seq and content, and nothing is lost. Also the contract fields the
//! IOC relies on: every documented gateway-telemetry value, and live
//! readings ahead of the backlog after an outage.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;

use crate::common::proxy::{MqttProxy, ProxyState, Sent};
use crate::common::*;

const SAMPLES: u64 = 400;
const EVENTS: u64 = 40;

fn gateway_config(port: u16, dir: &std::path::Path) -> wardgate::config::Config {
    // A few packet ids in flight, so that a PUBACK that never comes blocks
    // its packet id soon, and a short stall timeout, so that the gateway
    // gives up on the connection quickly and sends again.
    let text = config_text(
        port,
        dir,
        &format!(
            "[[device]]\nid = \"ups1\"\ntype = \"sim\"\ninterval = \"10ms\"\ncount = {SAMPLES}\nevent_every = {}\n",
            SAMPLES / EVENTS
        ),
    )
    .replace(
        "[mqtt]\n",
        "[mqtt]\ninflight = 4\nstall_timeout = \"1s\"\n",
    );
    wardgate::config::Config::from_toml(&text).expect("test config is valid")
}

/// The records of a message without their `historical` flag (a copy sent
/// from the backlog says `true`), keyed by (device, kind, epoch, seq).
fn records(topic: &str, body: &Value) -> Vec<((String, String, String, u64), Value)> {
    let kind = topic.rsplit('/').next().unwrap_or("").to_owned();
    let array = if kind == "event" { "events" } else { "samples" };
    let device = body["device"].as_str().unwrap_or("").to_owned();
    let epoch = body["epoch"].as_str().unwrap_or("").to_owned();
    body[array]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    let mut plain = r.clone();
                    plain["historical"] = Value::Null;
                    let seq = r["seq"].as_u64().expect("seq");
                    ((device.clone(), kind.clone(), epoch.clone(), seq), plain)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every record of `lost` was published again by the gateway later, through
/// the proxy, with the same epoch, seq and content.
fn assert_sent_again(lost: &[Sent], sent: &[Sent], what: &str) {
    assert!(!lost.is_empty(), "{what}: nothing was lost on purpose");
    for l in lost {
        let recs = records(&l.topic, &l.body);
        assert!(!recs.is_empty(), "{what}: publish {} carried records", l.n);
        for (key, content) in recs {
            let again = sent
                .iter()
                .filter(|s| s.n > l.n && s.topic == l.topic)
                .flat_map(|s| records(&s.topic, &s.body))
                .find(|(k, _)| *k == key);
            let (_, c) = again.unwrap_or_else(|| {
                panic!("{what}: {key:?} of publish {} was never sent again", l.n)
            });
            assert_eq!(c, content, "{what}: {key:?} sent again with other content");
        }
    }
}

/// What the subscriber got: every copy of every record, by key.
fn received(sub: &Subscriber) -> BTreeMap<(String, String, String, u64), Vec<Value>> {
    let mut out: BTreeMap<_, Vec<Value>> = BTreeMap::new();
    for m in sub.all() {
        if m.topic.ends_with("/status") {
            continue;
        }
        for (k, v) in records(&m.topic, &m.body) {
            out.entry(k).or_default().push(v);
        }
    }
    out
}

/// Nothing lost: per (device, kind, epoch) the seqs of ups1 are exactly
/// 0..n; copies are identical; the records lost on purpose arrived twice.
fn assert_complete(sub: &Subscriber, lost: &[Sent], what: &str) {
    let got = received(sub);
    let mut streams: BTreeMap<(String, String, String), BTreeSet<u64>> = BTreeMap::new();
    for ((dev, kind, epoch, seq), copies) in &got {
        assert!(
            copies.windows(2).all(|w| w[0] == w[1]),
            "{what}: copies of {dev}/{kind}/{epoch}/{seq} differ: {copies:?}"
        );
        streams
            .entry((dev.clone(), kind.clone(), epoch.clone()))
            .or_default()
            .insert(*seq);
    }
    for (stream, seqs) in &streams {
        assert_contiguous(seqs, 0, &format!("{what}: {stream:?}"));
    }
    let ups: Vec<_> = streams.keys().filter(|(d, _, _)| d == "ups1").collect();
    assert_eq!(
        ups.len(),
        2,
        "{what}: one epoch, samples and events: {ups:?}"
    );
    for (dev, kind, epoch) in ups {
        let n = if kind == "event" {
            // The sim's own events; once it has finished, the gateway may
            // add `device.lost` after them.
            got.iter()
                .filter(|((d, k, e, _), c)| {
                    d == dev
                        && k == kind
                        && e == epoch
                        && c[0]["code"].as_str().is_some_and(|c| c.starts_with("ups."))
                })
                .count() as u64
        } else {
            streams[&(dev.clone(), kind.clone(), epoch.clone())].len() as u64
        };
        let want = if kind == "event" { EVENTS } else { SAMPLES };
        assert_eq!(n, want, "{what}: {dev} {kind}");
    }
    // The broker got the publishes whose PUBACK was lost: the subscriber
    // has those records twice.
    for l in lost {
        for (key, _) in records(&l.topic, &l.body) {
            let n = got.get(&key).map_or(0, Vec::len);
            assert!(n >= 2, "{what}: {key:?} arrived {n} time(s), not twice");
        }
    }
}

/// The data messages (not `status`) among `sent`.
fn data(sent: &[Sent]) -> Vec<Sent> {
    sent.iter()
        .filter(|s| !s.topic.ends_with("/status"))
        .cloned()
        .collect()
}

/// Runs the gateway until every sample and event of ups1 arrived and every
/// record of the messages `lost` names (read from the proxy as it goes)
/// arrived twice, then stops it and waits for its offline status, after
/// which nothing more is in flight. The second copy of a lost record may
/// come from the backlog, after the live readings (on a loaded machine the
/// reconnect can take longer than `spool.spill_after`): "all delivered
/// once" alone does not mean it has come.
async fn run_until_all_delivered(
    proxy: &MqttProxy,
    sub: &Subscriber,
    lost: impl Fn(&MqttProxy) -> Vec<Sent>,
) {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(gateway_config(proxy.port, dir.path())).await;
    let all_once = || {
        dedupe(&sub.samples("ups1")).len() as u64 >= SAMPLES
            && sub
                .events("ups1")
                .iter()
                .map(|(_, e)| e["seq"].as_u64())
                .collect::<BTreeSet<_>>()
                .len() as u64
                >= EVENTS
    };
    // (key, copies the subscriber has, copies the gateway sent) of each
    // record lost on purpose that has not arrived twice yet.
    let short = || {
        let got = received(sub);
        let sent = proxy.state.sent.lock().unwrap().clone();
        data(&lost(proxy))
            .iter()
            .flat_map(|l| records(&l.topic, &l.body))
            .map(|(key, _)| {
                let copies = got.get(&key).map_or(0, Vec::len);
                let sends = sent
                    .iter()
                    .filter(|s| records(&s.topic, &s.body).iter().any(|(k, _)| *k == key))
                    .count();
                (key, copies, sends)
            })
            .filter(|(_, copies, _)| *copies < 2)
            .collect::<Vec<_>>()
    };
    if !wait_for(WAIT, || all_once() && short().is_empty()).await {
        panic!(
            "timed out after {WAIT:?}: every sample and event of ups1 once: {}; records lost on purpose not yet twice at the subscriber (key, copies received, copies the gateway sent): {:?}",
            all_once(),
            short()
        );
    }
    let from = sub.all().len();
    gw.stop().await;
    sub.offline_after(from).await;
}

/// The 3rd and 7th PUBACK of a data message going to the gateway are
/// dropped: those batches are sent again (same epoch, seq, content) and
/// nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_pubacks_are_sent_again_and_nothing_is_lost() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let st = ProxyState::default();
    st.drop_pubacks.lock().unwrap().extend([3, 7]);
    let proxy = MqttProxy::start_with(broker.port, st).await;
    run_until_all_delivered(&proxy, &sub, |p| p.state.unacked.lock().unwrap().clone()).await;
    sub.assert_all_valid();
    let unacked = data(&proxy.state.unacked.lock().unwrap());
    assert_eq!(
        proxy.state.swallowed.load(Ordering::Relaxed),
        2,
        "two PUBACKs dropped"
    );
    let sent = proxy.state.sent.lock().unwrap().clone();
    assert_sent_again(&unacked, &sent, "dropped PUBACK");
    assert_complete(&sub, &unacked, "dropped PUBACK");
    assert!(
        proxy.state.connections.load(Ordering::Relaxed) >= 2,
        "a new connection sent them again"
    );
}

/// The connection is cut right after the 5th and the 30th data PUBLISH
/// from the gateway, before their PUBACK: those batches are sent again on the next
/// connection (same epoch, seq, content) and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_after_publish_sends_the_batch_again() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let st = ProxyState::default();
    st.cut_after.lock().unwrap().extend([5, 30]);
    let proxy = MqttProxy::start_with(broker.port, st).await;
    run_until_all_delivered(&proxy, &sub, |p| p.state.cut.lock().unwrap().clone()).await;
    sub.assert_all_valid();
    let cut: Vec<Sent> = proxy.state.cut.lock().unwrap().clone();
    assert_eq!(cut.len(), 2, "two cuts: {cut:?}");
    assert!(proxy.state.connections.load(Ordering::Relaxed) >= 3);
    let data = data(&cut);
    let sent = proxy.state.sent.lock().unwrap().clone();
    assert_sent_again(&data, &sent, "cut after PUBLISH");
    assert_complete(&sub, &data, "cut after PUBLISH");
}

/// Every gateway-telemetry value documented in docs/mqtt.md (read from its
/// table, so a value added to the contract is tested too) is in a real
/// gateway telemetry message, with the type the table implies. The device
/// reads every second, so that a loaded machine cannot make it stale (its
/// health must say `ok`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_telemetry_carries_every_documented_value() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/mqtt.md"),
    )
    .unwrap();
    let section = doc
        .split("## Gateway telemetry")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Gateway telemetry section");
    let mut names = Vec::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cols: Vec<&str> = row.split('|').map(str::trim).collect();
        let name = cols[1].trim_matches('`');
        if let Some(stem) = name.strip_suffix("<reason>") {
            // The reasons are the plain words in backticks of the meaning.
            let reasons: Vec<&str> = cols[2]
                .split('`')
                .skip(1)
                .step_by(2)
                .filter(|w| !w.contains('.') && !w.contains(' '))
                .collect();
            assert!(reasons.len() >= 5, "reasons of {name}: {reasons:?}");
            names.extend(reasons.iter().map(|r| format!("{stem}{r}")));
        } else if name.contains("<id>") {
            names.push(name.replace("<id>", "ups1"));
        } else {
            names.push(name.to_owned());
        }
    }
    assert!(names.len() >= 15, "the table was read: {names:?}");

    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    // The influxdb.* values are sent when the sink is on; nothing listens
    // where it writes (the sink's values say so).
    let no_influx = closed_port();
    let text = config_text(
        broker.port,
        dir.path(),
        &format!(
            "[[device]]\nid = \"ups1\"\ntype = \"sim\"\ninterval = \"1s\"\n\
             [gateway]\ntelemetry_interval = \"1s\"\n\
             [influxdb]\nurl = \"http://127.0.0.1:{}\"\norg = \"o\"\nbucket = \"b\"\n",
            no_influx.port
        ),
    );
    let gw = Gateway::start(wardgate::config::Config::from_toml(&text).unwrap()).await;
    eventually(WAIT, "two gateway telemetry messages", || {
        sub.samples("gateway").len() >= 2
    })
    .await;
    gw.stop().await;
    sub.assert_all_valid();
    let (_, last) = sub.samples("gateway").pop().unwrap();
    let values = &last["values"];
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| values.get(n.as_str()).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "documented but not sent: {missing:?} in {values}"
    );
    for n in &names {
        let v = &values[n.as_str()];
        let ok = if n.ends_with(".health") {
            v == "ok"
        } else if n == "mqtt.connected" {
            v == true
        } else if n == "spool.degraded" {
            v == false
        } else if n == "influxdb.connected" {
            // Nothing listens where the sink writes.
            v == false
        } else {
            v.as_f64().is_some_and(|f| f.is_finite() && f >= 0.0)
        };
        assert!(ok, "{n} = {v}");
    }
}

/// The subscriber's contract checks catch what they claim to: a retained
/// data message, a status that is not retained, a payload naming another
/// device or site, a topic outside the contract, and (schema) a value name
/// outside the contract's pattern in an event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscriber_catches_contract_breaks() {
    let broker = Broker::start();
    // Breaks the contract on purpose and reads `invalid` itself.
    let sub = Subscriber::start(broker.port, "ioc").await.expect_invalid();
    let site = test_site();
    let mut o = rumqttc::MqttOptions::new("bad-publisher", "127.0.0.1", broker.port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = rumqttc::AsyncClient::new(o, 10);
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let sample = |device: &str, name: &str| {
        format!(
            r#"{{"site":"{site}","device":"{device}","epoch":"0000000000000000","samples":[{{"historical":false,"seq":0,"ts":1,"clock":"synced","values":{{"{name}":1.0}}}}]}}"#
        )
    };
    let event = |name: &str| {
        format!(
            r#"{{"site":"{site}","device":"ups1","epoch":"0000000000000000","events":[{{"historical":false,"seq":0,"ts":1,"clock":"synced","severity":"info","code":"x.y","message":"m","values":{{"{name}":1.0}}}}]}}"#
        )
    };
    let cases: Vec<(String, bool, String, &str)> = vec![
        (
            format!("ioc/{site}/ups1/telemetry"),
            false,
            sample("ups1", "a.b"),
            "",
        ),
        (
            format!("ioc/{site}/ups1/telemetry"),
            true,
            sample("ups1", "a.b"),
            "a data message was retained",
        ),
        (
            format!("ioc/{site}/ups2/telemetry"),
            false,
            sample("ups1", "a.b"),
            "payload device",
        ),
        (
            format!("ioc/{site}/status"),
            false,
            r#"{"state":"offline","reason":"lost"}"#.into(),
            "status not retained",
        ),
        (
            format!("ioc/{site}/ups1/bogus"),
            false,
            sample("ups1", "a.b"),
            "not a topic of the contract",
        ),
        (
            format!("ioc/{site}/ups1/event"),
            false,
            event("bad name!"),
            "bad name!",
        ),
    ];
    for (topic, retain, body, _) in &cases {
        client
            .publish(
                topic.clone(),
                rumqttc::QoS::AtLeastOnce,
                *retain,
                body.clone(),
            )
            .await
            .unwrap();
    }
    eventually(WAIT, "all received", || sub.all().len() >= cases.len()).await;
    let invalid = sub.invalid.lock().unwrap().clone();
    for (topic, _, _, want) in &cases[1..] {
        assert!(
            invalid
                .iter()
                .any(|p| p.starts_with(topic.as_str()) && p.contains(want)),
            "{topic}: {want:?} not reported in {invalid:#?}"
        );
    }
    // The good message (same topic as the retained one) raised nothing.
    let good = invalid
        .iter()
        .filter(|p| p.starts_with(cases[0].0.as_str()))
        .count();
    assert_eq!(good, 1, "only the retained copy is reported: {invalid:#?}");
}

/// The contract check cannot be forgotten: a subscriber that received a
/// message breaking the contract fails the test when it is dropped, though
/// the test never asked (here the failure is caught, to see it happen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_dropped_after_a_contract_break_fails_the_test() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let site = test_site();
    let mut o = rumqttc::MqttOptions::new(
        format!("bad-publisher-{}", rand::random::<u32>()),
        "127.0.0.1",
        broker.port,
    );
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = rumqttc::AsyncClient::new(o, 10);
    let task = tokio::spawn(async move { while el.poll().await.is_ok() {} });
    client
        .publish(
            format!("ioc/{site}/ups1/telemetry"),
            rumqttc::QoS::AtLeastOnce,
            false,
            "not json",
        )
        .await
        .unwrap();
    eventually(WAIT, "the broken message reported", || {
        !sub.invalid.lock().unwrap().is_empty()
    })
    .await;
    task.abort();
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(sub)));
    let err = dropped.expect_err("dropping the subscriber must fail the test");
    let text = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        text.contains("checked as the subscriber was dropped") && text.contains("not JSON"),
        "{text}"
    );
}
