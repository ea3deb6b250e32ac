//! A real mosquitto per test, on a loopback port of its own, with a second
//! (e.g. TLS) listener when asked; stopped, restarted and started again on
//! the same port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, signal};

/// A real mosquitto on a loopback port of its own, with persistence in a
/// temp dir so a durable subscriber session survives a broker restart.
pub struct Broker {
    pub port: u16,
    /// The second listener's port, if it was started with one.
    pub second_port: Option<u16>,
    pub dir: tempfile::TempDir,
    conf: PathBuf,
    extra: String,
    /// The second listener's settings (after its `listener` line).
    second: Option<String>,
    child: Option<Child>,
}

enum SpawnError {
    /// Another process listens on the port.
    PortTaken,
}

impl Broker {
    pub fn start() -> Broker {
        Self::start_with("allow_anonymous true\n")
    }

    /// `extra` is added to the listener's configuration. mosquitto cannot
    /// bind port 0 and say which port it got, so the broker is given a port
    /// that was free a moment ago; if another process took it meanwhile,
    /// mosquitto says "Address already in use" in its log and exits, and the
    /// broker is started again on another port.
    pub fn start_with(extra: &str) -> Broker {
        Self::start_listeners(extra, None)
    }

    /// As [`Broker::start_with`], with a second listener on a port of its
    /// own ([`Broker::second_port`]) configured by `second` (e.g. TLS
    /// settings). Both ports are picked again if either was taken.
    pub fn start_with_second_listener(extra: &str, second: &str) -> Broker {
        Self::start_listeners(extra, Some(second))
    }

    fn start_listeners(extra: &str, second: Option<&str>) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("mosquitto.conf");
        let mut b = Broker {
            port: 0,
            second_port: None,
            dir,
            conf,
            extra: extra.to_owned(),
            second: second.map(str::to_owned),
            child: None,
        };
        for _ in 0..10 {
            b.port = free_port();
            b.second_port = b.second.is_some().then(free_port);
            b.write_conf();
            match b.spawn() {
                Ok(()) => return b,
                Err(SpawnError::PortTaken) => continue,
            }
        }
        panic!("mosquitto found no free port in 10 tries: {}", b.log());
    }

    fn write_conf(&self) {
        let mut text = format!(
            "per_listener_settings false\nuser root\npersistence true\npersistence_location {}/\nautosave_interval 1\nmax_queued_messages 0\nmax_inflight_messages 0\nlog_dest file {}/mosquitto.log\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\nlistener {} 127.0.0.1\n{}",
            self.dir.path().display(),
            self.dir.path().display(),
            self.port,
            self.extra,
        );
        if let (Some(port), Some(second)) = (self.second_port, &self.second) {
            text.push_str(&format!("\nlistener {port} 127.0.0.1\n{second}"));
        }
        std::fs::write(&self.conf, text).expect("write mosquitto.conf");
    }

    /// Starts mosquitto and waits until *this* mosquitto listens: its log
    /// says it opened our port and runs, it is still alive, and the port
    /// answers (a port answering alone could be another test's broker).
    fn spawn(&mut self) -> Result<(), SpawnError> {
        let log_before = self.log().len();
        let err = std::fs::File::create(self.dir.path().join("mosquitto.stderr"))
            .expect("mosquitto stderr file");
        let mut child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("mosquitto must be installed (apt-get install mosquitto)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            let new = log.get(log_before..).unwrap_or("");
            if let Some(st) = child.try_wait().expect("try_wait mosquitto") {
                if new.contains("Address already in use") {
                    return Err(SpawnError::PortTaken);
                }
                panic!(
                    "mosquitto exited ({st}) on port {}: {new}{}",
                    self.port,
                    std::fs::read_to_string(self.dir.path().join("mosquitto.stderr"))
                        .unwrap_or_default()
                );
            }
            let opened = new.contains(&format!("listen socket on port {}.", self.port))
                && self
                    .second_port
                    .is_none_or(|p| new.contains(&format!("listen socket on port {p}.")));
            if opened
                && new.contains(" running")
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                self.child = Some(child);
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mosquitto did not start on port {}: {new}", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Stops the broker (SIGTERM, so it saves its sessions).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGTERM);
            let _ = c.wait();
        }
    }

    /// Stops and starts the broker on the same port (the gateway and the
    /// durable subscribers know that port).
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Starts a stopped broker again on its port.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the broker is running");
        for _ in 0..50 {
            match self.spawn() {
                Ok(()) => return,
                // Our own listener may still be closing, or another test's
                // client holds the port for a moment.
                Err(SpawnError::PortTaken) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        panic!("port {} stayed taken: {}", self.port, self.log());
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGSTOP: the broker hangs with its sockets open (nothing is acked).
    pub fn pause(&self) {
        if let Some(c) = &self.child {
            signal(c.id(), libc::SIGSTOP);
        }
    }

    pub fn resume(&self) {
        if let Some(c) = &self.child {
            signal(c.id(), libc::SIGCONT);
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
