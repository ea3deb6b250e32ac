//! One real gateway (the release binary, a simulated UPS) publishing into
//! a real mosquitto, wardgate-ioc taking it into one VictoriaMetrics, and
//! the gateway's own InfluxDB sink writing into another: both hold the
//! same series (measurement, tags, fields) with the same points.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::ingest_peers::{counts, pause, wait_for, Broker, Ioc, Proc, Series, Vm, WAIT};

/// The gateway binary: `WARDGATE_BIN`, else the workspace's release
/// build, else its debug build (`cargo test --workspace`, as scripts/test
/// runs it, builds the gateway's binary before any test runs). This crate
/// does not depend on the gateway's, so a test of this crate alone may
/// find none: then it fails, saying how to get one.
pub(super) fn gateway_bin() -> Option<PathBuf> {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    let candidates = [
        std::env::var_os("WARDGATE_BIN").map(PathBuf::from),
        Some(target.join("release/wardgate")),
        Some(target.join("debug/wardgate")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

/// Every sample of device `ups1`, as (labels, sorted points).
fn ups1(vm: &Vm) -> Series {
    let mut s = vm.export_matching(r#"{__name__=~"(telemetry|event)_.+",device="ups1"}"#);
    for pts in s.values_mut() {
        pts.sort_by_key(|p| p.0);
    }
    s
}

#[test]
fn a_real_gateway_through_mqtt_writes_what_its_own_influx_sink_writes() {
    let bin = gateway_bin().expect(
        "no gateway binary: run `cargo test --workspace` (scripts/test), or set WARDGATE_BIN",
    );
    let t0 = Instant::now();
    let broker = Broker::start();
    let vm_gateway = Vm::start();
    let vm_ioc = Vm::start();
    let dir = tempfile::tempdir().expect("dir");
    let ioc_dir = dir.path().join("ioc");
    std::fs::create_dir(&ioc_dir).expect("dir");
    let mut ioc = Ioc::start(&ioc_dir, broker.port, "ioc-e2e", None, Some(&vm_ioc.url()));

    let samples = 40;
    let conf = dir.path().join("wardgate.toml");
    std::fs::write(
        &conf,
        format!(
            "site = \"xa-e2e\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\n[spool]\npath = \"{}\"\n[web]\nlisten = \"127.0.0.1:0\"\n[led]\nbackend = \"none\"\n[influxdb]\nurl = \"{}\"\norg = \"ioc\"\nbucket = \"wards\"\n[[device]]\nid = \"ups1\"\ntype = \"sim\"\ninterval = \"50ms\"\nprofile = \"ups\"\nevent_every = 7\ncount = {samples}\n",
            broker.port,
            dir.path().join("spool.db").display(),
            vm_gateway.url()
        ),
    )
    .expect("wardgate.toml");
    let log = std::fs::File::create(dir.path().join("wardgate.log")).expect("log");
    let _gw = Proc(Some(
        Command::new(&bin)
            .arg("run")
            .arg("--config")
            .arg(&conf)
            .arg("--remote-change-policy")
            .arg(dir.path().join("remote-change.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("wardgate"),
    ));
    let seq =
        |vm: &Vm| counts(&vm.export_matching(r#"{__name__="telemetry_seq",device="ups1"}"#)).0;
    wait_for("both databases to hold every ups1 sample", WAIT, || {
        seq(&vm_gateway) >= samples && seq(&vm_ioc) >= samples
    });
    // Events come with the samples; let both sides settle.
    pause(Duration::from_millis(1500));
    let want = ups1(&vm_gateway);
    let got = ups1(&vm_ioc);
    let names = |s: &Series| s.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&got),
        names(&want),
        "the same series: measurement, tags, fields"
    );
    assert_eq!(got, want, "the same points");
    assert!(
        want.keys().any(|l| l["__name__"].starts_with("event_")),
        "events too"
    );
    assert!(want
        .keys()
        .all(|l| l.get("type").is_none_or(|t| t == "sim")));
    // The monthly report of the same store: the simulated UPS goes on
    // battery every 14 readings (an event each 7 toggles mains), three
    // times in 40; every record received this month.
    let now = wardgate_ioc::web::system_ms();
    let month = wardgate_ioc::report::Month::of_ms(now, 7 * 3600);
    let cfg = wardgate_ioc::report::ReportConfig::default();
    let r = wardgate_ioc::report::from_store(&ioc.store, month, now, &cfg, true).expect("report");
    let row = r
        .rows
        .iter()
        .find(|x| x.site == "xa-e2e")
        .expect("the site's row");
    let (ledger, _, _) = ioc.committed();
    let received = ledger.totals("xa-e2e").expect("totals").received;
    assert_eq!(row.counts.received, received);
    assert_eq!(row.battery.count, 3, "{row:?}");
    assert!(row.availability().is_some_and(|a| a > 50.0), "{row:?}");
    ioc.stop();
    eprintln!(
        "gateway e2e: {} series, {} points each side, {:?}",
        want.len(),
        counts(&want).0,
        t0.elapsed()
    );
}
