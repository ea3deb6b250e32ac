//! The messages: the batch envelope of telemetry and events, and the
//! retained online/offline status (docs/mqtt.md, "Telemetry", "Events",
//! "Status"; docs/schema/).
//!
//! ```json
//! {"site":"phuong-tan-phong","device":"ups1","epoch":"5f3a9c0e12d4b7a1",
//!  "samples":[{"historical":false,"seq":4711,"ts":1795832190039,"clock":"synced","values":{…}}]}
//! ```
//!
//! Decoding is strict about what the contract requires (ids, the epoch's 16
//! lowercase hex digits, at least one record, each record's fields and their
//! types, value names, event codes) and lenient about fields it does not
//! know: the contract lets a newer gateway add fields, never rename or
//! remove them. A payload that breaks it is an error naming what is wrong,
//! never a panic.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::{valid_event_code, valid_id, valid_value_name, ClockState, Event, Kind, Sample};
use crate::topic::Topic;

/// The gateway's sequence epoch: sequence numbers count within it. On the
/// wire, 16 lowercase hex digits (`"5f3a9c0e12d4b7a1"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// An epoch that is not 16 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("epoch {0:?} is not 16 lowercase hex digits")]
pub struct BadEpoch(pub String);

impl FromStr for Epoch {
    type Err = BadEpoch;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        match hex.then(|| u64::from_str_radix(s, 16)) {
            Some(Ok(n)) => Ok(Epoch(n)),
            _ => Err(BadEpoch(s.to_owned())),
        }
    }
}

impl Serialize for Epoch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Epoch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Epoch;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an epoch of 16 lowercase hex digits")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Epoch, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// A record kind the envelope carries: [`Sample`] or [`Event`].
pub trait Record: Serialize + DeserializeOwned + Clone + PartialEq {
    /// Which topic, payload array and sequence it belongs to.
    const KIND: Kind;
    fn seq(&self) -> u64;
    fn ts(&self) -> i64;
    fn clock(&self) -> ClockState;
    /// Sets the time and clock state (a clock correction).
    fn retime(&mut self, ts: i64, clock: ClockState);
    /// What the contract checks in the record beyond its types: its value
    /// names, an event's code.
    fn check(&self) -> Result<(), DecodeError>;
    /// Writes the record's content but its time and clock state, as JSON
    /// (what [`crate::seq::fingerprint`] hashes: two copies that differ only
    /// by a clock correction write the same).
    fn write_body<W: std::io::Write>(&self, w: W) -> serde_json::Result<()>;
}

fn check_values(seq: u64, ts: i64, values: &crate::model::Values) -> Result<(), DecodeError> {
    if ts < 0 {
        return Err(DecodeError::NegativeTs { seq, ts });
    }
    match values.0.keys().find(|n| !valid_value_name(n)) {
        Some(name) => Err(DecodeError::BadValueName {
            seq,
            name: name.clone(),
        }),
        None => Ok(()),
    }
}

impl Record for Sample {
    const KIND: Kind = Kind::Sample;
    fn seq(&self) -> u64 {
        self.seq
    }
    fn ts(&self) -> i64 {
        self.ts
    }
    fn clock(&self) -> ClockState {
        self.clock
    }
    fn retime(&mut self, ts: i64, clock: ClockState) {
        self.ts = ts;
        self.clock = clock;
    }
    fn check(&self) -> Result<(), DecodeError> {
        check_values(self.seq, self.ts, &self.values)
    }
    fn write_body<W: std::io::Write>(&self, w: W) -> serde_json::Result<()> {
        serde_json::to_writer(w, &(self.seq, &self.values))
    }
}

impl Record for Event {
    const KIND: Kind = Kind::Event;
    fn seq(&self) -> u64 {
        self.seq
    }
    fn ts(&self) -> i64 {
        self.ts
    }
    fn clock(&self) -> ClockState {
        self.clock
    }
    fn retime(&mut self, ts: i64, clock: ClockState) {
        self.ts = ts;
        self.clock = clock;
    }
    fn check(&self) -> Result<(), DecodeError> {
        if !valid_event_code(&self.code) {
            return Err(DecodeError::BadCode {
                seq: self.seq,
                code: self.code.clone(),
            });
        }
        check_values(self.seq, self.ts, &self.values)
    }
    fn write_body<W: std::io::Write>(&self, w: W) -> serde_json::Result<()> {
        let Event {
            seq,
            ts: _,
            clock: _,
            severity,
            code,
            message,
            values,
        } = self;
        serde_json::to_writer(w, &(seq, severity, code, message, values))
    }
}

/// One record as sent: the record and whether it came from the gateway's
/// backlog (`historical: true`) or live. On the wire the flag is the
/// record object's first key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivered<R> {
    pub historical: bool,
    #[serde(flatten)]
    pub record: R,
}

/// A telemetry or event message: the records of one device, one kind and
/// one epoch, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<R> {
    pub site: String,
    pub device: String,
    pub epoch: Epoch,
    /// `samples` or `events` on the wire; never empty.
    pub records: Vec<Delivered<R>>,
}

/// A telemetry message (`{prefix}/{site}/{device}/telemetry`).
pub type Telemetry = Envelope<Sample>;
/// An event message (`{prefix}/{site}/{device}/event`).
pub type Events = Envelope<Event>;

impl<R: Record> Envelope<R> {
    /// Decodes and checks a payload (see the module's comment for what is
    /// checked).
    pub fn from_slice(payload: &[u8]) -> Result<Self, DecodeError> {
        let env: Self = serde_json::from_slice(payload).map_err(|source| DecodeError::Json {
            what: R::KIND.topic_leaf(),
            source,
        })?;
        env.check()?;
        Ok(env)
    }

    /// What the contract requires beyond the types: ids, at least one
    /// record, each record's value names (and an event's code), no time
    /// before 1970.
    pub fn check(&self) -> Result<(), DecodeError> {
        for (field, id) in [("site", &self.site), ("device", &self.device)] {
            if !valid_id(id) {
                return Err(DecodeError::BadId {
                    field,
                    id: id.clone(),
                });
            }
        }
        if self.records.is_empty() {
            return Err(DecodeError::Empty(R::KIND.array_name()));
        }
        self.records.iter().try_for_each(|d| d.record.check())
    }

    /// Whether the envelope's site and device are the topic's (a message
    /// whose payload names another site or device than its topic breaks the
    /// contract: the topic is what the broker's ACL vouches for).
    pub fn check_topic(&self, topic: &Topic<'_>) -> Result<(), DecodeError> {
        match *topic {
            Topic::Data { site, device, kind } if kind == R::KIND => {
                for (field, t, p) in [("site", site, &self.site), ("device", device, &self.device)]
                {
                    if t != p {
                        return Err(DecodeError::TopicMismatch {
                            field,
                            topic: t.to_owned(),
                            payload: p.clone(),
                        });
                    }
                }
                Ok(())
            }
            _ => Err(DecodeError::WrongTopic {
                want: R::KIND.topic_leaf(),
            }),
        }
    }

    /// The encoding the gateway's own encoder must match (the gateway
    /// splices stored bodies for speed; its tests decode what it makes with
    /// [`Envelope::from_slice`]).
    pub fn to_vec(&self) -> Vec<u8> {
        // Strings, numbers and maps with string keys: serde_json cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl<R: Record> Serialize for Envelope<R> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Envelope", 4)?;
        m.serialize_field("site", &self.site)?;
        m.serialize_field("device", &self.device)?;
        m.serialize_field("epoch", &self.epoch)?;
        m.serialize_field(R::KIND.array_name(), &self.records)?;
        m.end()
    }
}

impl<'de, R: Record> Deserialize<'de> for Envelope<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<R>(std::marker::PhantomData<R>);
        impl<'de, R: Record> Visitor<'de> for V<R> {
            type Value = Envelope<R>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "an object with site, device, epoch and {}",
                    R::KIND.array_name()
                )
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope<R>, A::Error> {
                let array = R::KIND.array_name();
                let (mut site, mut device, mut epoch, mut records) = (None, None, None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "site" => set(&mut site, "site", map.next_value()?)?,
                        "device" => set(&mut device, "device", map.next_value()?)?,
                        "epoch" => set(&mut epoch, "epoch", map.next_value()?)?,
                        k if k == array => set(&mut records, array, map.next_value()?)?,
                        // Fields a newer contract may add.
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Envelope {
                    site: site.ok_or_else(|| de::Error::missing_field("site"))?,
                    device: device.ok_or_else(|| de::Error::missing_field("device"))?,
                    epoch: epoch.ok_or_else(|| de::Error::missing_field("epoch"))?,
                    records: records.ok_or_else(|| de::Error::missing_field(array))?,
                })
            }
        }
        fn set<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, v: T) -> Result<(), E> {
            if slot.is_some() {
                return Err(E::duplicate_field(name));
            }
            *slot = Some(v);
            Ok(())
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// The retained message on `{prefix}/{site}/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Status {
    /// The birth message, on every connection.
    Online {
        version: String,
        /// The Pi's kernel boot id: changes on every reboot.
        boot_id: String,
        /// Changes on every start of the service.
        run_id: String,
        /// When this run started, ms since the epoch.
        started: i64,
    },
    /// The last will (`lost`) or a clean stop.
    Offline { reason: OfflineReason },
}

impl Status {
    /// Decodes a status payload.
    pub fn from_slice(payload: &[u8]) -> Result<Self, DecodeError> {
        serde_json::from_slice(payload).map_err(|source| DecodeError::Json {
            what: "status",
            source,
        })
    }

    pub fn to_vec(&self) -> Vec<u8> {
        // Strings and a number: serde_json cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Why a gateway is offline. Consumers treat an unknown reason as offline
/// all the same; it is kept as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfflineReason {
    /// The broker published the last will: the gateway vanished (power cut,
    /// link lost past the keep-alive).
    Lost,
    /// A clean stop.
    Shutdown,
    /// A clean stop because the UPS powering the Pi is running flat; the Pi
    /// powers off and comes back with the mains.
    Power,
    /// A reason this version of the contract does not know.
    Other(String),
}

impl OfflineReason {
    pub fn as_str(&self) -> &str {
        match self {
            OfflineReason::Lost => "lost",
            OfflineReason::Shutdown => "shutdown",
            OfflineReason::Power => "power",
            OfflineReason::Other(s) => s,
        }
    }
}

impl From<&str> for OfflineReason {
    fn from(s: &str) -> Self {
        match s {
            "lost" => OfflineReason::Lost,
            "shutdown" => OfflineReason::Shutdown,
            "power" => OfflineReason::Power,
            other => OfflineReason::Other(other.to_owned()),
        }
    }
}

impl Serialize for OfflineReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for OfflineReason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(OfflineReason::from(s.as_str()))
    }
}

/// A decoded message of a topic this crate types.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Telemetry(Telemetry),
    Events(Events),
    Status(Status),
}

impl Message {
    /// Decodes `payload` as the message `topic` carries, and checks that a
    /// data message's site and device are the topic's. Inventory and
    /// command payloads are not decoded here ([`DecodeError::Untyped`]):
    /// a reply is read with [`crate::command::Reply::decode`].
    pub fn decode(topic: &Topic<'_>, payload: &[u8]) -> Result<Message, DecodeError> {
        match topic {
            Topic::Data {
                kind: Kind::Sample, ..
            } => {
                let env = Telemetry::from_slice(payload)?;
                env.check_topic(topic)?;
                Ok(Message::Telemetry(env))
            }
            Topic::Data {
                kind: Kind::Event, ..
            } => {
                let env = Events::from_slice(payload)?;
                env.check_topic(topic)?;
                Ok(Message::Events(env))
            }
            Topic::Status { .. } => Status::from_slice(payload).map(Message::Status),
            Topic::Inventory { .. } => Err(DecodeError::Untyped("inventory")),
            Topic::Command { .. } => Err(DecodeError::Untyped("command request")),
            Topic::Reply { .. } => Err(DecodeError::Untyped("command reply")),
        }
    }
}

/// Why a payload is not a message of the contract. Every variant means the
/// same to a consumer: count the message as malformed, log it with this
/// text, and do not store it (a gateway never publishes one; it comes from
/// something else on the broker or a bug to report).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or a field missing, of the wrong type, duplicated, or an
    /// epoch that is not 16 lowercase hex digits; `source` names which and
    /// where.
    #[error("not a valid {what} message: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The site or device is not an id (`[a-z0-9][a-z0-9_-]*`, at most 64).
    #[error("{field} {id:?} is not an id ([a-z0-9][a-z0-9_-]*, at most 64 characters)")]
    BadId { field: &'static str, id: String },
    /// The records' array is empty.
    #[error("the message has no {0}")]
    Empty(&'static str),
    /// A record's time is before 1970.
    #[error("record seq {seq}: ts {ts} is before 1970")]
    NegativeTs { seq: u64, ts: i64 },
    /// A value name outside `[A-Za-z0-9_.-]{1,128}`.
    #[error("record seq {seq}: value name {name:?} is not [A-Za-z0-9_.-], 1 to 128 characters")]
    BadValueName { seq: u64, name: String },
    /// An event code that is not dotted words of `[a-z0-9_]`.
    #[error("event seq {seq}: code {code:?} is not dotted words of [a-z0-9_]")]
    BadCode { seq: u64, code: String },
    /// The payload names another site or device than its topic.
    #[error("the topic's {field} is {topic:?}, the payload's {payload:?}")]
    TopicMismatch {
        field: &'static str,
        topic: String,
        payload: String,
    },
    /// The envelope was checked against a topic of another kind.
    #[error("not a {want} topic")]
    WrongTopic { want: &'static str },
    /// The topic carries a payload [`Message::decode`] does not take:
    /// an inventory (read it with serde_json against its schema) or a
    /// command ([`crate::command`]).
    #[error("{0} payloads are not typed by the contract crate")]
    Untyped(&'static str),
}

#[cfg(test)]
pub(crate) mod tests;
