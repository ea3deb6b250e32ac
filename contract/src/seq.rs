//! Sequence identity and the basic gap rule (docs/mqtt.md, "Ordering,
//! duplicates and gaps"), as pure functions.
//!
//! - A record is identified by `(site, device, kind, epoch, seq)`
//!   ([`RecordKey`]); copies with the same key are duplicates (delivery is
//!   at least once). Copies carry the same content, except that a record
//!   sent `unsynced` may come again `corrected` ([`keep`]: keep the
//!   corrected one). The `historical` flag is how a copy travelled, not
//!   its content.
//! - Numbers count per `(site, device, kind, epoch)` ([`StreamKey`]) from
//!   0; a new epoch is a new stream.
//! - Below the highest number seen of a stream, every number not seen is
//!   missing ([`gaps`]). Missing is not yet lost: backlog records arrive
//!   behind live ones, so a hole may still fill. Only once the gateway's
//!   backlog has arrived (`spool.depth` = 0 in its telemetry) is a hole
//!   readings lost on the gateway, and then the gateway has said why
//!   (`spool.dropped.<reason>`, a `spool.*` event, or an unclean stop whose
//!   `gateway.unclean_stop` event tells unused numbers from lost ones).
//!   Telling those apart over time is the consumer's ledger, not this rule.

use crate::envelope::{Envelope, Epoch, Record};
use crate::model::{ClockState, Kind};

/// One sequence: the records of one device and kind in one epoch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    pub site: String,
    pub device: String,
    pub kind: Kind,
    pub epoch: Epoch,
}

/// One record's identity: copies with the same key are the same record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey {
    pub stream: StreamKey,
    pub seq: u64,
}

impl<R: Record> Envelope<R> {
    /// The stream every record of this message belongs to.
    pub fn stream_key(&self) -> StreamKey {
        StreamKey {
            site: self.site.clone(),
            device: self.device.clone(),
            kind: R::KIND,
            epoch: self.epoch,
        }
    }

    /// Each record's key, in the message's order.
    pub fn record_keys(&self) -> impl Iterator<Item = RecordKey> + '_ {
        let stream = self.stream_key();
        self.records.iter().map(move |d| RecordKey {
            stream: stream.clone(),
            seq: d.record.seq(),
        })
    }
}

/// Sequence numbers `first..=last`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct SeqRange {
    pub first: u64,
    pub last: u64,
}

impl SeqRange {
    /// How many numbers (saturating at `u64::MAX`).
    pub fn len(&self) -> u64 {
        (self.last - self.first).saturating_add(1)
    }

    /// Never: a range holds at least one number.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, seq: u64) -> bool {
        (self.first..=self.last).contains(&seq)
    }
}

/// What the numbers seen of one stream say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gaps {
    /// The highest number seen; `None` when nothing was seen.
    pub highest: Option<u64>,
    /// The numbers from `start` up to `highest` that were not seen, in
    /// ranges, lowest first.
    pub missing: Vec<SeqRange>,
    /// Numbers seen more than once, each once, lowest first.
    pub duplicates: Vec<u64>,
}

impl Gaps {
    /// How many numbers are missing in all.
    pub fn missing_count(&self) -> u64 {
        self.missing
            .iter()
            .fold(0u64, |n, r| n.saturating_add(r.len()))
    }
}

/// The gap rule for one stream: given every number seen (any order,
/// copies included), which numbers between `start` and the highest seen
/// are missing, and which were seen more than once. `start` is 0 for a
/// stream followed from its epoch's beginning; a consumer that began
/// listening later passes the first number it could have seen. Numbers
/// below `start` count as seen (they are never missing) and as copies.
pub fn gaps(start: u64, seen: impl IntoIterator<Item = u64>) -> Gaps {
    let mut seen: Vec<u64> = seen.into_iter().collect();
    seen.sort_unstable();
    let mut out = Gaps::default();
    let mut prev: Option<u64> = None;
    for n in seen {
        if prev == Some(n) {
            if out.duplicates.last() != Some(&n) {
                out.duplicates.push(n);
            }
            continue;
        }
        // The next number expected: after the previous one, never below
        // `start`. After u64::MAX nothing is expected.
        let expected = match prev {
            Some(p) => p.checked_add(1).map(|e| e.max(start)),
            None => Some(start),
        };
        if let Some(e) = expected {
            if n > e {
                out.missing.push(SeqRange {
                    first: e,
                    last: n - 1,
                });
            }
        }
        prev = Some(n);
    }
    out.highest = prev;
    out
}

/// Which of two copies of one record to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The copies are the same: keep either (a redelivery).
    Either,
    /// The first copy is the corrected one of an `unsynced`/`corrected` pair.
    First,
    /// The second copy is the corrected one of an `unsynced`/`corrected` pair.
    Second,
}

/// Two copies of one key that differ beyond the one difference the
/// contract allows: the contract is broken (the gateway promises never to
/// publish one key with two contents); keep the first, count it and report
/// it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("two copies of seq {seq} differ beyond an unsynced -> corrected time")]
pub struct CopyConflict {
    pub seq: u64,
}

/// The duplicate rule for two copies with the same [`RecordKey`]: the same
/// content, except that a record sent `unsynced` may come again with its
/// corrected `ts` and `clock: "corrected"`; the corrected copy is right.
pub fn keep<R: Record>(first: &R, second: &R) -> Result<Keep, CopyConflict> {
    if first == second {
        return Ok(Keep::Either);
    }
    let conflict = CopyConflict { seq: first.seq() };
    if first.seq() != second.seq() {
        return Err(conflict);
    }
    let same_but_time = |unsynced: &R, corrected: &R| {
        let mut u = unsynced.clone();
        u.retime(corrected.ts(), corrected.clock());
        u == *corrected
    };
    match (first.clock(), second.clock()) {
        (ClockState::Unsynced, ClockState::Corrected) if same_but_time(first, second) => {
            Ok(Keep::Second)
        }
        (ClockState::Corrected, ClockState::Unsynced) if same_but_time(second, first) => {
            Ok(Keep::First)
        }
        _ => Err(conflict),
    }
}

/// One copy of a record as a digest: enough to apply the duplicate rule
/// ([`keep`]) without holding the copy, so a consumer can remember many
/// records cheaply. `body` is a 64-bit FNV-1a hash of the record's JSON
/// with its time and clock state left out (`Record::write_body`) (stable across builds and
/// versions, so a store may keep it); `ts` and `clock` are kept as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    pub body: u64,
    pub ts: i64,
    pub clock: ClockState,
}

/// The FNV-1a 64-bit hash, written to by serde_json.
struct Fnv(u64);

impl std::io::Write for Fnv {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for b in buf {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The digest of one copy (see [`Fingerprint`]).
pub fn fingerprint<R: Record>(record: &R) -> Fingerprint {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    // Strings, numbers and maps with string keys: serde_json cannot fail,
    // and the writer never does.
    let _ = record.write_body(&mut h);
    Fingerprint {
        body: h.0,
        ts: record.ts(),
        clock: record.clock(),
    }
}

/// [`keep`] on digests: the same answer for the copies the digests were
/// made from (up to a 64-bit hash collision of their bodies). `seq` is the
/// records' number, for the error.
pub fn keep_fingerprints(
    seq: u64,
    first: &Fingerprint,
    second: &Fingerprint,
) -> Result<Keep, CopyConflict> {
    if first == second {
        return Ok(Keep::Either);
    }
    if first.body != second.body {
        return Err(CopyConflict { seq });
    }
    match (first.clock, second.clock) {
        (ClockState::Unsynced, ClockState::Corrected) => Ok(Keep::Second),
        (ClockState::Corrected, ClockState::Unsynced) => Ok(Keep::First),
        _ => Err(CopyConflict { seq }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, Sample, Severity, Values};

    fn r(first: u64, last: u64) -> SeqRange {
        SeqRange { first, last }
    }

    #[test]
    fn gaps_table() {
        // (start, seen, highest, missing, duplicates)
        #[allow(clippy::type_complexity)]
        let cases: &[(u64, &[u64], Option<u64>, &[SeqRange], &[u64])] = &[
            (0, &[], None, &[], &[]),
            (0, &[0], Some(0), &[], &[]),
            (0, &[0, 1, 2, 3], Some(3), &[], &[]),
            // The epoch starts at 0: a first record at 3 leaves 0..=2 missing.
            (0, &[3], Some(3), &[r(0, 2)], &[]),
            // Joined at 3: nothing before 3 is expected.
            (3, &[3, 4], Some(4), &[], &[]),
            (3, &[5], Some(5), &[r(3, 4)], &[]),
            // Numbers below start are seen, never missing.
            (3, &[0, 6], Some(6), &[r(3, 5)], &[]),
            (10, &[1, 2], Some(2), &[], &[]),
            // Live ahead of backlog: order does not matter.
            (0, &[7, 8, 0, 1, 2], Some(8), &[r(3, 6)], &[]),
            (0, &[0, 2, 4, 9], Some(9), &[r(1, 1), r(3, 3), r(5, 8)], &[]),
            // Copies: reported once each, never as a gap.
            (0, &[0, 1, 1, 1, 2, 2], Some(2), &[], &[1, 2]),
            (0, &[5, 5], Some(5), &[r(0, 4)], &[5]),
            (3, &[1, 1, 4], Some(4), &[r(3, 3)], &[1]),
            // The very top of the range.
            (
                0,
                &[u64::MAX - 2, u64::MAX],
                Some(u64::MAX),
                &[r(0, u64::MAX - 3), r(u64::MAX - 1, u64::MAX - 1)],
                &[],
            ),
            (
                u64::MAX,
                &[u64::MAX, u64::MAX],
                Some(u64::MAX),
                &[],
                &[u64::MAX],
            ),
        ];
        for (start, seen, highest, missing, dups) in cases {
            let g = gaps(*start, seen.iter().copied());
            assert_eq!(g.highest, *highest, "start {start} seen {seen:?}");
            assert_eq!(g.missing, *missing, "start {start} seen {seen:?}");
            assert_eq!(g.duplicates, *dups, "start {start} seen {seen:?}");
        }
        assert_eq!(gaps(0, [0, 2, 4, 9]).missing_count(), 6);
        assert_eq!(gaps(0, [u64::MAX]).missing_count(), u64::MAX);
    }

    #[test]
    fn record_keys_name_the_stream() {
        let env: crate::Telemetry = Envelope {
            site: "xa-a".into(),
            device: "ups1".into(),
            epoch: Epoch(0xab),
            records: [4, 5]
                .into_iter()
                .map(|seq| crate::Delivered {
                    historical: true,
                    record: sample(seq, ClockState::Synced, 1),
                })
                .collect(),
        };
        let keys: Vec<RecordKey> = env.record_keys().collect();
        let stream = StreamKey {
            site: "xa-a".into(),
            device: "ups1".into(),
            kind: Kind::Sample,
            epoch: Epoch(0xab),
        };
        assert_eq!(
            keys,
            vec![
                RecordKey {
                    stream: stream.clone(),
                    seq: 4
                },
                RecordKey { stream, seq: 5 }
            ]
        );
        // The same numbers in another kind or epoch are other records.
        let mut other = keys[0].clone();
        other.stream.kind = Kind::Event;
        assert_ne!(other, keys[0]);
        let mut other = keys[0].clone();
        other.stream.epoch = Epoch(0xac);
        assert_ne!(other, keys[0]);
    }

    fn sample(seq: u64, clock: ClockState, ts: i64) -> Sample {
        let mut values = Values::new();
        values.num("ups.load", 22.6);
        Sample {
            seq,
            ts,
            clock,
            values,
        }
    }

    #[test]
    fn copies_table() {
        use ClockState::*;
        let cases: &[(Sample, Sample, Result<Keep, CopyConflict>)] = &[
            (sample(1, Synced, 5), sample(1, Synced, 5), Ok(Keep::Either)),
            (
                sample(1, Unsynced, 5),
                sample(1, Unsynced, 5),
                Ok(Keep::Either),
            ),
            (
                sample(1, Unsynced, 5),
                sample(1, Corrected, 9),
                Ok(Keep::Second),
            ),
            (
                sample(1, Corrected, 9),
                sample(1, Unsynced, 5),
                Ok(Keep::First),
            ),
            // Other content, or time changed without the correction: broken.
            (
                sample(1, Synced, 5),
                sample(1, Synced, 6),
                Err(CopyConflict { seq: 1 }),
            ),
            (
                sample(1, Synced, 5),
                sample(1, Corrected, 6),
                Err(CopyConflict { seq: 1 }),
            ),
            (
                sample(1, Unsynced, 5),
                sample(1, Synced, 9),
                Err(CopyConflict { seq: 1 }),
            ),
            (
                sample(1, Corrected, 5),
                sample(1, Corrected, 6),
                Err(CopyConflict { seq: 1 }),
            ),
            (
                sample(1, Synced, 5),
                sample(2, Synced, 5),
                Err(CopyConflict { seq: 1 }),
            ),
        ];
        for (a, b, want) in cases {
            assert_eq!(keep(a, b), *want, "{a:?} / {b:?}");
        }
        let mut changed = sample(1, Corrected, 9);
        changed.values.num("ups.load", 30.0);
        assert_eq!(
            keep(&sample(1, Unsynced, 5), &changed),
            Err(CopyConflict { seq: 1 })
        );
        let event = |clock, ts, message: &str| Event {
            seq: 3,
            ts,
            clock,
            severity: Severity::Critical,
            code: "ups.on_battery".into(),
            message: message.into(),
            values: Values::new(),
        };
        assert_eq!(
            keep(&event(Unsynced, 5, "a"), &event(Corrected, 7, "a")),
            Ok(Keep::Second)
        );
        assert_eq!(
            keep(&event(Unsynced, 5, "a"), &event(Corrected, 7, "b")),
            Err(CopyConflict { seq: 3 })
        );
    }

    #[test]
    fn fingerprints_keep_what_keep_keeps() {
        use ClockState::*;
        let mut other_values = sample(1, Synced, 5);
        other_values.values.num("ups.load", 30.0);
        let copies = [
            sample(1, Synced, 5),
            sample(1, Synced, 6),
            sample(1, Unsynced, 5),
            sample(1, Corrected, 9),
            sample(1, Corrected, 5),
            sample(2, Synced, 5),
            other_values,
        ];
        for a in &copies {
            for b in &copies {
                let want = keep(a, b).map_err(|_| CopyConflict { seq: a.seq });
                let got = keep_fingerprints(a.seq, &fingerprint(a), &fingerprint(b));
                assert_eq!(got, want, "{a:?} / {b:?}");
            }
        }
        // Events: the same rule, over severity, code, message and values.
        let event = |clock, ts, message: &str| Event {
            seq: 3,
            ts,
            clock,
            severity: Severity::Critical,
            code: "ups.on_battery".into(),
            message: message.into(),
            values: Values::new(),
        };
        let events = [
            event(Unsynced, 5, "a"),
            event(Corrected, 7, "a"),
            event(Corrected, 7, "b"),
            event(Synced, 5, "a"),
        ];
        for a in &events {
            for b in &events {
                let want = keep(a, b).map_err(|_| CopyConflict { seq: 3 });
                assert_eq!(keep_fingerprints(3, &fingerprint(a), &fingerprint(b)), want);
            }
        }
        // Stable: a store may keep it across versions.
        // FNV-1a 64 of [1,{"ups.load":22.6}] (seq and values).
        assert_eq!(
            fingerprint(&sample(1, Synced, 5)).body,
            0xff7e_593a_590c_0730
        );
    }
}
