//! The fleet view fed through `Monitor::handle` (the call ingest makes),
//! `/metrics` checked by promtool, and the pages in a real browser
//! (headless chromium) at phone and desk widths, with screenshots under
//! target/fleet-shots/ to look at.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wardgate_ioc::fleet::demo::{self, demo};
use wardgate_ioc::fleet::{Fleet, Monitor};
use wardgate_ioc::ledger::Ledger;
use wardgate_ioc::loadgen::{generate, LoadConfig};
use wardgate_ioc::metrics;
use wardgate_ioc::web::{router, SharedView};

pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn monitor_feeds_ledger_and_fleet_in_one_call() {
    let traffic = generate(&LoadConfig {
        sites: 200,
        seed: 3,
        ..LoadConfig::default()
    })
    .unwrap();
    let mut m = Monitor::new("ioc", Ledger::default(), Fleet::default());
    for w in &traffic.messages {
        m.handle(&w.topic, &w.payload, w.at_ms).unwrap();
    }
    let mut got = m.ledger.unexplained();
    let mut want = traffic.planted.undeclared.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(m.fleet.len(), 200);
    for (id, s) in m.fleet.sites() {
        // Every simulated site ends online, its backlog drained.
        assert_eq!(s.online(), Some(true), "{id}");
        assert_eq!(s.backlog.map(|b| b.depth), Some(0), "{id}");
        assert!(s.devices.contains_key("ups1"), "{id}");
    }
    // The inventory through the same call: the fleet's identity.
    let inv = br#"{"site":"site-00000","version":"0.2.0","boot_id":"b","run_id":"r","started":1,"config_hash":"sha256:ab","clock":"unsynced","devices":[{"id":"ups1","type":"nut","interval_ms":5000,"values":[],"words":{}}],"sinks":["mqtt"],"commands":{"enabled":true,"allow":[]}}"#;
    m.handle("ioc/site-00000/inventory", inv, 1).unwrap();
    let s = m.fleet.site("site-00000").unwrap();
    assert_eq!(s.identity.version.as_deref(), Some("0.2.0"));
    assert_eq!(s.devices["ups1"].kind.as_deref(), Some("nut"));
    assert_eq!(s.clock.as_ref().map(|c| c.value), Some(false));
    // A command reply is the contract's but not the fleet's: taken, unused.
    m.handle("ioc/site-00000/cmd/poll/c-1/reply", b"{}", 1)
        .unwrap();
    // Malformed inventory counts against the site, like any payload.
    assert!(m.handle("ioc/site-00000/inventory", b"{", 1).is_err());
    assert_eq!(m.ledger.totals("site-00000").unwrap().malformed, 1);
}

#[test]
fn metrics_pass_promtool_check_metrics() {
    let (mut m, now) = demo(40, 1).unwrap();
    let inv = br#"{"site":"site-00001","version":"0.1.0\"} 9\nx{a=\"\\","boot_id":"b","run_id":"r","started":1,"config_hash":"sha256:ab","clock":"synced","devices":[],"sinks":[],"commands":{"enabled":false,"allow":[]}}"#;
    m.fleet.inventory("site-00001", inv, now).unwrap();
    let text = metrics::render(&m.fleet, &m.ledger, now);
    if !have("promtool") {
        eprintln!("promtool not installed (apt-get install prometheus): skipped; scripts/promtool-check installs it");
        return;
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

static NOW: OnceLock<i64> = OnceLock::new();

fn now() -> i64 {
    NOW.get().copied().unwrap_or(0)
}

fn shots_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fleet-shots");
    std::fs::create_dir_all(&d).expect("target/ is writable");
    d
}

pub fn chromium(profile: &Path, args: &[&str]) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium runs (apt-get install chromium)")
}

/// Both pages, both languages, a phone (390 px) and a desk (1366 px):
/// the words the browser shows, and a screenshot of each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_in_headless_chromium() {
    if !have("chromium") {
        eprintln!("chromium not installed (apt-get install chromium): skipped");
        return;
    }
    let (m, t) = demo(40, 1).unwrap();
    let _ = NOW.set(t);
    let view = Arc::new(SharedView::with_clock(m, now));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, router(view)).await });
    let dir = shots_dir();
    let site = format!("site-{:05}", demo::ON_BATTERY);
    let pages = [
        ("fleet-vi", "/".to_owned(), "Các điểm giám sát"),
        ("fleet-en", "/?lang=en".to_owned(), "Ward sites"),
        ("site-vi", format!("/site/{site}"), "Sổ theo dõi số liệu"),
        (
            "site-en",
            format!("/site/{site}?lang=en"),
            "Readings ledger",
        ),
    ];
    for (name, path, word) in pages {
        let sizes = [
            (390, 844, "phone"),
            (390, 2400, "phone-long"),
            (1366, 1100, "desk"),
        ];
        for (width, height, tag) in sizes {
            let url = format!("http://{addr}{path}");
            let file = dir.join(format!("{name}-{tag}.png"));
            let profile = dir.join(format!("profile-{name}-{tag}"));
            let (u, f, p) = (url.clone(), file.clone(), profile.clone());
            let out = tokio::time::timeout(
                Duration::from_secs(120),
                tokio::task::spawn_blocking(move || {
                    let dom = chromium(&p, &["--dump-dom", &u]);
                    let shot = chromium(
                        &p,
                        &[
                            &format!("--window-size={width},{height}"),
                            &format!("--screenshot={}", f.display()),
                            &u,
                        ],
                    );
                    (dom, shot)
                }),
            )
            .await
            .unwrap()
            .unwrap();
            let dom = String::from_utf8_lossy(&out.0.stdout);
            assert!(
                dom.contains(word),
                "{name}: {word:?} not in the browser's DOM"
            );
            assert!(file.exists(), "{name} {tag}: no screenshot");
            let _ = std::fs::remove_dir_all(&profile);
        }
    }
    server.abort();
}
