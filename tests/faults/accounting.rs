//! # Accounting (the same rule for every scenario)
//!
//! A subscriber with a persistent session (clean_session = false, QoS 1)
//! records every message on `{prefix}/#`. Every message must parse as JSON
//! and follow its JSON Schema in docs/schema/ (by topic: telemetry, event,
//! status, inventory, command reply); one that does not is a FAIL on its
//! own. Each telemetry and event record is keyed by
//! `(device, kind, epoch, seq)`; `epoch` is the envelope's `"epoch"` field,
//! `""` when absent (binaries without sequence epochs).
//!
//! A message the broker itself delivers to the subscriber a second time
//! (it restarted before the subscriber's PUBACK reached it: same packet id,
//! DUP set, same bytes) is the broker's copy, not the gateway's: it is not
//! kept, and counted apart in a note ("broker redeliveries to the
//! recorder").
//!
//! - **delivered**: distinct keys received.
//! - **duplicates**: copies of a key beyond the first. A copy whose content
//!   (the record without its `historical` flag) differs from the first is
//!   **seq reused** and a FAIL on its own.
//! - **checked numbers**: for each `(device, kind, epoch)`, every number
//!   from 0 to the highest one received *or declared used*: a
//!   `gateway.unclean_stop`'s `seq_last_used` counts, so the newest
//!   readings of a stream (its tail) are checked, not only the gaps between
//!   numbers received. Every scenario ends with a closing run that reads
//!   the devices (its first numbers close the tails of the runs before
//!   it) and is killed, so that the final run's `gateway.unclean_stop`
//!   declares the closing run's own tail ([`crate::rig::Rig::drain`]).
//! - **declared unused**: for `seq_resumed.<dev>.<kind> = R` with
//!   `seq_last_used.<dev>.<kind> = L` the numbers `L+1 .. R-1` were never
//!   used; when the event has no `seq_last_used` (binaries that do not
//!   report it) every number below `R` counts as unused.
//! - **which epoch an unclean stop speaks of**: its envelope's, except
//!   when the run that raised it could not write its positions at start
//!   and counts in an epoch of its own: a `gateway.sequence_reset` raised
//!   in the same run (by the harness's starts) announces the envelope's
//!   epoch with a `previous_epoch`, and the numbers declared are that
//!   previous epoch's (the one the positions file names, which the next
//!   run with a writable card resumes).
//! - **destroyed** (not counted at all): numbers the harness itself
//!   destroyed with a spool file it overwrote; that loss is the fault.
//! - **lost in a crash** (printed under the table, not in "lost
//!   (undeclared)"): a missing number of a run that was killed (from that
//!   run's resume point, the previous stop's `R`, else 0, up to its `L`)
//!   whose reading can only have been taken in a run the harness killed
//!   (after that run's start), within the loss bound before the kill -9: 3 s (spill_after + commit_interval) under
//!   spill, 1 s (commit_interval) under wal, plus 1 s of slack for a loaded
//!   machine. When the reading was taken is bounded from below by the
//!   received reading just before it in the same stream: `ts` of the
//!   highest received number `n0` below it, plus one stream period per
//!   used number between (the harness knows its load's periods:
//!   [`period_ms`]) less one per stop the harness made in between (a run
//!   may start right after the last one stopped), less 50 ms; with none
//!   received below, the first start of the scenario; and never earlier
//!   than the `ts` of the `gateway.unclean_stop` of the run that resumed
//!   at or below the number (raised before any source starts). A number missing at or below `L` whose reading
//!   was taken earlier (it must have been on the card) is undeclared loss.
//!   Only the kill -9 scenarios, `disk_full`'s one kill and every
//!   scenario's closing kill can excuse anything.
//! - **lost at a stop with the card unwritable** (`disk_full` only, in a
//!   note): the README's table promises that a full card loses only the
//!   readings that overflow memory (counted `write_failed`) or that were
//!   only in memory at a stop; the gateway declares the latter with
//!   `spool.degraded` (which must have arrived) and, as such a stop cannot
//!   be recorded as clean, the next unclean stop's `L`. So a missing
//!   number of a stopped run (in its crash range, up to `L`) is excused
//!   only when its reading can only have been in memory at that stop: by
//!   the same lower bound on its time as for a kill, taken within a span
//!   the harness declares ([`Known::degraded`]) that ends at that stop and
//!   begins when the card was made unwritable less the loss bound under
//!   spill (younger readings were not due on the card yet), or at the
//!   start of a run that began with the card full. A missing number taken
//!   earlier had to be on the card: undeclared loss, unless a
//!   `write_failed` drop counts it.
//! - **declared drops**, tied to what they declare, each reason on its own:
//!   `spool.quarantined` excuses the one record it names
//!   (`record.device`, `record.kind`, `record.seq`); `corrupt`
//!   (`spool.corrupt_record`, `spool.dropped.corrupt`) excuses only a row
//!   the harness damaged, one declaration per row (so `damaged_row`'s row
//!   is excused once, by the gateway's word, and an unexpected corrupt
//!   declaration excuses nothing); `write_failed` (the larger of the
//!   telemetry counter's growth and `spool.restored`'s `spool.lost`),
//!   `full` and `age` name no record and excuse that many of the remaining
//!   missing numbers. A counter's growth is summed over its series per
//!   epoch in `seq` order (a counter that goes down restarted and counts
//!   from 0). Declared drops that excused nothing are noted.
//! - **overstated** (in a note): a number at or below an `L` whose lower
//!   bound on its time is after the scenario's last stop cannot have been
//!   taken at all: the number was never used and `seq_last_used` said too
//!   much; not a loss.
//! - **missing**: checked numbers neither received, unused, destroyed nor
//!   lost in a crash; **lost (undeclared)**: missing less declared drops.
//!   **readings**: delivered + missing + lost in a crash.
//! - **verdict**: PASS when no seq is reused, every payload is JSON and
//!   follows its schema, nothing is lost undeclared (in every scenario) and
//!   the scenario's own expectation holds (printed under the table when it
//!   does not); else FAIL. SKIP when the machine cannot inject the fault
//!   (not root, no loop device): the scenario is also written to
//!   `target/skipped.txt` (`faults: <scenario>: <why>`), which CI's closing
//!   line prints; as root, where every fault must be injectable (CI runs as
//!   root), it is a FAIL instead, so a green run as root ran everything.
//!
//! Every scenario ends the same way ([`crate::rig::Rig::drain`]): the broker up, a
//! gateway still running stopped cleanly (SIGTERM, exit code 0 expected),
//! the closing run with the devices until the backlog is sent and every
//! device stream has new numbers, kill -9, the final run with no devices
//! (so nothing new is read) until its telemetry says the spool is empty, a
//! clean stop, then the harness waits for that stop's offline status, the
//! last message the gateway publishes (so everything it sent before has
//! arrived), and counts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use serde_json::Value;

use crate::recorder::{Rec, Schemas};

pub type Stream = (String, &'static str, String);
/// (device, kind, epoch, seq): one record.
pub type RecordKey = (String, &'static str, String, u64);

#[derive(Default)]
pub struct Account {
    pub readings: u64,
    pub delivered: u64,
    pub duplicates: u64,
    /// The most copies any one record arrived in, and one such record.
    pub max_copies: u64,
    pub max_copies_example: String,
    /// When each copy of that record arrived, and whether it was marked
    /// historical.
    pub max_copies_at: Vec<(Instant, bool)>,
    pub reused: u64,
    pub reused_examples: Vec<String>,
    pub invalid_json: u64,
    pub invalid_examples: Vec<String>,
    /// Messages that break their JSON Schema (docs/schema/).
    pub schema_invalid: u64,
    pub schema_examples: Vec<String>,
    /// Missing numbers not lost in a crash (nor destroyed by the harness):
    /// the declared drops are counted among them.
    pub missing: u64,
    pub missing_examples: Vec<String>,
    /// Missing numbers lost in a kill -9: at or below that stream's
    /// `seq_last_used` and taken within the loss bound before a kill.
    pub crash: u64,
    /// The same per stream ("ups1 samples epoch …: N"), largest first.
    pub crash_by_stream: Vec<String>,
    /// Missing numbers at or below a `seq_last_used` not shown to have been
    /// taken in a killed run within the loss bound (among `missing`).
    pub too_old_for_crash: u64,
    /// Missing numbers at or below a `seq_last_used` that can only have
    /// been in memory at a stop with the card unwritable (within a span of
    /// `Known::degraded`; declared by `spool.degraded` and the unclean
    /// stop).
    pub degraded_stop: u64,
    /// Numbers at or below a `seq_last_used` that, by the lower bound on
    /// their time, cannot have been taken before the scenario's last
    /// stop: never used, so `seq_last_used` said too much (noted).
    pub overstated: u64,
    /// Missing numbers excused by a drop the gateway declared, and how
    /// many of each reason ("too_large 1, corrupt 1").
    pub declared_drops: u64,
    pub declared_by_reason: BTreeMap<&'static str, u64>,
    /// Declared drops that excused nothing (more declared than missing).
    pub declared_unused: BTreeMap<&'static str, u64>,
    pub undeclared: u64,
}

/// Numbers the harness destroyed itself, per (device, kind) (any epoch).
pub type Destroyed = BTreeSet<(String, &'static str, u64)>;

/// What the harness knows besides the messages.
#[derive(Default, Clone)]
pub struct Known {
    /// Rows it destroyed with a file it overwrote: not the gateway's loss,
    /// and no declaration of each is expected.
    pub destroyed: Destroyed,
    /// Rows it damaged on disk: the gateway must declare each one
    /// (`spool.corrupt_record`, reason corrupt); each declaration excuses
    /// one damaged row, and only a damaged row.
    pub damaged: Destroyed,
    /// Each kill -9 of a running gateway: (wall ms, the policy's loss bound
    /// in ms, slack included, wall ms of the killed run's start).
    pub kills: Vec<(i64, i64, i64)>,
    /// Wall ms of the scenario's first gateway start.
    pub first_start_ms: i64,
    /// Wall ms of every gateway start (which run raised an event).
    pub starts: Vec<i64>,
    /// Wall ms of every stop of a running gateway (kill -9 or SIGTERM).
    pub stops: Vec<i64>,
    /// Spans (wall ms) in which a reading, by the lower bound on its time,
    /// can only have been in memory at the stop that ends the span, the
    /// card being unwritable (`disk_full`: from the fill less the loss
    /// bound to the SIGTERM with the card full; the restart with the card
    /// full, start to kill): the loss a degraded store declares
    /// (`spool.degraded`, then `gateway.unclean_stop` with `seq_last_used`,
    /// as the stop could not be recorded as clean).
    pub degraded: Vec<(i64, i64)>,
    /// Whether any run had the heavy load (ups1 ten samples a tick).
    pub heavy: bool,
}

/// The loss bound after a kill -9 (README, "What a power cut can lose"):
/// spill_after + commit_interval = 3 s under spill, one commit_interval
/// (1 s) under wal, each plus 1 s for a loaded 2-core machine (a commit's
/// fsync, a late timer).
pub const CRASH_WINDOW_SPILL_MS: i64 = 3000 + 1000;
pub const CRASH_WINDOW_WAL_MS: i64 = 1000 + 1000;

/// The shortest time between two consecutive numbers of a stream of the
/// harness's load, in ms (0: no lower bound, e.g. the gateway's events).
/// The sim reads on a tokio interval that skips missed ticks, the
/// gateway's telemetry on one that delays them: neither bunches up, so
/// `k` numbers after one taken at `t` were taken no earlier than
/// `t + k × period − 50 ms` (the slack covers a tick realigned after a
/// late one).
pub fn period_ms(device: &str, kind: &str, heavy: bool) -> i64 {
    match (device, kind) {
        ("ups1", "samples") if heavy => 2,
        ("ups1", "samples") => 20,
        ("ups1", "events") if heavy => 100,
        ("ups1", "events") => 1000,
        ("env1", "samples") => 50,
        ("env1", "events") => 1000,
        ("gateway", "samples") => 1000,
        _ => 0,
    }
}

pub fn kind_of(topic: &str) -> Option<(&'static str, &'static str)> {
    if topic.ends_with("/telemetry") {
        Some(("samples", "samples"))
    } else if topic.ends_with("/event") {
        Some(("events", "events"))
    } else {
        None
    }
}

pub fn num(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// The drop reasons the gateway reports (`spool.dropped.<reason>`).
pub const REASONS: [&str; 5] = ["full", "age", "write_failed", "corrupt", "too_large"];

pub fn account(recs: &[Rec], known: &Known) -> Account {
    let mut a = Account::default();
    let schemas = Schemas::get();
    let mut seen: HashMap<RecordKey, String> = HashMap::new();
    let mut copies: HashMap<RecordKey, Vec<(Instant, bool)>> = HashMap::new();
    // stream -> seq -> the reading's ts
    let mut streams: BTreeMap<Stream, BTreeMap<u64, Option<i64>>> = BTreeMap::new();
    // stream -> (seq_resumed, seq_last_used) of each unclean stop
    let mut declared: BTreeMap<Stream, Vec<(u64, Option<u64>)>> = BTreeMap::new();
    // stream -> (seq_resumed, the unclean_stop event's ts): every number
    // from R on was taken after that event (it is raised before any
    // source starts).
    let mut resumed_at: BTreeMap<Stream, Vec<(u64, i64)>> = BTreeMap::new();
    // reason -> epoch -> gateway telemetry seq -> counter
    let mut drop_counter: BTreeMap<&'static str, BTreeMap<String, BTreeMap<u64, f64>>> =
        BTreeMap::new();
    // Each unclean_stop: (its envelope's epoch, its ts, its values), and
    // each sequence_reset: (the epoch it announces, previous_epoch, ts).
    let mut unclean: Vec<(String, Option<i64>, Value)> = Vec::new();
    let mut resets: Vec<(String, Option<String>, Option<i64>)> = Vec::new();
    let mut corrupt_events = 0f64;
    let mut degraded_seen = false;
    let mut restored_lost = 0f64;
    // (device, kind, seq) set aside as too large, as the event names it.
    let mut quarantined: BTreeSet<(String, &'static str, u64)> = BTreeSet::new();
    for r in recs {
        let body: Value = match serde_json::from_slice(&r.payload) {
            Ok(v) => v,
            Err(e) => {
                a.invalid_json += 1;
                if a.invalid_examples.len() < 3 {
                    let text = String::from_utf8_lossy(&r.payload);
                    let short: String = text.chars().take(120).collect();
                    a.invalid_examples
                        .push(format!("{}: {e}: {short}…", r.topic));
                }
                continue;
            }
        };
        if let Some(why) = schemas.check(&r.topic, &body) {
            a.schema_invalid += 1;
            if a.schema_examples.len() < 3 {
                a.schema_examples.push(why);
            }
        }
        let Some((kind, array)) = kind_of(&r.topic) else {
            continue;
        };
        let device = body["device"].as_str().unwrap_or("?").to_owned();
        let epoch = body["epoch"].as_str().unwrap_or("").to_owned();
        let Some(items) = body[array].as_array() else {
            continue;
        };
        for item in items {
            let Some(seq) = item["seq"].as_u64() else {
                continue;
            };
            let mut plain = item.clone();
            if let Some(o) = plain.as_object_mut() {
                o.remove("historical");
            }
            let content = plain.to_string();
            let key = (device.clone(), kind, epoch.clone(), seq);
            let times = copies.entry(key.clone()).or_default();
            times.push((r.at, item["historical"].as_bool().unwrap_or(false)));
            if times.len() as u64 > a.max_copies {
                a.max_copies = times.len() as u64;
                a.max_copies_example = format!("{device} {kind} epoch {epoch:?} seq {seq}");
                a.max_copies_at = times.clone();
            }
            match seen.get(&key) {
                Some(prev) => {
                    a.duplicates += 1;
                    if *prev != content {
                        a.reused += 1;
                        if a.reused_examples.len() < 3 {
                            let cut = |t: &str| t.chars().take(90).collect::<String>();
                            a.reused_examples.push(format!(
                                "{device} {kind} epoch {epoch:?} seq {seq}: {}… vs {}…",
                                cut(prev),
                                cut(&content)
                            ));
                        }
                    }
                    continue;
                }
                None => {
                    seen.insert(key, content);
                }
            }
            streams
                .entry((device.clone(), kind, epoch.clone()))
                .or_default()
                .insert(seq, item["ts"].as_i64());
            if device == "gateway" && kind == "samples" {
                let vals = &item["values"];
                for reason in REASONS {
                    if let Some(t) = num(&vals[format!("spool.dropped.{reason}")]) {
                        drop_counter
                            .entry(reason)
                            .or_default()
                            .entry(epoch.clone())
                            .or_default()
                            .insert(seq, t);
                    }
                }
            }
            if device == "gateway" && kind == "events" {
                let vals = &item["values"];
                match item["code"].as_str().unwrap_or("") {
                    "gateway.unclean_stop" => {
                        unclean.push((epoch.clone(), item["ts"].as_i64(), vals.clone()))
                    }
                    "gateway.sequence_reset" => resets.push((
                        vals["epoch"].as_str().unwrap_or("").to_owned(),
                        vals["previous_epoch"].as_str().map(str::to_owned),
                        item["ts"].as_i64(),
                    )),
                    "spool.corrupt_record" => {
                        corrupt_events += num(&vals["spool.records"]).unwrap_or(1.0)
                    }
                    "spool.quarantined" => {
                        let dev = vals["record.device"].as_str().unwrap_or("?").to_owned();
                        let k = if vals["record.kind"] == "events" {
                            "events"
                        } else {
                            "samples"
                        };
                        if let Some(s) = num(&vals["record.seq"]) {
                            quarantined.insert((dev, k, s as u64));
                        }
                    }
                    "spool.restored" => restored_lost += num(&vals["spool.lost"]).unwrap_or(0.0),
                    "spool.degraded" => degraded_seen = true,
                    _ => {}
                }
            }
        }
    }
    a.delivered = seen.len() as u64;

    // What each unclean stop declares, by the epoch it speaks of: its own
    // envelope's, except when the run that raised it could not keep its
    // positions and counts in an epoch of its own, announced by a
    // sequence_reset raised in the same run (by the starts the harness
    // made): the numbers are then the previous epoch's, the one the
    // positions file names.
    let run_of = |t: Option<i64>| t.map(|t| known.starts.iter().filter(|&&s| s <= t).count());
    for (env_epoch, ts, vals) in &unclean {
        let epoch = resets
            .iter()
            .find(|(e, prev, rts)| e == env_epoch && prev.is_some() && run_of(*rts) == run_of(*ts))
            .and_then(|(_, prev, _)| prev.clone())
            .unwrap_or_else(|| env_epoch.clone());
        let Some(o) = vals.as_object() else { continue };
        for (k, v) in o {
            let Some(rest) = k.strip_prefix("seq_resumed.") else {
                continue;
            };
            let Some((dev, kname)) = rest.rsplit_once('.') else {
                continue;
            };
            let kind: &'static str = match kname {
                "samples" => "samples",
                "events" => "events",
                _ => continue,
            };
            let Some(resumed) = num(v) else { continue };
            let last = num(&vals[format!("seq_last_used.{rest}")]);
            let stream = (dev.to_owned(), kind, epoch.clone());
            declared
                .entry(stream.clone())
                .or_default()
                .push((resumed as u64, last.map(|l| l as u64)));
            if let Some(t) = ts {
                resumed_at
                    .entry(stream)
                    .or_default()
                    .push((resumed as u64, *t));
            }
        }
    }

    // Each reason's declared count: the growth of its telemetry counter
    // (a counter that goes down restarted and counts from 0), or the
    // events' count where larger (the two say the same drops).
    let mut budget: BTreeMap<&'static str, u64> = BTreeMap::new();
    for reason in REASONS {
        let mut n = 0f64;
        for series in drop_counter
            .get(reason)
            .into_iter()
            .flat_map(|m| m.values())
        {
            let mut prev = 0f64;
            for &t in series.values() {
                n += if t >= prev { t - prev } else { t };
                prev = t;
            }
        }
        let n = match reason {
            "corrupt" => n.max(corrupt_events),
            "write_failed" => n.max(restored_lost),
            _ => n,
        };
        budget.insert(reason, n.round() as u64);
    }
    // Missing numbers excused by a reason that names no record.
    let mut unexplained = 0u64;

    let all_streams: BTreeSet<Stream> = streams.keys().chain(declared.keys()).cloned().collect();
    let empty = BTreeMap::new();
    let mut crash_by_stream: Vec<(u64, String)> = Vec::new();
    for stream in &all_streams {
        let got = streams.get(stream).unwrap_or(&empty);
        let crash_before = a.crash;
        let stops = declared.get(stream).cloned().unwrap_or_default();
        // Numbers declared unused: (L, R) exclusive, or [0, R) when the
        // event has no seq_last_used.
        let mut unused: Vec<(u64, u64)> = stops
            .iter()
            .map(|&(r, l)| (l.map(|l| l + 1).unwrap_or(0), r))
            .filter(|(lo, hi)| lo < hi)
            .collect();
        unused.sort();
        let is_unused = |s: u64| unused.iter().find(|&&(lo, hi)| s >= lo && s < hi).copied();
        // Used numbers in (lo, hi].
        let used_between = |lo: Option<u64>, hi: u64| -> i64 {
            let from = lo.map(|l| l + 1).unwrap_or(0);
            let mut n = hi + 1 - from.min(hi + 1);
            for &(ulo, uhi) in &unused {
                let (a, b) = (ulo.max(from), uhi.min(hi + 1));
                if a < b {
                    n -= b - a;
                }
            }
            n as i64
        };
        // The run that crashed: from where it resumed (the previous stop's
        // R, else 0) to its last used number L, inclusive.
        let crash: Vec<(u64, u64)> = stops
            .iter()
            .filter_map(|&(_, l)| {
                let l = l?;
                let from = stops
                    .iter()
                    .map(|&(r2, _)| r2)
                    .filter(|&r2| r2 <= l)
                    .max()
                    .unwrap_or(0);
                Some((from, l + 1))
            })
            .collect();
        let period = period_ms(&stream.0, stream.1, known.heavy);
        // The earliest the reading numbered `s` can have been taken.
        let floors = resumed_at.get(stream).cloned().unwrap_or_default();
        // The earliest the reading numbered `s` can have been taken, if it
        // was taken before `until` (a stop): one period per used number
        // after the received one below it, except that a run may start
        // right after the one before stopped (one number per stop between
        // does not count); and no earlier than the unclean_stop event of
        // the run it was taken in or after.
        let earliest = |s: u64, until: i64| -> i64 {
            let (base, lo) = match got.range(..s).next_back() {
                Some((&lo, Some(ts))) => (*ts, Some(lo)),
                _ => (known.first_start_ms, None),
            };
            let stops = known
                .stops
                .iter()
                .filter(|&&t| t > base && t < until)
                .count() as i64;
            let spaced = base + (used_between(lo, s) - stops).max(0) * period - 50;
            let floor = floors
                .iter()
                .filter(|&&(r, _)| r <= s)
                .map(|&(_, t)| t)
                .max()
                .unwrap_or(i64::MIN);
            spaced.max(floor)
        };
        // Taken in a run that was killed, within the loss bound before
        // the kill.
        let near_kill = |s: u64| {
            known.kills.iter().any(|&(k, w, started)| {
                let t = earliest(s, k);
                t >= started - 50 && t <= k && k - t <= w
            })
        };
        // Only in memory at a stop with the card unwritable: taken within a
        // span that ends at that stop.
        let while_degraded = |s: u64| {
            degraded_seen
                && known.degraded.iter().any(|&(a, b)| {
                    let t = earliest(s, b);
                    t >= a - 50 && t <= b
                })
        };
        // Checked: every number up to the highest received or declared used
        // (the tail: numbers above the highest received up to the last
        // used one the gateway declared).
        let top = got
            .keys()
            .next_back()
            .copied()
            .into_iter()
            .chain(stops.iter().filter_map(|&(_, l)| l))
            .max();
        let Some(top) = top else { continue };
        let last_stop = known.stops.iter().copied().max();
        let mut s = 0u64;
        while s <= top {
            if got.contains_key(&s) {
                s += 1;
                continue;
            }
            if let Some((_, uhi)) = is_unused(s) {
                s = uhi;
                continue;
            }
            let rec3 = (stream.0.clone(), stream.1, s);
            let example = |a: &mut Account, why: &str| {
                if a.missing_examples.len() < 6 {
                    a.missing_examples.push(format!(
                        "{} {} epoch {:?} seq {s}{why}",
                        stream.0, stream.1, stream.2
                    ));
                }
            };
            let in_crash_range = crash.iter().any(|&(clo, chi)| s >= clo && s < chi);
            if known.destroyed.contains(&rec3) {
            } else if in_crash_range && near_kill(s) {
                a.crash += 1;
            } else if in_crash_range && while_degraded(s) {
                a.degraded_stop += 1;
            } else if in_crash_range && last_stop.is_some_and(|e| earliest(s, e) > e) {
                // Declared used, but it cannot have been taken before the
                // last stop: the number was never used.
                a.overstated += 1;
            } else {
                a.missing += 1;
                if known.damaged.contains(&rec3) {
                    let left = budget
                        .get_mut("corrupt")
                        .expect("every reason has a budget");
                    if *left > 0 {
                        *left -= 1;
                        *a.declared_by_reason.entry("corrupt").or_default() += 1;
                    } else {
                        example(&mut a, " (damaged by the harness, not declared corrupt)");
                    }
                } else if quarantined.contains(&rec3) {
                    *a.declared_by_reason.entry("too_large").or_default() += 1;
                } else {
                    unexplained += 1;
                    if in_crash_range {
                        a.too_old_for_crash += 1;
                        example(
                            &mut a,
                            " (at or below a seq_last_used, but not shown to be taken within the loss bound before a kill or only in memory at a stop with the card full)",
                        );
                    } else {
                        example(&mut a, "");
                    }
                }
            }
            s += 1;
        }
        if a.crash > crash_before {
            crash_by_stream.push((
                a.crash - crash_before,
                format!(
                    "{} {} epoch {:?}: {} (stops (resumed, last used): {:?})",
                    stream.0,
                    stream.1,
                    stream.2,
                    a.crash - crash_before,
                    stops
                ),
            ));
        }
    }
    // The reasons that name no record (memory overflow while the card
    // could not be written, a full or aged-out spool) excuse that many of
    // the remaining missing numbers, each reason on its own.
    for reason in ["write_failed", "full", "age"] {
        let n = budget[reason].min(unexplained);
        unexplained -= n;
        if n > 0 {
            *a.declared_by_reason.entry(reason).or_default() += n;
        }
        if budget[reason] > n {
            a.declared_unused.insert(reason, budget[reason] - n);
        }
    }
    if budget["corrupt"] > 0 {
        a.declared_unused.insert("corrupt", budget["corrupt"]);
    }
    crash_by_stream.sort_by_key(|x| std::cmp::Reverse(x.0));
    a.crash_by_stream = crash_by_stream
        .into_iter()
        .take(3)
        .map(|(_, t)| t)
        .collect();
    a.declared_drops = a.declared_by_reason.values().sum();
    a.readings = a.delivered + a.missing + a.crash + a.degraded_stop;
    a.undeclared = a.missing.saturating_sub(a.declared_drops);
    a
}

/// Historical records that arrived out of `seq` order per
/// (device, kind, epoch), among `recs` (a later copy of a number already
/// seen is a re-send, not an inversion).
pub fn order_violations(recs: &[Rec]) -> (u64, Vec<String>) {
    let mut max: HashMap<Stream, u64> = HashMap::new();
    let mut seen: BTreeSet<(Stream, u64)> = BTreeSet::new();
    let mut n = 0;
    let mut ex = Vec::new();
    for r in recs {
        let Some((kind, array)) = kind_of(&r.topic) else {
            continue;
        };
        let Some(body) = r.json() else { continue };
        let device = body["device"].as_str().unwrap_or("?").to_owned();
        let epoch = body["epoch"].as_str().unwrap_or("").to_owned();
        for item in body[array].as_array().into_iter().flatten() {
            if item["historical"] != true {
                continue;
            }
            let Some(seq) = item["seq"].as_u64() else {
                continue;
            };
            let st: Stream = (device.clone(), kind, epoch.clone());
            if !seen.insert((st.clone(), seq)) {
                continue;
            }
            let m = max.entry(st).or_insert(seq);
            if seq < *m {
                n += 1;
                if ex.len() < 3 {
                    ex.push(format!("{device} {kind}: seq {seq} after {m}"));
                }
            } else {
                *m = seq;
            }
        }
    }
    (n, ex)
}
