//! The local web page (Vietnamese first, English by choice), `/api/status`,
//! `/healthz` and `/metrics`. Read-only; it only observes the snapshot.
//!
//! Every asset is in the binary; the page refreshes itself by fetching its
//! own body every few seconds (no CDN, no external request).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::history::{svg_chart, History};
use super::Snapshot;
use crate::config::GATEWAY_DEVICE;
use crate::model::{now_ms, Health, Severity, Value};

/// Every word the page shows, one set per language.
pub struct Strings {
    pub lang: &'static str,
    pub title: &'static str,
    pub all_normal: &'static str,
    pub starting: &'static str,
    pub no_link: &'static str,
    pub kept: &'static str,
    pub readings_since: &'static str,
    pub ups_not_responding: &'static str,
    pub device_not_responding: &'static str,
    /// The spool cannot be written; followed by the reason.
    pub storage_bad: &'static str,
    pub storage_read_only: &'static str,
    pub storage_permission: &'static str,
    pub storage_full: &'static str,
    pub storage_io: &'static str,
    pub on_battery: &'static str,
    pub low_battery: &'static str,
    pub health_ok: &'static str,
    pub health_stale: &'static str,
    pub health_fault: &'static str,
    pub last_seen: &'static str,
    pub never: &'static str,
    pub on_mains: &'static str,
    pub yes: &'static str,
    pub no: &'static str,
    pub on_battery_word: &'static str,
    pub low_battery_word: &'static str,
    pub load: &'static str,
    pub charge: &'static str,
    pub runtime: &'static str,
    pub minutes: &'static str,
    pub temperature: &'static str,
    pub humidity: &'static str,
    pub input_voltage: &'static str,
    pub status_word: &'static str,
    pub events: &'static str,
    pub no_events: &'static str,
    pub last_24h: &'static str,
    pub led_title: &'static str,
    pub led_legend: [&'static str; 6],
    pub switch_to: &'static str,
    pub switch_lang: &'static str,
    pub gateway: &'static str,
    pub link: &'static str,
    pub link_up: &'static str,
    pub link_down: &'static str,
    pub kept_on_device: &'static str,
}

pub const VI: Strings = Strings {
    lang: "vi",
    title: "Trạng thái thiết bị giám sát",
    all_normal: "Mọi thứ hoạt động bình thường",
    starting: "Đang khởi động…",
    no_link: "Mất kết nối tới trung tâm — dữ liệu đang được lưu tạm",
    kept: "bản ghi",
    readings_since: "từ",
    ups_not_responding: "Thiết bị UPS không phản hồi",
    device_not_responding: "Thiết bị không phản hồi:",
    storage_bad:
        "Không lưu được dữ liệu vào thẻ nhớ — dữ liệu vẫn được gửi, nhưng sẽ mất nếu mất kết nối",
    storage_read_only: "thẻ nhớ chỉ đọc (có thể bị hỏng), cần thay thẻ",
    storage_permission: "không có quyền ghi thư mục lưu trữ",
    storage_full: "thẻ nhớ đầy",
    storage_io: "lỗi ghi thẻ nhớ",
    on_battery: "Mất điện lưới — UPS đang chạy bằng pin",
    low_battery: "Pin UPS sắp hết — thiết bị sẽ sớm tắt",
    health_ok: "bình thường",
    health_stale: "không có số liệu mới",
    health_fault: "lỗi",
    last_seen: "Cập nhật lúc",
    never: "chưa có",
    on_mains: "đang dùng điện lưới",
    yes: "có",
    no: "không",
    on_battery_word: "đang chạy bằng pin",
    low_battery_word: "pin yếu",
    load: "Tải",
    charge: "Pin",
    runtime: "Thời gian còn lại",
    minutes: "phút",
    temperature: "Nhiệt độ",
    humidity: "Độ ẩm",
    input_voltage: "Điện áp vào",
    status_word: "Trạng thái",
    events: "Sự kiện gần đây",
    no_events: "Chưa có sự kiện nào",
    last_24h: "24 giờ qua",
    led_title: "Đèn báo trên thiết bị",
    led_legend: [
        "Sáng liên tục: mọi thứ bình thường",
        "Nháy chậm (1 lần/giây): mất kết nối tới trung tâm, dữ liệu được lưu tạm",
        "Nháy nhanh (4 lần/giây): có thiết bị không phản hồi",
        "Hai lần nháy ngắn mỗi 2 giây: đang khởi động",
        "Nháy rất nhanh trong 60 giây: đang được tìm (nhận diện)",
        "Tắt (hoặc nháy theo thẻ nhớ như Pi thông thường): wardgate không chạy, ví dụ cấu hình sai",
    ],
    switch_to: "en",
    switch_lang: "English",
    gateway: "Kết nối",
    link: "Kết nối tới trung tâm",
    link_up: "đang kết nối",
    link_down: "mất kết nối",
    kept_on_device: "Bản ghi đang lưu tạm",
};

pub const EN: Strings = Strings {
    lang: "en",
    title: "Monitoring box status",
    all_normal: "All systems normal",
    starting: "Starting…",
    no_link: "No link to the operations centre — data is being kept on this device",
    kept: "readings",
    readings_since: "since",
    ups_not_responding: "The UPS is not responding",
    device_not_responding: "A device is not responding:",
    storage_bad: "Readings cannot be kept on the SD card — they are still sent, but would be lost if the link drops",
    storage_read_only: "the card is read-only (probably worn out): replace it",
    storage_permission: "permission denied on the spool directory",
    storage_full: "the card is full",
    storage_io: "the card reports write errors",
    on_battery: "Mains power lost — the UPS is running on battery",
    low_battery: "UPS battery almost empty — equipment will shut down soon",
    health_ok: "normal",
    health_stale: "no fresh readings",
    health_fault: "fault",
    last_seen: "Last reading",
    never: "none yet",
    on_mains: "on mains power",
    yes: "yes",
    no: "no",
    on_battery_word: "on battery",
    low_battery_word: "low battery",
    load: "Load",
    charge: "Battery",
    runtime: "Time left",
    minutes: "min",
    temperature: "Temperature",
    humidity: "Humidity",
    input_voltage: "Input voltage",
    status_word: "Status",
    events: "Recent events",
    no_events: "No events yet",
    last_24h: "last 24 hours",
    led_title: "The light on the box",
    led_legend: [
        "Steady on: all good",
        "Slow blink (once a second): no link to the operations centre, data kept on the box",
        "Fast blink (4 times a second): a device is not responding",
        "Two short flashes every 2 s: starting",
        "Rapid flicker for 60 s: someone asked this box to identify itself",
        "Off (or the Pi's usual flicker on SD card activity): wardgate is not running, e.g. the configuration is wrong",
    ],
    switch_to: "vi",
    switch_lang: "Tiếng Việt",
    gateway: "Link",
    link: "Link to the operations centre",
    link_up: "connected",
    link_down: "down",
    kept_on_device: "Readings kept on this device",
};

/// Events in Vietnamese, by code (sources write their messages in English;
/// the page says them in the reader's language). Unknown codes show the
/// source's own message.
const EVENTS_VI: &[(&str, &str)] = &[
    ("ups.on_battery", "UPS chuyển sang chạy pin: mất điện lưới"),
    ("ups.on_line", "UPS đã có điện lưới trở lại"),
    ("ups.low_battery", "Pin UPS yếu: UPS sắp tắt"),
    ("ups.battery_ok", "Pin UPS không còn yếu"),
    ("ups.replace_battery", "UPS báo cần thay pin"),
    ("ups.overload", "UPS quá tải"),
    ("ups.overload_cleared", "UPS hết quá tải"),
    ("ups.bypass", "UPS chạy bypass: thiết bị không được bảo vệ"),
    ("ups.bypass_ended", "UPS hết chạy bypass"),
    ("ups.shutdown_pending", "UPS sắp tắt"),
    ("ups.test_started", "UPS đang kiểm tra pin"),
    ("ups.test_ended", "UPS đã kiểm tra pin xong"),
    ("ups.off", "UPS đã tắt nguồn ra"),
    ("ups.on", "UPS đã bật nguồn ra"),
    ("device.lost", "Thiết bị không có số liệu mới"),
    ("device.fault", "Thiết bị bị lỗi"),
    ("device.restored", "Thiết bị hoạt động trở lại"),
    ("door.open", "Cửa phòng máy mở"),
    ("door.closed", "Cửa phòng máy đóng"),
    (
        "spool.corrupt",
        "Dữ liệu lưu tạm bị hỏng và đã được tạo mới",
    ),
    (
        "gateway.unclean_stop",
        "Lần trước thiết bị bị tắt đột ngột (mất điện?)",
    ),
    ("spool.degraded", "Không ghi được dữ liệu vào thẻ nhớ"),
    ("spool.restored", "Đã ghi được dữ liệu vào thẻ nhớ trở lại"),
    (
        "spool.corrupt_record",
        "Một số bản ghi lưu tạm bị hỏng và đã bị bỏ",
    ),
    (
        "spool.quarantined",
        "Một bản ghi quá lớn, không gửi được, đã được để riêng",
    ),
    (
        "gateway.sequence_reset",
        "Số thứ tự dữ liệu bắt đầu lại (mất thông tin vị trí)",
    ),
];

fn event_words<'a>(t: &Strings, code: &str, message: &'a str) -> std::borrow::Cow<'a, str> {
    if t.lang == "vi" {
        if let Some((_, words)) = EVENTS_VI.iter().find(|(c, _)| *c == code) {
            return std::borrow::Cow::Borrowed(words);
        }
    }
    std::borrow::Cow::Borrowed(message)
}

fn strings(lang: &str) -> &'static Strings {
    if lang == "en" {
        &EN
    } else {
        &VI
    }
}

/// The language: `?lang=`, else `Accept-Language`, else the configured one.
pub fn choose_language(query: Option<&str>, accept: Option<&str>, default: &str) -> &'static str {
    if let Some(q) = query {
        return if q == "en" { "en" } else { "vi" };
    }
    if let Some(a) = accept {
        for part in a.split(',') {
            let tag = part
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if tag.starts_with("vi") {
                return "vi";
            }
            if tag.starts_with("en") {
                return "en";
            }
        }
    }
    if default == "en" {
        "en"
    } else {
        "vi"
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn hhmm(ms: i64) -> String {
    // Local staff read Vietnam time (UTC+7, no daylight saving).
    let t = (ms / 1000 + 7 * 3600).rem_euclid(86_400);
    format!("{:02}:{:02}", t / 3600, (t % 3600) / 60)
}

fn is_ups(kind: &str, values: &crate::model::Values) -> bool {
    matches!(kind, "megatec" | "apc-smart" | "nut") || values.get("ups.status").is_some()
}

/// The one big sentence, and its colour class (ok / warn / bad).
pub fn headline(s: &Snapshot, t: &Strings) -> (String, &'static str) {
    if s.uplink.attempts == 0 {
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
                "{} ({n} {}, {} {})",
                t.no_link,
                t.kept,
                t.readings_since,
                hhmm(s.uplink.since_ms)
            ),
            "warn",
        );
    }
    (t.all_normal.to_owned(), "ok")
}

fn value_lines(d: &super::DeviceStatus, t: &Strings) -> Vec<(String, String)> {
    let v = &d.last_values;
    let num = |k: &str| v.get(k).and_then(|x| x.as_f64());
    let mut out = Vec::new();
    if let Some(Value::Str(st)) = v.get("ups.status") {
        let toks: Vec<&str> = st.split_whitespace().collect();
        let word = if toks.contains(&"LB") {
            t.low_battery_word
        } else if toks.contains(&"OB") {
            t.on_battery_word
        } else {
            t.on_mains
        };
        out.push((t.status_word.to_owned(), word.to_owned()));
    }
    if let Some(x) = num("ups.load") {
        out.push((t.load.to_owned(), format!("{x:.0} %")));
    }
    if let Some(x) = num("battery.charge") {
        out.push((t.charge.to_owned(), format!("{x:.0} %")));
    }
    if let Some(x) = num("battery.runtime") {
        out.push((
            t.runtime.to_owned(),
            format!("{:.0} {}", x / 60.0, t.minutes),
        ));
    }
    if let Some(x) = num("input.voltage") {
        out.push((t.input_voltage.to_owned(), format!("{x:.0} V")));
    }
    if let Some(x) = num("ambient.temperature") {
        out.push((t.temperature.to_owned(), format!("{x:.1} °C")));
    }
    if let Some(x) = num("ambient.humidity") {
        out.push((t.humidity.to_owned(), format!("{x:.0} %")));
    }
    // Devices without words of their own here (meters, the router, custom
    // Modbus maps): their first 12 values as they are named.
    if out.is_empty() {
        for (k, val) in v.0.iter().take(12) {
            let shown = match val {
                Value::Num(n) => format!("{}", (n * 100.0).round() / 100.0),
                Value::Bool(b) => (if *b { t.yes } else { t.no }).to_owned(),
                Value::Str(s) => s.clone(),
            };
            out.push((k.clone(), shown));
        }
    }
    out
}

/// The page body (also what the page fetches to refresh itself).
pub fn render_body(s: &Snapshot, history: &History, t: &Strings) -> String {
    let (sentence, class) = headline(s, t);
    let mut b = String::new();
    let _ = write!(
        b,
        "<header class=\"{class}\"><h1 id=\"headline\">{}</h1></header>",
        esc(&sentence)
    );
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
        let _ = write!(b, " · {}: {kept}", t.kept_on_device);
    }
    b.push_str("</p><main>");
    let now = now_ms();
    for (id, d) in s.devices.iter().filter(|(id, _)| *id != GATEWAY_DEVICE) {
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
        for (key, label, unit) in [
            ("ups.load", t.load, " %"),
            ("battery.charge", t.charge, " %"),
            ("ambient.temperature", t.temperature, " °C"),
            ("ambient.humidity", t.humidity, " %"),
        ] {
            let pts = history.get(id, key);
            if pts.len() >= 2 {
                let _ = write!(
                    b,
                    "<figure><figcaption>{label} — {}</figcaption>{}</figure>",
                    t.last_24h,
                    svg_chart(&pts, now, unit)
                );
            }
        }
        let seen = d
            .last_seen_ms
            .map(hhmm)
            .unwrap_or_else(|| t.never.to_owned());
        let _ = write!(b, "<p class=\"seen\">{}: {seen}</p></section>", t.last_seen);
    }
    let _ = write!(b, "</main><section class=\"events\"><h2>{}</h2>", t.events);
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
                hhmm(e.ts),
                esc(&e.device),
                esc(&match (&e.message_vi, t.lang) {
                    (Some(vi), "vi") => std::borrow::Cow::Borrowed(vi.as_str()),
                    _ => event_words(t, &e.code, &e.message),
                })
            );
        }
        b.push_str("</ul>");
    }
    let _ = write!(
        b,
        "</section><section class=\"led\"><h2>{}</h2><ul>",
        t.led_title
    );
    for l in t.led_legend {
        let _ = write!(b, "<li>{l}</li>");
    }
    b.push_str("</ul></section>");
    b
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f4f4f4;color:#222}\
header{padding:1.2em 1em}header h1{margin:0;font-size:1.6em}\
header.ok{background:#1b7f3b;color:#fff}header.warn{background:#c77c00;color:#fff}header.bad{background:#b3261e;color:#fff}\
.bar{padding:0 1em}main{display:flex;flex-wrap:wrap;gap:1em;padding:1em}\
.card{background:#fff;border-radius:8px;padding:1em;flex:1 1 280px;border-left:8px solid #1b7f3b}\
.card.warn{border-color:#c77c00}.card.bad{border-color:#b3261e}.card h2{margin:0}\
dl{display:grid;grid-template-columns:auto auto;gap:.2em 1em}dd{margin:0;font-weight:bold}\
.chart{width:100%;height:80px;color:#1565c0}.chart text{font-size:9px;fill:#555}figure{margin:.5em 0}\
.events,.led{padding:0 1em 1em}li.bad{color:#b3261e}li.warn{color:#8a5600}";

const SCRIPT: &str = "setInterval(function(){fetch('body'+location.search).then(function(r){return r.ok?r.text():null}).then(function(t){if(t){document.getElementById('page').innerHTML=t}}).catch(function(){})},3000);";

pub fn render_page(s: &Snapshot, history: &History, t: &Strings) -> String {
    format!(
        "<!doctype html><html lang=\"{}\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{} — {}</title><style>{STYLE}</style></head><body><div id=\"page\">{}</div><script>{SCRIPT}</script></body></html>",
        t.lang,
        t.title,
        esc(&s.site),
        render_body(s, history, t)
    )
}

/// Prometheus text exposition of the snapshot.
pub fn render_metrics(s: &Snapshot) -> String {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;
    type Labels = Vec<(String, String)>;
    let mut r = Registry::with_prefix("wardgate");
    let gauge = |r: &mut Registry, name: &str, help: &str, v: i64| {
        let g: Gauge = Gauge::default();
        g.set(v);
        r.register(name, help, g);
    };
    let samples: Family<Labels, Gauge> = Family::default();
    let health: Family<Labels, Gauge> = Family::default();
    let errors: Family<Labels, Gauge> = Family::default();
    for (id, d) in &s.devices {
        samples
            .get_or_create(&vec![("device".into(), id.clone())])
            .set(d.samples as i64);
        for st in ["ok", "stale", "fault"] {
            health
                .get_or_create(&vec![
                    ("device".into(), id.clone()),
                    ("state".into(), st.into()),
                ])
                .set((d.health.word() == st) as i64);
        }
        errors
            .get_or_create(&vec![("device".into(), id.clone())])
            .set(d.errors.values().sum::<u64>() as i64);
    }
    r.register(
        "samples_read",
        "Readings taken per device since start",
        samples,
    );
    r.register(
        "device_health",
        "1 for the device's current health state",
        health,
    );
    r.register(
        "device_errors",
        "Failed reads per device since start",
        errors,
    );
    let published: Family<Labels, Gauge> = Family::default();
    published
        .get_or_create(&vec![("sink".into(), "mqtt".into())])
        .set(s.uplink.acked as i64);
    r.register(
        "records_published",
        "Records acknowledged by the sink since start",
        published,
    );
    let spooled: Family<Labels, Gauge> = Family::default();
    spooled
        .get_or_create(&vec![("sink".into(), "mqtt".into())])
        .set(s.spool.spilled as i64);
    r.register(
        "records_spooled",
        "Records written to disk since start (link down or slow)",
        spooled,
    );
    gauge(
        &mut r,
        "spool_records",
        "Records kept on disk",
        s.spool.disk_rows as i64,
    );
    gauge(
        &mut r,
        "spool_memory_records",
        "Records in memory not yet acknowledged",
        s.spool.memory as i64,
    );
    gauge(
        &mut r,
        "spool_bytes",
        "Bytes the spool uses on disk",
        s.spool.disk_bytes as i64,
    );
    gauge(
        &mut r,
        "spool_dropped",
        "Records dropped by the spool (cap, age, errors)",
        s.spool.dropped as i64,
    );
    gauge(
        &mut r,
        "uplink_up",
        "1 when connected to the broker",
        s.uplink.connected as i64,
    );
    gauge(
        &mut r,
        "uplink_reconnects",
        "Reconnections since start",
        s.uplink.reconnects as i64,
    );
    let build: Family<Labels, Gauge> = Family::default();
    build
        .get_or_create(&vec![("version".into(), s.version.clone())])
        .set(1);
    r.register("build_info", "Build information", build);
    let mut out = String::new();
    let _ = encode(&mut out, &r);
    out
}

#[derive(Clone)]
struct AppState {
    status: watch::Receiver<Snapshot>,
    history: Arc<History>,
    language: String,
    /// `Basic <base64>` expected, when auth is on.
    auth: Option<String>,
}

#[derive(Deserialize)]
struct LangQuery {
    lang: Option<String>,
}

fn authorised(st: &AppState, h: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(want) = &st.auth else { return Ok(()) };
    let got = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if got == Some(want.as_str()) {
        Ok(())
    } else {
        Err(Box::new(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"wardgate\"")],
                "authentication required",
            )
                .into_response(),
        ))
    }
}

fn lang_of(st: &AppState, q: &LangQuery, h: &HeaderMap) -> &'static Strings {
    let accept = h.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok());
    strings(choose_language(q.lang.as_deref(), accept, &st.language))
}

async fn page(State(st): State<AppState>, Query(q): Query<LangQuery>, h: HeaderMap) -> Response {
    if let Err(r) = authorised(&st, &h) {
        return *r;
    }
    let t = lang_of(&st, &q, &h);
    let snap = st.status.borrow().clone();
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        render_page(&snap, &st.history, t),
    )
        .into_response()
}

async fn body(State(st): State<AppState>, Query(q): Query<LangQuery>, h: HeaderMap) -> Response {
    if let Err(r) = authorised(&st, &h) {
        return *r;
    }
    let t = lang_of(&st, &q, &h);
    let snap = st.status.borrow().clone();
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        render_body(&snap, &st.history, t),
    )
        .into_response()
}

async fn api_status(State(st): State<AppState>, h: HeaderMap) -> Response {
    if let Err(r) = authorised(&st, &h) {
        return *r;
    }
    let snap = st.status.borrow().clone();
    axum::Json(snap).into_response()
}

async fn healthz(State(st): State<AppState>) -> Response {
    let snap = st.status.borrow().clone();
    let age = now_ms() - snap.updated_ms;
    if snap.updated_ms == 0 || age > 10_000 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "pipeline not running: status not refreshed for {} s\n",
                age / 1000
            ),
        )
            .into_response()
    } else if snap.uplink.stalled {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "delivery stalled: the broker acknowledges nothing while records wait\n",
        )
            .into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn metrics(State(st): State<AppState>, h: HeaderMap) -> Response {
    if let Err(r) = authorised(&st, &h) {
        return *r;
    }
    let snap = st.status.borrow().clone();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render_metrics(&snap),
    )
        .into_response()
}

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The listen address is taken or not allowed: the page is off, the
    /// gateway goes on.
    #[error("web page on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The basic-auth password file cannot be read.
    #[error("web.password_file {path}: {source}")]
    Password {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the page's address (so a caller knows the port) and returns the
/// server future.
pub async fn bind(
    cfg: &crate::config::WebConfig,
    status: watch::Receiver<Snapshot>,
    history: Arc<History>,
    cancel: CancellationToken,
) -> Result<(SocketAddr, impl std::future::Future<Output = ()>), WebError> {
    let auth = match (&cfg.username, &cfg.password_file) {
        (Some(u), Some(p)) => {
            let pw = std::fs::read_to_string(p).map_err(|e| WebError::Password {
                path: p.display().to_string(),
                source: e,
            })?;
            let pw = pw.trim_end_matches(['\r', '\n']);
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{pw}"))
            ))
        }
        _ => None,
    };
    let state = AppState {
        status,
        history,
        language: cfg.language.clone(),
        auth,
    };
    let app = Router::new()
        .route("/", get(page))
        .route("/body", get(body))
        .route("/api/status", get(api_status))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| WebError::Bind {
            addr: cfg.listen.clone(),
            source: e,
        })?;
    let addr = listener.local_addr().map_err(|e| WebError::Bind {
        addr: cfg.listen.clone(),
        source: e,
    })?;
    let fut = async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "web page stopped");
        }
    };
    Ok((addr, fut))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::StatusHub;

    #[test]
    fn language_choice() {
        assert_eq!(choose_language(None, None, "vi"), "vi");
        assert_eq!(choose_language(None, Some("en-US,en;q=0.9"), "vi"), "en");
        assert_eq!(choose_language(None, Some("vi-VN,en;q=0.5"), "en"), "vi");
        assert_eq!(choose_language(Some("en"), Some("vi"), "vi"), "en");
        assert_eq!(choose_language(None, Some("fr"), "en"), "en");
    }

    #[test]
    fn headlines_worst_first() {
        let hub = StatusHub::new("s");
        hub.add_device("ups1", "megatec");
        hub.add_device("env1", "sim");
        hub.update(|s| s.uplink.attempts = 1);
        let all_ok = |s: &mut Snapshot| {
            for d in s.devices.values_mut() {
                d.health = Health::Ok;
            }
            s.uplink.connected = true;
        };
        hub.update(all_ok);
        assert_eq!(headline(&hub.get(), &VI).0, "Mọi thứ hoạt động bình thường");
        assert_eq!(
            headline(&hub.get(), &EN),
            ("All systems normal".into(), "ok")
        );
        hub.update(|s| {
            s.uplink.connected = false;
            s.spool.disk_rows = 42;
        });
        let (h, c) = headline(&hub.get(), &VI);
        assert!(
            h.starts_with("Mất kết nối tới trung tâm — dữ liệu đang được lưu tạm (42 bản ghi"),
            "{h}"
        );
        assert_eq!(c, "warn");
        hub.update(|s| s.spool.degraded = Some("read_only".into()));
        let (h, c) = headline(&hub.get(), &VI);
        assert!(h.contains("thẻ nhớ chỉ đọc"), "{h}");
        assert_eq!(c, "bad");
        assert!(headline(&hub.get(), &EN).0.contains("read-only"));
        hub.update(|s| s.spool.degraded = None);
        hub.update(|s| s.devices.get_mut("ups1").unwrap().health = Health::Fault("x".into()));
        assert_eq!(headline(&hub.get(), &VI).0, "Thiết bị UPS không phản hồi");
        assert_eq!(headline(&hub.get(), &EN).0, "The UPS is not responding");
    }

    #[test]
    fn page_has_cards_and_no_external_references() {
        let hub = StatusHub::new("xa-a");
        hub.add_device("ups1", "sim");
        hub.update(|s| {
            s.uplink.attempts = 1;
            let d = s.devices.get_mut("ups1").unwrap();
            d.last_values.set("ups.status", "OB");
            d.last_values.num("ups.load", 31.0);
            d.last_values.num("battery.runtime", 1200.0);
        });
        let page = render_page(&hub.get(), &History::default(), &VI);
        assert!(page.contains("data-device=\"ups1\""));
        assert!(page.contains("đang chạy bằng pin"));
        assert!(page.contains("20 phút"));
        hub.record_event(crate::status::RecentEvent {
            device: "ups1".into(),
            ts: 0,
            severity: Severity::Critical,
            code: "ups.on_battery".into(),
            message: "UPS on battery: mains power lost".into(),
            message_vi: None,
        });
        let vi = render_body(&hub.get(), &History::default(), &VI);
        assert!(
            vi.contains("UPS chuyển sang chạy pin: mất điện lưới"),
            "{vi}"
        );
        let en = render_body(&hub.get(), &History::default(), &EN);
        assert!(en.contains("UPS on battery: mains power lost"));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "no external URL"
        );
        let m = render_metrics(&hub.get());
        assert!(m.contains("wardgate_uplink_up 0"), "{m}");
        assert!(m.contains("wardgate_build_info{version="), "{m}");
        assert!(m.ends_with("# EOF\n"));
    }
}
