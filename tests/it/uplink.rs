//! The MQTT uplink under faults: bad
//! records never stop delivery, connection attempts last as configured,
//! broker restarts are caught quickly, and a link that takes messages but
//! never acknowledges them is found stuck.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wardgate::model::{Reading, Values};

use crate::common::proxy::{MqttProxy, ProxyState};
use crate::common::*;

fn with_mqtt(
    port: u16,
    dir: &std::path::Path,
    mqtt: &str,
    extra: &str,
) -> wardgate::config::Config {
    let text = config_text(port, dir, extra).replace("[mqtt]\n", &format!("[mqtt]\n{mqtt}\n"));
    wardgate::config::Config::from_toml(&text).expect("test config is valid")
}

/// A record whose device id is not a valid topic level (a bit
/// flip turned a letter into `#`) used to end the publish loop silently:
/// the link stayed "connected", nothing was logged, nothing more was sent.
/// Now it is set aside and every later reading still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_device_id_does_not_stop_delivery() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(config(broker.port, dir.path(), &sim("ups1", "50ms", ""))).await;
    eventually(WAIT, "live samples", || sub.seqs("ups1").len() >= 5).await;
    let mut v = Values::new();
    v.num("x", 1.0);
    gw.spool
        .push(&Arc::from("ups#1"), Reading::Sample(v))
        .expect("push");
    let after = sub.seqs("ups1").len();
    eventually(
        Duration::from_secs(20),
        "samples after the bad record",
        || sub.seqs("ups1").len() >= after + 40,
    )
    .await;
    let up = gw.status.get().uplink;
    assert!(up.connected && up.last_error.is_none(), "{up:?}");
    assert!(
        !sub.all().iter().any(|m| m.topic.contains('#')),
        "the bad record was not published"
    );
    gw.stop().await;
    sub.assert_all_valid();
}

/// A reading bigger than the packet limit is set aside and the rest flows
/// on one connection (it must not fail the connection, come back to the
/// head of the queue and do it again, forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_reading_is_set_aside_and_the_rest_flows() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(with_mqtt(
        broker.port,
        dir.path(),
        "max_packet_size = \"64 KiB\"\nmax_batch_bytes = \"16 KiB\"",
        &sim("ups1", "50ms", ""),
    ))
    .await;
    eventually(WAIT, "live samples", || sub.seqs("ups1").len() >= 5).await;
    let mut v = Values::new();
    v.set("blob", "x".repeat(100_000));
    gw.spool
        .push(&Arc::from("big1"), Reading::Sample(v))
        .expect("push");
    let after = sub.seqs("ups1").len();
    eventually(Duration::from_secs(20), "samples after the big one", || {
        sub.seqs("ups1").len() >= after + 40
    })
    .await;
    let up = gw.status.get().uplink;
    assert_eq!(up.reconnects, 0, "the link never broke: {up:?}");
    assert!(up.connected && up.last_error.is_none(), "{up:?}");
    assert!(
        sub.samples("big1").is_empty(),
        "the big reading was not sent"
    );
    gw.stop().await;
    sub.assert_all_valid();
}

/// A listener that accepts TCP connections and never says a word.
async fn silent_listener() -> (u16, CancellationToken) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            tokio::select! {
                _ = c.cancelled() => return,
                r = l.accept() => if let Ok((s, _)) = r { held.push(s) },
            }
        }
    });
    (port, cancel)
}

/// `mqtt.connect_timeout` is honoured; rumqttc's own 5 s
/// connection timeout used to cut every attempt short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_is_honoured() {
    let (port, stop) = silent_listener().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(with_mqtt(
        port,
        dir.path(),
        "connect_timeout = \"12s\"",
        &sim("ups1", "100ms", ""),
    ))
    .await;
    eventually(Duration::from_secs(5), "the first attempt", || {
        gw.status.get().uplink.attempts >= 1
    })
    .await;
    let t0 = Instant::now();
    eventually(Duration::from_secs(30), "the second attempt", || {
        gw.status.get().uplink.attempts >= 2
    })
    .await;
    let took = t0.elapsed();
    let up = gw.status.get().uplink;
    gw.stop().await;
    stop.cancel();
    // 12 s of waiting, then a backoff of half a second to a second.
    assert!(
        took >= Duration::from_millis(11_500) && took <= Duration::from_secs(15),
        "the attempt lasted {took:?}, not connect_timeout (12 s)"
    );
    let error = up.last_error.unwrap_or_default();
    assert!(error.contains("timed out"), "{error}");
}

/// After a broker restart the gateway is back within 5 s, every
/// time, even after several restarts in a row (the old backoff only reset
/// after a minute up, so each blip doubled the wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_within_five_seconds_after_each_broker_restart() {
    let mut broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(config(broker.port, dir.path(), &sim("ups1", "100ms", ""))).await;
    let mut took = Vec::new();
    for i in 0..5u64 {
        eventually(Duration::from_secs(30), "connected", || {
            gw.status.get().uplink.connected
        })
        .await;
        // Up for a while (the restarts are 20-40 s apart; 11 s is
        // enough for the link to count as healthy and keeps the test short).
        tokio::time::sleep(Duration::from_secs(11)).await;
        tokio::task::block_in_place(|| broker.stop());
        eventually(Duration::from_secs(10), "the drop seen", || {
            !gw.status.get().uplink.connected
        })
        .await;
        tokio::task::block_in_place(|| broker.restart());
        let back = Instant::now();
        eventually(Duration::from_secs(60), "reconnected", || {
            let u = gw.status.get().uplink;
            u.connected && u.reconnects > i
        })
        .await;
        took.push(back.elapsed());
    }
    gw.stop().await;
    assert!(
        took.iter().all(|t| *t <= Duration::from_secs(5)),
        "time back after each restart: {took:?}"
    );
}

/// Records pending, link up, no PUBACK for `mqtt.stall_timeout`
/// is a stuck link: `mqtt.stalled` event, a reconnect, `/healthz` 503 until
/// acknowledgements move again; then the event itself is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_never_acknowledges_is_found_stuck() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    // A proxy that passes everything but the broker's PUBACKs while
    // `swallow` is set: the link looks fine, nothing is acknowledged.
    let st = ProxyState::default();
    st.swallow.store(true, Ordering::Relaxed);
    let proxy = MqttProxy::start_with(broker.port, st).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(with_mqtt(
        proxy.port,
        dir.path(),
        "stall_timeout = \"2s\"",
        &sim("ups1", "100ms", ""),
    ))
    .await;
    let web = gw.web.expect("the page is on");
    eventually(Duration::from_secs(20), "the mqtt.stalled event", || {
        gw.status
            .get()
            .events
            .iter()
            .any(|e| e.code == "mqtt.stalled")
    })
    .await;
    assert!(proxy.state.swallowed.load(Ordering::Relaxed) > 0);
    let (code, text) = http_get(web, "/healthz", "").await;
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("stalled"), "{text}");
    eventually(
        Duration::from_secs(20),
        "a reconnect after the stall",
        || gw.status.get().uplink.reconnects >= 1,
    )
    .await;
    // Still nothing acknowledged: still 503.
    let (code, text) = http_get(web, "/healthz", "").await;
    assert_eq!(code, 503, "{text}");
    assert!(gw.status.get().uplink.stalled);

    // The broker's acks get through again: healthy, and the event arrives.
    proxy.state.swallow.store(false, Ordering::Relaxed);
    eventually(Duration::from_secs(30), "stall cleared", || {
        !gw.status.get().uplink.stalled
    })
    .await;
    let (code, text) = http_get(web, "/healthz", "").await;
    assert_eq!(code, 200, "{text}");
    eventually(Duration::from_secs(20), "the event delivered", || {
        sub.events("gateway")
            .iter()
            .any(|(_, e)| e["code"] == "mqtt.stalled")
    })
    .await;
    gw.stop().await;
    sub.assert_all_valid();
}
