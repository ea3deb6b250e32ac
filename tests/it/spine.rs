//! The spine: sources -> spool -> acknowledged MQTT delivery (issue tests 1-10).

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
    let ups_events = sub.events("ups1");
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
    tokio::time::sleep(Duration::from_secs(30)).await;
    let pushed_during = gw
        .spool
        .counters()
        .pushed
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        gw.spool.stats().disk_rows > 1000,
        "the outage went to disk: {:?}",
        gw.spool.stats()
    );
    broker.restart();
    eventually(Duration::from_secs(90), "backlog drained", || {
        gw.spool.stats().disk_rows == 0 && sub.seqs("ups1").len() as u64 > 1500
    })
    .await;
    // Let the last live messages land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    gw.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    sub.assert_all_valid();
    assert!(pushed_during > 1500);
    assert!(
        sub.seqs("ups1").len() as u64 > 1500,
        "ups1 alone read through the outage"
    );

    for dev in ["ups1", "env1"] {
        let all = sub.samples(dev);
        let unique = dedupe(&all);
        let seqs = unique.keys().copied().collect();
        assert_contiguous(&seqs, 0, dev);
        // Each stream (live, historical) is in seq order.
        for hist in [true, false] {
            let s: Vec<u64> = all
                .iter()
                .filter(|(i, r)| *i >= before_outage && r["historical"] == hist)
                .map(|(_, r)| r["seq"].as_u64().unwrap())
                .collect();
            assert!(
                s.windows(2).all(|w| w[0] < w[1]),
                "{dev} historical={hist} out of order"
            );
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

/// 3. SIGKILL while the broker is down, then restart: everything read more
/// than spill_after before the kill is delivered; duplicates keep their seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_broker_down_keeps_all_but_the_last_spill_after() {
    let mut broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = process_config(dir.path(), broker.port, &sim("ups1", "50ms", ""));
    let log = dir.path().join("wardgate.log");
    let mut gw = Process::start(&cfg, &log);
    eventually(WAIT, "live samples", || sub.seqs("ups1").len() >= 10).await;
    broker.stop();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let kill_ms = wardgate::model::now_ms();
    gw.signal(libc::SIGKILL);
    gw.wait(Duration::from_secs(5)).await;
    broker.restart();
    let mut gw = Process::start(&cfg, &log);
    let block = wardgate::spool::SEQ_BLOCK;
    eventually(WAIT, "samples after the restart", || {
        sub.seqs("ups1").iter().any(|s| *s >= block + 10)
    })
    .await;
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait(Duration::from_secs(10)).await, Some(0));
    sub.assert_all_valid();

    let unique = dedupe(&sub.samples("ups1"));
    let before: std::collections::BTreeSet<u64> =
        unique.keys().copied().filter(|s| *s < block).collect();
    let last = assert_contiguous(&before, 0, "samples read before the kill");
    let last_ts = unique[&last]["ts"].as_i64().unwrap();
    // spill_after (2 s) + one commit interval (1 s) + one reading interval.
    assert!(
        last_ts >= kill_ms - 3_050,
        "readings up to {}ms before the kill were lost; log:\n{}",
        kill_ms - last_ts,
        gw.log_text()
    );
    // After an unclean stop the sequence resumes after the reserved block,
    // and the gateway says where, and which numbers were really used.
    let evs = sub.events("gateway");
    let unclean = evs
        .iter()
        .find(|(_, e)| e["code"] == "gateway.unclean_stop")
        .map(|(_, e)| e["values"].clone())
        .unwrap_or_else(|| panic!("unclean stop reported: {evs:?}"));
    let resumed = unclean["seq_resumed.ups1.samples"]
        .as_f64()
        .map(|f| f as u64)
        .unwrap_or_else(|| panic!("seq_resumed in {unclean}"));
    let last_used = unclean["seq_last_used.ups1.samples"]
        .as_f64()
        .map(|f| f as u64)
        .expect("seq_last_used after a crash on the same boot");
    assert!(resumed >= block, "{unclean}");
    let after: Vec<u64> = unique
        .keys()
        .copied()
        .filter(|s| *s >= block)
        .take(5)
        .collect();
    assert_eq!(
        after.first(),
        Some(&resumed),
        "resumed where the event says; log:\n{}",
        gw.log_text()
    );
    // Every number up to the last used one was really used; none after it
    // (before the resume point) ever arrives.
    assert!(last >= last_used.saturating_sub(200), "{last} {last_used}");
    assert!(
        last <= last_used,
        "received {last} above last used {last_used}"
    );
    assert!(unique.keys().all(|s| *s <= last_used || *s >= resumed));
}

/// 4. SIGTERM with the broker down: every unacknowledged sample is kept and
/// delivered after the restart; the sequence resumes exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_broker_down_loses_nothing() {
    let mut broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    // A long spill_after: without the shutdown flush, these would be lost.
    let extra = format!("{}\n[spool]\n", sim("ups1", "20ms", ""));
    let text = config_text(broker.port, dir.path(), &extra).replace(
        "[spool]\npath",
        "[spool]\nspill_after = \"30s\"\ncommit_interval = \"10s\"\npath",
    );
    let cfg = dir.path().join("wardgate.toml");
    std::fs::write(&cfg, text.replace("\n[spool]\n\n", "\n")).unwrap();
    let log = dir.path().join("wardgate.log");
    let mut gw = Process::start(&cfg, &log);
    eventually(WAIT, "live samples", || sub.seqs("ups1").len() >= 10).await;
    broker.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t0 = std::time::Instant::now();
    gw.signal(libc::SIGTERM);
    assert_eq!(
        gw.wait(Duration::from_secs(10)).await,
        Some(0),
        "clean exit"
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
    broker.restart();
    let mut gw = Process::start(&cfg, &log);
    eventually(WAIT, "backlog and new samples", || {
        let s = sub.seqs("ups1");
        s.len() > 150 && assert_contiguous_quiet(&s)
    })
    .await;
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait(Duration::from_secs(10)).await, Some(0));
    sub.assert_all_valid();
    let seqs = sub.seqs("ups1");
    assert_contiguous(&seqs, 0, "ups1 across a clean restart");
    assert!(
        *seqs.iter().next_back().unwrap() < wardgate::spool::SEQ_BLOCK,
        "a clean stop resumes the sequence exactly"
    );
    assert!(!sub
        .events("gateway")
        .iter()
        .any(|(_, e)| e["code"] == "gateway.unclean_stop"));
    assert!(gw.log_text().contains("spool closed cleanly"));
}

fn assert_contiguous_quiet(s: &std::collections::BTreeSet<u64>) -> bool {
    match (s.iter().next(), s.iter().next_back()) {
        (Some(&a), Some(&b)) => a == 0 && (b - a + 1) as usize == s.len(),
        _ => false,
    }
}

fn openssl(args: &[&str], dir: &std::path::Path) {
    let st = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl must be installed");
    assert!(st.success(), "openssl {args:?}");
}

/// 6. TLS with a test CA and password auth; a wrong password is logged,
/// retried with backoff, and the gateway stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_password_and_wrong_password_retries() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=wardgate test CA",
        ],
        d,
    );
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
        d,
    );
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
        d,
    );
    let pw = d.join("passwd");
    let st = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&pw)
        .args(["ward", "s3cret-pass"])
        .status()
        .unwrap();
    assert!(st.success());
    // The broker runs as whoever runs the tests; let it read the files.
    for f in ["server.key", "passwd"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    // The broker's main listener is plain text, for the subscriber (with
    // the password); the gateway talks TLS to a second listener.
    let tls_port = free_port();
    let broker = Broker::start_with(&format!(
        "allow_anonymous false\npassword_file {}\nlistener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
        pw.display(),
        d.join("ca.pem").display(),
        d.join("server.pem").display(),
        d.join("server.key").display()
    ));
    let sub = Subscriber::start_login(
        broker.port,
        "ioc",
        &test_site(),
        Some(("ward", "s3cret-pass")),
    )
    .await;
    std::fs::write(d.join("good"), "s3cret-pass\n").unwrap();
    std::fs::write(d.join("bad"), "wrong\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tls = |pwfile: &str| {
        config_text(tls_port, dir.path(), &sim("ups1", "50ms", ""))
                .replace(
                    "[mqtt]\n",
                    &format!(
                        "[mqtt]\ntls = true\nca_file = \"{}\"\nusername = \"ward\"\npassword_file = \"{}\"\n",
                        d.join("ca.pem").display(),
                        d.join(pwfile).display()
                    ),
                )
            .replace("host = \"127.0.0.1\"", "host = \"localhost\"")
    };
    let cfg = wardgate::config::Config::from_toml(&tls("good")).unwrap();
    let gw = Gateway::start(cfg).await;
    eventually(WAIT, "acknowledged over TLS", || {
        gw.status.get().uplink.acked >= 20
    })
    .await;
    assert!(gw.status.get().uplink.connected);
    eventually(WAIT, "received through the broker", || {
        sub.seqs("ups1").len() >= 20
    })
    .await;
    gw.stop().await;
    eventually(WAIT, "offline status after the stop", || {
        sub.statuses().iter().any(|m| m.body["state"] == "offline")
    })
    .await;
    sub.assert_all_valid();
    assert_contiguous(&sub.seqs("ups1"), 0, "ups1 over TLS");

    let dir2 = tempfile::tempdir().unwrap();
    let text = tls("bad").replace(
        &dir.path().join("spool.db").display().to_string(),
        &dir2.path().join("spool.db").display().to_string(),
    );
    let gw = Gateway::start(wardgate::config::Config::from_toml(&text).unwrap()).await;
    eventually(WAIT, "login refused, reported", || {
        gw.status
            .get()
            .uplink
            .last_error
            .is_some_and(|e| e.contains("refused the login"))
    })
    .await;
    eventually(WAIT, "retried", || gw.status.get().uplink.attempts >= 3).await;
    assert!(
        gw.is_running(),
        "a wrong password does not stop the gateway"
    );
    assert!(!gw.status.get().uplink.connected);
    assert_eq!(gw.status.get().uplink.acked, 0);
    // Readings are kept meanwhile.
    eventually(WAIT, "readings kept on disk", || {
        gw.spool.stats().disk_rows > 0
    })
    .await;
    gw.stop().await;

    // A broker certificate from another CA: a TLS error in plain words,
    // retried, the gateway stays up.
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "other.key",
            "-out",
            "other.pem",
            "-subj",
            "/CN=some other CA",
        ],
        d,
    );
    let dir3 = tempfile::tempdir().unwrap();
    let text = tls("good")
        .replace(
            &dir.path().join("spool.db").display().to_string(),
            &dir3.path().join("spool.db").display().to_string(),
        )
        .replace(
            &d.join("ca.pem").display().to_string(),
            &d.join("other.pem").display().to_string(),
        );
    let gw = Gateway::start(wardgate::config::Config::from_toml(&text).unwrap()).await;
    eventually(WAIT, "certificate rejected, reported", || {
        gw.status
            .get()
            .uplink
            .last_error
            .is_some_and(|e| e.contains("TLS") && e.contains("certificate"))
    })
    .await;
    eventually(WAIT, "retried", || gw.status.get().uplink.attempts >= 2).await;
    assert!(gw.is_running());
    assert_eq!(gw.status.get().uplink.acked, 0);
    gw.stop().await;
}

/// 7. Spool cap: tiny max_bytes with the broker down -> oldest telemetry
/// dropped, events kept, drop count reported once the broker returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_drops_oldest_telemetry_and_keeps_events() {
    // The broker is there first so that the subscriber's durable session
    // exists before the gateway publishes anything; then it goes away.
    let mut broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    broker.stop();
    let dir = tempfile::tempdir().unwrap();
    // A known number of readings, so the number of events is exact: one
    // event every 100 samples.
    let extra = format!(
        "{}\n[gateway]\ntelemetry_interval = \"1s\"\n",
        sim(
            "ups1",
            "5ms",
            "samples_per_tick = 5\nevent_every = 100\ncount = 8000"
        )
    );
    let text = config_text(broker.port, dir.path(), &extra).replace(
        "[spool]\npath",
        "[spool]\nmax_bytes = \"64 KiB\"\ncommit_interval = \"100ms\"\npath",
    );
    let gw = Gateway::start(wardgate::config::Config::from_toml(&text).unwrap()).await;
    eventually(WAIT, "drops", || {
        gw.spool
            .counters()
            .dropped_full
            .load(std::sync::atomic::Ordering::Relaxed)
            > 500
    })
    .await;
    let bytes = gw.spool.stats().disk_bytes;
    assert!(bytes <= 64 * 1024, "spool within its cap: {bytes}");
    // Now the broker comes back (on the port the gateway has been trying).
    tokio::task::block_in_place(|| broker.start_again());
    eventually(WAIT, "gateway telemetry reports drops", || {
        sub.samples("gateway")
            .iter()
            .any(|(_, s)| s["values"]["spool.dropped"].as_f64().unwrap_or(0.0) > 500.0)
    })
    .await;
    eventually(WAIT, "all 80 events delivered", || {
        dedupe(&sub.events("ups1")).len() >= 80
    })
    .await;
    gw.stop().await;
    sub.assert_all_valid();
    let evs: std::collections::BTreeSet<u64> = sub
        .events("ups1")
        .iter()
        .map(|(_, e)| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        assert_contiguous(&evs, 0, "every event kept"),
        79,
        "exactly the 80 events raised"
    );
    let seqs = sub.seqs("ups1");
    assert!(
        *seqs.iter().next().unwrap() > 0,
        "the oldest telemetry was dropped"
    );
}

/// 8. A garbage file in place of spool.db is moved aside; the gateway runs,
/// reports it and publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_spool_is_moved_aside() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    let garbage: Vec<u8> = (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(dir.path().join("spool.db"), &garbage).unwrap();
    let gw = Gateway::start(config(broker.port, dir.path(), &sim("ups1", "50ms", ""))).await;
    eventually(WAIT, "samples", || sub.seqs("ups1").len() >= 5).await;
    eventually(WAIT, "spool.corrupt event", || {
        sub.events("gateway")
            .iter()
            .any(|(_, e)| e["code"] == "spool.corrupt" && e["severity"] == "critical")
    })
    .await;
    gw.stop().await;
    // The values the IOC is told to rely on: where the file went, and why.
    let corrupt = sub
        .events("gateway")
        .into_iter()
        .find(|(_, e)| e["code"] == "spool.corrupt")
        .map(|(_, e)| e["values"].clone())
        .unwrap();
    let moved_to = corrupt["spool.moved_to"]
        .as_str()
        .unwrap_or_else(|| panic!("spool.moved_to in {corrupt}"));
    assert!(
        std::path::Path::new(moved_to).exists()
            && moved_to.starts_with(&dir.path().join("spool.db.corrupt-").display().to_string()),
        "spool.moved_to names the file moved aside: {corrupt}"
    );
    assert!(
        corrupt["spool.reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "spool.reason: {corrupt}"
    );
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("spool.db.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "one file moved aside");
    assert_eq!(
        std::fs::read(aside[0].path()).unwrap(),
        garbage,
        "kept intact for inspection"
    );
    sub.assert_all_valid();
}

fn check(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.toml");
    std::fs::write(&p, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .args(["check", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// 9. Bad configs make `wardgate check` exit 78 naming the key.
#[test]
fn check_rejects_bad_configs_naming_the_key() {
    let good = "site = \"xa-a\"\n[[device]]\nid = \"ups1\"\ntype = \"sim\"\n";
    let (code, out) = check(good);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("device ups1 (sim): ok") && out.contains("ups.status = \"OL\""),
        "{out}"
    );
    let cases = [
        ("site = \"xa-a\"\ncolour = \"red\"\n", "colour"),
        (
            "site = \"xa-a\"\n[mqtt]\nport = 70000\n",
            "mqtt.port: 70000 is not a port",
        ),
        (
            "site = \"xa-a\"\n[[device]]\nid = \"UPS 1\"\ntype = \"sim\"\n",
            "device[0].id",
        ),
        ("[mqtt]\nhost = \"x\"\n", "site: missing"),
        (
            "site = \"xa-a\"\n[spool]\nmax_bytes = \"lots\"\n",
            "spool.max_bytes",
        ),
        ("site = \"xa-a\"\n[mqtt\n", "TOML"),
    ];
    for (text, want) in cases {
        let (code, out) = check(text);
        assert_eq!(code, Some(78), "{text:?} -> {out}");
        assert!(out.contains(want), "{text:?}: wanted {want:?} in {out}");
    }
    let (code, out) = check_missing();
    assert_eq!(code, Some(78), "{out}");
    assert!(out.contains("no such file"), "{out}");
}

fn check_missing() -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .args(["check", "--config", "/nonexistent/wardgate.toml"])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// 10. While the broker is healthy the spool receives no sample rows.
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
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let ro = wardgate::spool::db::Db::open_read_only(&db).unwrap();
        assert_eq!(
            ro.row_count().unwrap(),
            0,
            "no rows while the broker is healthy"
        );
    }
    assert!(sub.seqs("ups1").len() > 300);
    assert_eq!(
        gw.spool
            .counters()
            .spilled
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    gw.stop().await;
    sub.assert_all_valid();
}

/// `wardgate spool stats` and `wardgate spool export` on a spool holding a
/// backlog (the broker never came).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_stats_and_export_show_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg_path = dir.path().join("w.toml");
    std::fs::write(
        &cfg_path,
        config_text(
            port,
            dir.path(),
            &sim("ups1", "10ms", "count = 40\nevent_every = 20"),
        ),
    )
    .unwrap();
    let cfg = wardgate::config::Config::load(&cfg_path, true).unwrap();
    let gw = Gateway::start(cfg).await;
    // The second event (after the 20th and the 40th sample) is raised
    // right after the last sample was kept. (The spool's own counters count
    // the `pi` and `gateway` records too, so they cannot say this.)
    eventually(WAIT, "40 samples read", || {
        gw.status
            .get()
            .events
            .iter()
            .filter(|e| e.device == "ups1" && e.code.starts_with("ups."))
            .count()
            >= 2
    })
    .await;
    gw.stop().await;
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wardgate"))
            .args(args)
            .arg("--config")
            .arg(&cfg_path)
            .output()
            .unwrap()
    };
    let out = run(&["spool", "stats"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["clean_stop"], true);
    let ups = stats["backlog"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["device"] == "ups1" && r["kind"] == "sample")
        .expect("ups1 samples in the backlog")
        .clone();
    assert_eq!(ups["records"], 40);
    assert_eq!(
        (ups["first_seq"].as_i64(), ups["last_seq"].as_i64()),
        (Some(0), Some(39))
    );

    let file = dir.path().join("export.jsonl");
    let out = run(&["spool", "export", "-o", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, stats["records"].as_u64().unwrap());
    let ups_seqs: Vec<i64> = lines
        .iter()
        .filter(|l| l["device"] == "ups1" && l["kind"] == "sample")
        .map(|l| l["record"]["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(ups_seqs, (0..40).collect::<Vec<i64>>());
    assert!(lines
        .iter()
        .any(|l| l["kind"] == "event" && l["record"]["code"] == "ups.on_battery"));
    // A spool that is not there is a clear error, not a new empty file.
    std::fs::remove_file(dir.path().join("spool.db")).unwrap();
    let out = run(&["spool", "stats"]);
    assert_eq!(out.status.code(), Some(74));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no spool there"));
}

/// Under systemd: READY=1 after start, WATCHDOG=1 while the pipeline runs,
/// STOPPING=1 on SIGTERM, through a real notify socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_notify_ready_watchdog_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let cfg = process_config(dir.path(), free_port(), &sim("ups1", "100ms", ""));
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    // systemd sets WATCHDOG_PID to the service's pid; `exec` keeps the
    // shell's pid for wardgate.
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" run --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_wardgate"))
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .stderr(log)
        .spawn()
        .unwrap();
    let mut seen: Vec<String> = Vec::new();
    let mut buf = [0u8; 512];
    let recv = |seen: &mut Vec<String>, buf: &mut [u8]| {
        let n = sock.recv(buf).expect("a notification within 10 s");
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    };
    while !seen.iter().any(|m| m.contains("WATCHDOG=1")) {
        recv(&mut seen, &mut buf);
    }
    assert!(seen[0].contains("READY=1"), "{seen:?}");
    signal(child.id(), libc::SIGTERM);
    while !seen.iter().any(|m| m.contains("STOPPING=1")) {
        recv(&mut seen, &mut buf);
    }
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(0));
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
