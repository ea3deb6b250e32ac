//! The gap ledger: a pure state machine (no clock read, no I/O) that
//! follows every stream `(site, device, kind, epoch)` and gives each
//! missing number a state: pending, explained (and why), unexplained; a
//! number that arrives after it went missing is counted as filled late.
//! docs/ioc.md, "The gap ledger", states the rules.
//!
//! Feed it decoded contract messages with the time they were received
//! ([`Ledger::apply`]); it returns what changed ([`Applied`]). Its state
//! is plain serializable structs ([`LedgerState`]): a store saves it and
//! gives it back to [`Ledger::restore`].

mod counters;
mod explain;
mod gateway;
mod report;
mod state;

use wardgate_contract::{
    fingerprint, ClockCorrection, ClockState, Delivered, Envelope, Keep, Message, Record,
    StreamKey, GATEWAY_DEVICE,
};

use crate::dedup::{Dedup, Seen};

pub use counters::{CounterReading, COUNTED};
pub use report::StreamReport;
pub use state::{
    Backlog, CorrectionSeen, HoleCounts, HoleState, LedgerState, Piece, QuarantineSeen, RawHole,
    Reason, Received, ResetSeen, RunInfo, SiteState, SiteTotals, StopKind, StopSeen, StreamId,
    StreamState, Window,
};

/// How the ledger starts a stream it has not seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerConfig {
    /// Every stream is followed from its epoch's start (number 0): true for
    /// a ledger that has listened since the fleet's first message (or
    /// restores the state of one that has). False for a ledger that joins
    /// a running fleet: a stream then starts at the first number received,
    /// unless the ledger saw the `gateway.sequence_reset` of its epoch.
    pub from_zero: bool,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig { from_zero: true }
    }
}

/// A restored state the ledger cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// A stream's holes overlap, lie above its highest number or below its
    /// start: the saved state is damaged; start that site again from its
    /// gateway's next messages (or from the records stored).
    #[error("site {site}: stream {device} {kind:?} {epoch}: {what}")]
    BadStream {
        site: String,
        device: String,
        kind: wardgate_contract::Kind,
        epoch: wardgate_contract::Epoch,
        what: &'static str,
    },
}

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    /// A new record. `corrected_ts`: it came `unsynced` and a clock
    /// correction already received covers it: store it with this `ts`, as
    /// corrected. `opened`: numbers below it are missing (a new hole).
    New {
        corrected_ts: Option<i64>,
        opened: bool,
    },
    /// A new record whose number was a hole (it came late).
    FilledLate { corrected_ts: Option<i64> },
    /// A copy of a record received before (same content, or content the
    /// window no longer holds).
    Duplicate,
    /// The corrected copy of a record received `unsynced`: replace the
    /// stored one with it.
    CorrectedCopy,
    /// A copy with other content: a contract break; keep the first.
    Conflict,
    /// Below the stream's start (a ledger that joined late).
    BeforeStart,
}

/// A change worth saving or showing.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A stream's holes changed state (its counts before and after).
    Holes {
        site: String,
        stream: StreamId,
        before: HoleCounts,
        after: HoleCounts,
    },
    /// A `gateway.clock_corrected`: apply it to the records held
    /// (`ClockCorrection::apply`); the ledger applies it to those that
    /// come later (`RecordOutcome::New::corrected_ts`).
    Correction(ClockCorrection),
}

/// What one message did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// One per record, in the message's order (empty for a status).
    pub records: Vec<RecordOutcome>,
    pub changes: Vec<Change>,
}

/// The ledger: its state and the de-duplication windows.
#[derive(Debug, Clone)]
pub struct Ledger {
    config: LedgerConfig,
    state: LedgerState,
    dedup: Dedup,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::new(LedgerConfig::default(), Dedup::default())
    }
}

impl Ledger {
    pub fn new(config: LedgerConfig, dedup: Dedup) -> Self {
        Ledger {
            config,
            state: LedgerState::default(),
            dedup,
        }
    }

    /// A ledger from a saved state (the de-duplication windows start
    /// empty: copies of records received before are still told by the
    /// numbers, their content is not compared).
    pub fn restore(
        config: LedgerConfig,
        dedup: Dedup,
        state: LedgerState,
    ) -> Result<Self, LedgerError> {
        for (site, s) in &state.sites {
            for (id, st) in &s.streams {
                if let Some(what) = report::check_stream(st) {
                    return Err(LedgerError::BadStream {
                        site: site.clone(),
                        device: id.device.clone(),
                        kind: id.kind,
                        epoch: id.epoch,
                        what,
                    });
                }
            }
        }
        let mut l = Ledger {
            config,
            state,
            dedup,
        };
        for site in l.state.sites.values_mut() {
            explain::recompute(site);
        }
        Ok(l)
    }

    /// The state to save.
    pub fn state(&self) -> &LedgerState {
        &self.state
    }

    /// The de-duplication windows (a store saves those of the streams a
    /// commit touched, `Dedup::saved`).
    pub fn dedup(&self) -> &Dedup {
        &self.dedup
    }

    /// Takes in one decoded message of `site` (the topic's; a data
    /// message's envelope names the same, `Message::decode` checks it)
    /// received at `at_ms` (the consumer's clock, ms since 1970; for the
    /// store, the rules do not use it).
    pub fn apply(&mut self, site: &str, msg: &Message, at_ms: i64) -> Applied {
        let _ = at_ms;
        match msg {
            Message::Telemetry(env) => self.envelope(env),
            Message::Events(env) => self.envelope(env),
            Message::Status(status) => {
                gateway::status(site_entry(&mut self.state, site), status);
                Applied::default()
            }
        }
    }

    /// Counts a payload on `site`'s topics that did not decode.
    pub fn malformed(&mut self, site: &str) {
        site_entry(&mut self.state, site).totals.malformed += 1;
    }

    fn envelope<R: Record + GatewayRecord>(&mut self, env: &Envelope<R>) -> Applied {
        let key = env.stream_key();
        let id = StreamId {
            device: key.device.clone(),
            kind: key.kind,
            epoch: key.epoch,
        };
        let Ledger {
            state,
            dedup,
            config,
        } = self;
        let site = site_entry(state, &env.site);
        site.epoch_order(env.epoch);
        if env.records.iter().any(|d| !d.historical) {
            site.note_live(env.epoch);
        }
        if !site.streams.contains_key(&id) {
            let first = env.records.first().map(|d| d.record.seq()).unwrap_or(0);
            let start = if config.from_zero || site.reset_of(id.epoch).is_some() {
                0
            } else {
                first
            };
            site.streams.insert(id.clone(), StreamState::new(start));
        }
        let mut applied = Applied {
            records: Vec::with_capacity(env.records.len()),
            changes: Vec::new(),
        };
        let window = dedup.window(&key);
        let mut dirty = false;
        let mut gateway_records = Vec::new();
        {
            let SiteState {
                streams,
                corrections,
                totals,
                ..
            } = &mut *site;
            let st = streams
                .get_mut(&id)
                .expect("the stream was inserted just above");
            for (i, d) in env.records.iter().enumerate() {
                let seen = window.observe(d.record.seq(), fingerprint(&d.record));
                let corrected = corrected_ts(corrections, &key, &d.record);
                let outcome = record(st, totals, d.record.seq(), d.record.ts(), seen, corrected);
                dirty |= matches!(
                    outcome,
                    RecordOutcome::FilledLate { .. } | RecordOutcome::New { opened: true, .. }
                );
                let fresh = matches!(
                    outcome,
                    RecordOutcome::New { .. } | RecordOutcome::FilledLate { .. }
                );
                if fresh && id.device == GATEWAY_DEVICE {
                    gateway_records.push(i);
                }
                applied.records.push(outcome);
            }
        }
        for i in gateway_records {
            dirty |= R::gateway(site, &key, &env.records[i], &mut applied.changes);
        }
        if dirty {
            for (stream, before, after) in explain::recompute(site) {
                applied.changes.push(Change::Holes {
                    site: env.site.clone(),
                    stream,
                    before,
                    after,
                });
            }
        }
        applied
    }
}

/// The site's state, made when first heard of.
fn site_entry<'a>(state: &'a mut LedgerState, site: &str) -> &'a mut SiteState {
    if !state.sites.contains_key(site) {
        state.sites.insert(site.to_owned(), SiteState::default());
    }
    state
        .sites
        .get_mut(site)
        .expect("the site was inserted just above")
}

/// Takes one record into its stream.
fn record(
    st: &mut StreamState,
    totals: &mut SiteTotals,
    seq: u64,
    ts: i64,
    seen: Seen,
    corrected_ts: Option<i64>,
) -> RecordOutcome {
    match seen {
        Seen::Copy(Keep::Second) => {
            totals.corrected_copies += 1;
            st.corrected_copies += 1;
            return RecordOutcome::CorrectedCopy;
        }
        Seen::Copy(_) => {
            totals.duplicates += 1;
            st.duplicates += 1;
            return RecordOutcome::Duplicate;
        }
        Seen::Conflict(_) => {
            totals.contract_breaks += 1;
            st.contract_breaks += 1;
            return RecordOutcome::Conflict;
        }
        Seen::First => {}
    }
    match st.receive(seq, ts) {
        Received::New { opened } => {
            totals.received += 1;
            RecordOutcome::New {
                corrected_ts,
                opened,
            }
        }
        Received::Filled => {
            totals.received += 1;
            totals.filled_late += 1;
            RecordOutcome::FilledLate { corrected_ts }
        }
        Received::Old => {
            totals.duplicates += 1;
            RecordOutcome::Duplicate
        }
        Received::BeforeStart => {
            totals.before_start += 1;
            RecordOutcome::BeforeStart
        }
    }
}

/// The corrected `ts` of an `unsynced` record a correction received covers.
fn corrected_ts<R: Record>(
    corrections: &[CorrectionSeen],
    key: &StreamKey,
    rec: &R,
) -> Option<i64> {
    if rec.clock() != ClockState::Unsynced || corrections.is_empty() {
        return None;
    }
    corrections
        .iter()
        .find(|c| {
            c.stream.device == key.device
                && c.stream.kind == key.kind
                && c.stream.epoch == key.epoch
                && c.range.contains(rec.seq())
        })
        .map(|c| rec.ts().saturating_add(c.offset_ms))
}

/// What a new record of the gateway's own device tells the ledger.
pub(crate) trait GatewayRecord: Sized {
    /// Reads it into the site; says whether holes may have changed state.
    fn gateway(
        site: &mut SiteState,
        key: &StreamKey,
        d: &Delivered<Self>,
        changes: &mut Vec<Change>,
    ) -> bool;
}

#[cfg(test)]
mod tests;
