//! The processes a scenario runs: a real mosquitto and the `wardgate`
//! binary under test, and the list of children and mounts alive, so that
//! an interrupted run still cleans up.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::accounting::{CRASH_WINDOW_SPILL_MS, CRASH_WINDOW_WAL_MS};
use crate::util::{free_port, now_ms, sh, signal};

/// Children and mounts alive right now, so that an interrupted run (Ctrl-C,
/// SIGTERM: the guards' Drop does not run then) still cleans up. Normal
/// cleanup is the guards' Drop, which also takes them off this list.
#[derive(PartialEq)]
pub enum Live {
    Pid(u32),
    Mount(PathBuf),
}

pub static LIVE: Mutex<Vec<Live>> = Mutex::new(Vec::new());

pub fn live(add: bool, what: Live) {
    let mut l = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    if add {
        l.push(what);
    } else {
        l.retain(|x| *x != what);
    }
}

/// Kills every child and unmounts every mount still listed.
pub fn clean_up_everything() {
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
pub struct Broker {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub paused: bool,
}

impl Broker {
    pub fn start() -> Broker {
        Self::start_with("")
    }

    /// `extra`: more mosquitto.conf lines (e.g. `max_packet_size`).
    pub fn start_with(extra: &str) -> Broker {
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

    pub fn spawn(&mut self) {
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

    pub fn stop(&mut self) {
        self.resume();
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGTERM);
            let _ = c.wait();
            live(false, Live::Pid(c.id()));
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// A hung broker: the socket stays open, nothing is read or acknowledged.
    pub fn pause(&mut self) {
        if let Some(c) = &self.child {
            signal(c.id(), libc::SIGSTOP);
            self.paused = true;
        }
    }

    pub fn resume(&mut self) {
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
pub struct Gateway {
    pub bin: PathBuf,
    pub cfg: PathBuf,
    pub log: PathBuf,
    pub env: Vec<(String, String)>,
    pub child: Option<Child>,
    pub runs: u32,
    /// When each run started (to say which run sent a copy).
    pub starts: Vec<Instant>,
    /// The exit code of the last run that ended by itself or on a signal.
    pub last_exit: Option<Option<i32>>,
    /// Wall ms of each start.
    pub starts_wall: Vec<i64>,
    /// Each kill -9 of a running gateway: (wall ms, the loss bound of its
    /// policy in ms, wall ms of the killed run's start).
    pub kills: Vec<(i64, i64, i64)>,
    /// The running configuration has `policy = "wal"`.
    pub wal: bool,
    /// Wall ms of every stop of a running gateway (kill -9 or SIGTERM).
    pub stops: Vec<i64>,
}

impl Gateway {
    pub fn start(&mut self, config: &str) {
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

    pub fn kill9(&mut self) {
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
    pub fn exited(&mut self) -> Option<Option<i32>> {
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
    pub fn exit_code(&mut self) -> Option<Option<i32>> {
        self.exited().or(if self.child.is_none() {
            self.last_exit
        } else {
            None
        })
    }

    pub fn running(&mut self) -> bool {
        self.child.is_some() && self.exited().is_none()
    }

    /// SIGTERM and wait up to `limit`: Ok((exit code, time taken)); Err when
    /// it did not exit (it is then killed).
    pub async fn term(&mut self, limit: Duration) -> Result<(Option<i32>, Duration), String> {
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

    pub fn log_tail(&self, lines: usize) -> String {
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
