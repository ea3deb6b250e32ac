use super::snapshot::{SavedSite, Snapshot};
use super::table::{render, short, WIDTH};
use super::words::{EN, VI};
use super::*;
use crate::fleet::demo::{demo, ALARMS, OFFLINE, ON_BATTERY, UNSYNCED, WAN_DOWN};
use crate::fleet::Monitor;
use crate::store::{Commit, SqliteStore, Store};

fn snapshot(m: &Monitor) -> Snapshot {
    Snapshot {
        sites: m
            .fleet
            .sites()
            .map(|(id, s)| {
                (
                    id.to_owned(),
                    SavedSite {
                        site: s.clone(),
                        totals: m.ledger.totals(id).map(Ok),
                    },
                )
            })
            .collect(),
        messages: 7,
        unreadable: Vec::new(),
    }
}

/// The line of `site` (its first cell).
fn line_of<'a>(text: &'a str, site: &str) -> &'a str {
    text.lines()
        .find(|l| l.split(' ').next() == Some(site))
        .unwrap_or_else(|| panic!("no line for {site} in\n{text}"))
}

fn site(i: usize) -> String {
    format!("site-{i:05}")
}

#[test]
fn the_demo_fleet_one_line_a_site_within_100_columns() {
    let (m, now) = demo(40, 7).unwrap();
    let snap = snapshot(&m);
    for w in [&VI, &EN] {
        let text = render(w, &snap, now);
        for l in text.lines() {
            assert!(l.chars().count() <= WIDTH, "{} columns: {l}", l.len());
        }
        let rows = text.lines().filter(|l| l.starts_with("site-")).count();
        assert_eq!(rows, 40, "{text}");
        // Worst first: the offline site is the first row after the header.
        let first = text.lines().nth(3).unwrap();
        assert!(first.starts_with(&site(OFFLINE)), "{text}");
        // Every site's unexplained count is the ledger's (the last cell).
        for (id, _) in m.fleet.sites() {
            let want = m.ledger.totals(id).unwrap().unexplained;
            let last = line_of(&text, id).split(' ').next_back().unwrap();
            assert_eq!(last, crate::web::words::count(want, w.lang), "{id}: {text}");
        }
    }
    let vi = render(&VI, &snap, now);
    assert!(vi.starts_with("40 điểm: 39 đang kết nối, 1 mất kết nối, 1 đang chạy pin"));
    assert!(line_of(&vi, &site(OFFLINE)).contains("MẤT "), "{vi}");
    // An offline site's power is what it said last.
    assert!(line_of(&vi, &site(OFFLINE)).contains(" ~lưới"), "{vi}");
    let battery = line_of(&vi, &site(ON_BATTERY));
    assert!(
        battery.contains(" PIN ") && battery.contains('≈'),
        "{battery}"
    );
    assert!(line_of(&vi, &site(WAN_DOWN)).contains(" MẤT "), "{vi}");
    assert!(line_of(&vi, &site(UNSYNCED)).contains(" CHƯA ĐB "), "{vi}");
    assert!(line_of(&vi, &site(ALARMS)).contains(" 2"), "{vi}");
    let en = render(&EN, &snap, now);
    assert!(en.starts_with("40 sites: 39 online, 1 offline, 1 on battery"));
    assert!(line_of(&en, &site(OFFLINE)).contains("LOST "), "{en}");
    assert!(line_of(&en, &site(ON_BATTERY)).contains(" BATT "), "{en}");
    assert!(line_of(&en, &site(UNSYNCED)).contains(" UNSYNCED "), "{en}");
    assert!(en.contains("Site ") && en.contains(" Lost"), "{en}");
}

#[test]
fn hostile_and_long_text_is_cleaned_and_cut() {
    let (mut m, now) = demo(20, 3).unwrap();
    let long = format!("site-{}", "x".repeat(60));
    m.fleet
        .inventory(
            &long,
            format!(
                r#"{{"site":"{long}","version":"1.0\u001b[2J\u001b]0;pwned\u0007-very-long-version","boot_id":"b","run_id":"r","config_hash":"h","clock":"synced","devices":[]}}"#
            )
            .as_bytes(),
            now,
        )
        .unwrap();
    let snap = snapshot(&m);
    for w in [&VI, &EN] {
        let text = render(w, &snap, now);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text}"
        );
        for l in text.lines() {
            assert!(l.chars().count() <= WIDTH, "{l}");
        }
        assert!(text.contains("site-xxxxxxxxxxxxxxxxxx…"), "{text}");
        assert!(text.contains(" 1.0?[2J?]"), "{text}");
    }
    // JSON keeps both whole (escaped by serde).
    let doc = serde_json::to_value(to_json(&snap, "/x", now)).unwrap();
    let row = doc["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["site"] == long.as_str())
        .unwrap();
    assert_eq!(
        row["version"],
        "1.0\u{1b}[2J\u{1b}]0;pwned\u{7}-very-long-version"
    );
}

#[test]
fn short_durations() {
    let cases = [
        (0.0, "<1p", "<1m"),
        (59.0, "<1p", "<1m"),
        (60.0, "1p", "1m"),
        (3_900.0, "1g05", "1h05"),
        (90_000.0, "1n01g", "1d01h"),
        (1_000_000.0, "11n13g", "11d13h"),
    ];
    for (s, vi, en) in cases {
        assert_eq!((short(s, "vi"), short(s, "en")), (vi.into(), en.into()));
    }
}

#[test]
fn json_and_the_store_round_trip() {
    let (m, now) = demo(20, 5).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ioc.sqlite");
    let state = m.ledger.state();
    let mut store = SqliteStore::open(&path).unwrap();
    store
        .commit(&Commit {
            sites: state.sites.clone().into_iter().collect(),
            fleet: m
                .fleet
                .sites()
                .map(|(k, v)| (k.to_owned(), v.clone()))
                .collect(),
            messages: 99,
            ..Commit::default()
        })
        .unwrap();
    drop(store);
    let before = std::fs::read(&path).unwrap();
    let snap = snapshot::read(&path, true).unwrap();
    assert_eq!(snap.messages, 99);
    assert!(snap.unreadable.is_empty());
    let want = snapshot(&m);
    assert_eq!(render(&VI, &snap, now), render(&VI, &want, now));
    assert_eq!(std::fs::read(&path).unwrap(), before, "read-only");

    let doc = serde_json::to_value(to_json(&snap, "/x", now)).unwrap();
    let sites = doc["sites"].as_array().unwrap();
    assert_eq!(sites.len(), 20);
    assert_eq!(sites[0]["site"], site(OFFLINE));
    assert_eq!(sites[0]["state"], "offline");
    assert_eq!(sites[0]["concerns"][0], "offline");
    let battery = sites
        .iter()
        .find(|s| s["site"] == site(ON_BATTERY))
        .unwrap();
    assert_eq!(battery["on_battery"], true);
    for s in sites {
        let id = s["site"].as_str().unwrap();
        assert_eq!(
            s["unexplained"],
            m.ledger.totals(id).unwrap().unexplained,
            "{id}"
        );
    }
    assert_eq!(doc["messages_committed"], 99);

    // No store: a clear error, nothing made.
    let none = dir.path().join("none.sqlite");
    let e = snapshot::read(&none, true).unwrap_err().to_string();
    assert!(e.contains("no store here"), "{e}");
    assert!(!none.exists());
}
