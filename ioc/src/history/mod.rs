//! What the monthly report is computed from, kept as it happens: per site
//! the spans of time it was heard from, the intervals of each condition
//! (offline, on battery, internet down, a backlog waiting, an
//! environment excursion), and per local day the ledger's running counts
//! added up (docs/ioc.md, "Monthly report").
//!
//! [`Tracker`] is a pure state machine like the fleet view it watches:
//! after each message the ingest gives it the site's fleet view and
//! ledger totals ([`Tracker::observe`]); it compares them with what it
//! saw before and collects the changes ([`Delta`]) that the store writes
//! in the batch's commit, the same transaction as the ledger and the
//! fleet view (acknowledged after it). Times are the consumer's clock, as
//! in the fleet view.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fleet::{Presence, Site};
use crate::ledger::SiteTotals;

/// Why a saved row of the history cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A condition name this build does not know (a newer build wrote
    /// it): the row is left out of the report, the rest is used.
    #[error("unknown condition {0:?}")]
    Condition(String),
}

/// A condition a site can be in for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Condition {
    /// Its last status is offline (the last will, a stop).
    Offline,
    /// A UPS of the site on battery (live `ups.status` `OB`, `ups.on_battery`).
    Battery,
    /// `wan.down` or every probe target down.
    WanDown,
    /// Live `spool.depth` above 0: readings waiting on the card.
    Backlog,
    /// A temperature outside the bounds: a `threshold.high`/`low` on a
    /// value named `…temperature`, or `ambient.temperature` outside
    /// `report.temperature`.
    Temperature,
    /// The same for humidity.
    Humidity,
    /// Another threshold alarm.
    Threshold,
    /// A contact raised (door open, water leak, smoke: `<input>.<state>`
    /// at warning or critical).
    Contact,
}

impl Condition {
    pub const ALL: [Condition; 8] = [
        Condition::Offline,
        Condition::Battery,
        Condition::WanDown,
        Condition::Backlog,
        Condition::Temperature,
        Condition::Humidity,
        Condition::Threshold,
        Condition::Contact,
    ];

    /// Its name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Offline => "offline",
            Condition::Battery => "battery",
            Condition::WanDown => "wan_down",
            Condition::Backlog => "backlog",
            Condition::Temperature => "temperature",
            Condition::Humidity => "humidity",
            Condition::Threshold => "threshold",
            Condition::Contact => "contact",
        }
    }
}

impl std::str::FromStr for Condition {
    type Err = HistoryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Condition::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| HistoryError::Condition(s.chars().take(40).collect()))
    }
}

/// One interval of a condition: `[start_ms, end_ms)`, open while `end_ms`
/// is `None`. `detail` tells intervals of one condition apart (which
/// alarm, which value); empty for the site-wide ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    pub site: String,
    pub condition: Condition,
    pub detail: String,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
}

/// A span of time a site was heard from: messages no further apart than
/// `offline_after`, the first at `start_ms`, the last at `last_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    pub start_ms: i64,
    pub last_ms: i64,
}

/// The ledger's running counts added up over one local day (by arrival).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayCounts {
    pub received: u64,
    pub filled_late: u64,
    pub duplicates: u64,
    pub corrected_copies: u64,
    pub contract_breaks: u64,
    pub malformed: u64,
}

impl DayCounts {
    fn between(before: &SiteTotals, now: &SiteTotals) -> DayCounts {
        let d = |a: u64, b: u64| b.saturating_sub(a);
        DayCounts {
            received: d(before.received, now.received),
            filled_late: d(before.filled_late, now.filled_late),
            duplicates: d(before.duplicates, now.duplicates),
            corrected_copies: d(before.corrected_copies, now.corrected_copies),
            contract_breaks: d(before.contract_breaks, now.contract_breaks),
            malformed: d(before.malformed, now.malformed),
        }
    }

    pub fn add(&mut self, o: &DayCounts) {
        self.received += o.received;
        self.filled_late += o.filled_late;
        self.duplicates += o.duplicates;
        self.corrected_copies += o.corrected_copies;
        self.contract_breaks += o.contract_breaks;
        self.malformed += o.malformed;
    }

    pub fn is_zero(&self) -> bool {
        *self == DayCounts::default()
    }
}

/// What the tracker needs of `[report]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackConfig {
    pub offline_after_ms: i64,
    /// Days are local days at this offset (seconds east of UTC).
    pub offset_s: i32,
    pub temperature: Option<(f64, f64)>,
    pub humidity: Option<(f64, f64)>,
}

/// The changes of one batch, for the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delta {
    /// Intervals opened or closed (written whole, by their key).
    pub intervals: Vec<Interval>,
    /// `(site, start_ms)` -> the span heard (written whole).
    pub heard: BTreeMap<(String, i64), i64>,
    /// `(site, local day)` -> counts to add.
    pub days: BTreeMap<(String, i64), DayCounts>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty() && self.heard.is_empty() && self.days.is_empty()
    }
}

/// Where the tracker resumes: what the store holds open.
#[derive(Debug, Clone, Default)]
pub struct Resumed {
    /// Intervals without an end.
    pub open: Vec<Interval>,
    /// Each site's last span heard.
    pub heard: BTreeMap<String, Heard>,
}

type Key = (Condition, String);

/// Watches each site's fleet view and ledger totals; collects changes.
#[derive(Debug, Clone)]
pub struct Tracker {
    cfg: TrackConfig,
    open: BTreeMap<String, BTreeMap<Key, i64>>,
    heard: BTreeMap<String, Heard>,
    totals: BTreeMap<String, SiteTotals>,
    delta: Delta,
}

impl Tracker {
    /// A tracker resuming from the store, the ledger's totals as restored
    /// (committed with the history, so they match it).
    pub fn new(
        cfg: TrackConfig,
        resumed: Resumed,
        totals: BTreeMap<String, SiteTotals>,
    ) -> Tracker {
        let mut open: BTreeMap<String, BTreeMap<Key, i64>> = BTreeMap::new();
        for i in resumed.open {
            open.entry(i.site)
                .or_default()
                .insert((i.condition, i.detail), i.start_ms);
        }
        Tracker {
            cfg,
            open,
            heard: resumed.heard,
            totals,
            delta: Delta::default(),
        }
    }

    /// After a message of `site` at `at_ms`: its fleet view (if any) and
    /// its ledger totals (if any) now.
    pub fn observe(
        &mut self,
        site: &str,
        view: Option<&Site>,
        totals: Option<SiteTotals>,
        at_ms: i64,
    ) {
        if let Some(view) = view {
            let now = conditions(view, &self.cfg);
            let open = self.open.entry(site.to_owned()).or_default();
            let closed: Vec<Key> = open.keys().filter(|k| !now.contains(k)).cloned().collect();
            for k in closed {
                if let Some(start) = open.remove(&k) {
                    self.delta.intervals.push(Interval {
                        site: site.to_owned(),
                        condition: k.0,
                        detail: k.1,
                        start_ms: start,
                        end_ms: Some(at_ms.max(start)),
                    });
                }
            }
            for k in now {
                if !open.contains_key(&k) {
                    open.insert(k.clone(), at_ms);
                    self.delta.intervals.push(Interval {
                        site: site.to_owned(),
                        condition: k.0,
                        detail: k.1,
                        start_ms: at_ms,
                        end_ms: None,
                    });
                }
            }
        }
        if let Some(t) = totals {
            let before = self.totals.insert(site.to_owned(), t).unwrap_or_default();
            let d = DayCounts::between(&before, &t);
            if !d.is_zero() {
                let day = local_day(at_ms, self.cfg.offset_s);
                self.delta
                    .days
                    .entry((site.to_owned(), day))
                    .or_default()
                    .add(&d);
            }
        }
    }

    /// A sign of life of `site` at `at_ms`: a message its gateway sent
    /// (not a status or an inventory: the broker sends the retained ones
    /// again to every new subscriber, and the last will is the broker's).
    pub fn hear(&mut self, site: &str, at_ms: i64) {
        let span = match self.heard.get(site) {
            Some(h) if at_ms - h.last_ms <= self.cfg.offline_after_ms => Heard {
                start_ms: h.start_ms,
                last_ms: h.last_ms.max(at_ms),
            },
            _ => Heard {
                start_ms: at_ms,
                last_ms: at_ms,
            },
        };
        self.heard.insert(site.to_owned(), span);
        self.delta
            .heard
            .insert((site.to_owned(), span.start_ms), span.last_ms);
    }

    /// The changes since the last drain.
    pub fn drain(&mut self) -> Delta {
        std::mem::take(&mut self.delta)
    }
}

/// The local day (days since 1970-01-01) of `ms` at `offset_s` east of UTC.
pub fn local_day(ms: i64, offset_s: i32) -> i64 {
    (ms + i64::from(offset_s) * 1000).div_euclid(86_400_000)
}

/// The conditions a site's fleet view is in now.
fn conditions(s: &Site, cfg: &TrackConfig) -> Vec<Key> {
    let mut out = Vec::new();
    let mut site_wide = |c: Condition, on: bool| {
        if on {
            out.push((c, String::new()));
        }
    };
    site_wide(
        Condition::Offline,
        matches!(
            s.presence.as_ref().map(|p| &p.value),
            Some(Presence::Offline { .. })
        ),
    );
    site_wide(Condition::Battery, s.on_battery() == Some(true));
    site_wide(Condition::WanDown, s.wan.as_ref().is_some_and(|w| !w.value));
    site_wide(Condition::Backlog, s.backlog.is_some_and(|b| b.depth > 0));
    for (key, a) in &s.alarms {
        let family = a.code.split('.').next().unwrap_or_default();
        let c = if family == "threshold" {
            named(key).unwrap_or(Condition::Threshold)
        } else if matches!(family, "ups" | "pi" | "spool" | "interface") {
            continue;
        } else {
            Condition::Contact
        };
        out.push((c, key.clone()));
    }
    let bounds = [
        (
            "ambient.temperature",
            Condition::Temperature,
            cfg.temperature,
        ),
        ("ambient.humidity", Condition::Humidity, cfg.humidity),
    ];
    for (id, d) in &s.devices {
        for (name, c, b) in bounds {
            let Some((lo, hi)) = b else { continue };
            let v = d.values.get(name).and_then(|v| v.parse::<f64>().ok());
            if v.is_some_and(|v| v < lo || v > hi) {
                out.push((c, format!("{id}/{name}")));
            }
        }
    }
    out
}

/// Temperature or humidity by the value's name.
fn named(key: &str) -> Option<Condition> {
    let k = key.to_ascii_lowercase();
    if k.contains("temperature") {
        Some(Condition::Temperature)
    } else if k.contains("humidity") {
        Some(Condition::Humidity)
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
