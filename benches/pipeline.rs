//! End-to-end figures against a real mosquitto on loopback, printed as a
//! table: live throughput, backlog drain time, peak RSS during the drain,
//! and disk bytes written per sample while the broker is healthy; then the
//! InfluxDB sink into a real VictoriaMetrics (when installed): points/s
//! through the whole path with both sinks on, and the drain time of a
//! backlog kept for InfluxDB alone.
//!
//! Run with `scripts/bench` (or `cargo bench --bench pipeline`). Sizes can be
//! changed with WARDGATE_BENCH_LIVE, WARDGATE_BENCH_BACKLOG,
//! WARDGATE_BENCH_INFLUX_LIVE and WARDGATE_BENCH_INFLUX_BACKLOG.

// A harness run as its own process, not the gateway: blocking sleeps and
// process::exit with the verdict are what it is for.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use wardgate::config::Config;
use wardgate::model::{Reading, Values};
use wardgate::spool::{Lane, Spool};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mosquitto(dir: &Path) -> (Kill, u16) {
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "user root\nmax_queued_messages 0\nlistener {port} 127.0.0.1\nallow_anonymous true\n"
        ),
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto must be installed");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    (Kill(child), port)
}

/// Counts samples arriving on `ioc/#` (live or historical as asked).
async fn counter(port: u16, historical: bool) -> (Arc<AtomicU64>, Arc<AtomicU64>) {
    let n = Arc::new(AtomicU64::new(0));
    let last_ms = Arc::new(AtomicU64::new(0));
    let mut o = MqttOptions::new(
        format!("bench-{}", rand::random::<u32>()),
        "127.0.0.1",
        port,
    );
    o.set_max_packet_size(64 << 20, 1 << 20);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut el) = AsyncClient::new(o, 100);
    client
        .subscribe("ioc/+/+/telemetry", QoS::AtMostOnce)
        .await
        .unwrap();
    let (n2, l2) = (n.clone(), last_ms.clone());
    let start = Instant::now();
    let ready = Arc::new(tokio::sync::Notify::new());
    let r2 = ready.clone();
    tokio::spawn(async move {
        let _keep = client;
        let flag: &[u8] = if historical {
            b"\"historical\":true"
        } else {
            b"\"historical\":false"
        };
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => r2.notify_one(),
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if p.topic.contains("/gateway/") {
                        continue;
                    }
                    let k = p.payload.windows(flag.len()).filter(|w| *w == flag).count() as u64;
                    if k > 0 {
                        n2.fetch_add(k, Ordering::Relaxed);
                        l2.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    ready.notified().await;
    (n, last_ms)
}

fn proc_field(pid: u32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn start_gateway(dir: &Path, text: &str) -> Kill {
    let cfg = dir.join("wardgate.toml");
    std::fs::write(&cfg, text).unwrap();
    let log = std::fs::File::create(dir.join("wardgate.log")).unwrap();
    Kill(
        Command::new(env!("CARGO_BIN_EXE_wardgate"))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("WARDGATE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// VictoriaMetrics on loopback (`/usr/bin/victoria-metrics`, Debian's
/// package), data in `dir`; None when it is not installed.
fn victoria(dir: &Path) -> Option<(Kill, u16)> {
    let bin = Path::new("/usr/bin/victoria-metrics");
    if !bin.exists() {
        return None;
    }
    let port = free_port();
    let child = Command::new(bin)
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg(format!("-storageDataPath={}", dir.display()))
        .arg("-loggerLevel=ERROR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((Kill(child), port))
}

/// Rows (one per field) VictoriaMetrics took in over the InfluxDB protocol.
fn vm_rows(port: u16) -> u64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix("vm_rows_inserted_total{type=\"influx\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until VictoriaMetrics took in `want` rows; returns when the last
/// rows arrived (from `t0`) and the peak RSS of `pid` meanwhile.
async fn wait_rows(
    port: u16,
    want: u64,
    limit: Duration,
    t0: Instant,
    pid: u32,
) -> (u64, f64, u64) {
    let deadline = Instant::now() + limit;
    let (mut last, mut at, mut peak) = (0, 0.0, 0);
    while Instant::now() < deadline {
        let n = vm_rows(port);
        if n != last {
            last = n;
            at = t0.elapsed().as_secs_f64();
        }
        peak = peak.max(proc_field(pid, "status", "VmHWM:"));
        if n >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (last, at, peak)
}

/// The InfluxDB figures: live points/s into VictoriaMetrics with both
/// sinks on, and the drain of a backlog kept for InfluxDB.
async fn influx_figures(mqtt_port: u16) {
    let live_n = env_u64("WARDGATE_BENCH_INFLUX_LIVE", 200_000);
    let backlog_n = env_u64("WARDGATE_BENCH_INFLUX_BACKLOG", 1_000_000);
    let vm_dir = tempfile::tempdir().unwrap();
    let Some((_vm, vm_port)) = victoria(vm_dir.path()) else {
        println!("InfluxDB figures skipped: victoria-metrics is not installed (apt install victoria-metrics)");
        return;
    };
    println!("InfluxDB sink into VictoriaMetrics on loopback (gzip, max_batch 1000)");
    // A sim UPS reading is 8 values + seq = 9 fields, 9 rows in VictoriaMetrics.
    const SIM_ROWS: u64 = 9;
    let dir = tempfile::tempdir().unwrap();
    let influx = format!(
        "[influxdb]\nurl = \"http://127.0.0.1:{vm_port}\"\norg = \"ioc\"\nbucket = \"wards\"\n"
    );
    let text = format!(
        "site = \"bench\"\n[gateway]\nsystem_health = false\n[mqtt]\nhost = \"127.0.0.1\"\nport = {mqtt_port}\n[spool]\npath = \"{}\"\n{influx}\
         [[device]]\nid = \"ups1\"\ntype = \"sim\"\ninterval = \"1ms\"\nsamples_per_tick = 400\ncount = {live_n}\n",
        dir.path().join("spool.db").display()
    );
    let rows0 = vm_rows(vm_port);
    let t0 = Instant::now();
    let gw = start_gateway(dir.path(), &text);
    let pid = gw.0.id();
    while vm_rows(vm_port) == rows0 && t0.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first = t0.elapsed().as_secs_f64();
    let want = rows0 + live_n * SIM_ROWS;
    let (rows, at, _) = wait_rows(vm_port, want, Duration::from_secs(180), t0, pid).await;
    drop(gw);
    let points = (rows - rows0) / SIM_ROWS;
    let span = (at - first).max(0.001);
    println!(
        "influx live throughput:   {:>10.0} points/s ({points} points, {} rows, in {span:.2} s, MQTT on too{})",
        points as f64 / span,
        rows - rows0,
        if rows >= want { "" } else { ", INCOMPLETE" }
    );

    // A backlog kept for InfluxDB alone (MQTT had it all): its drain.
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "site = \"bench\"\n[gateway]\nsystem_health = false\n[mqtt]\nhost = \"127.0.0.1\"\nport = {mqtt_port}\n[spool]\npath = \"{}\"\nmax_bytes = \"2 GiB\"\n{influx}",
        dir.path().join("spool.db").display()
    );
    let cfg = Config::from_toml(&text).unwrap();
    let t = Instant::now();
    fill_backlog(&cfg, Lane::Influx, backlog_n);
    println!(
        "influx backlog prepared:  {:>10} readings ({:.1} s)",
        backlog_n,
        t.elapsed().as_secs_f64()
    );
    // 6 values + seq = 7 rows per reading.
    let rows0 = vm_rows(vm_port);
    let want = rows0 + backlog_n * 7;
    let t0 = Instant::now();
    let gw = start_gateway(dir.path(), &text);
    let pid = gw.0.id();
    let (rows, at, peak) = wait_rows(vm_port, want, Duration::from_secs(600), t0, pid).await;
    drop(gw);
    let got = (rows - rows0) / 7;
    println!(
        "influx backlog drain:     {:>10.2} s  ({got} of {backlog_n} readings, {:.0} points/s, from process start{})",
        at,
        got as f64 / at.max(0.001),
        if rows >= want { "" } else { ", INCOMPLETE" }
    );
    println!(
        "peak RSS during drain:    {:>10} KiB ({:.1} MiB)",
        peak,
        peak as f64 / 1024.0
    );
}

async fn wait_count(n: &AtomicU64, want: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while n.load(Ordering::Relaxed) < want {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

#[tokio::main]
async fn main() {
    let live_n = env_u64("WARDGATE_BENCH_LIVE", 500_000);
    let backlog_n = env_u64("WARDGATE_BENCH_BACKLOG", 1_000_000);
    let tmp = tempfile::tempdir().unwrap();
    let (_broker, port) = mosquitto(tmp.path());
    if std::env::var("WARDGATE_BENCH_ONLY_INFLUX").is_ok() {
        influx_figures(port).await;
        return;
    }
    println!("wardgate pipeline benchmark (release build, mosquitto on loopback)");

    // Live: one simulated device offering 400 samples per millisecond tick (more than the path carries, so the figure is the ceiling).
    let dir = tempfile::tempdir().unwrap();
    let (count, last_ms) = counter(port, false).await;
    let text = format!(
        "site = \"bench\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n[spool]\npath = \"{}\"\n\
         [[device]]\nid = \"ups1\"\ntype = \"sim\"\ninterval = \"1ms\"\nsamples_per_tick = 400\ncount = {live_n}\n",
        dir.path().join("spool.db").display()
    );
    let t0 = Instant::now();
    let gw = start_gateway(dir.path(), &text);
    let pid = gw.0.id();
    // Disk writes are counted from the first sample, after start-up.
    wait_count(&count, 1, Duration::from_secs(20)).await;
    let first_ms = t0.elapsed().as_millis() as u64;
    let io0 = proc_field(pid, "io", "write_bytes:");
    let ok = wait_count(&count, live_n, Duration::from_secs(120)).await;
    let io1 = proc_field(pid, "io", "write_bytes:");
    let got = count.load(Ordering::Relaxed);
    let span = (last_ms.load(Ordering::Relaxed).saturating_sub(first_ms)).max(1) as f64 / 1000.0;
    let rss_live = proc_field(pid, "status", "VmHWM:");
    drop(gw);
    println!(
        "live throughput:          {:>10.0} samples/s  ({got} samples in {span:.2} s{})",
        got as f64 / span,
        if ok { "" } else { ", INCOMPLETE" }
    );
    println!(
        "disk written while healthy: {:>8.3} bytes/sample ({} bytes for {got} samples)",
        (io1.saturating_sub(io0)) as f64 / got.max(1) as f64,
        io1.saturating_sub(io0)
    );
    println!("peak RSS, live run:       {:>10} KiB", rss_live);

    // Backlog: fill a spool with samples as a long outage would, then start
    // the gateway against the broker and time the drain.
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "site = \"bench\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n[spool]\npath = \"{}\"\nmax_bytes = \"2 GiB\"\n",
        dir.path().join("spool.db").display()
    );
    let cfg = Config::from_toml(&text).unwrap();
    let t = Instant::now();
    fill_backlog(&cfg, Lane::Mqtt, backlog_n);
    let db_bytes = std::fs::metadata(dir.path().join("spool.db"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "backlog prepared:         {:>10} samples, {:.1} MiB on disk ({:.1} s)",
        backlog_n,
        db_bytes as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );
    let (count, _) = counter(port, true).await;
    let t = Instant::now();
    let gw = start_gateway(dir.path(), &text);
    let pid = gw.0.id();
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while count.load(Ordering::Relaxed) < backlog_n && Instant::now() < deadline {
        peak = peak.max(proc_field(pid, "status", "VmHWM:"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = t.elapsed().as_secs_f64();
    peak = peak.max(proc_field(pid, "status", "VmHWM:"));
    let got = count.load(Ordering::Relaxed);
    drop(gw);
    println!(
        "backlog drain:            {:>10.2} s  ({got} of {backlog_n} samples, {:.0} samples/s, from process start)",
        drained,
        got as f64 / drained
    );
    println!(
        "peak RSS during drain:    {:>10} KiB ({:.1} MiB)",
        peak,
        peak as f64 / 1024.0
    );
    influx_figures(port).await;
}

/// Fills the spool of `cfg` with `n` UPS samples for the sink `lane`, as a
/// long outage would, committing every 50,000.
fn fill_backlog(cfg: &Config, lane: Lane, n: u64) {
    let (spool, _) = Spool::open(&cfg.spool, "bench", &[lane]).unwrap();
    let dev: Arc<str> = Arc::from("ups1");
    let mut v = Values::new();
    v.set("ups.status", "OL");
    v.num("ups.load", 23.0);
    v.num("battery.charge", 100.0);
    v.num("battery.runtime", 3600.0);
    v.num("input.voltage", 229.5);
    v.num("output.voltage", 230.0);
    for i in 0..n {
        spool.push(&dev, Reading::Sample(v.clone())).unwrap();
        if i % 50_000 == 49_999 {
            spool.flush(true).unwrap();
        }
    }
    spool.close().unwrap();
}
