//! Fault-injection suite: runs the real `wardgate` binary (any build: the
//! path comes from `--bin PATH` or `WARDGATE_BIN`, default the
//! `target/release/wardgate` that `cargo test --release` builds) against a real
//! mosquitto on loopback, injects one kind of fault per scenario, and
//! accounts for every reading.
//!
//! Run with `scripts/faults [--short] [--only NAME[,NAME]] [--list]`
//! (which is `cargo test --release --test faults -- …`). `--short` is the quick
//! version the test suite runs; without it the runs are long (kill -9 × 200,
//! 20 broker restarts 20–40 s apart). `--figures` prints the slow-fsync
//! benchmark figures instead (used by `scripts/bench`); `--self-test` checks
//! the accounting rule on made-up messages (it also runs before every
//! suite); `--planted` is the suite's own check: a binary built with the
//! test-only feature `plant-faults` loses one record silently where
//! `WARDGATE_PLANT` says, and the scenario meant to catch it must FAIL
//! (see [`PLANTED`]).
//!
//! The load is two simulated devices (`sim`): `ups1` every 20 ms with an
//! event every 50 samples, `env1` every 50 ms with an event every 20, plus
//! the gateway's own telemetry every second. Only configuration keys that
//! every binary since the spine accepts are used (unknown keys are errors),
//! so the same harness measures builds from before and after issue 10.
//! Each scenario's own expectation is in the doc comment of its function.
//!
//! # Accounting (the same rule for every scenario)
//!
//! A subscriber with a persistent session (clean_session = false, QoS 1)
//! records every message on `{prefix}/#`. Every message must parse as JSON
//! and follow its JSON Schema in docs/schema/ (by topic: telemetry, event,
//! status, inventory, command reply); one that does not is a FAIL on its
//! own. Each telemetry and event record is keyed by
//! `(device, kind, epoch, seq)`; `epoch` is the envelope's `"epoch"` field,
//! `""` when absent (binaries from before issue 10).
//!
//! A message the broker itself delivers to the subscriber a second time
//! (it restarted before the subscriber's PUBACK reached it: same packet id,
//! DUP set, same bytes) is the broker's copy, not the gateway's: it is not
//! kept, and counted apart in a note ("broker redeliveries to the
//! recorder").
//!
//! - **delivered**: distinct keys received.
//! - **duplicates**: copies of a key beyond the first. A copy whose content
//!   (the record without its `historical` flag) differs from the first is
//!   **seq reused** and a FAIL on its own.
//! - **checked numbers**: for each `(device, kind, epoch)`, every number
//!   from 0 to the highest one received *or declared used*: a
//!   `gateway.unclean_stop`'s `seq_last_used` counts, so the newest
//!   readings of a stream (its tail) are checked, not only the gaps between
//!   numbers received. Every scenario ends with a closing run that reads
//!   the devices (its first numbers close the tails of the runs before
//!   it) and is killed, so that the final run's `gateway.unclean_stop`
//!   declares the closing run's own tail ([`Rig::drain`]).
//! - **declared unused**: for `seq_resumed.<dev>.<kind> = R` with
//!   `seq_last_used.<dev>.<kind> = L` the numbers `L+1 .. R-1` were never
//!   used; when the event has no `seq_last_used` (binaries from before
//!   issue 10) every number below `R` counts as unused.
//! - **which epoch an unclean stop speaks of**: its envelope's, except
//!   when the run that raised it could not write its positions at start
//!   and counts in an epoch of its own: a `gateway.sequence_reset` raised
//!   in the same run (by the harness's starts) announces the envelope's
//!   epoch with a `previous_epoch`, and the numbers declared are that
//!   previous epoch's (the one the positions file names, which the next
//!   run with a writable card resumes).
//! - **destroyed** (not counted at all): numbers the harness itself
//!   destroyed with a spool file it overwrote; that loss is the fault.
//! - **lost in a crash** (printed under the table, not in "lost
//!   (undeclared)"): a missing number of a run that was killed (from that
//!   run's resume point, the previous stop's `R`, else 0, up to its `L`)
//!   whose reading can only have been taken in a run the harness killed
//!   (after that run's start), within the loss bound before the kill -9: 3 s (spill_after + commit_interval) under
//!   spill, 1 s (commit_interval) under wal, plus 1 s of slack for a loaded
//!   machine. When the reading was taken is bounded from below by the
//!   received reading just before it in the same stream: `ts` of the
//!   highest received number `n0` below it, plus one stream period per
//!   used number between (the harness knows its load's periods:
//!   [`period_ms`]) less one per stop the harness made in between (a run
//!   may start right after the last one stopped), less 50 ms; with none
//!   received below, the first start of the scenario; and never earlier
//!   than the `ts` of the `gateway.unclean_stop` of the run that resumed
//!   at or below the number (raised before any source starts). A number missing at or below `L` whose reading
//!   was taken earlier (it must have been on the card) is undeclared loss.
//!   Only the kill -9 scenarios, `disk_full`'s one kill and every
//!   scenario's closing kill can excuse anything.
//! - **lost at a stop with the card unwritable** (`disk_full` only, in a
//!   note): the README's table promises that a full card loses only the
//!   readings that overflow memory (counted `write_failed`) or that were
//!   only in memory at a stop; the gateway declares the latter with
//!   `spool.degraded` (which must have arrived) and, as such a stop cannot
//!   be recorded as clean, the next unclean stop's `L`. So a missing
//!   number of a stopped run (in its crash range, up to `L`) is excused
//!   only when its reading can only have been in memory at that stop: by
//!   the same lower bound on its time as for a kill, taken within a span
//!   the harness declares ([`Known::degraded`]) that ends at that stop and
//!   begins when the card was made unwritable less the loss bound under
//!   spill (younger readings were not due on the card yet), or at the
//!   start of a run that began with the card full. A missing number taken
//!   earlier had to be on the card: undeclared loss, unless a
//!   `write_failed` drop counts it.
//! - **declared drops**, tied to what they declare, each reason on its own:
//!   `spool.quarantined` excuses the one record it names
//!   (`record.device`, `record.kind`, `record.seq`); `corrupt`
//!   (`spool.corrupt_record`, `spool.dropped.corrupt`) excuses only a row
//!   the harness damaged, one declaration per row (so `damaged_row`'s row
//!   is excused once, by the gateway's word, and an unexpected corrupt
//!   declaration excuses nothing); `write_failed` (the larger of the
//!   telemetry counter's growth and `spool.restored`'s `spool.lost`),
//!   `full` and `age` name no record and excuse that many of the remaining
//!   missing numbers. A counter's growth is summed over its series per
//!   epoch in `seq` order (a counter that goes down restarted and counts
//!   from 0). Declared drops that excused nothing are noted.
//! - **overstated** (in a note): a number at or below an `L` whose lower
//!   bound on its time is after the scenario's last stop cannot have been
//!   taken at all: the number was never used and `seq_last_used` said too
//!   much; not a loss.
//! - **missing**: checked numbers neither received, unused, destroyed nor
//!   lost in a crash; **lost (undeclared)**: missing less declared drops.
//!   **readings**: delivered + missing + lost in a crash.
//! - **verdict**: PASS when no seq is reused, every payload is JSON and
//!   follows its schema, nothing is lost undeclared (in every scenario) and
//!   the scenario's own expectation holds (printed under the table when it
//!   does not); else FAIL. SKIP when the machine cannot inject the fault
//!   (not root, no loop device): the scenario is also written to
//!   `target/skipped.txt` (`faults: <scenario>: <why>`), which CI's closing
//!   line prints; as root, where every fault must be injectable (CI runs as
//!   root), it is a FAIL instead, so a green run as root ran everything.
//!
//! Every scenario ends the same way ([`Rig::drain`]): the broker up, a
//! gateway still running stopped cleanly (SIGTERM, exit code 0 expected),
//! the closing run with the devices until the backlog is sent and every
//! device stream has new numbers, kill -9, the final run with no devices
//! (so nothing new is read) until its telemetry says the spool is empty, a
//! clean stop, then the harness waits for that stop's offline status, the
//! last message the gateway publishes (so everything it sent before has
//! arrived), and counts.

// A harness run as its own process, not the gateway: blocking sleeps and
// process::exit with the verdict are what it is for.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

// ---------------------------------------------------------------------------
// Options

#[derive(Clone)]
struct Opts {
    short: bool,
    bin: PathBuf,
    root: PathBuf,
    /// `--planted`: the loss `WARDGATE_PLANT` asks the planted binary for.
    plant: Option<String>,
}

impl Opts {
    /// `short` or `long` by mode.
    fn pick<T>(&self, short: T, long: T) -> T {
        if self.short {
            short
        } else {
            long
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid this process spawned and has not reaped.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Runs a command to completion; its stderr on failure.
fn sh(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn pct(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let i = ((p / 100.0) * (s.len() as f64 - 1.0)).round() as usize;
    Some(s[i.min(s.len() - 1)])
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.1} ms"))
        .unwrap_or_else(|| "n/a".into())
}

// ---------------------------------------------------------------------------
// Peers: mosquitto, the gateway process, mounts

/// Children and mounts alive right now, so that an interrupted run (Ctrl-C,
/// SIGTERM: the guards' Drop does not run then) still cleans up. Normal
/// cleanup is the guards' Drop, which also takes them off this list.
#[derive(PartialEq)]
enum Live {
    Pid(u32),
    Mount(PathBuf),
}

static LIVE: Mutex<Vec<Live>> = Mutex::new(Vec::new());

fn live(add: bool, what: Live) {
    let mut l = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    if add {
        l.push(what);
    } else {
        l.retain(|x| *x != what);
    }
}

/// Kills every child and unmounts every mount still listed.
fn clean_up_everything() {
    let l = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|e| e.into_inner()));
    for w in &l {
        if let Live::Pid(pid) = w {
            signal(*pid, libc::SIGCONT);
            signal(*pid, libc::SIGKILL);
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    for w in l.iter().rev() {
        if let Live::Mount(d) = w {
            let _ = sh("umount", &["-l", &d.to_string_lossy()]);
        }
    }
}

/// A real mosquitto with persistence, so the recorder's session and its
/// queued messages survive restarts (stopped with SIGTERM, which saves).
struct Broker {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    paused: bool,
}

impl Broker {
    fn start() -> Broker {
        Self::start_with("")
    }

    /// `extra`: more mosquitto.conf lines (e.g. `max_packet_size`).
    fn start_with(extra: &str) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let text = format!(
            "per_listener_settings false\nuser root\npersistence true\npersistence_location {d}/\nautosave_interval 1\nmax_queued_messages 0\nmax_inflight_messages 0\nlog_dest file {d}/mosquitto.log\nlistener {port} 127.0.0.1\nallow_anonymous true\n{extra}",
            d = dir.path().display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), text).expect("mosquitto.conf");
        let mut b = Broker {
            port,
            dir,
            child: None,
            paused: false,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        if self.child.is_some() {
            return;
        }
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto must be installed (apt-get install mosquitto)");
        live(true, Live::Pid(child.id()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(&mut self) {
        self.resume();
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGTERM);
            let _ = c.wait();
            live(false, Live::Pid(c.id()));
        }
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }

    /// A hung broker: the socket stays open, nothing is read or acknowledged.
    fn pause(&mut self) {
        if let Some(c) = &self.child {
            signal(c.id(), libc::SIGSTOP);
            self.paused = true;
        }
    }

    fn resume(&mut self) {
        if let (Some(c), true) = (&self.child, self.paused) {
            signal(c.id(), libc::SIGCONT);
        }
        self.paused = false;
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.resume();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            live(false, Live::Pid(c.id()));
        }
    }
}

/// The binary under test, run as a child process.
struct Gateway {
    bin: PathBuf,
    cfg: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    runs: u32,
    /// When each run started (to say which run sent a copy).
    starts: Vec<Instant>,
    /// The exit code of the last run that ended by itself or on a signal.
    last_exit: Option<Option<i32>>,
    /// Wall ms of each start.
    starts_wall: Vec<i64>,
    /// Each kill -9 of a running gateway: (wall ms, the loss bound of its
    /// policy in ms, wall ms of the killed run's start).
    kills: Vec<(i64, i64, i64)>,
    /// The running configuration has `policy = "wal"`.
    wal: bool,
    /// Wall ms of every stop of a running gateway (kill -9 or SIGTERM).
    stops: Vec<i64>,
}

impl Gateway {
    fn start(&mut self, config: &str) {
        self.kill9();
        std::fs::write(&self.cfg, config).expect("write config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("run")
            .arg("--config")
            .arg(&self.cfg)
            .env("WARDGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn the wardgate binary");
        live(true, Live::Pid(child.id()));
        self.child = Some(child);
        self.runs += 1;
        self.starts.push(Instant::now());
        self.starts_wall.push(now_ms());
        self.wal = config.contains("policy = \"wal\"");
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            if matches!(c.try_wait(), Ok(None)) {
                let bound = if self.wal {
                    CRASH_WINDOW_WAL_MS
                } else {
                    CRASH_WINDOW_SPILL_MS
                };
                let started = self.starts_wall.last().copied().unwrap_or(0);
                self.kills.push((now_ms(), bound, started));
                self.stops.push(now_ms());
            }
            let _ = c.kill();
            let _ = c.wait();
            live(false, Live::Pid(c.id()));
        }
    }

    /// None while running, Some(exit code) once it ended (it is reaped).
    fn exited(&mut self) -> Option<Option<i32>> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(st)) => {
                live(false, Live::Pid(c.id()));
                self.child = None;
                self.last_exit = Some(st.code());
                Some(st.code())
            }
            _ => None,
        }
    }

    /// How the last run ended: None while it runs (or never ran).
    fn exit_code(&mut self) -> Option<Option<i32>> {
        self.exited().or(if self.child.is_none() {
            self.last_exit
        } else {
            None
        })
    }

    fn running(&mut self) -> bool {
        self.child.is_some() && self.exited().is_none()
    }

    /// SIGTERM and wait up to `limit`: Ok((exit code, time taken)); Err when
    /// it did not exit (it is then killed).
    async fn term(&mut self, limit: Duration) -> Result<(Option<i32>, Duration), String> {
        let Some(c) = &self.child else {
            return Err("was not running".into());
        };
        signal(c.id(), libc::SIGTERM);
        let t = Instant::now();
        loop {
            if let Some(code) = self.exited() {
                self.stops.push(now_ms());
                return Ok((code, t.elapsed()));
            }
            if t.elapsed() > limit {
                self.kill9();
                return Err(format!("did not exit within {limit:?} of SIGTERM"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
        // WARDGATE_FAULTS_KEEP=DIR keeps each gateway's log for a post-mortem.
        if let Some(dir) = std::env::var_os("WARDGATE_FAULTS_KEEP") {
            let name = format!("wardgate-{}-{}.log", std::process::id(), now_ms());
            let _ = std::fs::copy(&self.log, Path::new(&dir).join(name));
        }
    }
}

/// A file system mounted for one scenario, unmounted on drop.
struct Mount {
    dir: PathBuf,
    image: Option<PathBuf>,
}

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Result<Mount, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let d = dir.to_string_lossy().into_owned();
        sh(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", &d],
        )?;
        live(true, Live::Mount(dir.to_owned()));
        Ok(Mount {
            dir: dir.to_owned(),
            image: None,
        })
    }

    /// ext4 on a loop device with `errors=remount-ro`, as an SD card's root
    /// file system is mounted on Raspberry Pi OS.
    fn ext4(dir: &Path, image: &Path, mib: u64) -> Result<Mount, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let f = std::fs::File::create(image).map_err(|e| e.to_string())?;
        f.set_len(mib << 20).map_err(|e| e.to_string())?;
        drop(f);
        let img = image.to_string_lossy().into_owned();
        sh("mkfs.ext4", &["-q", "-F", &img])?;
        let m = Mount {
            dir: dir.to_owned(),
            image: Some(image.to_owned()),
        };
        m.mount_image()?;
        live(true, Live::Mount(dir.to_owned()));
        Ok(m)
    }

    fn mount_image(&self) -> Result<(), String> {
        let img = self.image.as_ref().ok_or("not an image")?;
        sh(
            "mount",
            &[
                "-o",
                "loop,errors=remount-ro",
                &img.to_string_lossy(),
                &self.dir.to_string_lossy(),
            ],
        )
    }

    fn remount(&self, mode: &str) -> Result<(), String> {
        sh(
            "mount",
            &[
                "-o",
                &format!("remount,{mode}"),
                &self.dir.to_string_lossy(),
            ],
        )
    }

    /// What a worn card does: the kernel hits an error and remounts the file
    /// system read-only under the running gateway (ext4's test hook).
    fn fail_to_read_only(&self) -> Result<(), String> {
        let out = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&self.dir)
            .output()
            .map_err(|e| e.to_string())?;
        let src = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let name = Path::new(&src)
            .file_name()
            .ok_or("no loop device")?
            .to_string_lossy()
            .into_owned();
        std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "faults")
            .map_err(|e| format!("trigger_fs_error on {name}: {e}"))
    }

    /// Unmounts, repairs and mounts the image again read-write.
    fn repair(&self) -> Result<(), String> {
        let d = self.dir.to_string_lossy().into_owned();
        sh("umount", &[&d])?;
        if let Some(img) = &self.image {
            // e2fsck exits 1 when it fixed something: not an error here.
            let _ = sh("e2fsck", &["-fy", &img.to_string_lossy()]);
        }
        self.mount_image()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let d = self.dir.to_string_lossy().into_owned();
        if sh("umount", &[&d]).is_err() {
            let _ = sh("umount", &["-l", &d]);
        }
        live(false, Live::Mount(self.dir.clone()));
    }
}

// ---------------------------------------------------------------------------
// The recorder

struct Rec {
    at: Instant,
    wall_ms: i64,
    topic: String,
    retain: bool,
    payload: Vec<u8>,
}

impl Rec {
    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.payload).ok()
    }

    fn is_status_online(&self) -> bool {
        !self.retain
            && self.topic.ends_with("/status")
            && self.json().is_some_and(|v| v["state"] == "online")
    }

    /// The offline status a clean stop publishes (`"reason":"shutdown"`,
    /// or `"power"`; binaries from before the reason have none): not the
    /// broker's last will (`"lost"`).
    fn is_status_offline_clean(&self) -> bool {
        !self.retain
            && self.topic.ends_with("/status")
            && self
                .json()
                .is_some_and(|v| v["state"] == "offline" && v["reason"] != "lost")
    }

    /// A live (not historical) sample of `device`.
    fn is_live(&self, device: &str) -> bool {
        self.topic.ends_with(&format!("/{device}/telemetry"))
            && contains(&self.payload, b"\"historical\":false")
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A durable subscriber (clean_session = false, QoS 1) on `ioc/#` that keeps
/// every message with its arrival time. The broker's own redelivery of a
/// message to the recorder (it restarted before the recorder's PUBACK
/// reached it: same packet id, DUP set, same bytes) is the broker's copy,
/// not the gateway's: it is counted apart and not kept.
struct Recorder {
    recs: Arc<Mutex<Vec<Rec>>>,
    redelivered: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start(port: u16) -> Recorder {
        let recs: Arc<Mutex<Vec<Rec>>> = Arc::default();
        let mut o = MqttOptions::new(
            format!("faults-rec-{}", rand::random::<u32>()),
            "127.0.0.1",
            port,
        );
        o.set_clean_session(false);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(64 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(o, 100);
        let subscribed = Arc::new(tokio::sync::Notify::new());
        let (r2, s2) = (recs.clone(), subscribed.clone());
        let redelivered: Arc<AtomicU64> = Arc::default();
        let redelivered2 = redelivered.clone();
        let task = tokio::spawn(async move {
            // The last message kept under each packet id.
            let mut by_pkid: HashMap<u16, usize> = HashMap::new();
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        if !ack.session_present {
                            let _ = client.try_subscribe("ioc/#", QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => s2.notify_one(),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let mut v = r2.lock().unwrap_or_else(|e| e.into_inner());
                        let again = p.dup
                            && by_pkid.get(&p.pkid).is_some_and(|&i| {
                                v[i].topic == p.topic && v[i].payload[..] == p.payload[..]
                            });
                        if again {
                            redelivered2.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        if p.pkid != 0 {
                            by_pkid.insert(p.pkid, v.len());
                        }
                        v.push(Rec {
                            at: Instant::now(),
                            wall_ms: now_ms(),
                            topic: p.topic.clone(),
                            retain: p.retain,
                            payload: p.payload.to_vec(),
                        });
                    }
                    Ok(_) => {}
                    // The broker is down or restarting: retry soon, as the
                    // reconnect figures are measured from what arrives here.
                    Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed.notified())
            .await
            .expect("recorder subscribed");
        Recorder {
            recs,
            redelivered,
            task,
        }
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Rec>> {
        self.recs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Index of the first record from `from` on that satisfies `pred`.
    fn find(&self, from: usize, pred: &dyn Fn(&Rec) -> bool) -> Option<usize> {
        let v = self.lock();
        (from..v.len()).find(|&i| pred(&v[i]))
    }

    /// Polls until a record from `from` on satisfies `pred`.
    async fn wait_for(
        &self,
        from: usize,
        limit: Duration,
        pred: &dyn Fn(&Rec) -> bool,
    ) -> Option<usize> {
        let deadline = Instant::now() + limit;
        let mut scanned = from;
        loop {
            let n = self.len();
            if let Some(i) = self.find(scanned, pred) {
                return Some(i);
            }
            scanned = n;
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until nothing new arrived for `quiet` (at most `limit`).
    async fn settle(&self, quiet: Duration, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut n = self.len();
        let mut since = Instant::now();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let m = self.len();
            if m != n {
                n = m;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return;
            }
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------
// Accounting

type Stream = (String, &'static str, String);
/// (device, kind, epoch, seq): one record.
type RecordKey = (String, &'static str, String, u64);

#[derive(Default)]
struct Account {
    readings: u64,
    delivered: u64,
    duplicates: u64,
    /// The most copies any one record arrived in, and one such record.
    max_copies: u64,
    max_copies_example: String,
    /// When each copy of that record arrived, and whether it was marked
    /// historical.
    max_copies_at: Vec<(Instant, bool)>,
    reused: u64,
    reused_examples: Vec<String>,
    invalid_json: u64,
    invalid_examples: Vec<String>,
    /// Messages that break their JSON Schema (docs/schema/).
    schema_invalid: u64,
    schema_examples: Vec<String>,
    /// Missing numbers not lost in a crash (nor destroyed by the harness):
    /// the declared drops are counted among them.
    missing: u64,
    missing_examples: Vec<String>,
    /// Missing numbers lost in a kill -9: at or below that stream's
    /// `seq_last_used` and taken within the loss bound before a kill.
    crash: u64,
    /// The same per stream ("ups1 samples epoch …: N"), largest first.
    crash_by_stream: Vec<String>,
    /// Missing numbers at or below a `seq_last_used` not shown to have been
    /// taken in a killed run within the loss bound (among `missing`).
    too_old_for_crash: u64,
    /// Missing numbers at or below a `seq_last_used` that can only have
    /// been in memory at a stop with the card unwritable (within a span of
    /// `Known::degraded`; declared by `spool.degraded` and the unclean
    /// stop).
    degraded_stop: u64,
    /// Numbers at or below a `seq_last_used` that, by the lower bound on
    /// their time, cannot have been taken before the scenario's last
    /// stop: never used, so `seq_last_used` said too much (noted).
    overstated: u64,
    /// Missing numbers excused by a drop the gateway declared, and how
    /// many of each reason ("too_large 1, corrupt 1").
    declared_drops: u64,
    declared_by_reason: BTreeMap<&'static str, u64>,
    /// Declared drops that excused nothing (more declared than missing).
    declared_unused: BTreeMap<&'static str, u64>,
    undeclared: u64,
}

/// Numbers the harness destroyed itself, per (device, kind) (any epoch).
type Destroyed = BTreeSet<(String, &'static str, u64)>;

/// What the harness knows besides the messages.
#[derive(Default, Clone)]
struct Known {
    /// Rows it destroyed with a file it overwrote: not the gateway's loss,
    /// and no declaration of each is expected.
    destroyed: Destroyed,
    /// Rows it damaged on disk: the gateway must declare each one
    /// (`spool.corrupt_record`, reason corrupt); each declaration excuses
    /// one damaged row, and only a damaged row.
    damaged: Destroyed,
    /// Each kill -9 of a running gateway: (wall ms, the policy's loss bound
    /// in ms, slack included, wall ms of the killed run's start).
    kills: Vec<(i64, i64, i64)>,
    /// Wall ms of the scenario's first gateway start.
    first_start_ms: i64,
    /// Wall ms of every gateway start (which run raised an event).
    starts: Vec<i64>,
    /// Wall ms of every stop of a running gateway (kill -9 or SIGTERM).
    stops: Vec<i64>,
    /// Spans (wall ms) in which a reading, by the lower bound on its time,
    /// can only have been in memory at the stop that ends the span, the
    /// card being unwritable (`disk_full`: from the fill less the loss
    /// bound to the SIGTERM with the card full; the restart with the card
    /// full, start to kill): the loss a degraded store declares
    /// (`spool.degraded`, then `gateway.unclean_stop` with `seq_last_used`,
    /// as the stop could not be recorded as clean).
    degraded: Vec<(i64, i64)>,
    /// Whether any run had the heavy load (ups1 ten samples a tick).
    heavy: bool,
}

/// The loss bound after a kill -9 (README, "What a power cut can lose"):
/// spill_after + commit_interval = 3 s under spill, one commit_interval
/// (1 s) under wal, each plus 1 s for a loaded 2-core machine (a commit's
/// fsync, a late timer).
const CRASH_WINDOW_SPILL_MS: i64 = 3000 + 1000;
const CRASH_WINDOW_WAL_MS: i64 = 1000 + 1000;

/// The shortest time between two consecutive numbers of a stream of the
/// harness's load, in ms (0: no lower bound, e.g. the gateway's events).
/// The sim reads on a tokio interval that skips missed ticks, the
/// gateway's telemetry on one that delays them: neither bunches up, so
/// `k` numbers after one taken at `t` were taken no earlier than
/// `t + k × period − 50 ms` (the slack covers a tick realigned after a
/// late one).
fn period_ms(device: &str, kind: &str, heavy: bool) -> i64 {
    match (device, kind) {
        ("ups1", "samples") if heavy => 2,
        ("ups1", "samples") => 20,
        ("ups1", "events") if heavy => 100,
        ("ups1", "events") => 1000,
        ("env1", "samples") => 50,
        ("env1", "events") => 1000,
        ("gateway", "samples") => 1000,
        _ => 0,
    }
}

fn kind_of(topic: &str) -> Option<(&'static str, &'static str)> {
    if topic.ends_with("/telemetry") {
        Some(("samples", "samples"))
    } else if topic.ends_with("/event") {
        Some(("events", "events"))
    } else {
        None
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// The contract's JSON Schemas (docs/schema/), as tests/it/common/mod.rs
/// loads them.
struct Schemas {
    telemetry: jsonschema::Validator,
    event: jsonschema::Validator,
    status: jsonschema::Validator,
    inventory: jsonschema::Validator,
    reply: jsonschema::Validator,
}

impl Schemas {
    fn get() -> &'static Schemas {
        static S: std::sync::OnceLock<Schemas> = std::sync::OnceLock::new();
        S.get_or_init(|| {
            let load = |name: &str| {
                let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("docs/schema")
                    .join(name);
                let text = std::fs::read_to_string(&path).expect("schema file");
                let v: Value = serde_json::from_str(&text).expect("schema is JSON");
                jsonschema::validator_for(&v).expect("schema compiles")
            };
            Schemas {
                telemetry: load("telemetry.schema.json"),
                event: load("event.schema.json"),
                status: load("status.schema.json"),
                inventory: load("inventory.schema.json"),
                reply: load("command-reply.schema.json"),
            }
        })
    }

    /// What is wrong with one message the gateway published, if anything.
    fn check(&self, topic: &str, body: &Value) -> Option<String> {
        let v = if topic.ends_with("/telemetry") {
            &self.telemetry
        } else if topic.ends_with("/event") {
            &self.event
        } else if topic.ends_with("/status") {
            &self.status
        } else if topic.ends_with("/inventory") {
            &self.inventory
        } else if topic.ends_with("/reply") {
            &self.reply
        } else {
            return Some(format!("{topic}: not a topic of the contract"));
        };
        let errs: Vec<String> = v.iter_errors(body).map(|e| e.to_string()).collect();
        (!errs.is_empty()).then(|| {
            let text: String = body.to_string().chars().take(160).collect();
            format!("{topic}: {text}…: {}", errs.join("; "))
        })
    }
}

/// The drop reasons the gateway reports (`spool.dropped.<reason>`).
const REASONS: [&str; 5] = ["full", "age", "write_failed", "corrupt", "too_large"];

fn account(recs: &[Rec], known: &Known) -> Account {
    let mut a = Account::default();
    let schemas = Schemas::get();
    let mut seen: HashMap<RecordKey, String> = HashMap::new();
    let mut copies: HashMap<RecordKey, Vec<(Instant, bool)>> = HashMap::new();
    // stream -> seq -> the reading's ts
    let mut streams: BTreeMap<Stream, BTreeMap<u64, Option<i64>>> = BTreeMap::new();
    // stream -> (seq_resumed, seq_last_used) of each unclean stop
    let mut declared: BTreeMap<Stream, Vec<(u64, Option<u64>)>> = BTreeMap::new();
    // stream -> (seq_resumed, the unclean_stop event's ts): every number
    // from R on was taken after that event (it is raised before any
    // source starts).
    let mut resumed_at: BTreeMap<Stream, Vec<(u64, i64)>> = BTreeMap::new();
    // reason -> epoch -> gateway telemetry seq -> counter
    let mut drop_counter: BTreeMap<&'static str, BTreeMap<String, BTreeMap<u64, f64>>> =
        BTreeMap::new();
    // Each unclean_stop: (its envelope's epoch, its ts, its values), and
    // each sequence_reset: (the epoch it announces, previous_epoch, ts).
    let mut unclean: Vec<(String, Option<i64>, Value)> = Vec::new();
    let mut resets: Vec<(String, Option<String>, Option<i64>)> = Vec::new();
    let mut corrupt_events = 0f64;
    let mut degraded_seen = false;
    let mut restored_lost = 0f64;
    // (device, kind, seq) set aside as too large, as the event names it.
    let mut quarantined: BTreeSet<(String, &'static str, u64)> = BTreeSet::new();
    for r in recs {
        let body: Value = match serde_json::from_slice(&r.payload) {
            Ok(v) => v,
            Err(e) => {
                a.invalid_json += 1;
                if a.invalid_examples.len() < 3 {
                    let text = String::from_utf8_lossy(&r.payload);
                    let short: String = text.chars().take(120).collect();
                    a.invalid_examples
                        .push(format!("{}: {e}: {short}…", r.topic));
                }
                continue;
            }
        };
        if let Some(why) = schemas.check(&r.topic, &body) {
            a.schema_invalid += 1;
            if a.schema_examples.len() < 3 {
                a.schema_examples.push(why);
            }
        }
        let Some((kind, array)) = kind_of(&r.topic) else {
            continue;
        };
        let device = body["device"].as_str().unwrap_or("?").to_owned();
        let epoch = body["epoch"].as_str().unwrap_or("").to_owned();
        let Some(items) = body[array].as_array() else {
            continue;
        };
        for item in items {
            let Some(seq) = item["seq"].as_u64() else {
                continue;
            };
            let mut plain = item.clone();
            if let Some(o) = plain.as_object_mut() {
                o.remove("historical");
            }
            let content = plain.to_string();
            let key = (device.clone(), kind, epoch.clone(), seq);
            let times = copies.entry(key.clone()).or_default();
            times.push((r.at, item["historical"].as_bool().unwrap_or(false)));
            if times.len() as u64 > a.max_copies {
                a.max_copies = times.len() as u64;
                a.max_copies_example = format!("{device} {kind} epoch {epoch:?} seq {seq}");
                a.max_copies_at = times.clone();
            }
            match seen.get(&key) {
                Some(prev) => {
                    a.duplicates += 1;
                    if *prev != content {
                        a.reused += 1;
                        if a.reused_examples.len() < 3 {
                            let cut = |t: &str| t.chars().take(90).collect::<String>();
                            a.reused_examples.push(format!(
                                "{device} {kind} epoch {epoch:?} seq {seq}: {}… vs {}…",
                                cut(prev),
                                cut(&content)
                            ));
                        }
                    }
                    continue;
                }
                None => {
                    seen.insert(key, content);
                }
            }
            streams
                .entry((device.clone(), kind, epoch.clone()))
                .or_default()
                .insert(seq, item["ts"].as_i64());
            if device == "gateway" && kind == "samples" {
                let vals = &item["values"];
                for reason in REASONS {
                    if let Some(t) = num(&vals[format!("spool.dropped.{reason}")]) {
                        drop_counter
                            .entry(reason)
                            .or_default()
                            .entry(epoch.clone())
                            .or_default()
                            .insert(seq, t);
                    }
                }
            }
            if device == "gateway" && kind == "events" {
                let vals = &item["values"];
                match item["code"].as_str().unwrap_or("") {
                    "gateway.unclean_stop" => {
                        unclean.push((epoch.clone(), item["ts"].as_i64(), vals.clone()))
                    }
                    "gateway.sequence_reset" => resets.push((
                        vals["epoch"].as_str().unwrap_or("").to_owned(),
                        vals["previous_epoch"].as_str().map(str::to_owned),
                        item["ts"].as_i64(),
                    )),
                    "spool.corrupt_record" => {
                        corrupt_events += num(&vals["spool.records"]).unwrap_or(1.0)
                    }
                    "spool.quarantined" => {
                        let dev = vals["record.device"].as_str().unwrap_or("?").to_owned();
                        let k = if vals["record.kind"] == "events" {
                            "events"
                        } else {
                            "samples"
                        };
                        if let Some(s) = num(&vals["record.seq"]) {
                            quarantined.insert((dev, k, s as u64));
                        }
                    }
                    "spool.restored" => restored_lost += num(&vals["spool.lost"]).unwrap_or(0.0),
                    "spool.degraded" => degraded_seen = true,
                    _ => {}
                }
            }
        }
    }
    a.delivered = seen.len() as u64;

    // What each unclean stop declares, by the epoch it speaks of: its own
    // envelope's, except when the run that raised it could not keep its
    // positions and counts in an epoch of its own, announced by a
    // sequence_reset raised in the same run (by the starts the harness
    // made): the numbers are then the previous epoch's, the one the
    // positions file names.
    let run_of = |t: Option<i64>| t.map(|t| known.starts.iter().filter(|&&s| s <= t).count());
    for (env_epoch, ts, vals) in &unclean {
        let epoch = resets
            .iter()
            .find(|(e, prev, rts)| e == env_epoch && prev.is_some() && run_of(*rts) == run_of(*ts))
            .and_then(|(_, prev, _)| prev.clone())
            .unwrap_or_else(|| env_epoch.clone());
        let Some(o) = vals.as_object() else { continue };
        for (k, v) in o {
            let Some(rest) = k.strip_prefix("seq_resumed.") else {
                continue;
            };
            let Some((dev, kname)) = rest.rsplit_once('.') else {
                continue;
            };
            let kind: &'static str = match kname {
                "samples" => "samples",
                "events" => "events",
                _ => continue,
            };
            let Some(resumed) = num(v) else { continue };
            let last = num(&vals[format!("seq_last_used.{rest}")]);
            let stream = (dev.to_owned(), kind, epoch.clone());
            declared
                .entry(stream.clone())
                .or_default()
                .push((resumed as u64, last.map(|l| l as u64)));
            if let Some(t) = ts {
                resumed_at
                    .entry(stream)
                    .or_default()
                    .push((resumed as u64, *t));
            }
        }
    }

    // Each reason's declared count: the growth of its telemetry counter
    // (a counter that goes down restarted and counts from 0), or the
    // events' count where larger (the two say the same drops).
    let mut budget: BTreeMap<&'static str, u64> = BTreeMap::new();
    for reason in REASONS {
        let mut n = 0f64;
        for series in drop_counter
            .get(reason)
            .into_iter()
            .flat_map(|m| m.values())
        {
            let mut prev = 0f64;
            for &t in series.values() {
                n += if t >= prev { t - prev } else { t };
                prev = t;
            }
        }
        let n = match reason {
            "corrupt" => n.max(corrupt_events),
            "write_failed" => n.max(restored_lost),
            _ => n,
        };
        budget.insert(reason, n.round() as u64);
    }
    // Missing numbers excused by a reason that names no record.
    let mut unexplained = 0u64;

    let all_streams: BTreeSet<Stream> = streams.keys().chain(declared.keys()).cloned().collect();
    let empty = BTreeMap::new();
    let mut crash_by_stream: Vec<(u64, String)> = Vec::new();
    for stream in &all_streams {
        let got = streams.get(stream).unwrap_or(&empty);
        let crash_before = a.crash;
        let stops = declared.get(stream).cloned().unwrap_or_default();
        // Numbers declared unused: (L, R) exclusive, or [0, R) when the
        // event has no seq_last_used.
        let mut unused: Vec<(u64, u64)> = stops
            .iter()
            .map(|&(r, l)| (l.map(|l| l + 1).unwrap_or(0), r))
            .filter(|(lo, hi)| lo < hi)
            .collect();
        unused.sort();
        let is_unused = |s: u64| unused.iter().find(|&&(lo, hi)| s >= lo && s < hi).copied();
        // Used numbers in (lo, hi].
        let used_between = |lo: Option<u64>, hi: u64| -> i64 {
            let from = lo.map(|l| l + 1).unwrap_or(0);
            let mut n = hi + 1 - from.min(hi + 1);
            for &(ulo, uhi) in &unused {
                let (a, b) = (ulo.max(from), uhi.min(hi + 1));
                if a < b {
                    n -= b - a;
                }
            }
            n as i64
        };
        // The run that crashed: from where it resumed (the previous stop's
        // R, else 0) to its last used number L, inclusive.
        let crash: Vec<(u64, u64)> = stops
            .iter()
            .filter_map(|&(_, l)| {
                let l = l?;
                let from = stops
                    .iter()
                    .map(|&(r2, _)| r2)
                    .filter(|&r2| r2 <= l)
                    .max()
                    .unwrap_or(0);
                Some((from, l + 1))
            })
            .collect();
        let period = period_ms(&stream.0, stream.1, known.heavy);
        // The earliest the reading numbered `s` can have been taken.
        let floors = resumed_at.get(stream).cloned().unwrap_or_default();
        // The earliest the reading numbered `s` can have been taken, if it
        // was taken before `until` (a stop): one period per used number
        // after the received one below it, except that a run may start
        // right after the one before stopped (one number per stop between
        // does not count); and no earlier than the unclean_stop event of
        // the run it was taken in or after.
        let earliest = |s: u64, until: i64| -> i64 {
            let (base, lo) = match got.range(..s).next_back() {
                Some((&lo, Some(ts))) => (*ts, Some(lo)),
                _ => (known.first_start_ms, None),
            };
            let stops = known
                .stops
                .iter()
                .filter(|&&t| t > base && t < until)
                .count() as i64;
            let spaced = base + (used_between(lo, s) - stops).max(0) * period - 50;
            let floor = floors
                .iter()
                .filter(|&&(r, _)| r <= s)
                .map(|&(_, t)| t)
                .max()
                .unwrap_or(i64::MIN);
            spaced.max(floor)
        };
        // Taken in a run that was killed, within the loss bound before
        // the kill.
        let near_kill = |s: u64| {
            known.kills.iter().any(|&(k, w, started)| {
                let t = earliest(s, k);
                t >= started - 50 && t <= k && k - t <= w
            })
        };
        // Only in memory at a stop with the card unwritable: taken within a
        // span that ends at that stop.
        let while_degraded = |s: u64| {
            degraded_seen
                && known.degraded.iter().any(|&(a, b)| {
                    let t = earliest(s, b);
                    t >= a - 50 && t <= b
                })
        };
        // Checked: every number up to the highest received or declared used
        // (the tail: numbers above the highest received up to the last
        // used one the gateway declared).
        let top = got
            .keys()
            .next_back()
            .copied()
            .into_iter()
            .chain(stops.iter().filter_map(|&(_, l)| l))
            .max();
        let Some(top) = top else { continue };
        let last_stop = known.stops.iter().copied().max();
        let mut s = 0u64;
        while s <= top {
            if got.contains_key(&s) {
                s += 1;
                continue;
            }
            if let Some((_, uhi)) = is_unused(s) {
                s = uhi;
                continue;
            }
            let rec3 = (stream.0.clone(), stream.1, s);
            let example = |a: &mut Account, why: &str| {
                if a.missing_examples.len() < 6 {
                    a.missing_examples.push(format!(
                        "{} {} epoch {:?} seq {s}{why}",
                        stream.0, stream.1, stream.2
                    ));
                }
            };
            let in_crash_range = crash.iter().any(|&(clo, chi)| s >= clo && s < chi);
            if known.destroyed.contains(&rec3) {
            } else if in_crash_range && near_kill(s) {
                a.crash += 1;
            } else if in_crash_range && while_degraded(s) {
                a.degraded_stop += 1;
            } else if in_crash_range && last_stop.is_some_and(|e| earliest(s, e) > e) {
                // Declared used, but it cannot have been taken before the
                // last stop: the number was never used.
                a.overstated += 1;
            } else {
                a.missing += 1;
                if known.damaged.contains(&rec3) {
                    let left = budget
                        .get_mut("corrupt")
                        .expect("every reason has a budget");
                    if *left > 0 {
                        *left -= 1;
                        *a.declared_by_reason.entry("corrupt").or_default() += 1;
                    } else {
                        example(&mut a, " (damaged by the harness, not declared corrupt)");
                    }
                } else if quarantined.contains(&rec3) {
                    *a.declared_by_reason.entry("too_large").or_default() += 1;
                } else {
                    unexplained += 1;
                    if in_crash_range {
                        a.too_old_for_crash += 1;
                        example(
                            &mut a,
                            " (at or below a seq_last_used, but not shown to be taken within the loss bound before a kill or only in memory at a stop with the card full)",
                        );
                    } else {
                        example(&mut a, "");
                    }
                }
            }
            s += 1;
        }
        if a.crash > crash_before {
            crash_by_stream.push((
                a.crash - crash_before,
                format!(
                    "{} {} epoch {:?}: {} (stops (resumed, last used): {:?})",
                    stream.0,
                    stream.1,
                    stream.2,
                    a.crash - crash_before,
                    stops
                ),
            ));
        }
    }
    // The reasons that name no record (memory overflow while the card
    // could not be written, a full or aged-out spool) excuse that many of
    // the remaining missing numbers, each reason on its own.
    for reason in ["write_failed", "full", "age"] {
        let n = budget[reason].min(unexplained);
        unexplained -= n;
        if n > 0 {
            *a.declared_by_reason.entry(reason).or_default() += n;
        }
        if budget[reason] > n {
            a.declared_unused.insert(reason, budget[reason] - n);
        }
    }
    if budget["corrupt"] > 0 {
        a.declared_unused.insert("corrupt", budget["corrupt"]);
    }
    crash_by_stream.sort_by_key(|x| std::cmp::Reverse(x.0));
    a.crash_by_stream = crash_by_stream
        .into_iter()
        .take(3)
        .map(|(_, t)| t)
        .collect();
    a.declared_drops = a.declared_by_reason.values().sum();
    a.readings = a.delivered + a.missing + a.crash + a.degraded_stop;
    a.undeclared = a.missing.saturating_sub(a.declared_drops);
    a
}

/// Historical records that arrived out of `seq` order per
/// (device, kind, epoch), among `recs` (a later copy of a number already
/// seen is a re-send, not an inversion).
fn order_violations(recs: &[Rec]) -> (u64, Vec<String>) {
    let mut max: HashMap<Stream, u64> = HashMap::new();
    let mut seen: BTreeSet<(Stream, u64)> = BTreeSet::new();
    let mut n = 0;
    let mut ex = Vec::new();
    for r in recs {
        let Some((kind, array)) = kind_of(&r.topic) else {
            continue;
        };
        let Some(body) = r.json() else { continue };
        let device = body["device"].as_str().unwrap_or("?").to_owned();
        let epoch = body["epoch"].as_str().unwrap_or("").to_owned();
        for item in body[array].as_array().into_iter().flatten() {
            if item["historical"] != true {
                continue;
            }
            let Some(seq) = item["seq"].as_u64() else {
                continue;
            };
            let st: Stream = (device.clone(), kind, epoch.clone());
            if !seen.insert((st.clone(), seq)) {
                continue;
            }
            let m = max.entry(st).or_insert(seq);
            if seq < *m {
                n += 1;
                if ex.len() < 3 {
                    ex.push(format!("{device} {kind}: seq {seq} after {m}"));
                }
            } else {
                *m = seq;
            }
        }
    }
    (n, ex)
}

// ---------------------------------------------------------------------------
// A scenario's rig and outcome

struct Outcome {
    name: &'static str,
    cycles: u32,
    acct: Account,
    failures: Vec<String>,
    notes: Vec<String>,
    skipped: Option<String>,
    secs: f64,
}

impl Outcome {
    fn verdict(&self) -> &'static str {
        if self.skipped.is_some() {
            "SKIP"
        } else if self.failures.is_empty()
            && self.acct.reused == 0
            && self.acct.invalid_json == 0
            && self.acct.schema_invalid == 0
            && self.acct.undeclared == 0
        {
            "PASS"
        } else {
            "FAIL"
        }
    }

    fn skip(name: &'static str, why: String) -> Outcome {
        Outcome {
            name,
            cycles: 0,
            acct: Account::default(),
            failures: vec![],
            notes: vec![],
            skipped: Some(why),
            secs: 0.0,
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Load {
    /// ups1 every 20 ms (an event every 50 samples), env1 every 50 ms.
    Normal,
    /// ups1 10 samples every 20 ms (500/s), env1 as usual: spill writes.
    Heavy,
    /// No devices: only the gateway's own telemetry (used to drain).
    None,
}

struct Rig {
    // Field order is drop order: the gateway goes before the broker.
    gw: Gateway,
    rec: Recorder,
    broker: Broker,
    name: &'static str,
    o: Opts,
    web: u16,
    spool: PathBuf,
    destroyed: Destroyed,
    damaged: Destroyed,
    degraded: Vec<(i64, i64)>,
    heavy: bool,
    failures: Vec<String>,
    notes: Vec<String>,
    cycles: u32,
    t0: Instant,
    _dir: tempfile::TempDir,
}

impl Rig {
    /// `spool_dir`: where spool.db goes (a mount), else a temp dir.
    async fn new(name: &'static str, o: &Opts, spool_dir: Option<&Path>) -> Rig {
        Self::with_broker(name, o, spool_dir, Broker::start()).await
    }

    async fn with_broker(
        name: &'static str,
        o: &Opts,
        spool_dir: Option<&Path>,
        broker: Broker,
    ) -> Rig {
        let dir = tempfile::tempdir().expect("temp dir");
        let rec = Recorder::start(broker.port).await;
        let spool = spool_dir.unwrap_or(dir.path()).join("spool.db");
        let gw = Gateway {
            bin: o.bin.clone(),
            cfg: dir.path().join("wardgate.toml"),
            log: dir.path().join("wardgate.log"),
            env: o
                .plant
                .iter()
                .map(|p| ("WARDGATE_PLANT".to_owned(), p.clone()))
                .collect(),
            child: None,
            runs: 0,
            starts: vec![],
            last_exit: None,
            starts_wall: vec![],
            kills: vec![],
            wal: false,
            stops: vec![],
        };
        Rig {
            gw,
            rec,
            broker,
            name,
            o: o.clone(),
            web: free_port(),
            spool,
            destroyed: BTreeSet::new(),
            damaged: BTreeSet::new(),
            degraded: vec![],
            heavy: false,
            failures: vec![],
            notes: vec![],
            cycles: 0,
            t0: Instant::now(),
            _dir: dir,
        }
    }

    /// A configuration that every binary since the spine accepts (no key
    /// added by issue 10: unknown keys are errors).
    fn config(&self, load: Load, policy: &str) -> String {
        let mut t = format!(
            "site = \"faults\"\n\
             [mqtt]\nhost = \"127.0.0.1\"\nport = {}\nkeep_alive = \"5s\"\nconnect_timeout = \"5s\"\n\
             [spool]\npath = \"{}\"\npolicy = \"{policy}\"\n\
             [gateway]\ntelemetry_interval = \"1s\"\nsystem_health = false\n\
             [web]\nenabled = true\nlisten = \"127.0.0.1:{}\"\n\
             [led]\nbackend = \"none\"\n",
            self.broker.port,
            self.spool.display(),
            self.web
        );
        let ups_per_tick = if load == Load::Heavy { 10 } else { 1 };
        if load != Load::None {
            t.push_str(&format!(
                "[[device]]\nid = \"ups1\"\ntype = \"sim\"\nprofile = \"ups\"\ninterval = \"20ms\"\nevent_every = 50\nsamples_per_tick = {ups_per_tick}\n\
                 [[device]]\nid = \"env1\"\ntype = \"sim\"\nprofile = \"sensor\"\ninterval = \"50ms\"\nevent_every = 20\n"
            ));
        }
        t
    }

    fn start(&mut self, load: Load) {
        self.heavy |= load == Load::Heavy;
        let c = self.config(load, "spill");
        self.gw.start(&c);
    }

    /// What the accounting needs to know of this rig's runs.
    fn known(&self) -> Known {
        Known {
            destroyed: self.destroyed.clone(),
            damaged: self.damaged.clone(),
            kills: self.gw.kills.clone(),
            stops: self.gw.stops.clone(),
            degraded: self.degraded.clone(),
            first_start_ms: self.gw.starts_wall.first().copied().unwrap_or(0),
            starts: self.gw.starts_wall.clone(),
            heavy: self.heavy,
        }
    }

    fn fail(&mut self, what: String) {
        self.failures.push(what);
    }

    fn note(&mut self, what: String) {
        self.notes.push(what);
    }

    /// Waits for a record from `from` on that satisfies `pred`, giving up
    /// early when the gateway has exited (nothing more will come).
    async fn wait_while_up(
        &mut self,
        from: usize,
        limit: Duration,
        pred: &dyn Fn(&Rec) -> bool,
    ) -> Option<usize> {
        let deadline = Instant::now() + limit;
        let mut grace = 2;
        loop {
            let step = Duration::from_millis(250);
            if let Some(i) = self.rec.wait_for(from, step, pred).await {
                return Some(i);
            }
            if !self.gw.running() {
                // What it sent just before exiting may still be on its way.
                grace -= 1;
                if grace == 0 {
                    return None;
                }
            }
            if Instant::now() > deadline {
                return None;
            }
        }
    }

    /// Waits for a live ups1 reading that arrived after record `from`.
    async fn live_after(&mut self, from: usize, limit: Duration) -> Option<usize> {
        self.wait_while_up(from, limit, &|r| r.is_live("ups1"))
            .await
    }

    /// After the broker's return (records from `from` on): the gateway's
    /// birth message, then a live ups1 reading within `limit` of it; the
    /// seconds from `since` to the birth. The birth may take long: after an
    /// outage of more than a few seconds the reconnect backoff has grown
    /// (up to 75 s), as designed; how fast a restart is caught is
    /// `broker_restarts`' to judge, not the scenarios that use this.
    async fn live_after_reconnect(
        &mut self,
        from: usize,
        since: Instant,
        limit: Duration,
    ) -> Result<f64, String> {
        let Some(b) = self
            .wait_while_up(from, Duration::from_secs(90), &|r| r.is_status_online())
            .await
        else {
            return Err("no birth message within 90 s of the broker's return".into());
        };
        let at = self.rec.lock()[b].at;
        let secs = at.saturating_duration_since(since).as_secs_f64();
        match self.live_after(b, limit).await {
            Some(_) => Ok(secs),
            None => Err(format!(
                "no live reading within {limit:?} of the reconnection ({secs:.1} s after the broker's return)"
            )),
        }
    }

    /// Waits for an event with `code` on the gateway device among the
    /// records from `from` on; its values.
    async fn event_seen(&mut self, from: usize, code: &str, limit: Duration) -> Option<Value> {
        let needle = format!("\"code\":\"{code}\"");
        let i = self
            .wait_while_up(from, limit, &|r| {
                r.topic.ends_with("/gateway/event") && contains(&r.payload, needle.as_bytes())
            })
            .await?;
        let body = self.rec.lock()[i].json()?;
        body["events"]
            .as_array()?
            .iter()
            .find(|e| e["code"] == code)
            .map(|e| e["values"].clone())
    }

    /// Expects a `spool.degraded` event saying `reason` (spec of issue 10)
    /// among the records from `from` on.
    async fn expect_degraded(&mut self, from: usize, reason: &str) {
        match self
            .event_seen(from, "spool.degraded", Duration::from_secs(10))
            .await
        {
            None => self.fail(format!(
                "no spool.degraded event (reason {reason} expected)"
            )),
            Some(v) if v["spool.reason"] != reason => self.fail(format!(
                "spool.degraded says {} (expected reason {reason})",
                v["spool.reason"]
            )),
            Some(_) => {}
        }
    }

    /// SIGTERM; a failure unless it exits 0 within `limit`.
    async fn term_expect_0(&mut self, limit: Duration, when: &str) -> Option<Duration> {
        match self.gw.term(limit).await {
            Ok((Some(0), took)) => Some(took),
            Ok((code, took)) => {
                let tail = self.gw.log_tail(3);
                self.fail(format!(
                    "{when}: SIGTERM exit code {code:?} after {took:.1?} (log: {tail})"
                ));
                Some(took)
            }
            Err(e) => {
                self.fail(format!("{when}: {e}"));
                None
            }
        }
    }

    /// The common ending ([`Rig::drain`]), then the accounting.
    async fn finish(mut self) -> Outcome {
        self.drain().await;
        self.outcome()
    }

    /// The common ending. A gateway still running is stopped cleanly (a
    /// scenario that means to end with a kill -9 does it itself). Then:
    ///
    /// 1. the closing run, with the devices and the broker up: each device
    ///    stream's first new numbers show whether the previous runs lost
    ///    their tails; it runs until the backlog is sent and every device
    ///    stream (samples and events) has a new number;
    /// 2. kill -9, so that the next start's `gateway.unclean_stop` declares
    ///    the last number each stream used: the tail of the closing run is
    ///    checked too (its crash loss, readings in flight with the broker
    ///    up, is bounded by the kill's window like any other);
    /// 3. the final run, with no devices, until its telemetry reports an
    ///    empty spool; a clean stop, and time for the recorder to receive
    ///    everything.
    async fn drain(&mut self) {
        self.broker.resume();
        self.broker.spawn();
        let limit = Duration::from_secs(self.o.pick(30, 300));
        if self.gw.running() {
            self.term_expect_0(Duration::from_secs(15), "stop before the closing run")
                .await;
        }
        // 1. The closing run.
        let from = self.rec.len();
        self.start(Load::Normal);
        let deadline = Instant::now() + limit;
        let streams = [
            "/ups1/telemetry",
            "/ups1/event",
            "/env1/telemetry",
            "/env1/event",
        ];
        let mut done = false;
        while Instant::now() < deadline && self.gw.running() {
            let ok = {
                let recs = self.rec.lock();
                let new = &recs[from.min(recs.len())..];
                streams
                    .iter()
                    .all(|s| new.iter().any(|r| r.topic.ends_with(s)))
                    && new.iter().rev().any(|r| {
                        r.topic.ends_with("/gateway/telemetry")
                            && r.json().is_some_and(|v| {
                                v["samples"]
                                    .as_array()
                                    .and_then(|a| a.last())
                                    .is_some_and(|s| {
                                        num(&s["values"]["spool.depth"]) == Some(0.0)
                                            && num(&s["values"]["spool.memory"])
                                                .is_some_and(|m| m <= 50.0)
                                    })
                            })
                    })
            };
            if ok {
                done = true;
                break;
            }
            sleep_ms(100).await;
        }
        if !done {
            let tail = self.gw.log_tail(3);
            let why = if let Some(code) = self.gw.exit_code() {
                format!("exited with {code:?}")
            } else {
                "still running".into()
            };
            self.fail(format!(
                "closing run: backlog not sent or a device stream silent within {limit:?} ({why}; log: {tail})"
            ));
        }
        // 2. kill -9.
        self.gw.kill9();
        // 3. The final run.
        let from = self.rec.len();
        self.start(Load::None);
        let drained = self
            .wait_while_up(from, limit, &|r| {
                r.topic.ends_with("/gateway/telemetry")
                    && r.json().is_some_and(|v| {
                        v["samples"]
                            .as_array()
                            .and_then(|a| a.last())
                            .is_some_and(spool_empty)
                    })
            })
            .await;
        if drained.is_none() {
            let tail = self.gw.log_tail(3);
            let why = if let Some(code) = self.gw.exit_code() {
                format!("exited with {code:?}")
            } else {
                "still running".into()
            };
            self.fail(format!(
                "backlog not drained within {limit:?} ({why}; log: {tail})"
            ));
        }
        let before_stop = self.rec.len();
        let failures_before = self.failures.len();
        self.term_expect_0(Duration::from_secs(15), "final stop")
            .await;
        // The barrier: the final run's offline status is the last thing it
        // publishes, on the same connection as everything before it, so
        // once it is here the rest is too (a fixed quiet period is not: a
        // pause between broker and recorder longer than it left records
        // out, counted lost). Then a short quiet for the broker's own
        // redeliveries.
        let limit = Duration::from_secs(20);
        let offline = self
            .rec
            .wait_for(before_stop, limit, &|r| r.is_status_offline_clean())
            .await;
        if offline.is_none() {
            let what = format!(
                "final stop: no offline status (clean stop) arrived within {limit:?}, so what the run sent before it may still have been on its way and counted lost"
            );
            if self.failures.len() > failures_before {
                // The stop already failed (not exit 0, or killed).
                self.note(what);
            } else {
                self.fail(what);
            }
        }
        self.rec
            .settle(Duration::from_millis(300), Duration::from_secs(5))
            .await;
        // Without the final run's unclean_stop the closing run's tail
        // would go unchecked.
        let declared = self
            .rec
            .find(from, &|r| {
                r.topic.ends_with("/gateway/event")
                    && contains(&r.payload, b"\"code\":\"gateway.unclean_stop\"")
            })
            .is_some();
        if !declared {
            self.fail(
                "final run: no gateway.unclean_stop after the closing kill -9, so the tail of each stream cannot be checked".into(),
            );
        }
    }

    fn outcome(mut self) -> Outcome {
        let acct = {
            let recs = self.rec.lock();
            account(&recs, &self.known())
        };
        let again = self.rec.redelivered.load(Ordering::Relaxed);
        if again > 0 {
            self.notes.push(format!(
                "{again} broker redeliveries to the recorder (broker restarted before its PUBACK) not counted"
            ));
        }
        if !acct.reused_examples.is_empty() {
            self.notes.push(format!(
                "seq reused, e.g. {}",
                acct.reused_examples.join(" | ")
            ));
        }
        if !acct.invalid_examples.is_empty() {
            self.notes.push(format!(
                "invalid JSON, e.g. {}",
                acct.invalid_examples.join(" | ")
            ));
        }
        if !acct.schema_examples.is_empty() {
            self.notes.push(format!(
                "against the schema, e.g. {}",
                acct.schema_examples.join(" | ")
            ));
        }
        if !acct.declared_by_reason.is_empty() {
            let by: Vec<String> = acct
                .declared_by_reason
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            self.notes.push(format!(
                "missing readings excused by declared drops: {}",
                by.join(", ")
            ));
        }
        if !acct.declared_unused.is_empty() {
            let by: Vec<String> = acct
                .declared_unused
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            self.notes.push(format!(
                "declared drops that excused nothing (over-declared): {}",
                by.join(", ")
            ));
        }
        if acct.crash > 0 {
            self.notes.push(format!(
                "{} readings lost in {} kill -9s (at or below seq_last_used, taken within the loss bound before a kill); most in {}",
                acct.crash,
                self.gw.kills.len(),
                acct.crash_by_stream.join(" | ")
            ));
        }
        if acct.overstated > 0 {
            self.notes.push(format!(
                "{} numbers at or below a seq_last_used cannot have been taken before the last stop (by the stream's period): seq_last_used said more than was used (not counted as loss)",
                acct.overstated
            ));
        }
        if acct.degraded_stop > 0 {
            self.notes.push(format!(
                "{} readings lost at a stop with the card full (at or below seq_last_used, taken from the loss bound before the fill to the stop, or in a run started with the card full; declared by spool.degraded and the unclean stops)",
                acct.degraded_stop
            ));
        }
        if acct.undeclared > 0 {
            self.notes.push(format!(
                "{} missing, {} declared dropped, {} of them at or below a seq_last_used but neither a kill's loss nor a full card's; missing e.g. {}",
                acct.missing,
                acct.declared_drops,
                acct.too_old_for_crash,
                acct.missing_examples.join(", ")
            ));
        }
        Outcome {
            name: self.name,
            cycles: if self.cycles > 0 {
                self.cycles
            } else {
                self.gw.runs
            },
            acct,
            failures: std::mem::take(&mut self.failures),
            notes: std::mem::take(&mut self.notes),
            skipped: None,
            secs: self.t0.elapsed().as_secs_f64(),
        }
    }
}

/// A gateway telemetry sample saying nothing is left to send: no row on
/// disk and at most the gateway's own few records in memory.
fn spool_empty(s: &Value) -> bool {
    num(&s["values"]["spool.depth"]) == Some(0.0)
        && num(&s["values"]["spool.memory"]).is_some_and(|m| m <= 2.0)
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

// ---------------------------------------------------------------------------
// Scenarios

/// kill -9 at random moments (0.2–2.5 s after start; 1.6 s in short mode),
/// N times, with broker outages mixed in (the broker is stopped or started
/// again in 30 % of the cycles). Every fifth cycle is long instead: the
/// broker is down from before the start and the kill comes 6–7 s after
/// it, longer than the loss bound, so that the
/// readings of the first seconds must have reached the card: a gateway
/// that does not spill them loses readings older than the bound, which no
/// kill excuses. Expectation: readings lost in crashes within the README's
/// bound per kill (see the accounting rule).
async fn kill9(o: &Opts, name: &'static str, policy: &str) -> Outcome {
    let mut rig = Rig::new(name, o, None).await;
    let n = o.pick(10, 200);
    let every = 5;
    let mut outages = 0;
    let mut long = 0;
    for i in 0..n {
        let c = rig.config(Load::Normal, policy);
        if i % every == every - 1 {
            if rig.broker.running() {
                rig.broker.stop();
                outages += 1;
            }
            rig.gw.start(&c);
            let life = rand::rng().random_range(6000..7000u64);
            sleep_ms(life).await;
            if let Some(code) = rig.gw.exited() {
                let tail = rig.gw.log_tail(3);
                rig.fail(format!("gateway exited by itself ({code:?}): {tail}"));
                break;
            }
            rig.gw.kill9();
            rig.cycles += 1;
            long += 1;
            continue;
        }
        rig.gw.start(&c);
        // A random moment: anywhere from start-up to a few seconds in.
        let (life, toggle) = {
            let mut r = rand::rng();
            (
                r.random_range(200..o.pick(1600, 2500u64)),
                r.random_bool(0.3),
            )
        };
        sleep_ms(life / 2).await;
        if toggle {
            if rig.broker.running() {
                rig.broker.stop();
                outages += 1;
            } else {
                rig.broker.spawn();
            }
        }
        sleep_ms(life / 2).await;
        if let Some(code) = rig.gw.exited() {
            let tail = rig.gw.log_tail(3);
            rig.fail(format!("gateway exited by itself ({code:?}): {tail}"));
            break;
        }
        rig.gw.kill9();
        rig.cycles += 1;
    }
    rig.note(format!(
        "{outages} broker outages during the kills; {long} long cycles (broker down, kill after 6-7 s)"
    ));
    // The cycles' kills and the closing run's.
    let kills = rig.cycles as f64 + 1.0;
    // Readings per second of the Normal load: ups1 50 + env1 20 + their
    // events + the gateway's telemetry, rounded up.
    let rate = 75.0;
    let window = if policy == "wal" {
        CRASH_WINDOW_WAL_MS
    } else {
        CRASH_WINDOW_SPILL_MS
    } as f64
        / 1000.0;
    let out = rig.finish().await;
    with_expectation(out, |a| {
        let bound = (kills * window * rate) as u64;
        (a.crash > bound).then(|| {
            format!(
                "{} readings lost in crashes, more than {window} s worth per kill ({bound})",
                a.crash
            )
        })
    })
}

async fn kill9_spill(o: &Opts) -> Outcome {
    kill9(o, "kill9_spill", "spill").await
}

async fn kill9_wal(o: &Opts) -> Outcome {
    kill9(o, "kill9_wal", "wal").await
}

/// SIGTERM while the broker is down: exit 0, and nothing lost at all.
async fn sigterm_outage(o: &Opts) -> Outcome {
    let mut rig = Rig::new("sigterm_outage", o, None).await;
    for _ in 0..o.pick(2, 10) {
        rig.broker.spawn();
        let from = rig.rec.len();
        rig.start(Load::Normal);
        if rig
            .live_after(from, Duration::from_secs(20))
            .await
            .is_none()
        {
            rig.fail("no live reading after start".into());
        }
        rig.broker.stop();
        sleep_ms(o.pick(3000, 8000)).await;
        rig.term_expect_0(Duration::from_secs(10), "SIGTERM during the outage")
            .await;
        rig.cycles += 1;
    }
    let out = rig.finish().await;
    with_expectation(out, |a| {
        (a.missing > 0).then(|| {
            format!(
                "{} readings missing (a clean stop must lose nothing, declared or not)",
                a.missing
            )
        })
    })
}

fn with_expectation(mut out: Outcome, check: impl Fn(&Account) -> Option<String>) -> Outcome {
    if let Some(f) = check(&out.acct) {
        out.failures.push(f);
    }
    out
}

/// A broker that accepts but never reads (SIGSTOP): SIGTERM exits 0 within
/// 10 s; after a restart the backlog arrives in seq order.
async fn sigterm_hung_broker(o: &Opts) -> Outcome {
    let mut rig = Rig::new("sigterm_hung_broker", o, None).await;
    let mut order_from = usize::MAX;
    for _ in 0..o.pick(2, 5) {
        rig.broker.resume();
        rig.broker.spawn();
        let from = rig.rec.len();
        rig.start(Load::Normal);
        if rig
            .live_after(from, Duration::from_secs(20))
            .await
            .is_none()
        {
            rig.fail("no live reading after start".into());
        }
        // The previous stop's backlog is sent first, so that what is in
        // flight when the broker hangs is only the newest readings.
        let sent = rig
            .wait_while_up(from, Duration::from_secs(20), &|r| {
                r.topic.ends_with("/gateway/telemetry")
                    && r.json().is_some_and(|v| {
                        v["samples"]
                            .as_array()
                            .and_then(|a| a.last())
                            .is_some_and(|s| num(&s["values"]["spool.depth"]) == Some(0.0))
                    })
            })
            .await;
        if sent.is_none() {
            rig.note("the previous backlog was not sent within 20 s before the broker hung".into());
        }
        rig.broker.pause();
        sleep_ms(o.pick(2000, 6000)).await;
        if let Some(took) = rig
            .term_expect_0(Duration::from_secs(10), "SIGTERM with a hung broker")
            .await
        {
            rig.note(format!("stop took {:.1} s", took.as_secs_f64()));
        }
        rig.broker.stop();
        rig.cycles += 1;
        order_from = order_from.min(rig.rec.len());
    }
    // The backlog left by the stops drains now; its order is checked on
    // what arrived after the first hung stop.
    rig.drain().await;
    let (n, ex) = {
        let recs = rig.rec.lock();
        order_violations(&recs[order_from.min(recs.len())..])
    };
    if n > 0 {
        rig.fail(format!(
            "{n} historical records out of seq order, e.g. {}",
            ex.join("; ")
        ));
    }
    rig.outcome()
}

/// N broker restarts, each down ≤ 3 s: time until the gateway's birth
/// message arrives again, p95 ≤ 5 s (short mode, 5 restarts: 4 of 5 within
/// 5 s and none over 7 s; see [`reconnect_verdict`]).
async fn broker_restarts(o: &Opts) -> Outcome {
    let mut rig = Rig::new("broker_restarts", o, None).await;
    let from = rig.rec.len();
    rig.start(Load::Normal);
    if rig
        .live_after(from, Duration::from_secs(20))
        .await
        .is_none()
    {
        rig.fail("no live reading after start".into());
    }
    let mut times = Vec::new();
    let mut missed = 0;
    for _ in 0..o.pick(5, 20) {
        let (gap, down) = {
            let mut r = rand::rng();
            (
                // The short run keeps the link up past the 10 s after which
                // the gateway counts it healthy (as the long run's 20-40 s
                // do), so both measure the same regime, only fewer times.
                if o.short {
                    r.random_range(11000..14000u64)
                } else {
                    r.random_range(20000..40000u64)
                },
                r.random_range(500..3000u64),
            )
        };
        sleep_ms(gap).await;
        rig.broker.stop();
        sleep_ms(down).await;
        let idx = rig.rec.len();
        rig.broker.spawn();
        let up = Instant::now();
        match rig
            .rec
            .wait_for(idx, Duration::from_secs(90), &|r| r.is_status_online())
            .await
        {
            Some(i) => {
                let at = rig.rec.lock()[i].at;
                times.push(at.duration_since(up).as_secs_f64());
            }
            None => {
                missed += 1;
                times.push(90.0);
            }
        }
        rig.cycles += 1;
    }
    let p95 = pct(&times, 95.0).unwrap_or(0.0);
    let list: Vec<String> = times.iter().map(|t| format!("{t:.1}")).collect();
    rig.note(format!(
        "reconnect times (s): {} ; p95 {p95:.1} s (target ≤ 5 s){}",
        list.join(" "),
        if missed > 0 {
            format!("; {missed} never came back within 90 s")
        } else {
            String::new()
        }
    ));
    if let Some(why) = reconnect_verdict(&times, o.short) {
        rig.fail(why);
    }
    rig.finish().await
}

/// The reconnect promise (README: p95 ≤ 5 s) on the measured times, or why
/// it is broken. The long run's 20 samples are judged on p95 itself. The
/// short run's 5 cannot be: their p95 is the maximum, so one slow restart
/// on a loaded machine would fail it; there 4 of 5 must be within 5 s and
/// none over 7 s. That still fails a gateway that is slow every time, and
/// most often one whose backoff has grown when the broker returns (steps of
/// 4-8 s, then 8-16 s: two such restarts, or one over 7 s, fail).
fn reconnect_verdict(times: &[f64], short: bool) -> Option<String> {
    if !short {
        let p95 = pct(times, 95.0)?;
        return (p95 > 5.0).then(|| format!("reconnect p95 {p95:.1} s > 5 s"));
    }
    let slow = times.iter().filter(|&&t| t > 5.0).count();
    let worst = times.iter().copied().fold(0.0, f64::max);
    if slow > 1 {
        Some(format!(
            "{slow} of {} reconnects took > 5 s (at most 1 may)",
            times.len()
        ))
    } else if worst > 7.0 {
        Some(format!("a reconnect took {worst:.1} s > 7 s"))
    } else {
        None
    }
}

/// Free bytes on the file system holding `dir`.
fn free_bytes(dir: &Path) -> u64 {
    let Ok(c) = std::ffi::CString::new(dir.to_string_lossy().as_bytes()) else {
        return 0;
    };
    // SAFETY: statvfs on a NUL-terminated path into a zeroed struct.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) != 0 {
            return 0;
        }
        s.f_bavail as u64 * s.f_frsize as u64
    }
}

/// Takes every free byte of the file system holding `dir`.
fn fill_up(dir: &Path, name: &str) {
    let free = free_bytes(dir);
    if free > 0 {
        let _ = std::fs::write(dir.join(name), vec![0u8; free as usize]);
    }
}

/// A spool on an 8 MiB tmpfs that fills up during an outage: after 6 s of
/// outage with room on the card (its first readings are then older than
/// the loss bound and had to be written: they must arrive), a filler file
/// leaves 256 KiB, then takes whatever is freed again. Expectations: live
/// readings flow while the disk is full once the broker is back; SIGTERM
/// exits 0; a restart with the disk still full delivers live readings; no
/// re-send storm: acknowledged rows that could not be deleted are never sent
/// again in the run that could not delete them, only once more by each later
/// run. The scenario has three runs with the disk full (the outage run, the
/// restart, and the drain run that starts after a kill -9), and a record in
/// flight when a link drops is sent again: so no record may arrive more than
/// 3 + 1 = 4 times (the old spool re-sent the backlog on every reconnect;
/// the broker's own redeliveries to the recorder after its restart are not
/// the gateway's copies and are not counted, see [`Recorder`]);
/// a `spool.degraded` event with reason `disk_full`; drops declared.
async fn disk_full(o: &Opts) -> Outcome {
    let base = tempfile::tempdir().expect("temp dir");
    let mnt_dir = base.path().join("spool");
    let mnt = match Mount::tmpfs(&mnt_dir, "8m") {
        Ok(m) => m,
        Err(e) => return Outcome::skip("disk_full", format!("cannot mount tmpfs: {e}")),
    };
    let mut rig = Rig::new("disk_full", o, Some(&mnt.dir)).await;
    let from = rig.rec.len();
    rig.start(Load::Heavy);
    if rig
        .live_after(from, Duration::from_secs(20))
        .await
        .is_none()
    {
        rig.fail("no live reading after start".into());
    }
    // An outage with room on the card first.
    rig.broker.stop();
    let outage = Instant::now();
    sleep_ms(o.pick(6000, 10000)).await;
    let before = free_bytes(&mnt.dir);
    if before < 512 << 10 {
        rig.fail(format!(
            "the card filled up by itself ({} KiB free after {:.1} s of outage) before the harness filled it: when it became unwritable is unknown",
            before >> 10,
            outage.elapsed().as_secs_f64()
        ));
    }
    // Leave ~256 KiB for the spool to fill.
    let fill_began = now_ms();
    let filled_from = Instant::now();
    let filler = mnt.dir.join("filler");
    let _ = std::fs::write(
        &filler,
        vec![0u8; before.saturating_sub(256 << 10) as usize],
    );
    let deadline = filled_from + Duration::from_secs(o.pick(30, 90));
    while free_bytes(&mnt.dir) > 16 << 10 && Instant::now() < deadline {
        sleep_ms(100).await;
    }
    let full = free_bytes(&mnt.dir) <= 16 << 10;
    rig.note(format!(
        "disk {} {:.1} s after the filler ({:.1} s into the outage; {} KiB free before it)",
        if full { "filled up" } else { "did NOT fill up" },
        filled_from.elapsed().as_secs_f64(),
        outage.elapsed().as_secs_f64(),
        before >> 10
    ));
    sleep_ms(o.pick(2000, 10000)).await;
    // The broker returns, the disk stays full: live readings must flow.
    let idx = rig.rec.len();
    rig.broker.spawn();
    let back = Instant::now();
    match rig
        .live_after_reconnect(idx, back, Duration::from_secs(15))
        .await
    {
        Ok(secs) => rig.note(format!("reconnected {secs:.1} s after the broker's return")),
        Err(e) => rig.fail(format!("disk full: {e}")),
    }
    sleep_ms(3000).await;
    let live = {
        let recs = rig.rec.lock();
        recs[idx..]
            .iter()
            .filter(|r| r.is_live("ups1") && r.at >= back)
            .count()
    };
    rig.note(format!(
        "{live} live ups1 messages in {:.0} s with the disk full",
        back.elapsed().as_secs_f64()
    ));
    // Whatever the gateway freed meanwhile is taken again.
    fill_up(&mnt.dir, "filler2");
    rig.term_expect_0(Duration::from_secs(10), "SIGTERM with the disk full")
        .await;
    // What the stop that could not be recorded may lose: what was only in
    // memory, readings taken from the loss bound before the fill began
    // (the youngest were not due on the card yet) to the stop.
    let stop = rig.gw.stops.last().copied().unwrap_or_else(now_ms);
    rig.degraded
        .push((fill_began - CRASH_WINDOW_SPILL_MS, stop));
    // Start again, disk still full.
    fill_up(&mnt.dir, "filler3");
    let idx = rig.rec.len();
    rig.start(Load::Heavy);
    if rig.live_after(idx, Duration::from_secs(15)).await.is_none() {
        let code = rig.gw.exit_code();
        let tail = rig.gw.log_tail(2);
        rig.fail(format!(
            "restart with the disk full: no live reading within 15 s (exit {code:?}; log: {tail})"
        ));
    }
    rig.cycles = rig.gw.runs;
    let dups_before_free = {
        let recs = rig.rec.lock();
        account(&recs, &rig.known()).duplicates
    };
    rig.note(format!(
        "{dups_before_free} duplicates while the disk was full"
    ));
    // Run 2's own event: at start when its positions cannot be written,
    // else at its first failed commit, about a second after start, later
    // on a loaded machine: the same 15 s as the waits above.
    let degraded = rig
        .event_seen(idx, "spool.degraded", Duration::from_secs(15))
        .await;
    match &degraded {
        Some(v) => rig.note(format!(
            "spool.degraded event: reason {}",
            v["spool.reason"]
        )),
        None => rig.fail("no spool.degraded event while the disk was full".into()),
    }
    for f in ["filler", "filler2", "filler3"] {
        let _ = std::fs::remove_file(mnt.dir.join(f));
    }
    // The restart run ends with a kill -9 (the drain would stop it
    // cleanly): the run after it is the third that finds the rows it could
    // not delete. It ran with the card full from its start: all it read was
    // only in memory.
    let restarted = rig.gw.starts_wall.last().copied().unwrap_or(0);
    rig.gw.kill9();
    rig.degraded.push((restarted, now_ms()));
    rig.drain().await;
    let starts = rig.gw.starts.clone();
    let out = rig.outcome();
    drop(mnt);
    with_expectation(out, |a| {
        (a.max_copies > 4).then(|| {
            format!(
                "re-send storm: a record arrived {} times ({}; {} duplicates in all; copies {})",
                a.max_copies,
                a.max_copies_example,
                a.duplicates,
                copies_by_run(&a.max_copies_at, &starts)
            )
        })
    })
}

/// Says which gateway run each copy arrived in, and when: "run 1 +12.3 s
/// historical, ...".
fn copies_by_run(copies: &[(Instant, bool)], starts: &[Instant]) -> String {
    copies
        .iter()
        .map(|(at, hist)| {
            let run = starts.iter().rposition(|s| s <= at).unwrap_or(0);
            let since = starts
                .get(run)
                .map(|s| at.duration_since(*s).as_secs_f64())
                .unwrap_or(0.0);
            let what = if *hist { "historical" } else { "live" };
            format!("run {} +{since:.1} s {what}", run + 1)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The spool's file system (a tmpfs holding a backlog) is remounted
/// read-only before the gateway starts. Expectations: live readings flow, a
/// `spool.degraded` event with reason `read_only`, SIGTERM exits 0, the
/// backlog arrives once the file system is writable again.
///
/// The tails: the run that leaves the backlog is killed 6 s into its
/// outage, longer than the loss bound, so the next run's unclean stop
/// declares its last numbers (in the envelope of the read-only run's own
/// epoch: see the accounting) and every reading older than the bound must
/// arrive. A run that starts read-only counts in an epoch of its own that
/// no later run resumes: its newest readings can be checked only if the
/// card comes back while it runs. So the first read-only run is stopped
/// with the card still read-only (SIGTERM exits 0; what it had only in
/// memory is the loss the README allows, and nothing can show which
/// numbers it was), and the second gets the card back, puts its epoch on
/// disk (`spool.restored`), sends the backlog, is stopped in an outage
/// (its newest readings must reach the card) and ends like every scenario
/// ([`Rig::drain`]): the closing run resumes that epoch after a clean
/// stop, so its first numbers check the second run's tail.
async fn readonly_start(o: &Opts) -> Outcome {
    let base = tempfile::tempdir().expect("temp dir");
    let mnt = match Mount::tmpfs(&base.path().join("spool"), "32m") {
        Ok(m) => m,
        Err(e) => return Outcome::skip("readonly_start", format!("cannot mount tmpfs: {e}")),
    };
    let mut rig = Rig::new("readonly_start", o, Some(&mnt.dir)).await;
    // A first run leaves a backlog (an outage), killed after the bound.
    let idx = rig.rec.len();
    rig.start(Load::Normal);
    if rig.live_after(idx, Duration::from_secs(20)).await.is_none() {
        rig.fail("no live reading after start".into());
    }
    rig.broker.stop();
    sleep_ms(6000).await;
    if let Some(code) = rig.gw.exited() {
        let tail = rig.gw.log_tail(3);
        rig.fail(format!("first run exited by itself ({code:?}): {tail}"));
    }
    rig.gw.kill9();
    if let Err(e) = mnt.remount("ro") {
        return Outcome::skip("readonly_start", format!("cannot remount read-only: {e}"));
    }
    rig.broker.spawn();
    // Read-only from its start to its stop.
    let idx = rig.rec.len();
    rig.start(Load::Normal);
    if rig.live_after(idx, Duration::from_secs(15)).await.is_none() {
        let code = rig.gw.exit_code();
        let tail = rig.gw.log_tail(2);
        rig.fail(format!(
            "read-only spool at start: no live reading within 15 s (exit {code:?}; log: {tail})"
        ));
    }
    rig.expect_degraded(idx, "read_only").await;
    // A moment of readings kept only in memory.
    sleep_ms(1000).await;
    if rig.gw.running() {
        rig.term_expect_0(Duration::from_secs(10), "SIGTERM, read-only spool")
            .await;
    }
    // Read-only at start, the card back while it runs.
    let idx = rig.rec.len();
    rig.start(Load::Normal);
    if rig.live_after(idx, Duration::from_secs(15)).await.is_none() {
        rig.fail("second read-only start: no live reading within 15 s".into());
    }
    rig.expect_degraded(idx, "read_only").await;
    if let Err(e) = mnt.remount("rw") {
        rig.fail(format!("remount rw: {e}"));
    }
    // The store is tried again every 5 s.
    if rig
        .event_seen(idx, "spool.restored", Duration::from_secs(20))
        .await
        .is_none()
    {
        rig.fail("the card writable again: no spool.restored within 20 s".into());
    }
    // Its newest readings have to reach the card: a clean stop in an
    // outage loses nothing.
    rig.broker.stop();
    sleep_ms(1500).await;
    rig.term_expect_0(
        Duration::from_secs(10),
        "SIGTERM in an outage, the card writable again",
    )
    .await;
    rig.cycles = rig.gw.runs;
    let out = rig.finish().await;
    drop(mnt);
    out
}

/// The spool's file system turns read-only under the running gateway (ext4
/// `errors=remount-ro` after an I/O error, as a worn SD card does), during
/// an outage. Expectations as for `readonly_start`; readings not kept
/// meanwhile must be declared.
async fn readonly_running(o: &Opts) -> Outcome {
    let base = tempfile::tempdir().expect("temp dir");
    let mnt = match Mount::ext4(
        &base.path().join("spool"),
        &base.path().join("card.img"),
        32,
    ) {
        Ok(m) => m,
        Err(e) => {
            return Outcome::skip(
                "readonly_running",
                format!("cannot mount an ext4 loop image: {e}"),
            )
        }
    };
    let mut rig = Rig::new("readonly_running", o, Some(&mnt.dir)).await;
    let idx = rig.rec.len();
    rig.start(Load::Normal);
    if rig.live_after(idx, Duration::from_secs(20)).await.is_none() {
        rig.fail("no live reading after start".into());
    }
    // An outage so that readings must go to disk, then the card fails.
    rig.broker.stop();
    sleep_ms(1500).await;
    if let Err(e) = mnt.fail_to_read_only() {
        return Outcome::skip("readonly_running", e);
    }
    sleep_ms(o.pick(3000, 10000)).await;
    let idx = rig.rec.len();
    rig.broker.spawn();
    let back = Instant::now();
    if let Err(e) = rig
        .live_after_reconnect(idx, back, Duration::from_secs(15))
        .await
    {
        let code = rig.gw.exit_code();
        let tail = rig.gw.log_tail(2);
        rig.fail(format!(
            "read-only spool while running: {e} (exit {code:?}; log: {tail})"
        ));
    }
    rig.expect_degraded(0, "read_only").await;
    if rig.gw.running() {
        rig.term_expect_0(Duration::from_secs(10), "SIGTERM, read-only spool")
            .await;
    } else {
        let code = rig.gw.exit_code();
        rig.fail(format!("gateway ended by itself ({code:?})"));
    }
    rig.gw.kill9();
    if let Err(e) = mnt.repair() {
        rig.fail(format!("repairing the card image: {e}"));
    }
    let out = rig.finish().await;
    drop(mnt);
    out
}

/// Every (device, kind, seq) a spool file holds, read with SQL (the columns
/// exist in every schema so far).
fn rows_in(path: &Path) -> Vec<(String, &'static str, u64)> {
    let Ok(c) = rusqlite::Connection::open(path) else {
        return vec![];
    };
    let Ok(mut st) = c.prepare("SELECT device, kind, seq FROM rec") else {
        return vec![];
    };
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    let Ok(rows) = rows else { return vec![] };
    rows.flatten()
        .map(|(d, k, s)| (d, if k == 1 { "events" } else { "samples" }, s as u64))
        .collect()
}

/// Garbage over spool.db between runs: the gateway starts and never reuses
/// a seq. What the overwritten file held is counted as destroyed.
async fn corrupt_file(o: &Opts) -> Outcome {
    let mut rig = Rig::new("corrupt_file", o, None).await;
    let idx = rig.rec.len();
    rig.start(Load::Normal);
    if rig.live_after(idx, Duration::from_secs(20)).await.is_none() {
        rig.fail("no live reading after start".into());
    }
    // Some backlog too, so the file holds rows.
    rig.broker.stop();
    sleep_ms(2000).await;
    rig.term_expect_0(Duration::from_secs(10), "stop before the damage")
        .await;
    for r in rows_in(&rig.spool) {
        rig.destroyed.insert(r);
    }
    rig.note(format!(
        "{} rows destroyed with the file",
        rig.destroyed.len()
    ));
    let len = std::fs::metadata(&rig.spool).map(|m| m.len()).unwrap_or(0);
    let mut junk = vec![0u8; len.max(8192) as usize];
    rand::rng().fill(&mut junk[..]);
    if let Err(e) = std::fs::write(&rig.spool, &junk) {
        rig.fail(format!("writing garbage: {e}"));
    }
    rig.broker.spawn();
    let idx = rig.rec.len();
    rig.start(Load::Normal);
    if rig.live_after(idx, Duration::from_secs(20)).await.is_none() {
        let code = rig.gw.exit_code();
        let tail = rig.gw.log_tail(2);
        rig.fail(format!(
            "corrupt spool: no live reading within 20 s (exit {code:?}; log: {tail})"
        ));
    }
    sleep_ms(2000).await;
    rig.term_expect_0(Duration::from_secs(10), "stop after the damage")
        .await;
    rig.finish().await
}

/// Stops the gateway with a backlog on disk (an outage, then SIGTERM).
async fn backlog_on_disk(rig: &mut Rig, load: Load, secs: u64) {
    let idx = rig.rec.len();
    rig.start(load);
    if rig.live_after(idx, Duration::from_secs(20)).await.is_none() {
        rig.fail("no live reading after start".into());
    }
    rig.broker.stop();
    sleep_ms(secs * 1000).await;
    rig.term_expect_0(Duration::from_secs(10), "stop with a backlog")
        .await;
}

/// The columns of table `rec`.
fn rec_columns(c: &rusqlite::Connection) -> Vec<String> {
    let Ok(mut st) = c.prepare("PRAGMA table_info(rec)") else {
        return vec![];
    };
    st.query_map([], |r| r.get::<_, String>(1))
        .map(|rows| rows.flatten().collect())
        .unwrap_or_default()
}

/// One stored row's body has a byte flipped while the gateway is stopped:
/// it must never be published as invalid JSON; the rest arrives.
async fn damaged_row(o: &Opts) -> Outcome {
    let mut rig = Rig::new("damaged_row", o, None).await;
    backlog_on_disk(&mut rig, Load::Normal, 3).await;
    let hit = (|| -> Result<(String, i64, u64, String), String> {
        let c = rusqlite::Connection::open(&rig.spool).map_err(|e| e.to_string())?;
        let (id, device, seq, body): (i64, String, i64, String) = c
            .query_row(
                "SELECT id, device, seq, body FROM rec WHERE device = 'ups1' AND kind = 0 \
                 ORDER BY seq LIMIT 1 OFFSET 5",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(|e| format!("no ups1 row in the backlog: {e}"))?;
        // Flip one bit of the first quote inside the values: `"` (0x22)
        // becomes `#` (0x23), a single bit error.
        let at = body
            .find("\"values\":{\"")
            .map(|i| i + "\"values\":{".len())
            .ok_or("body has no values")?;
        let mut bytes = body.clone().into_bytes();
        bytes[at] ^= 0x01;
        let damaged = String::from_utf8(bytes).map_err(|e| e.to_string())?;
        c.execute(
            "UPDATE rec SET body = ?1 WHERE id = ?2",
            rusqlite::params![damaged, id],
        )
        .map_err(|e| e.to_string())?;
        Ok((device, id, seq as u64, damaged))
    })();
    match hit {
        Ok((device, id, seq, damaged)) => {
            // Not destroyed: the gateway must declare it (corrupt), and
            // that declaration excuses it, once.
            rig.damaged.insert((device.clone(), "samples", seq));
            let short: String = damaged.chars().take(60).collect();
            rig.note(format!("damaged row {id} ({device} seq {seq}): {short}…"));
        }
        Err(e) => rig.fail(format!("could not damage a row: {e}")),
    }
    rig.finish().await
}

/// IEEE CRC-32 (the one crc32fast computes), for the spool's `crc` column.
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for p in parts {
        for &b in *p {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0xEDB8_8320
                } else {
                    c >> 1
                };
            }
        }
    }
    !c
}

/// A stored reading far bigger than any MQTT packet limit sits at the head
/// of ups1's backlog. Made with SQL, not with this crate's `Spool` (the
/// binary under test may have a newer schema than the library this harness
/// is built with): an existing row's body gets a 2 MiB value, and when the
/// table has a `crc` column the checksum is recomputed as docs/spec say
/// (crc32 over kind byte, epoch BE u64, seq BE u64, device, 0, body, and
/// for a row that keeps `boot` and `boottime`: 0, boot, 0, boottime BE), so
/// the record is valid but too large, not corrupt. The broker, like an
/// operations centre's, refuses packets over 1 MiB (mosquitto
/// `max_packet_size`: it disconnects the sender), which is also the new
/// default `mqtt.max_packet_size`. Expectation: env1 keeps delivering,
/// ups1's other backlog arrives, the big one is declared.
async fn oversized_reading(o: &Opts) -> Outcome {
    let broker = Broker::start_with("max_packet_size 1048576\n");
    let mut rig = Rig::with_broker("oversized_reading", o, None, broker).await;
    backlog_on_disk(&mut rig, Load::Normal, 3).await;
    let made = (|| -> Result<(u64, bool), String> {
        let c = rusqlite::Connection::open(&rig.spool).map_err(|e| e.to_string())?;
        let cols = rec_columns(&c);
        let has_epoch = cols.iter().any(|c| c == "epoch");
        let has_crc = cols.iter().any(|c| c == "crc");
        let has_boot = cols.iter().any(|c| c == "boot") && cols.iter().any(|c| c == "boottime");
        let q = format!(
            "SELECT id, kind, device, seq, body, {}, {} FROM rec WHERE device = 'ups1' AND kind = 0 ORDER BY seq LIMIT 1",
            if has_epoch { "epoch" } else { "0" },
            if has_boot { "boot, boottime" } else { "NULL, NULL" }
        );
        #[allow(clippy::type_complexity)]
        let (id, kind, device, seq, body, epoch, boot, boottime): (
            i64,
            i64,
            String,
            i64,
            String,
            i64,
            Option<String>,
            Option<i64>,
        ) = c
            .query_row(&q, [], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })
            .map_err(|e| format!("no ups1 row in the backlog: {e}"))?;
        let mut v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        v["values"]["pad"] = Value::String("x".repeat(2 << 20));
        let big = v.to_string();
        c.execute(
            "UPDATE rec SET body = ?1 WHERE id = ?2",
            rusqlite::params![big, id],
        )
        .map_err(|e| e.to_string())?;
        if has_crc {
            let kind_b = [kind as u8];
            let epoch_be = (epoch as u64).to_be_bytes();
            let seq_be = (seq as u64).to_be_bytes();
            let mut parts: Vec<&[u8]> = vec![
                &kind_b,
                &epoch_be,
                &seq_be,
                device.as_bytes(),
                &[0],
                big.as_bytes(),
            ];
            // A row that keeps when it was taken has those covered too.
            let boottime_be = boottime.map(|t| t.to_be_bytes());
            if let (Some(b), Some(t)) = (&boot, &boottime_be) {
                parts.extend([&[0u8][..], b.as_bytes(), &[0], &t[..]]);
            }
            let crc = crc32(&parts);
            c.execute(
                "UPDATE rec SET crc = ?1 WHERE id = ?2",
                rusqlite::params![crc as i64, id],
            )
            .map_err(|e| e.to_string())?;
        }
        Ok((seq as u64, has_crc))
    })();
    match made {
        Ok((seq, crc)) => rig.note(format!(
            "ups1 sample seq {seq} made 2 MiB{}",
            if crc { " (crc recomputed)" } else { "" }
        )),
        Err(e) => rig.fail(format!("could not make the big row: {e}")),
    }
    // The broker returns; env1 must keep flowing while ups1's backlog is
    // sent around the big record.
    rig.broker.spawn();
    let idx = rig.rec.len();
    rig.start(Load::Normal);
    // The window opens at the gateway's first birth message, not at its
    // start: start-up on a loaded machine is not the uplink being blocked.
    // env1's live readings are counted (not messages: readings that queue
    // up travel together), at 20 a second half of them must arrive.
    let Some(online) = rig
        .wait_while_up(idx, Duration::from_secs(20), &|r| r.is_status_online())
        .await
    else {
        let tail = rig.gw.log_tail(2);
        rig.fail(format!(
            "no birth message within 20 s of the start (log: {tail})"
        ));
        return rig.finish().await;
    };
    let (t, t_wall) = {
        let recs = rig.rec.lock();
        (recs[online].at, recs[online].wall_ms)
    };
    let window = Duration::from_millis(o.pick(6_000, 30_000));
    sleep_ms(window.saturating_sub(t.elapsed()).as_millis() as u64).await;
    // Readings taken in the window and delivered in it.
    let env1_live = {
        let recs = rig.rec.lock();
        recs[online..]
            .iter()
            .filter(|r| r.at < t + window && r.is_live("env1"))
            .filter_map(|r| r.json())
            .map(|v| {
                v["samples"].as_array().map_or(0, |a| {
                    a.iter()
                        .filter(|s| {
                            s["historical"] == false
                                && s["ts"].as_i64().is_some_and(|ts| ts >= t_wall)
                        })
                        .count()
                })
            })
            .sum::<usize>()
    };
    let expected = (window.as_millis() / 50) as usize;
    rig.note(format!(
        "env1 live readings in the {} s after the birth, with the big record queued: {env1_live} (about {expected} read)",
        window.as_secs()
    ));
    if env1_live * 2 < expected {
        rig.fail(format!(
            "uplink blocked: env1 got {env1_live} live readings of about {expected}"
        ));
    }
    rig.term_expect_0(Duration::from_secs(10), "stop").await;
    rig.finish().await
}

/// Latencies measured with slow fsync.
#[derive(Default)]
struct SlowFigures {
    healthz_outage: Vec<f64>,
    healthz_drain: Vec<f64>,
    live_drain: Vec<f64>,
    live_healthy: Vec<f64>,
    drain_secs: f64,
    healthz_errors: u64,
}

/// One GET /healthz: milliseconds to the whole response (5 s cap).
async fn healthz(port: u16) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = Instant::now();
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        buf.starts_with(b"HTTP/1.1 200").then_some(())
    };
    match tokio::time::timeout(Duration::from_secs(5), fut).await {
        Ok(Some(())) => Some(t.elapsed().as_secs_f64() * 1000.0),
        _ => None,
    }
}

/// A /healthz answer slower than this counts as a failed request.
const HEALTHZ_ERROR_MS: f64 = 1000.0;

/// Probes /healthz every 20 ms until `until` says stop. Open loop: a probe
/// goes out every 20 ms whether or not the previous one has answered, so
/// the figures weigh time, not answers. (Probing one after another, a page
/// blocked 250 ms once a second is seen by one probe in about 38, fewer
/// than 5 %: its p95 would not show the stall at all.) An answer that
/// fails, is not 200, or takes longer than [`HEALTHZ_ERROR_MS`] is an error.
async fn probe_until(
    port: u16,
    out: &mut Vec<f64>,
    errors: &mut u64,
    mut until: impl FnMut() -> bool,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut probes = Vec::new();
    while !until() {
        tick.tick().await;
        probes.push(tokio::spawn(healthz(port)));
    }
    for p in probes {
        match p.await {
            Ok(Some(ms)) => {
                out.push(ms);
                if ms > HEALTHZ_ERROR_MS {
                    *errors += 1;
                }
            }
            _ => *errors += 1,
        }
    }
}

/// Live (not historical) sample latencies, receive time − reading time, of
/// the records in `recs` that arrived in [from, to).
/// Latencies (receipt wall time - reading time) of live samples received in
/// `[from, to)` and taken at or after `from`: a reading taken during an
/// outage and still waiting in memory when the link returned is not a live
/// reading of the drain, however it is flagged.
fn live_latencies(recs: &[Rec], from: Instant, to: Instant) -> Vec<f64> {
    let mut out = Vec::new();
    let from_wall = now_ms() - from.elapsed().as_millis() as i64;
    for r in recs.iter().filter(|r| r.at >= from && r.at < to) {
        if !r.topic.ends_with("/telemetry") || r.topic.ends_with("/gateway/telemetry") {
            continue;
        }
        let Some(v) = r.json() else { continue };
        for s in v["samples"].as_array().into_iter().flatten() {
            if s["historical"] == false {
                if let Some(ts) = s["ts"].as_i64().filter(|ts| *ts >= from_wall) {
                    out.push((r.wall_ms - ts) as f64);
                }
            }
        }
    }
    out
}

/// Builds scripts/lib/slowfsync.c into target/ if needed.
fn shim(o: &Opts) -> Result<PathBuf, String> {
    let src = o.root.join("scripts/lib/slowfsync.c");
    let out = o.root.join("target/slowfsync.so");
    let stale = match (std::fs::metadata(&src), std::fs::metadata(&out)) {
        (Ok(s), Ok(b)) => s.modified().ok() > b.modified().ok(),
        _ => true,
    };
    if stale {
        sh(
            "gcc",
            &[
                "-shared",
                "-fPIC",
                "-O2",
                "-o",
                &out.to_string_lossy(),
                &src.to_string_lossy(),
                "-ldl",
            ],
        )?;
    }
    Ok(out)
}

/// Runs the gateway with every fsync taking 250 ms: healthy, an outage
/// (spill writes), then the drain; the rig is left running for finish().
async fn measure_slow_fsync(rig: &mut Rig, so: &Path, outage_s: u64) -> SlowFigures {
    let mut f = SlowFigures::default();
    rig.gw.env = vec![
        ("LD_PRELOAD".into(), so.to_string_lossy().into_owned()),
        ("WARDGATE_FSYNC_DELAY_MS".into(), "250".into()),
    ];
    let idx = rig.rec.len();
    rig.start(Load::Heavy);
    if rig.live_after(idx, Duration::from_secs(30)).await.is_none() {
        rig.fail("no live reading after start".into());
    }
    let t = Instant::now();
    sleep_ms(3000).await;
    f.live_healthy = live_latencies(&rig.rec.lock(), t, Instant::now());
    // The outage: readings are spilled to disk, each commit fsyncs.
    rig.broker.stop();
    let end = Instant::now() + Duration::from_secs(outage_s);
    let port = rig.web;
    let mut errs = 0;
    probe_until(port, &mut f.healthz_outage, &mut errs, || {
        Instant::now() > end
    })
    .await;
    // The drain: from the gateway's reconnection to an empty spool.
    let idx = rig.rec.len();
    rig.broker.spawn();
    let conn = rig
        .rec
        .wait_for(idx, Duration::from_secs(60), &|r| r.is_status_online())
        .await;
    let t_conn = conn
        .map(|i| rig.rec.lock()[i].at)
        .unwrap_or_else(Instant::now);
    let limit = Instant::now() + Duration::from_secs(120);
    let rec = &rig.rec;
    let mut scanned = idx;
    let mut done = false;
    probe_until(port, &mut f.healthz_drain, &mut errs, || {
        if done || Instant::now() > limit {
            return true;
        }
        let n = rec.len();
        done = rec
            .find(scanned, &|r| {
                r.topic.ends_with("/gateway/telemetry")
                    && r.at > t_conn
                    && r.json().is_some_and(|v| {
                        v["samples"]
                            .as_array()
                            .and_then(|a| a.last())
                            .is_some_and(|s| num(&s["values"]["spool.depth"]) == Some(0.0))
                    })
            })
            .is_some();
        scanned = n;
        done
    })
    .await;
    let t_end = Instant::now();
    f.drain_secs = t_end.duration_since(t_conn).as_secs_f64();
    f.live_drain = live_latencies(&rig.rec.lock(), t_conn, t_end);
    f.healthz_errors = errs;
    if !done {
        rig.fail("the backlog did not drain within 120 s".into());
    }
    f
}

/// p50 / p95 / p99 / max and the count, for a note.
fn spread(v: &[f64]) -> String {
    if v.is_empty() {
        return "no data".into();
    }
    let max = v.iter().copied().fold(f64::MIN, f64::max);
    format!(
        "p50 {:.1} / p95 {:.1} / p99 {:.1} / max {max:.0} ms (n {})",
        pct(v, 50.0).unwrap_or(0.0),
        pct(v, 95.0).unwrap_or(0.0),
        pct(v, 99.0).unwrap_or(0.0),
        v.len()
    )
}

/// Slow fsync (250 ms, a cheap SD card): outage then drain. The bugs
/// guarded: the page (/healthz) or the uplink (live readings) waiting on a
/// spool commit, which here takes at least one 250 ms fsync about once a
/// second. Such a wait delays everything that arrives during it by up to
/// 250 ms, about a tenth of the time by more than 150 ms: p95 near 200 ms.
/// Bounds, below one fsync: /healthz p95 ≤ 150 ms (open-loop probes every
/// 20 ms, see [`probe_until`]), live readings p95 ≤ 100 ms (their delay is
/// spread more thinly: the old spool, one lock around memory and disk,
/// showed live p95 108-488 ms in the drain and /healthz p95 171-205 ms in
/// the outage, 202-332 ms in the drain; this one 0.5-2 ms). p95, not p99,
/// so that a few slow answers on a busy 2-core machine (p99 of ~250 probes
/// is the 3rd slowest) are not a failure; the benchmark targets
/// (`scripts/bench`, p99 ≤ 5 and 10 ms) are far below. Any /healthz
/// request failing or taking over 1 s fails too.
async fn slow_fsync(o: &Opts) -> Outcome {
    let so = match shim(o) {
        Ok(p) => p,
        Err(e) => return Outcome::skip("slow_fsync", format!("cannot build the shim: {e}")),
    };
    let mut rig = Rig::new("slow_fsync", o, None).await;
    let f = measure_slow_fsync(&mut rig, &so, o.pick(5, 30)).await;
    rig.note(format!(
        "fsync 250 ms: /healthz {} in the outage; {} in the drain ({:.1} s); live {} in the drain, {} when healthy; {} /healthz failures (or > 1 s)",
        spread(&f.healthz_outage),
        spread(&f.healthz_drain),
        f.drain_secs,
        spread(&f.live_drain),
        spread(&f.live_healthy),
        f.healthz_errors
    ));
    for (what, v, bound) in [
        ("/healthz p95 during the outage", &f.healthz_outage, 150.0),
        ("/healthz p95 during the drain", &f.healthz_drain, 150.0),
        ("live p95 during the drain", &f.live_drain, 100.0),
    ] {
        if let Some(x) = pct(v, 95.0) {
            if x > bound {
                rig.fail(format!("{what} {x:.0} ms > {bound:.0} ms"));
            }
        }
    }
    if f.healthz_errors > 0 {
        rig.fail(format!(
            "{} /healthz requests failed or took > 1 s",
            f.healthz_errors
        ));
    }
    rig.gw.env.clear();
    rig.finish().await
}

/// `scripts/bench`'s slow-fsync figures: measured vs target.
async fn figures(o: &Opts) -> i32 {
    let so = match shim(o) {
        Ok(p) => p,
        Err(e) => {
            println!("slow-fsync figures skipped: cannot build the shim: {e}");
            return 0;
        }
    };
    let mut rig = Rig::new("figures", o, None).await;
    let f = measure_slow_fsync(&mut rig, &so, 15).await;
    println!();
    println!(
        "slow fsync (every fsync 250 ms, LD_PRELOAD shim), binary {}",
        o.bin.display()
    );
    println!("{:<52} {:>10} {:>10}", "figure", "target", "measured");
    let rows = [
        (
            "live reading -> broker p99, during the drain",
            10.0,
            pct(&f.live_drain, 99.0),
        ),
        (
            "/healthz p99, during the outage (spill writes)",
            5.0,
            pct(&f.healthz_outage, 99.0),
        ),
        (
            "/healthz p99, during the drain",
            5.0,
            pct(&f.healthz_drain, 99.0),
        ),
    ];
    for (what, target, v) in rows {
        let mark = match v {
            Some(x) if x <= target => "",
            Some(_) => "  MISSED",
            None => "  (no data)",
        };
        println!(
            "{what:<52} {:>10} {:>10}{mark}",
            format!("<= {target:.0} ms"),
            fmt_ms(v)
        );
    }
    println!(
        "(/healthz probed every 20 ms, open loop; live p99 when healthy: {}; drain took {:.1} s; {} live samples in the drain; {} /healthz failures or > 1 s)",
        fmt_ms(pct(&f.live_healthy, 99.0)),
        f.drain_secs,
        f.live_drain.len(),
        f.healthz_errors
    );
    rig.gw.env.clear();
    let _ = rig.gw.term(Duration::from_secs(15)).await;
    0
}

/// The accounting rule on made-up messages; run before every suite so a
/// broken rule cannot make a binary look good.
fn self_test() {
    let rec = |topic: &str, body: &str| Rec {
        at: Instant::now(),
        wall_ms: 0,
        topic: topic.into(),
        retain: false,
        payload: body.as_bytes().to_vec(),
    };
    let t = "ioc/s/ups1/telemetry";
    let g = "ioc/s/gateway/event";
    const E: &str = "00000000000000e1";
    // Readings 20 ms apart from t = 100 s.
    let ts = |seq: u64| 100_000 + seq as i64 * 20;
    let sample = |seq: u64, v: u32| {
        format!(
            r#"{{"site":"s","device":"ups1","epoch":"{E}","samples":[{{"historical":false,"seq":{seq},"ts":{},"clock":"synced","values":{{"a":{v}}}}}]}}"#,
            ts(seq)
        )
    };
    let gw_event = |seq: u64, code: &str, values: &str| {
        format!(
            r#"{{"site":"s","device":"gateway","epoch":"{E}","events":[{{"seq":{seq},"ts":1,"clock":"synced","historical":false,"severity":"warning","code":"{code}","message":"m","values":{{{values}}}}}]}}"#
        )
    };
    let unclean = |seq: u64, r: u64, l: Option<u64>| {
        let last = l
            .map(|l| format!(r#","seq_last_used.ups1.samples":{l}"#))
            .unwrap_or_default();
        gw_event(
            seq,
            "gateway.unclean_stop",
            &format!(r#""seq_resumed.ups1.samples":{r}{last}"#),
        )
    };
    let none = Known {
        first_start_ms: 100_000,
        ..Known::default()
    };
    // A kill 0.5 s after reading 5, and one 10 s later.
    let soon = Known {
        kills: vec![(ts(5) + 500, CRASH_WINDOW_SPILL_MS, 100_000)],
        ..none.clone()
    };
    let late = Known {
        kills: vec![(ts(5) + 10_000, CRASH_WINDOW_SPILL_MS, 100_000)],
        ..none.clone()
    };
    // The made-up messages follow the schemas; one that does not is caught.
    let schemas = Schemas::get();
    let ok: Value = serde_json::from_str(&sample(0, 1)).unwrap();
    assert_eq!(schemas.check(t, &ok), None);
    let ok: Value = serde_json::from_str(&unclean(0, 10, Some(5))).unwrap();
    assert_eq!(schemas.check(g, &ok), None);
    let bad: Value =
        serde_json::from_str(r#"{"site":"s","device":"ups1","epoch":"e1","samples":[{"seq":1}]}"#)
            .unwrap();
    assert!(schemas.check(t, &bad).is_some());
    // 0..=3 and 10: 4..=9 missing, undeclared.
    let mut recs: Vec<Rec> = [0, 1, 2, 3, 10]
        .iter()
        .map(|&s| rec(t, &sample(s, 1)))
        .collect();
    let a = account(&recs, &none);
    assert_eq!(
        (
            a.delivered,
            a.missing,
            a.undeclared,
            a.readings,
            a.schema_invalid
        ),
        (5, 6, 6, 11, 0)
    );
    // An unclean stop without seq_last_used declares everything below R.
    recs.push(rec(g, &unclean(0, 10, None)));
    let a = account(&recs, &none);
    assert_eq!((a.missing, a.crash, a.undeclared), (0, 0, 0));
    // With seq_last_used = 5: 6..=9 unused; 4 and 5 lost in the crash
    // only when a kill came within the bound after they were taken.
    recs.pop();
    recs.push(rec(g, &unclean(0, 10, Some(5))));
    let a = account(&recs, &soon);
    assert_eq!((a.missing, a.crash, a.undeclared), (0, 2, 0));
    let a = account(&recs, &late);
    assert_eq!(
        (a.missing, a.crash, a.undeclared, a.too_old_for_crash),
        (2, 0, 2, 2)
    );
    let a = account(&recs, &none);
    assert_eq!((a.crash, a.undeclared), (0, 2));
    // The tail: nothing received above 3, last used 5, resumed at 10 (no
    // later reading): 4 and 5 are still checked.
    let tail: Vec<Rec> = [0, 1, 2, 3]
        .iter()
        .map(|&s| rec(t, &sample(s, 1)))
        .chain([rec(g, &unclean(0, 10, Some(5)))])
        .collect();
    assert_eq!(account(&tail, &late).undeclared, 2);
    assert_eq!(account(&tail, &soon).crash, 2);
    // A kill soon after, but of a run that started after they were taken
    // (a tail lost at a clean stop before it): not excused.
    let next_run = Known {
        kills: vec![(ts(5) + 500, CRASH_WINDOW_SPILL_MS, ts(5) + 300)],
        ..none.clone()
    };
    assert_eq!(account(&tail, &next_run).undeclared, 2);
    // A duplicate, then a reused seq.
    recs.push(rec(t, &sample(1, 1)));
    recs.push(rec(t, &sample(2, 9)));
    let a = account(&recs, &soon);
    assert_eq!((a.duplicates, a.reused), (2, 1));
    // Drops, by reason: write_failed excuses any one missing reading,
    // corrupt only a row the harness damaged, too_large only the record
    // its event names.
    let mut recs: Vec<Rec> = [0, 4].iter().map(|&s| rec(t, &sample(s, 1))).collect();
    let tel = |seq: u64, reason: &str, d: u32| {
        format!(
            r#"{{"site":"s","device":"gateway","epoch":"{E}","samples":[{{"historical":false,"seq":{seq},"ts":1,"clock":"synced","values":{{"spool.dropped.{reason}":{d}}}}}]}}"#
        )
    };
    recs.push(rec("ioc/s/gateway/telemetry", &tel(0, "write_failed", 0)));
    recs.push(rec("ioc/s/gateway/telemetry", &tel(1, "write_failed", 1)));
    let a = account(&recs, &none);
    assert_eq!((a.missing, a.declared_drops, a.undeclared), (3, 1, 2));
    let mut recs: Vec<Rec> = [0, 4].iter().map(|&s| rec(t, &sample(s, 1))).collect();
    recs.push(rec("ioc/s/gateway/telemetry", &tel(0, "corrupt", 1)));
    let a = account(&recs, &none);
    assert_eq!((a.declared_drops, a.undeclared), (0, 3));
    // The damaged row 1 is excused once, by the corrupt declaration.
    let damaged = Known {
        damaged: [("ups1".to_owned(), "samples", 1)].into_iter().collect(),
        ..none.clone()
    };
    let a = account(&recs, &damaged);
    assert_eq!((a.declared_drops, a.undeclared), (1, 2));
    // Without the declaration the damaged row is undeclared loss.
    recs.pop();
    assert_eq!(account(&recs, &damaged).undeclared, 3);
    recs.push(rec(
        g,
        &gw_event(
            0,
            "spool.quarantined",
            r#""record.device":"ups1","record.kind":"samples","record.seq":2"#,
        ),
    ));
    let a = account(&recs, &none);
    assert_eq!((a.declared_drops, a.undeclared), (1, 2));
    // Destroyed by the harness: not the gateway's loss. Invalid JSON counts.
    let destroyed = Known {
        destroyed: [1, 2, 3]
            .into_iter()
            .map(|s| ("ups1".to_owned(), "samples", s))
            .collect(),
        ..none.clone()
    };
    recs.push(rec(t, "{\"site\":#"));
    let a = account(&recs, &destroyed);
    assert_eq!((a.missing, a.undeclared, a.invalid_json), (0, 0, 1));
    // Order: a historical seq below one already seen is an inversion.
    let hist = |seq: u64| {
        format!(
            r#"{{"device":"ups1","samples":[{{"historical":true,"seq":{seq},"values":{{}}}}]}}"#
        )
    };
    let recs: Vec<Rec> = [5, 6, 4, 6, 7].iter().map(|&s| rec(t, &hist(s))).collect();
    assert_eq!(order_violations(&recs).0, 1);
    // An unclean stop raised by a run that counts in an epoch of its own
    // (E2, announced by a sequence_reset of the same run with
    // previous_epoch E) declares E's numbers: E's tail 4 and 5 is checked.
    const E2: &str = "00000000000000e2";
    let in_e2 = |seq: u64, ts: i64, code: &str, values: &str| {
        format!(
            r#"{{"site":"s","device":"gateway","epoch":"{E2}","events":[{{"seq":{seq},"ts":{ts},"clock":"synced","historical":false,"severity":"warning","code":"{code}","message":"m","values":{{{values}}}}}]}}"#
        )
    };
    let restart = ts(5) + 400;
    let own_epoch = |reset_ts: i64| -> Vec<Rec> {
        [0, 1, 2, 3]
            .iter()
            .map(|&s| rec(t, &sample(s, 1)))
            .chain([
                rec(
                    g,
                    &in_e2(
                        0,
                        reset_ts,
                        "gateway.sequence_reset",
                        &format!(r#""epoch":"{E2}","previous_epoch":"{E}","reason":"r""#),
                    ),
                ),
                rec(
                    g,
                    &in_e2(
                        1,
                        restart + 10,
                        "gateway.unclean_stop",
                        r#""seq_resumed.ups1.samples":10,"seq_last_used.ups1.samples":5"#,
                    ),
                ),
            ])
            .collect()
    };
    let runs = |k: &Known| Known {
        starts: vec![100_000, restart],
        ..k.clone()
    };
    let e2 = own_epoch(restart + 5);
    let a = account(&e2, &runs(&soon));
    assert_eq!((a.crash, a.undeclared), (2, 0), "E's tail lost in the kill");
    let a = account(&e2, &runs(&late));
    assert_eq!(
        (a.undeclared, a.too_old_for_crash),
        (2, 2),
        "E's tail checked, and too old for the kill"
    );
    // A reset of an earlier run does not make it the previous epoch's:
    // the declaration is E2's own (its 0..=5 in the kill's range).
    let e2 = own_epoch(restart - 100);
    let a = account(&e2, &runs(&soon));
    assert_eq!((a.crash, a.undeclared), (6, 0));
    // A stop with the card unwritable: 4 and 5 were only in memory when
    // it was made so (a span from the fill less the bound to the stop),
    // with spool.degraded declared.
    let full_card = |span: (i64, i64)| Known {
        degraded: vec![span],
        ..none.clone()
    };
    let recs: Vec<Rec> = [0, 1, 2, 3]
        .iter()
        .map(|&s| rec(t, &sample(s, 1)))
        .chain([
            rec(g, &unclean(0, 10, Some(5))),
            rec(
                g,
                &gw_event(1, "spool.degraded", r#""spool.reason":"disk_full""#),
            ),
        ])
        .collect();
    let a = account(&recs, &full_card((ts(4) - 1000, ts(5) + 500)));
    assert_eq!((a.degraded_stop, a.undeclared), (2, 0));
    // The card made full well after they were taken: they had to be on
    // the card.
    let a = account(&recs, &full_card((ts(5) + 1000, ts(5) + 2000)));
    assert_eq!((a.degraded_stop, a.undeclared), (0, 2));
    // A stop before they were taken cannot have lost them.
    let a = account(&recs, &full_card((ts(0) - 1000, ts(1))));
    assert_eq!((a.degraded_stop, a.undeclared), (0, 2));
    // Without spool.degraded nothing is excused.
    let a = account(&tail, &full_card((ts(4) - 1000, ts(5) + 500)));
    assert_eq!((a.degraded_stop, a.undeclared), (0, 2));
    // A scenario that cannot inject its fault: SKIP, but FAIL as root.
    let mut out = Outcome::skip("x", "no loop device".into());
    skip_as_root(&mut out, false);
    assert_eq!(out.verdict(), "SKIP");
    skip_as_root(&mut out, true);
    assert_eq!(out.verdict(), "FAIL");
    assert!(out.failures[0].starts_with("SKIP as root: no loop device"));
    // Reconnect times: the short run forgives one slow restart up to 7 s.
    assert!(reconnect_verdict(&[0.5, 0.6, 6.5, 0.4, 0.5], true).is_none());
    assert!(reconnect_verdict(&[0.5, 0.6, 7.5, 0.4, 0.5], true).is_some());
    assert!(reconnect_verdict(&[5.5, 0.6, 6.0, 0.4, 0.5], true).is_some());
    // The long run's p95 of 20 is the second slowest.
    let mut long = vec![0.5; 20];
    long[3] = 9.0;
    assert!(reconnect_verdict(&long, false).is_none());
    long[7] = 5.5;
    assert!(reconnect_verdict(&long, false).is_some());
}

// ---------------------------------------------------------------------------
// Main

type ScenarioFn =
    for<'a> fn(&'a Opts) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + 'a>>;

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name), (|o| Box::pin($name(o))) as ScenarioFn)),*]
    };
}

fn usage() -> ! {
    eprintln!(
        "usage: scripts/faults [--short] [--only NAME[,NAME…]] [--bin PATH] [--list] [--figures] [--self-test] [--planted]\n\
         the binary is --bin, else $WARDGATE_BIN, else target/release/wardgate;\n\
         --planted: the binary must be built with --features plant-faults (scripts/faults --planted does)"
    );
    std::process::exit(2);
}

/// The planted losses (src/spool/plant.rs, `WARDGATE_PLANT`) and the
/// scenario that must catch each: `spooled` (a record lost on its way to
/// the card during an outage) by `sigterm_outage`, which allows no loss at
/// all; `tail` (the newest reading thrown away at a clean stop) by
/// `damaged_row`, whose one device run ends with that stop, so only the
/// tail check (the closing run's first numbers) can see it; `on_disk` (the
/// oldest reading on the card deleted at start) by `kill9_spill`, where
/// the row lies at or below a `seq_last_used` but was taken long before
/// the kill of a long cycle, so no crash excuses it.
const PLANTED: [(&str, &str); 3] = [
    ("spooled", "sigterm_outage"),
    ("tail", "damaged_row"),
    ("on_disk", "kill9_spill"),
];

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A SKIP as root is a FAIL: there (CI) every fault must be injectable.
fn skip_as_root(out: &mut Outcome, root: bool) {
    if !root {
        return;
    }
    if let Some(why) = out.skipped.take() {
        out.failures.push(format!(
            "SKIP as root: {why} (as root the fault must be injectable; CI runs as root)"
        ));
    }
}

/// Appends `faults: <scenario>: <why>` to `<repo>/target/skipped.txt`, the
/// file CI's closing line prints.
fn record_skip(root: &Path, name: &str, why: &str) {
    let dir = root.join("target");
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("skipped.txt"))
    {
        let _ = writeln!(f, "faults: {name}: {}", why.replace('\n', " "));
    }
}

/// Runs one scenario; a panic in it (a harness bug, a peer that would not
/// start) is its FAIL: its guards have already cleaned up (children
/// killed, mounts unmounted) while unwinding. A scenario that cannot inject
/// its fault is SKIP and written to target/skipped.txt; as root (CI runs
/// as root, where tmpfs, loop devices and remounts must work) it is a
/// FAIL too, so a green run as root has run every scenario.
fn run_one(rt: &tokio::runtime::Runtime, o: &Opts, name: &'static str, f: ScenarioFn) -> Outcome {
    let mut out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(f(o))))
        .unwrap_or_else(|p| {
            let why = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic".into());
            let mut out = Outcome::skip(name, String::new());
            out.skipped = None;
            out.failures.push(format!("the harness panicked: {why}"));
            out
        });
    if let Some(why) = &out.skipped {
        record_skip(&o.root, out.name, why);
    }
    skip_as_root(&mut out, is_root());
    println!(
        "  {:<20} {:>5} ({:.0} s){}",
        out.name,
        out.verdict(),
        out.secs,
        out.skipped
            .as_ref()
            .map(|s| format!(": {s}"))
            .unwrap_or_default()
    );
    let _ = std::io::stdout().flush();
    out
}

/// The table and, under it, each scenario's failures and notes.
fn report(outcomes: &[Outcome]) {
    println!();
    println!(
        "{:<20} | {:>6} | {:>8} | {:>9} | {:>10} | {:>17} | verdict",
        "scenario", "cycles", "readings", "delivered", "duplicates", "lost (undeclared)"
    );
    println!("{}", "-".repeat(98));
    for out in outcomes {
        let a = &out.acct;
        println!(
            "{:<20} | {:>6} | {:>8} | {:>9} | {:>10} | {:>17} | {}",
            out.name,
            out.cycles,
            a.readings,
            a.delivered,
            a.duplicates,
            a.undeclared,
            out.verdict()
        );
    }
    println!();
    for out in outcomes {
        for l in detail(out) {
            println!("{l}");
        }
    }
}

/// A scenario's failures and notes, one line each under its name.
fn detail(out: &Outcome) -> Vec<String> {
    let a = &out.acct;
    let mut lines: Vec<String> = out.failures.iter().map(|f| format!("FAIL: {f}")).collect();
    if a.reused > 0 {
        lines.push(format!(
            "FAIL: {} seq reused with different content",
            a.reused
        ));
    }
    if a.invalid_json > 0 {
        lines.push(format!("FAIL: {} payloads are not JSON", a.invalid_json));
    }
    if a.schema_invalid > 0 {
        lines.push(format!(
            "FAIL: {} messages break their schema (docs/schema/)",
            a.schema_invalid
        ));
    }
    if a.undeclared > 0 {
        lines.push(format!(
            "FAIL: {} readings lost without declaration",
            a.undeclared
        ));
    }
    lines.extend(out.notes.iter().cloned());
    if let Some(s) = &out.skipped {
        lines.push(format!("skipped: {s}"));
    }
    if lines.is_empty() {
        return lines;
    }
    let mut v = vec![format!("{}:", out.name)];
    v.extend(lines.into_iter().map(|l| format!("  {l}")));
    v
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut short = false;
    let mut only: Vec<String> = vec![];
    let mut bin: Option<PathBuf> = std::env::var_os("WARDGATE_BIN").map(PathBuf::from);
    let mut list = false;
    let mut figs = false;
    let mut planted = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--short" => short = true,
            "--only" => only.extend(
                args.next()
                    .unwrap_or_else(|| usage())
                    .split(',')
                    .map(str::to_owned),
            ),
            "--bin" => bin = Some(args.next().unwrap_or_else(|| usage()).into()),
            "--list" => list = true,
            "--figures" => figs = true,
            "--planted" => planted = true,
            "--self-test" => {
                self_test();
                println!("accounting self-test passed");
                return;
            }
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    self_test();
    let all = scenarios![
        kill9_spill,
        kill9_wal,
        sigterm_outage,
        sigterm_hung_broker,
        broker_restarts,
        disk_full,
        readonly_start,
        readonly_running,
        corrupt_file,
        damaged_row,
        oversized_reading,
        slow_fsync,
    ];
    if list {
        for (n, _) in &all {
            println!("{n}");
        }
        return;
    }
    for n in &only {
        if !all.iter().any(|(a, _)| a == n) {
            eprintln!("unknown scenario {n:?} (see --list)");
            std::process::exit(2);
        }
    }
    // scripts/faults runs `cargo test --release`, which builds the binary
    // with the release profile: target/release/wardgate.
    let bin = bin.unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_wardgate")));
    if !bin.exists() {
        eprintln!("no binary at {} (cargo build --release)", bin.display());
        std::process::exit(2);
    }
    let o = Opts {
        short,
        bin,
        root,
        plant: None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.spawn(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("interrupted: stopping mosquitto and wardgate, unmounting");
        clean_up_everything();
        std::process::exit(130);
    });
    if figs {
        std::process::exit(rt.block_on(figures(&o)));
    }
    if planted {
        std::process::exit(run_planted(&rt, &o, &all));
    }
    println!(
        "wardgate fault injection ({}), binary {}",
        if short { "short" } else { "long" },
        o.bin.display()
    );
    let mut outcomes = Vec::new();
    for (name, f) in all {
        if !only.is_empty() && !only.iter().any(|n| n == name) {
            continue;
        }
        outcomes.push(run_one(&rt, &o, name, f));
    }
    report(&outcomes);
    let failed = outcomes.iter().any(|o| o.verdict() == "FAIL");
    let _ = std::io::stdout().flush();
    std::process::exit(if failed { 1 } else { 0 });
}

/// `--planted`: each planted loss against the scenario that must catch
/// it, expecting FAIL; exits 1 when one of them passes (the suite missed
/// a loss).
fn run_planted(rt: &tokio::runtime::Runtime, o: &Opts, all: &[(&'static str, ScenarioFn)]) -> i32 {
    println!(
        "wardgate fault injection, planted losses ({}), binary {}",
        if o.short { "short" } else { "long" },
        o.bin.display()
    );
    let mut rows = Vec::new();
    for (plant, scenario) in PLANTED {
        let Some((name, f)) = all.iter().find(|(n, _)| *n == scenario) else {
            continue;
        };
        println!("WARDGATE_PLANT={plant}:");
        let po = Opts {
            plant: Some(plant.to_owned()),
            ..o.clone()
        };
        let out = run_one(rt, &po, name, *f);
        rows.push((plant, out));
    }
    println!();
    println!(
        "{:<10} | {:<16} | {:>17} | {:<7} | caught",
        "planted", "scenario", "lost (undeclared)", "verdict"
    );
    println!("{}", "-".repeat(70));
    let mut missed = 0;
    for (plant, out) in &rows {
        let caught = out.verdict() == "FAIL";
        if !caught {
            missed += 1;
        }
        println!(
            "{:<10} | {:<16} | {:>17} | {:<7} | {}",
            plant,
            out.name,
            out.acct.undeclared,
            out.verdict(),
            if caught {
                "yes"
            } else {
                "NO: the suite missed it"
            }
        );
    }
    println!();
    for (plant, out) in &rows {
        println!("WARDGATE_PLANT={plant}:");
        for l in detail(out) {
            println!("  {l}");
        }
    }
    let _ = std::io::stdout().flush();
    i32::from(missed > 0)
}
