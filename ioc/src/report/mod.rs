//! The monthly report (docs/ioc.md, "Monthly report"): per site, the
//! month's availability over 24 hours and over office hours, power
//! outages and time on battery, internet down, environment excursions,
//! and the data's completeness, under the headings an operations centre
//! reports upward with: live, complete, clean, correct.
//!
//! Computed by a pure function ([`compute`]) from the history the ingest
//! keeps in the store ([`crate::history`], `store/history.rs`) and the
//! ledger's holes now; written as HTML (printable) or CSV, in Vietnamese
//! or English. `wardgate-ioc report` and the pages' `/report/<YYYY-MM>`
//! both call [`from_store`].

pub mod calendar;
mod compute;
pub mod config;
mod csv;
mod html;

use std::path::Path;

use crate::dedup::Dedup;
use crate::history::TrackConfig;
use crate::ledger::{HoleState, Ledger, LedgerConfig, LedgerError, Reason};
use crate::store::{HistoryReader, HistoryRows, StoreError};

pub use calendar::Month;
pub use compute::{compute, office_spans, Episodes, HoleAt, HoleKind, Report, Row, SiteInput};
pub use config::{RawReport, ReportConfig};
pub use csv::csv;
pub use html::{html, Page};

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Not a month like `2026-12`: ask again with one.
    #[error("{0:?} is not a month like 2026-12")]
    Month(String),
    /// The store cannot be read (missing, locked, damaged): fix the path
    /// in the config, or wait for the writer.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The saved ledger does not restore: the holes cannot be counted;
    /// the service would refuse it too (move the store aside).
    #[error("saved ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// The config cannot be used (exit 78, like `run`): fix it.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// `--out` cannot be written: fix the path or its permissions.
    #[error("{path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// HTML or CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Html,
    Csv,
}

impl ReportConfig {
    /// What the history tracker needs of it.
    pub fn track(&self) -> TrackConfig {
        TrackConfig {
            offline_after_ms: self.offline_after_ms,
            offset_s: self.offset_s,
            temperature: self.temperature,
            humidity: self.humidity,
        }
    }
}

/// A site's holes now, each part dated by the `ts` of the record just
/// above its hole (the gateway's clock).
pub fn holes(ledger: &Ledger, site: &str) -> Vec<HoleAt> {
    let Some(s) = ledger.site(site) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for st in s.streams.values() {
        for p in &st.view {
            let Some((_, raw)) = st.holes.range(..=p.range.first).next_back() else {
                continue;
            };
            let kind = match p.state {
                // Numbers never used: no reading is missing under them.
                HoleState::Explained(Reason::Unused) => continue,
                HoleState::Pending => HoleKind::Pending,
                HoleState::Explained(_) => HoleKind::Explained,
                HoleState::Unexplained => HoleKind::Unexplained,
            };
            out.push(HoleAt {
                ts: raw.before_ts,
                kind,
                count: p.range.len(),
            });
        }
    }
    out
}

/// The history of `month` as the store holds it.
pub fn read_history(
    path: &Path,
    month: Month,
    cfg: &ReportConfig,
) -> Result<HistoryRows, ReportError> {
    let (from, to) = month.bounds_ms(cfg.offset_s);
    let r = HistoryReader::open(path)?;
    Ok(r.rows(from, to, cfg.offline_after_ms, month.days())?)
}

/// The report from the store's history and each site's holes
/// (`holes(site)`, from the ledger).
pub fn build(
    rows: HistoryRows,
    mut holes: impl FnMut(&str) -> Vec<HoleAt>,
    month: Month,
    now_ms: i64,
    cfg: &ReportConfig,
) -> Report {
    let inputs: Vec<SiteInput> = rows
        .sites
        .into_iter()
        .map(|(site, h)| SiteInput {
            holes: holes(&site),
            site,
            intervals: h.intervals,
            heard: h.heard,
            days: h.days,
        })
        .collect();
    compute(&inputs, month, now_ms, rows.since_ms, cfg)
}

/// `wardgate-ioc report`: the store read (read-only, beside a running
/// service), the ledger restored from it for its holes.
pub fn from_store(
    path: &Path,
    month: Month,
    now_ms: i64,
    cfg: &ReportConfig,
    from_zero: bool,
) -> Result<Report, ReportError> {
    let rows = read_history(path, month, cfg)?;
    let state = HistoryReader::open(path)?.ledger_state()?;
    let ledger = Ledger::restore(LedgerConfig { from_zero }, Dedup::default(), state)?;
    Ok(build(rows, |s| holes(&ledger, s), month, now_ms, cfg))
}

/// `wardgate-ioc report --config FILE --month YYYY-MM`: the report of
/// `month` now, written to `out` (write-then-rename) or to stdout.
pub fn cli(
    config: &Path,
    month: &str,
    lang: &str,
    format: Format,
    out: Option<&Path>,
) -> Result<(), ReportError> {
    let cfg = crate::config::load(config)?;
    let month: Month = month.parse()?;
    let now = crate::web::system_ms();
    let r = from_store(
        &cfg.store_path,
        month,
        now,
        &cfg.report,
        cfg.ingest.from_zero,
    )?;
    let page = Page {
        base: None,
        now_ms: now,
    };
    let bytes = render(&r, &cfg.report, format, Some(lang), &page);
    let write = |path: &Path, e: std::io::Error| ReportError::Write {
        path: path.display().to_string(),
        source: e,
    };
    match out {
        None => {
            use std::io::Write;
            let mut o = std::io::stdout().lock();
            o.write_all(&bytes)
                .and_then(|()| o.flush())
                .map_err(|e| write(Path::new("stdout"), e))
        }
        Some(path) => {
            let mut tmp = path.as_os_str().to_owned();
            tmp.push(".tmp");
            let tmp = std::path::PathBuf::from(tmp);
            std::fs::write(&tmp, &bytes).map_err(|e| write(&tmp, e))?;
            std::fs::rename(&tmp, path).map_err(|e| write(path, e))
        }
    }
}

/// The report in `format` and `lang`.
pub fn render(
    r: &Report,
    cfg: &ReportConfig,
    format: Format,
    lang: Option<&str>,
    page: &Page,
) -> Vec<u8> {
    let t = crate::web::words::report_strings(lang);
    match format {
        Format::Html => html(r, cfg, t, page).into_bytes(),
        Format::Csv => csv(r, t).into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_and_csv_has_the_bom_a_header_and_quotes() {
        let cfg = ReportConfig::default();
        let month: Month = "2026-12".parse().unwrap();
        let (start, end) = month.bounds_ms(cfg.offset_s);
        let site = SiteInput {
            site: "<b>x\",y".into(),
            heard: vec![crate::history::Heard {
                start_ms: start,
                last_ms: end,
            }],
            ..SiteInput::default()
        };
        let r = compute(&[site], month, end, Some(start), &cfg);
        let page = Page {
            base: Some("/report/".into()),
            now_ms: end,
        };
        let vi = String::from_utf8(render(&r, &cfg, Format::Html, None, &page)).unwrap();
        assert!(vi.contains("&lt;b&gt;x&quot;,y") && !vi.contains("<b>x"));
        assert!(vi.contains("<h1>Báo cáo tháng 12/2026</h1>"));
        assert!(vi.contains("href=\"/report/2026-11\"") && vi.contains("href=\"/report/2027-01\""));
        assert!(vi.contains("100,00%"), "Vietnamese decimals");
        assert!(vi.contains("quá 3 phút."), "the offline limit");
        let short = ReportConfig {
            offline_after_ms: 30_000,
            ..cfg.clone()
        };
        let en = String::from_utf8(render(&r, &short, Format::Html, Some("en"), &page)).unwrap();
        assert!(en.contains("more than 30 s."), "the offline limit");
        let en = String::from_utf8(render(&r, &cfg, Format::Html, Some("en"), &page)).unwrap();
        assert!(en.contains("<h1>Monthly report: December 2026</h1>") && en.contains("100.00%"));
        let none = Page {
            base: None,
            now_ms: end,
        };
        assert!(
            !String::from_utf8(render(&r, &cfg, Format::Html, None, &none))
                .unwrap()
                .contains("<nav>")
        );
        let csv = String::from_utf8(render(&r, &cfg, Format::Csv, Some("en"), &page)).unwrap();
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert!(lines[0].starts_with("\u{feff}site,month,measured_min,available_24h_pct,"));
        assert_eq!(lines[0].split(',').count(), 26);
        assert!(
            lines[1].starts_with("\"<b>x\"\",y\",2026-12,44640,100.00,100.00,11040,0,"),
            "{}",
            lines[1]
        );
        assert_eq!(lines[2], "");
    }
}
