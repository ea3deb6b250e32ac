//! The local page's HTML: the one big sentence, a card per device with its
//! values and 24-hour charts, recent events and the LED legend. Pure
//! functions of the snapshot; every asset is inline (no CDN, no external
//! request), and the page refreshes itself by fetching its own body.

use std::fmt::Write as _;

use super::strings::{event_words, Strings};
use crate::ids::GATEWAY_DEVICE;
use crate::model::{now_ms, Health, Severity, Value};
use crate::status::history::{svg_chart, History, CHARTED};
use crate::status::words::{self, Zone};
use crate::status::{DeviceStatus, InfluxStatus, PowerState, Snapshot};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn is_ups(kind: &str, values: &crate::model::Values) -> bool {
    matches!(kind, "megatec" | "apc-smart" | "nut") || values.get("ups.status").is_some()
}

/// The one big sentence, and its colour class (ok / warn / bad), with
/// times in the site's time zone.
fn headline_in(s: &Snapshot, t: &Strings, zone: Zone) -> (String, &'static str) {
    if let Some(p) = &s.power {
        match p.state {
            PowerState::ShuttingDown => {
                let why = match t.lang {
                    "vi" => p.reason_vi.as_deref(),
                    _ => p.reason.as_deref(),
                };
                return match why {
                    Some(w) => (format!("{} ({w})", t.power_shutting_down), "bad"),
                    None => (t.power_shutting_down.to_owned(), "bad"),
                };
            }
            PowerState::OnBattery => {
                let low = s.devices.get(&p.ups).is_some_and(|d| {
                    matches!(d.last_values.get("ups.status"),
                        Some(Value::Str(st)) if st.split_whitespace().any(|x| x == "LB"))
                });
                return if low {
                    (t.low_battery.to_owned(), "bad")
                } else {
                    (t.on_battery.to_owned(), "bad")
                };
            }
            PowerState::Mains => {}
        }
    }
    if s.uplink.starting() {
        return (t.starting.to_owned(), "warn");
    }
    let devices = s.devices.iter().filter(|(id, _)| *id != GATEWAY_DEVICE);
    for (id, d) in devices.clone() {
        if d.health != Health::Ok && is_ups(&d.kind, &d.last_values) {
            let _ = id;
            return (t.ups_not_responding.to_owned(), "bad");
        }
    }
    if let Some((id, _)) = devices.clone().find(|(_, d)| d.health != Health::Ok) {
        return (format!("{} {id}", t.device_not_responding), "bad");
    }
    if let Some(reason) = &s.spool.degraded {
        let why = match reason.as_str() {
            "read_only" => t.storage_read_only,
            "permission_denied" => t.storage_permission,
            "disk_full" => t.storage_full,
            _ => t.storage_io,
        };
        return (format!("{} ({why})", t.storage_bad), "bad");
    }
    for (_, d) in devices {
        if let Some(Value::Str(st)) = d.last_values.get("ups.status") {
            let toks: Vec<&str> = st.split_whitespace().collect();
            if toks.contains(&"LB") {
                return (t.low_battery.to_owned(), "bad");
            }
            if toks.contains(&"OB") {
                return (t.on_battery.to_owned(), "bad");
            }
        }
    }
    if !s.uplink.connected {
        let n = s.spool.disk_rows + s.spool.memory;
        return (
            format!(
                "{} ({} {}, {} {})",
                t.no_link,
                words::count(n, t.lang),
                t.kept,
                t.readings_since,
                zone.hhmm(s.uplink.since_ms)
            ),
            "warn",
        );
    }
    (t.all_normal.to_owned(), "ok")
}

/// A device's values in words (the configured ones, else the words
/// table's), in the order of the words table (names without words last):
/// the status first for a UPS.
fn value_lines(d: &DeviceStatus, t: &Strings) -> Vec<(String, String)> {
    let v = &d.last_values;
    let mut names: Vec<&String> = v.0.keys().collect();
    names.sort_by_key(|k| (words::rank(k), k.as_str()));
    names
        .into_iter()
        .filter_map(|k| words::show_labelled(k, v.get(k)?, v, t.lang, d.labels.get(k)))
        .collect()
}

/// The page body (also what the page fetches to refresh itself), with
/// times in the site's time zone; `notices` are warnings for whoever looks
/// after the box, one line each under the headline. In order: the headline
/// and its notices, the link line, the catch-up, the InfluxDB line, a card
/// per device, the recent events and the LED legend, in that order.
pub(super) fn render_body_in(
    s: &Snapshot,
    history: &History,
    t: &Strings,
    notices: &[&str],
    zone: Zone,
) -> String {
    let mut b = String::new();
    write_headline(&mut b, s, t, notices, zone);
    write_link_bar(&mut b, s, t);
    if let Some(c) = history.catchup(s) {
        let (sent, total) = (c.sent.unwrap_or(0), c.total.unwrap_or(c.left));
        let _ = write!(
            b,
            "<div class=\"catchup\" id=\"catchup\"><progress max=\"{total}\" value=\"{sent}\"></progress><p>{}</p></div>",
            esc(&c.line(t.lang))
        );
    }
    if let Some(i) = &s.influxdb {
        write_influx_bar(&mut b, i, t);
    }
    b.push_str("<main>");
    let now = now_ms();
    for (id, d) in s.devices.iter().filter(|(id, _)| *id != GATEWAY_DEVICE) {
        write_device_card(&mut b, id, d, history, t, now, zone);
    }
    b.push_str("</main>");
    write_events(&mut b, s, t, zone);
    let _ = write!(b, "<section class=\"led\"><h2>{}</h2><ul>", t.led_title);
    for l in t.led_legend {
        let _ = write!(b, "<li>{l}</li>");
    }
    b.push_str("</ul></section>");
    b
}

/// The headline, then one line per notice, the on-battery line and the
/// identify line when they apply.
fn write_headline(b: &mut String, s: &Snapshot, t: &Strings, notices: &[&str], zone: Zone) {
    let (sentence, class) = headline_in(s, t, zone);
    let _ = write!(
        b,
        "<header class=\"{class}\"><h1 id=\"headline\">{}</h1></header>",
        esc(&sentence)
    );
    for n in notices {
        let _ = write!(b, "<p class=\"bar notice\">⚠ {}</p>", esc(n));
    }
    if s.power
        .as_ref()
        .is_some_and(|p| p.state == PowerState::OnBattery)
    {
        let _ = write!(
            b,
            "<p class=\"bar notice\" id=\"power\">{}</p>",
            esc(t.power_on_battery)
        );
    }
    if s.identify_by.is_some() && s.identify_until_ms.is_some_and(|u| u > now_ms()) {
        let _ = write!(
            b,
            "<p class=\"bar notice\" id=\"identify\">{}</p>",
            esc(t.identify_by_ioc)
        );
    }
}

/// The language switch, the site, the link and the records kept on the
/// device.
fn write_link_bar(b: &mut String, s: &Snapshot, t: &Strings) {
    let _ = write!(
        b,
        "<p class=\"bar\"><a href=\"?lang={}\" id=\"lang\">{}</a> · {} · {}: <b>{}</b>",
        t.switch_to,
        t.switch_lang,
        esc(&s.site),
        t.link,
        if s.uplink.connected {
            t.link_up
        } else {
            t.link_down
        }
    );
    // In memory a few readings are always in flight; only count them when
    // the link is down and they are really waiting.
    let kept = if s.uplink.connected {
        s.spool.disk_rows
    } else {
        s.spool.disk_rows + s.spool.memory
    };
    if kept > 0 {
        let _ = write!(b, " · {}: {}", t.kept_on_device, words::count(kept, t.lang));
    }
    b.push_str("</p>");
}

/// The InfluxDB sink's line: link, waiting, set aside, outside retention,
/// and the last failure in the reader's words.
fn write_influx_bar(b: &mut String, i: &InfluxStatus, t: &Strings) {
    let _ = write!(
        b,
        "<p class=\"bar\" id=\"influxdb\">{}: <b>{}</b> · {}: {}",
        t.influx,
        if i.connected { t.link_up } else { t.link_down },
        t.influx_waiting,
        i.depth
    );
    if i.rejected > 0 {
        let _ = write!(b, " · {}: {}", t.influx_rejected, i.rejected);
    }
    if i.retention_dropped > 0 {
        let _ = write!(b, " · {}: {}", t.influx_retention, i.retention_dropped);
    }
    if let Some(c) = &i.last_class {
        let words = t
            .influx_classes
            .iter()
            .find(|(k, _)| k == c)
            .map(|(_, w)| *w)
            .unwrap_or(c.as_str());
        let _ = write!(
            b,
            " · <span class=\"influx-class\" data-class=\"{}\">{}</span>",
            esc(c),
            esc(words)
        );
    }
    b.push_str("</p>");
}

/// One device's card: its health, its values in words, a 24-hour chart
/// per charted value with at least two points, and when it was last seen.
fn write_device_card(
    b: &mut String,
    id: &str,
    d: &DeviceStatus,
    history: &History,
    t: &Strings,
    now: i64,
    zone: Zone,
) {
    let (hw, hc) = match &d.health {
        Health::Ok => (t.health_ok.to_owned(), "ok"),
        Health::Stale => (t.health_stale.to_owned(), "warn"),
        Health::Fault(r) => (format!("{}: {}", t.health_fault, r), "bad"),
    };
    let _ = write!(
        b,
        "<section class=\"card {hc}\" data-device=\"{id}\"><h2>{id}</h2><p class=\"health\">{}</p><dl>",
        esc(&hw),
        id = esc(id)
    );
    for (k, v) in value_lines(d, t) {
        let _ = write!(b, "<dt>{}</dt><dd>{}</dd>", esc(&k), esc(&v));
    }
    b.push_str("</dl>");
    for key in CHARTED {
        let pts = history.get(id, key);
        if pts.len() >= 2 {
            let _ = write!(
                b,
                "<figure><figcaption>{} — {}</figcaption>{}</figure>",
                esc(&words::label(key, t.lang)),
                t.last_24h,
                svg_chart(&pts, now, words::unit(key).unwrap_or(""), zone, t.lang)
            );
        }
    }
    let seen = d
        .last_seen_ms
        .map(|ms| zone.hhmm(ms))
        .unwrap_or_else(|| t.never.to_owned());
    let _ = write!(b, "<p class=\"seen\">{}: {seen}</p></section>", t.last_seen);
}

/// The recent events, in the order the snapshot keeps them, each in the
/// reader's language.
fn write_events(b: &mut String, s: &Snapshot, t: &Strings, zone: Zone) {
    let _ = write!(b, "<section class=\"events\"><h2>{}</h2>", t.events);
    if s.events.is_empty() {
        let _ = write!(b, "<p>{}</p>", t.no_events);
    } else {
        b.push_str("<ul>");
        for e in &s.events {
            let class = match e.severity {
                Severity::Critical => "bad",
                Severity::Warning => "warn",
                Severity::Info => "ok",
            };
            let _ = write!(
                b,
                "<li class=\"{class}\"><time>{}</time> <b>{}</b> {}</li>",
                zone.hhmm(e.ts),
                esc(&e.device),
                esc(&match (&e.message_vi, t.lang) {
                    (Some(vi), "vi") => std::borrow::Cow::Borrowed(vi.as_str()),
                    _ => event_words(t, &e.code, &e.message),
                })
            );
        }
        b.push_str("</ul>");
    }
    b.push_str("</section>");
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f4f4f4;color:#222}\
header{padding:1.2em 1em}header h1{margin:0;font-size:1.6em}\
header.ok{background:#1b7f3b;color:#fff}header.warn{background:#c77c00;color:#fff}header.bad{background:#b3261e;color:#fff}\
.bar{padding:0 1em}main{display:flex;flex-wrap:wrap;gap:1em;padding:1em}\
.card{background:#fff;border-radius:8px;padding:1em;flex:1 1 280px;border-left:8px solid #1b7f3b}\
.card.warn{border-color:#c77c00}.card.bad{border-color:#b3261e}.card h2{margin:0}\
dl{display:grid;grid-template-columns:auto auto;gap:.2em 1em}dd{margin:0;font-weight:bold}\
.chart{width:100%;height:auto;color:#1565c0}.chart text{font-size:9px;fill:#555}.chart text.latest{fill:#1565c0;font-weight:bold}figure{margin:.5em 0}\
.catchup{padding:0 1em}.catchup progress{width:100%;height:1.2em}.catchup p{margin:.2em 0}\
.events,.led{padding:0 1em 1em}li.bad{color:#b3261e}li.warn{color:#8a5600}.notice{color:#8a5600;font-weight:bold}";

const SCRIPT: &str = "setInterval(function(){fetch('body'+location.search).then(function(r){return r.ok?r.text():null}).then(function(t){if(t){document.getElementById('page').innerHTML=t}}).catch(function(){})},3000);";

/// The Content-Security-Policy sent with every response: nothing may load
/// or run but the page's own inline style and script (allowed by their
/// SHA-256, so an injected `<script>` or `style` would not run), the
/// refresh may fetch from this origin only, and no other site may frame
/// the page.
pub(super) fn content_security_policy() -> &'static str {
    static CSP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CSP.get_or_init(|| {
        let hash = |text: &str| {
            use base64::Engine as _;
            let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(d.as_ref())
            )
        };
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self'; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash(SCRIPT),
            hash(STYLE)
        )
    })
}

/// The whole page: its style, the body ([`render_body_in`]) and the
/// script that refreshes it, with times in the site's time zone.
pub(super) fn render_page_in(
    s: &Snapshot,
    history: &History,
    t: &Strings,
    notices: &[&str],
    zone: Zone,
) -> String {
    format!(
        "<!doctype html><html lang=\"{}\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{} — {}</title><style>{STYLE}</style></head><body><div id=\"page\">{}</div><script>{SCRIPT}</script></body></html>",
        t.lang,
        t.title,
        esc(&s.site),
        render_body_in(s, history, t, notices, zone)
    )
}

#[cfg(test)]
mod tests;
