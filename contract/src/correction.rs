//! The clock correction rule (docs/mqtt.md, "Clock corrections"): a
//! `gateway.clock_corrected` event says by how much the `ts` of records
//! already delivered `unsynced` was off.
//!
//! For every record of the event's site, `record.device`, `record.kind` and
//! `record.epoch` with `record.first_seq` <= seq <= `record.last_seq` and
//! `clock` = `unsynced`: `ts += clock.offset_ms`, and it is now corrected.
//! Records `synced` or `corrected` are left alone.

use crate::codes;
use crate::envelope::{Epoch, Record};
use crate::model::{ClockState, Event, Kind, Value};
use crate::seq::{SeqRange, StreamKey};

/// One `gateway.clock_corrected` event, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockCorrection {
    /// The records it covers: a stream and a range of it.
    pub stream: StreamKey,
    pub range: SeqRange,
    /// How many records the gateway had sent in the range (`record.count`).
    pub count: u64,
    /// What to add to `ts` (positive when the clock was behind).
    pub offset_ms: i64,
}

/// Why an event is not a clock correction the rule can apply. A gateway
/// never sends a broken one: log it and leave the records as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorrectionError {
    /// Another event: not for this rule.
    #[error("event {0:?} is not gateway.clock_corrected")]
    OtherCode(String),
    /// A value the rule needs is absent.
    #[error("gateway.clock_corrected without {0}")]
    Missing(&'static str),
    /// A value the rule needs is of the wrong type or out of range
    /// (`value` as JSON).
    #[error("gateway.clock_corrected: {name} is {value}, not {want}")]
    Bad {
        name: &'static str,
        value: String,
        want: &'static str,
    },
}

impl ClockCorrection {
    /// Reads a `gateway.clock_corrected` event of `site` (the site of the
    /// `{prefix}/{site}/gateway/event` message that carried it).
    pub fn from_event(site: &str, event: &Event) -> Result<Self, CorrectionError> {
        if event.code != codes::CLOCK_CORRECTED {
            return Err(CorrectionError::OtherCode(event.code.clone()));
        }
        let get = |name: &'static str| event.values.get(name).ok_or(CorrectionError::Missing(name));
        let bad = |name: &'static str, value: &Value, want: &'static str| CorrectionError::Bad {
            name,
            value: serde_json::to_string(value).unwrap_or_default(),
            want,
        };
        let word = |name: &'static str| {
            let v = get(name)?;
            v.as_str().ok_or_else(|| bad(name, v, "a string"))
        };
        // Whole numbers in f64's exact range (the gateway sends them as JSON
        // numbers).
        let int = |name: &'static str, min: f64| {
            let v = get(name)?;
            match v.as_f64() {
                Some(n) if n.fract() == 0.0 && n >= min && n.abs() <= 9_007_199_254_740_992.0 => {
                    Ok(n)
                }
                _ => Err(bad(name, v, "a whole number in range")),
            }
        };
        let device = word("record.device")?;
        let kind_word = word("record.kind")?;
        let kind = Kind::from_array_name(kind_word)
            .ok_or_else(|| bad("record.kind", &Value::from(kind_word), "samples or events"))?;
        let epoch_word = word("record.epoch")?;
        let epoch: Epoch = epoch_word.parse().map_err(|_| {
            bad(
                "record.epoch",
                &Value::from(epoch_word),
                "16 lowercase hex digits",
            )
        })?;
        let first = int("record.first_seq", 0.0)? as u64;
        let last = int("record.last_seq", 0.0)? as u64;
        if last < first {
            return Err(bad(
                "record.last_seq",
                &Value::Num(last as f64),
                "at least record.first_seq",
            ));
        }
        Ok(ClockCorrection {
            stream: StreamKey {
                site: site.to_owned(),
                device: device.to_owned(),
                kind,
                epoch,
            },
            range: SeqRange { first, last },
            count: int("record.count", 0.0)? as u64,
            offset_ms: int("clock.offset_ms", -9_007_199_254_740_992.0)? as i64,
        })
    }

    /// Whether the rule applies to this record of `stream`.
    pub fn covers<R: Record>(&self, stream: &StreamKey, record: &R) -> bool {
        *stream == self.stream
            && self.range.contains(record.seq())
            && record.clock() == ClockState::Unsynced
    }

    /// Applies the rule: when it covers the record, `ts += offset_ms` and
    /// the record is `corrected`; says whether it did.
    pub fn apply<R: Record>(&self, stream: &StreamKey, record: &mut R) -> bool {
        if !self.covers(stream, record) {
            return false;
        }
        let ts = record.ts().saturating_add(self.offset_ms);
        record.retime(ts, ClockState::Corrected);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Sample, Severity, Values};

    /// The event as the gateway sends it (docs/mqtt.md, the events table).
    fn event(edit: impl FnOnce(&mut Values)) -> Event {
        let mut v = Values::new();
        v.set("record.device", "ups1");
        v.set("record.kind", "samples");
        v.set("record.epoch", "5f3a9c0e12d4b7a1");
        v.num("record.first_seq", 10.0);
        v.num("record.last_seq", 12.0);
        v.num("record.count", 3.0);
        v.num("clock.offset_ms", 86_400_000.0);
        edit(&mut v);
        Event {
            seq: 4,
            ts: 1_795_832_190_039,
            clock: ClockState::Synced,
            severity: Severity::Info,
            code: codes::CLOCK_CORRECTED.into(),
            message: "clock corrected".into(),
            values: v,
        }
    }

    fn stream(device: &str, kind: Kind, epoch: u64) -> StreamKey {
        StreamKey {
            site: "xa-a".into(),
            device: device.into(),
            kind,
            epoch: Epoch(epoch),
        }
    }

    fn sample(seq: u64, clock: ClockState) -> Sample {
        Sample {
            seq,
            ts: 1_000,
            clock,
            values: Values::new(),
        }
    }

    #[test]
    fn reads_the_event() {
        let c = ClockCorrection::from_event("xa-a", &event(|_| {})).unwrap();
        assert_eq!(
            c,
            ClockCorrection {
                stream: stream("ups1", Kind::Sample, 0x5f3a_9c0e_12d4_b7a1),
                range: SeqRange {
                    first: 10,
                    last: 12
                },
                count: 3,
                offset_ms: 86_400_000,
            }
        );
        let c = ClockCorrection::from_event(
            "xa-a",
            &event(|v| {
                v.num("clock.offset_ms", -250.0);
                v.set("record.kind", "events");
            }),
        )
        .unwrap();
        assert_eq!(c.offset_ms, -250);
        assert_eq!(c.stream.kind, Kind::Event);
    }

    #[test]
    fn broken_events_are_errors() {
        let mut other = event(|_| {});
        other.code = "gateway.sequence_reset".into();
        assert!(matches!(
            ClockCorrection::from_event("xa-a", &other),
            Err(CorrectionError::OtherCode(_))
        ));
        #[allow(clippy::type_complexity)]
        let cases: &[(&dyn Fn(&mut Values), &str)] = &[
            (
                &|v| {
                    v.0.remove("record.device");
                },
                "without record.device",
            ),
            (
                &|v| {
                    v.0.remove("clock.offset_ms");
                },
                "without clock.offset_ms",
            ),
            (
                &|v| v.set("record.kind", "sample"),
                "record.kind is \"sample\"",
            ),
            (
                &|v| v.set("record.epoch", "5F3A9C0E12D4B7A1"),
                "record.epoch",
            ),
            (
                &|v| {
                    v.num("record.first_seq", -1.0);
                },
                "record.first_seq",
            ),
            (
                &|v| {
                    v.num("record.first_seq", 1.5);
                },
                "record.first_seq",
            ),
            (&|v| v.set("record.last_seq", "12"), "record.last_seq"),
            (
                &|v| {
                    v.num("record.last_seq", 9.0);
                },
                "at least record.first_seq",
            ),
            (
                &|v| {
                    v.num("clock.offset_ms", 1e300);
                },
                "clock.offset_ms",
            ),
            (&|v| v.set("record.device", true), "record.device"),
        ];
        for (edit, says) in cases {
            let err = ClockCorrection::from_event("xa-a", &event(edit))
                .expect_err(says)
                .to_string();
            assert!(err.contains(says), "{err} / {says}");
        }
    }

    #[test]
    fn applies_to_unsynced_records_of_its_stream_and_range_only() {
        use ClockState::*;
        let c = ClockCorrection::from_event("xa-a", &event(|_| {})).unwrap();
        let own = stream("ups1", Kind::Sample, 0x5f3a_9c0e_12d4_b7a1);
        // (stream, seq, clock, applies)
        let cases = [
            (own.clone(), 10, Unsynced, true),
            (own.clone(), 12, Unsynced, true),
            (own.clone(), 9, Unsynced, false),
            (own.clone(), 13, Unsynced, false),
            (own.clone(), 11, Synced, false),
            (own.clone(), 11, Corrected, false),
            (
                stream("ups2", Kind::Sample, 0x5f3a_9c0e_12d4_b7a1),
                11,
                Unsynced,
                false,
            ),
            (
                stream("ups1", Kind::Event, 0x5f3a_9c0e_12d4_b7a1),
                11,
                Unsynced,
                false,
            ),
            (stream("ups1", Kind::Sample, 1), 11, Unsynced, false),
            (
                StreamKey {
                    site: "xa-b".into(),
                    ..own.clone()
                },
                11,
                Unsynced,
                false,
            ),
        ];
        for (s, seq, clock, applies) in cases {
            let mut rec = sample(seq, clock);
            assert_eq!(c.apply(&s, &mut rec), applies, "{s:?} {seq} {clock:?}");
            if applies {
                assert_eq!((rec.ts, rec.clock), (1_000 + 86_400_000, Corrected));
            } else {
                assert_eq!((rec.ts, rec.clock), (1_000, clock));
            }
        }
        // Once applied, the record is corrected: applying again changes nothing.
        let mut rec = sample(11, Unsynced);
        assert!(c.apply(&own, &mut rec));
        assert!(!c.apply(&own, &mut rec));
        assert_eq!(rec.ts, 1_000 + 86_400_000);
    }
}
