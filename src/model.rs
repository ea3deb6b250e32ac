//! The one data model every part of wardgate speaks: samples, events and
//! device health.
//!
//! A source produces [`Values`]; the spool stamps them with the device's next
//! sequence number, the time and the clock state, and from then on the reading
//! travels as a [`Sample`] (or an [`Event`]) until a sink has it acknowledged.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One reading's value: a number, a flag or a word (`"OL"`, `"closed"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Num(f64),
    Str(String),
}

impl Value {
    /// The number, if this value is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Num(n) => Some(*n),
            _ => None,
        }
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

/// Named values of one reading, ordered by name. Names follow NUT's style
/// (`ups.status`, `battery.charge`, `input.voltage`, `ambient.temperature`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Values(pub BTreeMap<String, Value>);

impl Values {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a number. Non-finite numbers (NaN, infinities) cannot be carried
    /// in JSON and are left out; the return value says whether it was kept.
    pub fn num(&mut self, name: &str, n: f64) -> bool {
        if n.is_finite() {
            self.0.insert(name.to_owned(), Value::Num(n));
            true
        } else {
            false
        }
    }

    pub fn set(&mut self, name: &str, v: impl Into<Value>) {
        self.0.insert(name.to_owned(), v.into());
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Whether the wall clock was synchronised (NTP) when a reading was taken.
/// A Raspberry Pi has no real-time clock: until NTP syncs after boot its time
/// may be far off, and readings taken then must say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockState {
    Synced,
    Unsynced,
    /// Taken unsynchronised; `ts` was corrected by the gateway once the
    /// clock synchronised later in the same boot (from the monotonic clock,
    /// see `crate::clock`), before the reading was sent.
    Corrected,
}

impl ClockState {
    /// Reads the kernel's NTP state with `adjtimex(2)` (read-only: `modes = 0`).
    /// `TIME_ERROR` or the `STA_UNSYNC` flag mean the clock is not synchronised.
    pub fn from_kernel() -> Self {
        if crate::clock::kernel_synced() {
            ClockState::Synced
        } else {
            ClockState::Unsynced
        }
    }
}

/// Milliseconds since the Unix epoch, UTC.
pub fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        // A clock before 1970 is a broken clock; say so with a zero rather
        // than a negative time no consumer expects.
        Err(_) => 0,
    }
}

/// How serious an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// A reading of one device, as it travels from the spool to the sinks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Per-device sequence number, strictly increasing, persisted across
    /// restarts. Samples and events have separate sequences.
    pub seq: u64,
    /// When the reading was taken, milliseconds since the epoch (UTC).
    pub ts: i64,
    pub clock: ClockState,
    pub values: Values,
}

/// A state change or alarm of one device: UPS on battery, door open,
/// threshold crossed, device lost or restored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Per-device sequence number of events (separate from samples').
    pub seq: u64,
    pub ts: i64,
    pub clock: ClockState,
    pub severity: Severity,
    /// Machine-readable kind, dotted like value names: `ups.on_battery`,
    /// `device.lost`, `spool.corrupt`.
    pub code: String,
    /// A plain sentence for people.
    pub message: String,
    /// The values involved.
    #[serde(default)]
    pub values: Values,
}

/// What a source hands to the spool: the spool stamps it with seq, ts and clock.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    Sample(Values),
    Event {
        severity: Severity,
        code: String,
        message: String,
        values: Values,
    },
}

/// The two kinds of record kept in the spool; events are sent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Sample,
    Event,
}

impl Kind {
    pub fn as_i64(self) -> i64 {
        match self {
            Kind::Sample => 0,
            Kind::Event => 1,
        }
    }

    pub fn from_i64(n: i64) -> Option<Kind> {
        match n {
            0 => Some(Kind::Sample),
            1 => Some(Kind::Event),
            _ => None,
        }
    }

    /// The last topic level and the payload's array name.
    pub fn topic_leaf(self) -> &'static str {
        match self {
            Kind::Sample => "telemetry",
            Kind::Event => "event",
        }
    }

    pub fn array_name(self) -> &'static str {
        match self {
            Kind::Sample => "samples",
            Kind::Event => "events",
        }
    }
}

/// A configured device's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "reason", rename_all = "lowercase")]
pub enum Health {
    /// A good reading arrived within the last three intervals.
    Ok,
    /// No good reading within three intervals.
    Stale,
    /// The source reports a fault, with the reason.
    Fault(String),
}

impl Health {
    pub fn word(&self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Stale => "stale",
            Health::Fault(_) => "fault",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Fault(r) => write!(f, "fault: {r}"),
            h => f.write_str(h.word()),
        }
    }
}

/// Checks a site or device id: `[a-z0-9][a-z0-9_-]*`, at most 64 characters.
/// These ids become MQTT topic levels, so nothing else is allowed.
pub fn valid_id(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit() => {}
        _ => return false,
    }
    s.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Checks a value name against the contract (`[A-Za-z0-9_.-]+`, at most
/// 128 characters).
pub fn valid_value_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["ups1", "phuong-tan-phong", "0", "a_b-c"] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in ["", "UPS1", "-a", "_a", "a b", "a/b", "a+", "a#", "ạ"] {
            assert!(!valid_id(bad), "{bad}");
        }
        assert!(!valid_id(&"a".repeat(65)));
    }

    #[test]
    fn values_json_keeps_types_and_order() {
        let mut v = Values::new();
        v.set("ups.status", "OL");
        v.num("battery.charge", 97.0);
        v.set("door.open", false);
        assert!(!v.num("bad", f64::NAN));
        let s = serde_json::to_string(&v).unwrap();
        assert_eq!(
            s,
            r#"{"battery.charge":97.0,"door.open":false,"ups.status":"OL"}"#
        );
        let back: Values = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn sample_json_shape() {
        let s = Sample {
            seq: 7,
            ts: 1_700_000_000_123,
            clock: ClockState::Unsynced,
            values: Values::new(),
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"seq":7,"ts":1700000000123,"clock":"unsynced","values":{}}"#
        );
    }

    #[test]
    fn health_json() {
        assert_eq!(
            serde_json::to_string(&Health::Fault("port gone".into())).unwrap(),
            r#"{"state":"fault","reason":"port gone"}"#
        );
        assert_eq!(
            serde_json::to_string(&Health::Ok).unwrap(),
            r#"{"state":"ok"}"#
        );
    }

    /// The kernel's NTP state read another way than `from_kernel` does:
    /// `clock_adjtime(CLOCK_REALTIME)`, read-only (`modes = 0`).
    fn unsynced_per_clock_adjtime() -> bool {
        // SAFETY: `timex` is plain old data; with `modes == 0` the call only
        // reads the kernel state into it.
        let mut tx: libc::timex = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::clock_adjtime(libc::CLOCK_REALTIME, &mut tx) };
        assert_ne!(rc, -1, "clock_adjtime: {}", std::io::Error::last_os_error());
        rc == libc::TIME_ERROR || tx.status & libc::STA_UNSYNC != 0
    }

    #[test]
    fn kernel_clock_state_matches_the_kernel() {
        // Read the kernel before and after; when both agree (ntpd may flip
        // the state in between, then try again), `from_kernel` must say the
        // same.
        for _ in 0..10 {
            let before = unsynced_per_clock_adjtime();
            let ours = ClockState::from_kernel();
            let after = unsynced_per_clock_adjtime();
            if before == after {
                let expected = if before {
                    ClockState::Unsynced
                } else {
                    ClockState::Synced
                };
                assert_eq!(ours, expected, "STA_UNSYNC/TIME_ERROR say {expected:?}");
                return;
            }
        }
        panic!("the kernel's clock state kept changing");
    }
}
