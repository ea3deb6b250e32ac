//! `/`: every site on one screen, worst first. A table on a desk screen,
//! a card per site on a phone (the same HTML; CSS turns each row into a
//! card below 760 px). Pure functions of the fleet view and the ledger.

use std::fmt::Write as _;

use super::words::{count, duration, esc, when, Strings};
use crate::fleet::{concerns, rank, Concern, Fleet, Presence, Site};
use crate::ledger::{Ledger, SiteTotals};

/// The stylesheet both pages share: no external request, no script.
pub(super) const STYLE: &str = r#"
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif;margin:0;padding:12px 16px;background:#f4f5f7;color:#1b1d21;font-size:15px;line-height:1.35}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:4px 16px;margin-bottom:8px}
h1{font-size:1.35rem;margin:0}
h2{font-size:1.1rem;margin:18px 0 6px}
a{color:#0b57d0}
.lang{margin-left:auto;white-space:nowrap}
.muted{color:#5f6368;font-size:.85rem}
.summary{margin:4px 0 10px;font-size:1rem}
.summary b.bad{color:#b3261e}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #dadce0}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e8eaed;vertical-align:top}
th{background:#eef0f3;font-weight:600;font-size:.85rem}
table.fleet td:first-child{white-space:nowrap}
tr.bad td:first-child{border-left:6px solid #b3261e}
tr.warn td:first-child{border-left:6px solid #e37400}
tr.ok td:first-child{border-left:6px solid #188038}
.bad-t{color:#b3261e;font-weight:600}
.warn-t{color:#a15c00;font-weight:600}
.ok-t{color:#188038}
.num{font-variant-numeric:tabular-nums}
.small{font-size:.8rem;color:#5f6368}
ul.alarms{margin:0;padding-left:1.1em}
ul.holes{margin:0;padding-left:1.1em}
.id{white-space:nowrap}
.stale,.stale span{color:#80868b !important;font-weight:normal !important}
table.kv th{width:14em}
@media (max-width:760px){
 body{padding:8px}
 table.cards,table.cards tbody,table.cards tr,table.cards td{display:block;width:100%}
 table.cards{border:none;background:none}
 table.cards thead{display:none}
 table.cards tr{background:#fff;border:1px solid #dadce0;border-radius:8px;margin-bottom:10px;padding:4px 0}
 table.cards tr.bad{border-left:6px solid #b3261e}
 table.cards tr.warn{border-left:6px solid #e37400}
 table.cards tr.ok{border-left:6px solid #188038}
 table.cards td{border:none;padding:3px 10px;display:flex;gap:8px}
 table.cards td:first-child{border-left:none;font-size:1.05rem}
 table.cards td[data-label]::before{content:attr(data-label);flex:0 0 7.5em;color:#5f6368;font-size:.85rem}
 table.cards td.empty{display:none}
 table.list{font-size:.85rem}
 table.list th,table.list td{padding:4px 5px}
 table.kv th{width:8em}
}
"#;

/// The page's head and its language link.
pub(super) fn open(out: &mut String, t: &Strings, title: &str, path: &str) {
    let _ = write!(
        out,
        "<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta http-equiv=\"refresh\" content=\"30\"><title>{title}</title><style>{STYLE}</style></head><body>\
<header><h1>{title}</h1><span class=\"muted\">{refresh}</span>\
<span class=\"lang\"><a href=\"/report{q}\">{report}</a> · \
<a href=\"{path}?lang={to}\" hreflang=\"{to}\">{switch}</a></span></header>",
        lang = t.lang,
        title = esc(title),
        refresh = t.refresh,
        path = path,
        to = t.switch_to,
        switch = t.switch_lang,
        report = t.report,
        q = if t.lang == "en" { "?lang=en" } else { "" },
    );
}

/// The class a site's row takes from its worst concern.
fn class(c: Option<Concern>) -> &'static str {
    match c {
        Some(
            Concern::Offline
            | Concern::LowBattery
            | Concern::OnBattery
            | Concern::UnexplainedHoles
            | Concern::WanDown
            | Concern::CriticalAlarm,
        ) => "bad",
        Some(_) => "warn",
        None => "ok",
    }
}

fn ago(t: &Strings, since_ms: i64, now_ms: i64) -> String {
    duration(
        (now_ms.saturating_sub(since_ms)).max(0) as f64 / 1000.0,
        t.lang,
    )
}

/// Online or offline, why, and since when.
pub(super) fn link_cell(t: &Strings, s: &Site, now_ms: i64) -> String {
    match &s.presence {
        None => format!("<span class=\"warn-t\">{}</span>", t.unknown),
        Some(p) => {
            let since = format!(
                "<span class=\"small\">{} {} ({})</span>",
                t.since,
                when(p.since_ms, now_ms),
                ago(t, p.since_ms, now_ms)
            );
            match &p.value {
                Presence::Online => format!("<span class=\"ok-t\">{}</span> {since}", t.online),
                Presence::Offline { reason } => {
                    let why = match reason.as_str() {
                        "lost" => t.reason_lost.to_owned(),
                        "shutdown" => t.reason_shutdown.to_owned(),
                        "power" => t.reason_power.to_owned(),
                        other => esc(other),
                    };
                    format!("<span class=\"bad-t\">{}</span> ({why}) {since}", t.offline)
                }
            }
        }
    }
}

pub(super) fn power_cell(t: &Strings, s: &Site, now_ms: i64) -> String {
    let Some(u) = s.ups() else {
        return format!("<span class=\"small\">{}</span>", t.no_ups);
    };
    let runtime = u.runtime_s.map(|r| {
        format!(
            ", <span class=\"small\">{} {}{}</span>",
            t.runtime_left,
            duration(r, t.lang),
            t.runtime_after
        )
    });
    if u.on_battery.value {
        let what = if u.low_battery {
            t.low_battery
        } else {
            t.on_battery
        };
        format!(
            "<span class=\"bad-t\">{what}</span> ({}){}",
            ago(t, u.on_battery.since_ms, now_ms),
            runtime.unwrap_or_default()
        )
    } else {
        format!("<span class=\"ok-t\">{}</span>", t.mains)
    }
}

pub(super) fn wan_cell(t: &Strings, s: &Site, now_ms: i64) -> String {
    match &s.wan {
        None => "—".into(),
        Some(w) if w.value => format!("<span class=\"ok-t\">{}</span>", t.wan_up),
        Some(w) => format!(
            "<span class=\"bad-t\">{}</span> ({})",
            t.wan_down,
            ago(t, w.since_ms, now_ms)
        ),
    }
}

pub(super) fn alarms_cell(t: &Strings, s: &Site) -> String {
    if s.alarms.is_empty() {
        return format!("<span class=\"ok-t\">{}</span>", t.none);
    }
    let mut out = String::from("<ul class=\"alarms\">");
    for a in s.alarms.values() {
        let text = match (t.lang, &a.message_vi) {
            ("vi", Some(vi)) => vi.as_str(),
            _ => a.message.as_str(),
        };
        let cls = if a.severity == wardgate_contract::Severity::Critical {
            "bad-t"
        } else {
            "warn-t"
        };
        let _ = write!(
            out,
            "<li><span class=\"{cls}\">{}</span> <span class=\"small\">{}</span></li>",
            esc(text),
            esc(&a.device)
        );
    }
    out.push_str("</ul>");
    out
}

pub(super) fn backlog_cell(t: &Strings, s: &Site, now_ms: i64) -> String {
    match s.backlog {
        None => "—".into(),
        Some(b) if b.depth == 0 => "<span class=\"ok-t\">0</span>".into(),
        Some(b) => {
            let age = b
                .since_ms
                .map(|since| format!(", {} {}", t.waiting_for, ago(t, since, now_ms)))
                .unwrap_or_default();
            format!(
                "<span class=\"warn-t num\">{} {}</span>{age}",
                count(b.depth, t.lang),
                t.readings
            )
        }
    }
}

pub(super) fn clock_cell(t: &Strings, s: &Site, now_ms: i64) -> String {
    match &s.clock {
        None => "—".into(),
        Some(c) if c.value => format!("<span class=\"ok-t\">{}</span>", t.clock_ok),
        Some(c) => format!(
            "<span class=\"warn-t\">{}</span> ({})",
            t.clock_bad,
            ago(t, c.since_ms, now_ms)
        ),
    }
}

pub(super) fn holes_cell(t: &Strings, totals: Option<&SiteTotals>) -> String {
    match totals.map(|x| x.unexplained) {
        None => "—".into(),
        Some(0) => "<span class=\"ok-t num\">0</span>".into(),
        Some(n) => format!(
            "<span class=\"bad-t num\" title=\"{}\">{}</span>",
            t.holes_help,
            count(n, t.lang)
        ),
    }
}

/// Whether a cell says nothing worth a line on a phone's card (nothing
/// known, nothing wrong): such cells are left out of the card.
fn unremarkable(s: &Site, totals: Option<&SiteTotals>) -> [bool; 8] {
    [
        false,
        false,
        s.wan.as_ref().is_none_or(|w| w.value),
        s.alarms.is_empty(),
        s.backlog.is_none_or(|b| b.depth == 0),
        s.clock.as_ref().is_none_or(|c| c.value),
        false,
        totals.is_none_or(|x| x.unexplained == 0),
    ]
}

/// One site's row (a card on a phone).
fn row(out: &mut String, t: &Strings, id: &str, s: &Site, totals: Option<&SiteTotals>, now: i64) {
    let worst = concerns(s, totals).first().copied();
    let heard = s
        .last_seen_ms
        .map(|m| format!("{} {}", ago(t, m, now), t.ago))
        .unwrap_or_else(|| t.never.to_owned());
    let lang = if t.lang == "en" { "?lang=en" } else { "" };
    let offline = s.online() == Some(false);
    let _ = write!(
        out,
        "<tr class=\"{}\"><td><div><a class=\"id\" href=\"/site/{id}{lang}\"><b>{id}</b></a><br><span class=\"small\">{}: {heard}</span></div></td>",
        class(worst),
        t.last_heard,
        id = esc(id),
    );
    let cells = [
        (t.link, link_cell(t, s, now)),
        (t.power, power_cell(t, s, now)),
        (t.wan, wan_cell(t, s, now)),
        (t.alarms, alarms_cell(t, s)),
        (t.backlog, backlog_cell(t, s, now)),
        (t.clock, clock_cell(t, s, now)),
        (t.version, esc(s.identity.version.as_deref().unwrap_or("—"))),
        (t.holes, holes_cell(t, totals)),
    ];
    let quiet = unremarkable(s, totals);
    for (i, ((label, cell), quiet)) in cells.into_iter().zip(quiet).enumerate() {
        // An offline site's power, internet, backlog and clock are what it
        // said last: shown grey, and said so.
        let stale = offline && (1..=5).contains(&i);
        let _ = write!(
            out,
            "<td data-label=\"{label}\"{}><div{}>{}{cell}</div></td>",
            if quiet { " class=\"empty\"" } else { "" },
            if stale { " class=\"stale\"" } else { "" },
            if stale && i == 1 {
                format!("<span class=\"small\">{}:</span> ", t.last_known)
            } else {
                String::new()
            }
        );
    }
    out.push_str("</tr>");
}

/// A site with its ledger totals and its place in the order.
type Ranked<'a> = (&'a str, &'a Site, Option<SiteTotals>, (u8, i64));

/// The whole page at `now_ms`.
pub fn fleet_page(t: &Strings, fleet: &Fleet, ledger: &Ledger, now_ms: i64) -> String {
    let mut sites: Vec<Ranked<'_>> = fleet
        .sites()
        .map(|(id, s)| {
            let totals = ledger.totals(id);
            (id, s, totals, rank(s, totals.as_ref()))
        })
        .collect();
    sites.sort_by(|a, b| a.3.cmp(&b.3).then(a.0.cmp(b.0)));
    let mut out = String::with_capacity(4096 + sites.len() * 1400);
    open(&mut out, t, t.title, "/");
    let online = sites.iter().filter(|s| s.1.online() == Some(true)).count();
    let offline = sites.iter().filter(|s| s.1.online() == Some(false)).count();
    let battery = sites
        .iter()
        .filter(|s| s.1.on_battery() == Some(true))
        .count();
    let holes = sites
        .iter()
        .filter(|s| s.2.is_some_and(|x| x.unexplained > 0))
        .count();
    let b = |n: usize| if n > 0 { " class=\"bad\"" } else { "" };
    let _ = write!(
        out,
        "<p class=\"summary\"><b>{}</b> {}: <b>{online}</b> {}, <b{}>{offline}</b> {}, <b{}>{battery}</b> {}, <b{}>{holes}</b> {}</p>",
        sites.len(),
        t.sites,
        t.summary_online,
        b(offline),
        t.summary_offline,
        b(battery),
        t.summary_battery,
        b(holes),
        t.summary_holes,
    );
    let _ = write!(
        out,
        "<table class=\"fleet cards\"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th title=\"{}\">{}</th></tr></thead><tbody>",
        t.site, t.link, t.power, t.wan, t.alarms, t.backlog, t.clock, t.version, t.holes_help, t.holes
    );
    for (id, s, totals, _) in &sites {
        row(&mut out, t, id, s, totals.as_ref(), now_ms);
    }
    out.push_str("</tbody></table></body></html>");
    out
}
