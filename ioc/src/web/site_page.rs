//! `/site/<id>`: one site's state, its devices, its readings ledger (the
//! holes of each stream by state, as ranges) and its recent events.

use std::fmt::Write as _;

use wardgate_contract::words as cwords;
use wardgate_contract::{DropReason, Kind, Value, Values};

use super::page::{
    alarms_cell, backlog_cell, clock_cell, holes_cell, link_cell, open, power_cell, wan_cell,
};
use super::words::{count, duration, esc, when, Strings};
use crate::fleet::{Device, DeviceHealth, Site};
use crate::ledger::{HoleState, Ledger, Reason, StopKind, StreamReport};

/// Hole ranges shown per stream and state; the rest are counted.
const RANGES_SHOWN: usize = 20;
/// Values shown per device.
const VALUES_SHOWN: usize = 10;

/// Which hole states a list shows.
type Pick = fn(HoleState) -> bool;

/// Why numbers will not come, in words.
fn reason(t: &Strings, r: Reason) -> &'static str {
    let vi = t.lang != "en";
    let pick = |v: &'static str, e: &'static str| if vi { v } else { e };
    match r {
        Reason::Quarantined => pick("quá lớn, để riêng", "too large, set aside"),
        Reason::UncleanStop(StopKind::Crash) => {
            pick("mất khi phần mềm dừng đột ngột", "lost in a crash")
        }
        Reason::UncleanStop(StopKind::PowerCut) => pick("mất khi mất điện", "lost in a power cut"),
        Reason::UncleanStop(StopKind::Unknown) => pick("mất khi dừng đột ngột", "lost in a stop"),
        Reason::Unused => pick("số không dùng", "numbers never used"),
        Reason::SequenceReset => pick("mất cùng thẻ nhớ", "lost with the card"),
        Reason::Degraded => pick("thẻ nhớ không ghi được", "card could not be written"),
        Reason::Dropped(DropReason::Full) => pick("bộ nhớ tạm đầy", "spool full"),
        Reason::Dropped(DropReason::Age) => pick("quá cũ", "too old"),
        Reason::Dropped(DropReason::WriteFailed) => pick("không ghi được", "write failed"),
        Reason::Dropped(DropReason::Corrupt) => pick("bị hỏng", "damaged"),
        Reason::Dropped(DropReason::TooLarge) => pick("quá lớn", "too large"),
    }
}

fn health(t: &Strings, d: &Device) -> String {
    match d.health.as_ref().map(|h| &h.value) {
        None => "—".into(),
        Some(DeviceHealth::Ok) => format!("<span class=\"ok-t\">{}</span>", t.health_ok),
        Some(DeviceHealth::Stale) => format!("<span class=\"warn-t\">{}</span>", t.health_stale),
        Some(DeviceHealth::Silent) => format!("<span class=\"warn-t\">{}</span>", t.health_silent),
        Some(DeviceHealth::Fault(why)) => format!(
            "<span class=\"bad-t\">{}</span> {}",
            t.health_fault,
            why.as_deref().map(esc).unwrap_or_default()
        ),
    }
}

/// A device's last values as the gateway's own page shows them: a name in
/// the contract's words table in its words and format (a duration in
/// words, a contact's state, a UPS status as a phrase; hidden ones left
/// out), in the table's order, under the label the site's inventory gave
/// it; a name the table lacks with the inventory's label and unit (a
/// configured register), else as it is.
fn values(t: &Strings, d: &Device) -> String {
    let all = Values(
        d.values
            .iter()
            .map(|(k, v)| (k.clone(), stored_value(v)))
            .collect(),
    );
    let mut names: Vec<&String> = all.0.keys().collect();
    names.sort_by_key(|n| cwords::rank(n));
    let mut lines = Vec::new();
    for name in names {
        let Some(v) = all.0.get(name) else { continue };
        let inventory = d.words.get(name);
        let shown = if cwords::lookup(name).is_some() {
            cwords::show(name, v, &all, t.lang)
        } else {
            let label = inventory.map(|w| cwords::Label {
                vi: Some(w.vi.clone()),
                en: Some(w.en.clone()),
                unit: w.unit.clone(),
            });
            cwords::show_labelled(name, v, &all, t.lang, label.as_ref())
        };
        // The label the site's inventory gives (what its own page says).
        if let Some((label, text)) = shown {
            let label = match inventory {
                Some(w) if t.lang == "en" => w.en.clone(),
                Some(w) => w.vi.clone(),
                None => label,
            };
            lines.push((label, text));
        }
    }
    let mut out = String::new();
    for (label, text) in lines.iter().take(VALUES_SHOWN) {
        let _ = write!(
            out,
            "{}: <b class=\"num\">{}</b><br>",
            esc(label),
            esc(text)
        );
    }
    if lines.len() > VALUES_SHOWN {
        let _ = write!(out, "{} {}…", t.more, lines.len() - VALUES_SHOWN);
    }
    out
}

/// A value as the fleet view keeps it (its text) back as a value: a
/// number, `true`/`false`, or the word.
fn stored_value(v: &str) -> Value {
    match v {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => match v.parse::<f64>() {
            Ok(x) if x.is_finite() => Value::Num(x),
            _ => Value::Str(v.to_owned()),
        },
    }
}

fn devices(out: &mut String, t: &Strings, s: &Site, now_ms: i64) {
    let _ = write!(
        out,
        "<h2>{}</h2><table class=\"list cards\"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        t.devices, t.device, t.kind, t.health, t.last_reading, t.values
    );
    for (id, d) in &s.devices {
        let last = d
            .last_reading_ms
            .map(|m| {
                format!(
                    "{} <span class=\"small\">({} {})</span>",
                    when(m, now_ms),
                    duration(now_ms.saturating_sub(m).max(0) as f64 / 1000.0, t.lang),
                    t.ago
                )
            })
            .unwrap_or_else(|| t.never.to_owned());
        let cls = match d.health.as_ref().map(|h| &h.value) {
            Some(DeviceHealth::Ok) => "ok",
            Some(DeviceHealth::Fault(_)) => "bad",
            Some(_) => "warn",
            None => "",
        };
        let _ = write!(
            out,
            "<tr class=\"{cls}\"><td><div><b>{}</b></div></td><td data-label=\"{}\"><div>{}</div></td><td data-label=\"{}\"><div>{}</div></td><td data-label=\"{}\"><div>{last}</div></td><td data-label=\"{}\"><div>{}</div></td></tr>",
            esc(id),
            t.kind,
            esc(d.kind.as_deref().unwrap_or("—")),
            t.health,
            health(t, d),
            t.last_reading,
            t.values,
            values(t, d)
        );
    }
    out.push_str("</tbody></table>");
}

/// The ranges of one state, the first few of them.
fn ranges(t: &Strings, r: &StreamReport, pick: impl Fn(HoleState) -> bool) -> String {
    let mut parts = Vec::new();
    let mut more = 0usize;
    for p in r.holes.iter().filter(|p| pick(p.state)) {
        if parts.len() >= RANGES_SHOWN {
            more += 1;
            continue;
        }
        let range = if p.range.first == p.range.last {
            format!("{}", p.range.first)
        } else {
            format!("{}–{}", p.range.first, p.range.last)
        };
        match p.state {
            HoleState::Explained(why) => parts.push(format!("{range} ({})", reason(t, why))),
            _ => parts.push(range),
        }
    }
    let mut s = parts.join(", ");
    if more > 0 {
        let _ = write!(s, " {} {more}…", t.more);
    }
    s
}

fn ledger(out: &mut String, t: &Strings, id: &str, l: &Ledger) {
    let totals = l.totals(id);
    let _ = write!(
        out,
        "<h2>{}</h2><p>{}: {}",
        t.ledger,
        t.unexplained,
        holes_cell(t, totals.as_ref())
    );
    if let Some(x) = totals.filter(|x| x.contract_breaks > 0) {
        let _ = write!(
            out,
            " · <span class=\"bad-t\">{} {}</span>",
            count(x.contract_breaks, t.lang),
            t.contract_breaks
        );
    }
    let _ = write!(
        out,
        "</p><table class=\"list\"><thead><tr><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        t.stream, t.received, t.holes
    );
    for r in l.streams(id) {
        let kind = match r.stream.kind {
            Kind::Sample => t.samples,
            Kind::Event => t.events,
        };
        let c = r.counts;
        let mut holes = String::new();
        let states: [(u64, &str, &str, Pick); 3] = [
            (c.unexplained, t.unexplained, "bad-t", |s| {
                s == HoleState::Unexplained
            }),
            (c.pending, t.pending, "warn-t", |s| s == HoleState::Pending),
            (c.explained, t.explained, "", |s| {
                matches!(s, HoleState::Explained(_))
            }),
        ];
        for (n, word, cls, pick) in states {
            if n > 0 {
                let _ = write!(
                    holes,
                    "<li><span class=\"{cls}\">{word}: <b class=\"num\">{}</b></span> <span class=\"small\">{}</span></li>",
                    count(n, t.lang),
                    ranges(t, &r, pick)
                );
            }
        }
        if r.filled_late > 0 {
            let _ = write!(
                holes,
                "<li>{}: <b class=\"num\">{}</b></li>",
                t.filled,
                count(r.filled_late, t.lang)
            );
        }
        if holes.is_empty() {
            holes = format!("<span class=\"small\">{}</span>", t.no_holes);
        } else {
            holes = format!("<ul class=\"holes\">{holes}</ul>");
        }
        let _ = write!(
            out,
            "<tr><td><b>{}</b> {kind}<br><span class=\"small\">epoch {}</span></td><td class=\"num\">{}</td><td>{holes}</td></tr>",
            esc(&r.stream.device),
            r.stream.epoch,
            count(r.received, t.lang),
        );
    }
    out.push_str("</tbody></table>");
}

fn recent(out: &mut String, t: &Strings, s: &Site, now_ms: i64) {
    let _ = write!(out, "<h2>{}</h2>", t.recent);
    if s.recent.is_empty() {
        let _ = write!(out, "<p class=\"small\">{}</p>", t.no_events);
        return;
    }
    out.push_str("<table class=\"list\"><tbody>");
    for e in s.recent.iter().rev() {
        let text = match (t.lang, &e.message_vi) {
            ("vi", Some(vi)) => vi,
            _ => &e.message,
        };
        let cls = match e.severity {
            wardgate_contract::Severity::Critical => "bad-t",
            wardgate_contract::Severity::Warning => "warn-t",
            wardgate_contract::Severity::Info => "",
        };
        let _ = write!(
            out,
            "<tr><td class=\"num\">{}</td><td>{}</td><td><span class=\"{cls}\">{}</span> <span class=\"small\">{}</span></td></tr>",
            when(e.received_ms, now_ms),
            esc(&e.device),
            esc(text),
            esc(&e.code)
        );
    }
    out.push_str("</tbody></table>");
}

/// The page of site `id` at `now_ms`.
pub fn site_page(t: &Strings, id: &str, s: &Site, l: &Ledger, now_ms: i64) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let path = format!("/site/{}", esc(id));
    open(&mut out, t, id, &path);
    let back = if t.lang == "en" { "/?lang=en" } else { "/" };
    let _ = write!(out, "<p><a href=\"{back}\">← {}</a></p>", t.back);
    let totals = l.totals(id);
    let rows = [
        (t.link, link_cell(t, s, now_ms)),
        (t.power, power_cell(t, s, now_ms)),
        (t.wan, wan_cell(t, s, now_ms)),
        (t.alarms, alarms_cell(t, s)),
        (t.backlog, backlog_cell(t, s, now_ms)),
        (t.clock, clock_cell(t, s, now_ms)),
        (t.version, esc(s.identity.version.as_deref().unwrap_or("—"))),
        (
            t.config,
            esc(s.identity.config_hash.as_deref().unwrap_or("—")),
        ),
        (t.holes, holes_cell(t, totals.as_ref())),
    ];
    out.push_str("<table class=\"list kv\"><tbody>");
    for (k, v) in rows {
        let _ = write!(out, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    out.push_str("</tbody></table>");
    devices(&mut out, t, s, now_ms);
    ledger(&mut out, t, id, l);
    recent(&mut out, t, s, now_ms);
    out.push_str("</body></html>");
    out
}
