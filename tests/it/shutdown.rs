//! The gateway's presence on `{prefix}/{site}/status` as it starts and
//! stops: the last will when it is killed, the birth when it comes back,
//! the retained offline "shutdown" status on SIGTERM, and a SIGTERM with a
//! hung broker (exit 0 within the documented 10 s, the missing offline
//! status said in the log, nothing unacknowledged lost).

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use crate::common::proxy::MqttProxy;
use crate::common::storage::{missing_backlog, open_spool, spool_rows};
use crate::common::*;

/// 5. Last will: SIGKILL -> retained offline/lost; restart -> online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_will_on_kill_and_birth_on_restart() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = process_config(dir.path(), broker.port, &sim("ups1", "200ms", ""));
    let log = dir.path().join("wardgate.log");
    let mut gw = Process::start(&cfg, &log);
    eventually(WAIT, "online", || {
        sub.statuses().iter().any(|m| m.body["state"] == "online")
    })
    .await;
    gw.signal(libc::SIGKILL);
    gw.wait(Duration::from_secs(5)).await;
    eventually(WAIT, "offline (lost)", || {
        sub.statuses()
            .iter()
            .any(|m| m.body["state"] == "offline" && m.body["reason"] == "lost")
    })
    .await;
    // A consumer connecting now sees the retained offline status.
    let late = Subscriber::start(broker.port, "ioc").await;
    eventually(WAIT, "retained offline", || {
        late.statuses()
            .iter()
            .any(|m| m.retain && m.body["state"] == "offline" && m.body["reason"] == "lost")
    })
    .await;
    let n = sub.statuses().len();
    let _gw = Process::start(&cfg, &log);
    eventually(WAIT, "online again", || {
        sub.statuses()
            .iter()
            .skip(n)
            .any(|m| m.body["state"] == "online")
    })
    .await;
    sub.assert_all_valid();
    late.assert_all_valid();
}

/// SIGTERM with a healthy broker: exit 0 within the stop budget, and the
/// status left retained at the broker is exactly the contract's clean-stop
/// object (docs/mqtt.md "Status", docs/schema/status.schema.json):
/// `{"state":"offline","reason":"shutdown"}`, the last status published,
/// and what a consumer connecting afterwards is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_offline_shutdown_retained() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = process_config(dir.path(), broker.port, &sim("ups1", "50ms", ""));
    let mut gw = Process::start(&cfg, &dir.path().join("wardgate.log"));
    eventually(WAIT, "online and delivering", || {
        sub.statuses().iter().any(|m| m.body["state"] == "online") && sub.seqs("ups1").len() >= 5
    })
    .await;
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait(STOP_BUDGET).await, Some(0), "clean exit");
    let shutdown = json!({"state": "offline", "reason": "shutdown"});
    eventually(WAIT, "the offline status, last", || {
        sub.statuses().last().is_some_and(|m| m.body == shutdown)
    })
    .await;
    let late = Subscriber::start(broker.port, "ioc").await;
    eventually(WAIT, "the retained offline status", || {
        late.statuses()
            .iter()
            .any(|m| m.retain && m.body == shutdown)
    })
    .await;
    // Only the retained copy: it replaced the birth at the broker.
    let retained: Vec<_> = late.statuses().into_iter().map(|m| m.body).collect();
    assert_eq!(retained, vec![shutdown], "what a late consumer is given");
    assert!(
        gw.log_text()
            .contains("MQTT disconnected (offline status sent)"),
        "{}",
        gw.log_text()
    );
    sub.assert_all_valid();
    late.assert_all_valid();
}

/// What a stop with a hung broker left: the log, and the rows on disk.
struct HungStop {
    _broker: Broker,
    sub: Subscriber,
    proxy: MqttProxy,
    _dir: tempfile::TempDir,
    cfg: std::path::PathBuf,
    log: std::path::PathBuf,
    log_text: String,
    rows: Vec<crate::common::storage::SpoolRow>,
}

/// When the broker hangs, as the gateway sees it: three different paths
/// of the MQTT sink at stop.
#[derive(Clone, Copy, Debug)]
enum Hang {
    /// From the start: the TCP connection is accepted, no CONNACK ever
    /// comes (the sink is still connecting at SIGTERM).
    BeforeConnack,
    /// After live samples were delivered: publishes are never acknowledged
    /// (fewer than `mqtt.inflight`), then neither is the offline status.
    AfterConnect,
    /// As `AfterConnect`, with `mqtt.inflight = 4`: the client's request
    /// queue (64) fills up behind the unacknowledged publishes, so the
    /// offline status cannot even be queued.
    QueueFull,
}

/// The gateway talks to mosquitto through a proxy that hangs (the
/// connections stay open, nothing passes either way) as `hang` says.
/// SIGTERM: exit 0 within the budget.
async fn stop_with_a_hung_broker(hang: Hang) -> HungStop {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let proxy = MqttProxy::start(broker.port).await;
    let dir = tempfile::tempdir().unwrap();
    let (interval, inflight) = match hang {
        Hang::QueueFull => ("5ms", "inflight = 4\n"),
        _ => ("20ms", ""),
    };
    let cfg = process_config(dir.path(), proxy.port, &sim("ups1", interval, ""));
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("[mqtt]\n", &format!("[mqtt]\n{inflight}")),
    )
    .unwrap();
    let log = dir.path().join("wardgate.log");
    let connected = !matches!(hang, Hang::BeforeConnack);
    if !connected {
        proxy.state.hang.store(true, Ordering::SeqCst);
    }
    let mut gw = Process::start(&cfg, &log);
    if connected {
        eventually(WAIT, "live samples through the proxy", || {
            sub.seqs("ups1").len() >= 20
        })
        .await;
        proxy.state.hang.store(true, Ordering::SeqCst);
    }
    // The gateway is talking to the hung broker: it has sent what never
    // arrives (the CONNECT; publishes, up to `inflight` of them).
    let st = proxy.state.clone();
    let want = match hang {
        Hang::BeforeConnack => 1,
        Hang::AfterConnect => 20,
        Hang::QueueFull => 4,
    };
    eventually(WAIT, "packets lost in the hung broker", || {
        st.hung.load(Ordering::Relaxed) >= want
    })
    .await;
    // Time passing on purpose: readings pile up behind the hung link (any
    // number > 0 will do, and `next_start_delivers_the_backlog` fails if
    // there are none); with `QueueFull`, 1 s of readings every 5 ms are
    // three times the 64 requests that fill the client's queue.
    let pile_up = match hang {
        Hang::QueueFull => Duration::from_secs(1),
        _ => Duration::from_millis(500),
    };
    tokio::time::sleep(pile_up).await;
    gw.signal(libc::SIGTERM);
    let code = gw.wait(STOP_BUDGET).await;
    let log_text = gw.log_text();
    assert_eq!(
        code,
        Some(0),
        "SIGTERM with a hung broker; log:\n{log_text}"
    );
    let rows = spool_rows(&open_spool(&dir.path().join("spool.db")));
    HungStop {
        _broker: broker,
        sub,
        proxy,
        _dir: dir,
        cfg,
        log,
        log_text,
        rows,
    }
}

/// After the stop the broker works again: the next start delivers every row
/// the stop left on disk, the sequence continues exactly (a clean stop), and
/// nothing read before the stop is missing.
async fn next_start_delivers_the_backlog(h: &HungStop) {
    let ups_rows = h.rows.iter().filter(|r| r.device == "ups1").count();
    assert!(
        ups_rows > 0,
        "the stop kept the unacknowledged readings on disk; log:\n{}",
        h.log_text
    );
    h.proxy.state.hang.store(false, Ordering::SeqCst);
    let top = h
        .rows
        .iter()
        .filter(|r| r.device == "ups1" && r.kind == 0)
        .map(|r| r.seq)
        .max()
        .unwrap_or(0);
    let mut gw = Process::start(&h.cfg, &h.log);
    eventually(WAIT, "the backlog and new samples", || {
        missing_backlog(&h.sub, &h.rows, &[]).is_empty()
            && h.sub.seqs("ups1").iter().any(|s| *s > top + 5)
    })
    .await;
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait(STOP_BUDGET).await, Some(0));
    h.sub.assert_all_valid();
    let seqs = h.sub.seqs("ups1");
    assert_contiguous(&seqs, 0, "ups1 across a stop with a hung broker");
    assert!(
        *seqs.iter().next_back().unwrap() < wardgate::spool::SEQ_BLOCK,
        "a clean stop resumes the sequence exactly"
    );
    assert!(!h
        .sub
        .events("gateway")
        .iter()
        .any(|(_, e)| e["code"] == "gateway.unclean_stop"));
}

/// The offline status did not reach the broker (it was hung): the retained
/// status is still what it was before, and the log must say the offline
/// status was not sent, so that whoever reads the journal knows why the IOC
/// shows the gateway online (or lost, once the broker drops the link).
fn assert_offline_status_not_sent_is_logged(h: &HungStop) {
    let shutdown = json!({"state": "offline", "reason": "shutdown"});
    assert!(
        !h.sub.statuses().iter().any(|m| m.body == shutdown),
        "the hung broker passed the offline status on"
    );
    assert!(
        !h.log_text.contains("offline status sent"),
        "the log says the offline status was sent, but the broker never got it:\n{}",
        h.log_text
    );
    assert!(
        h.log_text.contains("offline status not sent"),
        "the log does not say the offline status was not sent:\n{}",
        h.log_text
    );
}

/// SIGTERM while the broker is hung after the gateway connected (publishes
/// and the offline status never acknowledged): exit 0 within 10 s, and
/// every unacknowledged reading is on disk and delivered on the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_hung_broker_exits_in_time_and_loses_nothing() {
    let h = stop_with_a_hung_broker(Hang::AfterConnect).await;
    next_start_delivers_the_backlog(&h).await;
}

/// As above, with so much unacknowledged that the offline status cannot be
/// queued at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_hung_broker_and_a_full_queue_exits_in_time_and_loses_nothing() {
    let h = stop_with_a_hung_broker(Hang::QueueFull).await;
    next_start_delivers_the_backlog(&h).await;
}

/// As above, with a broker that accepts the connection and never answers
/// (no CONNACK): exit 0 within 10 s, readings kept and delivered later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_broker_that_never_answers_exits_in_time_and_loses_nothing() {
    let h = stop_with_a_hung_broker(Hang::BeforeConnack).await;
    next_start_delivers_the_backlog(&h).await;
}

/// With a hung broker the offline status cannot be published; the log must
/// say so (before the fix, the sink logged "offline status sent" whether or
/// not it was acknowledged, said nothing when it could not be queued, and
/// nothing when stopping before the CONNACK or while the link was down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_hung_broker_logs_the_offline_status_not_sent() {
    for hang in [Hang::AfterConnect, Hang::QueueFull, Hang::BeforeConnack] {
        let h = stop_with_a_hung_broker(hang).await;
        eprintln!("{hang:?}");
        assert_offline_status_not_sent_is_logged(&h);
    }
}
