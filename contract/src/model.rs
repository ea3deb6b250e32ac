//! The records that go on the wire: samples, events, their values and clock
//! state, and the id and name rules of the topics and payloads.
//!
//! The gateway builds these from its sources and the spool; the operations
//! centre reads them back out of the envelopes (`crate::envelope`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One reading's value: a number, a flag or a word (`"OL"`, `"closed"`).
/// On the wire a bare JSON number, boolean or string.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Num(f64),
    Str(String),
}

/// Read by the JSON token's type, which says the variant: the same values
/// as serde's untagged reading, without building and discarding an error
/// for each variant tried (decoding is the consumer's hot path).
impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, a boolean or a string")
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Value, E> {
                Ok(Value::Bool(b))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Value, E> {
                Ok(Value::Num(n as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Value, E> {
                Ok(Value::Num(n as f64))
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Value, E> {
                Ok(Value::Num(n))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Value, E> {
                Ok(Value::Str(s.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Value, E> {
                Ok(Value::Str(s))
            }
        }
        d.deserialize_any(V)
    }
}

impl Value {
    /// The number, if this value is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Num(n) => Some(*n),
            _ => None,
        }
    }

    /// The word, if this value is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockState {
    Synced,
    Unsynced,
    /// Taken unsynchronised; `ts` was corrected by the gateway once the
    /// clock synchronised later in the same boot (from its monotonic clock),
    /// before the reading was sent.
    Corrected,
}

/// How serious an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// A reading of one device: what a telemetry message carries (with its
/// `historical` flag, `crate::envelope::Delivered`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Per-device sequence number, strictly increasing within an epoch,
    /// kept across restarts. Samples and events have separate sequences.
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

/// The two kinds of record, each with its own topic, payload array and
/// sequence: telemetry (samples) and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Sample,
    Event,
}

impl Kind {
    /// A compact, stable code for stores (the gateway's spool keeps it in
    /// its rows and sequence files): 0 samples, 1 events.
    pub fn as_i64(self) -> i64 {
        match self {
            Kind::Sample => 0,
            Kind::Event => 1,
        }
    }

    /// The kind of a store code from [`Kind::as_i64`]; `None` for any other.
    pub fn from_i64(n: i64) -> Option<Kind> {
        match n {
            0 => Some(Kind::Sample),
            1 => Some(Kind::Event),
            _ => None,
        }
    }

    /// The last topic level: `telemetry` or `event`.
    pub fn topic_leaf(self) -> &'static str {
        match self {
            Kind::Sample => "telemetry",
            Kind::Event => "event",
        }
    }

    /// The kind a last topic level names, if it names one.
    pub fn from_topic_leaf(leaf: &str) -> Option<Kind> {
        match leaf {
            "telemetry" => Some(Kind::Sample),
            "event" => Some(Kind::Event),
            _ => None,
        }
    }

    /// The payload's array name, `samples` or `events`; also the word
    /// gateway events use for a kind (`record.kind`, `seq_resumed.<device>.<kind>`).
    pub fn array_name(self) -> &'static str {
        match self {
            Kind::Sample => "samples",
            Kind::Event => "events",
        }
    }

    /// The kind an array name (or `record.kind`) names, if it names one.
    pub fn from_array_name(name: &str) -> Option<Kind> {
        match name {
            "samples" => Some(Kind::Sample),
            "events" => Some(Kind::Event),
            _ => None,
        }
    }
}

/// A configured device's health, as the gateway reports it
/// (`device.<id>.health` in its telemetry gives [`Health::word`]).
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

/// Checks an event code against the contract: dotted words of
/// `[a-z0-9_]`, none empty (`ups.on_battery`, `door.open`).
pub fn valid_event_code(s: &str) -> bool {
    s.split('.').all(|w| {
        !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    })
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
        assert!(valid_id(&"a".repeat(64)));
        assert!(!valid_id(&"a".repeat(65)));
    }

    #[test]
    fn value_names() {
        for ok in ["ups.status", "battery.charge", "A-b_c.9", &"a".repeat(128)] {
            assert!(valid_value_name(ok), "{ok}");
        }
        for bad in ["", "a b", "x.<img>", "ạ", "a/b", &"a".repeat(129)] {
            assert!(!valid_value_name(bad), "{bad}");
        }
    }

    #[test]
    fn event_codes() {
        for ok in ["ups.on_battery", "device.lost", "x", "door_1.open"] {
            assert!(valid_event_code(ok), "{ok}");
        }
        for bad in ["", ".a", "a.", "a..b", "Ups.on", "a-b", "a b"] {
            assert!(!valid_event_code(bad), "{bad}");
        }
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
    fn values_read_by_their_json_type() {
        let v: Values =
            serde_json::from_str(r#"{"a":1,"b":-2,"c":2.5,"d":true,"e":"OL","f":1e300}"#).unwrap();
        let want = [
            ("a", Value::Num(1.0)),
            ("b", Value::Num(-2.0)),
            ("c", Value::Num(2.5)),
            ("d", Value::Bool(true)),
            ("e", Value::from("OL")),
            ("f", Value::Num(1e300)),
        ];
        for (name, value) in want {
            assert_eq!(v.get(name), Some(&value), "{name}");
        }
        for bad in [r#"{"a":null}"#, r#"{"a":[1]}"#, r#"{"a":{}}"#] {
            let err = serde_json::from_str::<Values>(bad).unwrap_err().to_string();
            assert!(
                err.contains("expected a number, a boolean or a string"),
                "{bad}: {err}"
            );
        }
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

    #[test]
    fn kind_words_go_both_ways() {
        for k in [Kind::Sample, Kind::Event] {
            assert_eq!(Kind::from_topic_leaf(k.topic_leaf()), Some(k));
            assert_eq!(Kind::from_array_name(k.array_name()), Some(k));
            assert_eq!(Kind::from_i64(k.as_i64()), Some(k));
        }
        assert_eq!(Kind::from_topic_leaf("events"), None);
        assert_eq!(Kind::from_array_name("event"), None);
        assert_eq!(Kind::from_i64(2), None);
    }
}
