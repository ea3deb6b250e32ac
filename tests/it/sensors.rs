//! Sensors and alarms: thresholds through the whole path.

use std::time::Duration;

use crate::common::*;

/// A threshold on a simulated sensor raises an event (both languages)
/// that reaches the broker, schema-valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threshold_event_reaches_the_broker() {
    let clock = crate::common::devices::machine_clock();
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    let dev = "[[device]]\nid = \"env1\"\ntype = \"sim\"\nprofile = \"sensor\"\ninterval = \"100ms\"\n\
               [[device.threshold]]\nvalue = \"ambient.temperature\"\nhigh = 10.0\nhysteresis = 1.0\nfor = \"300ms\"\n\
               severity = \"critical\"\nlabel = \"phòng máy\"\nlabel_en = \"equipment room\"\nunit = \"°C\"\n";
    let gw = Gateway::start(config(broker.port, dir.path(), dev)).await;
    eventually(WAIT, "threshold event", || {
        sub.events("env1")
            .iter()
            .any(|(_, e)| e["code"] == "threshold.high")
    })
    .await;
    let (_, e) = sub
        .events("env1")
        .into_iter()
        .find(|(_, e)| e["code"] == "threshold.high")
        .unwrap();
    assert_eq!(e["severity"], "critical");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.starts_with("equipment room ") && msg.ends_with(" °C > 10 °C"),
        "{msg}"
    );
    assert!(e["values"]["message.vi"]
        .as_str()
        .unwrap()
        .starts_with("phòng máy "));
    assert_eq!(e["values"]["threshold.limit"], 10.0);
    // Raised once, not on every sample.
    let n = sub.seqs("env1").len();
    eventually(WAIT, "more samples", || sub.seqs("env1").len() > n + 5).await;
    assert_eq!(count_distinct_events(&sub, "env1", "threshold.high"), 1);
    // The page shows it in Vietnamese.
    let (_, page) = http_get(gw.web.unwrap(), "/body?lang=vi", "").await;
    assert!(page.contains("phòng máy"), "{page}");
    gw.stop().await;
    sub.assert_all_valid();
    // Samples and the event say the machine's clock state.
    assert_clock_unless_it_changed(&sub, clock);
}

/// 1-Wire probes (fixture files in the kernel's format) and the Pi's health
/// (fixture files) through the whole path to the broker; bad 1-Wire reads
/// are counted, not published; under-voltage is an event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onewire_and_pi_health_to_the_broker() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    let w1 = dir.path().join("w1");
    for (id, text) in [
        (
            "28-0316a2795aff",
            "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
        ),
        (
            "28-0316a2795b00",
            "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n",
        ),
    ] {
        std::fs::create_dir_all(w1.join(id)).unwrap();
        std::fs::write(w1.join(id).join("w1_slave"), text).unwrap();
    }
    let pi = dir.path().join("pi");
    std::fs::create_dir_all(&pi).unwrap();
    std::fs::write(pi.join("temp"), "51234\n").unwrap();
    std::fs::write(pi.join("throttled"), "0x50005\n").unwrap();
    let dev = format!(
        "[[device]]\nid = \"probe1\"\ntype = \"onewire\"\ninterval = \"100ms\"\nroot = \"{}\"\n\
         [[device]]\nid = \"pi\"\ntype = \"system\"\ninterval = \"100ms\"\nthermal_path = \"{}\"\nthrottled_path = \"{}\"\n",
        w1.display(),
        pi.join("temp").display(),
        pi.join("throttled").display()
    );
    let gw = Gateway::start(config(broker.port, dir.path(), &dev)).await;
    eventually(WAIT, "probe and pi samples", || {
        !sub.samples("probe1").is_empty() && !sub.samples("pi").is_empty()
    })
    .await;
    let (_, p) = sub.samples("probe1")[0].clone();
    assert_eq!(p["values"]["temperature.28-0316a2795aff"], 23.125);
    assert!(
        p["values"].get("temperature.28-0316a2795b00").is_none(),
        "85 °C power-on value left out"
    );
    eventually(WAIT, "power-on read counted", || {
        gw.status.get().devices["probe1"]
            .errors
            .get("power_on")
            .copied()
            .unwrap_or(0)
            > 0
    })
    .await;
    let (_, s) = sub.samples("pi")[0].clone();
    assert_eq!(s["values"]["cpu.temperature"], 51.234);
    assert_eq!(s["values"]["pi.under_voltage"], true);
    eventually(WAIT, "under-voltage event", || {
        sub.events("pi")
            .iter()
            .any(|(_, e)| e["code"] == "pi.under_voltage")
    })
    .await;
    gw.stop().await;
    sub.assert_all_valid();
}

/// Reachability against a local TCP listener and a closed port: latency,
/// loss, and WAN down/up events when every target fails and comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reachability_probe_and_wan_events() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    // The open target's port stays this test's while its listener is gone
    // (so that the listener can come back on it), and the closed target's
    // port is one where nothing listens: see closed_port.
    let local = closed_port();
    let listener = std::net::TcpListener::bind(("127.0.0.1", local.port)).unwrap();
    let open = listener.local_addr().unwrap();
    let closed_guard = closed_port();
    let closed = closed_guard.port;
    let dev = format!(
        "[[device]]\nid = \"wan\"\ntype = \"probe\"\ninterval = \"100ms\"\ntimeout = \"500ms\"\nwindow = 4\n\
         [[device.targets]]\nname = \"local\"\naddress = \"{open}\"\n\
         [[device.targets]]\nname = \"closed\"\naddress = \"127.0.0.1:{closed}\"\n"
    );
    let gw = Gateway::start(config(broker.port, dir.path(), &dev)).await;
    eventually(WAIT, "probe samples", || sub.seqs("wan").len() >= 5).await;
    let (_, s) = sub.samples("wan").last().cloned().unwrap();
    assert_eq!(s["values"]["local.up"], true);
    // A connect that answers does so within the timeout (500 ms).
    for (_, s) in sub.samples("wan") {
        let ms = s["values"]["local.latency"].as_f64().unwrap();
        assert!((0.0..=500.0).contains(&ms), "local.latency = {ms}");
    }
    assert_eq!(s["values"]["local.loss"], 0.0);
    assert_eq!(s["values"]["closed.up"], false);
    assert_eq!(s["values"]["closed.loss"], 100.0);
    assert!(s["values"].get("closed.latency").is_none());
    assert!(!sub
        .events("wan")
        .iter()
        .any(|(_, e)| e["code"] == "wan.down"));
    // Every target gone: WAN down; back: WAN up.
    drop(listener);
    eventually(WAIT, "wan.down", || {
        sub.events("wan")
            .iter()
            .any(|(_, e)| e["code"] == "wan.down")
    })
    .await;
    let _back = std::net::TcpListener::bind(open).expect("the reserved port listens again");
    eventually(WAIT, "wan.up", || {
        sub.events("wan").iter().any(|(_, e)| e["code"] == "wan.up")
    })
    .await;
    gw.stop().await;
    sub.assert_all_valid();
}

/// On a machine without a Raspberry Pi GPIO chip, a config that uses GPIO
/// does not start, with a clear message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpio_without_a_gpio_chip_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("w.toml");
    std::fs::write(
        &cfg,
        config_text(
            // No broker (the start fails first): a port with no server.
            free_port(),
            dir.path(),
            "[[device]]\nid = \"contacts\"\ntype = \"gpio\"\n[[device.inputs]]\npin = 17\nname = \"door\"\nstates = [\"open\", \"closed\"]\n",
        ),
    )
    .unwrap();
    let log = dir.path().join("log");
    let mut gw = Process::start(&cfg, &log);
    let code = gw.wait(Duration::from_secs(20)).await;
    assert_eq!(code, Some(1));
    let text = gw.log_text();
    assert!(
        text.contains("device contacts: GPIO inputs cannot be used here")
            && text.contains("GPIO 17"),
        "{text}"
    );
}

/// ICMP echo where the process may use it; without CAP_NET_RAW (and
/// without an unprivileged ping group) the target is measured over TCP,
/// with a warning saying why and how to fix it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icmp_probe_and_tcp_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let cfg = dir.path().join("w.toml");
    std::fs::write(
        &cfg,
        config_text(
            // No broker (none needed): a port with no server.
            free_port(),
            dir.path(),
            &format!(
                "[[device]]\nid = \"wan\"\ntype = \"probe\"\ntimeout = \"1s\"\n\
                 [[device.targets]]\nname = \"local\"\naddress = \"127.0.0.1:{port}\"\nmethod = \"icmp\"\n"
            ),
        ),
    )
    .unwrap();
    let run = |prefix: &'static [&'static str]| {
        let cfg = cfg.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut c = std::process::Command::new(
                    prefix
                        .first()
                        .copied()
                        .unwrap_or(env!("CARGO_BIN_EXE_wardgate")),
                );
                if !prefix.is_empty() {
                    c.args(&prefix[1..]).arg(env!("CARGO_BIN_EXE_wardgate"));
                }
                c.args(["check", "--config"]).arg(&cfg).output().unwrap()
            })
            .await
            .unwrap()
        }
    };
    // As root: ICMP.
    let out = run(&[]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("local.method = \"icmp\""), "{text}");
    assert!(text.contains("local.up = true"), "{text}");

    // Without CAP_NET_RAW. Whether an unprivileged ICMP socket is allowed
    // depends on this machine's net.ipv4.ping_group_range.
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap();
    let mut it = range.split_whitespace().map(|x| x.parse::<u64>().unwrap());
    let (lo, hi) = (it.next().unwrap(), it.next().unwrap());
    let gid = u64::from(unsafe { libc::getegid() });
    let unprivileged_ping = lo <= gid && gid <= hi;
    let out = run(&["setpriv", "--inh-caps=-net_raw", "--bounding-set=-net_raw"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}\n{log}");
    assert!(text.contains("local.up = true"), "{text}");
    if unprivileged_ping {
        assert!(text.contains("local.method = \"icmp\""), "{text}");
    } else {
        assert!(text.contains("local.method = \"tcp\""), "{text}");
        assert!(
            log.contains("ICMP echo is not permitted") && log.contains("CAP_NET_RAW"),
            "{log}"
        );
    }
    drop(listener);
}
