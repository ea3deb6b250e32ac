//! How requests arrive: one id runs once (even after a restart), a
//! retained request reaches a gateway that was offline, subscriptions
//! come back after a broker restart, an id cannot be claimed in advance,
//! and a huge retained request does not cut the uplink.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::common::*;

/// The same id twice runs once: the second request gets the stored reply
/// with `replayed: true`, also after a restart (the id is in the replay
/// store's file beside the spool), and the op did not run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_id_twice_runs_once_even_after_a_restart() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let ioc = Ioc::start(broker.port, &test_site(), None).await;
    let cfg = process_config(dir.path(), broker.port, &cmd_config(&["identify"], ""));
    let log = dir.path().join("gw.log");
    let mut gw = Process::start(&cfg, &log);
    connected(&gw, 0).await;
    ioc.send("identify", "twice", json!({"seconds": 5})).await;
    let first = ioc.final_reply("twice").await;
    assert_eq!(first["status"], "successful");
    assert_eq!(first["replayed"], false);
    ioc.send("identify", "twice", json!({"seconds": 5})).await;
    let second = ioc.final_reply_n("twice", 2).await;
    assert_eq!(second["status"], "successful");
    assert_eq!(second["replayed"], true);
    assert_eq!(second["ts"], first["ts"], "the stored reply");
    let runs = |t: &str| {
        t.matches("identify requested by the operations centre")
            .count()
    };
    assert_eq!(runs(&gw.log_text()), 1, "ran once");

    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait(STOP_BUDGET).await, Some(0));
    let from = gw.log_text().len();
    let gw = Process::start(&cfg, &log);
    connected(&gw, from).await;
    ioc.send("identify", "twice", json!({"seconds": 5})).await;
    let third = ioc.final_reply_n("twice", 3).await;
    assert_eq!(third["replayed"], true, "{third}");
    assert_eq!(runs(&gw.log_text()), 1, "not run after the restart either");
}

/// A command published (retained) while the gateway is offline runs when
/// it connects; the broker delivers it again on every new subscription,
/// and the replay store keeps a command that changes something (here
/// identify) from running twice. The design relies on retained requests,
/// not on a persistent session (the gateway connects with a clean
/// session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_command_sent_while_offline_runs_once() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let ioc = Ioc::start(broker.port, &test_site(), None).await;
    ioc.send_raw(
        "identify",
        "while-off",
        request(json!({"seconds": 1})).into_bytes(),
        true,
    )
    .await;
    let cfg = process_config(
        dir.path(),
        broker.port,
        &cmd_config(&["identify", "status"], ""),
    );
    let log = dir.path().join("gw.log");
    let mut gw = Process::start(&cfg, &log);
    let r = ioc.final_reply("while-off").await;
    assert_eq!(r["status"], "successful", "{r}");
    assert_eq!(r["replayed"], false);
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait(STOP_BUDGET).await, Some(0));
    let from = std::fs::read_to_string(&log).unwrap().len();
    let _gw = Process::start(&cfg, &log);
    let again = ioc.final_reply_n("while-off", 2).await;
    assert_eq!(again["replayed"], true, "delivered again, not run again");
    // The operations centre clears it; the empty message is ignored: no
    // reply to it (a rejection would be one). A request sent after the
    // clear marks when the gateway has had it; then a moment more for a
    // reply to it to show.
    ioc.send_raw("identify", "while-off", Vec::new(), true)
        .await;
    ioc.send("status", "after-clear", json!({})).await;
    assert_eq!(ioc.final_reply("after-clear").await["status"], "successful");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Ran once: accepted, executing, successful, then only stored replies
    // sent again, one per connection of the second run (a reconnect
    // before the clear reached the broker gets the retained request once
    // more, legitimately; the clear itself gets nothing, though taken for
    // a request it would be answered with the stored reply too).
    let replies = ioc.replies_of("while-off");
    let (first, again) = replies.split_at(3.min(replies.len()));
    let statuses: Vec<&str> = first
        .iter()
        .map(|r| r["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        statuses,
        ["accepted", "executing", "successful"],
        "{replies:?}"
    );
    assert!(
        !again.is_empty()
            && again
                .iter()
                .all(|r| r["replayed"] == true && r["status"] == "successful"),
        "after the first run only stored replies, and no reply to the clear: {replies:?}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let connects = text[from..].matches("MQTT connected").count();
    assert!(
        again.len() <= connects,
        "{} stored replies sent again over {connects} connection(s): one answered the clear; {replies:?}",
        again.len()
    );
    let runs = text
        .lines()
        .filter(|l| l.contains("command from the operations centre") && l.contains("while-off"))
        .count();
    assert_eq!(runs, 1, "run once");
}

/// After a broker restart without persistence (no session survives), the
/// gateway subscribes again on its new connection and answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_restored_after_a_broker_restart() {
    let mut broker = Broker::start_with("allow_anonymous true\npersistence false\n");
    let dir = tempfile::tempdir().unwrap();
    let cfg = process_config(dir.path(), broker.port, &cmd_config(&["status"], ""));
    let gw = Process::start(&cfg, &dir.path().join("gw.log"));
    connected(&gw, 0).await;
    {
        let ioc = Ioc::start(broker.port, &test_site(), None).await;
        ioc.send("status", "before", json!({})).await;
        assert_eq!(ioc.final_reply("before").await["status"], "successful");
    }
    let from = gw.log_text().len();
    broker.restart();
    connected(&gw, from).await;
    let ioc = Ioc::start(broker.port, &test_site(), None).await;
    ioc.send("status", "after", json!({})).await;
    assert_eq!(ioc.final_reply("after").await["status"], "successful");
}

/// A command id cannot be claimed in advance. A rejected request (garbage
/// under an id the operations centre will use) is not stored, so the real
/// request under that id runs; a different request
/// under an id that already answered one is rejected "id reused" instead
/// of getting the other's stored reply; the same request again (a new
/// `expires`) still gets the stored reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_id_cannot_be_claimed_in_advance() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let ioc = Ioc::start(broker.port, &test_site(), None).await;
    let cfg = process_config(
        dir.path(),
        broker.port,
        &cmd_config(&["identify", "status"], ""),
    );
    let log = dir.path().join("gw.log");
    let mut gw = Process::start(&cfg, &log);
    connected(&gw, 0).await;
    // Garbage first, under the id the real request will use: rejected.
    ioc.send_raw("identify", "claimed", b"not a request".to_vec(), false)
        .await;
    let r = ioc.final_reply("claimed").await;
    assert_eq!(r["status"], "rejected", "{r}");
    // The real request under that id runs.
    ioc.send("identify", "claimed", json!({"seconds": 5})).await;
    let r = ioc.final_reply_n("claimed", 2).await;
    assert_eq!(
        (r["status"].as_str(), r["replayed"].as_bool()),
        (Some("successful"), Some(false)),
        "{r}"
    );
    // The same request again (a new expires): the stored reply.
    ioc.send("identify", "claimed", json!({"seconds": 5})).await;
    let r = ioc.final_reply_n("claimed", 3).await;
    assert_eq!(
        (r["status"].as_str(), r["replayed"].as_bool()),
        (Some("successful"), Some(true)),
        "{r}"
    );
    // Another request under the same id: "id reused", not the stored reply.
    ioc.send("identify", "claimed", json!({"seconds": 9})).await;
    let r = ioc.final_reply_n("claimed", 4).await;
    assert_eq!(r["status"], "rejected", "{r}");
    assert!(
        r["reason"].as_str().unwrap().starts_with("id reused"),
        "{r}"
    );
    ioc.send("status", "claimed", json!({})).await;
    let r = ioc.final_reply_n("claimed", 5).await;
    assert!(
        r["reason"].as_str().unwrap_or("").starts_with("id reused"),
        "{r}"
    );
    // A read-only op is not remembered: the same request again runs again
    // (a fresh answer), and its id claims nothing, so a command that
    // changes something may use it afterwards.
    for n in 1..=2 {
        ioc.send("status", "read-only", json!({})).await;
        let r = ioc.final_reply_n("read-only", n).await;
        assert_eq!(
            (r["status"].as_str(), r["replayed"].as_bool()),
            (Some("successful"), Some(false)),
            "{r}"
        );
    }
    ioc.send("identify", "read-only", json!({"seconds": 1}))
        .await;
    let r = ioc.final_reply_n("read-only", 3).await;
    assert_eq!(
        (
            r["op"].as_str(),
            r["status"].as_str(),
            r["replayed"].as_bool()
        ),
        (Some("identify"), Some("successful"), Some(false)),
        "{r}"
    );
    assert_eq!(
        gw.log_text()
            .matches("identify requested by the operations centre")
            .count(),
        2,
        "ran once under each id"
    );
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait(STOP_BUDGET).await, Some(0));
}

/// A retained request bigger than anything the gateway takes, left on a
/// command topic (by mistake or not), must not cut the uplink at every
/// reconnect. Up to the incoming limit (8 MiB) it is read and rejected
/// "too large"; beyond it (a broker with no packet limit) the connection it
/// ends is the last with the command subscription for a while: telemetry
/// goes on, and the log says which topics and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_retained_request_does_not_cut_the_uplink() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let site = test_site();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let ioc = Ioc::start(broker.port, &site, None).await;
    let retain = |id: &str, bytes: usize| {
        let f = dir.path().join(format!("{id}.json"));
        std::fs::write(&f, vec![b' '; bytes]).unwrap();
        let ok = std::process::Command::new("mosquitto_pub")
            .args(["-p", &broker.port.to_string(), "-q", "1", "-r"])
            .args(["-t", &format!("ioc/{site}/cmd/status/{id}")])
            .arg("-f")
            .arg(&f)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mosquitto_pub");
    };
    // 2 MiB: over the old limit (1 MiB), under the new one.
    retain("big2", 2 << 20);
    let cfg = process_config(
        dir.path(),
        broker.port,
        &cmd_config(&["status"], &sim("ups1", "500ms", "")),
    );
    let gw = Process::start(&cfg, &dir.path().join("gw.log"));
    let r = ioc.final_reply("big2").await;
    assert_eq!(r["status"], "rejected", "{r}");
    assert!(
        r["reason"].as_str().unwrap().starts_with("too large"),
        "{r}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        gw.log_text().matches("MQTT connected").count(),
        1,
        "{}",
        gw.log_text()
    );
    // 9 MiB: over what the gateway reads. One connection ends on it, the
    // next ones leave commands out and carry telemetry.
    retain("big9", 9 << 20);
    ioc.send("status", "nudge", json!({})).await;
    eventually(WAIT, "commands suspended, said in the log", || {
        gw.log_text().contains("commands are not read for 10 min")
    })
    .await;
    let before = sub
        .all()
        .iter()
        .filter(|m| m.topic.ends_with("/ups1/telemetry"))
        .count();
    eventually(WAIT, "telemetry after the suspension", || {
        sub.all()
            .iter()
            .filter(|m| m.topic.ends_with("/ups1/telemetry"))
            .count()
            > before + 4
    })
    .await;
    let connects = gw.log_text().matches("MQTT connected").count();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        gw.log_text().matches("MQTT connected").count(),
        connects,
        "the uplink keeps dropping:\n{}",
        gw.log_text()
    );
}
