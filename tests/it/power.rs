//! `[power]` end to end: the real binary, a real mosquitto, the
//! Megatec simulator on a pseudo-terminal (and NUT's dummy-ups for
//! `battery.runtime`), a shutdown command that only records that it ran.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use serde_json::Value;

use crate::common::megatec_sim::{MegatecSim, Scripted};
use crate::common::proxy::{MqttProxy, ProxyState};
use crate::common::storage::{open_spool, spool_rows};
use crate::common::*;

const OL: &str = "00001001";
const OB: &str = "10001001";
const OB_LB: &str = "11001001";

/// A gateway reading a simulated Megatec UPS every 300 ms, with `[power]`
/// on it and a shutdown command that writes "ran <args>" to `ran`.
struct Rig {
    dir: tempfile::TempDir,
    sim: MegatecSim,
    cfg: PathBuf,
    log: PathBuf,
    ran: PathBuf,
}

impl Rig {
    /// `mqtt_port`: the broker (or a proxy); `power`: more `[power]` lines;
    /// `extra`: more tables (e.g. `[spool]` lines go in `spool`).
    fn new(mqtt_port: u16, power: &str, spool: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("ttyUPS");
        let sim = MegatecSim::start(&link);
        let (cfg, ran) = write_power_config(
            dir.path(),
            mqtt_port,
            power,
            &format!(
                "[[device]]\nid = \"ups1\"\ntype = \"megatec\"\nserial = \"{}\"\ninterval = \"300ms\"\ntimeout = \"300ms\"\n",
                link.display()
            ),
            spool,
        );
        let log = dir.path().join("wardgate.log");
        Rig {
            dir,
            sim,
            cfg,
            log,
            ran,
        }
    }

    fn start(&self) -> Process {
        Process::start(&self.cfg, &self.log)
    }

    fn ran(&self) -> String {
        std::fs::read_to_string(&self.ran).unwrap_or_default()
    }

    fn bits(&self, b: &str) {
        let b = b.to_owned();
        self.sim.set(move |s| {
            s.input_v = if b.starts_with('1') { 0.0 } else { 230.4 };
            s.bits = b;
        });
    }

    /// Waits until the UPS answered `n` more polls.
    async fn polls(&self, n: usize) {
        let from = self.sim.polls();
        eventually(WAIT, "UPS polls", || self.sim.polls() >= from + n).await;
    }

    fn spool(&self) -> PathBuf {
        self.dir.path().join("spool.db")
    }
}

/// Writes the shutdown command `dir/off.sh` (it appends "ran <its
/// arguments>" to `dir/ran`) and returns (the script, `dir/ran`).
fn off_script(dir: &Path) -> (PathBuf, PathBuf) {
    let ran = dir.join("ran");
    let script = dir.join("off.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"ran $*\" >> {}\n", ran.display()),
    )
    .unwrap();
    (script, ran)
}

/// Writes [`off_script`] and `dir/wardgate.toml`: the broker at
/// `mqtt_port`, telemetry every second, `[power]` watching ups1 and running
/// `off.sh poweroff` with the `power` lines added, the `device` table for
/// ups1, and the `spool` lines in `[spool]`. Returns (the config, `dir/ran`).
fn write_power_config(
    dir: &Path,
    mqtt_port: u16,
    power: &str,
    device: &str,
    spool: &str,
) -> (PathBuf, PathBuf) {
    let (script, ran) = off_script(dir);
    let text = config_text(
        mqtt_port,
        dir,
        &format!(
            "[gateway]\ntelemetry_interval = \"1s\"\nsystem_health = false\n\
             [power]\nups = \"ups1\"\nshutdown_command = [\"/bin/sh\", \"{}\", \"poweroff\"]\n{power}\n\
             {device}",
            script.display(),
        ),
    )
    .replace("[spool]\n", &format!("[spool]\n{spool}"));
    let cfg = dir.join("wardgate.toml");
    std::fs::write(&cfg, text).unwrap();
    (cfg, ran)
}

/// A broker, a subscriber and the gateway running on a [`Rig`] with the
/// `power` lines; once ups1 has sent 2 samples, the UPS goes on battery
/// (OB). Returns them all (the broker must outlive the gateway).
async fn on_battery(power: &str) -> (Broker, Subscriber, Rig, Process) {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let rig = Rig::new(broker.port, power, "");
    let gw = rig.start();
    eventually(WAIT, "ups1 samples", || sub.seqs("ups1").len() >= 2).await;
    rig.bits(OB);
    (broker, sub, rig, gw)
}

/// `/api/status` of the spawned gateway.
async fn api_status(gw: &Process) -> Value {
    let addr = page_addr(gw).await;
    let (code, text) = http_get(addr, "/api/status", "").await;
    assert_eq!(code, 200, "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// The gateway's events with `code`, each once (delivery is at least
/// once: a copy has the same seq).
fn gateway_events(sub: &Subscriber, code: &str) -> Vec<Value> {
    dedupe(&sub.events("gateway"))
        .into_values()
        .filter(|e| e["code"] == code)
        .collect()
}

/// The shutdown commands the simulator received (`S...`).
fn shutdowns(sim: &MegatecSim) -> Vec<String> {
    sim.received()
        .into_iter()
        .filter(|c| c.starts_with('S'))
        .collect()
}

/// On battery: write-through (every reading on the card before it is
/// sent), and the page and `/api/status` say so. The broker's PUBACKs are
/// swallowed by a proxy and `spill_after` is an hour, so nothing reaches
/// the card unless it is written before it is sent: on mains no reading of
/// ups1 is on the card although several were sent; on battery every one
/// sent is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_battery_every_reading_is_on_the_card_before_it_is_sent() {
    let broker = Broker::start();
    let proxy = MqttProxy::start_with(broker.port, ProxyState::default()).await;
    proxy.state.swallow.store(true, Ordering::Relaxed);
    let rig = Rig::new(
        proxy.port,
        "",
        "spill_after = \"1h\"\ncommit_interval = \"100ms\"\n",
    );
    // With every PUBACK swallowed, MQTT's in-flight window (100 by default,
    // about 20 s of this gateway's messages) would fill and stop the
    // sending this test watches if a loaded machine made it slow: a window
    // no run of this test fills.
    let text = std::fs::read_to_string(&rig.cfg).unwrap();
    std::fs::write(
        &rig.cfg,
        text.replacen("[mqtt]\n", "[mqtt]\ninflight = 2000\n", 1),
    )
    .unwrap();
    let mut gw = rig.start();
    // (seq, ts) of the ups1 readings sent with this status.
    let sent = |status: &str| -> Vec<(u64, i64)> {
        proxy
            .state
            .sent
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.topic.ends_with("/ups1/telemetry"))
            .flat_map(|s| s.body["samples"].as_array().cloned().unwrap_or_default())
            .filter(|r| r["values"]["ups.status"] == status)
            .filter_map(|r| Some((r["seq"].as_u64()?, r["ts"].as_i64()?)))
            .collect()
    };
    let on_card = |path: &Path| -> std::collections::BTreeSet<u64> {
        if !path.exists() {
            return Default::default();
        }
        spool_rows(&open_spool(path))
            .into_iter()
            .filter(|r| r.device == "ups1" && r.kind == 0)
            .map(|r| r.seq)
            .collect()
    };
    eventually(WAIT, "ups1 readings sent on mains", || {
        sent("OL").len() >= 4
    })
    .await;
    let st = api_status(&gw).await;
    assert_eq!(st["power"]["state"], "mains", "{}", st["power"]);
    let ol: Vec<u64> = sent("OL").iter().map(|r| r.0).collect();
    let card = on_card(&rig.spool());
    assert!(
        ol.iter().all(|s| !card.contains(s)),
        "on mains, readings go out from memory: {ol:?} sent, {card:?} on the card"
    );

    rig.bits(OB);
    // Write-through starts when the power monitor sees a poll saying OB
    // (`power.since_ms`, set just after it is switched on): the readings
    // queued before that went out from memory (at least the first OB one,
    // more if the monitor was late on a loaded machine). Every OB reading
    // stamped after it must be on the card before it is sent.
    let deadline = std::time::Instant::now() + WAIT;
    let since = loop {
        let st = api_status(&gw).await;
        if st["power"]["write_through"] == true {
            break st["power"]["since_ms"]
                .as_i64()
                .unwrap_or_else(|| panic!("power.since_ms in {}", st["power"]));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "write-through never on: {}",
            st["power"]
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    eventually(
        WAIT,
        "4 ups1 readings sent on battery after write-through",
        || sent("OB").iter().filter(|r| r.1 > since).count() >= 4,
    )
    .await;
    let ob = sent("OB");
    let card = on_card(&rig.spool());
    let missing: Vec<u64> = ob
        .iter()
        .filter(|r| r.1 > since && !card.contains(&r.0))
        .map(|r| r.0)
        .collect();
    assert!(
        missing.is_empty(),
        "on battery, sent but not on the card: {missing:?} (write-through since {since}; sent {ob:?}; on the card: {card:?})"
    );
    let st = api_status(&gw).await;
    assert_eq!(st["power"]["state"], "on_battery", "{}", st["power"]);
    assert_eq!(st["power"]["write_through"], true);
    let (_, page) = http_get(page_addr(&gw).await, "/", "").await;
    assert!(
        page.contains("Mất điện lưới — UPS đang chạy bằng pin"),
        "{page}"
    );
    assert!(page.contains("id=\"power\""), "{page}");
    assert!(
        gw.log_text().contains("spool write-through"),
        "{}",
        gw.log_text()
    );
    assert!(rig.ran().is_empty() && shutdowns(&rig.sim).is_empty());
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait(STOP_BUDGET).await, Some(0));
}

/// OB, then LB on two polls: `power.shutdown` with the UPS's values, the
/// offline status with reason power, `S.5R0003` on the UPS's line, the
/// shutdown command run, in that order; the gateway exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_battery_shuts_down_in_order() {
    let (_broker, sub, rig, mut gw) = on_battery("ups_off_delay = \"30s\"\n").await;
    eventually(WAIT, "on battery", || {
        sub.samples("ups1")
            .iter()
            .any(|(_, s)| s["values"]["ups.status"] == "OB")
    })
    .await;
    assert!(rig.ran().is_empty());
    rig.bits(OB_LB);
    let code = gw.wait(WAIT).await;
    let log = gw.log_text();
    assert_eq!(code, Some(0), "{log}");
    sub.offline_after(0).await;

    let ev = gateway_events(&sub, "power.shutdown");
    assert_eq!(ev.len(), 1, "{ev:?}");
    let v = &ev[0]["values"];
    assert_eq!(ev[0]["severity"], "critical");
    assert_eq!(v["power.reason"], "low_battery");
    assert_eq!(v["power.ups"], "ups1");
    assert_eq!(v["ups.status"], "OB LB");
    assert_eq!(v["power.ups_off_delay"], 30.0);
    assert!(
        v["message.vi"]
            .as_str()
            .unwrap_or("")
            .contains("UPS báo pin yếu"),
        "{v}"
    );
    let offline: Vec<Value> = sub
        .statuses()
        .into_iter()
        .filter(|m| m.body["state"] == "offline")
        .map(|m| m.body)
        .collect();
    assert_eq!(
        offline.last(),
        Some(&serde_json::json!({"state": "offline", "reason": "power"})),
        "{offline:?}"
    );
    assert_eq!(shutdowns(&rig.sim), ["S.5R0003"]);
    assert_eq!(rig.ran(), "ran poweroff\n");
    // The order: the offline status acknowledged, then the spool closed
    // (the card at rest before the UPS may cut the power), then the UPS
    // told, then the shutdown command.
    let at = |what: &str| {
        log.find(what)
            .unwrap_or_else(|| panic!("{what:?} not in the log:\n{log}"))
    };
    assert!(
        at("offline status sent") < at("spool closed cleanly"),
        "{log}"
    );
    assert!(
        at("spool closed cleanly") < at("the UPS will switch off"),
        "{log}"
    );
    assert!(
        at("the UPS will switch off") < at("running the shutdown command"),
        "{log}"
    );
    assert!(log.contains("the shutdown command succeeded"), "{log}");
    sub.assert_all_valid();
}

/// OB, one low poll, then the mains return: nothing runs, `power.restored`,
/// write-through off; a SIGTERM afterwards is a plain stop (reason
/// shutdown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mains_back_before_the_trigger_runs_nothing() {
    let (_broker, sub, rig, mut gw) = on_battery("").await;
    eventually(WAIT, "on battery in the status", || {
        gw.log_text().contains("power: the UPS is on battery")
    })
    .await;
    rig.sim
        .set(|s| s.script.push_back(Scripted::Bits(OB_LB.into())));
    rig.polls(2).await;
    rig.bits(OL);
    eventually(WAIT, "power.restored", || {
        !gateway_events(&sub, "power.restored").is_empty()
    })
    .await;
    let r = &gateway_events(&sub, "power.restored")[0];
    assert_eq!(r["values"]["power.shutdown_cancelled"], false, "{r}");
    assert_eq!(r["values"]["ups.status"], "OL", "{r}");
    let st = api_status(&gw).await;
    assert_eq!(st["power"]["state"], "mains");
    assert_eq!(st["power"]["write_through"], false);
    rig.polls(3).await;
    assert!(rig.ran().is_empty(), "{}", rig.ran());
    assert!(shutdowns(&rig.sim).is_empty());
    assert!(gateway_events(&sub, "power.shutdown").is_empty());
    let from = sub.all().len();
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait(STOP_BUDGET).await, Some(0));
    sub.offline_after(from).await;
    let last = sub.statuses().last().map(|m| m.body.clone());
    assert_eq!(
        last,
        Some(serde_json::json!({"state": "offline", "reason": "shutdown"}))
    );
    assert!(rig.ran().is_empty());
    sub.assert_all_valid();
}

/// One glitchy poll (LB once, among OB polls) never triggers; LB on every
/// poll then does (so the test can fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_glitchy_poll_does_not_trigger() {
    let (_broker, sub, rig, mut gw) = on_battery("ups_off_delay = \"0s\"\n").await;
    for _ in 0..3 {
        rig.sim
            .set(|s| s.script.push_back(Scripted::Bits(OB_LB.into())));
        rig.polls(3).await;
    }
    assert!(rig.ran().is_empty(), "{}", rig.ran());
    assert!(gateway_events(&sub, "power.shutdown").is_empty());
    assert!(gw.child.try_wait().unwrap().is_none(), "still running");
    rig.bits(OB_LB);
    assert_eq!(gw.wait(WAIT).await, Some(0), "{}", gw.log_text());
    assert_eq!(rig.ran(), "ran poweroff\n");
    assert!(
        shutdowns(&rig.sim).is_empty(),
        "ups_off_delay = 0s: not asked"
    );
    sub.assert_all_valid();
}

/// A UPS that stops answering between its low readings (each LB reading
/// followed by a failed poll, then silent long enough to go stale, then one
/// LB reading) never triggers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_or_failing_ups_does_not_trigger() {
    let (_broker, sub, rig, mut gw) = on_battery("").await;
    rig.polls(2).await;
    rig.sim.set(|s| {
        for _ in 0..3 {
            s.script.push_back(Scripted::Bits(OB_LB.into()));
            s.script.push_back(Scripted::Silent);
        }
        for _ in 0..4 {
            s.script.push_back(Scripted::Silent);
        }
        s.script.push_back(Scripted::Bits(OB_LB.into()));
    });
    eventually(WAIT, "the UPS went stale", || {
        sub.events("ups1")
            .iter()
            .any(|(_, e)| e["code"] == "device.lost")
    })
    .await;
    eventually(WAIT, "the script played", || {
        rig.sim.state.lock().unwrap().script.is_empty()
    })
    .await;
    rig.polls(3).await;
    assert!(rig.ran().is_empty(), "{}", rig.ran());
    assert!(gateway_events(&sub, "power.shutdown").is_empty());
    assert!(shutdowns(&rig.sim).is_empty());
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait(STOP_BUDGET).await, Some(0));
    sub.assert_all_valid();
}

/// NUT (dummy-ups + upsd): `battery.runtime` below the limit on two polls
/// triggers, with the runtime in the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_below_the_limit_triggers() {
    let nut = crate::common::nut::NutServer::start_with(
        "ups.status: OL\nbattery.charge: 100\nbattery.runtime: 1800\n",
        "",
        "\tpollinterval = 1",
    );
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    let (script, ran) = off_script(dir.path());
    let cfg = process_config(
        dir.path(),
        broker.port,
        &format!(
            "[gateway]\ntelemetry_interval = \"1s\"\nsystem_health = false\n\
             [power]\nups = \"ups2\"\nshutdown_when_runtime_below = \"5m\"\nups_off_delay = \"0s\"\nshutdown_command = [\"/bin/sh\", \"{}\"]\n\
             [[device]]\nid = \"ups2\"\ntype = \"nut\"\nhost = \"127.0.0.1\"\nport = {}\nups = \"dummy\"\ninterval = \"300ms\"\n",
            script.display(),
            nut.port
        ),
    );
    let mut gw = Process::start(&cfg, &dir.path().join("wardgate.log"));
    eventually(WAIT, "ups2 samples", || sub.seqs("ups2").len() >= 2).await;
    nut.set("ups.status", "OB");
    eventually(WAIT, "on battery", || {
        gw.log_text().contains("power: the UPS is on battery")
    })
    .await;
    assert!(!ran.exists());
    // At once: NutServer::set gives each write an mtime second of its own,
    // which is what dummy-ups looks at.
    nut.set("battery.runtime", "240");
    let done = wait_for(WAIT, || !gateway_events(&sub, "power.shutdown").is_empty()).await;
    assert!(
        done,
        "no power.shutdown; the last sample: {:?}",
        sub.samples("ups2").last()
    );
    let code = gw.wait(WAIT).await;
    assert_eq!(
        code,
        Some(0),
        "{}\n{:?}",
        gw.log_text(),
        sub.samples("ups2").last()
    );
    let ev = gateway_events(&sub, "power.shutdown");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["values"]["power.reason"], "runtime");
    assert_eq!(ev[0]["values"]["battery.runtime"], 240.0);
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "ran \n");
    sub.assert_all_valid();
}

/// `wardgate check --power-test` says what would happen and sends nothing
/// to the UPS (only the reading's Q1, F and I), runs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_test_sends_nothing_and_runs_nothing() {
    // No broker (none needed): a port with no server.
    let rig = Rig::new(free_port(), "ups_off_delay = \"2m\"\n", "");
    rig.bits(OB_LB);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .args(["check", "--power-test", "--config"])
        .arg(&rig.cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "nothing is sent to the UPS and nothing is run",
        "UPS: ups1 (megatec)",
        "the UPS says its battery is low (LB)",
        "battery.runtime below 5m",
        "now: ups.status = OB LB",
        "ON BATTERY and the UPS says its battery is low",
        "S02R0003",
        "reason\":\"power\"",
        "the shutdown command runs: /bin/sh",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    assert!(
        text.contains("allowed: unknown"),
        "not systemctl: unknown\n{text}"
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(shutdowns(&rig.sim).is_empty(), "{:?}", rig.sim.received());
    assert!(rig.ran().is_empty());
    // Plain check says whether the shutdown would be allowed, too.
    let (code, text) = wardgate_check(&rig.cfg).await;
    assert!(text.contains("power: shutdown command `/bin/sh"), "{text}");
    assert_eq!(code, Some(0), "{text}");
    // systemctl poweroff: logind is asked; where there is no system bus
    // the answer is unknown, never a power-off.
    let t = std::fs::read_to_string(&rig.cfg).unwrap().replace(
        &format!(
            "shutdown_command = [\"/bin/sh\", \"{}\", \"poweroff\"]",
            rig.dir.path().join("off.sh").display()
        ),
        "shutdown_command = [\"systemctl\", \"poweroff\"]",
    );
    std::fs::write(&rig.cfg, t).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .args(["check", "--power-test", "--config"])
        .arg(&rig.cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("power: shutdown command `systemctl poweroff`"),
        "{text}"
    );
    assert!(
        ["allowed (", "NOT allowed", "NOT possible", "unknown ("]
            .iter()
            .any(|w| text.contains(w)),
        "{text}"
    );
    assert!(rig.ran().is_empty());
}

/// The same end to end with an APC Smart-UPS (the simulator on a pty):
/// on battery (status 0x10), then low battery (0x50) on two polls: the
/// event, the offline status with reason power, the grace delay stepped
/// from 20 s to 180 s (the nearest not shorter than `ups_off_delay = 2m`)
/// and `S` (soft shutdown, on battery) on the UPS's line, then the shutdown
/// command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apc_smart_low_battery_shuts_down() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyAPC");
    let sim = crate::common::apc_sim::ApcSim::start(&link);
    let (cfg, ran) = write_power_config(
        dir.path(),
        broker.port,
        "ups_off_delay = \"2m\"\n",
        &format!(
            "[[device]]\nid = \"ups1\"\ntype = \"apc-smart\"\nserial = \"{}\"\ninterval = \"300ms\"\ntimeout = \"1s\"\n",
            link.display()
        ),
        "",
    );
    let mut gw = Process::start(&cfg, &dir.path().join("wardgate.log"));
    eventually(WAIT, "ups1 samples", || sub.seqs("ups1").len() >= 2).await;
    *sim.status.lock().unwrap() = 0x10;
    eventually(WAIT, "on battery", || {
        sub.samples("ups1")
            .iter()
            .any(|(_, s)| s["values"]["ups.status"] == "OB")
    })
    .await;
    assert!(std::fs::read_to_string(&ran).is_err(), "nothing run yet");
    *sim.status.lock().unwrap() = 0x50;
    let code = gw.wait(WAIT).await;
    let log = gw.log_text();
    assert_eq!(code, Some(0), "{log}");
    sub.offline_after(0).await;
    let ev = gateway_events(&sub, "power.shutdown");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["values"]["power.reason"], "low_battery");
    let offline = sub
        .statuses()
        .into_iter()
        .rfind(|m| m.body["state"] == "offline")
        .map(|m| m.body);
    assert_eq!(
        offline,
        Some(serde_json::json!({"state": "offline", "reason": "power"}))
    );
    assert_eq!(sim.grace_delay(), 180, "grace delay stepped to 180 s");
    let got = sim.received();
    assert!(
        got.iter().any(|c| c == "S"),
        "no soft shutdown on the wire: {got:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&ran).unwrap_or_default(),
        "ran poweroff\n"
    );
    sub.assert_all_valid();
}

/// A power-off that fails: when the UPS was told to cut the power after
/// `ups_off_delay`, the gateway stays stopped (exit 0: a restart would put
/// the cut off); when it was not (`ups_off_delay = 0s`), the gateway ends
/// with an error so that systemd starts it again and the ward stays
/// watched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_power_off_restarts_only_when_the_ups_was_not_told() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    for (power, want) in [
        ("ups_off_delay = \"30s\"\n", 0),
        ("ups_off_delay = \"0s\"\n", 1),
    ] {
        let rig = Rig::new(broker.port, power, "");
        std::fs::write(rig.dir.path().join("off.sh"), "#!/bin/sh\nexit 3\n").unwrap();
        let from = sub.seqs("ups1").len();
        let mut gw = rig.start();
        eventually(WAIT, "ups1 samples", || sub.seqs("ups1").len() >= from + 2).await;
        rig.bits(OB_LB);
        let code = gw.wait(WAIT).await;
        let log = gw.log_text();
        assert_eq!(code, Some(want), "{power}: {log}");
        assert!(log.contains("the shutdown command failed"), "{log}");
    }
    sub.assert_all_valid();
}
