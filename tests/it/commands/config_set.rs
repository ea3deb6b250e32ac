//! `config.set`: a change refused then applied, rolled back when it cuts
//! the link or when every start is killed, and no way to send secrets
//! away or run programs through it; the gateway runs under a stand-in
//! for systemd ([`LikeSystemd`]) that restarts it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::common::*;

/// What systemd does with `Restart=on-failure`: starts wardgate again when
/// it exits non-zero (75 after `restart` or `config.set`); counts the
/// starts.
struct LikeSystemd {
    starts: Arc<std::sync::atomic::AtomicU32>,
    cancel: CancellationToken,
}

impl LikeSystemd {
    fn start(cfg: std::path::PathBuf, log: std::path::PathBuf) -> LikeSystemd {
        use std::sync::atomic::Ordering;
        let starts = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let cancel = CancellationToken::new();
        let (s, c) = (starts.clone(), cancel.clone());
        tokio::spawn(async move {
            loop {
                let mut p = Process::start(&cfg, &log);
                s.fetch_add(1, Ordering::SeqCst);
                let code = loop {
                    if c.is_cancelled() {
                        return; // the process is killed on drop
                    }
                    if let Some(st) = p.child.try_wait().unwrap() {
                        break st.code();
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                if code == Some(0) || code == Some(78) {
                    return;
                }
            }
        });
        LikeSystemd { starts, cancel }
    }

    fn starts(&self) -> u32 {
        self.starts.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for LikeSystemd {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Starts wardgate as systemd would ([`LikeSystemd`], log in `dir/gw.log`)
/// on the broker at `broker_port`, with `config.get` and `config.set`
/// allowed, `confirm_within = "10s"` and one simulated device, ups1, read
/// hourly; waits until it is connected. Returns the config's path, its
/// text and the run.
async fn config_set_gateway(
    dir: &std::path::Path,
    broker_port: u16,
) -> (std::path::PathBuf, String, LikeSystemd) {
    let extra = cmd_config(&["config.get", "config.set"], &sim("ups1", "1h", "")).replace(
        "trust_clock = true",
        "trust_clock = true\nconfirm_within = \"10s\"",
    );
    let cfg = process_config(dir, broker_port, &extra);
    let old = std::fs::read_to_string(&cfg).unwrap();
    let run = LikeSystemd::start(cfg.clone(), dir.join("gw.log"));
    eventually(WAIT, "connected", || {
        std::fs::read_to_string(dir.join("gw.log"))
            .unwrap_or_default()
            .contains("MQTT connected")
    })
    .await;
    (cfg, old, run)
}

/// config.set: a stale base_hash, an invalid config and a broker change
/// without allow_broker_change are refused and change nothing; a good
/// change is written, the gateway restarts into it, confirms it (broker
/// and a reading from each device) and replies successful from the new
/// config, whose hash the inventory then names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_set_refuses_then_applies_a_change() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let ioc = Ioc::start(broker.port, &test_site(), None).await;
    let (cfg, old, run) = config_set_gateway(dir.path(), broker.port).await;
    ioc.send("config.get", "g1", json!({})).await;
    let hash = ioc.final_reply("g1").await["result"]["hash"].clone();
    assert_eq!(hash, json!(sha256(&old)));
    let hash = hash.as_str().unwrap().to_owned();

    let refusals = [
        (
            "s1",
            json!({"toml": old.clone(), "base_hash": "sha256:00"}),
            "not the running config's hash",
        ),
        (
            "s2",
            json!({"toml": format!("{old}\ncolour = 1\n"), "base_hash": hash}),
            "not valid",
        ),
        (
            "s3",
            json!({"toml": old.replace("[mqtt]\n", "[mqtt]\nprefix = \"ioc2\"\n"), "base_hash": hash}),
            "allow_broker_change",
        ),
    ];
    for (id, args, why) in &refusals {
        ioc.send("config.set", id, args.clone()).await;
        let r = ioc.final_reply(id).await;
        assert_eq!(r["status"], "failed", "{r}");
        assert!(r["reason"].as_str().unwrap().contains(why), "{why}: {r}");
    }
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        old,
        "nothing changed"
    );
    assert_eq!(run.starts(), 1, "no restart");

    let new = old.replace("interval = \"1h\"", "interval = \"2s\"");
    assert_ne!(new, old);
    ioc.send("config.set", "ok1", json!({"toml": new, "base_hash": hash}))
        .await;
    let r = ioc.final_reply("ok1").await;
    assert_eq!(r["status"], "successful", "{r}");
    assert_eq!(r["result"]["hash"], json!(sha256(&new)));
    assert_eq!(r["result"]["previous_hash"], json!(hash));
    assert_eq!(run.starts(), 2, "restarted into the new config once");
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), new);
    eventually(WAIT, "the inventory names the new config", || {
        sub.all().iter().any(|m| {
            m.topic.ends_with("/inventory") && m.body["config_hash"] == json!(sha256(&new))
        })
    })
    .await;
    sub.assert_all_valid();
}

/// config.set to a broker that is not there (allowed): the new run cannot
/// connect, the previous config is put back after confirm_within, the
/// gateway restarts into it and replies failed with what went wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_set_that_cuts_the_link_rolls_back() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let ioc = Ioc::start(broker.port, &test_site(), None).await;
    let (cfg, old, run) = config_set_gateway(dir.path(), broker.port).await;
    ioc.send("config.get", "g1", json!({})).await;
    let hash = ioc.final_reply("g1").await["result"]["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    // Moving the broker is refused by the built-in remote-change policy;
    // root widens it with a file only root can write.
    if !is_root() {
        skip(&this_test(), "the remote-change policy file must be root's");
        return;
    }
    std::fs::write(
        dir.path().join("remote-change.toml"),
        "allow = [\"mqtt.port\"]\n",
    )
    .unwrap();
    // Nothing listens there, and no other test's mosquitto can start to.
    let no_broker = closed_port();
    let dead = old.replace(
        &format!("port = {}", broker.port),
        &format!("port = {}", no_broker.port),
    );
    let started = std::time::Instant::now();
    ioc.send(
        "config.set",
        "cut1",
        json!({"toml": dead, "base_hash": hash, "allow_broker_change": true}),
    )
    .await;
    let r = ioc.final_reply("cut1").await;
    assert_eq!(r["status"], "failed", "{r}");
    let why = r["reason"].as_str().unwrap();
    assert!(
        why.contains("rolled back") && why.contains("no connection to the broker"),
        "{r}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "after confirm_within"
    );
    assert_eq!(r["result"]["hash"], json!(hash), "from the old config");
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), old, "restored");
    assert_eq!(run.starts(), 3, "new config, then the old one again");
}

/// A loopback listener that records every connection made to it; with
/// `upsd`, it answers like a upsd whose UPS is on battery and low
/// (`OB LB`) to every `LIST VAR`, so a `[power]` pointed at it would shut
/// the box down.
struct Recorder {
    port: u16,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start(upsd: bool) -> Recorder {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let (r, mut w) = s.into_split();
                    let mut lines = tokio::io::BufReader::new(r).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let answer = match line.strip_prefix("LIST VAR ") {
                            Some(ups) if upsd => format!(
                                "BEGIN LIST VAR {ups}\nVAR {ups} ups.status \"OB LB\"\nVAR {ups} battery.charge \"3\"\nEND LIST VAR {ups}\n"
                            ),
                            _ if upsd => "OK\n".to_owned(),
                            _ => continue,
                        };
                        if w.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Recorder {
            port,
            connections,
            task,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The two `config.set` takeovers end to end. One adds a
/// NUT device that logs in to a upsd of the sender's with a secret file of
/// the box, and an InfluxDB at the sender's address with another secret
/// as its token; the other points `[power]` at a upsd that says "on
/// battery, low" and makes `shutdown_command` a shell. Both are rejected
/// by the built-in remote-change policy, naming each refused key: nothing
/// is written, no restart, nothing reaches either listener, nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_set_cannot_send_secrets_away_or_run_programs() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let ioc = Ioc::start(broker.port, &test_site(), None).await;
    let (cfg, old, run) = config_set_gateway(dir.path(), broker.port).await;
    let hash = ioc.running_hash().await;
    let (upsd, https) = (Recorder::start(true).await, Recorder::start(false).await);
    for name in ["a.secret", "b.secret"] {
        std::fs::write(dir.path().join(name), "the-box-secret\n").unwrap();
    }
    let secret = |n: &str| dir.path().join(n).display().to_string();
    let leak = format!(
        "{old}\n[[device]]\nid = \"evil\"\ntype = \"nut\"\nhost = \"127.0.0.1\"\nport = {}\nups = \"x\"\nusername = \"u\"\npassword_file = \"{}\"\n\
         [influxdb]\nurl = \"https://127.0.0.1:{}\"\norg = \"o\"\nbucket = \"b\"\ntoken_file = \"{}\"\n",
        upsd.port,
        secret("a.secret"),
        https.port,
        secret("b.secret")
    );
    let marker = dir.path().join("ran");
    let takeover = format!(
        "{old}\n[[device]]\nid = \"ups9\"\ntype = \"nut\"\nhost = \"127.0.0.1\"\nport = {}\nups = \"x\"\ninterval = \"1s\"\n\
         [power]\nups = \"ups9\"\nshutdown_command = [\"/bin/sh\", \"-c\", \"touch {}\"]\nups_off_delay = \"0s\"\n",
        upsd.port,
        marker.display()
    );
    for (id, toml, keys) in [
        (
            "leak",
            leak,
            &[
                "device.evil.password_file",
                "device.evil.username",
                "influxdb.token_file",
                "influxdb.url",
            ][..],
        ),
        (
            "power",
            takeover,
            &["power.shutdown_command", "power.ups", "power.ups_off_delay"][..],
        ),
    ] {
        // Each is a valid config: only the policy stands in the way.
        wardgate::config::Config::from_toml(&toml).unwrap();
        ioc.send("config.set", id, json!({"toml": toml, "base_hash": hash}))
            .await;
        let r = ioc.final_reply(id).await;
        assert_eq!(r["status"], "rejected", "{r}");
        let why = r["reason"].as_str().unwrap();
        assert!(why.contains("remote change policy"), "{why}");
        for k in keys {
            assert!(why.contains(k), "{k} not named: {why}");
        }
        assert!(
            !why.contains("device.ups9"),
            "a UPS on loopback may be added: {why}"
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        old,
        "nothing written"
    );
    assert!(!dir.path().join(".wardgate.toml.change.json").exists());
    assert_eq!(run.starts(), 1, "no restart");
    assert_eq!(upsd.connections(), 0, "nothing reached the sender's upsd");
    assert_eq!(
        https.connections(),
        0,
        "nothing reached the sender's database"
    );
    assert!(!marker.exists(), "the shell ran");
}

/// A new config that gets the gateway killed (OOM, the
/// watchdog) before it can confirm or roll back does not loop for ever
/// with a fresh window at each start. The change here can never confirm
/// (its new UPS does not answer), and each run with it is killed with
/// SIGKILL soon after it starts confirming, long before confirm_within
/// (10 s); the fourth start puts the previous config back before loading,
/// and that run replies `failed`, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_set_killed_at_every_start_rolls_back() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let ioc = Ioc::start(broker.port, &test_site(), None).await;
    let extra = cmd_config(&["config.get", "config.set"], &sim("ups1", "1h", "")).replace(
        "trust_clock = true",
        "trust_clock = true\nconfirm_within = \"10s\"",
    );
    let cfg = process_config(dir.path(), broker.port, &extra);
    let old = std::fs::read_to_string(&cfg).unwrap();
    let log = dir.path().join("gw.log");
    let mut gw = Process::start(&cfg, &log);
    connected(&gw, 0).await;
    let hash = ioc.running_hash().await;
    let silent = closed_port();
    let new = format!(
        "{old}\n[[device]]\nid = \"ups2\"\ntype = \"nut\"\nport = {}\nups = \"x\"\ninterval = \"1s\"\ntimeout = \"200ms\"\n",
        silent.port
    );
    ioc.send("config.set", "k1", json!({"toml": new, "base_hash": hash}))
        .await;
    assert_eq!(gw.wait(WAIT).await, Some(75), "restarts into the change");
    for n in 1..=3 {
        let from = gw.log_text().len();
        gw = Process::start(&cfg, &log);
        eventually(WAIT, "the run confirms the change", || {
            gw.log_text()
                .get(from..)
                .is_some_and(|t| t.contains("running a changed config"))
        })
        .await;
        assert_eq!(std::fs::read_to_string(&cfg).unwrap(), new, "start {n}");
        gw.signal(9);
        gw.wait(WAIT).await;
    }
    let from = gw.log_text().len();
    let started = std::time::Instant::now();
    let _gw = Process::start(&cfg, &log);
    let r = ioc.final_reply("k1").await;
    assert_eq!(r["status"], "failed", "{r}");
    let why = r["reason"].as_str().unwrap();
    assert!(why.contains("started 3 times"), "{why}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "rolled back at start, not after another window"
    );
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), old, "restored");
    assert!(_gw.log_text()[from..].contains("rolled back at start"));
}
