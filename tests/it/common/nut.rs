//! A real NUT server from Debian's packages (nut-server): a driver
//! (`dummy-ups` serving a `.dev` file, or any other, e.g. `nutdrv_qx` on a
//! simulator's pty), and `upsd` on a loopback port of its own.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The upsd.users entry for the power-off ([power]): instant commands
/// and SET, as docs/ups.md tells technicians to write it.
pub const CMD_USER: &str = "wardgate";
pub const CMD_PASSWORD: &str = "cmd-s3cret";

pub struct NutServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// dummy-ups: the `.dev` file it serves (empty for another driver).
    pub dev: PathBuf,
    /// The UPS's name in ups.conf.
    name: String,
    /// The driver's program name in /lib/nut.
    driver_prog: String,
    driver: Option<Child>,
    upsd: Option<Child>,
    /// The whole second of the .dev file's mtime as last set (see
    /// [`NutServer::set`]).
    dev_mtime: std::sync::Mutex<i64>,
}

fn user() -> String {
    String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_owned()
}

impl NutServer {
    /// `dev` is the dummy UPS's variables, `name: value` per line.
    pub fn start(dev: &str) -> NutServer {
        Self::start_with(dev, "", "")
    }

    /// As `start`, with lines added to upsd.conf (e.g. `MAXAGE 3`) and to
    /// the UPS's section of ups.conf (e.g. `\tpollinterval = 1`).
    pub fn start_with(dev: &str, upsd_extra: &str, ups_extra: &str) -> NutServer {
        let dir = tempfile::tempdir().unwrap();
        let devp = dir.path().join("dummy.dev");
        std::fs::write(&devp, dev).unwrap();
        let section = format!("\tport = {}\n{ups_extra}", devp.display());
        Self::start_in(dir, devp, "dummy", "dummy-ups", &section, upsd_extra)
    }

    /// Another driver: UPS `name` served by `/lib/nut/<driver>` with the
    /// lines of `section` in its ups.conf section (port, protocol, ...).
    pub fn start_driver_with(name: &str, driver: &str, section: &str) -> NutServer {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, PathBuf::new(), name, driver, section, "")
    }

    fn start_in(
        dir: tempfile::TempDir,
        devp: PathBuf,
        name: &str,
        driver: &str,
        section: &str,
        upsd_extra: &str,
    ) -> NutServer {
        let d = dir.path();
        // A description of this server alone: the readiness check asks for
        // it, so another test's upsd on the same port is never taken for ours.
        let desc = format!(
            "test {}",
            d.file_name()
                .map(|n| n
                    .to_string_lossy()
                    .replace(|c: char| !c.is_ascii_alphanumeric(), ""))
                .unwrap_or_default()
        );
        // upsd cannot bind port 0 and say which port it got: a port that was
        // free a moment ago, and another one if upsd finds it taken.
        let port = super::free_port();
        std::fs::write(
            d.join("ups.conf"),
            format!("[{name}]\n\tdriver = {driver}\n\tdesc = \"{desc}\"\n{section}\n"),
        )
        .unwrap();
        std::fs::write(
            d.join("upsd.conf"),
            format!("LISTEN 127.0.0.1 {port}\n{upsd_extra}\n"),
        )
        .unwrap();
        std::fs::write(
            d.join("upsd.users"),
            format!(
                "[mon]\n\tpassword = s3cret\n\tupsmon primary\n\
                 [{CMD_USER}]\n\tpassword = {CMD_PASSWORD}\n\tinstcmds = all\n\tactions = SET\n"
            ),
        )
        .unwrap();
        std::fs::write(d.join("nut.conf"), "MODE=standalone\n").unwrap();
        let dev_mtime = std::sync::Mutex::new(mtime_secs(&devp));
        let mut s = NutServer {
            port,
            dev: devp,
            dir,
            name: name.to_owned(),
            driver_prog: driver.to_owned(),
            driver: None,
            upsd: None,
            dev_mtime,
        };
        s.start_driver();
        let sock = s.dir.path().join(format!("{driver}-{name}"));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !sock.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "{driver} did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The port was free a moment ago; if another test took it since,
        // upsd exits: try another one.
        for attempt in 0.. {
            s.upsd = Some(s.spawn("/lib/nut/upsd", &[]));
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                if ups_desc(s.port, name).is_some_and(|d| d.contains(&desc)) {
                    return s;
                }
                let exited = s
                    .upsd
                    .as_mut()
                    .is_some_and(|c| c.try_wait().ok().flatten().is_some());
                if exited || std::time::Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(attempt < 4, "upsd did not start on 5 ports");
            if let Some(mut c) = s.upsd.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            s.port = super::free_port();
            std::fs::write(
                s.dir.path().join("upsd.conf"),
                format!("LISTEN 127.0.0.1 {}\n{upsd_extra}\n", s.port),
            )
            .unwrap();
        }
        unreachable!("the loop returns or panics")
    }

    fn spawn(&self, prog: &str, args: &[&str]) -> Child {
        spawn_in(self.dir.path(), prog, args)
    }

    pub fn start_driver(&mut self) {
        let prog = format!("/lib/nut/{}", self.driver_prog);
        self.driver = Some(self.spawn(&prog, &["-a", &self.name]));
    }

    pub fn stop_driver(&mut self) {
        if let Some(mut c) = self.driver.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the driver (SIGSTOP): it stays connected to upsd but sends
    /// nothing, so upsd answers `ERR DATA-STALE` once `MAXAGE` passes.
    pub fn pause_driver(&self) {
        let c = self.driver.as_ref().expect("driver running");
        super::signal(c.id(), libc::SIGSTOP);
    }

    pub fn resume_driver(&self) {
        let c = self.driver.as_ref().expect("driver running");
        super::signal(c.id(), libc::SIGCONT);
    }

    /// Rewrites one variable in the .dev file. dummy-ups (NUT 2.8) reads
    /// the file again only when its mtime changes, in whole seconds: a
    /// second write within the second of the first would never be seen.
    /// So each write gets an mtime one second past the last one's (or now,
    /// if later), and lands whole (written aside, then renamed), so that
    /// dummy-ups never reads it half written.
    pub fn set(&self, name: &str, value: &str) {
        let text = std::fs::read_to_string(&self.dev).unwrap();
        let mut out = String::new();
        let mut found = false;
        for l in text.lines() {
            if l.starts_with(&format!("{name}:")) {
                out.push_str(&format!("{name}: {value}\n"));
                found = true;
            } else {
                out.push_str(l);
                out.push('\n');
            }
        }
        if !found {
            out.push_str(&format!("{name}: {value}\n"));
        }
        let mut last = self.dev_mtime.lock().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let secs = now.max(*last + 1);
        let tmp = self.dev.with_extension("dev.new");
        std::fs::write(&tmp, out).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(secs as u64))
            .unwrap();
        std::fs::rename(&tmp, &self.dev).unwrap();
        *last = secs;
    }
}

/// The whole second of a file's mtime (0 if there is no such file).
fn mtime_secs(p: &std::path::Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).map(|m| m.mtime()).unwrap_or(0)
}

impl Drop for NutServer {
    fn drop(&mut self) {
        for c in [self.upsd.take(), self.driver.take()].into_iter().flatten() {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `GET UPSDESC <name>` from the upsd on `port`, if one answers.
fn ups_desc(port: u16, name: &str) -> Option<String> {
    use std::io::{BufRead, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    c.write_all(format!("GET UPSDESC {name}\n").as_bytes())
        .ok()?;
    let mut line = String::new();
    std::io::BufReader::new(c).read_line(&mut line).ok()?;
    Some(line)
}

/// A NUT program (driver or upsd) with its configuration and state in `d`.
pub fn spawn_in(d: &std::path::Path, prog: &str, args: &[&str]) -> Child {
    Command::new(prog)
        .args(args)
        .args(["-u", &user(), "-F"])
        .env("NUT_CONFPATH", d)
        .env("NUT_STATEPATH", d)
        .env("NUT_ALTPIDPATH", d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{prog}: {e} (apt-get install nut-server)"))
}

/// A certificate for upsd built with NSS (Debian's nut-server 2.8): a CA
/// and a server certificate for 127.0.0.1 and localhost made with openssl,
/// imported into an NSS database with pk12util (libnss3-tools). upsd finds
/// it through the lines of [`UpsdCert::upsd_conf`] (CERTPATH, CERTIDENT).
pub struct UpsdCert {
    pub dir: tempfile::TempDir,
    /// The CA that signed upsd's certificate (PEM), for the gateway's
    /// `ca_file`.
    pub ca: PathBuf,
}

/// The nickname of upsd's certificate in the NSS database, and the
/// database's password (CERTIDENT "<nickname>" "<password>").
const NSS_NICKNAME: &str = "upsd";
const NSS_PASSWORD: &str = "nss-db-pw";

fn tool(prog: &str, args: &[&str], dir: &std::path::Path) {
    let out = Command::new(prog)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e} (apt-get install openssl libnss3-tools)"));
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA in `dir`: `<name>.key` and `<name>.pem` (good for 2
/// days, common name `cn`); the MQTT and the NUT TLS tests use it.
pub fn make_ca(dir: &std::path::Path, name: &str, cn: &str) -> PathBuf {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    tool(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-subj",
            &format!("/CN={cn}"),
        ],
        dir,
    );
    dir.join(pem)
}

impl UpsdCert {
    pub fn make() -> UpsdCert {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ca = make_ca(d, "ca", "wardgate NUT test CA");
        tool(
            "openssl",
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "upsd.key",
                "-out",
                "upsd.csr",
                "-subj",
                "/CN=localhost",
            ],
            d,
        );
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        tool(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                "upsd.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "upsd.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
            d,
        );
        tool(
            "openssl",
            &[
                "pkcs12",
                "-export",
                "-in",
                "upsd.pem",
                "-inkey",
                "upsd.key",
                "-certfile",
                "ca.pem",
                "-name",
                NSS_NICKNAME,
                "-out",
                "upsd.p12",
                "-passout",
                "pass:p12",
            ],
            d,
        );
        std::fs::create_dir(d.join("nss")).unwrap();
        std::fs::write(d.join("nss.pw"), format!("{NSS_PASSWORD}\n")).unwrap();
        tool("certutil", &["-N", "-d", "sql:nss", "-f", "nss.pw"], d);
        tool(
            "pk12util",
            &[
                "-i", "upsd.p12", "-d", "sql:nss", "-W", "p12", "-k", "nss.pw",
            ],
            d,
        );
        UpsdCert { dir, ca }
    }

    /// The lines for upsd.conf (NutServer::start_with's `upsd_extra`).
    pub fn upsd_conf(&self) -> String {
        format!(
            "CERTPATH {}\nCERTIDENT \"{NSS_NICKNAME}\" \"{NSS_PASSWORD}\"\nDISABLE_WEAK_SSL true\n",
            self.dir.path().join("nss").display()
        )
    }
}
