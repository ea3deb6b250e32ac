//! End-to-end ingest figures of `wardgate-ioc run` (issue 25):
//! `scripts/bench --ioc [--sites N] [--bin PATH] [--no-tsdb] [--tsdb-only]
//! [--broker-inflight N] [--commit-interval D] [--commit-messages N]`
//! (or `cargo bench -p wardgate-ioc --bench ingest -- ...`).
//!
//! The load generator's traffic for N sites (1,000 by default) is
//! published QoS 1 into the persistent session of a stopped wardgate-ioc
//! on a real mosquitto (persistence on, `max_inflight_messages 0`,
//! `max_queued_messages 0`), so the publisher is out of the timed part;
//! then the release binary is started and timed from its start to the
//! moment the store has committed every message (`meta.messages`; the
//! PUBACKs follow each commit) and, with the time-series writer, the
//! outbox is empty (every point written to VictoriaMetrics). Printed:
//! readings/s and messages/s, CPU seconds per 1,000 messages
//! (`/proc/<pid>/stat` utime+stime over the whole run), VmRSS median and
//! peak while draining, and mosquitto's share of the CPU (both run on the
//! same two cores), and what bounds the figure. Also the same traffic
//! through the pipeline in-process (decode, ledger, fleet view, lines,
//! no MQTT, no SQLite): the ceiling of the ingest's one task.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wardgate_ioc::fleet::{Fleet, Monitor};
use wardgate_ioc::ingest::Batch;
use wardgate_ioc::ledger::Ledger;
use wardgate_ioc::loadgen::{generate, LoadConfig};

#[allow(dead_code)]
#[path = "../tests/it/ingest_peers.rs"]
mod peers;

use peers::{free_port, pause, publish, Broker, Vm};

struct Args {
    sites: usize,
    bin: PathBuf,
    tsdb: bool,
    plain: bool,
    /// `[ingest]` keys; none: the service's defaults.
    commit_interval: Option<String>,
    commit_messages: Option<usize>,
    /// mosquitto's `max_inflight_messages` (0: unlimited, as in the
    /// tests; mosquitto's own default is 20).
    broker_inflight: u32,
}

fn args() -> Args {
    let mut a = Args {
        sites: 1000,
        bin: PathBuf::from(env!("CARGO_BIN_EXE_wardgate-ioc")),
        tsdb: true,
        plain: true,
        commit_interval: None,
        commit_messages: None,
        broker_inflight: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut val = |what: &str| it.next().unwrap_or_else(|| panic!("{what} needs a value"));
        match x.as_str() {
            "--sites" => a.sites = val("--sites").parse().expect("--sites N"),
            "--bin" => a.bin = PathBuf::from(val("--bin")),
            "--no-tsdb" => a.tsdb = false,
            "--tsdb-only" => a.plain = false,
            "--commit-interval" => a.commit_interval = Some(val("--commit-interval")),
            "--commit-messages" => {
                a.commit_messages = Some(val("--commit-messages").parse().expect("N"))
            }
            "--broker-inflight" => a.broker_inflight = val("--broker-inflight").parse().expect("N"),
            // `cargo bench` adds `--bench`.
            _ => {}
        }
    }
    a
}

/// The traffic and what it holds: messages, records (readings and events
/// in data messages), points the ledger calls new.
struct Load {
    messages: Vec<(String, Vec<u8>)>,
    records: u64,
    points: usize,
    inproc: Duration,
}

fn load(sites: usize) -> Load {
    let traffic = generate(&LoadConfig {
        sites,
        seed: 21,
        prefix: "ioc".into(),
        steps: 4,
    })
    .expect("loadgen");
    let mut m = Monitor::new("ioc", Ledger::default(), Fleet::default());
    let mut b = Batch::new(Default::default());
    let t0 = Instant::now();
    for w in &traffic.messages {
        b.take(&mut m, &w.topic, &w.payload, w.at_ms);
    }
    let commit = b.drain(&m, 0);
    let inproc = t0.elapsed();
    let t = m.ledger.fleet_totals();
    Load {
        messages: traffic
            .messages
            .into_iter()
            .map(|w| (w.topic, w.payload))
            .collect(),
        records: t.received
            + t.duplicates
            + t.corrected_copies
            + t.contract_breaks
            + t.before_start,
        points: commit.lines.len(),
        inproc,
    }
}

/// utime + stime of a process, in seconds.
fn cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command's closing parenthesis: state is field 3,
    // utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clk_tck()
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let l = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    l.split_whitespace().nth(1)?.parse().ok()
}

fn mosquitto_pid(port: u16) -> Option<u32> {
    let out = Command::new("pgrep")
        .args(["-x", "mosquitto"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let conf = String::from_utf8_lossy(&c).into_owned();
                let conf = conf.split('\0').nth(2).unwrap_or("").to_owned();
                std::fs::read_to_string(conf)
                    .is_ok_and(|t| t.contains(&format!("listener {port} ")))
            })
        })
}

struct Ioc {
    bin: PathBuf,
    config: PathBuf,
    store: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Ioc {
    fn new(dir: &Path, a: &Args, broker: u16, tsdb: Option<&str>) -> Ioc {
        let store = dir.join("ioc.sqlite");
        let mut text = format!(
            "[mqtt]\nhost = \"127.0.0.1\"\nport = {broker}\nprefix = \"ioc\"\nclient_id = \"ioc-bench\"\n[store]\npath = \"{}\"\n",
            store.display()
        );
        if let Some(u) = tsdb {
            text.push_str(&format!("[tsdb]\nurl = \"{u}\"\nbatch = 5000\n"));
        }
        text.push_str("[ingest]\n");
        if let Some(i) = &a.commit_interval {
            text.push_str(&format!("commit_interval = \"{i}\"\n"));
        }
        if let Some(m) = a.commit_messages {
            text.push_str(&format!("commit_messages = {m}\n"));
        }
        text.push_str(&format!("[web]\nlisten = \"127.0.0.1:{}\"\n", free_port()));
        let config = dir.join("ioc.toml");
        std::fs::write(&config, text).expect("ioc.toml");
        Ioc {
            bin: a.bin.clone(),
            config,
            store,
            log: dir.join("ioc.log"),
            child: None,
        }
    }

    fn start(&mut self) -> u32 {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let c = Command::new(&self.bin)
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("wardgate-ioc");
        let pid = c.id();
        self.child = Some(c);
        pid
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    /// Messages committed and points waiting, read beside the running
    /// service (WAL): two small queries.
    fn progress(&self) -> Option<(u64, u64)> {
        let c = rusqlite::Connection::open_with_flags(
            &self.store,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .ok()?;
        let m: i64 = c
            .query_row("SELECT value FROM meta WHERE key='messages'", [], |r| {
                r.get(0)
            })
            .ok()?;
        let w: i64 = c
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
            .ok()?;
        Some((u64::try_from(m).ok()?, u64::try_from(w).ok()?))
    }
}

impl Drop for Ioc {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// One timed drain; `tsdb` the VictoriaMetrics URL or none.
fn run(a: &Args, l: &Load, tsdb: Option<&str>) {
    let broker = Broker::start_with(&format!(
        "allow_anonymous true\nmax_inflight_messages {}\n",
        a.broker_inflight
    ));
    let dir = tempfile::tempdir().expect("dir");
    let mut ioc = Ioc::new(dir.path(), a, broker.port, tsdb);
    // The first start makes the session and subscribes; stopped, the
    // broker queues the traffic for it.
    ioc.start();
    peers::wait_for("wardgate-ioc to subscribe", peers::WAIT, || {
        std::fs::read_to_string(&ioc.log).is_ok_and(|t| t.contains("subscribed"))
    });
    ioc.stop();
    let tp = Instant::now();
    publish(broker.port, &l.messages);
    let published = tp.elapsed();
    let n = l.messages.len() as u64;
    let mpid = mosquitto_pid(broker.port);
    let m0 = mpid.map(cpu_s).unwrap_or(0.0);
    let t0 = Instant::now();
    let pid = ioc.start();
    let mut rss = Vec::new();
    let mut committed_at = None;
    let deadline = t0 + Duration::from_secs(900);
    loop {
        if let Some(r) = rss_kib(pid) {
            rss.push(r);
        }
        if let Some((m, w)) = ioc.progress() {
            if m >= n && committed_at.is_none() {
                committed_at = Some(t0.elapsed());
            }
            if m >= n && (tsdb.is_none() || w == 0) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "not drained in 900 s");
        pause(Duration::from_millis(25));
    }
    let took = t0.elapsed();
    let cpu = cpu_s(pid);
    let mcpu = mpid.map(cpu_s).unwrap_or(0.0) - m0;
    let after = rss_kib(pid).unwrap_or(0);
    ioc.stop();
    let committed = committed_at.unwrap_or(took);
    let s = took.as_secs_f64();
    let what = if tsdb.is_some() {
        "with the tsdb writer (VictoriaMetrics)"
    } else {
        "without a tsdb"
    };
    println!("\n== {} sites, {what}", a.sites);
    println!(
        "traffic: {n} messages, {} readings (records), {} points; published QoS 1 in {:.1} s ({:.0} msg/s) before the start",
        l.records,
        l.points,
        published.as_secs_f64(),
        n as f64 / published.as_secs_f64()
    );
    println!(
        "drained in {s:.2} s (all committed at {:.2} s): {:.0} readings/s, {:.0} messages/s end to end",
        committed.as_secs_f64(),
        l.records as f64 / s,
        n as f64 / s
    );
    println!(
        "cpu: wardgate-ioc {cpu:.2} s = {:.3} s per 1,000 messages ({:.0}% of one core); mosquitto {mcpu:.2} s ({:.0}%)",
        cpu * 1000.0 / n as f64,
        100.0 * cpu / s,
        100.0 * mcpu / s
    );
    println!(
        "rss: median {} MiB, peak {} MiB while draining, {} MiB after ({} sites in the ledger and fleet view)",
        median(rss.clone()) / 1024,
        rss.iter().max().copied().unwrap_or(0) / 1024,
        after / 1024,
        a.sites
    );
    let busy = cpu / s;
    let bound = if busy > 0.85 {
        "wardgate-ioc's CPU (its one ingest task is busy: see the in-process ceiling)"
    } else if busy + mcpu / s > 1.7 {
        "the two cores (wardgate-ioc and mosquitto together)"
    } else if a.broker_inflight > 0 {
        "waiting: the broker's in-flight window (max_inflight_messages), whose messages are acknowledged only after each commit"
    } else {
        "the ingest task, in turn busy (decode, ledger, each commit's rewrite of the touched sites' state) and waiting on the commit's fsync (the next batch is not taken during a commit)"
    };
    println!("bound by: {bound}");
}

fn main() {
    let a = args();
    let tl = Instant::now();
    let l = load(a.sites);
    println!(
        "wardgate-ioc ingest bench: {} ({}), 2-core machine shared; traffic generated in {:.1} s",
        a.bin.display(),
        if a.bin == Path::new(env!("CARGO_BIN_EXE_wardgate-ioc")) {
            "this build"
        } else {
            "--bin"
        },
        tl.elapsed().as_secs_f64()
    );
    println!(
        "in-process pipeline (decode, de-duplication, ledger, fleet view, lines; no report history, no MQTT, no SQLite): {:.0} messages/s, {:.0} readings/s",
        l.messages.len() as f64 / l.inproc.as_secs_f64(),
        l.records as f64 / l.inproc.as_secs_f64()
    );
    println!(
        "config: commit_interval {}, commit_messages {}; mosquitto max_inflight_messages {} (0: unlimited)",
        a.commit_interval.as_deref().unwrap_or("default"),
        a.commit_messages
            .map_or("default".to_owned(), |m| m.to_string()),
        a.broker_inflight
    );
    if a.plain {
        run(&a, &l, None);
    }
    if a.tsdb {
        let vm = Vm::start();
        run(&a, &l, Some(&vm.url()));
    }
}
