//! Every word the local page shows, one table per language (Vietnamese
//! first, English by choice), the choice of language, and the event words
//! the page takes from the event catalogue (`crate::events`).

/// Every word the page shows, one set per language.
pub(super) struct Strings {
    pub(super) lang: &'static str,
    pub(super) title: &'static str,
    pub(super) all_normal: &'static str,
    pub(super) starting: &'static str,
    pub(super) no_link: &'static str,
    pub(super) kept: &'static str,
    pub(super) readings_since: &'static str,
    pub(super) ups_not_responding: &'static str,
    pub(super) device_not_responding: &'static str,
    /// The operations centre's `identify` command is flickering the LED.
    pub(super) identify_by_ioc: &'static str,
    /// The spool cannot be written; followed by the reason.
    pub(super) storage_bad: &'static str,
    pub(super) storage_read_only: &'static str,
    pub(super) storage_permission: &'static str,
    pub(super) storage_full: &'static str,
    pub(super) storage_io: &'static str,
    pub(super) on_battery: &'static str,
    pub(super) low_battery: &'static str,
    /// `[power]` on battery: what the gateway does meanwhile.
    pub(super) power_on_battery: &'static str,
    /// `[power]`: the Pi is being shut down; followed by the reason.
    pub(super) power_shutting_down: &'static str,
    pub(super) health_ok: &'static str,
    pub(super) health_stale: &'static str,
    pub(super) health_fault: &'static str,
    pub(super) last_seen: &'static str,
    pub(super) never: &'static str,
    pub(super) events: &'static str,
    pub(super) no_events: &'static str,
    pub(super) last_24h: &'static str,
    pub(super) led_title: &'static str,
    pub(super) led_legend: [&'static str; 8],
    pub(super) switch_to: &'static str,
    pub(super) switch_lang: &'static str,
    pub(super) link: &'static str,
    pub(super) link_up: &'static str,
    pub(super) link_down: &'static str,
    pub(super) kept_on_device: &'static str,
    /// The InfluxDB sink's line: its name, then waiting / set aside /
    /// dropped (retention), then why the last write failed, by class.
    pub(super) influx: &'static str,
    pub(super) influx_waiting: &'static str,
    pub(super) influx_rejected: &'static str,
    pub(super) influx_retention: &'static str,
    /// too_large, bad_points, retention, refused, retry, unreachable.
    pub(super) influx_classes: [(&'static str, &'static str); 6],
    /// `web.password_file` can be read by other users of the box.
    pub(super) password_file_open: &'static str,
}

pub(super) const VI: Strings = Strings {
    lang: "vi",
    title: "Trạng thái thiết bị giám sát",
    all_normal: "Mọi thứ hoạt động bình thường",
    starting: "Đang khởi động…",
    no_link: "Mất kết nối tới trung tâm — dữ liệu đang được lưu tạm",
    identify_by_ioc: "Trung tâm điều hành yêu cầu nhận diện thiết bị (đèn nhấp nháy nhanh)",
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
    power_on_battery: "Đang chạy bằng pin UPS: dữ liệu được ghi ngay vào thẻ nhớ; thiết bị sẽ tự tắt an toàn trước khi UPS hết pin và tự bật lại khi có điện",
    power_shutting_down: "Đang tắt thiết bị an toàn do mất điện kéo dài — dữ liệu đã được giữ lại, thiết bị sẽ tự bật lại khi có điện",
    health_ok: "bình thường",
    health_stale: "không có số liệu mới",
    health_fault: "lỗi",
    last_seen: "Cập nhật lúc",
    never: "chưa có",
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
        "Ba lần nháy ngắn mỗi 2 giây: mất điện lưới, đang chạy bằng pin UPS",
        "Một lần nháy ngắn mỗi 2 giây: đang tắt thiết bị an toàn do mất điện kéo dài",
        "Tắt (hoặc nháy theo thẻ nhớ như Pi thông thường): wardgate không chạy, ví dụ cấu hình sai",
    ],
    switch_to: "en",
    switch_lang: "English",
    link: "Kết nối tới trung tâm",
    link_up: "đang kết nối",
    link_down: "mất kết nối",
    kept_on_device: "Bản ghi đang lưu tạm",
    influx: "Cơ sở dữ liệu InfluxDB",
    influx_waiting: "đang chờ ghi",
    influx_rejected: "bị loại",
    influx_retention: "quá hạn lưu trữ",
    influx_classes: [
        ("too_large", "yêu cầu quá lớn, đã chia nhỏ"),
        ("bad_points", "có điểm dữ liệu sai, đã để riêng"),
        ("retention", "điểm dữ liệu quá hạn lưu trữ, đã bỏ"),
        ("refused", "mã truy cập bị từ chối, dữ liệu vẫn được giữ"),
        ("retry", "máy chủ bận, đang thử lại"),
        ("unreachable", "không kết nối được, đang thử lại"),
    ],
    password_file_open: "Tệp mật khẩu của trang này đang để người dùng khác trên thiết bị đọc được: hãy để riêng (chmod o-r)",
};

pub(super) const EN: Strings = Strings {
    lang: "en",
    title: "Monitoring box status",
    all_normal: "All systems normal",
    starting: "Starting…",
    no_link: "No link to the operations centre — data is being kept on this device",
    identify_by_ioc: "Identify requested by the operations centre (the LED flickers)",
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
    power_on_battery: "Running on the UPS battery: readings are written to the SD card at once; this box will shut itself down safely before the UPS runs flat, and start again when the mains return",
    power_shutting_down: "Shutting down safely for a long power cut — readings are kept, the box starts again when the mains return",
    health_ok: "normal",
    health_stale: "no fresh readings",
    health_fault: "fault",
    last_seen: "Last reading",
    never: "none yet",
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
        "Three short flashes every 2 s: mains power lost, running on the UPS battery",
        "One short flash every 2 s: shutting down safely for a long power cut",
        "Off (or the Pi's usual flicker on SD card activity): wardgate is not running, e.g. the configuration is wrong",
    ],
    switch_to: "vi",
    switch_lang: "Tiếng Việt",
    link: "Link to the operations centre",
    link_up: "connected",
    link_down: "down",
    kept_on_device: "Readings kept on this device",
    influx: "InfluxDB",
    influx_waiting: "waiting",
    influx_rejected: "set aside",
    influx_retention: "outside retention",
    influx_classes: [
        ("too_large", "request too large, batch halved"),
        ("bad_points", "bad points set aside"),
        ("retention", "points outside retention dropped"),
        ("refused", "token refused, readings kept"),
        ("retry", "server busy, retrying"),
        ("unreachable", "cannot reach it, retrying"),
    ],
    password_file_open: "The password file of this page is readable by other users of this box: make it private (chmod o-r)",
};

/// The words the page shows for an event: in Vietnamese those of the event
/// catalogue for its code (sources write their messages in English; the
/// page says them in the reader's language); unknown codes, and English,
/// show the source's own message.
pub(super) fn event_words<'a>(
    t: &Strings,
    code: &str,
    message: &'a str,
) -> std::borrow::Cow<'a, str> {
    if t.lang == "vi" {
        if let Some(words) = crate::events::page_vi(code) {
            return std::borrow::Cow::Borrowed(words);
        }
    }
    std::borrow::Cow::Borrowed(message)
}

pub(super) fn strings(lang: &str) -> &'static Strings {
    if lang == "en" {
        &EN
    } else {
        &VI
    }
}

/// The cookie that remembers the language a person picked with the link.
pub(super) const LANG_COOKIE: &str = "wardgate_lang";

/// The language: `?lang=` (the link), else the one remembered in the
/// cookie, else the configured one (`web.language`, Vietnamese by
/// default). The browser's `Accept-Language` is not asked: office PCs and
/// phones here often run an English interface for Vietnamese-speaking
/// staff.
pub(super) fn choose_language(
    query: Option<&str>,
    cookie: Option<&str>,
    default: &str,
) -> &'static str {
    let pick = |l: &str| if l == "en" { "en" } else { "vi" };
    if let Some(q) = query {
        return pick(q);
    }
    if let Some(c) = cookie.filter(|c| *c == "en" || *c == "vi") {
        return pick(c);
    }
    pick(default)
}

/// The language remembered in a `Cookie` header's value, if any.
pub(super) fn cookie_language(header: &str) -> Option<&str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == LANG_COOKIE).then_some(v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_choice() {
        assert_eq!(choose_language(None, None, "vi"), "vi");
        assert_eq!(choose_language(None, None, "en"), "en");
        // The link wins, then the cookie, then the configured language.
        assert_eq!(choose_language(Some("en"), Some("vi"), "vi"), "en");
        assert_eq!(choose_language(Some("vi"), Some("en"), "en"), "vi");
        assert_eq!(choose_language(None, Some("en"), "vi"), "en");
        assert_eq!(choose_language(None, Some("vi"), "en"), "vi");
        assert_eq!(choose_language(None, Some("fr"), "en"), "en");
        assert_eq!(cookie_language("a=b; wardgate_lang=en"), Some("en"));
        assert_eq!(cookie_language("wardgate_lang=vi"), Some("vi"));
        assert_eq!(cookie_language("other=en"), None);
    }

    #[test]
    fn event_words_in_the_readers_language() {
        assert_eq!(
            event_words(&VI, "ups.on_battery", "UPS on battery: mains power lost"),
            "UPS chuyển sang chạy pin: mất điện lưới"
        );
        assert_eq!(
            event_words(&VI, "device.lost", "ups1 has not answered for 3s"),
            "Thiết bị không có số liệu mới"
        );
        assert_eq!(
            event_words(&VI, "spool.corrupt", "The spool was unreadable"),
            "Dữ liệu lưu tạm bị hỏng và đã được tạo mới"
        );
        assert_eq!(
            event_words(&VI, "mqtt.stalled", "stalled"),
            "Máy chủ trung tâm không xác nhận dữ liệu: đang kết nối lại"
        );
        // A contact's code and words come from the config: shown as sent.
        assert_eq!(event_words(&VI, "cua_kho.mo", "Cửa kho mở"), "Cửa kho mở");
        assert_eq!(
            event_words(&EN, "ups.on_battery", "on battery"),
            "on battery"
        );
    }
}
