//! Real field peers started per test: a pymodbus server (RTU on one end of
//! a socat pseudo-terminal pair, or TCP on a loopback port it binds as port
//! 0 and reports) and Debian's snmpd on a loopback UDP port.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn wait_for(path: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{what} did not appear");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(c: &mut Option<Child>) {
    if let Some(mut c) = c.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The Modbus peer in tests/peers/modbus_peer.py: XY-MD02 at id 1, SDM120
/// at id 2, a mixed map at id 3.
pub struct ModbusPeer {
    pub dir: tempfile::TempDir,
    /// RTU: the gateway's end of the pty pair.
    pub serial: PathBuf,
    /// TCP: the port.
    pub port: u16,
    pub trace: PathBuf,
    socat: Option<Child>,
    peer: Option<Child>,
}

/// Starts the peer and waits for its "ready" line, printed once it really
/// listens (a peer that could not listen exits without it); returns the
/// child and what followed "ready" (TCP: the port it bound).
fn start_peer(args: &[&str], trace: &Path, silent: Option<&Path>) -> (Child, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/modbus_peer.py");
    let mut c = Command::new("python3")
        .arg(script)
        .args(args)
        .arg("--trace")
        .arg(trace)
        .args(
            silent
                .map(|p| ["--silent".as_ref(), p.as_os_str()])
                .into_iter()
                .flatten(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with pymodbus (scripts/test installs it)");
    let out = c.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    let rest = line
        .trim()
        .strip_prefix("ready")
        .unwrap_or_else(|| panic!("modbus peer did not start: {line:?}"))
        .trim()
        .to_owned();
    (c, rest)
}

impl ModbusPeer {
    pub fn rtu() -> ModbusPeer {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("peer"), dir.path().join("gateway"));
        let socat = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat");
        wait_for(&a, "socat pty");
        wait_for(&b, "socat pty");
        let trace = dir.path().join("trace");
        let silent = dir.path().join("silent");
        let (peer, _) = start_peer(&["rtu", a.to_str().unwrap()], &trace, Some(&silent));
        ModbusPeer {
            serial: b,
            port: 0,
            trace,
            dir,
            socat: Some(socat),
            peer: Some(peer),
        }
    }

    pub fn tcp() -> ModbusPeer {
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("trace");
        // Port 0: the peer binds a port the system picks and says which.
        let (peer, port) = start_peer(&["tcp", "0"], &trace, None);
        let port: u16 = port
            .parse()
            .unwrap_or_else(|_| panic!("modbus peer said \"ready {port}\", not a port"));
        ModbusPeer {
            serial: PathBuf::new(),
            port,
            trace,
            dir,
            socat: None,
            peer: Some(peer),
        }
    }

    /// RTU: these slave ids stop answering (an empty list: all answer).
    pub fn silence(&self, ids: &[u8]) {
        let text: Vec<String> = ids.iter().map(u8::to_string).collect();
        let tmp = self.dir.path().join("silent.tmp");
        std::fs::write(&tmp, text.join(" ")).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("silent")).unwrap();
    }

    /// Frames the peer received ("rx ...") and sent ("tx ..."), hex.
    pub fn trace(&self) -> Vec<String> {
        std::fs::read_to_string(&self.trace)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for ModbusPeer {
    fn drop(&mut self) {
        kill(&mut self.peer);
        kill(&mut self.socat);
    }
}

/// Debian's snmpd on udp:127.0.0.1:<port>, read community `wardtest`, and
/// `wardrw` to change the pinned ifOperStatus of `lo` (ifIndex 1) with
/// snmpset. sysName.0 is pinned to "ward-router".
pub struct Snmpd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl Snmpd {
    pub fn start() -> Snmpd {
        Snmpd::start_with("")
    }

    /// As [`Snmpd::start`], with `extra` lines appended to snmpd.conf.
    pub fn start_with(extra: &str) -> Snmpd {
        let mut dir = tempfile::tempdir().unwrap();
        // sysLocation is this instance's own: the readiness check asks for
        // it, so another test's snmpd on the same port is never taken for
        // ours.
        let marker = format!(
            "wardtest-{}",
            dir.path()
                .file_name()
                .map(|n| n
                    .to_string_lossy()
                    .replace(|c: char| !c.is_ascii_alphanumeric(), ""))
                .unwrap_or_default()
        );
        let conf = dir.path().join("snmpd.conf");
        std::fs::write(
            &conf,
            format!(
                "rocommunity wardtest 127.0.0.1\n\
                 rwcommunity wardrw 127.0.0.1\n\
                 override -rw .1.3.6.1.2.1.2.2.1.8.1 integer 1\n\
                 override .1.3.6.1.2.1.1.5.0 octet_str ward-router\n\
                 override .1.3.6.1.2.1.1.6.0 octet_str {marker}\n{extra}"
            ),
        )
        .unwrap();
        for attempt in 0.. {
            let port = free_udp_port();
            let child = Command::new("/usr/sbin/snmpd")
                .env("MIBS", "")
                .args(["-f", "-C", "-Lf"])
                .arg(dir.path().join("log"))
                .arg("-c")
                .arg(&conf)
                .arg("-p")
                .arg(dir.path().join("pid"))
                .arg(format!("udp:127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("snmpd (scripts/test installs it)");
            let mut s = Snmpd {
                dir,
                port,
                child: Some(child),
            };
            // Ready when it answers with our marker; a port taken meanwhile
            // makes snmpd exit: try another.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if s.get("1.3.6.1.2.1.1.6.0")
                    .is_some_and(|v| v.contains(&marker))
                {
                    return s;
                }
                let exited = s
                    .child
                    .as_mut()
                    .is_some_and(|c| c.try_wait().ok().flatten().is_some());
                if exited || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            assert!(attempt < 4, "snmpd did not answer on 5 ports");
            kill(&mut s.child);
            dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
        }
        unreachable!("the loop returns or panics")
    }

    pub fn get(&self, oid: &str) -> Option<String> {
        let out = Command::new("snmpget")
            .env("MIBS", "")
            .args([
                "-On", "-Oqv", "-v2c", "-c", "wardtest", "-t", "0.3", "-r", "0",
            ])
            .arg(format!("127.0.0.1:{}", self.port))
            .arg(oid)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Pins ifOperStatus of lo (1 up, 2 down).
    pub fn set_lo_oper(&self, v: i32) {
        let st = Command::new("snmpset")
            .env("MIBS", "")
            .args(["-On", "-v2c", "-c", "wardrw"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args([".1.3.6.1.2.1.2.2.1.8.1", "i", &v.to_string()])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "snmpset");
    }
}

impl Drop for Snmpd {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// A UDP port that was free a moment ago (snmpd cannot bind port 0 and say
/// which it got; its start is retried if the port was taken meanwhile).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free loopback UDP port")
}
