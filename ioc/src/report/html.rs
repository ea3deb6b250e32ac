//! The report as one HTML page: no script, no external request, a print
//! stylesheet (A4 landscape, the column headings on every page), a card
//! per site below 760 px like the fleet page.

use std::fmt::Write as _;

use super::calendar::{civil, Month};
use super::compute::{Episodes, Report, Row};
use super::config::ReportConfig;
use crate::web::words::{count, duration, esc, number, ReportStrings};

/// Where the page lives, for its links (`/report/2026-12`), and when it
/// was made (ms).
#[derive(Debug, Clone)]
pub struct Page {
    /// The path of the report pages without the month (`/report/`); no
    /// links when `None` (a file written by the CLI).
    pub base: Option<String>,
    pub now_ms: i64,
}

const STYLE: &str = r#"
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif;margin:0;padding:12px 16px;background:#fff;color:#1b1d21;font-size:14px;line-height:1.35}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:4px 16px;margin-bottom:6px}
h1{font-size:1.35rem;margin:0}
h2{font-size:1.05rem;margin:16px 0 4px}
a{color:#0b57d0}
nav{display:flex;flex-wrap:wrap;gap:4px 14px;margin-left:auto}
.meta{margin:2px 0;color:#3c4043;font-size:.9rem}
div.wide{overflow-x:auto}
table{border-collapse:collapse;width:100%;border:1px solid #c4c7c5;font-size:12.5px}
th,td{padding:3px 4px;border:1px solid #dadce0;vertical-align:top}
th{background:#eef0f3;font-weight:600;font-size:11.5px;text-align:center}
thead tr.groups th{font-size:13px;background:#e2e6ea}
td{text-align:right;font-variant-numeric:tabular-nums}
td small{display:block;color:#3c4043;font-size:11.5px}
td.id{text-align:left;font-weight:600;white-space:nowrap}
tr.total td{font-weight:700;background:#f4f5f7;border-top:2px solid #80868b}
.bad{color:#b3261e;font-weight:700}
.warn{color:#a15c00;font-weight:600}
.nil{color:#9aa0a6}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:4px 0;font-size:.85rem}
dt{font-weight:600}
dd{margin:0;color:#3c4043}
@media (max-width:760px){
 body{padding:8px}
 nav{margin-left:0}
 table.cards,table.cards tbody,table.cards tr,table.cards td{display:block;width:100%;border:none}
 table.cards thead{display:none}
 table.cards tr{border:1px solid #c4c7c5;border-radius:8px;margin-bottom:10px;padding:4px 0}
 table.cards td{display:flex;gap:8px;justify-content:space-between;padding:2px 10px;text-align:right;white-space:normal}
 table.cards td.id{font-size:1.05rem}
 table.cards td.e{display:none}
 table.cards td small{display:inline;font-size:inherit;color:inherit}
 table.cards td small::before{content:", "}
 table.cards td[data-label]::before{content:attr(data-label);text-align:left;color:#5f6368;font-size:.85rem;font-weight:normal}
 tr.total td{border-top:none}
 dl{grid-template-columns:1fr}
 dd{margin-bottom:4px}
}
@media print{
 @page{size:A4 landscape;margin:10mm}
 body{padding:0;font-size:8pt}
 nav{display:none}
 div.wide{overflow:visible}
 table{font-size:7pt}
 th{font-size:6.5pt}
 td small{font-size:6.5pt}
 thead tr.groups th{font-size:7pt}
 th,td{padding:1px 2px}
 thead{display:table-header-group}
 tr{break-inside:avoid}
 th,tr.total td{-webkit-print-color-adjust:exact;print-color-adjust:exact}
 a{color:inherit;text-decoration:none}
}
"#;

const NIL: &str = "<span class=\"nil\">";
const NIL_DASH: &str = "<span class=\"nil\">—</span>";

fn month_title(m: Month, t: &ReportStrings) -> String {
    if t.lang == "vi" {
        // "Báo cáo tháng 12/2026".
        return format!("{} {}/{}", t.title, m.month, m.year);
    }
    let name = t.months[(m.month as usize).saturating_sub(1) % 12];
    format!("{}: {name} {}", t.title, m.year)
}

/// `dd/mm/yyyy HH:MM` local.
fn stamp(ms: i64, offset_s: i32) -> String {
    let local = ms.div_euclid(1000) + i64::from(offset_s);
    let (y, m, d) = civil(local.div_euclid(86_400));
    let sod = local.rem_euclid(86_400);
    format!("{d:02}/{m:02}/{y} {:02}:{:02}", sod / 3600, sod % 3600 / 60)
}

fn offset(s: i32) -> String {
    let sign = if s < 0 { '-' } else { '+' };
    let a = s.unsigned_abs();
    format!("UTC{sign}{:02}:{:02}", a / 3600, a % 3600 / 60)
}

/// Office days as runs: "T2–T6", "Mon–Fri, Sun".
fn day_ranges(on: &[bool; 7], t: &ReportStrings) -> String {
    let mut runs: Vec<String> = Vec::new();
    let mut i = 0;
    while i < 7 {
        if !on[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i + 1 < 7 && on[i + 1] {
            i += 1;
        }
        runs.push(match i - start {
            0 => t.days[start].to_owned(),
            1 => format!("{}, {}", t.days[start], t.days[i]),
            _ => format!("{}–{}", t.days[start], t.days[i]),
        });
        i += 1;
    }
    runs.join(", ")
}

/// The offline limit in words, exactly: "3 phút", "90 giây" / "90 s".
fn limit(ms: i64, lang: &str) -> String {
    let s = ms / 1000;
    if s % 60 == 0 {
        duration(s as f64, lang)
    } else if lang == "en" {
        format!("{s} s")
    } else {
        format!("{s} giây")
    }
}

fn hhmm(m: u32) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// A percentage, red below 95 and orange below 99.
fn pct(p: Option<f64>, lang: &str) -> String {
    match p {
        None => NIL_DASH.into(),
        Some(p) => {
            let class = if p < 95.0 {
                " class=\"bad\""
            } else if p < 99.0 {
                " class=\"warn\""
            } else {
                ""
            };
            format!("<span{class}>{}%</span>", number(p, 2, lang))
        }
    }
}

fn dur(ms: i64, lang: &str) -> String {
    if ms <= 0 {
        return NIL_DASH.into();
    }
    // "16&nbsp;h 30&nbsp;min": a number stays with its unit; the parts
    // may wrap in a narrow column.
    let text = duration(ms as f64 / 1000.0, lang);
    let mut out = String::new();
    for w in text.split(' ') {
        if !out.is_empty() {
            let glue = out.ends_with(|c: char| c.is_ascii_digit());
            out.push_str(if glue { "&nbsp;" } else { " " });
        }
        out.push_str(w);
    }
    out
}

fn episodes(e: Episodes, t: &ReportStrings, lang: &str) -> String {
    if e.count == 0 && e.ms <= 0 {
        return NIL_DASH.into();
    }
    let word = if e.count == 1 { t.time_one } else { t.times };
    let times = format!("{}&nbsp;{word}", count(e.count, lang));
    if e.ms <= 0 {
        // Every minute of it while the site was not heard.
        return times;
    }
    format!("<span>{times}<small>{}</small></span>", dur(e.ms, lang))
}

fn n(x: u64, lang: &str, alarm: bool) -> String {
    match x {
        0 => format!("{NIL}0</span>"),
        x if alarm => format!("<span class=\"bad\">{}</span>", count(x, lang)),
        x => count(x, lang),
    }
}

/// The cells of one row, in the order of `t.columns`.
fn cells(r: &Row, t: &ReportStrings, lang: &str) -> [String; 18] {
    [
        pct(r.availability(), lang),
        pct(r.office_availability(), lang),
        dur(r.longest_backlog_ms, lang),
        n(r.battery.count, lang, false),
        dur(r.battery.ms, lang),
        episodes(r.wan_down, t, lang),
        episodes(r.temperature, t, lang),
        episodes(r.humidity, t, lang),
        episodes(r.contacts, t, lang),
        count(r.counts.received, lang),
        n(r.counts.filled_late, lang, false),
        n(r.explained, lang, false),
        n(r.unexplained, lang, true),
        n(r.pending, lang, false),
        pct(r.completeness(), lang),
        n(r.copies_removed(), lang, false),
        n(r.counts.contract_breaks, lang, true),
        n(r.counts.malformed, lang, true),
    ]
}

fn row(out: &mut String, class: &str, name: &str, r: &Row, t: &ReportStrings, lang: &str) {
    let _ = write!(out, "<tr{class}><td class=\"id\">{}</td>", esc(name));
    for (c, label) in cells(r, t, lang).iter().zip(t.columns) {
        // Nothing to say: left off a phone's card.
        let e = if c.starts_with(NIL) {
            " class=\"e\""
        } else {
            ""
        };
        let _ = write!(out, "<td{e} data-label=\"{}\">{c}</td>", esc(label));
    }
    out.push_str("</tr>");
}

fn head(out: &mut String, t: &ReportStrings) {
    let groups = [
        (t.g_live, 3),
        (t.g_power, 3),
        (t.g_env, 3),
        (t.g_complete, 6),
        (t.g_clean, 1),
        (t.g_correct, 2),
    ];
    let _ = write!(
        out,
        "<div class=\"wide\"><table class=\"cards\"><thead><tr class=\"groups\"><th rowspan=\"2\">{}</th>",
        t.site
    );
    for (g, span) in groups {
        let _ = write!(out, "<th colspan=\"{span}\">{g}</th>");
    }
    out.push_str("</tr><tr>");
    for (c, help) in t.columns.iter().zip(t.help) {
        let _ = write!(out, "<th title=\"{}\">{c}</th>", esc(help));
    }
    out.push_str("</tr></thead><tbody>");
}

/// The lines under the title: what was measured, office hours, the
/// offline rule, the bounds, when made; and the links.
fn preamble(out: &mut String, r: &Report, cfg: &ReportConfig, t: &ReportStrings, page: &Page) {
    let lang = t.lang;
    let days = day_ranges(&cfg.office_days, t);
    let hours: Vec<String> = cfg
        .office_hours
        .iter()
        .map(|(a, b)| format!("{}–{}", hhmm(*a), hhmm(*b)))
        .collect();
    let zone = offset(cfg.offset_s);
    let _ = write!(
        out,
        "<p class=\"meta\">{}: {} – {} ({} {zone}). {}: {}, {}{}.</p>",
        t.measured,
        stamp(r.from_ms, cfg.offset_s),
        stamp(r.to_ms, cfg.offset_s),
        t.local_time,
        t.office,
        days,
        hours.join(", "),
        if cfg.holidays.is_empty() {
            String::new()
        } else {
            format!(" ({} {})", t.holidays, cfg.holidays.len())
        },
    );
    let mut bounds = Vec::new();
    if let Some((lo, hi)) = cfg.temperature {
        bounds.push(format!(
            "{}–{}&nbsp;°C",
            number(lo, 0, lang),
            number(hi, 0, lang)
        ));
    }
    if let Some((lo, hi)) = cfg.humidity {
        bounds.push(format!(
            "{}–{}&nbsp;%",
            number(lo, 0, lang),
            number(hi, 0, lang)
        ));
    }
    let _ = write!(
        out,
        "<p class=\"meta\">{} {}. {}: {}. {} {}.</p>",
        t.offline_rule,
        limit(cfg.offline_after_ms, lang),
        t.bounds,
        if bounds.is_empty() {
            "—".into()
        } else {
            bounds.join(", ")
        },
        t.generated,
        stamp(page.now_ms, cfg.offset_s),
    );
}

/// The whole page.
pub fn html(r: &Report, cfg: &ReportConfig, t: &ReportStrings, page: &Page) -> String {
    let lang = t.lang;
    let title = month_title(r.month, t);
    let mut out = String::with_capacity(8192 + r.rows.len() * 1500);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{title}</title><style>{STYLE}</style></head><body><header><h1>{title}</h1>",
        title = esc(&title)
    );
    if let Some(base) = &page.base {
        let q = if lang == "en" { "?lang=en" } else { "" };
        let (other, other_q, other_word) = if lang == "en" {
            ("vi", "", "Tiếng Việt")
        } else {
            ("en", "?lang=en", "English")
        };
        let _ = write!(
            out,
            "<nav><a href=\"{base}{p}{q}\">{}</a><a href=\"{base}{nx}{q}\">{}</a>\
<a href=\"{base}{m}.csv{q}\">{}</a><a href=\"{base}{m}{other_q}\" hreflang=\"{other}\">{other_word}</a></nav>",
            t.prev,
            t.next,
            t.csv,
            p = r.month.prev(),
            nx = r.month.next(),
            m = r.month,
        );
    }
    out.push_str("</header>");
    preamble(&mut out, r, cfg, t, page);
    if r.to_ms <= r.from_ms {
        let _ = write!(out, "<p><b>{}</b></p>", t.nothing);
    }
    head(&mut out, t);
    for s in &r.rows {
        row(&mut out, "", &s.site, s, t, lang);
    }
    let total = format!("{} ({})", t.total, count(r.rows.len() as u64, lang));
    row(&mut out, " class=\"total\"", &total, &r.total, t, lang);
    let _ = write!(out, "</tbody></table></div><h2>{}</h2><dl>", t.how_to_read);
    for (c, help) in t.columns.iter().zip(t.help) {
        let _ = write!(out, "<dt>{c}</dt><dd>{help}</dd>");
    }
    out.push_str("</dl></body></html>");
    out
}
