//! `wardgate-ioc fleet` (the binary) on the store of a running
//! `wardgate-ioc run` fed 12 sites of the load generator's traffic through
//! a real mosquitto, one site on battery and one offline: a line per site
//! within 100 columns in Vietnamese and English, each site's unexplained
//! holes the in-process pipeline's, the JSON the same; then with the
//! service stopped, the same, and the store not written.

use std::collections::BTreeMap;

use wardgate_contract::{
    ClockState, Delivered, Envelope, Epoch, OfflineReason, Sample, Status, Values,
};
use wardgate_ioc::fleet::{Fleet, Monitor};
use wardgate_ioc::ledger::Ledger;
use wardgate_ioc::loadgen::{generate, LoadConfig};

use super::ingest_peers::{publish, wait_for, Broker, Ioc, WAIT};
use super::send::ioc;

const SITES: usize = 12;
const BATTERY: &str = "site-00003";
const OFFLINE: &str = "site-00005";

/// The traffic, and what the pipeline in-process makes of it.
struct Reference {
    messages: Vec<(String, Vec<u8>)>,
    /// Each site's unexplained count.
    holes: BTreeMap<String, u64>,
    /// Sites on battery.
    battery: usize,
}

fn traffic() -> Reference {
    let t = generate(&LoadConfig {
        sites: SITES,
        seed: 31,
        prefix: "ioc".into(),
        steps: 4,
    })
    .expect("loadgen");
    let end = t.messages.iter().map(|w| w.at_ms).max().unwrap_or(0);
    let mut msgs: Vec<(String, Vec<u8>)> = t
        .messages
        .iter()
        .map(|w| (w.topic.clone(), w.payload.clone()))
        .collect();
    let mut v = Values::new();
    v.set("ups.status", "OB DISCHRG");
    v.num("battery.runtime", 1_260.0);
    let env = Envelope {
        site: BATTERY.to_owned(),
        device: "ups1".to_owned(),
        epoch: Epoch(0x00be_e5ee),
        records: vec![Delivered {
            historical: false,
            record: Sample {
                seq: 0,
                ts: end + 1_000,
                clock: ClockState::Synced,
                values: v,
            },
        }],
    };
    msgs.push((format!("ioc/{BATTERY}/ups1/telemetry"), env.to_vec()));
    let offline = Status::Offline {
        reason: OfflineReason::Lost,
    };
    msgs.push((format!("ioc/{OFFLINE}/status"), offline.to_vec()));
    let mut m = Monitor::new("ioc", Ledger::default(), Fleet::default());
    for (topic, p) in &msgs {
        m.handle(topic, p, 0).expect("the reference takes it");
    }
    let holes = m
        .ledger
        .sites()
        .filter_map(|s| Some((s.to_owned(), m.ledger.totals(s)?.unexplained)))
        .collect();
    let battery = m
        .fleet
        .sites()
        .filter(|(_, s)| s.on_battery() == Some(true))
        .count();
    Reference {
        messages: msgs,
        holes,
        battery,
    }
}

/// Checks the table in one language: every line within 100 columns, a
/// line per site with the reference's unexplained count last, the offline
/// and on-battery sites' words.
fn check_table(text: &str, holes: &BTreeMap<String, u64>, words: [&str; 3]) {
    let [header, lost, battery] = words;
    for l in text.lines() {
        assert!(l.chars().count() <= 100, "{l}");
    }
    assert!(
        text.lines().nth(2).is_some_and(|l| l.starts_with(header)),
        "{text}"
    );
    let rows: BTreeMap<&str, &str> = text
        .lines()
        .filter(|l| l.starts_with("site-"))
        .filter_map(|l| Some((l.split(' ').next()?, l)))
        .collect();
    assert_eq!(rows.len(), SITES, "{text}");
    for (site, n) in holes {
        let last = rows[site.as_str()].split(' ').next_back().unwrap_or("");
        assert_eq!(
            last.replace(['.', ','], ""),
            n.to_string(),
            "{site}: {text}"
        );
    }
    assert!(rows[OFFLINE].contains(lost), "{text}");
    assert!(rows[BATTERY].contains(battery), "{text}");
    // Worst first: the offline site leads.
    assert!(
        text.lines().nth(3).is_some_and(|l| l.starts_with(OFFLINE)),
        "{text}"
    );
}

#[test]
fn fleet_table_from_the_running_services_store() {
    let Reference {
        messages: msgs,
        holes,
        battery,
    } = traffic();
    assert!(holes.values().any(|n| *n > 0), "some holes planted");
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("dir");
    let mut ioc_run = Ioc::start(dir.path(), broker.port, "ioc-fleet-cli", None, None);
    publish(broker.port, &msgs);
    let n = msgs.len() as u64;
    wait_for("every message committed", WAIT, || {
        ioc_run.committed().1 >= n
    });
    let cfg = ioc_run.config.to_str().expect("utf-8").to_owned();
    let vi_words = ["Điểm", "MẤT ", " PIN "];
    let en_words = ["Site", "LOST ", " BATT "];

    let run = |args: &[&str]| {
        let mut all = vec!["fleet", "--config", &cfg];
        all.extend_from_slice(args);
        let o = ioc(&all);
        assert_eq!(o.code, 0, "{o:?}");
        assert_eq!(o.stderr, "", "{o:?}");
        o.stdout
    };
    let vi = run(&[]);
    check_table(&vi, &holes, vi_words);
    let summary = format!("12 điểm: 11 đang kết nối, 1 mất kết nối, {battery} đang chạy pin");
    assert!(vi.starts_with(&summary), "{vi}");
    let en = run(&["--lang", "en"]);
    check_table(&en, &holes, en_words);
    let json: serde_json::Value = serde_json::from_str(&run(&["--json"])).expect("json");
    let sites = json["sites"].as_array().expect("sites");
    assert_eq!(sites.len(), SITES);
    assert_eq!(json["messages_committed"], n);
    for s in sites {
        let id = s["site"].as_str().expect("id");
        assert_eq!(s["unexplained"], holes[id], "{id}");
    }
    assert_eq!(sites[0]["site"], OFFLINE);
    assert_eq!(sites[0]["reason"], "lost");

    // The service stopped: the same from its store, which is not written.
    ioc_run.stop();
    let before = std::fs::read(&ioc_run.store).expect("store");
    check_table(&run(&[]), &holes, vi_words);
    check_table(&run(&["--lang", "en"]), &holes, en_words);
    assert!(
        std::fs::read(&ioc_run.store).expect("store") == before,
        "the store was written"
    );

    // A config whose store does not exist: a clear error, nothing made.
    let other = dir.path().join("other.toml");
    let text = std::fs::read_to_string(&ioc_run.config)
        .expect("config")
        .replace("ioc.sqlite", "none.sqlite");
    std::fs::write(&other, text).expect("config");
    let o = ioc(&["fleet", "--config", other.to_str().expect("utf-8")]);
    assert_eq!(o.code, 69, "{o:?}");
    assert!(o.stderr.contains("no store here"), "{o:?}");
    assert!(!dir.path().join("none.sqlite").exists());
}
