//! Real peers for the ingest tests, each on a loopback port of its own
//! with its data in a temp dir, stopped when dropped: mosquitto,
//! VictoriaMetrics, the wardgate-ioc binary (its pages on a port of its
//! own), and a QoS 1 publisher of the load generator's traffic. Synchronous (threads and deadlines), so no
//! await can hang a test.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wardgate_ioc::ledger::{Ledger, LedgerConfig, SiteTotals};
use wardgate_ioc::store::{SqliteStore, Store};

pub const WAIT: Duration = Duration::from_secs(60);

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Sleeps this test's thread (these tests run no tokio runtime: there is
/// no worker to block).
#[allow(clippy::disallowed_methods)]
pub fn pause(d: Duration) {
    std::thread::sleep(d);
}

/// Polls `f` every 50 ms until it is true or `within` passed.
pub fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        pause(Duration::from_millis(50));
    }
}

fn answers(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc(pub Option<Child>);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A real mosquitto, with persistence (a restart keeps the sessions).
pub struct Broker {
    pub port: u16,
    dir: tempfile::TempDir,
    /// Lines after the listener's (TLS, passwords).
    extra: String,
    p: Proc,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with("allow_anonymous true\n")
    }

    /// `extra`: the listener's settings.
    pub fn start_with(extra: &str) -> Broker {
        let mut b = Broker {
            port: 0,
            dir: tempfile::tempdir().expect("temp dir"),
            extra: extra.to_owned(),
            p: Proc(None),
        };
        for _ in 0..10 {
            b.port = free_port();
            if b.spawn() {
                return b;
            }
        }
        panic!("mosquitto found no free port");
    }

    /// Starts mosquitto on `self.port`; false if the port was taken.
    fn spawn(&mut self) -> bool {
        let d = self.dir.path().display();
        let conf = self.dir.path().join("mosquitto.conf");
        let text = format!(
            "per_listener_settings false\nuser root\npersistence true\npersistence_location {d}/\nmax_queued_messages 0\nmax_inflight_messages 0\nlog_dest file {d}/mosquitto.log\nlog_type all\nlistener {} 127.0.0.1\n{}",
            self.port, self.extra
        );
        std::fs::write(&conf, text).expect("mosquitto.conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (apt-get install mosquitto)");
        self.p = Proc(Some(child));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(c) = self.p.0.as_mut() {
                if c.try_wait().ok().flatten().is_some() {
                    self.p.0 = None;
                    return false;
                }
            }
            if answers(self.port) {
                return true;
            }
            assert!(Instant::now() < deadline, "mosquitto did not start");
            pause(Duration::from_millis(30));
        }
    }

    /// A clean stop (SIGTERM: sessions and queues saved), then a start on
    /// the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// A clean stop (SIGTERM: sessions and queues saved).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.p.0.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    /// A start on the same port after `stop`.
    pub fn start_again(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(Instant::now() < deadline, "port {} taken", self.port);
            pause(Duration::from_millis(100));
        }
    }
}

/// A real VictoriaMetrics.
pub struct Vm {
    pub port: u16,
    _dir: tempfile::TempDir,
    _p: Proc,
}

impl Vm {
    pub fn start() -> Vm {
        for _ in 0..10 {
            if let Some(vm) = Vm::start_on(free_port()) {
                return vm;
            }
        }
        panic!("victoria-metrics found no free port");
    }

    /// A VictoriaMetrics on `port`; `None` if the port was taken.
    pub fn start_on(port: u16) -> Option<Vm> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new("/usr/bin/victoria-metrics")
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!(
                "-storageDataPath={}",
                dir.path().join("data").display()
            ))
            .arg("-loggerLevel=ERROR")
            .arg("-search.disableCache")
            // The load generator's readings are dated late 2026: without
            // this they would fall out of the default month's retention.
            .arg("-retentionPeriod=100y")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("victoria-metrics (apt-get install victoria-metrics)");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if child.try_wait().ok().flatten().is_some() {
                return None;
            }
            if http_get(port, "/health").is_some_and(|(s, _)| s == 200) {
                return Some(Vm {
                    port,
                    _dir: dir,
                    _p: Proc(Some(child)),
                });
            }
            assert!(Instant::now() < deadline, "victoria-metrics did not start");
            pause(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every series whose name matches the regex `name_re`, after a flush:
    /// labels (with `__name__`) -> timestamps (ms) and values.
    pub fn export(&self, name_re: &str) -> Series {
        self.export_matching(&format!("{{__name__=~\"{name_re}\"}}"))
    }

    /// Every series matching a selector (`{__name__=~"…",device="ups1"}`).
    pub fn export_matching(&self, selector: &str) -> Series {
        let (s, _) = http_get(self.port, "/internal/force_flush").expect("flush");
        assert_eq!(s, 200);
        let q: String = selector
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let (s, body) =
            http_get(self.port, &format!("/api/v1/export?match[]={q}")).expect("export");
        assert_eq!(s, 200, "{body}");
        let mut out = Series::new();
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).expect("export line");
            let labels: BTreeMap<String, String> = v["metric"]
                .as_object()
                .expect("metric")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                .collect();
            let ts = v["timestamps"].as_array().expect("timestamps");
            let vals = v["values"].as_array().expect("values");
            let pts: Vec<(i64, f64)> = ts
                .iter()
                .zip(vals)
                .map(|(t, x)| (t.as_i64().unwrap_or(0), x.as_f64().unwrap_or(f64::NAN)))
                .collect();
            out.entry(labels).or_default().extend(pts);
        }
        out
    }
}

pub type Series = BTreeMap<BTreeMap<String, String>, Vec<(i64, f64)>>;

/// Samples in all, and distinct (series, timestamp) pairs.
pub fn counts(s: &Series) -> (usize, usize) {
    let all = s.values().map(Vec::len).sum();
    let distinct = s
        .values()
        .map(|v| v.iter().map(|p| p.0).collect::<BTreeSet<_>>().len())
        .sum();
    (all, distinct)
}

/// A plain HTTP/1.0 GET on loopback: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_owned();
    Some((status, body))
}

/// A wardgate-ioc process (the binary), its log in its dir.
pub struct Ioc {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub store: PathBuf,
    /// The loopback port of its pages and `/metrics` (`web.listen`).
    pub web: u16,
    p: Proc,
}

impl Ioc {
    /// Writes a config into `dir` and starts `wardgate-ioc run`.
    pub fn start(
        dir: &Path,
        broker: u16,
        client_id: &str,
        group: Option<&str>,
        tsdb: Option<&str>,
    ) -> Ioc {
        let store = dir.join("ioc.sqlite");
        let mut text = format!(
            "[mqtt]\nhost = \"127.0.0.1\"\nport = {broker}\nprefix = \"ioc\"\nclient_id = \"{client_id}\"\n"
        );
        if let Some(g) = group {
            text.push_str(&format!("shared_group = \"{g}\"\n"));
        }
        text.push_str(&format!("[store]\npath = \"{}\"\n", store.display()));
        if let Some(u) = tsdb {
            text.push_str(&format!(
                "[tsdb]\nurl = \"{u}\"\nbatch = 500\ntimeout = \"5s\"\n"
            ));
        }
        text.push_str("[ingest]\ncommit_interval = \"50ms\"\ncommit_messages = 200\n");
        let web = free_port();
        text.push_str(&format!("[web]\nlisten = \"127.0.0.1:{web}\"\n"));
        let config = dir.join("ioc.toml");
        std::fs::write(&config, text).expect("ioc.toml");
        let mut ioc = Ioc {
            dir: dir.to_owned(),
            config,
            store,
            web,
            p: Proc(None),
        };
        ioc.restart();
        ioc
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("ioc.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the process again (appending to its log).
    pub fn restart(&mut self) {
        assert!(self.p.0.is_none(), "running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_wardgate-ioc"))
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info,wardgate_ioc=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("wardgate-ioc");
        let connected = self.log().matches("MQTT connected").count();
        self.p.0 = Some(child);
        let ioc = &*self;
        wait_for("wardgate-ioc to connect and subscribe", WAIT, || {
            let log = ioc.log();
            assert!(!log.contains("ERROR"), "{log}");
            log.matches("MQTT connected").count() > connected && log.contains("subscribed")
        });
    }

    /// GET `path` of its pages: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.web, path).unwrap_or_else(|| panic!("GET {path}: no answer"))
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.p.0.take() {
            c.kill().expect("SIGKILL");
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit (0).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.p.0.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(st) = c.try_wait().expect("wait") {
                    assert!(st.success(), "wardgate-ioc exited {st}: {}", self.log());
                    return;
                }
                assert!(Instant::now() < deadline, "wardgate-ioc did not stop");
                pause(Duration::from_millis(20));
            }
        }
    }

    /// The ledger and counts as committed (read while it runs: WAL).
    pub fn committed(&self) -> (Ledger, u64, u64) {
        committed(&self.store)
    }
}

/// The ledger saved in a store, the messages committed, the points waiting.
pub fn committed(path: &Path) -> (Ledger, u64, u64) {
    let mut s = SqliteStore::open(path).expect("store");
    let l = s.load().expect("load");
    let waiting = s.outbox_len().expect("outbox");
    let ledger =
        Ledger::restore(LedgerConfig::default(), Default::default(), l.state).expect("restore");
    (ledger, l.messages, waiting)
}

/// Publishes every message QoS 1 (status retained, as the gateway does)
/// and returns when the broker acknowledged all of them.
pub fn publish(port: u16, messages: &[(String, Vec<u8>)]) {
    use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};
    let mut o = MqttOptions::new(format!("pub-{}", free_port()), "127.0.0.1", port);
    o.set_max_packet_size(16 << 20, 16 << 20);
    o.set_inflight(100);
    let (client, mut conn) = Client::new(o, 256);
    let msgs: Vec<_> = messages.to_vec();
    let n = msgs.len();
    let sender = std::thread::spawn(move || {
        for (t, p) in msgs {
            let retain = t.ends_with("/status") || t.ends_with("/inventory");
            client
                .publish(t, QoS::AtLeastOnce, retain, p)
                .expect("publish");
        }
        client
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut acked = 0;
    while acked < n {
        assert!(
            Instant::now() < deadline,
            "publisher: {acked}/{n} acknowledged"
        );
        match conn.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(Event::Outgoing(Outgoing::Publish(_)) | _)) => {}
            Ok(Err(e)) => panic!("publisher: {e}"),
            Err(_) => panic!("publisher: no event in 10 s ({acked}/{n})"),
        }
    }
    let client = sender.join().expect("sender");
    let _ = client.disconnect();
}

/// The totals that must not depend on how the messages arrived (restarts,
/// redeliveries): everything but the duplicate count.
pub fn firm(t: &SiteTotals) -> SiteTotals {
    SiteTotals {
        duplicates: 0,
        ..*t
    }
}
