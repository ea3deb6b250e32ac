//! The InfluxDB sink (issue 12): readings into VictoriaMetrics (a real
//! server that accepts `/api/v2/write`) beside MQTT, each sink on its own
//! spool lane; the error classes against a small scripted HTTP server
//! (VictoriaMetrics never answers 401/413/422/429/5xx); and a kill -9 with
//! the database down.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::common::*;

/// A VictoriaMetrics on a loopback port of its own, data in a temp dir.
pub struct Vm {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Vm {
    pub fn start() -> Vm {
        let dir = tempfile::tempdir().unwrap();
        let mut vm = Vm {
            port: 0,
            dir,
            child: None,
        };
        vm.start_on(None);
        vm
    }

    /// Starts it (again), on `port` or a free one; waits for `/health`.
    fn start_on(&mut self, port: Option<u16>) {
        for _ in 0..5 {
            // free_port: VictoriaMetrics cannot report a port 0 it bound;
            // a port taken meanwhile shows as an early exit, and another
            // port is tried (unless the port was asked for).
            let p = port.unwrap_or_else(free_port);
            let log = std::fs::File::create(self.dir.path().join("vm.log")).unwrap();
            let child = Command::new("/usr/bin/victoria-metrics")
                .arg(format!("-httpListenAddr=127.0.0.1:{p}"))
                .arg(format!(
                    "-storageDataPath={}",
                    self.dir.path().join("data").display()
                ))
                .arg("-loggerLevel=ERROR")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("victoria-metrics (apt install victoria-metrics; scripts/test does)");
            self.child = Some(child);
            self.port = p;
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Some(c) = self.child.as_mut() {
                    if c.try_wait().unwrap().is_some() {
                        break;
                    }
                }
                if std::net::TcpStream::connect(("127.0.0.1", p)).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            self.stop();
            assert!(port.is_none(), "victoria-metrics did not start on {p}");
        }
        panic!("victoria-metrics did not start");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A clean stop (SIGTERM): what it acknowledged is on its disk (a
    /// SIGKILL would lose its last second of writes, which is the
    /// database's durability, not the gateway's).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn start_again(&mut self) {
        let p = self.port;
        self.start_on(Some(p));
    }

    /// Every series matching `selector`, after a flush: (labels, samples
    /// by timestamp).
    pub async fn export(&self, selector: &str) -> Vec<(BTreeMap<String, String>, Vec<(i64, f64)>)> {
        let (s, _) = self.get("/internal/force_flush").await;
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
        let (s, body) = self.get(&format!("/api/v1/export?match[]={q}")).await;
        assert_eq!(s, 200, "{body}");
        let mut out = Vec::new();
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap();
            let labels = v["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                .collect();
            let ts = v["timestamps"].as_array().unwrap();
            let vals = v["values"].as_array().unwrap();
            let pts = ts
                .iter()
                .zip(vals)
                .map(|(t, x)| (t.as_i64().unwrap(), x.as_f64().unwrap_or(f64::NAN)))
                .collect();
            out.push((labels, pts));
        }
        out
    }

    /// An HTTP/1.0 GET (no chunked answer): status and body.
    async fn get(&self, path: &str) -> (u16, String) {
        let mut s = within(
            Duration::from_secs(5),
            "connect to victoria-metrics",
            tokio::net::TcpStream::connect(("127.0.0.1", self.port)),
        )
        .await
        .unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = Vec::new();
        within(
            Duration::from_secs(20),
            "victoria-metrics answer",
            s.read_to_end(&mut buf),
        )
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&buf).into_owned();
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|x| x.1)
            .unwrap_or("")
            .to_owned();
        (code, body)
    }

    /// The sample seqs of `device` in the database (`telemetry_seq`), with
    /// their timestamps.
    pub async fn seqs(&self, site: &str, device: &str) -> BTreeMap<u64, i64> {
        let mut out = BTreeMap::new();
        for (_, pts) in self
            .export(&format!(
                "telemetry_seq{{site=\"{site}\",device=\"{device}\"}}"
            ))
            .await
        {
            for (t, v) in pts {
                out.insert(v as u64, t);
            }
        }
        out
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop();
    }
}

fn influx_section(url: &str, extra: &str) -> String {
    format!(
        "[influxdb]\nurl = \"{url}\"\norg = \"ioc\"\nbucket = \"wards\"\ngzip = true\ntimeout = \"3s\"\n{extra}\n"
    )
}

fn influx_status(gw: &Gateway) -> wardgate::sink::influx::InfluxStatus {
    // None until the sink has started (just after the gateway said ready).
    gw.status.get().influxdb.unwrap_or_default()
}

/// Sim devices -> both sinks: every reading MQTT delivered is in the
/// database with the right tags and fields (numbers as they are, booleans
/// as 1/0 and strings present: VictoriaMetrics keeps numbers only), events
/// with their tags, the gateway's own telemetry like any device; every MQTT
/// message still schema-valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_every_reading_in_both_sinks() {
    let vm = Vm::start();
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    let site = test_site();
    let extra = format!(
        "{}{}{}[gateway]\ntelemetry_interval = \"500ms\"\n",
        influx_section(&vm.url(), ""),
        sim("ups1", "20ms", "event_every = 10"),
        sim("env1", "30ms", "profile = \"sensor\"\nevent_every = 25"),
    );
    let gw = Gateway::start(config(broker.port, dir.path(), &extra)).await;
    eventually(WAIT, "100 samples of each device over MQTT", || {
        sub.seqs("ups1").len() >= 100 && sub.seqs("env1").len() >= 100
    })
    .await;
    eventually(WAIT, "InfluxDB written to", || {
        influx_status(&gw).written >= 200
    })
    .await;
    // A command's reply travels through the spool like an event, on both
    // lanes: the MQTT sink publishes it, the InfluxDB sink skips it.
    let expires = wardgate::model::now_ms() + 60_000;
    let sent = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1"])
        .args(["-t", &format!("ioc/{site}/cmd/status/inf-1")])
        .args(["-m", &format!("{{\"expires\":{expires},\"args\":{{}}}}")])
        .status()
        .unwrap();
    assert!(sent.success());
    let written_before = influx_status(&gw).written;
    eventually(WAIT, "the command's final reply over MQTT", || {
        sub.all().iter().any(|m| {
            m.topic.ends_with("/cmd/status/inf-1/reply") && m.body["status"] == "successful"
        })
    })
    .await;
    eventually(WAIT, "InfluxDB written to after the reply", || {
        influx_status(&gw).written > written_before + 20
    })
    .await;
    gw.stop().await;
    sub.assert_all_valid();
    let replies = vm
        .export(&format!(
            "{{site=\"{site}\",device=\"{}\"}}",
            wardgate::command::REPLY_DEVICE
        ))
        .await;
    assert!(
        replies.is_empty(),
        "command replies written to InfluxDB: {replies:?}"
    );

    for (dev, ty_) in [("ups1", "sim"), ("env1", "sim")] {
        let in_db = vm.seqs(&site, dev).await;
        let mqtt = dedupe(&sub.samples(dev));
        let last = *in_db.keys().last().expect("samples in the database");
        assert!(last >= 50, "{dev}: {last}");
        // Every reading up to the last one written, none missing.
        let want: BTreeSet<u64> = mqtt.keys().copied().filter(|s| *s <= last).collect();
        let got: BTreeSet<u64> = in_db.keys().copied().collect();
        let missing: Vec<_> = want.difference(&got).collect();
        assert!(
            missing.is_empty(),
            "{dev}: missing in the database: {missing:?}"
        );
        // Each field at the reading's timestamp, with the reading's value.
        let series = vm
            .export(&format!(
                "{{__name__=~\"telemetry_.+\",site=\"{site}\",device=\"{dev}\"}}"
            ))
            .await;
        let mut by_name: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
        for (labels, pts) in &series {
            assert_eq!(labels["type"], ty_, "{labels:?}");
            let name = labels["__name__"]
                .trim_start_matches("telemetry_")
                .to_owned();
            by_name.entry(name).or_default().extend(pts.iter().copied());
        }
        let mut checked = 0;
        for (seq, s) in mqtt.iter().filter(|(s, _)| **s <= last) {
            let ts = s["ts"].as_i64().unwrap();
            assert_eq!(in_db[seq], ts, "{dev} seq {seq}: timestamp");
            for (name, v) in s["values"].as_object().unwrap() {
                let got = by_name
                    .get(name)
                    .and_then(|m| m.get(&ts))
                    .unwrap_or_else(|| panic!("{dev} seq {seq}: field {name} not in the database"));
                match v {
                    Value::Number(n) => {
                        assert!(
                            (n.as_f64().unwrap() - got).abs() < 1e-9,
                            "{dev} {name}: {n} vs {got}"
                        )
                    }
                    Value::Bool(b) => assert_eq!(*got, if *b { 1.0 } else { 0.0 }, "{dev} {name}"),
                    // Strings: VictoriaMetrics stores the field, not the words.
                    _ => {}
                }
                checked += 1;
            }
        }
        assert!(checked > 100, "{dev}: {checked} fields checked");
    }
    // Events: measurement `event`, tags code/device/severity/site.
    let ev = vm
        .export(&format!("event_seq{{site=\"{site}\",device=\"ups1\"}}"))
        .await;
    let codes: BTreeSet<String> = ev.iter().map(|(l, _)| l["code"].clone()).collect();
    assert!(codes.contains("ups.on_battery"), "{codes:?}");
    assert!(ev
        .iter()
        .all(|(l, _)| ["info", "warning", "critical"].contains(&l["severity"].as_str())));
    let ev_seqs: BTreeSet<u64> = ev
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1 as u64))
        .collect();
    let mqtt_ev: BTreeSet<u64> = sub
        .events("ups1")
        .iter()
        .map(|(_, e)| e["seq"].as_u64().unwrap())
        .filter(|s| *s <= *ev_seqs.iter().last().unwrap())
        .collect();
    assert_eq!(ev_seqs, mqtt_ev, "every event up to the last written");
    // The gateway's own telemetry, like any device.
    let gw_series = vm
        .export(&format!(
            "{{__name__=\"telemetry_influxdb.connected\",site=\"{site}\",device=\"gateway\"}}"
        ))
        .await;
    assert_eq!(gw_series.len(), 1, "{gw_series:?}");
    assert_eq!(gw_series[0].0["type"], "gateway");
}

/// Polls the subscriber and records, for each new live ups1 sample, how
/// long after its reading it arrived (ms; the poll adds up to 10 ms).
async fn live_latencies(sub: &Subscriber, for_: Duration) -> Vec<i64> {
    let mut seen = sub.all().len();
    let mut out = Vec::new();
    let end = Instant::now() + for_;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let all = sub.all();
        let now = wardgate::model::now_ms();
        for m in &all[seen..] {
            if m.topic.ends_with("/ups1/telemetry") {
                for s in m.body["samples"].as_array().into_iter().flatten() {
                    if s["historical"] == false {
                        out.push(now - s["ts"].as_i64().unwrap());
                    }
                }
            }
        }
        seen = all.len();
    }
    out.sort_unstable();
    out
}

fn pct(v: &[i64], p: usize) -> i64 {
    v[(v.len() * p / 100).min(v.len() - 1)]
}

/// The database stopped for 30 s while MQTT stays up: MQTT's live latency
/// does not change (measured before and during), the InfluxDB backlog is
/// delivered completely once it returns, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_down_30s_never_delays_mqtt_and_backlog_lands() {
    let mut vm = Vm::start();
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    let site = test_site();
    let extra = format!(
        "{}{}",
        influx_section(&vm.url(), ""),
        sim("ups1", "50ms", "event_every = 100"),
    );
    let gw = Gateway::start(config(broker.port, dir.path(), &extra)).await;
    eventually(WAIT, "InfluxDB written to", || {
        influx_status(&gw).written >= 20
    })
    .await;
    let before = live_latencies(&sub, Duration::from_secs(5)).await;
    vm.stop();
    // The outage: 30 s (time passing on purpose), MQTT measured through it.
    let during = live_latencies(&sub, Duration::from_secs(30)).await;
    let st = influx_status(&gw);
    assert!(!st.connected, "{st:?}");
    assert!(st.depth > 300, "the backlog waits for InfluxDB: {st:?}");
    assert!(gw.status.get().uplink.connected);
    vm.start_again();
    eventually(Duration::from_secs(90), "InfluxDB backlog drained", || {
        let s = influx_status(&gw);
        s.connected && s.depth < 20
    })
    .await;
    // Caught up: the database has what MQTT had once the backlog drained.
    let last_mqtt = *sub.seqs("ups1").iter().last().unwrap();
    let deadline = Instant::now() + WAIT;
    while vm
        .seqs(&site, "ups1")
        .await
        .keys()
        .last()
        .copied()
        .unwrap_or(0)
        < last_mqtt
    {
        assert!(
            Instant::now() < deadline,
            "InfluxDB never caught up with MQTT"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gw.stop().await;
    sub.assert_all_valid();
    let (p50b, p95b, p50d, p95d) = (
        pct(&before, 50),
        pct(&before, 95),
        pct(&during, 50),
        pct(&during, 95),
    );
    eprintln!(
        "MQTT live latency (ms), InfluxDB up: p50 {p50b} p95 {p95b} ({} samples); InfluxDB down: p50 {p50d} p95 {p95d} ({} samples)",
        before.len(),
        during.len()
    );
    assert!(
        during.len() > 400,
        "MQTT kept delivering live: {}",
        during.len()
    );
    // Unchanged: within 50 ms of the healthy median and p95 (the poll adds
    // up to 10 ms; a stalled MQTT would show seconds).
    assert!(p50d <= p50b + 50, "p50 {p50b} -> {p50d}");
    assert!(p95d <= p95b + 100, "p95 {p95b} -> {p95d}");
    // Nothing lost: every sample up to the last the database has (at least
    // MQTT's last when the backlog had drained) is in it; what was in
    // flight at the stop stays in the spool for the next start.
    let in_db = vm.seqs(&site, "ups1").await;
    let top = *in_db.keys().last().unwrap();
    assert!(top >= last_mqtt);
    let want: BTreeSet<u64> = dedupe(&sub.samples("ups1"))
        .keys()
        .copied()
        .filter(|s| *s <= top)
        .collect();
    let got: BTreeSet<u64> = in_db.keys().copied().collect();
    let missing: Vec<_> = want.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "missing in the database: {} {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert!(want.len() > 600, "{}", want.len());
}

// ---- A scripted InfluxDB ----

/// One write the scripted server received: the lines, and when.
#[derive(Debug, Clone)]
struct Write {
    at: Instant,
    status: u16,
    lines: Vec<String>,
    auth: Option<String>,
}

type Answerer = Box<dyn FnMut(&[String]) -> (u16, Vec<(String, String)>, String) + Send>;

/// An HTTP/1.1 server on loopback that answers each `/api/v2/write` as the
/// test's function says and records what it got (gzip bodies unpacked).
struct Scripted {
    port: u16,
    writes: Arc<Mutex<Vec<Write>>>,
    answer: Arc<Mutex<Answerer>>,
}

impl Scripted {
    async fn start(answer: Answerer) -> Scripted {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let writes: Arc<Mutex<Vec<Write>>> = Arc::default();
        let answer = Arc::new(Mutex::new(answer));
        let (w, a) = (writes.clone(), answer.clone());
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let (w, a) = (w.clone(), a.clone());
                tokio::spawn(async move {
                    let _ = serve(s, w, a).await;
                });
            }
        });
        Scripted {
            port,
            writes,
            answer,
        }
    }

    fn set(&self, answer: Answerer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn writes(&self) -> Vec<Write> {
        self.writes.lock().unwrap().clone()
    }

    /// Lines answered 2xx.
    fn landed(&self) -> Vec<String> {
        self.writes()
            .into_iter()
            .filter(|w| w.status < 300)
            .flat_map(|w| w.lines)
            .collect()
    }
}

async fn serve(
    s: tokio::net::TcpStream,
    writes: Arc<Mutex<Vec<Write>>>,
    answer: Arc<Mutex<Answerer>>,
) -> std::io::Result<()> {
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut len = 0usize;
        let mut gzip = false;
        let mut auth = None;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).await?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "content-encoding" => gzip = v.trim() == "gzip",
                "authorization" => auth = Some(v.trim().to_owned()),
                _ => {}
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        let text = if gzip {
            let mut t = String::new();
            flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut t)?;
            t
        } else {
            String::from_utf8_lossy(&body).into_owned()
        };
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let (status, headers, resp) = (answer.lock().unwrap())(&lines);
        writes.lock().unwrap().push(Write {
            at: Instant::now(),
            status,
            lines,
            auth,
        });
        let mut out = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", resp.len());
        for (k, v) in headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&resp);
        r.get_mut().write_all(out.as_bytes()).await?;
    }
}

fn ok() -> (u16, Vec<(String, String)>, String) {
    (204, vec![], String::new())
}

/// `seq=N` of a line.
fn seq_of(line: &str) -> u64 {
    let i = line.find("seq=").unwrap() + 4;
    line[i..].split('i').next().unwrap().parse().unwrap()
}

fn is_ups1_sample(l: &str) -> bool {
    l.starts_with("telemetry,device=ups1,")
}

/// A gateway writing to the scripted server (MQTT to a real broker).
async fn scripted_gateway(
    server: &Scripted,
    extra: &str,
    interval: &str,
) -> (Broker, tempfile::TempDir, Gateway) {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "{}{}",
        influx_section(&server.url(), extra),
        sim("ups1", interval, "")
    );
    let gw = Gateway::start(config(broker.port, dir.path(), &cfg)).await;
    (broker, dir, gw)
}

/// 413: the batch is halved until it fits; every point lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_413_halves_the_batch() {
    // Busy at first, so that a backlog builds up and batches are full.
    let server = Scripted::start(Box::new(|_| (503, vec![], "busy".into()))).await;
    let too_large = || -> Answerer {
        Box::new(|lines: &[String]| {
            if lines.len() > 10 {
                (
                    413,
                    vec![],
                    r#"{"code":"request too large","message":"too large"}"#.into(),
                )
            } else {
                ok()
            }
        })
    };
    let (_b, _d, gw) = scripted_gateway(&server, "max_batch = 64", "5ms").await;
    eventually(WAIT, "a backlog", || influx_status(&gw).depth > 200).await;
    server.set(too_large());
    eventually(WAIT, "300 ups1 points landed, and shown", || {
        server.landed().iter().filter(|l| is_ups1_sample(l)).count() >= 300
            && influx_status(&gw).written >= 300
    })
    .await;
    let st = influx_status(&gw);
    gw.stop().await;
    assert!(st.too_large >= 1, "{st:?}");
    assert!(st.batch_limit <= 10 && st.batch_limit >= 5, "{st:?}");
    let w = server.writes();
    assert!(w.iter().any(|w| w.status == 413 && w.lines.len() > 10));
    assert!(w
        .iter()
        .filter(|w| w.status < 300)
        .all(|w| w.lines.len() <= 10));
    let seqs: BTreeSet<u64> = server
        .landed()
        .iter()
        .filter(|l| is_ups1_sample(l))
        .map(|l| seq_of(l))
        .collect();
    assert_contiguous(&seqs, 0, "ups1 in the database");
}

/// 400: the bad points are found by bisecting and set aside, counted once
/// each, with one event per write; the rest lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_400_sets_bad_points_aside_and_writes_the_rest() {
    // Every ups1 sample whose seq is a multiple of 17 is "bad".
    let bad = |l: &String| is_ups1_sample(l) && seq_of(l) % 17 == 0;
    let server = Scripted::start(Box::new(move |lines| {
        if lines.iter().any(bad) {
            (
                400,
                vec![],
                r#"{"code":"invalid","message":"unable to parse points"}"#.into(),
            )
        } else {
            ok()
        }
    }))
    .await;
    let (_b, _d, gw) = scripted_gateway(&server, "max_batch = 50", "5ms").await;
    eventually(WAIT, "ups1 points up to seq 400 landed", || {
        server
            .landed()
            .iter()
            .filter(|l| is_ups1_sample(l))
            .any(|l| seq_of(l) >= 400)
    })
    .await;
    eventually(WAIT, "the status shows what landed", || {
        let st = influx_status(&gw);
        st.written >= 380 && st.rejected >= 20
    })
    .await;
    let st = influx_status(&gw);
    let events = gw.status.get().events;
    gw.stop().await;
    let landed: BTreeSet<u64> = server
        .landed()
        .iter()
        .filter(|l| is_ups1_sample(l))
        .map(|l| seq_of(l))
        .collect();
    let top = *landed.iter().last().unwrap();
    for s in 0..top {
        assert_eq!(landed.contains(&s), s % 17 != 0, "seq {s}");
    }
    let bad_count = (0..=top).filter(|s| s % 17 == 0).count() as u64;
    assert!(
        st.rejected >= bad_count - 1 && st.rejected <= bad_count + 1,
        "{st:?} vs {bad_count}"
    );
    let rejected: Vec<_> = events
        .iter()
        .filter(|e| e.code == "influxdb.rejected")
        .collect();
    assert!(!rejected.is_empty(), "an influxdb.rejected event");
    assert!(rejected[0].message.contains("400"), "{:?}", rejected[0]);
    // Never sent again once set aside: each bad point was refused at most
    // as often as a bisection needs (log2 of the batch + 1).
    let mut refused_times: BTreeMap<u64, usize> = BTreeMap::new();
    for w in server.writes().iter().filter(|w| w.status == 400) {
        for l in w.lines.iter().filter(|l| bad(l)) {
            *refused_times.entry(seq_of(l)).or_default() += 1;
        }
    }
    assert!(refused_times.values().all(|n| *n <= 8), "{refused_times:?}");
}

/// 401: nothing is dropped, a critical event, retried slowly; once the
/// token is accepted everything lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_401_keeps_everything_and_retries_slowly() {
    let server = Scripted::start(Box::new(|_| {
        (
            401,
            vec![],
            r#"{"code":"unauthorized","message":"unauthorized access"}"#.into(),
        )
    }))
    .await;
    let (_b, _d, gw) = scripted_gateway(&server, "", "20ms").await;
    eventually(WAIT, "a refused write", || !server.writes().is_empty()).await;
    // Refused for 12 s (time passing on purpose).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let st = influx_status(&gw);
    assert!(
        !st.connected && st.written == 0 && st.refused >= 1,
        "{st:?}"
    );
    assert_eq!(st.last_class.as_deref(), Some("refused"));
    assert!(st.depth > 300, "kept: {st:?}");
    let tries = server.writes().len();
    assert!(tries <= 3, "retried slowly: {tries} tries in 12 s");
    let ev: Vec<_> = gw
        .status
        .get()
        .events
        .into_iter()
        .filter(|e| e.code == "influxdb.token_refused")
        .collect();
    assert_eq!(ev.len(), 1, "one event per outage: {ev:?}");
    assert_eq!(ev[0].severity, wardgate::model::Severity::Critical);
    // The class is shown in /api/status, /metrics and the page.
    let web = gw.web.expect("the page listens");
    let (code, body) = http_get(web, "/api/status", "").await;
    assert_eq!(code, 200);
    let json: Value = serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["influxdb"]["last_class"], "refused", "{json}");
    assert_eq!(json["influxdb"]["connected"], false);
    assert!(json["influxdb"]["depth"].as_u64().unwrap() > 300);
    let (_, metrics) = http_get(web, "/metrics", "").await;
    assert!(metrics.contains("wardgate_influxdb_up 0"), "{metrics}");
    assert!(
        metrics.contains("wardgate_influxdb_errors{class=\"refused\"}"),
        "{metrics}"
    );
    let (_, page) = http_get(web, "/?lang=en", "").await;
    assert!(page.contains("token refused, readings kept"), "{page}");
    server.set(Box::new(|_| ok()));
    eventually(
        Duration::from_secs(60),
        "everything landed after the token was accepted",
        || {
            let s = influx_status(&gw);
            s.connected && s.depth < 20
        },
    )
    .await;
    gw.stop().await;
    let seqs: BTreeSet<u64> = server
        .landed()
        .iter()
        .filter(|l| is_ups1_sample(l))
        .map(|l| seq_of(l))
        .collect();
    // Written once each (nothing was in flight twice: every refused write
    // kept its points), and in order: live readings go ahead of the
    // backlog, each in seq order, so the arrival order is two increasing
    // runs interleaved (its longest decreasing subsequence is at most 2).
    let order: Vec<u64> = server
        .landed()
        .iter()
        .filter(|l| is_ups1_sample(l))
        .map(|l| seq_of(l))
        .collect();
    assert_eq!(order.len(), seqs.len(), "a point written twice");
    let mut lds: Vec<usize> = vec![1; order.len()];
    for i in 0..order.len() {
        for j in 0..i {
            if order[j] > order[i] {
                lds[i] = lds[i].max(lds[j] + 1);
            }
        }
    }
    assert!(lds.iter().all(|n| *n <= 2), "out of order: {order:?}");
    let last = assert_contiguous(&seqs, 0, "ups1 after the refusal");
    assert!(last > 500, "{last}");
}

/// 503 with Retry-After: the next try waits at least that long; nothing
/// is lost; 429 likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_503_and_429_back_off_honouring_retry_after() {
    let n = Arc::new(Mutex::new(0u32));
    let n2 = n.clone();
    let server = Scripted::start(Box::new(move |_| {
        let mut n = n2.lock().unwrap();
        *n += 1;
        match *n {
            1..=2 => (503, vec![("retry-after".into(), "3".into())], "busy".into()),
            3 => (
                429,
                vec![("retry-after".into(), "2".into())],
                "slow down".into(),
            ),
            _ => ok(),
        }
    }))
    .await;
    let (_b, _d, gw) = scripted_gateway(&server, "", "20ms").await;
    eventually(WAIT, "written after the back-off", || {
        influx_status(&gw).written > 200
    })
    .await;
    let st = influx_status(&gw);
    gw.stop().await;
    let w = server.writes();
    assert_eq!((w[0].status, w[1].status, w[2].status), (503, 503, 429));
    let gap = |i: usize| w[i + 1].at.duration_since(w[i].at);
    assert!(gap(0) >= Duration::from_secs(3), "{:?}", gap(0));
    assert!(gap(1) >= Duration::from_secs(3), "{:?}", gap(1));
    assert!(gap(2) >= Duration::from_secs(2), "{:?}", gap(2));
    assert!(st.retries >= 3, "{st:?}");
    let seqs: BTreeSet<u64> = server
        .landed()
        .iter()
        .filter(|l| is_ups1_sample(l))
        .map(|l| seq_of(l))
        .collect();
    assert_contiguous(&seqs, 0, "ups1 after the back-off");
}

/// A body saying the points are outside retention: dropped, counted, one
/// event, never sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_retention_drops_and_never_resends() {
    let server = Scripted::start(Box::new(|lines| {
        // Until the test says otherwise, every write is "too old".
        (
            422,
            vec![],
            format!(r#"{{"code":"unprocessable entity","message":"failure writing points to database: partial write: points beyond retention policy dropped={}"}}"#, lines.len()),
        )
    }))
    .await;
    let (_b, _d, gw) = scripted_gateway(&server, "", "20ms").await;
    eventually(WAIT, "a write", || !server.writes().is_empty()).await;
    server.set(Box::new(|_| ok()));
    eventually(WAIT, "writes go on", || influx_status(&gw).written > 100).await;
    let st = influx_status(&gw);
    let events = gw.status.get().events;
    gw.stop().await;
    let w = server.writes();
    let dropped: BTreeSet<String> = w
        .iter()
        .filter(|x| x.status == 422)
        .flat_map(|x| x.lines.iter().cloned())
        .collect();
    assert_eq!(st.retention_dropped, dropped.len() as u64, "{st:?}");
    assert!(
        w.iter()
            .filter(|x| x.status != 422)
            .all(|x| x.lines.iter().all(|l| !dropped.contains(l))),
        "a point dropped for retention was sent again"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e.code == "influxdb.retention")
            .count(),
        1
    );
}

/// kill -9 with InfluxDB down: the InfluxDB lane's backlog survives like
/// MQTT's and lands once the database is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_sigkill_with_database_down_keeps_its_backlog() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    let site = test_site();
    // Nothing listens on this port until the database is started there.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let cfg = process_config(
        dir.path(),
        broker.port,
        &format!("{}{}", influx_section(&url, ""), sim("ups1", "50ms", "")),
    );
    let log = dir.path().join("wardgate.log");
    let mut gw = Process::start(&cfg, &log);
    eventually(WAIT, "live samples over MQTT", || {
        sub.seqs("ups1").len() >= 60
    })
    .await;
    // More than spill_after with the database down (time passing on purpose).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let kill_ms = wardgate::model::now_ms();
    gw.signal(libc::SIGKILL);
    gw.wait(Duration::from_secs(5)).await;
    let rows = influx_rows(&dir.path().join("spool.db"));
    assert!(rows > 60, "the InfluxDB lane's rows are on disk: {rows}");
    let mut vm = Vm {
        port,
        dir: tempfile::tempdir().unwrap(),
        child: None,
    };
    vm.start_on(Some(port));
    let mut gw = Process::start(&cfg, &log);
    let block = wardgate::spool::SEQ_BLOCK;
    let deadline = Instant::now() + WAIT;
    let mut in_db = BTreeMap::new();
    while Instant::now() < deadline {
        in_db = vm.seqs(&site, "ups1").await;
        if in_db.keys().any(|s| *s >= block + 10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        in_db.keys().any(|s| *s >= block + 10),
        "samples after the restart in the database; log:\n{}",
        gw.log_text()
    );
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait(STOP_BUDGET).await, Some(0));
    let before: BTreeSet<u64> = in_db.keys().copied().filter(|s| *s < block).collect();
    let last = assert_contiguous(&before, 0, "samples read before the kill, in the database");
    assert!(
        in_db[&last] >= kill_ms - 3_050,
        "readings up to {} ms before the kill were lost",
        kill_ms - in_db[&last]
    );
}

/// Rows of the `influxdb` lane in the spool file.
fn influx_rows(db: &Path) -> u64 {
    let ro = wardgate::spool::db::Db::open_read_only(db).unwrap();
    ro.summary()
        .unwrap()
        .iter()
        .filter(|r| r.sink == "influxdb")
        .map(|r| r.records)
        .sum()
}

/// `wardgate check` validates the URL and makes one authenticated request:
/// ok against the database, "token refused" (exit 69) against a server
/// that refuses it, and a bad URL is a config error (exit 78).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_check_makes_one_authenticated_request() {
    let vm = Vm::start();
    let refusing = Scripted::start(Box::new(|_| {
        (
            401,
            vec![],
            r#"{"code":"unauthorized","message":"unauthorized access"}"#.into(),
        )
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("influx.token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let write = |url: &str| {
        process_config(
            dir.path(),
            1883,
            &format!(
                "{}token_file = \"{}\"\n",
                influx_section(url, ""),
                token.display()
            ),
        )
    };
    let (code, out) = wardgate_check(&write(&vm.url())).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("influxdb: ok:"), "{out}");
    let (code, out) = wardgate_check(&write(&refusing.url())).await;
    assert_eq!(code, Some(69), "{out}");
    assert!(out.contains("token refused (401)"), "{out}");
    // One request, with the token in the Authorization header.
    let w = refusing.writes();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].auth.as_deref(), Some("Token s3cret"));
    let (code, out) = wardgate_check(&write("http://tsdb.example:8086")).await;
    assert_eq!(code, Some(78), "{out}");
    assert!(out.contains("influxdb.url"), "{out}");
}
