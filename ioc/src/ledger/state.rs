//! The ledger's state as plain serializable structs, so a store can save
//! and restore it: per site what the gateway said (status, backlog,
//! explanations, drop counters) and per stream the numbers received, kept
//! as the highest number and the holes below it (ranges, never one entry
//! per number). What is derived from it (each hole's state) is recomputed
//! on restore and not saved.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wardgate_contract::{DropReason, Epoch, Kind, ResumedStream, SeqRange};

use super::counters::CounterReading;

/// The whole ledger: every site it has heard of.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerState {
    pub sites: BTreeMap<String, SiteState>,
}

/// One stream of a site: a device's samples or events in one epoch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamId {
    pub device: String,
    pub kind: Kind,
    pub epoch: Epoch,
}

/// The gateway run the last online status announced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    pub boot_id: String,
    pub run_id: String,
}

/// The newest live gateway telemetry's backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backlog {
    pub epoch: Epoch,
    pub depth: u64,
}

/// A `gateway.sequence_reset` seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetSeen {
    pub epoch: Epoch,
    pub previous_epoch: Option<Epoch>,
    pub first_start: bool,
    /// For a reset without `previous_epoch` (positions lost with the
    /// card): the epoch the site was in before, whose backlog was lost.
    pub closes: Option<Epoch>,
}

/// How a run ended without a clean stop, as far as the ledger can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopKind {
    /// `seq_last_used` given: the service crashed in the same boot.
    Crash,
    /// No `seq_last_used` and the status's `boot_id` changed.
    PowerCut,
    /// No `seq_last_used`, and the boot is the same or unknown (a stream
    /// that used no number in the run, or a status not seen).
    Unknown,
}

/// One stream of a `gateway.unclean_stop` seen, with the epoch of the
/// message that carried it (the epoch it speaks of is resolved against
/// the resets known, every time: a reset may arrive later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopSeen {
    pub carried: Epoch,
    pub device: String,
    pub kind: Kind,
    pub resumed: u64,
    pub last_used: Option<u64>,
    pub stop: StopKind,
}

impl StopSeen {
    pub(crate) fn resumed_stream(&self) -> ResumedStream {
        ResumedStream {
            device: self.device.clone(),
            kind: self.kind,
            resumed: self.resumed,
            last_used: self.last_used,
        }
    }
}

/// A `spool.quarantined` seen: one number of one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineSeen {
    pub stream: StreamId,
    pub seq: u64,
}

/// A stretch of time (the gateway's `ts`) while the card could not be
/// written: from `spool.degraded` to `spool.restored`. Either end may be
/// unknown (not received yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub from_ts: Option<i64>,
    pub to_ts: Option<i64>,
}

impl Window {
    /// Whether readings taken strictly between `after` and `before` could
    /// have been taken inside the window.
    pub fn overlaps(&self, after: Option<i64>, before: i64) -> bool {
        let lo = after.unwrap_or(i64::MIN);
        self.from_ts.is_none_or(|f| f < before) && self.to_ts.is_none_or(|t| t > lo)
    }
}

/// A `gateway.clock_corrected` seen (the fields of the contract's
/// `ClockCorrection`, which is not serializable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrectionSeen {
    pub stream: StreamId,
    pub range: SeqRange,
    pub count: u64,
    pub offset_ms: i64,
}

/// Counts per site; `pending`, `explained`, `unexplained` and `unused` are
/// the numbers in each state now (derived), the others running totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteTotals {
    /// Distinct records received.
    pub received: u64,
    /// Records that arrived after their number had become a hole.
    pub filled_late: u64,
    pub pending: u64,
    /// Missing readings the gateway gave a reason for, numbers it never
    /// used left out (`unused`).
    pub explained: u64,
    pub unexplained: u64,
    /// Numbers the gateway reserved and never used (an unclean stop skips
    /// to the end of its reserved block): explained, but no reading was
    /// ever taken under them, so they are not missing readings.
    #[serde(default)]
    pub unused: u64,
    /// Plain redeliveries (the same content), in the window or not.
    pub duplicates: u64,
    /// Corrected copies of records first received `unsynced`.
    pub corrected_copies: u64,
    /// Two contents for one key, or a gateway report the contract's
    /// reader refuses.
    pub contract_breaks: u64,
    /// Payloads on this site's topics that are not messages of the contract.
    pub malformed: u64,
    /// Records below a stream's start (a ledger that joined late).
    pub before_start: u64,
}

/// Everything the ledger knows of one site.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SiteState {
    /// The last status: `Some(true)` online, `Some(false)` offline, `None`
    /// none seen.
    pub online: Option<bool>,
    pub run: Option<RunInfo>,
    /// The boot of the run before `run`.
    pub previous_boot: Option<String>,
    /// Known only from a live gateway telemetry of the current run.
    pub backlog: Option<Backlog>,
    /// Epochs in the order first seen.
    pub epochs: Vec<Epoch>,
    /// Epochs with live traffic, most recent first (at most 8).
    pub live_epochs: Vec<Epoch>,
    pub resets: Vec<ResetSeen>,
    pub stops: Vec<StopSeen>,
    pub quarantined: Vec<QuarantineSeen>,
    pub degraded: Vec<Window>,
    /// The gateway telemetry's drop counters, compacted to the first and
    /// last reading of each run.
    pub counters: Vec<CounterReading>,
    /// Σ `spool.records` of `spool.corrupt_record` events.
    pub corrupt_events: u64,
    /// Σ `spool.lost` of `spool.restored` events.
    pub restored_lost: u64,
    pub corrections: Vec<CorrectionSeen>,
    #[serde(with = "entries")]
    pub streams: BTreeMap<StreamId, StreamState>,
    pub totals: SiteTotals,
}

impl SiteState {
    /// The position of `epoch` in first-seen order, adding it if new.
    pub(crate) fn epoch_order(&mut self, epoch: Epoch) -> u32 {
        let i = match self.epochs.iter().position(|e| *e == epoch) {
            Some(i) => i,
            None => {
                self.epochs.push(epoch);
                self.epochs.len() - 1
            }
        };
        u32::try_from(i).unwrap_or(u32::MAX)
    }

    pub(crate) fn note_live(&mut self, epoch: Epoch) {
        if self.live_epochs.first() == Some(&epoch) {
            return;
        }
        self.live_epochs.retain(|e| *e != epoch);
        self.live_epochs.insert(0, epoch);
        self.live_epochs.truncate(8);
    }

    pub(crate) fn reset_of(&self, epoch: Epoch) -> Option<&ResetSeen> {
        self.resets.iter().find(|r| r.epoch == epoch)
    }

    /// The epoch an unclean stop carried in `carried` speaks of (the
    /// contract's rule, against the resets known).
    pub(crate) fn stop_epoch(&self, carried: Epoch) -> Epoch {
        let reset = self
            .reset_of(carried)
            .map(|r| wardgate_contract::SequenceReset {
                epoch: r.epoch,
                previous_epoch: r.previous_epoch,
                reason: String::new(),
                first_start: r.first_start,
            });
        wardgate_contract::UncleanStop::epoch_spoken_of(carried, reset.as_ref())
    }

    pub(crate) fn closed(&self, epoch: Epoch) -> bool {
        self.resets.iter().any(|r| r.closes == Some(epoch))
    }
}

/// A hole as received: missing numbers `first..=last` (the key in
/// [`StreamState::holes`]), between two received records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawHole {
    pub last: u64,
    /// A live gateway telemetry of this epoch said `spool.depth` = 0 (while
    /// online) after the hole was seen: no backlog can fill it any more.
    pub settled: bool,
    /// `ts` of the record just below the hole (none at the stream's start).
    pub after_ts: Option<i64>,
    /// `ts` of the record just above it.
    pub before_ts: i64,
}

/// Why a number will not come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason", content = "detail")]
pub enum Reason {
    /// `spool.quarantined` named it.
    Quarantined,
    /// A reading lost in an unclean stop (`gateway.unclean_stop`).
    UncleanStop(StopKind),
    /// Never used: after `seq_last_used`, before `seq_resumed`.
    Unused,
    /// A `gateway.sequence_reset` without `previous_epoch`: the card with
    /// this epoch's backlog was lost.
    SequenceReset,
    /// Taken while the card could not be written (`spool.degraded`).
    Degraded,
    /// Counted in `spool.dropped.<reason>` (or `spool.corrupt_record`).
    Dropped(DropReason),
}

/// The state of a hole's numbers (a filled number is no longer a hole:
/// it is counted in `filled_late`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoleState {
    /// The gateway may still deliver it (backlog, offline, unknown).
    Pending,
    Explained(Reason),
    /// Missing with the backlog drained and nothing said why.
    Unexplained,
}

/// Part of a hole in one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub range: SeqRange,
    pub state: HoleState,
}

/// Numbers per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoleCounts {
    pub pending: u64,
    /// Explained by any reason but `Unused`.
    pub explained: u64,
    pub unexplained: u64,
    /// Explained as numbers never used (no reading was taken under them).
    #[serde(default)]
    pub unused: u64,
}

impl HoleCounts {
    pub(crate) fn of(pieces: &[Piece]) -> HoleCounts {
        let mut c = HoleCounts::default();
        for p in pieces {
            let n = p.range.len();
            let slot = match p.state {
                HoleState::Pending => &mut c.pending,
                HoleState::Explained(Reason::Unused) => &mut c.unused,
                HoleState::Explained(_) => &mut c.explained,
                HoleState::Unexplained => &mut c.unexplained,
            };
            *slot = slot.saturating_add(n);
        }
        c
    }
}

/// One stream's numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamState {
    /// The first number expected (0: followed from the epoch's start).
    pub start: u64,
    pub highest: Option<u64>,
    /// `ts` of the highest record.
    pub highest_ts: i64,
    /// Missing numbers below `highest`, by first number.
    pub holes: BTreeMap<u64, RawHole>,
    pub received: u64,
    pub filled_late: u64,
    pub duplicates: u64,
    pub corrected_copies: u64,
    pub contract_breaks: u64,
    pub before_start: u64,
    /// The holes by state (derived: recomputed, not saved).
    #[serde(skip)]
    pub view: Vec<Piece>,
    #[serde(skip)]
    pub counts: HoleCounts,
}

/// What a number received means for its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// A new number; `opened` when it left a hole below it.
    New { opened: bool },
    /// It filled (part of) a hole.
    Filled,
    /// Received before: a copy the window no longer remembers.
    Old,
    /// Below the stream's start.
    BeforeStart,
}

impl StreamState {
    pub(crate) fn new(start: u64) -> Self {
        StreamState {
            start,
            ..StreamState::default()
        }
    }

    /// Takes number `seq` (its record's `ts`) into account.
    pub(crate) fn receive(&mut self, seq: u64, ts: i64) -> Received {
        if seq < self.start {
            self.before_start += 1;
            return Received::BeforeStart;
        }
        let Some(highest) = self.highest else {
            let opened = seq > self.start;
            if opened {
                self.holes.insert(
                    self.start,
                    RawHole {
                        last: seq - 1,
                        settled: false,
                        after_ts: None,
                        before_ts: ts,
                    },
                );
            }
            self.take_highest(seq, ts);
            return Received::New { opened };
        };
        if seq > highest {
            let opened = seq > highest + 1;
            if opened {
                self.holes.insert(
                    highest + 1,
                    RawHole {
                        last: seq - 1,
                        settled: false,
                        after_ts: Some(self.highest_ts),
                        before_ts: ts,
                    },
                );
            }
            self.take_highest(seq, ts);
            return Received::New { opened };
        }
        let hole = self
            .holes
            .range(..=seq)
            .next_back()
            .filter(|(_, h)| h.last >= seq)
            .map(|(f, h)| (*f, *h));
        let Some((first, hole)) = hole else {
            self.duplicates += 1;
            return Received::Old;
        };
        self.holes.remove(&first);
        if first < seq {
            self.holes.insert(
                first,
                RawHole {
                    last: seq - 1,
                    before_ts: ts,
                    ..hole
                },
            );
        }
        if seq < hole.last {
            self.holes.insert(
                seq + 1,
                RawHole {
                    after_ts: Some(ts),
                    ..hole
                },
            );
        }
        self.received += 1;
        self.filled_late += 1;
        Received::Filled
    }

    fn take_highest(&mut self, seq: u64, ts: i64) {
        self.highest = Some(seq);
        self.highest_ts = ts;
        self.received += 1;
    }

    /// The highest number received (or below the start) under `below`.
    pub(crate) fn highest_received_below(&self, below: u64) -> Option<u64> {
        let highest = self.highest?;
        let x = below.checked_sub(1)?.min(highest);
        match self
            .holes
            .range(..=x)
            .next_back()
            .filter(|(_, h)| h.last >= x)
        {
            Some((first, _)) => first.checked_sub(1),
            None => Some(x),
        }
    }

    /// Marks every hole as settled; says whether one was not.
    pub(crate) fn settle(&mut self) -> bool {
        let mut changed = false;
        for h in self.holes.values_mut() {
            changed |= !h.settled;
            h.settled = true;
        }
        changed
    }
}

/// Serde for a map whose keys are not strings: a list of `[key, value]`.
mod entries {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        let list: Vec<(K, V)> = Vec::deserialize(d)?;
        Ok(list.into_iter().collect())
    }
}
