//! A card that cannot be written: full, read-only at start, a spool
//! directory the service may not write. The gateway degrades and live
//! readings keep flowing.

use super::*;
use crate::common::storage::*;
use crate::common::*;

/// Spool on a 2 MiB tmpfs that fills while the broker is down:
/// live readings flow once it is back, `spool.degraded` (reason
/// `disk_full`) is raised, drops are counted, SIGTERM exits 0, the next
/// start works and delivers, and no record arrives more than twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_degrades_but_keeps_live_readings() {
    let fs = Tmpfs::mount("2m");
    let devices = format!(
        "{}{}",
        sim("ups1", "2ms", "samples_per_tick = 4\nevent_every = 100"),
        sim("env1", "20ms", "profile = \"sensor\"")
    );
    let mut rig = Rig::new(RigOpts {
        spool: "commit_interval = \"100ms\"\nmemory_max = 2000\n",
        devices: &devices,
        spool_dir: Some(fs.path()),
        ..Default::default()
    })
    .await;
    rig.broker.stop();
    let sub = &rig.sub;
    let mut gw = rig.start();
    let t0 = std::time::Instant::now();
    gw.until(WAIT, "the tmpfs is full", || fs.available() < 64 * 1024)
        .await;
    eprintln!("the 2 MiB spool filled in {:?}", t0.elapsed());
    // Keep reading with the disk full until memory overflows and readings
    // are dropped: the gateway logs each drop (its telemetry cannot be seen
    // while the broker is down). A fixed 2 s here was too short on a
    // loaded machine.
    let log = gw.log.clone();
    gw.until(WAIT, "readings dropped with the disk full", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("spool dropped records") && l.contains("write_failed"))
    })
    .await;
    gw.assert_running("with the disk full");
    rig.broker.restart();
    let back = wardgate::model::now_ms();
    let live = |sub: &Subscriber| {
        sub.samples("ups1")
            .iter()
            .filter(|(_, s)| s["historical"] == false && s["ts"].as_i64() > Some(back))
            .count()
    };
    gw.until(
        WAIT,
        "live ups1 readings after the broker came back",
        || live(sub) >= 50,
    )
    .await;
    gw.until(WAIT, "spool.degraded (disk_full)", || {
        spool_event_values(sub, "spool.degraded")
            .iter()
            .any(|v| v["spool.reason"] == "disk_full")
    })
    .await;
    gw.until(WAIT, "drops counted in gateway telemetry", || {
        gateway_dropped(sub) > 0.0
    })
    .await;
    // (No check of the `spool.degraded` flag in the telemetry here: the
    // store may recover as soon as the backlog's rows are deleted, and the
    // telemetry taken while the disk was full may itself have been dropped.)
    gw.stop_clean("with the disk full").await;

    let mark = sub.all().len();
    let mut gw = rig.start();
    gw.until(WAIT, "live readings after a restart on a full disk", || {
        sub.samples("ups1")
            .iter()
            .filter(|(i, s)| *i >= mark && s["historical"] == false)
            .count()
            >= 50
    })
    .await;
    gw.stop_clean("second run").await;
    sub.assert_all_valid();
    let many: Vec<_> = copies(&records(sub))
        .into_iter()
        .filter(|(_, n)| *n > 2)
        .collect();
    assert!(
        many.is_empty(),
        "{} records arrived more than twice (first 5: {:?})",
        many.len(),
        &many[..many.len().min(5)]
    );
}

/// The checks shared by the two unwritable-spool tests: the gateway runs,
/// live readings arrive, `spool.degraded` with `reason` is raised, SIGTERM
/// exits 0.
async fn assert_degraded_but_live(gw: &mut Process, sub: &Subscriber, reason: &str) {
    let mark = sub.all().len();
    gw.until(WAIT, "live ups1 readings", || {
        sub.samples("ups1")
            .iter()
            .filter(|(i, s)| *i >= mark && s["historical"] == false)
            .count()
            >= 30
    })
    .await;
    gw.until(WAIT, &format!("spool.degraded ({reason})"), || {
        spool_event_values(sub, "spool.degraded")
            .iter()
            .any(|v| v["spool.reason"] == reason)
    })
    .await;
    let v = spool_event_values(sub, "spool.degraded");
    let e = gateway_events(sub, "spool.degraded");
    assert!(
        e.iter().any(|e| e["severity"] == "critical"),
        "spool.degraded is critical: {e:?}"
    );
    assert!(
        v.iter()
            .any(|v| v["spool.detail"].as_str().is_some_and(|d| !d.is_empty())),
        "spool.degraded carries spool.detail (the OS error): {v:?}"
    );
    gw.until(
        WAIT,
        "spool.degraded = true in the gateway telemetry",
        || {
            sub.samples("gateway")
                .iter()
                .any(|(_, s)| s["values"]["spool.degraded"] == true)
        },
    )
    .await;
    gw.stop_clean(&format!("with the spool {reason}")).await;
    sub.assert_all_valid();
}

/// An existing spool on a filesystem remounted read-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_spool_at_start_degrades_but_keeps_live_readings() {
    let fs = Tmpfs::mount("8m");
    let devices = sim("ups1", "10ms", "");
    let rig = Rig::new(RigOpts {
        devices: &devices,
        spool_dir: Some(fs.path()),
        ..Default::default()
    })
    .await;
    let sub = &rig.sub;
    let mut gw = rig.start();
    gw.until(WAIT, "first run delivers", || sub.seqs("ups1").len() >= 20)
        .await;
    gw.stop_clean("first run").await;
    assert!(rig.spool.exists(), "the first run left a spool");
    fs.remount_read_only();
    let mut gw = rig.start();
    assert_degraded_but_live(&mut gw, sub, "read_only").await;
}

/// A spool directory the gateway's user cannot write
/// (the binary runs as nobody through setpriv).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_spool_dir_degrades_but_keeps_live_readings() {
    use std::os::unix::fs::PermissionsExt;
    let outer = tempfile::tempdir().unwrap();
    let spool_dir = outer.path().join("spool");
    std::fs::create_dir(&spool_dir).unwrap();
    // Readable and searchable for everyone, writable by root only.
    for d in [outer.path(), spool_dir.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let devices = sim("ups1", "10ms", "");
    let rig = Rig::new(RigOpts {
        devices: &devices,
        spool_dir: Some(&spool_dir),
        ..Default::default()
    })
    .await;
    // nobody must read the config.
    std::fs::set_permissions(rig.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&rig.cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut gw = Process::start_with_prefix(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        &rig.cfg,
        &rig.log,
    );
    assert_degraded_but_live(&mut gw, &rig.sub, "permission_denied").await;
}
