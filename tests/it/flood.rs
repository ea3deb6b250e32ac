//! A command flood against the spawned binary and a real mosquitto: anyone
//! who can publish on the command topics sends thousands of requests with
//! new ids (ops that run, ops that are refused, ops that do not exist),
//! then the broker goes away while the spool is small. Not one reading may
//! be dropped for it: the replies the gateway remembers live outside the
//! readings' cap and are capped themselves, and the dispatcher takes
//! requests at a bounded rate, counting the rest (`commands.limited`).
//!
//! `WARDGATE_FLOOD=50000` floods with that many requests instead of the
//! suite's 5,000 and prints the same figures (the suite keeps its run
//! short; `scripts/measure-memory --command-flood` prints figures for the
//! release binary).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::common::storage::*;
use crate::common::*;

/// The suite's flood; `WARDGATE_FLOOD` overrides it.
const FLOOD: usize = 5_000;

/// A safety bound on the gateway's peak RSS, not a figure: the unit's
/// `MemoryMax=64M` (systemd/wardgate.service).
const RSS_LIMIT_KIB: u64 = 64 * 1024;

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The op, id and payload of flood request `i`: ops that run and are
/// remembered (identify), ops that run and are not (status, poll), an op
/// not allowed, one that does not exist, and a malformed request.
fn flood_request(i: usize, expires: i64) -> (String, String, String) {
    let id = format!("flood-{i}");
    let (op, args) = match i % 6 {
        0 => ("identify", json!({"seconds": 1})),
        1 => ("status", json!({})),
        2 => ("poll", json!({"device": "s1"})),
        3 => ("config.set", json!({"toml": "", "base_hash": ""})),
        4 => ("no.such.op", json!({})),
        _ => ("status", json!({"unknown": true})),
    };
    let body = json!({"expires": expires, "args": args}).to_string();
    (op.to_owned(), id, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_flood_drops_no_reading() {
    let flood: usize = std::env::var("WARDGATE_FLOOD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FLOOD);
    let mut rig = Rig::new(RigOpts {
        // Small, and enough for the outage's readings by themselves.
        spool: "max_bytes = \"256 KiB\"\ncommit_interval = \"100ms\"\n",
        devices: &format!("[commands]\ntrust_clock = true\n{}", sim("s1", "50ms", "")),
        ..Default::default()
    })
    .await;
    let mut gw = rig.start();
    let pid = gw.child.id();
    let sub = &rig.sub;
    gw.until(WAIT, "s1 delivers live samples", || {
        sub.seqs("s1").len() >= 10
    })
    .await;

    // The flooder: one MQTT client publishing QoS 1 as fast as the broker
    // takes it.
    let site = test_site();
    let mut o = rumqttc::MqttOptions::new("test-flooder", "127.0.0.1", rig.broker.port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, el) = rumqttc::AsyncClient::new(o, 1000);
    let replies = Arc::new(AtomicUsize::new(0));
    let marker_seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let cancel = CancellationToken::new();
    let (r, m) = (replies.clone(), marker_seen.clone());
    run_subscribed(
        (client.clone(), el),
        format!("ioc/{site}/cmd/+/+/reply"),
        cancel.clone(),
        (WAIT, "flooder subscription"),
        move |p| {
            r.fetch_add(1, Ordering::Relaxed);
            if p.topic.contains("/marker-") {
                m.lock().unwrap().push(p.topic.clone());
            }
        },
    )
    .await;
    let expires = wardgate::model::now_ms() + 3_600_000;
    let t0 = Instant::now();
    for i in 0..flood {
        let (op, id, body) = flood_request(i, expires);
        within(
            WAIT,
            "publishing the flood",
            client.publish(
                format!("ioc/{site}/cmd/{op}/{id}"),
                rumqttc::QoS::AtLeastOnce,
                false,
                body,
            ),
        )
        .await
        .unwrap();
    }
    let published = t0.elapsed();
    // The flood is over when a request sent after it is answered: sent
    // again under a new id every 2 s (one may be refused by the rate limit
    // or the full inbox).
    let mut answered = false;
    for n in 0..300 {
        let body = json!({"expires": expires, "args": {}}).to_string();
        within(
            WAIT,
            "publishing a marker",
            client.publish(
                format!("ioc/{site}/cmd/status/marker-{n}"),
                rumqttc::QoS::AtLeastOnce,
                false,
                body,
            ),
        )
        .await
        .unwrap();
        if wait_for(Duration::from_secs(2), || {
            !marker_seen.lock().unwrap().is_empty()
        })
        .await
        {
            answered = true;
            break;
        }
    }
    assert!(answered, "the gateway never answered after the flood");
    let settled = t0.elapsed();
    let rss_flood = vm_hwm_kib(pid);
    cancel.cancel();

    // The outage: readings pile up in the small spool, then drain.
    let from = rig.sub.all().len();
    rig.broker.stop();
    tokio::time::sleep(Duration::from_secs(8)).await;
    gw.assert_running("during the outage");
    rig.broker.start_again();
    let sub = &rig.sub;
    let last_before = *sub.seqs("s1").iter().next_back().unwrap_or(&0);
    // Drained: every s1 seq from the first to the last arrived, the last
    // taken after the outage; or (a hole that will not fill) a live reading
    // from after the outage and the gateway's telemetry saying nothing
    // waits on disk. The assertions below say which.
    gw.until(WAIT, "the backlog drains", || {
        let seqs = sub.seqs("s1");
        let (Some(lo), Some(hi)) = (seqs.first(), seqs.last()) else {
            return false;
        };
        let live_after = sub
            .samples("s1")
            .iter()
            .any(|(i, s)| *i > from && s["historical"] == false);
        let contiguous = (hi - lo + 1) as usize == seqs.len();
        let empty = sub
            .samples("gateway")
            .iter()
            .rfind(|(i, _)| *i > from)
            .is_some_and(|(_, s)| s["values"]["spool.depth"] == 0.0);
        live_after && *hi > last_before + 100 && (contiguous || empty)
    })
    .await;
    let rss_peak = vm_hwm_kib(pid);

    let limited = gateway_max(sub, "commands.limited", 0).unwrap_or(0.0);
    let dropped_cmds = gateway_max(sub, "commands.dropped", 0).unwrap_or(0.0);
    let reply_count = replies.load(Ordering::Relaxed);
    eprintln!(
        "flood: {flood} requests published in {published:?}, settled after {settled:?}; \
         {reply_count} replies; commands.limited {limited}, commands.dropped {dropped_cmds}; \
         peak RSS after the flood {rss_flood} KiB, after the outage {rss_peak} KiB; \
         seq s1 up to {last_before} before the outage"
    );

    // No reading dropped: not in the counters, not in the log, not at the
    // broker (every s1 seq from the first to the last).
    let readings_dropped = gateway_dropped(sub);
    assert_eq!(
        readings_dropped,
        0.0,
        "readings dropped after a command flood: {}; log tail:\n{}",
        last_spool_values(sub),
        gw.log_tail()
    );
    assert!(
        !gw.log_text().contains("spool dropped records"),
        "the spool dropped records: {}",
        gw.log_tail()
    );
    let seqs = sub.seqs("s1");
    let first = *seqs.iter().next().unwrap();
    let last = assert_contiguous(&seqs, first, "s1 at the broker");
    assert!(last > last_before, "s1 went on after the outage");
    assert!(
        rss_peak < RSS_LIMIT_KIB,
        "peak RSS {rss_peak} KiB, over the unit's MemoryMax"
    );
    // The flood was refused at the door, and said so.
    assert!(
        limited > 0.0,
        "no request counted as commands.limited; {}",
        last_spool_values(sub)
    );
    // Replies are remembered beside the spool, not in it, and capped.
    let spool = open_spool(&rig.spool);
    let in_spool: i64 = spool
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'cmd_replies'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(in_spool, 0, "the replay store lives outside the spool file");
    gw.stop_clean("after the flood").await;
}
