//! Real gateway processes (the binary: `gateway_bin()`), one per site,
//! each with a simulated UPS and a simulated sensor read every second,
//! its spool in a temp dir, no web page, no commands; and the damage done
//! to a stopped gateway's spool.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::super::ingest_peers::{pause, Proc};

/// One gateway: its site, dir (config, spool, log) and process.
pub struct Gateway {
    pub site: String,
    pub dir: PathBuf,
    bin: PathBuf,
    p: Proc,
}

/// The config: short intervals so a short test sees everything settle
/// (gateway telemetry every 2 s: a hole is settled within seconds of the
/// drain), a spill after 1 s (an outage puts rows on the card at once).
/// `battery`: the UPS loses the mains at its 10th reading and stops at
/// its 15th, so it stays on battery whatever the test's pace.
fn config(site: &str, broker: u16, spool: &Path, battery: bool) -> String {
    let ups_events = if battery {
        "event_every = 10\ncount = 15\n"
    } else {
        ""
    };
    format!(
        "site = \"{site}\"
[mqtt]
host = \"127.0.0.1\"
port = {broker}
[spool]
path = \"{}\"
spill_after = \"1s\"
commit_interval = \"200ms\"
[gateway]
telemetry_interval = \"2s\"
system_health = false
[web]
enabled = false
[led]
backend = \"none\"
[commands]
enabled = false
[[device]]
id = \"ups1\"
type = \"sim\"
profile = \"ups\"
interval = \"1s\"
{ups_events}[[device]]
id = \"env1\"
type = \"sim\"
profile = \"sensor\"
interval = \"1s\"
",
        spool.display()
    )
}

impl Gateway {
    /// Writes its config under `root/<site>/` and starts it.
    pub fn start(bin: &Path, root: &Path, site: &str, broker: u16, battery: bool) -> Gateway {
        let dir = root.join(site);
        std::fs::create_dir_all(&dir).expect("gateway dir");
        let text = config(site, broker, &dir.join("spool.db"), battery);
        std::fs::write(dir.join("wardgate.toml"), text).expect("wardgate.toml");
        let mut g = Gateway {
            site: site.to_owned(),
            dir,
            bin: bin.to_owned(),
            p: Proc(None),
        };
        g.spawn();
        g
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.join("spool.db")
    }

    pub fn pid(&self) -> Option<u32> {
        self.p.0.as_ref().map(|c| c.id())
    }

    /// Starts the process (again), appending to its log.
    pub fn spawn(&mut self) {
        assert!(self.p.0.is_none(), "{} runs", self.site);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("wardgate.log"))
            .expect("gateway log");
        let child = Command::new(&self.bin)
            .arg("run")
            .arg("--config")
            .arg(self.dir.join("wardgate.toml"))
            .arg("--remote-change-policy")
            .arg(self.dir.join("remote-change.toml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("wardgate");
        self.p.0 = Some(child);
    }

    /// SIGKILL: no clean stop, nothing flushed.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.p.0.take() {
            c.kill().expect("SIGKILL");
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("wardgate.log")).unwrap_or_default()
    }

    /// Still running (not exited).
    pub fn running(&mut self) -> bool {
        self.p
            .0
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

/// SIGTERM to every gateway at once (one `kill` naming their ids), then
/// each must exit 0 (a clean stop) within `within`.
pub fn stop_all(gws: &mut [Gateway], within: Duration) {
    let pids: Vec<String> = gws
        .iter()
        .filter_map(|g| g.pid().map(|p| p.to_string()))
        .collect();
    let _ = Command::new("kill").args(&pids).status();
    let deadline = Instant::now() + within;
    for g in gws.iter_mut() {
        let Some(mut c) = g.p.0.take() else { continue };
        loop {
            if let Some(st) = c.try_wait().expect("wait") {
                assert!(st.success(), "{} exited {st}: {}", g.site, tail(&g.log()));
                break;
            }
            assert!(Instant::now() < deadline, "{} did not stop", g.site);
            pause(Duration::from_millis(20));
        }
    }
}

/// The last lines of a log, for a failure message.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Damages one stored row of `ups1`'s samples in a stopped gateway's
/// spool: the first row taken at or after `after_ms` that is not the
/// newest on disk (so the hole it leaves is its own, apart from the
/// numbers an unclean stop declares) gets one digit of its first value
/// changed. The body is still JSON and still a plausible reading: only
/// its CRC says it is not what was written. Returns the row's seq.
pub fn damage_a_row(spool: &Path, after_ms: i64) -> u64 {
    let c = rusqlite::Connection::open(spool).expect("the stopped gateway's spool");
    let (id, seq, body): (i64, i64, String) = c
        .query_row(
            "SELECT id, seq, body FROM rec WHERE sink = 'mqtt' AND kind = 0 AND device = 'ups1' \
             AND ts >= ?1 AND seq < (SELECT MAX(seq) FROM rec WHERE sink = 'mqtt' AND kind = 0 \
             AND device = 'ups1') ORDER BY seq LIMIT 1",
            [after_ms],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("a ups1 row of the outage with a newer one behind it");
    let values = body.find("\"values\":{").expect("a body with values");
    let at = body[values..]
        .find(|c: char| c.is_ascii_digit())
        .map(|i| values + i)
        .expect("a digit among the values");
    let mut bytes = body.into_bytes();
    bytes[at] = if bytes[at] == b'9' {
        b'1'
    } else {
        bytes[at] + 1
    };
    let damaged = String::from_utf8(bytes).expect("digits are ASCII");
    serde_json::from_str::<serde_json::Value>(&damaged).expect("still JSON");
    let n = c
        .execute(
            "UPDATE rec SET body = ?1 WHERE id = ?2",
            rusqlite::params![damaged, id],
        )
        .expect("update");
    assert_eq!(n, 1);
    u64::try_from(seq).expect("seq")
}
