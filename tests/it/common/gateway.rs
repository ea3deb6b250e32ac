//! The gateway under test: a test's configuration, the gateway started in
//! this process ([`Gateway`]) or as the real binary ([`Process`]), and
//! `wardgate check`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wardgate::config::Config;
use wardgate::spool::Spool;
use wardgate::status::StatusHub;

use super::{signal, test_site, within};

/// A gateway configuration for tests: local broker, spool in `dir`.
pub fn config_text(port: u16, dir: &Path, extra: &str) -> String {
    format!(
        "site = \"{}\"\n\
         [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n\
         [spool]\npath = \"{}\"\n\
         [web]\nlisten = \"127.0.0.1:0\"\n\
         [led]\nbackend = \"none\"\n\
         {extra}\n",
        test_site(),
        dir.join("spool.db").display()
    )
}

/// A simulated device's `[[device]]` table; `extra` holds more of its lines.
pub fn sim(id: &str, interval: &str, extra: &str) -> String {
    format!("[[device]]\nid = \"{id}\"\ntype = \"sim\"\ninterval = \"{interval}\"\n{extra}\n")
}

/// Writes [`config_text`] to `dir/wardgate.toml` for the real binary;
/// returns its path.
pub fn process_config(dir: &Path, port: u16, extra: &str) -> PathBuf {
    let p = dir.join("wardgate.toml");
    std::fs::write(&p, config_text(port, dir, extra)).unwrap();
    p
}

pub fn config(port: u16, dir: &Path, extra: &str) -> Config {
    Config::from_toml(&config_text(port, dir, extra)).expect("test config is valid")
}

/// How many `ups.*` events `device` has raised so far, as the in-process
/// gateway's status lists them.
pub fn ups_events(gw: &Gateway, device: &str) -> usize {
    gw.status
        .get()
        .events
        .iter()
        .filter(|e| e.device == device && e.code.starts_with("ups."))
        .count()
}

/// The gateway running in this process.
pub struct Gateway {
    cancel: CancellationToken,
    join: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub status: StatusHub,
    pub spool: Arc<Spool>,
    pub web: Option<std::net::SocketAddr>,
}

impl Gateway {
    pub async fn start(cfg: Config) -> Gateway {
        Self::start_with_clock(cfg, Arc::new(wardgate::clock::KernelClock::new())).await
    }

    /// Starts the gateway with the clock its readings are stamped by (a
    /// test's [`wardgate::clock::FakeClock`]).
    pub async fn start_with_clock(cfg: Config, clock: Arc<dyn wardgate::clock::Clock>) -> Gateway {
        let cancel = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let c = cancel.clone();
        let join = tokio::spawn(async move {
            let mut tx = Some(tx);
            wardgate::app::run_with_clock(
                cfg,
                c,
                move |r| {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send((r.status.clone(), r.spool.clone(), r.web_addr));
                    }
                },
                clock,
            )
            .await
        });
        let (status, spool, web) = within(Duration::from_secs(20), "gateway start", rx)
            .await
            .expect("gateway started");
        Gateway {
            cancel,
            join,
            status,
            spool,
            web,
        }
    }

    pub fn is_running(&self) -> bool {
        !self.join.is_finished()
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        within(Duration::from_secs(15), "gateway stop", self.join)
            .await
            .expect("gateway task")
            .expect("gateway ran without error");
    }
}

/// The real `wardgate` binary, spawned.
pub struct Process {
    pub child: Child,
    pub log: PathBuf,
}

impl Process {
    /// `wardgate run --config <config_path>`, its log (stderr) appended to
    /// `log`. The remote-change policy is `remote-change.toml` beside the
    /// config (none unless a test writes it: the built-in rules), never the
    /// machine's own.
    pub fn start(config_path: &Path, log: &Path) -> Process {
        Self::start_with_prefix(&[], config_path, log)
    }

    /// As [`Process::start`], behind a command prefix (none if empty), e.g.
    /// `["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]`.
    pub fn start_with_prefix(prefix: &[&str], config_path: &Path, log: &Path) -> Process {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let bin = env!("CARGO_BIN_EXE_wardgate");
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = cmd
            .arg("run")
            .arg("--config")
            .arg(config_path)
            .arg("--remote-change-policy")
            .arg(config_path.with_file_name("remote-change.toml"))
            .env("WARDGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {prefix:?} wardgate: {e}"));
        Process {
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn signal(&self, sig: i32) {
        signal(self.child.id(), sig);
    }

    /// Waits for the process to exit; returns its exit code.
    pub async fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st.code();
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "wardgate did not exit within {limit:?}; log:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `wardgate check --config <path>` (the real binary, off the async
/// workers): the exit code and what it printed on stdout.
pub async fn wardgate_check(path: &Path) -> (Option<i32>, String) {
    let out = wardgate_check_output(path).await;
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Runs `wardgate check --config <path>` (the real binary, off the async
/// workers) and returns all it left: exit status, stdout and stderr.
pub async fn wardgate_check_output(path: &Path) -> std::process::Output {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_wardgate"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .expect("the wardgate binary runs")
    })
    .await
    .expect("check task")
}
