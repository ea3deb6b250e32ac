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
    pub report: &'static str,
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
    report: "Báo cáo tháng",
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
    report: "Monthly report",
};

/// The words of `lang` (`en`, anything else Vietnamese).
pub fn strings(lang: Option<&str>) -> &'static Strings {
    if lang == Some("en") {
        &EN
    } else {
        &VI
    }
}

/// Every word of the monthly report in one language.
pub struct ReportStrings {
    pub lang: &'static str,
    pub title: &'static str,
    /// Month names, January first ("tháng 1" … / "January" …).
    pub months: [&'static str; 12],
    pub prev: &'static str,
    pub next: &'static str,
    pub csv: &'static str,
    pub measured: &'static str,
    pub local_time: &'static str,
    pub office: &'static str,
    /// Monday first.
    pub days: [&'static str; 7],
    pub holidays: &'static str,
    pub offline_rule: &'static str,
    pub generated: &'static str,
    pub nothing: &'static str,
    pub g_live: &'static str,
    pub g_power: &'static str,
    pub g_env: &'static str,
    pub g_complete: &'static str,
    pub g_clean: &'static str,
    pub g_correct: &'static str,
    /// The columns after the site's, in the table's (and the CSV's) order.
    pub columns: [&'static str; 18],
    /// What each column means, in the same order.
    pub help: [&'static str; 18],
    pub site: &'static str,
    pub total: &'static str,
    pub times: &'static str,
    pub time_one: &'static str,
    pub how_to_read: &'static str,
    pub bounds: &'static str,
    /// The CSV's header, every column.
    pub csv_header: [&'static str; 26],
}

pub const REPORT_VI: ReportStrings = ReportStrings {
    lang: "vi",
    title: "Báo cáo tháng",
    months: [
        "tháng 1", "tháng 2", "tháng 3", "tháng 4", "tháng 5", "tháng 6", "tháng 7", "tháng 8",
        "tháng 9", "tháng 10", "tháng 11", "tháng 12",
    ],
    prev: "‹ Tháng trước",
    next: "Tháng sau ›",
    csv: "Tải CSV",
    measured: "Khoảng thời gian đo",
    local_time: "giờ địa phương",
    office: "Giờ hành chính",
    days: ["T2", "T3", "T4", "T5", "T6", "T7", "CN"],
    holidays: "trừ ngày nghỉ lễ",
    offline_rule: "Mất kết nối: trạng thái offline, hoặc không nhận được tin nào quá",
    generated: "Lập lúc",
    nothing: "Chưa có số liệu lịch sử cho khoảng thời gian này.",
    g_live: "Sống",
    g_power: "Điện và mạng",
    g_env: "Môi trường",
    g_complete: "Đủ",
    g_clean: "Sạch",
    g_correct: "Đúng",
    columns: [
        "Sẵn sàng (24 giờ)",
        "Sẵn sàng (giờ hành chính)",
        "Tồn đọng lâu nhất",
        "Số lần mất điện",
        "Thời gian chạy pin",
        "Mất Internet",
        "Nhiệt độ ngoài ngưỡng",
        "Độ ẩm ngoài ngưỡng",
        "Báo động (cửa, nước, khói…)",
        "Bản ghi đã nhận",
        "Đến muộn",
        "Mất, có lý do",
        "Mất không rõ lý do",
        "Đang chờ",
        "Tỷ lệ đủ",
        "Bản trùng đã loại",
        "Vi phạm hợp đồng dữ liệu",
        "Tin sai định dạng",
    ],
    help: [
        "phần thời gian đo mà điểm đang kết nối và có tin gửi về",
        "như trên, chỉ tính trong giờ hành chính",
        "lâu nhất có số liệu nằm chờ trên thẻ nhớ của hộp (chưa gửi được)",
        "số lần UPS chuyển sang chạy pin (mất điện lưới) trong tháng",
        "tổng thời gian chạy pin, trong lúc điểm còn kết nối",
        "số lần và tổng thời gian đường Internet của điểm bị mất",
        "số lần và thời gian nhiệt độ vượt ngưỡng (ngưỡng của hộp, hoặc ngưỡng của trung tâm)",
        "như trên, với độ ẩm",
        "số lần và thời gian có báo động tiếp điểm: cửa mở, rò nước, khói…",
        "số bản ghi khác nhau đã nhận trong tháng (theo ngày nhận)",
        "bản ghi đến sau khi đã bị coi là thiếu (gửi bù)",
        "số bản ghi thiếu mà hộp đã báo lý do (mất điện, thẻ nhớ hỏng, bộ nhớ đầy…), theo tháng của số liệu",
        "số bản ghi thiếu mà không có lý do nào được báo: con số cần xem xét",
        "số bản ghi thiếu mà hộp có thể còn gửi bù",
        "bản ghi đã nhận / (đã nhận + thiếu)",
        "bản sao gửi lại đã được nhận ra và loại bỏ, không tính hai lần",
        "cùng một bản ghi với hai nội dung khác nhau, hoặc báo cáo của hộp không đọc được",
        "tin không đúng định dạng hợp đồng dữ liệu",
    ],
    site: "Điểm",
    total: "Toàn bộ",
    times: "lần",
    time_one: "lần",
    how_to_read: "Cách đọc",
    bounds: "Ngưỡng của trung tâm",
    csv_header: [
        "điểm",
        "tháng",
        "phút đo",
        "sẵn sàng 24 giờ (%)",
        "sẵn sàng giờ hành chính (%)",
        "phút hành chính",
        "tồn đọng lâu nhất (phút)",
        "số lần mất điện",
        "chạy pin (phút)",
        "số lần mất Internet",
        "mất Internet (phút)",
        "số lần nhiệt độ ngoài ngưỡng",
        "nhiệt độ ngoài ngưỡng (phút)",
        "số lần độ ẩm ngoài ngưỡng",
        "độ ẩm ngoài ngưỡng (phút)",
        "số lần báo động",
        "báo động (phút)",
        "bản ghi đã nhận",
        "đến muộn",
        "mất có lý do",
        "mất không rõ lý do",
        "đang chờ",
        "tỷ lệ đủ (%)",
        "bản trùng đã loại",
        "vi phạm hợp đồng dữ liệu",
        "tin sai định dạng",
    ],
};

pub const REPORT_EN: ReportStrings = ReportStrings {
    lang: "en",
    title: "Monthly report",
    months: [
        "January", "February", "March", "April", "May", "June", "July", "August", "September",
        "October", "November", "December",
    ],
    prev: "‹ Previous month",
    next: "Next month ›",
    csv: "Download CSV",
    measured: "Time measured",
    local_time: "local time",
    office: "Office hours",
    days: ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
    holidays: "except holidays",
    offline_rule: "Offline: status offline, or nothing heard for more than",
    generated: "Generated",
    nothing: "No history kept for this time yet.",
    g_live: "Live",
    g_power: "Power and internet",
    g_env: "Environment",
    g_complete: "Complete",
    g_clean: "Clean",
    g_correct: "Correct",
    columns: [
        "Available (24 h)",
        "Available (office hours)",
        "Longest backlog",
        "Power outages",
        "On battery",
        "Internet down",
        "Temperature out of bounds",
        "Humidity out of bounds",
        "Alarms (door, leak, smoke…)",
        "Readings received",
        "Filled late",
        "Lost, explained",
        "Lost, no reason",
        "Pending",
        "Complete",
        "Copies removed",
        "Contract breaks",
        "Malformed",
    ],
    help: [
        "share of the time measured the site was online and heard from",
        "the same, in office hours only",
        "the longest time readings waited on the box's card (not yet sent)",
        "how many times a UPS went on battery (mains lost) in the month",
        "time on battery in all, while the site was heard from",
        "how many times, and how long, the site's internet link was down",
        "how many times, and how long, a temperature was out of bounds (the box's thresholds or the centre's bounds)",
        "the same for humidity",
        "how many times, and how long, a contact alarm was raised: door open, water leak, smoke…",
        "distinct readings received in the month (by day of arrival)",
        "readings that arrived after they had been counted missing (sent from the backlog)",
        "missing readings the box gave a reason for (power cut, damaged card, memory full…), by the month of the readings",
        "missing readings with no reason given: the figure to look into",
        "missing readings the box may still send",
        "received / (received + missing)",
        "copies sent again, recognised and removed: nothing counted twice",
        "one reading with two different contents, or a box's report that cannot be read",
        "messages that are not the data contract's",
    ],
    site: "Site",
    total: "All sites",
    times: "times",
    time_one: "time",
    how_to_read: "How to read",
    bounds: "The centre's bounds",
    csv_header: [
        "site",
        "month",
        "measured_min",
        "available_24h_pct",
        "available_office_pct",
        "office_min",
        "longest_backlog_min",
        "outages",
        "on_battery_min",
        "wan_down_episodes",
        "wan_down_min",
        "temperature_episodes",
        "temperature_min",
        "humidity_episodes",
        "humidity_min",
        "alarm_episodes",
        "alarm_min",
        "received",
        "filled_late",
        "lost_explained",
        "lost_unexplained",
        "pending",
        "complete_pct",
        "copies_removed",
        "contract_breaks",
        "malformed",
    ],
};

/// The report's words in `lang` (`en`, anything else Vietnamese).
pub fn report_strings(lang: Option<&str>) -> &'static ReportStrings {
    if lang == Some("en") {
        &REPORT_EN
    } else {
        &REPORT_VI
    }
}

/// Numbers the local way (`12.345,6` in Vietnamese, `12,345.6` in
/// English): the contract's, as the gateway's page writes them.
pub use wardgate_contract::words::{count, number};

/// Seconds in words, short for the tables: "3 ngày 4 giờ" / "3 days 4 h",
/// "2 giờ 5 phút", "20 phút", "dưới 1 phút". The contract's
/// [`wardgate_contract::words::duration`] (the gateway's page, and a
/// value's own duration on the site page) spells the English units out.
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
    let (_, m, d) = crate::report::calendar::civil(t.div_euclid(86_400));
    format!("{d:02}/{m:02} {hhmm}")
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
