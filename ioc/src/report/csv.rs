//! The report as CSV (RFC 4180): UTF-8 with a byte order mark (so that
//! Excel reads the Vietnamese header as UTF-8), one header row in the
//! report's language, one row per site, no total row. Numbers are plain:
//! a point for decimals, no grouping; minutes rounded; a percentage is
//! empty when nothing was measured. docs/ioc.md lists the columns.

use std::fmt::Write as _;

use super::compute::{Report, Row};
use crate::web::words::ReportStrings;

/// A field quoted when it must be (a comma, a quote, a line break).
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn min(ms: i64) -> String {
    ((ms.max(0) + 30_000) / 60_000).to_string()
}

fn pct(p: Option<f64>) -> String {
    p.map(|p| format!("{p:.2}")).unwrap_or_default()
}

fn values(r: &Report, s: &Row) -> [String; 26] {
    [
        field(&s.site),
        r.month.to_string(),
        min(s.window_ms),
        pct(s.availability()),
        pct(s.office_availability()),
        min(s.office_ms),
        min(s.longest_backlog_ms),
        s.battery.count.to_string(),
        min(s.battery.ms),
        s.wan_down.count.to_string(),
        min(s.wan_down.ms),
        s.temperature.count.to_string(),
        min(s.temperature.ms),
        s.humidity.count.to_string(),
        min(s.humidity.ms),
        s.contacts.count.to_string(),
        min(s.contacts.ms),
        s.counts.received.to_string(),
        s.counts.filled_late.to_string(),
        s.explained.to_string(),
        s.unexplained.to_string(),
        s.pending.to_string(),
        pct(s.completeness()),
        s.copies_removed().to_string(),
        s.counts.contract_breaks.to_string(),
        s.counts.malformed.to_string(),
    ]
}

/// The whole file, lines ending in CRLF (RFC 4180).
pub fn csv(r: &Report, t: &ReportStrings) -> String {
    let mut out = String::from("\u{feff}");
    let head: Vec<String> = t.csv_header.iter().map(|h| field(h)).collect();
    let _ = write!(out, "{}\r\n", head.join(","));
    for s in &r.rows {
        let _ = write!(out, "{}\r\n", values(r, s).join(","));
    }
    out
}
