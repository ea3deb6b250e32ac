//! Shared helpers: a real mosquitto per test, a recording subscriber with
//! schema validation, and ways to start the gateway in-process or as the
//! real binary.

#![allow(dead_code)]

pub mod apc_sim;
pub mod devices;
pub mod megatec_sim;
pub mod nut;
pub mod peers;
pub mod proxy;
pub mod storage;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use wardgate::config::Config;
use wardgate::spool::Spool;
use wardgate::status::StatusHub;

/// How long a test waits for something that should happen. Wall-clock
/// bounds in these tests follow two rules, so that they hold on a loaded
/// machine (`--test-threads 4` on 2 cores):
/// - wait for the observable condition (a message, a log line, a counter, a
///   file), never sleep and assume it has happened by then; the deadline is
///   a generous one ([`WAIT`]), not the expected duration;
/// - a bound that checks a documented promise is that promise, named where
///   it is documented (e.g. [`STOP_BUDGET`]), plus at most 2 s for the
///   machine's load where the promise is a latency.
///
/// A fixed sleep is used only to let time pass on purpose (an outage of so
/// many seconds, readings piling up), never to wait for a result.
pub const WAIT: Duration = Duration::from_secs(60);

/// README ("What it promises", "Faults and what they do"): on SIGTERM the
/// gateway exits, even with the broker hung or the card failing, within
/// 10 s. A test that sends SIGTERM and waits for the exit uses this bound:
/// the promise itself, not a guess.
pub const STOP_BUDGET: Duration = Duration::from_secs(10);

/// A loopback port that was free a moment ago. Bind-and-release: another
/// process may take it before it is used, so use it only for "nothing
/// listens here" (a gateway pointed at a broker that is not there; each
/// such use says so in a comment) and for peers that cannot bind port 0
/// themselves and are recognised by a marker of their own and started
/// again on another port when theirs was taken (mosquitto in [`Broker`],
/// upsd in [`nut::NutServer`]). Every other peer binds port 0 and reports
/// its port (the MQTT proxy, the Modbus TCP peer, the page).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A loopback port where nothing listens, for as long as the value lives:
/// a socket bound to it (with `SO_REUSEADDR`) that never calls `listen`.
/// A connect there is refused, and no other test can be handed the port
/// (the kernel's port 0 never picks a port in use, and [`free_port`] binds
/// port 0). A test may still start its own peer on it (mosquitto,
/// VictoriaMetrics and std's listeners bind with `SO_REUSEADDR`, which
/// Linux allows beside a bound socket that does not listen): the port is
/// then this test's alone, before, during and after that peer.
pub struct ClosedPort {
    pub port: u16,
    _fd: std::os::fd::OwnedFd,
}

pub fn closed_port() -> ClosedPort {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor this function owns; every
    // pointer is to a local of the right size.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let one: libc::c_int = 1;
        let rc = libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            std::ptr::addr_of!(one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "SO_REUSEADDR: {}", std::io::Error::last_os_error());
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let rc = libc::bind(raw, std::ptr::addr_of!(addr).cast(), len);
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let mut got: libc::sockaddr_in = std::mem::zeroed();
        let mut got_len = len;
        let rc = libc::getsockname(raw, std::ptr::addr_of_mut!(got).cast(), &mut got_len);
        assert_eq!(rc, 0, "getsockname: {}", std::io::Error::last_os_error());
        ClosedPort {
            port: u16::from_be(got.sin_port),
            _fd: fd,
        }
    }
}

/// [`devices::assert_clock_is_the_machines`], unless the machine's clock
/// state changed during the test (NTP may synchronise a fresh CI machine
/// at any moment): then the records may rightly say either, the check
/// cannot tell which is right, and it is skipped, saying so ([`skip`]).
pub fn assert_clock_unless_it_changed(sub: &Subscriber, before: &str) {
    let now = devices::machine_clock();
    if now != before {
        skip(
            &this_test(),
            &format!(
                "the records' clock field is not checked: the machine's clock state changed during the test ({before} -> {now})"
            ),
        );
        return;
    }
    devices::assert_clock_is_the_machines(sub, before);
}

/// How late a device read beyond its interval: the longest gap between
/// the timestamps (`ts` by seq, consecutive seqs only) of its readings
/// stamped at or after `from_ms`, minus `interval_ms`; 0 if none was late.
/// A simulated device skips the ticks it missed, so on a loaded machine
/// its readings are further apart than its interval; a bound that counts
/// on one reading per interval allows this much more.
pub fn lateness_ms(ts_by_seq: &BTreeMap<u64, i64>, from_ms: i64, interval_ms: i64) -> i64 {
    ts_by_seq
        .iter()
        .zip(ts_by_seq.iter().skip(1))
        .filter(|((a, ta), (b, _))| **b == **a + 1 && **ta >= from_ms)
        .map(|((_, ta), (_, tb))| tb - ta - interval_ms)
        .max()
        .unwrap_or(0)
        .max(0)
}

static SITES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

thread_local! {
    static SITE: String = format!(
        "xa-t{}-{}",
        std::process::id(),
        SITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
}

/// This test's own site id (unique per test thread and process), used by
/// [`config_text`] and [`Subscriber::start`], so that the streams of two
/// tests never mix even if one reaches the other's broker. Call it from the
/// test's own thread (the body of a `#[tokio::test]` runs there), not from
/// a spawned task.
pub fn test_site() -> String {
    SITE.with(|s| s.clone())
}

/// Says that `test` (its path, e.g. `install::both_units_are_sandboxed`)
/// did not check something because this machine lacks a tool or a
/// capability (`why`): prints `SKIPPED: <test>: <why>` and appends the same
/// line to `target/skipped.txt` in the repository, which CI's closing line
/// reports (a test's output is only shown when it fails, so the file is
/// what makes a skip seen). Every early return for a missing tool goes
/// through here, so a green run with a skipped check cannot pass for a full
/// one. Fails the test if the line cannot be written.
pub fn skip(test: &str, why: &str) {
    use std::io::Write;
    let line = format!("SKIPPED: {test}: {why}\n");
    print!("{line}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&dir).expect("create target/ for skipped.txt");
    let path = dir.join("skipped.txt");
    // O_APPEND and one write per line: tests running in parallel add
    // their lines without overwriting each other's.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Whether the tests run as root (files only root may write, chroots).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The path of the test running on this thread (libtest names a test's
/// thread after it; the body of a `#[tokio::test]` runs there), for
/// [`skip`] in a helper that is not told its test's name.
pub fn this_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("an unnamed test thread")
        .to_owned()
}

/// Polls `cond` every 50 ms until it holds or `limit` passes; fails the
/// test if it never held.
pub async fn eventually(limit: Duration, what: &str, cond: impl FnMut() -> bool) {
    if !wait_for(limit, cond).await {
        panic!("timed out after {limit:?} waiting for: {what}");
    }
}

/// Polls `cond` every 50 ms; false if `limit` passed first (the caller's
/// assertions then say what is missing).
pub async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn within<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?}: {what}"))
}

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
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we spawned.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// A message a subscriber received.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    /// MQTT 3.1.1 meaning: true only for a retained message delivered
    /// because the subscriber (re)subscribed, false for a live one.
    pub retain: bool,
    pub body: Value,
}

/// A durable subscriber on `{prefix}/{site}/#` that records every message
/// and checks each against the contract: the JSON Schemas in docs/schema/,
/// the topic's shape, `site` and `device` in the payload against the
/// topic, and the retain flag as the gateway published it (status
/// retained, everything else not). The retain flag a 3.1.1 subscriber sees
/// on a live message is always false, so a second, MQTT 5 client with
/// retain-as-published checks it on every live message.
///
/// The check cannot be skipped: when the subscriber is dropped (at the end
/// of the test that started it, whether or not the test read anything), it
/// fails the test if any message broke the contract, listing them.
/// [`Subscriber::assert_all_valid`] checks the same earlier, at a point the
/// test chooses. The one way out is [`Subscriber::expect_invalid`], for a
/// test that breaks the contract on purpose.
pub struct Subscriber {
    pub msgs: Arc<Mutex<Vec<Msg>>>,
    pub invalid: Arc<Mutex<Vec<String>>>,
    cancel: CancellationToken,
    /// Set by [`Subscriber::expect_invalid`]: the drop check is off.
    invalid_expected: bool,
}

fn schema(name: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/schema")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("schema file");
    let v: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::validator_for(&v).expect("schema compiles")
}

pub struct Schemas {
    telemetry: jsonschema::Validator,
    event: jsonschema::Validator,
    status: jsonschema::Validator,
    inventory: jsonschema::Validator,
    reply: jsonschema::Validator,
}

/// A command request topic, `{prefix}/{site}/cmd/{op}/{id}`: published by
/// the operations centre (tests send malformed ones on purpose), so not
/// checked as the gateway's output.
pub fn is_request_topic(topic: &str) -> bool {
    let parts: Vec<&str> = topic.split('/').collect();
    parts.len() == 5 && parts[2] == "cmd"
}

impl Schemas {
    pub fn load() -> Schemas {
        Schemas {
            telemetry: schema("telemetry.schema.json"),
            event: schema("event.schema.json"),
            status: schema("status.schema.json"),
            inventory: schema("inventory.schema.json"),
            reply: schema("command-reply.schema.json"),
        }
    }

    /// Problems with one message, if any.
    pub fn check(&self, topic: &str, body: &Value) -> Option<String> {
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
        (!errs.is_empty()).then(|| format!("{topic}: {body}: {}", errs.join("; ")))
    }
}

/// What is wrong with a message received on `topic` for `site`, beyond its
/// schema: the topic's shape, the payload's `site` and `device` against the
/// topic, and, when `retain` (the flag as published) is given, the retain
/// flag.
pub fn check_envelope(
    prefix: &str,
    site: &str,
    topic: &str,
    retain: Option<bool>,
    body: &Value,
) -> Vec<String> {
    let mut bad = Vec::new();
    let id_ok = |s: &str| {
        s.chars()
            .next()
            .is_some_and(|f| f.is_ascii_lowercase() || f.is_ascii_digit())
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    };
    let parts: Vec<&str> = topic.split('/').collect();
    match parts.as_slice() {
        [p, s, "status"] if *p == prefix => {
            if *s != site {
                bad.push(format!("{topic}: site {s}, expected {site}"));
            }
            if retain == Some(false) {
                bad.push(format!("{topic}: status not retained"));
            }
        }
        [p, s, "inventory"] if *p == prefix => {
            if *s != site || body["site"] != *s {
                bad.push(format!(
                    "{topic}: site {s} / payload site {}, expected {site}",
                    body["site"]
                ));
            }
            if retain == Some(false) {
                bad.push(format!("{topic}: inventory not retained"));
            }
        }
        [p, s, "cmd", _, _] if *p == prefix && *s == site => {}
        [p, s, "cmd", op, id, "reply"] if *p == prefix => {
            if *s != site {
                bad.push(format!("{topic}: site {s}, expected {site}"));
            }
            if body["op"] != *op || body["id"] != *id {
                bad.push(format!(
                    "{topic}: payload op/id {}/{} differ",
                    body["op"], body["id"]
                ));
            }
            if retain == Some(true) {
                bad.push(format!("{topic}: a reply was retained"));
            }
        }
        [p, s, device, kind] if *p == prefix && (*kind == "telemetry" || *kind == "event") => {
            if *s != site {
                bad.push(format!("{topic}: site {s}, expected {site}"));
            }
            if !id_ok(s) || !id_ok(device) {
                bad.push(format!("{topic}: site or device is not an id"));
            }
            if body["site"] != *s {
                bad.push(format!("{topic}: payload site {} differs", body["site"]));
            }
            if body["device"] != *device {
                bad.push(format!(
                    "{topic}: payload device {} differs",
                    body["device"]
                ));
            }
            if retain == Some(true) {
                bad.push(format!("{topic}: a data message was retained"));
            }
        }
        _ => bad.push(format!("{topic}: not a topic of the contract")),
    }
    bad
}

impl Subscriber {
    /// Subscribes on this test's site ([`test_site`]); returns once the
    /// broker confirmed both subscriptions, so start it before the gateway.
    pub async fn start(port: u16, prefix: &str) -> Subscriber {
        Self::start_site(port, prefix, &test_site()).await
    }

    pub async fn start_site(port: u16, prefix: &str, site: &str) -> Subscriber {
        Self::start_login(port, prefix, site, None).await
    }

    /// As [`Subscriber::start_site`], logging in with a user name and password.
    pub async fn start_login(
        port: u16,
        prefix: &str,
        site: &str,
        login: Option<(&str, &str)>,
    ) -> Subscriber {
        use rumqttc::{AsyncClient, MqttOptions};
        let msgs: Arc<Mutex<Vec<Msg>>> = Arc::default();
        let invalid: Arc<Mutex<Vec<String>>> = Arc::default();
        let cancel = CancellationToken::new();
        let id = format!("test-sub-{}", rand::random::<u32>());
        let mut o = MqttOptions::new(id.clone(), "127.0.0.1", port);
        o.set_clean_session(false);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(16 << 20, 1 << 20);
        if let Some((user, pass)) = login {
            o.set_credentials(user, pass);
        }
        let (client, el) = AsyncClient::new(o, 100);
        let (m, inv) = (msgs.clone(), invalid.clone());
        let (pfx, st) = (prefix.to_owned(), site.to_owned());
        let schemas = Schemas::load();
        run_subscribed(
            (client, el),
            format!("{prefix}/{site}/#"),
            cancel.clone(),
            (Duration::from_secs(10), "subscription"),
            move |p| {
                if is_request_topic(&p.topic) {
                    m.lock().unwrap().push(Msg {
                        topic: p.topic.clone(),
                        retain: p.retain,
                        body: serde_json::from_slice(&p.payload).unwrap_or(Value::Null),
                    });
                    return;
                }
                let body: Value = match serde_json::from_slice(&p.payload) {
                    Ok(v) => v,
                    Err(e) => {
                        inv.lock()
                            .unwrap()
                            .push(format!("{}: not JSON: {e}", p.topic));
                        return;
                    }
                };
                if let Some(problem) = schemas.check(&p.topic, &body) {
                    inv.lock().unwrap().push(problem);
                }
                inv.lock()
                    .unwrap()
                    .extend(check_envelope(&pfx, &st, &p.topic, None, &body));
                m.lock().unwrap().push(Msg {
                    topic: p.topic.clone(),
                    retain: p.retain,
                    body,
                });
            },
        )
        .await;
        retain_checker(
            port,
            prefix,
            site,
            login,
            &id,
            invalid.clone(),
            cancel.clone(),
        )
        .await;
        Subscriber {
            msgs,
            invalid,
            cancel,
            invalid_expected: false,
        }
    }

    /// For a test that publishes messages breaking the contract on purpose
    /// (to see this subscriber catch them) and reads [`Subscriber::invalid`]
    /// itself: turns off the check on drop. [`Subscriber::assert_all_valid`]
    /// still checks when called. Not for quieting a gateway that breaks
    /// the contract: that is a bug to fix.
    pub fn expect_invalid(mut self) -> Subscriber {
        self.invalid_expected = true;
        self
    }

    pub fn all(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }

    /// Every sample received for a device, in arrival order, with the
    /// message index and whether it was historical.
    pub fn samples(&self, device: &str) -> Vec<(usize, Value)> {
        self.records(device, "telemetry", "samples")
    }

    pub fn events(&self, device: &str) -> Vec<(usize, Value)> {
        self.records(device, "event", "events")
    }

    fn records(&self, device: &str, leaf: &str, array: &str) -> Vec<(usize, Value)> {
        let suffix = format!("/{device}/{leaf}");
        let mut out = Vec::new();
        for (i, m) in self.all().iter().enumerate() {
            if m.topic.ends_with(&suffix) {
                if let Some(a) = m.body[array].as_array() {
                    for r in a {
                        out.push((i, r.clone()));
                    }
                }
            }
        }
        out
    }

    /// Distinct sample seqs of a device.
    pub fn seqs(&self, device: &str) -> std::collections::BTreeSet<u64> {
        self.samples(device)
            .iter()
            .filter_map(|(_, s)| s["seq"].as_u64())
            .collect()
    }

    pub fn assert_all_valid(&self) {
        let inv = self.invalid.lock().unwrap();
        assert!(inv.is_empty(), "messages that break the contract: {inv:#?}");
    }

    pub fn statuses(&self) -> Vec<Msg> {
        self.all()
            .into_iter()
            .filter(|m| m.topic.ends_with("/status"))
            .collect()
    }

    /// Waits until an offline status arrived at or after message `from`
    /// (the shutdown status of a clean stop, or the last will the broker
    /// publishes when the gateway was killed). The broker passes a client's
    /// messages on in the order it got them, and the offline status comes
    /// after everything the gateway sent: once it is here, everything the
    /// broker acknowledged before the stop has reached this subscriber.
    /// (Not for a stop with a hung broker: no offline status comes then.)
    pub async fn offline_after(&self, from: usize) {
        eventually(WAIT, "the offline status after the stop", || {
            self.all()
                .iter()
                .skip(from)
                .any(|m| m.topic.ends_with("/status") && m.body["state"] == "offline")
        })
        .await;
    }
}

/// Runs an MQTT 3.1.1 client (its `client` and event loop) until `cancel`:
/// subscribes to `filter` (QoS 1) at every connection, hands each message
/// to `on_publish`, and sleeps 100 ms after an error (rumqttc reconnects on
/// the next poll). Returns once the broker confirmed the first
/// subscription; fails the test if that takes longer than `confirm_within.0`
/// (`confirm_within.1` names the subscription).
pub async fn run_subscribed(
    (client, mut el): (rumqttc::AsyncClient, rumqttc::EventLoop),
    filter: String,
    cancel: CancellationToken,
    confirm_within: (Duration, &str),
    mut on_publish: impl FnMut(rumqttc::Publish) + Send + 'static,
) {
    use rumqttc::{Event, Packet, QoS};
    let subscribed = Arc::new(tokio::sync::Notify::new());
    let sub2 = subscribed.clone();
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => return,
                ev = el.poll() => ev,
            };
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => sub2.notify_one(),
                Ok(Event::Incoming(Packet::Publish(p))) => on_publish(p),
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    within(confirm_within.0, confirm_within.1, subscribed.notified()).await;
}

/// An MQTT 5 client on the same topics with retain-as-published and no
/// retained copies on subscribe: sees the retain flag of every live message
/// as the gateway set it, and reports a wrong one.
async fn retain_checker(
    port: u16,
    prefix: &str,
    site: &str,
    login: Option<(&str, &str)>,
    id: &str,
    invalid: Arc<Mutex<Vec<String>>>,
    cancel: CancellationToken,
) {
    use rumqttc::v5::mqttbytes::v5::{Filter, Packet, RetainForwardRule};
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let mut o = MqttOptions::new(format!("{id}-retain"), "127.0.0.1", port);
    // A durable session: survives broker restarts (the broker persists it).
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(3600));
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(Some(16 << 20));
    if let Some((user, pass)) = login {
        o.set_credentials(user, pass);
    }
    let (client, mut el) = AsyncClient::new(o, 100);
    let mut filter = Filter::new(format!("{prefix}/{site}/#"), QoS::AtLeastOnce);
    filter.preserve_retain = true;
    filter.retain_forward_rule = RetainForwardRule::Never;
    let subscribed = Arc::new(tokio::sync::Notify::new());
    let sub2 = subscribed.clone();
    let (prefix, site) = (prefix.to_owned(), site.to_owned());
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => return,
                ev = el.poll() => ev,
            };
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe_many([filter.clone()]);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => sub2.notify_one(),
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    let body: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    let bad: Vec<String> =
                        check_envelope(&prefix, &site, &topic, Some(p.retain), &body)
                            .into_iter()
                            .filter(|b| b.contains("retained"))
                            .collect();
                    invalid.lock().unwrap().extend(bad);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    within(
        Duration::from_secs(10),
        "retain-checking subscription",
        subscribed.notified(),
    )
    .await;
}

impl Drop for Subscriber {
    /// Stops both clients, then fails the test if any message broke the
    /// contract (not while the thread is already panicking: a second panic
    /// would abort the whole test binary and hide the first failure).
    fn drop(&mut self) {
        self.cancel.cancel();
        if self.invalid_expected || std::thread::panicking() {
            return;
        }
        let inv = self.invalid.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            inv.is_empty(),
            "messages that break the contract (checked as the subscriber was dropped): {inv:#?}"
        );
    }
}

/// Asserts `seqs` is exactly `lo..=hi` without holes; returns hi.
pub fn assert_contiguous(seqs: &std::collections::BTreeSet<u64>, lo: u64, what: &str) -> u64 {
    let first = *seqs
        .iter()
        .next()
        .unwrap_or_else(|| panic!("{what}: nothing received"));
    assert_eq!(first, lo, "{what}: first seq");
    let last = *seqs.iter().next_back().expect("non-empty");
    let missing: Vec<u64> = (lo..=last).filter(|s| !seqs.contains(s)).take(20).collect();
    assert!(
        missing.is_empty(),
        "{what}: missing seqs (first 20): {missing:?}"
    );
    last
}

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
    /// test's [`wardgate::clock::FakeClock`], issue 14).
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

/// Per-device map from seq to the sample, keeping the first copy and
/// asserting that duplicates are identical.
pub fn dedupe(samples: &[(usize, Value)]) -> BTreeMap<u64, Value> {
    let mut out = BTreeMap::new();
    for (_, s) in samples {
        let seq = s["seq"].as_u64().expect("seq");
        let mut plain = s.clone();
        plain["historical"] = Value::Null;
        if let Some(prev) = out.get(&seq) {
            assert_eq!(prev, &plain, "duplicate seq {seq} with different content");
        } else {
            out.insert(seq, plain);
        }
    }
    out
}

/// How many distinct events (by seq) with `code` the subscriber received
/// for `device`: delivery is at least once, so a copy of one (same seq,
/// same content, e.g. sent again after a lost PUBACK) is not a second
/// event.
pub fn count_distinct_events(sub: &Subscriber, device: &str, code: &str) -> usize {
    dedupe(&sub.events(device))
        .values()
        .filter(|e| e["code"] == code)
        .count()
}

/// A plain HTTP/1.1 GET on loopback: (status code, headers+body text).
pub async fn http_get(addr: std::net::SocketAddr, path: &str, extra: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n");
    http_exchange(addr, &req, Duration::from_secs(10), "the page").await
}

/// One HTTP exchange on loopback: connects (within 5 s), sends `request`
/// as it is, and reads until the server closes (within `answer_within`);
/// `peer` names the server in the failure messages. Returns the status
/// code (0 when there is none) and the whole response text.
pub async fn http_exchange(
    addr: std::net::SocketAddr,
    request: &str,
    answer_within: Duration,
    peer: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connect = format!("connect to {peer}");
    let mut s = within(
        Duration::from_secs(5),
        &connect,
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .expect(&connect);
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    within(
        answer_within,
        &format!("{peer}'s answer"),
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
    (code, text)
}

/// The address of the spawned gateway's page, from its log line
/// "local status page addr=..." (the page binds port 0); waits for it.
pub async fn page_addr(gw: &Process) -> std::net::SocketAddr {
    let mut addr = None;
    eventually(WAIT, "the page's address in the log", || {
        addr = gw.log_text().lines().find_map(|l| {
            l.split("local status page addr=")
                .nth(1)
                .and_then(|a| a.split_whitespace().next())
                .and_then(|a| a.parse().ok())
        });
        addr.is_some()
    })
    .await;
    addr.expect("found above")
}

/// The real binary with the default config, its page on port 0 and no
/// broker (a [`closed_port`]: none is needed), its log in `dir/log`, once
/// its page is up. Returns the process, the page's address and the closed
/// port (keep it while the gateway runs).
pub async fn start_without_broker(dir: &Path) -> (Process, std::net::SocketAddr, ClosedPort) {
    let cfg = dir.join("w.toml");
    let no_broker = closed_port();
    std::fs::write(&cfg, config_text(no_broker.port, dir, "")).unwrap();
    let gw = Process::start(&cfg, &dir.join("log"));
    let addr = page_addr(&gw).await;
    (gw, addr, no_broker)
}

/// Runs headless chromium (blocking: call it from `spawn_blocking`) with
/// its own profile directory `profile` (kept between calls, so cookies
/// persist) and a 4 s virtual-time budget for the page's script; `args`
/// are the caller's own flags and the URL. Returns what chromium printed.
pub fn chromium<S: AsRef<std::ffi::OsStr>>(
    profile: &Path,
    args: impl IntoIterator<Item = S>,
) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium must be installed (apt-get install chromium)")
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
