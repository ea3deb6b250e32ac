//! Each hole's state, recomputed from what the site said (docs/ioc.md,
//! "The gap ledger"). Two steps:
//!
//! 1. Per stream, exact explanations, which name numbers: a
//!    `spool.quarantined` number; the numbers a `gateway.unclean_stop`
//!    explains below its `seq_resumed` (in the epoch it speaks of); the
//!    unsettled holes of an epoch a `gateway.sequence_reset` closed. What
//!    is left is pending while unsettled, else a candidate.
//! 2. Per site, counted explanations, which say how many, not which:
//!    candidates taken while the card could not be written are explained
//!    by `spool.degraded` (drawing on the `write_failed` count first), then
//!    the counts of `spool.dropped.<reason>` (and `spool.corrupt_record`,
//!    `spool.restored`'s `spool.lost`) explain the oldest candidates
//!    first, oldest by the time of the reading just above the hole. What is
//!    left is unexplained.

use wardgate_contract::{DropReason, SeqRange};

use super::counters::{self, COUNTED};
use super::state::{HoleCounts, HoleState, Piece, Reason, SiteState, StreamId, StreamState};

/// A part of a hole while its state is worked out.
#[derive(Debug, Clone, Copy)]
struct Part {
    first: u64,
    last: u64,
    /// `None`: not (yet) explained exactly.
    label: Option<HoleState>,
    settled: bool,
    after_ts: Option<i64>,
    before_ts: i64,
}

/// Sets `label` on the unlabelled numbers of `parts` inside `range`.
fn paint(parts: &mut Vec<Part>, range: SeqRange, label: HoleState) {
    let mut out = Vec::with_capacity(parts.len() + 2);
    for p in parts.drain(..) {
        if p.label.is_some() || p.last < range.first || p.first > range.last {
            out.push(p);
            continue;
        }
        if p.first < range.first {
            out.push(Part {
                last: range.first - 1,
                ..p
            });
        }
        out.push(Part {
            first: p.first.max(range.first),
            last: p.last.min(range.last),
            label: Some(label),
            ..p
        });
        if p.last > range.last {
            out.push(Part {
                first: range.last + 1,
                ..p
            });
        }
    }
    *parts = out;
}

/// Step 1 for one stream: its parts, exact explanations applied.
fn exact_parts(site: &SiteState, id: &StreamId, st: &StreamState) -> Vec<Part> {
    let mut parts: Vec<Part> = st
        .holes
        .iter()
        .map(|(first, h)| Part {
            first: *first,
            last: h.last,
            label: None,
            settled: h.settled,
            after_ts: h.after_ts,
            before_ts: h.before_ts,
        })
        .collect();
    if parts.is_empty() {
        return parts;
    }
    for q in site.quarantined.iter().filter(|q| q.stream == *id) {
        let one = SeqRange {
            first: q.seq,
            last: q.seq,
        };
        paint(&mut parts, one, HoleState::Explained(Reason::Quarantined));
    }
    for s in &site.stops {
        if s.device != id.device || s.kind != id.kind || site.stop_epoch(s.carried) != id.epoch {
            continue;
        }
        let says = s
            .resumed_stream()
            .explains(st.highest_received_below(s.resumed));
        if let Some(r) = says.lost {
            paint(
                &mut parts,
                r,
                HoleState::Explained(Reason::UncleanStop(s.stop)),
            );
        }
        if let Some(r) = says.unused {
            paint(&mut parts, r, HoleState::Explained(Reason::Unused));
        }
    }
    let closed = site.closed(id.epoch);
    for p in parts.iter_mut().filter(|p| p.label.is_none() && !p.settled) {
        p.label = Some(if closed {
            HoleState::Explained(Reason::SequenceReset)
        } else {
            HoleState::Pending
        });
    }
    parts
}

/// How many readings each counted reason explains, not yet used.
struct Budget {
    left: [u64; 4],
}

impl Budget {
    fn of(site: &SiteState) -> Budget {
        let mut left = counters::totals(&site.counters);
        let at = |r: DropReason| COUNTED.iter().position(|c| *c == r).unwrap_or(0);
        let corrupt = at(DropReason::Corrupt);
        left[corrupt] = left[corrupt].max(site.corrupt_events);
        let wf = at(DropReason::WriteFailed);
        left[wf] = left[wf].max(site.restored_lost);
        Budget { left }
    }

    /// Takes up to `n` from `reason`'s count; returns how many.
    fn take_from(&mut self, reason: DropReason, n: u64) -> u64 {
        let Some(i) = COUNTED.iter().position(|c| *c == reason) else {
            return 0;
        };
        let t = self.left[i].min(n);
        self.left[i] -= t;
        t
    }

    /// Takes up to `n` from the first reason with a count left.
    fn take_any(&mut self, n: u64) -> Option<(DropReason, u64)> {
        let i = self.left.iter().position(|l| *l > 0)?;
        let t = self.left[i].min(n);
        self.left[i] -= t;
        Some((COUNTED[i], t))
    }
}

/// Step 2: the counted explanations over the site's candidates.
fn count_explained(site: &SiteState, all: &mut [(StreamId, Vec<Part>)]) {
    let mut budget = Budget::of(site);
    let mut cands: Vec<(i64, usize, usize)> = Vec::new();
    for (si, (_, parts)) in all.iter_mut().enumerate() {
        for (pi, p) in parts.iter_mut().enumerate() {
            if p.label.is_some() {
                continue;
            }
            if site
                .degraded
                .iter()
                .any(|w| w.overlaps(p.after_ts, p.before_ts))
            {
                budget.take_from(DropReason::WriteFailed, p.last - p.first + 1);
                p.label = Some(HoleState::Explained(Reason::Degraded));
            } else {
                cands.push((p.before_ts, si, pi));
            }
        }
    }
    // Oldest first; streams and numbers break ties (all in a stable order).
    cands.sort_unstable_by(|a, b| {
        (a.0, &all[a.1].0, all[a.1].1[a.2].first).cmp(&(b.0, &all[b.1].0, all[b.1].1[b.2].first))
    });
    for (_, si, pi) in cands {
        let p = all[si].1[pi];
        let mut parts = Vec::with_capacity(2);
        let mut first = p.first;
        while first <= p.last {
            let Some((reason, n)) = budget.take_any(p.last - first + 1) else {
                break;
            };
            parts.push(Part {
                first,
                last: first + n - 1,
                label: Some(HoleState::Explained(Reason::Dropped(reason))),
                ..p
            });
            first += n;
        }
        if first <= p.last {
            parts.push(Part {
                first,
                label: Some(HoleState::Unexplained),
                ..p
            });
        }
        // The first part takes the candidate's place; the others go at the
        // end, where they move no candidate still to come.
        let mut parts = parts.into_iter();
        if let Some(head) = parts.next() {
            all[si].1[pi] = head;
        }
        all[si].1.extend(parts);
    }
}

/// Recomputes every hole's state of the site; returns the streams whose
/// counts changed, with their counts before and after.
pub(crate) fn recompute(site: &mut SiteState) -> Vec<(StreamId, HoleCounts, HoleCounts)> {
    let mut all: Vec<(StreamId, Vec<Part>)> = site
        .streams
        .iter()
        .filter(|(_, st)| !st.holes.is_empty() || !st.view.is_empty())
        .map(|(id, st)| (id.clone(), exact_parts(site, id, st)))
        .collect();
    count_explained(site, &mut all);
    let mut changed = Vec::new();
    for (id, parts) in all {
        let Some(st) = site.streams.get_mut(&id) else {
            continue;
        };
        let mut view: Vec<Piece> = parts
            .into_iter()
            .map(|p| Piece {
                range: SeqRange {
                    first: p.first,
                    last: p.last,
                },
                state: p.label.unwrap_or(HoleState::Unexplained),
            })
            .collect();
        view.sort_unstable_by_key(|p| p.range.first);
        merge_adjacent(&mut view);
        let counts = HoleCounts::of(&view);
        if counts != st.counts {
            changed.push((id, st.counts, counts));
        }
        st.view = view;
        st.counts = counts;
    }
    let mut t = HoleCounts::default();
    for st in site.streams.values() {
        t.pending += st.counts.pending;
        t.explained += st.counts.explained;
        t.unexplained += st.counts.unexplained;
        t.unused += st.counts.unused;
    }
    site.totals.pending = t.pending;
    site.totals.explained = t.explained;
    site.totals.unexplained = t.unexplained;
    site.totals.unused = t.unused;
    changed
}

/// Joins neighbouring pieces in the same state.
fn merge_adjacent(view: &mut Vec<Piece>) {
    let mut out: Vec<Piece> = Vec::with_capacity(view.len());
    for p in view.drain(..) {
        match out.last_mut() {
            Some(q) if q.state == p.state && q.range.last.checked_add(1) == Some(p.range.first) => {
                q.range.last = p.range.last;
            }
            _ => out.push(p),
        }
    }
    *view = out;
}
