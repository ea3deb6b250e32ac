//! `wardgate-ioc send` (the binary) against a real mosquitto and a real
//! gateway (the binary: `WARDGATE_BIN`, else the workspace's build) with a
//! simulated UPS and commands on: `status` and `poll` answered, each
//! refusal the contract documents (not allowed, unknown op, expired,
//! malformed args, no such device), an unknown site, a site that takes no
//! commands, a site whose gateway is gone (no reply in time), a broker
//! that is not there.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

use super::ingest_gateway::gateway_bin;
use super::ingest_peers::{free_port, publish, Broker, Proc};

const SITE: &str = "xa-cli";

/// What a run of the binary gave.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `wardgate-ioc <args>` to its end.
pub fn ioc(args: &[&str]) -> Out {
    let o = Command::new(env!("CARGO_BIN_EXE_wardgate-ioc"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("wardgate-ioc");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// An ioc.toml for the broker on `port` (its store is never opened by
/// `send`).
fn ioc_config(dir: &Path, port: u16) -> PathBuf {
    let p = dir.join("ioc.toml");
    std::fs::write(
        &p,
        format!(
            "[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"ioc-cli\"\n[store]\npath = \"{}\"\n",
            dir.join("ioc.sqlite").display()
        ),
    )
    .expect("ioc.toml");
    p
}

/// The retained message on `topic`, waiting up to `within` for it.
fn retained(port: u16, topic: &str, within: Duration) -> Option<Vec<u8>> {
    let o = MqttOptions::new(format!("probe-{}", free_port()), "127.0.0.1", port);
    let (client, mut conn) = Client::new(o, 10);
    client
        .subscribe(topic, QoS::AtLeastOnce)
        .expect("subscribe");
    let deadline = std::time::Instant::now() + within;
    let mut got = None;
    while std::time::Instant::now() < deadline {
        match conn.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) if p.topic == topic => {
                got = Some(p.payload.to_vec());
                break;
            }
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(_)) => super::ingest_peers::pause(Duration::from_millis(200)),
        }
    }
    let _ = client.disconnect();
    got
}

/// A real gateway for `SITE` with a simulated UPS and commands on (the
/// clock trusted, so `expires` is judged).
fn start_gateway(bin: &Path, dir: &Path, port: u16) -> Proc {
    let conf = dir.join("wardgate.toml");
    std::fs::write(
        &conf,
        format!(
            "site = \"{SITE}\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n[spool]\npath = \"{}\"\n[web]\nlisten = \"127.0.0.1:0\"\n[led]\nbackend = \"none\"\n[commands]\ntrust_clock = true\n[[device]]\nid = \"ups1\"\ntype = \"sim\"\ninterval = \"200ms\"\nprofile = \"ups\"\n",
            dir.join("spool.db").display()
        ),
    )
    .expect("wardgate.toml");
    let log = std::fs::File::create(dir.join("wardgate.log")).expect("log");
    Proc(Some(
        Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(&conf)
            .arg("--remote-change-policy")
            .arg(dir.join("remote-change.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("wardgate"),
    ))
}

#[test]
fn send_commands_to_a_real_gateway() {
    let bin = gateway_bin().expect(
        "no gateway binary: run `cargo test --workspace` (scripts/test), or set WARDGATE_BIN",
    );
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("dir");
    let cfg = ioc_config(dir.path(), broker.port);
    let cfg = cfg.to_str().expect("utf-8 path");
    let mut gw = start_gateway(&bin, dir.path(), broker.port);
    let inv = retained(
        broker.port,
        &format!("ioc/{SITE}/inventory"),
        Duration::from_secs(60),
    );
    assert!(inv.is_some(), "the gateway published no inventory");
    let send = |args: &[&str]| {
        let mut all = vec!["send", "--config", cfg];
        all.extend_from_slice(args);
        ioc(&all)
    };

    let o = send(&[SITE, "status"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.starts_with("accepted\nexecuting\nsuccessful\n{"),
        "{o:?}"
    );
    assert!(o.stdout.contains(SITE), "the status names the site: {o:?}");
    assert!(o.stderr.contains("sent status to xa-cli, id "), "{o:?}");

    let o = send(&[SITE, "poll", "device=ups1"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("\"device\": \"ups1\""), "{o:?}");
    assert!(o.stdout.contains("\"ups.status\""), "{o:?}");

    // --json: one reply a line, the contract's shape, in the workflow's order.
    let o = send(&["--json", SITE, "poll", r#"{"device":"ups1"}"#]);
    assert_eq!(o.code, 0, "{o:?}");
    let statuses: Vec<String> = o
        .stdout
        .lines()
        .map(|l| {
            let r = wardgate_contract::Reply::decode(l.as_bytes()).expect("a reply");
            r.status.as_str().to_owned()
        })
        .collect();
    assert_eq!(statuses, ["accepted", "executing", "successful"], "{o:?}");

    let refusals: &[(&[&str], &str, &str)] = &[
        (
            &[SITE, "restart"],
            "rejected: op restart is not allowed on this gateway ([commands] allow)",
            "expect a rejection",
        ),
        (
            &[SITE, "reboot.now"],
            "rejected: unknown op \"reboot.now\"",
            "xa-cli rejected reboot.now",
        ),
        (
            &["--expires-in", "0s", SITE, "status"],
            "rejected: expired: expires ",
            "xa-cli rejected status: expired",
        ),
        (
            &[SITE, "identify", "seconds=5"],
            "rejected: malformed args for identify",
            "hint: seconds=5 sent the string \"5\"; seconds:=5 sends 5",
        ),
        (
            &[SITE, "poll", "device=nope"],
            "failed: ",
            "xa-cli failed poll",
        ),
    ];
    for (args, stdout, stderr) in refusals {
        let o = send(args);
        assert_eq!(o.code, 1, "{args:?}: {o:?}");
        assert!(o.stdout.contains(stdout), "{args:?}: {o:?}");
        assert!(o.stderr.contains(stderr), "{args:?}: {o:?}");
    }
    let o = send(&[SITE, "identify", "seconds:=1"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("\"seconds\": 1"), "{o:?}");

    // Not a site of this broker: nothing sent.
    let o = send(&["xa-none", "status"]);
    assert_eq!(o.code, 68, "{o:?}");
    assert!(o.stderr.contains("unknown site xa-none"), "{o:?}");
    assert!(!o.stderr.contains("send: sent"), "{o:?}");
    // A site whose inventory says it takes no commands: nothing sent.
    let inv = r#"{"site":"xa-off","version":"0.1.0","boot_id":"b","run_id":"r","started":1,"config_hash":"sha256:00","clock":"synced","devices":[],"sinks":["mqtt"],"commands":{"enabled":false,"allow":[]}}"#;
    publish(
        broker.port,
        &[("ioc/xa-off/inventory".to_owned(), inv.as_bytes().to_vec())],
    );
    let o = send(&["xa-off", "status"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("xa-off takes no commands"), "{o:?}");
    assert!(!o.stderr.contains("send: sent"), "{o:?}");
    let o = send(&["XA", "status"]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.stderr.contains("is not a site id"), "{o:?}");
    let o = send(&[SITE, "poll", "ups1"]);
    assert_eq!(o.code, 2, "{o:?}");

    // The gateway gone (its retained inventory stays): no reply in time.
    drop(gw.0.take().map(|mut c| {
        let _ = c.kill();
        c.wait()
    }));
    let o = send(&["--timeout", "2s", SITE, "status"]);
    assert_eq!(o.code, 75, "{o:?}");
    assert!(o.stderr.contains("no reply from xa-cli within 2s"), "{o:?}");
    assert_eq!(o.stdout, "", "{o:?}");

    // No broker.
    let other = dir.path().join("no-broker");
    std::fs::create_dir(&other).expect("dir");
    let cfg2 = ioc_config(&other, free_port());
    let o = ioc(&[
        "send",
        "--config",
        cfg2.to_str().expect("utf-8"),
        SITE,
        "status",
    ]);
    assert_eq!(o.code, 69, "{o:?}");
    assert!(o.stderr.contains("the broker"), "{o:?}");
}
