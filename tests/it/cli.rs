//! The command line beside `run`: `wardgate check` on bad configs (issue
//! test 9), `wardgate spool stats` and `wardgate spool export`.

use crate::common::*;

fn check(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.toml");
    std::fs::write(&p, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .args(["check", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// 9. Bad configs make `wardgate check` exit 78 naming the key.
#[test]
fn check_rejects_bad_configs_naming_the_key() {
    let good = "site = \"xa-a\"\n[[device]]\nid = \"ups1\"\ntype = \"sim\"\n";
    let (code, out) = check(good);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("device ups1 (sim): ok") && out.contains("ups.status = \"OL\""),
        "{out}"
    );
    let cases = [
        ("site = \"xa-a\"\ncolour = \"red\"\n", "colour"),
        (
            "site = \"xa-a\"\n[mqtt]\nport = 70000\n",
            "mqtt.port: 70000 is not a port",
        ),
        (
            "site = \"xa-a\"\n[[device]]\nid = \"UPS 1\"\ntype = \"sim\"\n",
            "device[0].id",
        ),
        ("[mqtt]\nhost = \"x\"\n", "site: missing"),
        (
            "site = \"xa-a\"\n[spool]\nmax_bytes = \"lots\"\n",
            "spool.max_bytes",
        ),
        ("site = \"xa-a\"\n[mqtt\n", "TOML"),
    ];
    for (text, want) in cases {
        let (code, out) = check(text);
        assert_eq!(code, Some(78), "{text:?} -> {out}");
        assert!(out.contains(want), "{text:?}: wanted {want:?} in {out}");
    }
    let (code, out) = check_missing();
    assert_eq!(code, Some(78), "{out}");
    assert!(out.contains("no such file"), "{out}");
}

fn check_missing() -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .args(["check", "--config", "/nonexistent/wardgate.toml"])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}
/// `wardgate spool stats` and `wardgate spool export` on a spool holding a
/// backlog (the broker never came).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_stats_and_export_show_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    // No broker: a port where nothing listens (and nobody else can start
    // one), so the backlog stays in the spool.
    let no_broker = closed_port();
    let port = no_broker.port;
    let cfg_path = dir.path().join("w.toml");
    std::fs::write(
        &cfg_path,
        config_text(
            port,
            dir.path(),
            &sim("ups1", "10ms", "count = 40\nevent_every = 20"),
        ),
    )
    .unwrap();
    let cfg = wardgate::config::Config::load(&cfg_path, true).unwrap();
    let gw = Gateway::start(cfg).await;
    // The second event (after the 20th and the 40th sample) is raised
    // right after the last sample was kept. (The spool's own counters count
    // the `pi` and `gateway` records too, so they cannot say this.)
    eventually(WAIT, "40 samples read", || ups_events(&gw, "ups1") >= 2).await;
    gw.stop().await;
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wardgate"))
            .args(args)
            .arg("--config")
            .arg(&cfg_path)
            .output()
            .unwrap()
    };
    let out = run(&["spool", "stats"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["clean_stop"], true);
    let ups = stats["backlog"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["device"] == "ups1" && r["kind"] == "sample")
        .expect("ups1 samples in the backlog")
        .clone();
    assert_eq!(ups["records"], 40);
    assert_eq!(
        (ups["first_seq"].as_i64(), ups["last_seq"].as_i64()),
        (Some(0), Some(39))
    );

    let file = dir.path().join("export.jsonl");
    let out = run(&["spool", "export", "-o", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, stats["records"].as_u64().unwrap());
    let ups_seqs: Vec<i64> = lines
        .iter()
        .filter(|l| l["device"] == "ups1" && l["kind"] == "sample")
        .map(|l| l["record"]["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(ups_seqs, (0..40).collect::<Vec<i64>>());
    assert!(lines
        .iter()
        .any(|l| l["kind"] == "event" && l["record"]["code"] == "ups.on_battery"));
    // A spool that is not there is a clear error, not a new empty file.
    std::fs::remove_file(dir.path().join("spool.db")).unwrap();
    let out = run(&["spool", "stats"]);
    assert_eq!(out.status.code(), Some(74));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no spool there"));
}
