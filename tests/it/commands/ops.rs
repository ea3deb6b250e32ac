//! Each op end to end, the LED's identify, refusals with their reasons,
//! `log.tail`'s own filter, and the test client failing a test on an
//! invalid reply.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::common::*;

/// Each op end to end: identify, poll (a sample published as usual, its
/// values in the result), status, spool.stats, log.tail, config.get (no
/// secrets, the hash the inventory names), then restart (exit 75 for
/// systemd, after the reply). Every reply passes the schema, each command
/// goes accepted -> executing -> successful, and the retained inventory
/// lists the device and the allowed ops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_op_end_to_end() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let ioc = Ioc::start(broker.port, &test_site(), None).await;
    let devices = format!(
        "{}[[device]]\nid = \"router\"\ntype = \"snmp\"\nhost = \"127.0.0.1\"\nport = {}\ncommunity = \"s3cret-community\"\ninterval = \"1h\"\n",
        sim("ups1", "1h", ""),
        free_port()
    );
    let all = [
        "identify",
        "poll",
        "status",
        "spool.stats",
        "log.tail",
        "config.get",
        "restart",
    ];
    let cfg = process_config(dir.path(), broker.port, &cmd_config(&all, &devices));
    let mut gw = Process::start(&cfg, &dir.path().join("gw.log"));
    connected(&gw, 0).await;

    // The inventory, retained.
    let inv = within(WAIT, "inventory", async {
        loop {
            if let Some(m) = sub
                .all()
                .into_iter()
                .find(|m| m.topic.ends_with("/inventory"))
            {
                return m.body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(inv["site"], json!(test_site()));
    assert_eq!(inv["devices"][0]["id"], "ups1");
    assert_eq!(inv["devices"][0]["type"], "sim");
    assert_eq!(inv["devices"][0]["interval_ms"], 3_600_000);
    assert_eq!(inv["devices"][1]["id"], "router");
    assert_eq!(inv["sinks"], json!(["mqtt"]));
    assert_eq!(
        inv["commands"]["allow"].as_array().unwrap().len(),
        all.len()
    );

    ioc.send("identify", "id-1", json!({"seconds": 30})).await;
    let r = ioc.final_reply("id-1").await;
    assert_eq!(r["status"], "successful", "{r}");
    assert_eq!(r["result"]["seconds"], 30);
    assert_eq!(
        ioc.statuses_of("id-1"),
        vec!["accepted", "executing", "successful"]
    );
    assert_eq!(
        r["_topic"],
        format!("ioc/{}/cmd/identify/id-1/reply", test_site())
    );

    // poll: a second sample, long before the 1 h interval.
    let before = sub.samples("ups1").len();
    ioc.send("poll", "poll-1", json!({"device": "ups1"})).await;
    let r = ioc.final_reply("poll-1").await;
    assert_eq!(r["status"], "successful", "{r}");
    assert_eq!(r["result"]["device"], "ups1");
    assert!(
        r["result"]["values"]["ups.load"].is_number(),
        "values in the result: {r}"
    );
    eventually(WAIT, "the polled sample published as usual", || {
        sub.samples("ups1").len() > before
    })
    .await;
    let published = sub.samples("ups1");
    assert!(
        published
            .iter()
            .any(|(_, s)| s["values"] == r["result"]["values"]),
        "the result's values are the published sample's"
    );
    ioc.send("poll", "poll-2", json!({"device": "nope"})).await;
    let r = ioc.final_reply("poll-2").await;
    assert_eq!(r["status"], "failed", "{r}");
    assert!(
        r["reason"].as_str().unwrap().contains("no device \"nope\""),
        "{r}"
    );

    ioc.send("status", "st-1", json!({})).await;
    let r = ioc.final_reply("st-1").await;
    assert_eq!(r["status"], "successful", "{r}");
    assert_eq!(r["result"]["site"], json!(test_site()));
    assert!(r["result"]["devices"]["ups1"].is_object(), "{r}");
    assert!(
        r["result"]["identify_until_ms"].as_i64().unwrap() > now(),
        "identify is on in the snapshot: {r}"
    );
    assert_eq!(r["result"]["identify_by"], "ioc");

    ioc.send("spool.stats", "sp-1", json!({})).await;
    let r = ioc.final_reply("sp-1").await;
    assert_eq!(r["status"], "successful", "{r}");
    assert_eq!(r["result"]["running"]["epoch"].as_str().unwrap().len(), 16);
    assert!(
        r["result"]["store"]["path"]
            .as_str()
            .unwrap()
            .ends_with("spool.db"),
        "{r}"
    );

    ioc.send("log.tail", "log-1", json!({"lines": 1000})).await;
    let r = ioc.final_reply("log-1").await;
    assert_eq!(r["status"], "successful", "{r}");
    let lines = r["result"]["lines"].as_array().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l["message"].as_str().unwrap().contains("MQTT connected")),
        "{r}"
    );
    ioc.send("log.tail", "log-2", json!({"lines": 5, "level": "warn"}))
        .await;
    let r = ioc.final_reply("log-2").await;
    let lines = r["result"]["lines"].as_array().unwrap();
    assert!(lines.len() <= 5);
    assert!(
        lines
            .iter()
            .all(|l| l["level"] == "warn" || l["level"] == "error"),
        "{r}"
    );

    ioc.send("config.get", "cfg-1", json!({})).await;
    let r = ioc.final_reply("cfg-1").await;
    assert_eq!(r["status"], "successful", "{r}");
    let toml = r["result"]["toml"].as_str().unwrap();
    assert!(toml.contains(&test_site()), "{toml}");
    assert!(!r.to_string().contains("s3cret-community"), "a secret: {r}");
    assert_eq!(r["result"]["removed"], json!(["device[1].community"]));
    assert_eq!(r["result"]["hash"], inv["config_hash"]);
    assert!(
        r["result"]["hash"].as_str().unwrap().starts_with("sha256:"),
        "{r}"
    );

    // restart: the reply, then a clean stop with exit 75 (not 0, so that
    // systemd's Restart=on-failure starts it again).
    ioc.send("restart", "rs-1", json!({})).await;
    let r = ioc.final_reply("rs-1").await;
    assert_eq!(r["status"], "successful", "{r}");
    assert_eq!(gw.wait(WAIT).await, Some(75), "{}", gw.log_text());
    assert!(gw.log_text().contains("stopped"), "a clean stop");
    sub.assert_all_valid();
}

/// identify drives the LED like SIGUSR1 does: a fake sysfs LED that is
/// steady with everything well flickers (10 Hz) for the seconds asked,
/// then is steady again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_flickers_the_led() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let led = dir.path().join("led");
    std::fs::create_dir_all(&led).unwrap();
    std::fs::write(led.join("trigger"), "none [mmc0] timer heartbeat\n").unwrap();
    std::fs::write(led.join("brightness"), "0\n").unwrap();
    let ioc = Ioc::start(broker.port, &test_site(), None).await;
    let text = config_text(
        broker.port,
        dir.path(),
        &cmd_config(&["identify"], &sim("ups1", "1s", "")),
    )
    .replace(
        "[led]\nbackend = \"none\"",
        &format!("[led]\nbackend = \"sysfs\"\npath = \"{}\"", led.display()),
    );
    let cfg = dir.path().join("wardgate.toml");
    std::fs::write(&cfg, text).unwrap();
    let _gw = Process::start(&cfg, &dir.path().join("gw.log"));
    // Changes of the LED's brightness within `d`.
    let changes = |d: Duration| {
        let led = led.clone();
        async move {
            let end = std::time::Instant::now() + d;
            let mut last = std::fs::read_to_string(led.join("brightness")).unwrap();
            let mut n = 0;
            while std::time::Instant::now() < end {
                let b = std::fs::read_to_string(led.join("brightness")).unwrap();
                if b != last {
                    n += 1;
                    last = b;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            n
        }
    };
    // Steady first: connected, the device answering.
    let mut steady = false;
    for _ in 0..60 {
        if changes(Duration::from_millis(700)).await == 0 {
            steady = true;
            break;
        }
    }
    assert!(steady, "the LED never became steady");
    let sent = std::time::SystemTime::now();
    ioc.send("identify", "led-1", json!({"seconds": 3})).await;
    assert_eq!(ioc.final_reply("led-1").await["status"], "successful");
    let n = changes(Duration::from_millis(1000)).await;
    assert!(n >= 8, "flicker: {n} changes in 1 s");
    // Over after 3 s: the LED is steady again (700 ms without a change)
    // soon after, and not before (the flicker stops at the end of the 3 s
    // counted from when the gateway took the request, after `sent`; 0.5 s
    // are allowed for an LED task held up by a loaded machine). Waiting for
    // the steady window rather than looking at a fixed moment: the LED may
    // legitimately blink for a moment meanwhile (a device late on a loaded
    // machine). A flicker for the default 60 s, or one that never ends, is
    // never steady within 10 s of the end. The last change is the
    // brightness file's mtime (the LED is written only when it changes), so
    // a test held up between two looks cannot miss a change.
    let last_change = || {
        std::fs::metadata(led.join("brightness"))
            .unwrap()
            .modified()
            .unwrap()
    };
    let steady_again = wait_for(Duration::from_secs(3 + 10), || {
        last_change()
            .elapsed()
            .is_ok_and(|d| d >= Duration::from_millis(700))
    })
    .await;
    assert!(
        steady_again,
        "the LED is not steady again 10 s after the 3 s of identify"
    );
    let lasted = last_change().duration_since(sent).unwrap_or_default();
    assert!(
        lasted >= Duration::from_millis(2500),
        "the flicker stopped {lasted:?} after the request, not after 3 s"
    );
}

/// Every kind of request that may not run is rejected with its reason and
/// never accepted: an op not allowed, an unknown op, malformed JSON, a
/// payload over 64 KiB, an expired request, one without `expires`, bad
/// args. The gateway keeps running and still answers a good one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_with_reasons() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let ioc = Ioc::start(broker.port, &test_site(), None).await;
    let cfg = process_config(
        dir.path(),
        broker.port,
        "[gateway]\nsystem_health = false\n[commands]\ntrust_clock = true\n",
    );
    let gw = Process::start(&cfg, &dir.path().join("gw.log"));
    connected(&gw, 0).await;
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "config.get",
            "na-1",
            request(json!({})).into_bytes(),
            "not allowed",
        ),
        (
            "reboot",
            "uk-1",
            request(json!({})).into_bytes(),
            "unknown op",
        ),
        (
            "status",
            "mf-1",
            b"{\"expires\": ".to_vec(),
            "malformed request",
        ),
        (
            "status",
            "big-1",
            format!(
                "{{\"expires\":{},\"args\":{{\"pad\":\"{}\"}}}}",
                now() + 60_000,
                "x".repeat(70 * 1024)
            )
            .into_bytes(),
            "too large",
        ),
        (
            "status",
            "ex-1",
            json!({"expires": now() - 1000}).to_string().into_bytes(),
            "expired",
        ),
        (
            "status",
            "ne-1",
            json!({"args": {}}).to_string().into_bytes(),
            "expires is required",
        ),
        (
            "poll",
            "ba-1",
            request(json!({"dev": "x"})).into_bytes(),
            "malformed args for poll",
        ),
    ];
    for (op, id, payload, _) in &cases {
        ioc.send_raw(op, id, payload.clone(), false).await;
    }
    for (op, id, _, why) in &cases {
        let r = ioc.final_reply(id).await;
        assert_eq!(r["status"], "rejected", "{op}: {r}");
        assert_eq!(r["op"], *op);
        assert!(
            r["reason"].as_str().unwrap().contains(why),
            "{op}: {why}: {r}"
        );
        assert_eq!(
            ioc.statuses_of(id),
            vec!["rejected"],
            "{op}: never accepted"
        );
    }
    ioc.send("status", "ok-1", json!({})).await;
    assert_eq!(ioc.final_reply("ok-1").await["status"], "successful");
}

/// The command client fails the test on an invalid reply from the test's
/// own task, never only inside its MQTT task (where a panic is lost): a
/// reply that is not JSON and one against the schema are recorded, and
/// reading the replies fails, as does dropping the client (both caught
/// here, to see them happen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_reply_fails_the_test() {
    let broker = Broker::start();
    let site = test_site();
    let ioc = Ioc::start(broker.port, &site, None).await;
    for (id, payload) in [
        ("r1", "not json".to_owned()),
        (
            "r2",
            json!({"op": "status", "id": "r2", "status": "bogus"}).to_string(),
        ),
    ] {
        ioc.client
            .publish(
                format!("ioc/{site}/cmd/status/{id}/reply"),
                rumqttc::QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .unwrap();
    }
    eventually(WAIT, "both replies recorded as invalid", || {
        ioc.invalid.lock().unwrap().len() >= 2
    })
    .await;
    let text = |e: Box<dyn std::any::Any + Send>| e.downcast_ref::<String>().cloned();
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ioc.replies_of("r2")));
    let said = text(read.expect_err("reading replies must fail")).unwrap_or_default();
    assert!(
        said.contains("r1/reply: reply not JSON") && said.contains("reply against the schema"),
        "{said}"
    );
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(ioc)));
    let said = text(dropped.expect_err("dropping the client must fail")).unwrap_or_default();
    assert!(said.contains("invalid command replies"), "{said}");
}

/// `log.tail` has its own filter, not the journal's: with
/// `WARDGATE_LOG=trace` (a technician chasing a problem) the lines of
/// rumqttc, hyper and rustls at debug and trace must not reach the
/// operations centre. The ring keeps the gateway's own lines at info and
/// above, whatever the journal gets (here: trace, which the log file
/// shows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_tail_has_its_own_filter() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let ioc = Ioc::start(broker.port, &test_site(), None).await;
    let cfg = process_config(
        dir.path(),
        broker.port,
        &cmd_config(&["log.tail"], &sim("ups1", "1s", "")),
    );
    let log = dir.path().join("gw.log");
    let mut gw = Process::start_with_prefix(&["env", "WARDGATE_LOG=trace"], &cfg, &log);
    connected(&gw, 0).await;
    ioc.send("log.tail", "lt-1", json!({"lines": 1000})).await;
    let r = ioc.final_reply("lt-1").await;
    assert_eq!(r["status"], "successful", "{r}");
    let lines = r["result"]["lines"].as_array().unwrap();
    assert!(!lines.is_empty(), "{r}");
    for l in lines {
        let target = l["target"].as_str().unwrap();
        assert!(
            target == "wardgate" || target.starts_with("wardgate::"),
            "a line of another crate reached log.tail: {l}"
        );
        assert!(
            ["info", "warn", "error"].contains(&l["level"].as_str().unwrap()),
            "{l}"
        );
    }
    let journal = std::fs::read_to_string(&log).unwrap();
    assert!(
        journal.contains("TRACE") || journal.contains("DEBUG"),
        "the journal's filter was not trace: {}",
        &journal[..journal.len().min(500)]
    );
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait(STOP_BUDGET).await, Some(0));
}
