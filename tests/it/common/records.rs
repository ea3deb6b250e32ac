//! What a test concludes from the records it received: seqs without
//! holes, copies folded (and checked identical), distinct events, how late
//! a device read, the records' clock field.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{devices, skip, this_test, Subscriber};

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
