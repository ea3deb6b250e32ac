//! Helpers for the storage-fault tests (tests/it/storage/): a
//! gateway rig (broker + durable subscriber + config on disk), the binary run
//! behind a command prefix (another user), a tmpfs unmounted on drop, direct
//! edits of spool rows, and reading what the gateway reports about itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use rusqlite::Connection;
use serde_json::Value;

use super::*;

/// What a [`Rig`] is made of; every text is a list of TOML lines, each
/// ending in a newline.
#[derive(Default)]
pub struct RigOpts<'a> {
    /// Lines added to mosquitto's configuration.
    pub broker: &'a str,
    /// Lines added under `[mqtt]`.
    pub mqtt: &'a str,
    /// Lines added under `[spool]`.
    pub spool: &'a str,
    /// `[[device]]` tables.
    pub devices: &'a str,
    /// Where spool.db lives; default: the rig's temp dir.
    pub spool_dir: Option<&'a Path>,
}

/// A broker, a durable subscriber on `ioc/#` (connected before the gateway
/// ever runs, so it misses nothing), and a config file for the binary. The
/// gateway publishes its own telemetry every second.
pub struct Rig {
    pub broker: Broker,
    pub sub: Subscriber,
    pub dir: tempfile::TempDir,
    pub cfg: PathBuf,
    pub log: PathBuf,
    /// The spool file the config names.
    pub spool: PathBuf,
}

impl Rig {
    /// A rig with these devices and every other option at its default.
    pub async fn with_devices(devices: &str) -> Rig {
        Rig::new(RigOpts {
            devices,
            ..Default::default()
        })
        .await
    }

    pub async fn new(o: RigOpts<'_>) -> Rig {
        let broker = Broker::start_with(&format!("allow_anonymous true\n{}", o.broker));
        let sub = Subscriber::start(broker.port, "ioc").await;
        let dir = tempfile::tempdir().expect("temp dir");
        let spool_dir = o.spool_dir.unwrap_or(dir.path()).to_path_buf();
        let text = config_text(
            broker.port,
            &spool_dir,
            &format!(
                "[gateway]\ntelemetry_interval = \"1s\"\nsystem_health = false\n{}",
                o.devices
            ),
        )
        .replace("[mqtt]\n", &format!("[mqtt]\n{}", o.mqtt))
        .replace("[spool]\n", &format!("[spool]\n{}", o.spool));
        let cfg = dir.path().join("wardgate.toml");
        std::fs::write(&cfg, text).expect("write config");
        let log = dir.path().join("wardgate.log");
        Rig {
            broker,
            sub,
            cfg,
            log,
            spool: spool_dir.join("spool.db"),
            dir,
        }
    }

    pub fn start(&self) -> Process {
        Process::start(&self.cfg, &self.log)
    }

    /// Builds a backlog on disk: the gateway runs with the broker up until
    /// `ups1` has delivered 20 samples, the broker stops, readings pile up for
    /// `outage`, then SIGTERM (exit 0 asserted). The broker stays down.
    pub async fn make_backlog(&mut self, outage: Duration) {
        let mut gw = self.start();
        let sub = &self.sub;
        gw.until(WAIT, "ups1 delivers live samples", || {
            sub.seqs("ups1").len() >= 20
        })
        .await;
        self.broker.stop();
        tokio::time::sleep(outage).await;
        gw.assert_running("during the outage");
        gw.stop_clean("stop with the broker down").await;
    }
}

impl Process {
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// The last 40 lines of the log, without the simulated devices' events.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("wardgate::source: event"))
            .collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn assert_running(&mut self, when: &str) {
        if let Some(st) = self.exited() {
            panic!(
                "wardgate exited ({st}) {when}; it must keep running. Log tail:\n{}",
                self.log_tail()
            );
        }
    }

    /// Polls `cond` every 50 ms; fails at once, with the log, if the
    /// gateway exits meanwhile.
    pub async fn until(&mut self, limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if cond() {
                return;
            }
            self.assert_running(&format!("while waiting for: {what}"));
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out after {limit:?} waiting for: {what}. Log tail:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM; asserts exit code 0 within the documented stop budget
    /// ([`STOP_BUDGET`], 10 s, "even with the broker hung or the card
    /// failing").
    pub async fn stop_clean(&mut self, when: &str) {
        self.assert_running(&format!("before SIGTERM ({when})"));
        self.signal(libc::SIGTERM);
        let t0 = std::time::Instant::now();
        let code = self.wait(STOP_BUDGET).await;
        eprintln!("SIGTERM ({when}): exited in {:?}", t0.elapsed());
        assert_eq!(
            code,
            Some(0),
            "SIGTERM ({when}) must exit 0. Log tail:\n{}",
            self.log_tail()
        );
    }
}

/// A tmpfs mounted on a fresh temp dir, unmounted (lazily) on drop.
pub struct Tmpfs {
    pub dir: tempfile::TempDir,
}

fn run(cmd: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Tmpfs {
    /// `size` as mount(8) takes it ("2m"). Fails the test (no skipping) if
    /// the mount is refused: these tests need root and a kernel with tmpfs.
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_str().expect("utf-8 temp path").to_owned();
        if let Err(e) = run(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "tmpfs",
            &path,
        ]) {
            panic!("this test needs a tmpfs (run the tests as root): mounting one failed: {e}");
        }
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn remount_read_only(&self) {
        let path = self.dir.path().to_str().expect("utf-8 temp path");
        if let Err(e) = run(&["mount", "-o", "remount,ro", path]) {
            panic!("remounting the tmpfs read-only failed: {e}");
        }
    }

    /// Bytes free for an unprivileged writer.
    pub fn available(&self) -> u64 {
        let c = std::ffi::CString::new(self.dir.path().as_os_str().as_encoded_bytes())
            .expect("no NUL in a temp path");
        // SAFETY: statvfs(3) with a valid C string and a zeroed out-struct.
        unsafe {
            let mut st: libc::statvfs = std::mem::zeroed();
            if libc::statvfs(c.as_ptr(), &mut st) != 0 {
                return 0;
            }
            st.f_bavail as u64 * st.f_frsize as u64
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Some(p) = self.dir.path().to_str() {
            let _ = run(&["umount", "-l", p]);
        }
    }
}

/// One record as received, with its envelope.
#[derive(Debug, Clone)]
pub struct Rec {
    /// Index of the message in the subscriber's arrival order.
    pub msg: usize,
    pub device: String,
    /// "samples" or "events".
    pub kind: &'static str,
    /// The envelope's `epoch`; "" where there is none.
    pub epoch: String,
    pub seq: u64,
    pub historical: bool,
    /// The record without its `historical` flag.
    pub content: Value,
}

/// Every sample and event received, in arrival order.
pub fn records(sub: &Subscriber) -> Vec<Rec> {
    let mut out = Vec::new();
    for (i, m) in sub.all().iter().enumerate() {
        let kind = if m.topic.ends_with("/telemetry") {
            "samples"
        } else if m.topic.ends_with("/event") {
            "events"
        } else {
            continue;
        };
        let device = m.body["device"].as_str().unwrap_or("?").to_owned();
        let epoch = m.body["epoch"].as_str().unwrap_or("").to_owned();
        for r in m.body[kind].as_array().into_iter().flatten() {
            let mut content = r.clone();
            content["historical"] = Value::Null;
            out.push(Rec {
                msg: i,
                device: device.clone(),
                kind,
                epoch: epoch.clone(),
                seq: r["seq"].as_u64().unwrap_or(u64::MAX),
                historical: r["historical"] == true,
                content,
            });
        }
    }
    out
}

/// The gateway's own events with this code.
pub fn gateway_events(sub: &Subscriber, code: &str) -> Vec<Value> {
    sub.events("gateway")
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e["code"] == code)
        .collect()
}

/// The highest value of a number in the gateway's telemetry, received from
/// message index `from` on.
pub fn gateway_max(sub: &Subscriber, name: &str, from: usize) -> Option<f64> {
    sub.samples("gateway")
        .iter()
        .filter(|(i, _)| *i >= from)
        .filter_map(|(_, s)| s["values"][name].as_f64())
        .reduce(f64::max)
}

/// The highest total of readings dropped the gateway reported: the larger of
/// `spool.dropped` and the sum of the `spool.dropped.<reason>` values in one
/// message.
pub fn gateway_dropped(sub: &Subscriber) -> f64 {
    sub.samples("gateway")
        .iter()
        .filter_map(|(_, s)| s["values"].as_object().cloned())
        .map(|v| {
            let total = v
                .get("spool.dropped")
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            let by_reason: f64 = v
                .iter()
                .filter(|(k, _)| k.starts_with("spool.dropped."))
                .filter_map(|(_, n)| n.as_f64())
                .sum();
            total.max(by_reason)
        })
        .fold(0.0, f64::max)
}

/// Every `spool.*` value of the last gateway telemetry received, for
/// failure messages.
pub fn last_spool_values(sub: &Subscriber) -> String {
    sub.samples("gateway")
        .last()
        .and_then(|(_, s)| s["values"].as_object().cloned())
        .map(|v| {
            v.iter()
                .filter(|(k, _)| k.starts_with("spool.") || k.starts_with("mqtt."))
                .map(|(k, n)| format!("{k}={n}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "(no gateway telemetry received)".into())
}

/// Codes of all gateway events received, for failure messages.
pub fn gateway_codes(sub: &Subscriber) -> Vec<String> {
    sub.events("gateway")
        .iter()
        .map(|(_, e)| e["code"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// One row of the spool table `rec`, read directly.
#[derive(Debug, Clone)]
pub struct SpoolRow {
    pub id: i64,
    /// 0 = sample, 1 = event.
    pub kind: i64,
    pub device: String,
    pub seq: u64,
    /// The `epoch` column; 0 where the table has none.
    pub epoch: i64,
    /// The `crc` column, if the table has one and it is set.
    pub crc: Option<i64>,
    pub body: String,
    /// The `boot` and `boottime` columns, when set: the
    /// checksum covers them too.
    pub taken: Option<(String, i64)>,
}

impl SpoolRow {
    /// (device, "samples"|"events", seq): how the record is keyed on the wire.
    pub fn key(&self) -> (String, &'static str, u64) {
        (self.device.clone(), kind_name(self.kind), self.seq)
    }
}

pub fn kind_name(kind: i64) -> &'static str {
    if kind == 0 {
        "samples"
    } else {
        "events"
    }
}

pub fn open_spool(path: &Path) -> Connection {
    Connection::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

pub fn has_column(conn: &Connection, col: &str) -> bool {
    let mut st = conn.prepare("PRAGMA table_info(rec)").expect("table_info");
    let names: Vec<String> = st
        .query_map([], |r| r.get::<_, String>(1))
        .expect("table_info rows")
        .collect::<Result<_, _>>()
        .expect("table_info names");
    names.iter().any(|n| n == col)
}

/// Every row of `rec`, by id.
pub fn spool_rows(conn: &Connection) -> Vec<SpoolRow> {
    let epoch = if has_column(conn, "epoch") {
        "epoch"
    } else {
        "0"
    };
    let crc = if has_column(conn, "crc") {
        "crc"
    } else {
        "NULL"
    };
    let taken = if has_column(conn, "boot") {
        "boot, boottime"
    } else {
        "NULL, NULL"
    };
    let sql =
        format!("SELECT id, kind, device, seq, {epoch}, {crc}, body, {taken} FROM rec ORDER BY id");
    let mut st = conn.prepare(&sql).expect("select rows");
    let rows = st
        .query_map([], |r| {
            Ok(SpoolRow {
                id: r.get(0)?,
                kind: r.get(1)?,
                device: r.get(2)?,
                seq: r.get::<_, i64>(3)? as u64,
                epoch: r.get(4)?,
                crc: r.get(5)?,
                body: r.get(6)?,
                taken: match (r.get::<_, Option<String>>(7)?, r.get::<_, Option<i64>>(8)?) {
                    (Some(b), Some(t)) => Some((b, t)),
                    _ => None,
                },
            })
        })
        .expect("query rows")
        .collect::<Result<Vec<_>, _>>()
        .expect("read rows");
    rows
}

/// The gateway's row checksum, with the kind as stored (0 sample, 1 event),
/// covering the row's boot and boottime when it keeps them.
/// [`check_replica`] checks that rows the gateway wrote agree with it.
pub fn row_checksum(
    kind: i64,
    epoch: u64,
    device: &str,
    seq: u64,
    body: &str,
    taken: &Option<(String, i64)>,
) -> u32 {
    let kind = wardgate::model::Kind::from_i64(kind).expect("kind 0 or 1");
    let taken = taken.as_ref().map(|(b, t)| (b.as_str(), *t));
    wardgate::spool::db::row_checksum_at(kind, epoch, device, seq, body, taken)
}

/// Where rows carry a crc, asserts the local checksum agrees with the
/// gateway's on untouched rows.
pub fn check_replica(rows: &[SpoolRow]) {
    for r in rows.iter().filter(|r| r.crc.is_some()).take(20) {
        let mine = row_checksum(r.kind, r.epoch as u64, &r.device, r.seq, &r.body, &r.taken) as i64;
        assert_eq!(
            Some(mine),
            r.crc.map(|c| c & 0xffff_ffff),
            "the test's copy of row_checksum disagrees with the crc the gateway stored for row {} ({} {} seq {}): spec and code differ",
            r.id,
            r.device,
            kind_name(r.kind),
            r.seq
        );
    }
}

/// Rewrites a row's device and body; where the table has a `crc` column the
/// crc is made correct for the new content (so only what is being tested is
/// wrong about the row).
pub fn rewrite_row(conn: &Connection, row: &SpoolRow, device: &str, body: &str) {
    if has_column(conn, "crc") {
        let crc = row_checksum(
            row.kind,
            row.epoch as u64,
            device,
            row.seq,
            body,
            &row.taken,
        );
        conn.execute(
            "UPDATE rec SET device = ?1, body = ?2, crc = ?3 WHERE id = ?4",
            rusqlite::params![device, body, crc as i64, row.id],
        )
        .expect("update row");
    } else {
        conn.execute(
            "UPDATE rec SET device = ?1, body = ?2 WHERE id = ?3",
            rusqlite::params![device, body, row.id],
        )
        .expect("update row");
    }
}

/// Rewrites a row's body without touching its crc (a bit flip on disk).
pub fn damage_body(conn: &Connection, row: &SpoolRow, body: &str) {
    conn.execute(
        "UPDATE rec SET body = ?1 WHERE id = ?2",
        rusqlite::params![body, row.id],
    )
    .expect("update body");
}

/// The row in the middle of those of `device`'s samples.
pub fn middle_sample<'a>(rows: &'a [SpoolRow], device: &str) -> &'a SpoolRow {
    let of: Vec<&SpoolRow> = rows
        .iter()
        .filter(|r| r.kind == 0 && r.device == device)
        .collect();
    assert!(
        of.len() >= 10,
        "the backlog holds {} samples of {device}; the test needs at least 10",
        of.len()
    );
    of[of.len() / 2]
}

/// (device, kind, seq) of every record received, whatever its epoch.
pub fn received_keys(sub: &Subscriber) -> std::collections::BTreeSet<(String, &'static str, u64)> {
    records(sub)
        .into_iter()
        .map(|r| (r.device, r.kind, r.seq))
        .collect()
}

/// Backlog rows (keys) not received yet, except those in `except`.
pub fn missing_backlog(
    sub: &Subscriber,
    rows: &[SpoolRow],
    except: &[i64],
) -> Vec<(String, &'static str, u64)> {
    let got = received_keys(sub);
    rows.iter()
        .filter(|r| !except.contains(&r.id))
        .map(SpoolRow::key)
        .filter(|k| !got.contains(k))
        .collect()
}

/// Highest seq of `device`'s samples in the rows.
pub fn max_sample_seq(rows: &[SpoolRow], device: &str) -> u64 {
    rows.iter()
        .filter(|r| r.kind == 0 && r.device == device)
        .map(|r| r.seq)
        .max()
        .unwrap_or(0)
}

/// Times each (device, kind, epoch, seq) was received.
pub fn copies(recs: &[Rec]) -> BTreeMap<(String, &'static str, String, u64), usize> {
    let mut out = BTreeMap::new();
    for r in recs {
        *out.entry((r.device.clone(), r.kind, r.epoch.clone(), r.seq))
            .or_insert(0) += 1;
    }
    out
}
