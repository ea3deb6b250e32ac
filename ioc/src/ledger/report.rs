//! What the ledger shows: per stream the holes by state (ranges and counts
//! of numbers), per site the totals.

use serde::Serialize;
use wardgate_contract::{SeqRange, StreamKey};

use super::state::{HoleCounts, HoleState, Piece, SiteState, SiteTotals, StreamId, StreamState};
use super::Ledger;

/// One stream as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamReport {
    pub site: String,
    pub stream: StreamId,
    pub start: u64,
    pub highest: Option<u64>,
    pub received: u64,
    pub filled_late: u64,
    pub duplicates: u64,
    pub corrected_copies: u64,
    pub contract_breaks: u64,
    /// Numbers per state now.
    pub counts: HoleCounts,
    /// The holes, lowest first, each part in one state.
    pub holes: Vec<Piece>,
}

impl StreamReport {
    fn of(site: &str, id: &StreamId, st: &StreamState) -> Self {
        StreamReport {
            site: site.to_owned(),
            stream: id.clone(),
            start: st.start,
            highest: st.highest,
            received: st.received,
            filled_late: st.filled_late,
            duplicates: st.duplicates,
            corrected_copies: st.corrected_copies,
            contract_breaks: st.contract_breaks,
            counts: st.counts,
            holes: st.view.clone(),
        }
    }

    /// The ranges in one state.
    pub fn ranges(&self, state: HoleState) -> impl Iterator<Item = SeqRange> + '_ {
        self.holes
            .iter()
            .filter(move |p| p.state == state)
            .map(|p| p.range)
    }
}

impl Ledger {
    /// The sites heard of, by name.
    pub fn sites(&self) -> impl Iterator<Item = &str> {
        self.state.sites.keys().map(String::as_str)
    }

    /// A site's state (status, backlog, what its gateway said).
    pub fn site(&self, site: &str) -> Option<&SiteState> {
        self.state.sites.get(site)
    }

    /// A site's totals.
    pub fn totals(&self, site: &str) -> Option<SiteTotals> {
        self.state.sites.get(site).map(|s| s.totals)
    }

    /// Every site's totals added up.
    pub fn fleet_totals(&self) -> SiteTotals {
        let mut t = SiteTotals::default();
        for s in self.state.sites.values() {
            let s = &s.totals;
            t.received += s.received;
            t.filled_late += s.filled_late;
            t.pending += s.pending;
            t.explained += s.explained;
            t.unexplained += s.unexplained;
            t.unused += s.unused;
            t.duplicates += s.duplicates;
            t.corrected_copies += s.corrected_copies;
            t.contract_breaks += s.contract_breaks;
            t.malformed += s.malformed;
            t.before_start += s.before_start;
        }
        t
    }

    /// A site's streams, in order.
    pub fn streams(&self, site: &str) -> Vec<StreamReport> {
        self.state
            .sites
            .get(site)
            .map(|s| {
                s.streams
                    .iter()
                    .map(|(id, st)| StreamReport::of(site, id, st))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One stream.
    pub fn stream(&self, key: &StreamKey) -> Option<StreamReport> {
        let id = StreamId {
            device: key.device.clone(),
            kind: key.kind,
            epoch: key.epoch,
        };
        let st = self.state.sites.get(&key.site)?.streams.get(&id)?;
        Some(StreamReport::of(&key.site, &id, st))
    }

    /// Every hole in `state`, fleet-wide, in order of site and stream.
    pub fn holes_in(&self, state: HoleState) -> Vec<(StreamKey, SeqRange)> {
        let mut out = Vec::new();
        for (site, s) in &self.state.sites {
            for (id, st) in &s.streams {
                for p in st.view.iter().filter(|p| p.state == state) {
                    let key = StreamKey {
                        site: site.clone(),
                        device: id.device.clone(),
                        kind: id.kind,
                        epoch: id.epoch,
                    };
                    out.push((key, p.range));
                }
            }
        }
        out
    }

    /// Every unexplained hole, fleet-wide: the numbers an operator must see.
    pub fn unexplained(&self) -> Vec<(StreamKey, SeqRange)> {
        self.holes_in(HoleState::Unexplained)
    }
}

/// What is wrong with a restored stream, if anything: holes that overlap,
/// lie above the highest number, or below the start.
pub(crate) fn check_stream(st: &StreamState) -> Option<&'static str> {
    let mut prev_last: Option<u64> = None;
    for (first, h) in &st.holes {
        if h.last < *first {
            return Some("a hole ends before it begins");
        }
        if *first < st.start {
            return Some("a hole below the start");
        }
        if prev_last.is_some_and(|p| p >= *first) {
            return Some("holes overlap");
        }
        if st.highest.is_none_or(|hi| h.last >= hi) {
            return Some("a hole at or above the highest number");
        }
        prev_last = Some(h.last);
    }
    None
}
