//! What the gateway says about its own losses (docs/mqtt.md, "Gateway
//! telemetry", the events table, "Ordering, duplicates and gaps"): the
//! events and telemetry values a consumer reads to tell readings lost on
//! the gateway, and why, from numbers never used.
//!
//! Each message has a reader (`from_event`, `from_sample`) that names what
//! is wrong in a broken one, and a writer (`values`) giving the `values`
//! the gateway sends, so the gateway's tests and a load generator build
//! them the same way. The rules that say which numbers each explains are
//! here too:
//!
//! - `gateway.unclean_stop` ([`UncleanStop`]): per stream, the numbers
//!   between the highest received below `seq_resumed` and `seq_resumed`
//!   are explained; with `seq_last_used` those up to it are readings lost
//!   in a crash and those after it were never used
//!   ([`ResumedStream::explains`]). Which epoch the numbers belong to:
//!   [`UncleanStop::epoch_spoken_of`].
//! - `gateway.sequence_reset` ([`SequenceReset`]): a new epoch; with
//!   `previous_epoch`, the run counts in an epoch of its own and will
//!   resume the previous one.
//! - `spool.quarantined` ([`Quarantined`]): one record, never sent.
//! - `spool.corrupt_record` ([`CorruptRecords`]): how many, not which.
//! - `spool.degraded` / `spool.restored` ([`Degraded`], [`Restored`]): the
//!   card could not be written between them; what could not be kept is
//!   counted in `spool.dropped.write_failed` (and `spool.lost`).
//! - the gateway's telemetry ([`GatewayHealth`]): `spool.depth` (backlog
//!   still on the card) and `spool.dropped.<reason>` ([`DropReason`],
//!   counted since the service started).

use crate::codes;
use crate::envelope::Epoch;
use crate::model::{Event, Kind, Sample, Severity, Value, Values};
use crate::seq::SeqRange;

/// Why a gateway event or telemetry sample is not what the rule reads. A
/// gateway never sends a broken one: count it, log it, and leave the
/// numbers it would explain unexplained.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// Another event: not for this reader.
    #[error("event {got:?} is not {want}")]
    OtherCode { want: &'static str, got: String },
    /// A value the rule needs is absent.
    #[error("{code} without {name}")]
    Missing { code: &'static str, name: String },
    /// A value the rule needs is of the wrong type or out of range
    /// (`value` as JSON).
    #[error("{code}: {name} is {value}, not {want}")]
    Bad {
        code: &'static str,
        name: String,
        value: String,
        want: &'static str,
    },
}

/// The largest whole number an f64 holds exactly (2^53): the gateway sends
/// sequence numbers and counters as JSON numbers.
const EXACT: f64 = 9_007_199_254_740_992.0;

fn bad(code: &'static str, name: &str, value: &Value, want: &'static str) -> GatewayError {
    GatewayError::Bad {
        code,
        name: name.to_owned(),
        value: serde_json::to_string(value).unwrap_or_default(),
        want,
    }
}

/// A whole number `0..=2^53` (counts, sequence numbers).
fn count(code: &'static str, name: &str, v: &Value) -> Result<u64, GatewayError> {
    match v.as_f64() {
        Some(n) if n.fract() == 0.0 && (0.0..=EXACT).contains(&n) => Ok(n as u64),
        _ => Err(bad(code, name, v, "a whole number from 0 to 2^53")),
    }
}

fn get<'a>(code: &'static str, values: &'a Values, name: &str) -> Result<&'a Value, GatewayError> {
    values.get(name).ok_or_else(|| GatewayError::Missing {
        code,
        name: name.to_owned(),
    })
}

fn check_code(event: &Event, want: &'static str) -> Result<(), GatewayError> {
    if event.code == want {
        Ok(())
    } else {
        Err(GatewayError::OtherCode {
            want,
            got: event.code.clone(),
        })
    }
}

fn read_epoch(code: &'static str, values: &Values, name: &str) -> Result<Epoch, GatewayError> {
    let v = get(code, values, name)?;
    v.as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(code, name, v, "16 lowercase hex digits"))
}

/// One stream of a `gateway.unclean_stop`: where it resumed, and the last
/// number known to be used before the stop (after a crash of the service
/// in the same boot; absent after a power cut).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumedStream {
    pub device: String,
    pub kind: Kind,
    /// `seq_resumed.<device>.<kind>`: the first number of the new run.
    pub resumed: u64,
    /// `seq_last_used.<device>.<kind>`.
    pub last_used: Option<u64>,
}

/// What a [`ResumedStream`] says of the numbers below `resumed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StopExplains {
    /// Readings lost in the stop: up to `last_used` after a crash; after a
    /// power cut, the whole range (unused numbers and the few readings lost
    /// before the cut cannot be told apart).
    pub lost: Option<SeqRange>,
    /// Numbers never used (after `last_used`, before `resumed`).
    pub unused: Option<SeqRange>,
}

impl ResumedStream {
    /// The rule: of the numbers after `highest_below` (the highest number
    /// received below `resumed`; `None` when none was) and before
    /// `resumed`, those up to `last_used` are readings lost in a crash and
    /// those after it were never used; without `last_used` (a power cut)
    /// all of them are explained, as lost-or-unused.
    pub fn explains(&self, highest_below: Option<u64>) -> StopExplains {
        let first = match highest_below {
            Some(h) if h >= self.resumed => return StopExplains::default(),
            Some(h) => h + 1,
            None => 0,
        };
        if self.resumed == 0 || first >= self.resumed {
            return StopExplains::default();
        }
        let last = self.resumed - 1;
        match self.last_used {
            None => StopExplains {
                lost: Some(SeqRange { first, last }),
                unused: None,
            },
            Some(u) if u < first => StopExplains {
                lost: None,
                unused: Some(SeqRange { first, last }),
            },
            Some(u) if u >= last => StopExplains {
                lost: Some(SeqRange { first, last }),
                unused: None,
            },
            Some(u) => StopExplains {
                lost: Some(SeqRange { first, last: u }),
                unused: Some(SeqRange { first: u + 1, last }),
            },
        }
    }
}

/// A `gateway.unclean_stop` event, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UncleanStop {
    pub streams: Vec<ResumedStream>,
}

impl UncleanStop {
    pub fn from_event(event: &Event) -> Result<Self, GatewayError> {
        const C: &str = codes::UNCLEAN_STOP;
        check_code(event, C)?;
        let mut streams: Vec<ResumedStream> = Vec::new();
        for (name, v) in &event.values.0 {
            let Some(rest) = name.strip_prefix("seq_resumed.") else {
                continue;
            };
            // `<device>.<kind>`: the device is an id (no dots), the kind a word.
            let parsed = rest
                .rsplit_once('.')
                .and_then(|(d, k)| Some((d, Kind::from_array_name(k)?)))
                .filter(|(d, _)| crate::model::valid_id(d));
            let Some((device, kind)) = parsed else {
                return Err(bad(
                    C,
                    name,
                    &Value::from(name.as_str()),
                    "seq_resumed.<device>.<samples|events>",
                ));
            };
            let used_name = format!("seq_last_used.{rest}");
            let last_used = match event.values.get(&used_name) {
                Some(u) => Some(count(C, &used_name, u)?),
                None => None,
            };
            streams.push(ResumedStream {
                device: device.to_owned(),
                kind,
                resumed: count(C, name, v)?,
                last_used,
            });
        }
        if streams.is_empty() {
            return Err(GatewayError::Missing {
                code: C,
                name: "seq_resumed.<device>.<kind>".into(),
            });
        }
        Ok(UncleanStop { streams })
    }

    /// The values the gateway sends.
    pub fn values(&self) -> Values {
        let mut v = Values::new();
        for s in &self.streams {
            let key = format!("{}.{}", s.device, s.kind.array_name());
            v.num(&format!("seq_resumed.{key}"), s.resumed as f64);
            if let Some(u) = s.last_used {
                v.num(&format!("seq_last_used.{key}"), u as f64);
            }
        }
        v
    }

    /// Which epoch the numbers of an unclean stop carried in epoch
    /// `carried` belong to: that epoch, unless the run counted in an epoch
    /// of its own, which its `gateway.sequence_reset` (`reset_in_carried`,
    /// the reset announcing `carried`, when known) says by naming
    /// `previous_epoch`: then the numbers are the previous epoch's.
    pub fn epoch_spoken_of(carried: Epoch, reset_in_carried: Option<&SequenceReset>) -> Epoch {
        match reset_in_carried {
            Some(r) if r.epoch == carried => r.previous_epoch.unwrap_or(carried),
            _ => carried,
        }
    }
}

/// A `gateway.sequence_reset` event, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceReset {
    /// The new epoch (the one the event travels in).
    pub epoch: Epoch,
    /// Sent when the run counts in an epoch of its own because the spool
    /// cannot be written; the gateway resumes this one later.
    pub previous_epoch: Option<Epoch>,
    pub reason: String,
    /// Info severity: the very first start, no numbers before it.
    pub first_start: bool,
}

impl SequenceReset {
    pub fn from_event(event: &Event) -> Result<Self, GatewayError> {
        const C: &str = codes::SEQUENCE_RESET;
        check_code(event, C)?;
        let v = &event.values;
        let previous_epoch = match v.get("previous_epoch") {
            Some(_) => Some(read_epoch(C, v, "previous_epoch")?),
            None => None,
        };
        let reason = v
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok(SequenceReset {
            epoch: read_epoch(C, v, "epoch")?,
            previous_epoch,
            reason,
            first_start: event.severity == Severity::Info,
        })
    }

    pub fn values(&self) -> Values {
        let mut v = Values::new();
        v.set("epoch", self.epoch.to_string());
        if let Some(p) = self.previous_epoch {
            v.set("previous_epoch", p.to_string());
        }
        v.set("reason", self.reason.clone());
        v
    }

    /// The severity the gateway sends it with.
    pub fn severity(&self) -> Severity {
        if self.first_start {
            Severity::Info
        } else {
            Severity::Critical
        }
    }
}

/// A `spool.quarantined` event: one record set aside, never sent. The event
/// names no epoch: it is the epoch of the message that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    pub device: String,
    pub kind: Kind,
    pub seq: u64,
    pub bytes: u64,
}

impl Quarantined {
    pub fn from_event(event: &Event) -> Result<Self, GatewayError> {
        const C: &str = codes::SPOOL_QUARANTINED;
        check_code(event, C)?;
        let v = &event.values;
        let dev = get(C, v, "record.device")?;
        let device = dev
            .as_str()
            .filter(|d| crate::model::valid_id(d))
            .ok_or_else(|| bad(C, "record.device", dev, "an id"))?;
        let k = get(C, v, "record.kind")?;
        let kind = k
            .as_str()
            .and_then(Kind::from_array_name)
            .ok_or_else(|| bad(C, "record.kind", k, "samples or events"))?;
        let bytes = match v.get("record.bytes") {
            Some(b) => count(C, "record.bytes", b)?,
            None => 0,
        };
        Ok(Quarantined {
            device: device.to_owned(),
            kind,
            seq: count(C, "record.seq", get(C, v, "record.seq")?)?,
            bytes,
        })
    }

    pub fn values(&self) -> Values {
        let mut v = Values::new();
        v.set("record.device", self.device.clone());
        v.set("record.kind", self.kind.array_name());
        v.num("record.seq", self.seq as f64);
        v.num("record.bytes", self.bytes as f64);
        v
    }
}

/// A `spool.corrupt_record` event: `records` readings failed their checks
/// when read back and were dropped (also counted in
/// `spool.dropped.corrupt`). It says how many, not which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRecords {
    pub records: u64,
    pub reason: String,
}

impl CorruptRecords {
    pub fn from_event(event: &Event) -> Result<Self, GatewayError> {
        const C: &str = codes::SPOOL_CORRUPT_RECORD;
        check_code(event, C)?;
        let v = &event.values;
        Ok(CorruptRecords {
            records: count(C, "spool.records", get(C, v, "spool.records")?)?,
            reason: v
                .get("spool.reason")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        })
    }

    pub fn values(&self) -> Values {
        let mut v = Values::new();
        v.num("spool.records", self.records as f64);
        v.set("spool.reason", self.reason.clone());
        v
    }
}

/// A `spool.degraded` event: from its `ts` the card cannot be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Degraded {
    /// `read_only`, `permission_denied`, `disk_full` or `io_error`.
    pub reason: String,
}

impl Degraded {
    pub fn from_event(event: &Event) -> Result<Self, GatewayError> {
        const C: &str = codes::SPOOL_DEGRADED;
        check_code(event, C)?;
        let r = get(C, &event.values, "spool.reason")?;
        let reason = r
            .as_str()
            .ok_or_else(|| bad(C, "spool.reason", r, "a word"))?;
        Ok(Degraded {
            reason: reason.to_owned(),
        })
    }

    pub fn values(&self) -> Values {
        let mut v = Values::new();
        v.set("spool.reason", self.reason.clone());
        v.set("spool.detail", "");
        v
    }
}

/// A `spool.restored` event: the card can be written again; `lost`
/// readings could not be kept meanwhile (`spool.dropped.write_failed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub degraded_for_s: u64,
    pub lost: u64,
}

impl Restored {
    pub fn from_event(event: &Event) -> Result<Self, GatewayError> {
        const C: &str = codes::SPOOL_RESTORED;
        check_code(event, C)?;
        let v = &event.values;
        let degraded_for_s = match v.get("spool.degraded_for") {
            Some(d) => count(C, "spool.degraded_for", d)?,
            None => 0,
        };
        Ok(Restored {
            degraded_for_s,
            lost: count(C, "spool.lost", get(C, v, "spool.lost")?)?,
        })
    }

    pub fn values(&self) -> Values {
        let mut v = Values::new();
        v.num("spool.degraded_for", self.degraded_for_s as f64);
        v.num("spool.lost", self.lost as f64);
        v
    }
}

/// Why the gateway dropped readings (`spool.dropped.<reason>`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// `spool.max_bytes`: the oldest telemetry first.
    Full,
    /// Older than `spool.max_age`.
    Age,
    /// Memory overflowed while the card could not be written.
    WriteFailed,
    /// Damaged when read back (`spool.corrupt_record`).
    Corrupt,
    /// Set aside (`spool.quarantined`, one event per record).
    TooLarge,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::Full,
        DropReason::Age,
        DropReason::WriteFailed,
        DropReason::Corrupt,
        DropReason::TooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Full => "full",
            DropReason::Age => "age",
            DropReason::WriteFailed => "write_failed",
            DropReason::Corrupt => "corrupt",
            DropReason::TooLarge => "too_large",
        }
    }

    /// The telemetry value: `spool.dropped.<reason>`.
    pub fn value_name(self) -> String {
        format!("spool.dropped.{}", self.as_str())
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What the gateway's own telemetry (`{prefix}/{site}/gateway/telemetry`)
/// says about its backlog and losses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayHealth {
    /// `spool.depth`: readings kept on the card, waiting. At 0 every
    /// reading the gateway still holds has been delivered.
    pub depth: u64,
    /// `spool.dropped.<reason>` in [`DropReason::ALL`]'s order: dropped
    /// since the service started (they start again at 0 at every start).
    pub dropped: [u64; 5],
    /// `gateway.uptime`, seconds since the service started.
    pub uptime_s: u64,
    /// `spool.degraded`.
    pub degraded: bool,
}

impl GatewayHealth {
    /// Reads a sample of the gateway's telemetry. `spool.depth` is
    /// required; a missing `spool.dropped.<reason>` or uptime reads as 0.
    pub fn from_sample(sample: &Sample) -> Result<Self, GatewayError> {
        const C: &str = "gateway telemetry";
        let v = &sample.values;
        let opt = |name: &str| match v.get(name) {
            Some(x) => count(C, name, x),
            None => Ok(0),
        };
        let mut dropped = [0; 5];
        for r in DropReason::ALL {
            dropped[r.index()] = opt(&r.value_name())?;
        }
        Ok(GatewayHealth {
            depth: count(C, "spool.depth", get(C, v, "spool.depth")?)?,
            dropped,
            uptime_s: opt("gateway.uptime")?,
            degraded: matches!(v.get("spool.degraded"), Some(Value::Bool(true))),
        })
    }

    /// Dropped for one reason since start.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }

    pub fn set_dropped(&mut self, reason: DropReason, n: u64) {
        self.dropped[reason.index()] = n;
    }

    /// The values the gateway sends (those this reader reads; the gateway
    /// sends more).
    pub fn values(&self) -> Values {
        let mut v = Values::new();
        v.num("spool.depth", self.depth as f64);
        for r in DropReason::ALL {
            v.num(&r.value_name(), self.dropped(r) as f64);
        }
        v.num("spool.dropped", self.dropped.iter().sum::<u64>() as f64);
        v.num("gateway.uptime", self.uptime_s as f64);
        v.set("spool.degraded", self.degraded);
        v
    }
}

#[cfg(test)]
mod tests;
