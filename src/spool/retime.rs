//! Correcting the time of readings taken before the clock synchronised.
//! Every record keeps the boot it was taken in and the monotonic
//! `CLOCK_BOOTTIME` beside `ts` ([`crate::clock`]). When the
//! clock is seen synchronised, the *base* of this boot is known: the true
//! wall time at boottime 0, `wall_now - boottime_now`; a record of this
//! boot taken at `boottime` really happened at `boottime + base`.
//!
//! - Records of this boot still in the spool are corrected before they are
//!   sent: memory queues of every lane (by the queue, `queue/time.rs`,
//!   under its lock, at the moment the sync is seen, so a reading stamped
//!   meanwhile cannot slip between), batches read ahead from disk, and the
//!   rows on disk (by the commit round, in passes:
//!   [`super::db::Db::correct_boot`]; a row read before its pass reached
//!   it is corrected as it is read). The body is pre-encoded JSON: only
//!   its leading `"ts":…,"clock":"unsynced"` is rewritten ([`retime`]); a
//!   body that does not start that way is counted and left as it is.
//! - Records of this boot a sink acknowledged while the clock was
//!   unsynchronised (or that were in flight when it synced, so may have
//!   been delivered) cannot be changed any more: they are remembered per
//!   stream as seq ranges with their clock distance, and reported as
//!   [`Notice::ClockCorrected`] (the `gateway.clock_corrected` event) with
//!   the offset to add, so the operations centre fixes its copies.
//! - A record of another boot (rows kept from before a reboot) never gets
//!   this boot's base: its boottime counts from another start.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::report::Notice;
use crate::clock::{Clock, Now};
use crate::model::Kind;

/// Readings whose clock distances (`ts - boottime`) differ by at most this
/// belong to one stretch, with one offset: reading the wall and monotonic
/// clocks one after the other may differ by a millisecond; a larger
/// difference means the wall clock was stepped while unsynchronised.
const SAME_OFFSET_MS: i64 = 50;

/// Stretches kept per stream; past this, a new one joins the nearest.
const MAX_STRETCHES: usize = 16;

/// Records of one stream delivered while unsynchronised, whose wall clock
/// stood `k` ms from the boottime (`ts - boottime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stretch {
    k: i64,
    first: u64,
    last: u64,
    count: u64,
}

/// The spool's side of time, in the queue (under its lock).
pub(super) struct TimeState {
    /// This run's kernel boot id (empty: unknown; memory records are still
    /// corrected, rows on disk never).
    pub(super) boot: Arc<str>,
    /// The true wall time at boottime 0 of this boot, set when the clock is
    /// seen synchronised; None while it is not.
    pub(super) base: Option<i64>,
    /// Bumped whenever `base` is set anew.
    pub(super) gen: u64,
    /// Rows on disk may still hold uncorrected records of this boot.
    pub(super) disk_pending: bool,
    /// Unsynchronised records of this boot delivered (or possibly
    /// delivered), not yet reported, per (device, kind, epoch).
    delivered: BTreeMap<(Arc<str>, Kind, u64), Vec<Stretch>>,
}

impl TimeState {
    pub(super) fn new(boot: Arc<str>) -> TimeState {
        TimeState {
            boot,
            base: None,
            gen: 0,
            disk_pending: false,
            delivered: BTreeMap::new(),
        }
    }

    /// Notes a record delivered (or possibly delivered) with its
    /// unsynchronised time, `k = ts - boottime`.
    pub(super) fn note_delivered(
        &mut self,
        device: &Arc<str>,
        kind: Kind,
        epoch: u64,
        seq: u64,
        k: i64,
    ) {
        let v = self
            .delivered
            .entry((device.clone(), kind, epoch))
            .or_default();
        let near = v
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| (s.k - k).abs())
            .map(|(i, s)| (i, (s.k - k).abs()));
        match near {
            Some((i, d)) if d <= SAME_OFFSET_MS || v.len() >= MAX_STRETCHES => {
                let s = &mut v[i];
                s.first = s.first.min(seq);
                s.last = s.last.max(seq);
                s.count += 1;
            }
            _ => v.push(Stretch {
                k,
                first: seq,
                last: seq,
                count: 1,
            }),
        }
    }

    /// With the base known, what was delivered unsynchronised becomes
    /// notices (offset = base - k). A stretch whose offset is within
    /// [`SAME_OFFSET_MS`] of zero (taken after the kernel had synced, before
    /// the spool saw it) needs nothing and is dropped.
    pub(super) fn take_corrections(&mut self) -> Vec<Notice> {
        let Some(base) = self.base else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for ((device, kind, epoch), stretches) in std::mem::take(&mut self.delivered) {
            for s in stretches {
                let offset_ms = base - s.k;
                if offset_ms.abs() <= SAME_OFFSET_MS {
                    continue;
                }
                out.push(Notice::ClockCorrected {
                    device: device.to_string(),
                    kind,
                    epoch,
                    first_seq: s.first,
                    last_seq: s.last,
                    records: s.count,
                    offset_ms,
                });
            }
        }
        out
    }
}

/// The true wall time of a reading taken at `boottime` in a boot whose
/// base is `base` (never before 1970: the contract's `ts` is not negative).
pub(super) fn true_ts(boottime: i64, base: i64) -> i64 {
    boottime.saturating_add(base).max(0)
}

/// The leading `seq`, `ts` and clock word of a body this spool encoded
/// (`{"seq":N,"ts":T,"clock":"…"`), and the rest after the clock word.
fn head(body: &str) -> Option<(&str, i64, &str, &str)> {
    let rest = body.strip_prefix("{\"seq\":")?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    if end == 0 {
        return None;
    }
    let (seq, rest) = rest.split_at(end);
    let rest = rest.strip_prefix(",\"ts\":")?;
    let neg = rest.starts_with('-');
    let digits = if neg { &rest[1..] } else { rest };
    let end = digits.find(|c: char| !c.is_ascii_digit())?;
    if end == 0 {
        return None;
    }
    let ts: i64 = digits[..end].parse().ok()?;
    let ts = if neg { -ts } else { ts };
    let rest = digits[end..].strip_prefix(",\"clock\":\"")?;
    let q = rest.find('"')?;
    Some((seq, ts, &rest[..q], &rest[q + 1..]))
}

/// The `ts` of a body this spool encoded while the clock was
/// unsynchronised; None for any other body.
pub(super) fn unsynced_ts(body: &str) -> Option<i64> {
    head(body).and_then(|(_, ts, clock, _)| (clock == "unsynced").then_some(ts))
}

/// Rewrites the leading `ts` of an unsynchronised body to `ts` and its
/// `clock` to `corrected`, leaving every other byte as it was; None if the
/// body does not start as the spool writes an unsynchronised record.
pub(super) fn retime(body: &str, ts: i64) -> Option<String> {
    let (seq, _, clock, rest) = head(body)?;
    if clock != "unsynced" {
        return None;
    }
    Some(format!(
        "{{\"seq\":{seq},\"ts\":{ts},\"clock\":\"corrected\"{rest}"
    ))
}

/// The spool's clock ([`crate::clock::Clock`]: the kernel's, or a test's).
pub(super) struct ClockCache {
    clock: Arc<dyn Clock>,
}

impl ClockCache {
    pub(super) fn new(clock: Arc<dyn Clock>) -> ClockCache {
        ClockCache { clock }
    }

    pub(super) fn now(&self) -> Now {
        crate::clock::now(&*self.clock)
    }

    pub(super) fn boot_id(&self) -> Arc<str> {
        self.clock.boot_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retime_rewrites_only_the_leading_time_and_clock() {
        let b = r#"{"seq":7,"ts":1000,"clock":"unsynced","values":{"ts":1,"clock":"unsynced"}}"#;
        assert_eq!(
            retime(b, 259_201_000).as_deref(),
            Some(
                r#"{"seq":7,"ts":259201000,"clock":"corrected","values":{"ts":1,"clock":"unsynced"}}"#
            )
        );
        let e = r#"{"seq":0,"ts":-5,"clock":"unsynced","severity":"info","code":"a","message":"m","values":{}}"#;
        assert_eq!(
            retime(e, 3).as_deref(),
            Some(
                r#"{"seq":0,"ts":3,"clock":"corrected","severity":"info","code":"a","message":"m","values":{}}"#
            )
        );
        assert_eq!(unsynced_ts(b), Some(1000));
        for bad in [
            r#"{"seq":7,"ts":1000,"clock":"synced","values":{}}"#,
            r#"{"seq":7,"ts":1000,"clock":"corrected","values":{}}"#,
            r#"{"ts":1000,"seq":7,"clock":"unsynced"}"#,
            r#"{"seq":,"ts":1,"clock":"unsynced"}"#,
            r#"{"seq":1,"ts":,"clock":"unsynced"}"#,
            r#"{"seq":1,"ts":99999999999999999999999,"clock":"unsynced"}"#,
            r#"{"seq":1,"ts":1,"clock":"unsynced"#,
            "",
            "{",
        ] {
            assert_eq!(retime(bad, 1), None, "{bad}");
        }
    }

    #[test]
    fn stretches_split_where_the_wall_clock_was_stepped() {
        let mut t = TimeState::new(Arc::from("b"));
        let d: Arc<str> = Arc::from("d");
        for seq in [3, 1, 2] {
            t.note_delivered(&d, Kind::Sample, 9, seq, 1000 + (seq == 1) as i64);
        }
        t.note_delivered(&d, Kind::Sample, 9, 4, 61_000);
        assert!(t.take_corrections().is_empty(), "nothing before the base");
        t.base = Some(1000 + 86_400_000);
        let n = t.take_corrections();
        assert_eq!(
            n,
            vec![
                Notice::ClockCorrected {
                    device: "d".into(),
                    kind: Kind::Sample,
                    epoch: 9,
                    first_seq: 1,
                    last_seq: 3,
                    records: 3,
                    offset_ms: 86_400_000,
                },
                Notice::ClockCorrected {
                    device: "d".into(),
                    kind: Kind::Sample,
                    epoch: 9,
                    first_seq: 4,
                    last_seq: 4,
                    records: 1,
                    offset_ms: 86_400_000 - 60_000,
                },
            ]
        );
        assert!(t.delivered.is_empty());
    }
}
