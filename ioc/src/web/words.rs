//! Every word the fleet pages show, one table per language (Vietnamese
//! first, English by `?lang=en`), and numbers, durations and times
//! written the local way. The gateway's page has its own table for its
//! own words (src/status/web/strings.rs); what both would share (numbers,
//! durations, the event catalogue's Vietnamese) belongs in the contract
//! crate: see docs/ioc.md, "Fleet view".

/// Every word of the fleet pages in one language.
pub struct Strings {
    pub lang: &'static str,
    pub title: &'static str,
    pub refresh: &'static str,
    pub switch_to: &'static str,
    pub switch_lang: &'static str,
    pub sites: &'static str,
    pub site: &'static str,
    pub link: &'static str,
    pub online: &'static str,
    pub offline: &'static str,
    pub unknown: &'static str,
    pub reason_lost: &'static str,
    pub reason_shutdown: &'static str,
    pub reason_power: &'static str,
    pub since: &'static str,
    pub power: &'static str,
    pub mains: &'static str,
    pub on_battery: &'static str,
    pub low_battery: &'static str,
    pub runtime_left: &'static str,
    pub runtime_after: &'static str,
    pub last_known: &'static str,
    pub no_ups: &'static str,
    pub wan: &'static str,
    pub wan_up: &'static str,
    pub wan_down: &'static str,
    pub alarms: &'static str,
    pub none: &'static str,
    pub backlog: &'static str,
    pub readings: &'static str,
    pub waiting_for: &'static str,
    pub clock: &'static str,
    pub clock_ok: &'static str,
    pub clock_bad: &'static str,
    pub version: &'static str,
    pub holes: &'static str,
    pub holes_help: &'static str,
    pub last_heard: &'static str,
    pub ago: &'static str,
    pub never: &'static str,
    pub summary_online: &'static str,
    pub summary_offline: &'static str,
    pub summary_battery: &'static str,
    pub summary_holes: &'static str,
    pub back: &'static str,
    pub devices: &'static str,
    pub device: &'static str,
    pub kind: &'static str,
    pub health: &'static str,
    pub health_ok: &'static str,
    pub health_stale: &'static str,
    pub health_fault: &'static str,
    pub health_silent: &'static str,
    pub last_reading: &'static str,
    pub values: &'static str,
    pub ledger: &'static str,
    pub stream: &'static str,
    pub samples: &'static str,
    pub events: &'static str,
    pub received: &'static str,
    pub pending: &'static str,
    pub filled: &'static str,
    pub explained: &'static str,
    pub unexplained: &'static str,
    pub no_holes: &'static str,
    pub more: &'static str,
    pub recent: &'static str,
    pub no_events: &'static str,
    pub config: &'static str,
    pub not_found: &'static str,
    pub contract_breaks: &'static str,
}

pub const VI: Strings = Strings {
    lang: "vi",
    title: "Các điểm giám sát",
    refresh: "Trang tự cập nhật mỗi 30 giây",
    switch_to: "en",
    switch_lang: "English",
    sites: "điểm",
    site: "Điểm",
    link: "Kết nối",
    online: "đang kết nối",
    offline: "mất kết nối",
    unknown: "chưa rõ",
    reason_lost: "mất liên lạc",
    reason_shutdown: "tắt bình thường",
    reason_power: "tắt do UPS sắp hết pin",
    since: "từ",
    power: "Nguồn điện",
    mains: "điện lưới",
    on_battery: "mất điện lưới, đang chạy pin UPS",
    low_battery: "pin UPS sắp hết",
    runtime_left: "pin còn khoảng",
    runtime_after: "",
    last_known: "lần cuối biết",
    no_ups: "không có UPS",
    wan: "Internet",
    wan_up: "có",
    wan_down: "mất Internet",
    alarms: "Cảnh báo",
    none: "không",
    backlog: "Dữ liệu chờ gửi",
    readings: "bản ghi",
    waiting_for: "chờ",
    clock: "Đồng hồ",
    clock_ok: "đúng giờ",
    clock_bad: "chưa đồng bộ giờ",
    version: "Phiên bản",
    holes: "Mất không rõ lý do",
    holes_help: "số liệu bị mất mà thiết bị không báo lý do",
    last_heard: "Nhận",
    ago: "trước",
    never: "chưa có",
    summary_online: "đang kết nối",
    summary_offline: "mất kết nối",
    summary_battery: "đang chạy pin",
    summary_holes: "mất số liệu không rõ lý do",
    back: "Tất cả các điểm",
    devices: "Thiết bị",
    device: "Thiết bị",
    kind: "Loại",
    health: "Tình trạng",
    health_ok: "bình thường",
    health_stale: "không có số liệu mới",
    health_fault: "lỗi",
    health_silent: "trung tâm không nhận được số liệu",
    last_reading: "Số liệu lần cuối",
    values: "Giá trị",
    ledger: "Sổ theo dõi số liệu",
    stream: "Dòng số liệu",
    samples: "số đo",
    events: "sự kiện",
    received: "đã nhận",
    pending: "đang chờ",
    filled: "đến muộn",
    explained: "mất, có lý do",
    unexplained: "mất, không rõ lý do",
    no_holes: "không thiếu số liệu nào",
    more: "và còn",
    recent: "Sự kiện gần đây",
    no_events: "Chưa có sự kiện nào",
    config: "Cấu hình",
    not_found: "Không có điểm này",
    contract_breaks: "bản ghi trùng số khác nội dung",
};

pub const EN: Strings = Strings {
    lang: "en",
    title: "Ward sites",
    refresh: "This page refreshes every 30 seconds",
    switch_to: "vi",
    switch_lang: "Tiếng Việt",
    sites: "sites",
    site: "Site",
    link: "Link",
    online: "online",
    offline: "offline",
    unknown: "unknown",
    reason_lost: "lost contact",
    reason_shutdown: "shut down",
    reason_power: "shut down, UPS battery nearly flat",
    since: "since",
    power: "Power",
    mains: "mains",
    on_battery: "mains lost, on UPS battery",
    low_battery: "UPS battery almost empty",
    runtime_left: "about",
    runtime_after: " left",
    last_known: "last known",
    no_ups: "no UPS",
    wan: "Internet",
    wan_up: "up",
    wan_down: "internet down",
    alarms: "Alarms",
    none: "none",
    backlog: "Waiting to send",
    readings: "readings",
    waiting_for: "for",
    clock: "Clock",
    clock_ok: "synced",
    clock_bad: "not synced",
    version: "Version",
    holes: "Lost, no reason",
    holes_help: "readings lost with no reason given by the box",
    last_heard: "Heard",
    ago: "ago",
    never: "never",
    summary_online: "online",
    summary_offline: "offline",
    summary_battery: "on battery",
    summary_holes: "with readings missing, no reason given",
    back: "All sites",
    devices: "Devices",
    device: "Device",
    kind: "Type",
    health: "Health",
    health_ok: "normal",
    health_stale: "no fresh readings",
    health_fault: "fault",
    health_silent: "nothing received at the centre",
    last_reading: "Last reading",
    values: "Values",
    ledger: "Readings ledger",
    stream: "Stream",
    samples: "readings",
    events: "events",
    received: "received",
    pending: "may still come",
    filled: "came late",
    explained: "lost, reason given",
    unexplained: "lost, no reason given",
    no_holes: "nothing missing",
    more: "and",
    recent: "Recent events",
    no_events: "No events yet",
    config: "Config",
    not_found: "No such site",
    contract_breaks: "records sent twice with different content",
};

/// The words of `lang` (`en`, anything else Vietnamese).
pub fn strings(lang: Option<&str>) -> &'static Strings {
    if lang == Some("en") {
        &EN
    } else {
        &VI
    }
}

/// `x` with `decimals` decimals and grouped thousands: `12.345,6` in
/// Vietnamese, `12,345.6` in English (the gateway's page writes them so).
pub fn number(x: f64, decimals: usize, lang: &str) -> String {
    if !x.is_finite() {
        return "—".into();
    }
    let (thousands, point) = if lang == "en" { (',', '.') } else { ('.', ',') };
    let s = format!("{:.*}", decimals, x.abs());
    let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
    let mut out = String::new();
    if x < 0.0 && s.bytes().any(|b| b.is_ascii_digit() && b != b'0') {
        out.push('-');
    }
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(thousands);
        }
        out.push(c);
    }
    if !frac.is_empty() {
        out.push(point);
        out.push_str(frac);
    }
    out
}

pub fn count(n: u64, lang: &str) -> String {
    number(n as f64, 0, lang)
}

/// Seconds in words: "3 ngày 4 giờ" / "3 days 4 h", "2 giờ 5 phút",
/// "20 phút", "dưới 1 phút".
pub fn duration(secs: f64, lang: &str) -> String {
    let en = lang == "en";
    let s = secs.max(0.0).round() as u64;
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    let part = |n: u64, vi: &str, en_word: &str| {
        if en {
            format!("{n} {en_word}")
        } else {
            format!("{n} {vi}")
        }
    };
    let two = |big: String, small: u64, vi: &str, en_word: &str| {
        if small == 0 {
            big
        } else {
            format!("{big} {}", part(small, vi, en_word))
        }
    };
    if d > 0 {
        let days = if en && d == 1 { "day" } else { "days" };
        two(part(d, "ngày", days), h, "giờ", "h")
    } else if h > 0 {
        two(part(h, "giờ", "h"), m, "phút", "min")
    } else if m > 0 {
        part(m, "phút", "min")
    } else if en {
        "under a minute".into()
    } else {
        "dưới 1 phút".into()
    }
}

/// Vietnam's time (UTC+7, no daylight saving): the sites' and the
/// centre's zone.
const ZONE_S: i64 = 7 * 3600;

/// "HH:MM" local time of `ms`, with the day ("dd/mm HH:MM") when it is
/// not the day of `now_ms`.
pub fn when(ms: i64, now_ms: i64) -> String {
    let local = |t: i64| t.div_euclid(1000) + ZONE_S;
    let (t, now) = (local(ms), local(now_ms));
    let sod = t.rem_euclid(86_400);
    let hhmm = format!("{:02}:{:02}", sod / 3600, sod % 3600 / 60);
    if t.div_euclid(86_400) == now.div_euclid(86_400) {
        return hhmm;
    }
    let (y, m, d) = civil(t.div_euclid(86_400));
    let _ = y;
    format!("{d:02}/{m:02} {hhmm}")
}

/// The calendar date of a day number since 1970-01-01 (Howard Hinnant's
/// days-to-civil).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Escapes text for HTML (element content and quoted attributes).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_durations_and_times_the_local_way() {
        assert_eq!(number(12345.6, 1, "vi"), "12.345,6");
        assert_eq!(number(12345.6, 1, "en"), "12,345.6");
        assert_eq!(count(1_000_000, "vi"), "1.000.000");
        assert_eq!(number(-0.01, 1, "en"), "0.0");
        let cases = [
            (0.0, "dưới 1 phút", "under a minute"),
            (59.0, "dưới 1 phút", "under a minute"),
            (60.0, "1 phút", "1 min"),
            (3_900.0, "1 giờ 5 phút", "1 h 5 min"),
            (7_200.0, "2 giờ", "2 h"),
            (90_000.0, "1 ngày 1 giờ", "1 day 1 h"),
            (172_800.0, "2 ngày", "2 days"),
        ];
        for (s, vi, en) in cases {
            assert_eq!(
                (duration(s, "vi"), duration(s, "en")),
                (vi.into(), en.into()),
                "{s}"
            );
        }
        // 2026-12-07 13:00 UTC is 20:00 in Vietnam.
        let t = 1_796_648_400_000;
        assert_eq!(when(t, t), "20:00");
        assert_eq!(when(t, t + 5 * 3_600_000), "07/12 20:00");
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
