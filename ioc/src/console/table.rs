//! The fleet in a terminal: a line of totals, a header, one line per site
//! (worst first, as the page), a legend; plain text within 100 columns.
//! Pure: the saved state and the time in, text out.
//!
//! Cells are short: durations as `2g05` / `2h05` (hours and minutes),
//! `3n04g` / `3d04h`, `15p` / `15m`; what is wrong in capitals (`MẤT`,
//! `PIN`); an offline site's power, internet, backlog and clock, which are
//! what it said last, marked `~`. Text from the wire (versions) has its
//! control characters replaced: a version cannot move the cursor or
//! recolour the operator's terminal.

use std::fmt::Write as _;

use super::snapshot::{SavedSite, Snapshot};
use super::words::Words;
use crate::fleet::{rank, Presence, Site};
use crate::ledger::SiteTotals;
use crate::web::words::{count, strings, when};

/// The width every line fits in.
pub const WIDTH: usize = 100;

/// The longest site id and version shown whole; longer ones are cut with
/// `…` (`--json` has them whole).
const SITE_MAX: usize = 24;
const VERSION_MAX: usize = 12;

/// Sites worst first (the page's order: worst concern, longest standing,
/// id).
pub fn ordered(snap: &Snapshot) -> Vec<(&str, &SavedSite)> {
    let mut v: Vec<_> = snap.sites.iter().map(|(k, s)| (k.as_str(), s)).collect();
    v.sort_by_cached_key(|(id, s)| (rank(&s.site, ok_totals(s).as_ref()), id.to_string()));
    v
}

/// The totals when the ledger row read.
pub fn ok_totals(s: &SavedSite) -> Option<SiteTotals> {
    s.totals.as_ref().and_then(|t| t.as_ref().ok()).copied()
}

/// The whole table at `now_ms`.
pub fn render(w: &Words, snap: &Snapshot, now_ms: i64) -> String {
    let sites = ordered(snap);
    let mut out = String::new();
    summary(&mut out, w, &sites, now_ms);
    let header: Vec<String> = w.columns.iter().map(|c| c.to_string()).collect();
    let rows: Vec<Vec<String>> = sites
        .iter()
        .map(|(id, s)| cells(w, id, s, now_ms))
        .collect();
    let widths = widths(&header, &rows);
    line(&mut out, &header, &widths);
    for r in &rows {
        line(&mut out, r, &widths);
    }
    for l in w.legend {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// "40 điểm: 39 đang kết nối, …" and when the newest message came.
fn summary(out: &mut String, w: &Words, sites: &[(&str, &SavedSite)], now_ms: i64) {
    let t = strings(Some(w.lang));
    let n = |f: &dyn Fn(&SavedSite) -> bool| sites.iter().filter(|(_, s)| f(s)).count();
    let online = n(&|s| s.site.online() == Some(true));
    let offline = n(&|s| s.site.online() == Some(false));
    let battery = n(&|s| s.site.on_battery() == Some(true));
    let holes = n(&|s| ok_totals(s).is_some_and(|x| x.unexplained > 0));
    let _ = writeln!(
        out,
        "{} {}: {online} {}, {offline} {}, {battery} {}, {holes} {}",
        sites.len(),
        t.sites,
        t.summary_online,
        t.summary_offline,
        t.summary_battery,
        t.summary_holes
    );
    let newest = sites.iter().filter_map(|(_, s)| s.site.last_seen_ms).max();
    let _ = match newest {
        Some(ms) => writeln!(
            out,
            "{} {} ({} {})",
            w.newest,
            when(ms, now_ms),
            short(secs(ms, now_ms), w.lang),
            t.ago
        ),
        None => writeln!(out, "{} {}", w.newest, t.never),
    };
}

fn secs(since_ms: i64, now_ms: i64) -> f64 {
    (now_ms.saturating_sub(since_ms)).max(0) as f64 / 1000.0
}

/// A duration in a few characters: `<1p`, `15p`, `2g05`, `3n04g` in
/// Vietnamese; `<1m`, `15m`, `2h05`, `3d04h` in English.
pub fn short(secs: f64, lang: &str) -> String {
    let (d_, h_, m_) = if lang == "en" {
        ("d", "h", "m")
    } else {
        ("n", "g", "p")
    };
    let s = secs.max(0.0).round() as u64;
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    if d > 0 {
        format!("{d}{d_}{h:02}{h_}")
    } else if h > 0 {
        format!("{h}{h_}{m:02}")
    } else if m > 0 {
        format!("{m}{m_}")
    } else {
        format!("<1{m_}")
    }
}

/// One site's cells, in the order of [`Words::columns`].
fn cells(w: &Words, id: &str, s: &SavedSite, now: i64) -> Vec<String> {
    let site = &s.site;
    let ago = |since: i64| short(secs(since, now), w.lang);
    let link = match &site.presence {
        None => "?".to_owned(),
        Some(p) => {
            let word = match &p.value {
                Presence::Online => w.online,
                Presence::Offline { reason } => match reason.as_str() {
                    "lost" => w.lost,
                    "shutdown" => w.shutdown,
                    "power" => w.power_off,
                    _ => w.offline,
                },
            };
            format!("{word} {}", ago(p.since_ms))
        }
    };
    let stale = |cell: String| {
        if site.online() == Some(false) && cell != "—" {
            format!("~{cell}")
        } else {
            cell
        }
    };
    let totals = match &s.totals {
        None => "—".to_owned(),
        Some(Err(_)) => "?".to_owned(),
        Some(Ok(t)) => count(t.unexplained, w.lang),
    };
    vec![
        clean(id),
        link,
        stale(power(w, site, now)),
        stale(match &site.wan {
            None => "—".into(),
            Some(x) if x.value => w.wan_up.into(),
            Some(x) => format!("{} {}", w.wan_down, ago(x.since_ms)),
        }),
        alarms(site),
        stale(match site.backlog {
            None => "—".into(),
            Some(b) if b.depth == 0 => "0".into(),
            Some(b) => match b.since_ms {
                Some(since) => format!("{} {}", count(b.depth, w.lang), ago(since)),
                None => count(b.depth, w.lang),
            },
        }),
        stale(match &site.clock {
            None => "—".into(),
            Some(c) if c.value => w.clock_ok.into(),
            Some(c) => format!("{} {}", w.clock_bad, ago(c.since_ms)),
        }),
        clean(site.identity.version.as_deref().unwrap_or("—")),
        totals,
    ]
}

fn power(w: &Words, site: &Site, now: i64) -> String {
    let Some(u) = site.ups() else {
        return "—".into();
    };
    let mut cell = if u.on_battery.value {
        let word = if u.low_battery {
            w.low_battery
        } else {
            w.battery
        };
        format!("{word} {}", short(secs(u.on_battery.since_ms, now), w.lang))
    } else {
        w.mains.to_owned()
    };
    if let Some(r) = u.runtime_s.filter(|r| r.is_finite()) {
        let _ = write!(cell, " ≈{}", short(r, w.lang));
    }
    cell
}

/// How many alarms are raised, `!` when one is critical.
fn alarms(site: &Site) -> String {
    let critical = site
        .alarms
        .values()
        .any(|a| a.severity == wardgate_contract::Severity::Critical);
    format!("{}{}", site.alarms.len(), if critical { "!" } else { "" })
}

/// Control characters (ESC, newlines…) replaced by `?`.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Each column as wide as its widest cell; the site and version columns
/// cut (`…`) when the line would pass [`WIDTH`].
fn widths(header: &[String], rows: &[Vec<String>]) -> Vec<usize> {
    let mut w: Vec<usize> = header.iter().map(|h| chars(h)).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(chars(c));
            }
        }
    }
    let (site, version) = (0, header.len().saturating_sub(2));
    w[site] = w[site].min(SITE_MAX).max(chars(&header[site]));
    w[version] = w[version].min(VERSION_MAX).max(chars(&header[version]));
    let total = |w: &[usize]| w.iter().sum::<usize>() + w.len().saturating_sub(1);
    while total(&w) > WIDTH && w[version] > chars(&header[version]).max(5) {
        w[version] -= 1;
    }
    while total(&w) > WIDTH && w[site] > chars(&header[site]).max(10) {
        w[site] -= 1;
    }
    w
}

/// One line: cells padded to their width (cut with `…` where wider), the
/// last column (a count) to the right, no trailing spaces.
fn line(out: &mut String, cells: &[String], widths: &[usize]) {
    let mut l = String::new();
    let last = cells.len().saturating_sub(1);
    for (i, (c, &w)) in cells.iter().zip(widths).enumerate() {
        let c = if chars(c) > w {
            let mut cut: String = c.chars().take(w.saturating_sub(1)).collect();
            cut.push('…');
            cut
        } else {
            c.clone()
        };
        let pad = " ".repeat(w - chars(&c));
        if i > 0 {
            l.push(' ');
        }
        if i == last {
            l.push_str(&pad);
            l.push_str(&c);
        } else {
            l.push_str(&c);
            l.push_str(&pad);
        }
    }
    out.push_str(l.trim_end());
    out.push('\n');
}
