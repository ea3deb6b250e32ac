//! The monthly report end to end: the load generator's traffic and a
//! hand-made site (on battery, internet down, too hot, a door open,
//! kill -9 in the middle) published QoS 1 into a real mosquitto, taken
//! by the `wardgate-ioc run` binary into SQLite; then the report from
//! the store (the library, the `report` subcommand, the running pages),
//! its figures checked against the same traffic through the pipeline in
//! process; and the pages in headless chromium (target/report-shots/).

use std::path::{Path, PathBuf};
use std::process::Command;

use wardgate_ioc::ledger::{Ledger, SiteTotals};
use wardgate_ioc::loadgen::{generate, LoadConfig};
use wardgate_ioc::pipeline::Consumer;
use wardgate_ioc::report::{from_store, Month, Report, ReportConfig, Row};
use wardgate_ioc::web::system_ms;

use super::ingest_peers::{publish, wait_for, Broker, Ioc, WAIT};

const SITE: &str = "xa-report";

/// What the test's service is configured with after its restart: a site
/// unheard for 30 s is offline (the shortest allowed).
const OFFLINE_AFTER_MS: i64 = 30_000;

fn report(store: &Path, month: Month) -> Report {
    let cfg = ReportConfig {
        offline_after_ms: OFFLINE_AFTER_MS,
        ..ReportConfig::default()
    };
    from_store(store, month, system_ms(), &cfg, true).expect("report")
}

fn received(store: &Path, month: Month) -> u64 {
    let r = report(store, month);
    row(&r, SITE).map_or(0, |s| s.counts.received)
}

fn row<'a>(r: &'a Report, site: &str) -> Option<&'a Row> {
    r.rows.iter().find(|x| x.site == site)
}

/// The hand-made site's messages: `seq` numbers from `first`.
struct Hand {
    seq: u64,
}

impl Hand {
    fn msg(&mut self, device: &str, body: &str) -> (String, Vec<u8>) {
        let seq = self.seq;
        self.seq += 1;
        let ts = system_ms();
        let (topic, payload) = if let Some(event) = body.strip_prefix("event:") {
            let mut parts = event.splitn(3, ':');
            let code = parts.next().unwrap_or_default();
            let severity = parts.next().unwrap_or_default();
            let values = parts.next().unwrap_or("{}");
            (
                "event",
                format!(
                    r#"{{"site":"{SITE}","device":"{device}","epoch":"00000000000000aa","events":[{{"historical":false,"seq":{seq},"ts":{ts},"clock":"synced","severity":"{severity}","code":"{code}","message":"m","values":{values}}}]}}"#
                ),
            )
        } else {
            (
                "telemetry",
                format!(
                    r#"{{"site":"{SITE}","device":"{device}","epoch":"00000000000000aa","samples":[{{"historical":false,"seq":{seq},"ts":{ts},"clock":"synced","values":{body}}}]}}"#
                ),
            )
        };
        (format!("ioc/{SITE}/{device}/{topic}"), payload.into_bytes())
    }
}

fn status_online() -> (String, Vec<u8>) {
    (
        format!("ioc/{SITE}/status"),
        br#"{"state":"online","version":"0.1.0","boot_id":"b","run_id":"r","started":1}"#.to_vec(),
    )
}

fn firm(t: &SiteTotals) -> (u64, u64, u64, u64, u64) {
    (
        t.received,
        t.filled_late,
        t.explained,
        t.unexplained,
        t.contract_breaks,
    )
}

#[test]
fn report_of_real_traffic_through_the_running_service() {
    let traffic = generate(&LoadConfig {
        sites: 20,
        seed: 5,
        prefix: "ioc".into(),
        steps: 4,
    })
    .expect("loadgen");
    let mut reference = Consumer::new("ioc", Ledger::default());
    for w in &traffic.messages {
        let _ = reference.handle(&w.topic, &w.payload, w.at_ms);
    }
    let want = reference.ledger.fleet_totals();
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("dir");
    let mut ioc = Ioc::start(dir.path(), broker.port, "ioc-report", None, None);
    let month = Month::of_ms(system_ms(), 7 * 3600);

    // The hand-made site goes on battery, loses the internet, gets too
    // hot, and a door opens; committed; then kill -9.
    let mut hand = Hand { seq: 0 };
    let mut ups = Hand { seq: 0 };
    let mut env = Hand { seq: 0 };
    let mut ev = Hand { seq: 0 };
    let first = vec![
        status_online(),
        ups.msg("ups1", r#"{"ups.status":"OL"}"#),
        ups.msg("ups1", r#"{"ups.status":"OB"}"#),
        ev.msg("router", "event:wan.down:critical:{}"),
        env.msg("env1", r#"{"ambient.temperature":41.5}"#),
        hand.msg("gpio1", "event:door.open:warning:{}"),
    ];
    publish(broker.port, &first);
    let messages: Vec<(String, Vec<u8>)> = traffic
        .messages
        .iter()
        .map(|w| (w.topic.clone(), w.payload.clone()))
        .collect();
    publish(broker.port, &messages);
    wait_for("the traffic committed", WAIT, || {
        let (l, _, _) = ioc.committed();
        let mine = l.totals(SITE).map(|t| t.received).unwrap_or(0);
        let mut all = l.fleet_totals();
        all.received -= mine;
        firm(&all) == firm(&want) && mine == 5
    });
    let r = report(&ioc.store, month);
    let s = row(&r, SITE).expect("the site's row");
    assert_eq!(
        (
            s.battery.count,
            s.wan_down.count,
            s.temperature.count,
            s.contacts.count
        ),
        (1, 1, 1, 1)
    );
    // A reading (still too hot: nothing changes), committed; then kill -9
    // and a restart with `[report] offline_after = "30s"`.
    publish(
        broker.port,
        &[env.msg("env1", r#"{"ambient.temperature":41.0}"#)],
    );
    wait_for("the sixth message committed", WAIT, || {
        received(&ioc.store, month) == 6
    });
    ioc.kill9();
    let mut text = std::fs::read_to_string(&ioc.config).expect("config");
    text.push_str(&format!(
        "[report]\noffline_after = \"{}s\"\n",
        OFFLINE_AFTER_MS / 1000
    ));
    std::fs::write(&ioc.config, text).expect("config");
    ioc.restart();
    let back = vec![
        ups.msg("ups1", r#"{"ups.status":"OL"}"#),
        ev.msg("router", "event:wan.up:info:{}"),
        env.msg("env1", r#"{"ambient.temperature":24.0}"#),
        hand.msg("gpio1", "event:door.closed:info:{}"),
    ];
    publish(broker.port, &back);
    wait_for("the site back to normal in the history", WAIT, || {
        received(&ioc.store, month) == 10
    });
    // Then nothing at all from the site for 40 s (its status still
    // online), then a reading: offline from 30 s after the last message.
    let quiet_from = system_ms();
    super::ingest_peers::pause(std::time::Duration::from_secs(40));
    let quiet_to = system_ms();
    publish(broker.port, &[ups.msg("ups1", r#"{"ups.status":"OL"}"#)]);
    wait_for("the reading after the silence", WAIT, || {
        received(&ioc.store, month) == 11
    });
    let s = row(&report(&ioc.store, month), SITE)
        .cloned()
        .expect("the site");
    let down = s.window_ms - s.available_ms;
    let quiet = quiet_to - quiet_from;
    assert!(
        down >= quiet - OFFLINE_AFTER_MS - 1_000 && down <= quiet - OFFLINE_AFTER_MS + 15_000,
        "unavailable {down} ms after {quiet} ms of silence"
    );

    let readings = Month::of_ms(traffic.messages[0].at_ms, 7 * 3600);
    figures(&ioc, month, readings, &want);
    subcommand(&ioc, month, dir.path());
    pages(&ioc, month);
    shots(&ioc, month);
    ioc.stop();
}

/// The figures, this month (by arrival) and the readings' month (the
/// load generator's readings are dated late November 2026: their holes
/// are that month's), against the pipeline's totals `want`.
fn figures(ioc: &Ioc, month: Month, readings: Month, want: &SiteTotals) {
    let r = report(&ioc.store, month);
    assert_eq!(r.rows.len(), 21, "20 generated sites and the hand-made one");
    let s = row(&r, SITE).expect("the site");
    // One episode each, closed after the restart: not opened twice.
    assert_eq!(
        (
            s.battery.count,
            s.wan_down.count,
            s.temperature.count,
            s.contacts.count
        ),
        (1, 1, 1, 1)
    );
    assert!(
        s.battery.ms > 0 && s.battery.ms < 600_000,
        "{:?}",
        s.battery
    );
    let t = &r.total;
    assert_eq!(t.counts.received, want.received + 11);
    assert_eq!(t.counts.contract_breaks, want.contract_breaks);
    assert_eq!(t.counts.corrected_copies, want.corrected_copies);
    assert!(
        t.counts.duplicates >= want.duplicates,
        "redeliveries add duplicates, never fewer"
    );
    assert!(r.to_ms > r.from_ms);
    for x in &r.rows {
        let a = x.availability().expect("measured");
        assert!((0.0..=100.0).contains(&a), "{}: {a}", x.site);
    }
    if readings != month {
        let nov = report(&ioc.store, readings);
        assert_eq!(nov.total.unexplained, want.unexplained);
        assert_eq!(nov.total.explained, want.explained);
        assert_eq!(nov.total.pending, 0);
        assert_eq!(
            nov.total.counts.received, 0,
            "received this month, not then"
        );
        assert_eq!(
            nov.total.window_ms, 0,
            "nothing measured before the history began"
        );
    }
}

/// `wardgate-ioc report` beside the running service: CSV and HTML files,
/// a bad month.
fn subcommand(ioc: &Ioc, month: Month, dir: &Path) {
    let csv_path = dir.join("r.csv");
    let html_path = dir.join("r.html");
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_wardgate-ioc"))
            .arg("report")
            .arg("--config")
            .arg(&ioc.config)
            .args(["--month", &month.to_string()])
            .args(args)
            .output()
            .expect("wardgate-ioc report");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    cli(&["--format", "csv", "--out", &csv_path.display().to_string()]);
    let csv = std::fs::read_to_string(&csv_path).expect("csv");
    assert!(csv.starts_with("\u{feff}điểm,tháng,phút đo,"), "{csv}");
    let lines: Vec<&str> = csv.trim_end().split("\r\n").collect();
    assert_eq!(lines.len(), 22, "a header and a row per site");
    let mine: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with(SITE))
        .expect("the site's line")
        .split(',')
        .collect();
    assert_eq!((mine[7], mine[9], mine[11], mine[15]), ("1", "1", "1", "1"));
    assert_eq!(mine[17], "11");
    let html = cli(&["--lang", "en", "--out", &html_path.display().to_string()]);
    assert!(html.is_empty());
    let page = std::fs::read_to_string(&html_path).expect("html");
    assert!(page.contains("Monthly report") && page.contains(SITE));
    let bad = Command::new(env!("CARGO_BIN_EXE_wardgate-ioc"))
        .args(["report", "--config"])
        .arg(&ioc.config)
        .args(["--month", "2026-13"])
        .output()
        .expect("wardgate-ioc report");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a month"));
}

/// `/report/<month>` and `.csv` on the running service's pages.
fn pages(ioc: &Ioc, month: Month) {
    let (st, body) = ioc.get(&format!("/report/{month}"));
    assert_eq!(st, 200);
    assert!(body.contains("Báo cáo tháng") && body.contains("@media print"));
    let (st, body) = ioc.get(&format!("/report/{month}.csv?lang=en"));
    assert_eq!(st, 200);
    assert!(
        body.starts_with("\u{feff}site,month,measured_min,"),
        "{body}"
    );
    assert_eq!(ioc.get("/report/2026-13").0, 404);
    assert_eq!(ioc.get("/report").0, 303);
}

fn shots_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/report-shots");
    std::fs::create_dir_all(&d).expect("target/ is writable");
    d
}

/// The running service's report page in both languages at a desk's and
/// a phone's width, and its print layout (the print stylesheet applied
/// to the screen, at A4 landscape's width).
fn shots(ioc: &Ioc, month: Month) {
    if !super::fleet_web::have("chromium") {
        eprintln!("chromium not installed (apt-get install chromium): skipped");
        return;
    }
    let dir = shots_dir();
    let base = format!("http://127.0.0.1:{}/report/{month}", ioc.web);
    let (_, vi) = ioc.get(&format!("/report/{month}"));
    let print = dir.join("print-vi.html");
    std::fs::write(&print, vi.replace("@media print{", "@media all{")).expect("print copy");
    let pages = [
        ("live-vi", base.clone(), "Báo cáo tháng"),
        ("live-en", format!("{base}?lang=en"), "Monthly report"),
        (
            "print-vi",
            format!("file://{}", print.display()),
            "Báo cáo tháng",
        ),
    ];
    for (name, url, word) in pages {
        for (w, h, tag) in [
            (1366, 1000, "desk"),
            (390, 2400, "phone"),
            (1047, 740, "a4"),
        ] {
            if (name == "print-vi") != (tag == "a4") {
                continue;
            }
            let file = dir.join(format!("{name}-{tag}.png"));
            let profile = dir.join(format!("profile-{name}-{tag}"));
            let dom = super::fleet_web::chromium(&profile, &["--dump-dom", &url]);
            assert!(
                String::from_utf8_lossy(&dom.stdout).contains(word),
                "{name}: {word:?} not in the DOM"
            );
            super::fleet_web::chromium(
                &profile,
                &[
                    &format!("--window-size={w},{h}"),
                    &format!("--screenshot={}", file.display()),
                    &url,
                ],
            );
            assert!(file.exists(), "{name} {tag}: no screenshot");
            let _ = std::fs::remove_dir_all(&profile);
        }
    }
}

/// A month with something in every column (a fixture, through the same
/// computation and page), to look at: 31 days of December 2026 for a
/// dozen sites, outages, heat, doors, lost readings.
#[test]
fn a_full_month_in_headless_chromium() {
    use wardgate_ioc::history::{Condition, DayCounts, Heard, Interval};
    use wardgate_ioc::report::{compute, render, Format, HoleAt, HoleKind, Page, SiteInput};
    if !super::fleet_web::have("chromium") {
        eprintln!("chromium not installed (apt-get install chromium): skipped");
        return;
    }
    let month: Month = "2026-12".parse().expect("month");
    let cfg = ReportConfig::default();
    let (start, end) = month.bounds_ms(cfg.offset_s);
    let h = 3_600_000;
    let sites: Vec<SiteInput> = (0..12)
        .map(|i: i64| {
            let site = format!("phuong-{:02}", i + 1);
            let iv = |c, from: i64, hours: i64| Interval {
                site: site.clone(),
                condition: c,
                detail: String::new(),
                start_ms: start + from * h,
                end_ms: Some(start + from * h + hours * h / 4),
            };
            let mut intervals = Vec::new();
            for k in 0..(i % 4) {
                intervals.push(iv(Condition::Battery, 24 * (k + 1) + 9, 3 + k));
            }
            if i % 3 == 0 {
                intervals.push(iv(Condition::Offline, 24 * 7 + 8, 4 * i + 2));
                intervals.push(iv(Condition::WanDown, 24 * 9 + 14, 7));
            }
            if i % 5 == 1 {
                intervals.push(iv(Condition::Temperature, 24 * 12 + 13, 9));
                intervals.push(iv(Condition::Contact, 24 * 20 + 2, 1));
                intervals.push(iv(Condition::Backlog, 24 * 21 + 2, 11));
            }
            if i == 7 {
                intervals.push(iv(Condition::Humidity, 24 * 3, 40));
            }
            let heard = if i == 11 {
                vec![Heard {
                    start_ms: start - h,
                    last_ms: start + 20 * 24 * h,
                }]
            } else {
                vec![Heard {
                    start_ms: start - h,
                    last_ms: end,
                }]
            };
            let days = month
                .days()
                .map(|d| {
                    let c = DayCounts {
                        received: 17_280 + (i as u64) * 11,
                        filled_late: u64::from(d % 9 == 0) * 40,
                        duplicates: 3,
                        corrected_copies: u64::from(i == 4),
                        contract_breaks: u64::from(i == 9 && d % 10 == 0),
                        malformed: u64::from(i == 2 && d % 15 == 0),
                    };
                    (d, c)
                })
                .collect();
            let holes = vec![
                HoleAt {
                    ts: start + 5 * h,
                    kind: HoleKind::Explained,
                    count: (i as u64) * 120,
                },
                HoleAt {
                    ts: start + 50 * h,
                    kind: HoleKind::Unexplained,
                    count: (i as u64 % 4) * 3,
                },
            ];
            SiteInput {
                site,
                intervals,
                heard,
                days,
                holes,
            }
        })
        .collect();
    let r = compute(&sites, month, end + 24 * h, Some(start - 40 * 24 * h), &cfg);
    let dir = shots_dir();
    for lang in ["vi", "en"] {
        let page = Page {
            base: Some("/report/".into()),
            now_ms: end + 24 * h,
        };
        let html =
            String::from_utf8(render(&r, &cfg, Format::Html, Some(lang), &page)).expect("utf-8");
        let file = dir.join(format!("month-{lang}.html"));
        std::fs::write(&file, &html).expect("write");
        let print = dir.join(format!("month-{lang}-print.html"));
        std::fs::write(&print, html.replace("@media print{", "@media all{")).expect("write");
        let shots = [
            (&file, 1366, 1100, "desk"),
            (&file, 390, 1500, "phone"),
            (&print, 1047, 740, "a4"),
        ];
        for (f, w, hgt, tag) in shots {
            let png = dir.join(format!("month-{lang}-{tag}.png"));
            let profile = dir.join(format!("profile-month-{lang}-{tag}"));
            super::fleet_web::chromium(
                &profile,
                &[
                    &format!("--window-size={w},{hgt}"),
                    &format!("--screenshot={}", png.display()),
                    &format!("file://{}", f.display()),
                ],
            );
            assert!(png.exists(), "{lang} {tag}: no screenshot");
            let _ = std::fs::remove_dir_all(&profile);
        }
        let csv =
            String::from_utf8(render(&r, &cfg, Format::Csv, Some(lang), &page)).expect("utf-8");
        std::fs::write(dir.join(format!("month-{lang}.csv")), csv).expect("write");
    }
}
