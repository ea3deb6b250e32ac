//! `wardgate-ioc run` (the binary) serves the fleet pages and `/metrics`
//! from the ledger and fleet view its ingest feeds: 20 sites of the load
//! generator's traffic through a real mosquitto, one of them on battery,
//! one offline, one on a newer version; then kill -9 and a restart, and
//! the pages say the same (online and offline since when, the unexplained
//! holes, the versions) from what the store saved, nothing counted twice.

use std::collections::BTreeMap;
use std::time::Instant;

use wardgate_contract::{
    ClockState, Delivered, Envelope, Epoch, OfflineReason, Sample, Status, Values,
};
use wardgate_ioc::fleet::{Fleet, Monitor, Site};
use wardgate_ioc::ledger::{Ledger, SiteTotals};
use wardgate_ioc::loadgen::{generate, LoadConfig};
use wardgate_ioc::store::{SqliteStore, Store};

use super::ingest_peers::{publish, wait_for, Broker, Ioc, WAIT};

const SITES: usize = 20;
const BATTERY: &str = "site-00003";
const OFFLINE: &str = "site-00005";
const NEWER: &str = "site-00000";

/// A live UPS reading saying mains is lost, in an epoch of its own
/// numbered from 0 (no hole in the ledger).
fn on_battery(site: &str, ts: i64) -> (String, Vec<u8>) {
    let mut v = Values::new();
    v.set("ups.status", "OB DISCHRG");
    v.num("battery.runtime", 1_260.0);
    let env = Envelope {
        site: site.to_owned(),
        device: "ups1".to_owned(),
        epoch: Epoch(0x00be_e5ee),
        records: vec![Delivered {
            historical: false,
            record: Sample {
                seq: 0,
                ts,
                clock: ClockState::Synced,
                values: v,
            },
        }],
    };
    (format!("ioc/{site}/ups1/telemetry"), env.to_vec())
}

fn inventory(site: &str, version: &str) -> (String, Vec<u8>) {
    let body = format!(
        r#"{{"site":"{site}","version":"{version}","boot_id":"b","run_id":"r","started":1,"config_hash":"sha256:0123abcd","clock":"synced","devices":[{{"id":"ups1","type":"megatec","interval_ms":5000,"values":[],"words":{{}}}}],"sinks":["mqtt"],"commands":{{"enabled":false,"allow":[]}}}}"#
    );
    (format!("ioc/{site}/inventory"), body.into_bytes())
}

struct Reference {
    messages: Vec<(String, Vec<u8>)>,
    totals: BTreeMap<String, SiteTotals>,
    /// The first planted undeclared range of each site that has one, as
    /// the site page writes it ("a–b" or "a").
    planted: BTreeMap<String, String>,
}

fn reference() -> Reference {
    let traffic = generate(&LoadConfig {
        sites: SITES,
        seed: 23,
        prefix: "ioc".into(),
        steps: 4,
    })
    .expect("loadgen");
    let end = traffic.messages.iter().map(|w| w.at_ms).max().unwrap_or(0);
    let mut messages: Vec<(String, Vec<u8>)> = traffic
        .messages
        .iter()
        .map(|w| (w.topic.clone(), w.payload.clone()))
        .collect();
    messages.push(inventory(NEWER, "0.2.0"));
    messages.push(on_battery(BATTERY, end + 1_000));
    let offline = Status::Offline {
        reason: OfflineReason::Lost,
    };
    messages.push((format!("ioc/{OFFLINE}/status"), offline.to_vec()));
    let mut m = Monitor::new("ioc", Ledger::default(), Fleet::default());
    for (t, p) in &messages {
        m.handle(t, p, 0)
            .expect("the reference takes every message");
    }
    let totals = m
        .ledger
        .sites()
        .filter_map(|s| Some((s.to_owned(), m.ledger.totals(s)?)))
        .collect();
    let mut planted = BTreeMap::new();
    for (k, r) in &traffic.planted.undeclared {
        let shown = if r.first == r.last {
            r.first.to_string()
        } else {
            format!("{}–{}", r.first, r.last)
        };
        planted.entry(k.site.clone()).or_insert(shown);
    }
    Reference {
        messages,
        totals,
        planted,
    }
}

/// A sample's value in the metrics text (`name` with its labels).
fn metric(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Text without tags, without parenthesised parts (durations that grow
/// while the test runs, and the offline reason), spaces collapsed.
fn text(html: &str) -> String {
    let mut out = String::new();
    let (mut tag, mut paren) = (false, 0u32);
    for c in html.chars() {
        match c {
            '<' => tag = true,
            '>' if tag => tag = false,
            _ if tag => {}
            '(' => paren += 1,
            ')' if paren > 0 => paren -= 1,
            _ if paren > 0 => {}
            c => out.push(c),
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Per site on `/`: its link (online or offline, since when), version and
/// unexplained-holes cells.
fn rows(html: &str, labels: [&str; 3]) -> BTreeMap<String, String> {
    html.split("<tr class=\"")
        .skip(1)
        .filter_map(|row| {
            let id = row.split_once("<b>")?.1.split_once("</b>")?.0.to_owned();
            let cells: Vec<String> = labels
                .iter()
                .map(|label| {
                    let at = format!("data-label=\"{label}\"");
                    row.split_once(at.as_str())
                        .and_then(|(_, rest)| rest.split_once("</td>"))
                        .map(|(cell, _)| text(&format!("<x {cell}")))
                        .unwrap_or_default()
                })
                .collect();
            Some((id, cells.join(" | ")))
        })
        .collect()
}

const VI: [&str; 3] = ["Kết nối", "Phiên bản", "Mất không rõ lý do"];

/// What the pages and the store say that a restart must not change.
#[derive(Debug, PartialEq)]
struct Seen {
    rows: BTreeMap<String, String>,
    presence: BTreeMap<String, Option<String>>,
}

fn seen(ioc: &Ioc) -> Seen {
    let (s, page) = ioc.get("/");
    assert_eq!(s, 200);
    let mut store = SqliteStore::open(&ioc.store).expect("store");
    let fleet: BTreeMap<String, Site> = store.load().expect("load").fleet;
    Seen {
        rows: rows(&page, VI),
        presence: fleet
            .into_iter()
            .map(|(id, s)| (id, s.presence.map(|p| format!("{p:?}"))))
            .collect(),
    }
}

fn totals_of(ioc: &Ioc) -> BTreeMap<String, SiteTotals> {
    let (l, _, _) = ioc.committed();
    l.sites()
        .filter_map(|s| Some((s.to_owned(), l.totals(s)?)))
        .collect()
}

/// Pages, site pages and `/metrics` against the reference.
fn check_pages(ioc: &Ioc, r: &Reference) {
    let (s, vi) = ioc.get("/");
    assert_eq!(s, 200);
    assert!(vi.contains("Các điểm giám sát"), "{vi}");
    for i in 0..SITES {
        assert!(vi.contains(&format!("site-{i:05}")), "site-{i:05} missing");
    }
    for word in ["đang kết nối", "mất kết nối", "đang chạy pin UPS", "0.2.0"] {
        assert!(vi.contains(word), "{word:?} not on /");
    }
    let (s, en) = ioc.get("/?lang=en");
    assert_eq!(s, 200);
    for word in [
        "Ward sites",
        "online",
        "offline",
        "on UPS battery",
        "lost contact",
    ] {
        assert!(en.contains(word), "{word:?} not on /?lang=en");
    }
    let rows = rows(&vi, VI);
    assert_eq!(rows.len(), SITES);
    assert!(
        rows[OFFLINE].starts_with("mất kết nối từ"),
        "{}",
        rows[OFFLINE]
    );
    for (site, t) in &r.totals {
        let holes = rows[site].rsplit(" | ").next().unwrap_or("");
        // Counts above 999 are written with a thousands separator.
        let shown = holes.replace('.', "");
        assert_eq!(shown, t.unexplained.to_string(), "{site}: {}", rows[site]);
    }
    assert!(!r.planted.is_empty(), "the seed plants undeclared holes");
    for (site, range) in &r.planted {
        let (s, page) = ioc.get(&format!("/site/{site}"));
        assert_eq!(s, 200);
        assert!(page.contains("Sổ theo dõi số liệu"));
        assert!(page.contains("mất, không rõ lý do"), "{site}");
        assert!(
            page.contains(range.as_str()),
            "{site}: {range} not on its page"
        );
        let (s, en) = ioc.get(&format!("/site/{site}?lang=en"));
        assert_eq!(s, 200);
        assert!(en.contains("Readings ledger"));
    }
    assert_eq!(ioc.get("/site/no-such-site").0, 404);
    let (s, m) = ioc.get("/metrics");
    assert_eq!(s, 200);
    assert_eq!(metric(&m, "wardgate_fleet_sites"), Some(SITES as f64));
    let battery = format!("wardgate_site_on_battery{{site=\"{BATTERY}\"}}");
    assert_eq!(metric(&m, &battery), Some(1.0));
    let offline = format!("wardgate_site_online{{site=\"{OFFLINE}\"}}");
    assert_eq!(metric(&m, &offline), Some(0.0));
    for (site, t) in &r.totals {
        let k = format!("wardgate_ledger_holes{{site=\"{site}\",state=\"unexplained\"}}");
        assert_eq!(metric(&m, &k), Some(t.unexplained as f64), "{site}");
    }
    for name in [
        "wardgate_ioc_messages_received_total",
        "wardgate_ioc_messages_committed_total",
        "wardgate_ioc_messages_acknowledged_total",
        "wardgate_ioc_messages_malformed_total",
        "wardgate_ioc_tsdb_points_written_total",
        "wardgate_ioc_tsdb_points_retried_total",
        "wardgate_ioc_tsdb_points_set_aside_total",
        "wardgate_ioc_tsdb_outbox_points",
    ] {
        assert!(metric(&m, name).is_some(), "{name} not in /metrics");
    }
    assert_eq!(
        metric(&m, "wardgate_ioc_messages_malformed_total"),
        Some(0.0)
    );
    // No [tsdb]: no points made, none waiting.
    assert_eq!(metric(&m, "wardgate_ioc_tsdb_outbox_points"), Some(0.0));
}

#[test]
fn pages_and_metrics_from_the_running_service_survive_kill9() {
    let t0 = Instant::now();
    let r = reference();
    let n = r.messages.len() as f64;
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("dir");
    let mut ioc = Ioc::start(dir.path(), broker.port, "ioc-web", None, None);
    wait_for("the pages answer", WAIT, || {
        super::ingest_peers::http_get(ioc.web, "/healthz").is_some_and(|(s, _)| s == 200)
    });
    publish(broker.port, &r.messages);
    wait_for("every message committed and acknowledged", WAIT, || {
        let (_, m) = ioc.get("/metrics");
        metric(&m, "wardgate_ioc_messages_acknowledged_total") == Some(n)
    });
    let (_, m) = ioc.get("/metrics");
    assert_eq!(metric(&m, "wardgate_ioc_messages_received_total"), Some(n));
    assert_eq!(metric(&m, "wardgate_ioc_messages_committed_total"), Some(n));
    assert_eq!(totals_of(&ioc), r.totals, "the ledger as the pipeline's");
    check_pages(&ioc, &r);
    let before = seen(&ioc);
    assert_eq!(before.presence.len(), SITES, "every site's view saved");

    ioc.kill9();
    ioc.restart();
    check_pages(&ioc, &r);
    let after = seen(&ioc);
    assert_eq!(after, before, "the same pages after kill -9 and a restart");
    // Nothing applied twice: the ledger's totals, duplicates included.
    assert_eq!(totals_of(&ioc), r.totals);
    // What came again after the restart (acknowledgements the kill
    // lost) was recognised as committed, not applied.
    wait_for("every message after the restart recognised", WAIT, || {
        let (_, m) = ioc.get("/metrics");
        let again = metric(&m, "wardgate_ioc_messages_received_total");
        let known = metric(&m, "wardgate_ioc_messages_redelivered_total");
        again.is_some() && again == known
    });
    // `check` beside the running service: its pages' address is taken,
    // by the service itself (its /healthz answers): usable.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wardgate-ioc"))
        .args(["check", "--config"])
        .arg(&ioc.config)
        .output()
        .expect("wardgate-ioc check");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("in use by a running wardgate-ioc"), "{said}");
    ioc.stop();
    eprintln!(
        "ingest_web: {} messages, {:?}",
        r.messages.len(),
        t0.elapsed()
    );
}
