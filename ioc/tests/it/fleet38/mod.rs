//! 38 real gateways (the binary, each a simulated UPS and sensor read
//! every second; one UPS loses the mains) -> one real mosquitto ->
//! `wardgate-ioc run` (the binary, its SQLite store) -> VictoriaMetrics
//! and the fleet pages. Meanwhile the broker is down for 10 s, and one
//! gateway is killed (SIGKILL) during the outage, a row of its backlog
//! damaged on the card, and started again. At the end the ledger holds
//! exactly the holes the gateways declared, each with the declared
//! reason, nothing pending, nothing unexplained; the pages name the site
//! on battery in both languages; VictoriaMetrics has every reading of
//! every site. A witness (an MQTT session of the test's own) says what
//! the gateways sent and declared, from the contract crate alone.

mod checks;
mod gateways;
mod witness;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gateways::{damage_a_row, stop_all, tail, Gateway};
use witness::Witness;

use super::ingest_gateway::gateway_bin;
use super::ingest_peers::{pause, wait_for, Broker, Ioc, Vm, WAIT};

pub const SITES: usize = 38;
/// The site whose UPS goes on battery.
pub const BATTERY: usize = 7;
/// The site killed and damaged.
pub const KILLED: usize = 23;
/// How long the broker is away.
const OUTAGE: Duration = Duration::from_secs(10);
/// Into the outage, the kill (rows of the outage are on the card by then).
const KILL_AFTER: Duration = Duration::from_secs(5);

pub fn site(i: usize) -> String {
    format!("xa-{i:02}")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `/metrics` as name-with-labels -> value.
pub fn metrics(ioc: &Ioc) -> BTreeMap<String, f64> {
    let (s, text) = ioc.get("/metrics");
    assert_eq!(s, 200);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

/// A per-site metric (`name{site="…"}` or `name{site="…",state="…"}`).
pub fn of(m: &BTreeMap<String, f64>, name: &str, site: &str, state: Option<&str>) -> Option<f64> {
    let key = match state {
        None => format!("{name}{{site=\"{site}\"}}"),
        Some(st) => format!("{name}{{site=\"{site}\",state=\"{st}\"}}"),
    };
    m.get(&key).copied()
}

/// Every gateway back after the outage, its backlog drained and every
/// hole settled: each site online again, its gateway has said (live
/// telemetry, heard by the witness after the broker's return) that its
/// spool is empty, the ioc has every record the witness heard, and its
/// ledger has nothing pending. The killed site must also have said it
/// found a damaged row.
fn settled(ioc: &Ioc, witness: &Witness, back: usize) -> bool {
    let heard = witness.heard_since(back);
    if heard.drained_since.len() < SITES || heard.corrupt_declared(&site(KILLED)) == 0 {
        return false;
    }
    let m = metrics(ioc);
    let all = (0..SITES).all(|i| {
        let s = site(i);
        of(&m, "wardgate_site_online", &s, None) == Some(1.0)
            && of(&m, "wardgate_site_backlog_depth", &s, None) == Some(0.0)
            && of(&m, "wardgate_ledger_holes", &s, Some("pending")) == Some(0.0)
    });
    all && checks::received_as_heard(&ioc.committed().0, &heard, true)
}

#[test]
fn thirty_eight_gateways_an_outage_and_a_crash_leave_only_declared_holes() {
    let bin = gateway_bin().expect(
        "no gateway binary: run `cargo test --workspace` (scripts/test), or set WARDGATE_BIN",
    );
    let t0 = Instant::now();
    let mut broker = Broker::start();
    let vm = Vm::start();
    let dir = tempfile::tempdir().expect("dir");
    let ioc_dir = dir.path().join("ioc");
    std::fs::create_dir(&ioc_dir).expect("dir");
    let mut ioc = Ioc::start(&ioc_dir, broker.port, "ioc-fleet38", None, Some(&vm.url()));
    let witness = Witness::start(broker.port);
    let mut gws: Vec<Gateway> = (0..SITES)
        .map(|i| Gateway::start(&bin, dir.path(), &site(i), broker.port, i == BATTERY))
        .collect();
    wait_for("every site online, xa-07's UPS on battery", WAIT, || {
        let m = metrics(&ioc);
        (0..SITES).all(|i| of(&m, "wardgate_site_online", &site(i), None) == Some(1.0))
            && of(&m, "wardgate_site_on_battery", &site(BATTERY), None) == Some(1.0)
    });
    let started = t0.elapsed();

    // The broker away for OUTAGE; in the middle, the crash.
    let down = Instant::now();
    let down_ms = now_ms();
    broker.stop();
    pause(KILL_AFTER);
    let x = &mut gws[KILLED];
    x.kill9();
    let damaged = damage_a_row(&x.spool(), down_ms + 1_000);
    x.spawn();
    pause(OUTAGE.saturating_sub(down.elapsed()));
    let mark = witness.len();
    broker.start_again();
    let outage = down.elapsed();

    let back = Instant::now();
    let within = Duration::from_secs(60);
    let deadline = Instant::now() + within;
    while !settled(&ioc, &witness, mark) {
        if Instant::now() > deadline {
            let m = metrics(&ioc);
            let stuck: Vec<_> = m
                .iter()
                .filter(|(k, v)| {
                    (k.contains("backlog_depth") || k.contains("state=\"pending\"")) && **v > 0.0
                        || k.starts_with("wardgate_site_online") && **v == 0.0
                })
                .collect();
            let heard = witness.heard_since(mark);
            let behind = checks::not_as_heard(&ioc.committed().0, &heard, true);
            let drained = heard.drained_since;
            let silent: Vec<String> = (0..SITES)
                .map(site)
                .filter(|s| !drained.contains(s))
                .collect();
            panic!(
                "not settled {within:?} after the outage: {stuck:?}; not drained: {silent:?}; \
                 the ledger not as heard: {behind:?}\
                 \nxa-23: {}\nioc: {}",
                tail(&gws[KILLED].log()),
                tail(&ioc.log())
            );
        }
        pause(Duration::from_millis(250));
    }
    let drained = back.elapsed();
    for g in gws.iter_mut() {
        assert!(g.running(), "{} died: {}", g.site, tail(&g.log()));
    }
    checks::pages(&ioc);

    // Stop the fleet cleanly, and let the ioc take all that was sent.
    stop_all(&mut gws, Duration::from_secs(30));
    // Nothing more is published: wait until the witness has heard the
    // last of it (2 s without a new message), then for the ioc's ledger.
    let mut last = (witness.len(), Instant::now());
    wait_for(
        "the witness to hear the fleet's last messages",
        WAIT,
        || {
            if witness.len() != last.0 {
                last = (witness.len(), Instant::now());
            }
            last.1.elapsed() > Duration::from_secs(2)
        },
    );
    let heard = witness.heard();
    assert!(heard.refused.is_empty(), "{:?}", heard.refused);
    let deadline = Instant::now() + WAIT;
    loop {
        let (l, _, waiting) = ioc.committed();
        let behind = checks::not_as_heard(&l, &heard, false);
        if waiting == 0 && behind.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ioc's ledger is not what the witness heard ({waiting} points waiting): \
             (stream, ledger, witness) {behind:?}"
        );
        pause(Duration::from_millis(250));
    }
    let (ledger, _, _) = ioc.committed();
    let (explained, unused) = checks::ledger(&ledger, &heard, damaged);
    checks::metrics_after(&ioc, (explained, unused));
    let points = checks::tsdb(&vm, &heard);
    ioc.stop();
    let log = ioc.log();
    assert!(!log.contains(" ERROR "), "{}", tail(&log));
    // The broker kept the ioc's session through its restart.
    assert!(log.contains("session_present=true"), "{}", tail(&log));
    eprintln!(
        "fleet38: {SITES} gateways; online in {started:?}; outage {outage:?}; settled {drained:?} \
         after; xa-23 row seq {damaged} damaged, {explained} readings lost with a reason, {unused} numbers never used; {} messages \
         heard, {points} readings in VictoriaMetrics; {:?} in all",
        witness.len(),
        t0.elapsed()
    );
}
