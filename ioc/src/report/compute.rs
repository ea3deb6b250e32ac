//! The report's figures, a pure function: a site's history (spans heard,
//! condition intervals, day counts, holes by time), a month, the time now
//! and `[report]` in; one row per site out. No clock, no I/O.

use std::collections::BTreeSet;

use super::calendar::{weekday, Month, Spans};
use super::config::ReportConfig;
use crate::history::{Condition, DayCounts, Heard, Interval};

const DAY_MS: i64 = 86_400_000;

/// Where a hole's numbers stand now, for the month of its readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoleKind {
    Pending,
    Explained,
    Unexplained,
}

/// Missing numbers of one hole (or part of one in one state), dated by
/// the `ts` of the record just above it (the gateway's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoleAt {
    pub ts: i64,
    pub kind: HoleKind,
    pub count: u64,
}

/// Everything kept of one site that the report reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SiteInput {
    pub site: String,
    pub intervals: Vec<Interval>,
    pub heard: Vec<Heard>,
    /// `(local day, counts)`.
    pub days: Vec<(i64, DayCounts)>,
    pub holes: Vec<HoleAt>,
}

/// Episodes (intervals touching the month) and the time spent in them
/// while the site was available (ms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Episodes {
    pub count: u64,
    pub ms: i64,
}

impl Episodes {
    fn add(&mut self, o: Episodes) {
        self.count += o.count;
        self.ms += o.ms;
    }
}

/// One site's month (or the fleet's, added up).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub site: String,
    /// The time measured: the month from the start of the history to now.
    pub window_ms: i64,
    pub available_ms: i64,
    /// Office hours in the time measured, and how much of them available.
    pub office_ms: i64,
    pub office_available_ms: i64,
    pub battery: Episodes,
    pub wan_down: Episodes,
    /// The longest stretch with readings waiting on the card (within the
    /// month).
    pub longest_backlog_ms: i64,
    pub temperature: Episodes,
    pub humidity: Episodes,
    pub contacts: Episodes,
    pub counts: DayCounts,
    pub pending: u64,
    pub explained: u64,
    pub unexplained: u64,
}

fn ratio(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64 * 100.0)
}

impl Row {
    /// Percent of the time measured.
    pub fn availability(&self) -> Option<f64> {
        ratio(self.available_ms, self.window_ms)
    }

    /// Percent of the office hours measured.
    pub fn office_availability(&self) -> Option<f64> {
        ratio(self.office_available_ms, self.office_ms)
    }

    /// Readings received of those that should have come: received /
    /// (received + missing in any state).
    pub fn completeness(&self) -> Option<f64> {
        let missing = self.pending + self.explained + self.unexplained;
        let r = i64::try_from(self.counts.received).unwrap_or(i64::MAX);
        ratio(
            r,
            r.saturating_add(i64::try_from(missing).unwrap_or(i64::MAX)),
        )
    }

    /// Copies removed: plain duplicates and corrected copies.
    pub fn copies_removed(&self) -> u64 {
        self.counts.duplicates + self.counts.corrected_copies
    }

    fn add(&mut self, o: &Row) {
        self.window_ms += o.window_ms;
        self.available_ms += o.available_ms;
        self.office_ms += o.office_ms;
        self.office_available_ms += o.office_available_ms;
        self.battery.add(o.battery);
        self.wan_down.add(o.wan_down);
        self.longest_backlog_ms = self.longest_backlog_ms.max(o.longest_backlog_ms);
        self.temperature.add(o.temperature);
        self.humidity.add(o.humidity);
        self.contacts.add(o.contacts);
        self.counts.add(&o.counts);
        self.pending += o.pending;
        self.explained += o.explained;
        self.unexplained += o.unexplained;
    }
}

/// The month's report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub month: Month,
    /// The month's bounds (UTC ms) and the time measured in it:
    /// `[from_ms, to_ms)`, the month from the history's start to now.
    pub month_ms: (i64, i64),
    pub from_ms: i64,
    pub to_ms: i64,
    pub rows: Vec<Row>,
    /// Every site added up (availability over all sites' time).
    pub total: Row,
}

/// The office hours of `month` as UTC spans.
pub fn office_spans(month: Month, cfg: &ReportConfig) -> Spans {
    let off = i64::from(cfg.offset_s) * 1000;
    let mut v = Vec::new();
    for day in month.days() {
        if !cfg.office_days[weekday(day)] || cfg.holidays.contains(&day) {
            continue;
        }
        for (a, b) in &cfg.office_hours {
            let at = |m: u32| day * DAY_MS + i64::from(m) * 60_000 - off;
            v.push((at(*a), at(*b)));
        }
    }
    Spans::of(v)
}

/// The report of `month` at `now_ms` over a history kept since
/// `since_ms` (`None`: nothing kept yet).
pub fn compute(
    sites: &[SiteInput],
    month: Month,
    now_ms: i64,
    since_ms: Option<i64>,
    cfg: &ReportConfig,
) -> Report {
    let (start, end) = month.bounds_ms(cfg.offset_s);
    let from = since_ms.map_or(end, |s| s.max(start));
    let to = end.min(now_ms).max(from);
    let window = Spans::one(from, to);
    let office = office_spans(month, cfg).intersect(&window);
    let days: BTreeSet<i64> = month.days().collect();
    let mut rows: Vec<Row> = sites
        .iter()
        .map(|s| site_row(s, &window, &office, &days, (start, end), now_ms, cfg))
        .collect();
    rows.sort_by(|a, b| a.site.cmp(&b.site));
    let mut total = Row::default();
    for r in &rows {
        total.add(r);
    }
    Report {
        month,
        month_ms: (start, end),
        from_ms: from,
        to_ms: to,
        rows,
        total,
    }
}

fn condition(s: &SiteInput, c: Condition, now_ms: i64) -> Spans {
    Spans::of(
        s.intervals
            .iter()
            .filter(|i| i.condition == c)
            .map(|i| (i.start_ms, i.end_ms.unwrap_or(now_ms).min(now_ms)))
            .collect(),
    )
}

fn site_row(
    s: &SiteInput,
    window: &Spans,
    office: &Spans,
    days: &BTreeSet<i64>,
    month: (i64, i64),
    now_ms: i64,
    cfg: &ReportConfig,
) -> Row {
    // Heard: from a message to `offline_after` past the last of a span.
    let heard = Spans::of(
        s.heard
            .iter()
            .map(|h| (h.start_ms, (h.last_ms + cfg.offline_after_ms).min(now_ms)))
            .collect(),
    );
    let available = heard
        .minus(&condition(s, Condition::Offline, now_ms))
        .intersect(window);
    let episodes = |c: Condition| {
        let spans = condition(s, c, now_ms);
        Episodes {
            count: spans.count_within(window) as u64,
            ms: spans.intersect(&available).total(),
        }
    };
    let mut counts = DayCounts::default();
    for (_, c) in s.days.iter().filter(|(d, _)| days.contains(d)) {
        counts.add(c);
    }
    let (mut pending, mut explained, mut unexplained) = (0, 0, 0);
    for h in s.holes.iter().filter(|h| h.ts >= month.0 && h.ts < month.1) {
        *match h.kind {
            HoleKind::Pending => &mut pending,
            HoleKind::Explained => &mut explained,
            HoleKind::Unexplained => &mut unexplained,
        } += h.count;
    }
    let longest_backlog_ms = condition(s, Condition::Backlog, now_ms)
        .intersect(window)
        .spans()
        .iter()
        .map(|(a, b)| b - a)
        .max()
        .unwrap_or(0);
    Row {
        site: s.site.clone(),
        window_ms: window.total(),
        available_ms: available.total(),
        office_ms: office.total(),
        office_available_ms: available.intersect(office).total(),
        battery: episodes(Condition::Battery),
        wan_down: episodes(Condition::WanDown),
        longest_backlog_ms,
        temperature: episodes(Condition::Temperature),
        humidity: episodes(Condition::Humidity),
        contacts: episodes(Condition::Contact),
        counts,
        pending,
        explained,
        unexplained,
    }
}

#[cfg(test)]
#[path = "compute_tests.rs"]
mod tests;
