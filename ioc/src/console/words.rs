//! The words of the fleet table, short enough for 100 columns. The
//! totals line takes the pages' words (`web::words`); these are the
//! table's own, with a legend for the abbreviations.

/// Every word of the table in one language.
pub struct Words {
    pub lang: &'static str,
    /// The headers, in the order of the cells.
    pub columns: [&'static str; 9],
    pub online: &'static str,
    /// Offline, by the status's reason: `lost`, `shutdown`, `power`, other.
    pub lost: &'static str,
    pub shutdown: &'static str,
    pub power_off: &'static str,
    pub offline: &'static str,
    pub mains: &'static str,
    pub battery: &'static str,
    pub low_battery: &'static str,
    pub wan_up: &'static str,
    pub wan_down: &'static str,
    pub clock_ok: &'static str,
    pub clock_bad: &'static str,
    pub newest: &'static str,
    pub legend: &'static [&'static str],
}

pub const VI: Words = Words {
    lang: "vi",
    columns: [
        "Điểm",
        "Kết nối",
        "Nguồn điện",
        "Internet",
        "Cảnh báo",
        "Chờ gửi",
        "Đồng hồ",
        "Phiên bản",
        "Mất",
    ],
    online: "có",
    lost: "MẤT",
    shutdown: "TẮT",
    power_off: "TẮT-UPS",
    offline: "MẤT",
    mains: "lưới",
    battery: "PIN",
    low_battery: "PIN YẾU",
    wan_up: "có",
    wan_down: "MẤT",
    clock_ok: "đúng giờ",
    clock_bad: "CHƯA ĐB",
    newest: "Tin mới nhất:",
    legend: &[
        "Thời gian: n ngày, g giờ, p phút. ≈ pin còn. ! có cảnh báo nghiêm trọng. ~ lần cuối biết.",
        "MẤT: mất liên lạc. TẮT: tắt bình thường. TẮT-UPS: tắt do UPS sắp hết pin. ĐB: đồng bộ.",
        "Mất: số liệu bị mất mà thiết bị không báo lý do.",
    ],
};

pub const EN: Words = Words {
    lang: "en",
    columns: [
        "Site", "Link", "Power", "Internet", "Alarms", "Backlog", "Clock", "Version", "Lost",
    ],
    online: "up",
    lost: "LOST",
    shutdown: "OFF",
    power_off: "OFF-UPS",
    offline: "DOWN",
    mains: "mains",
    battery: "BATT",
    low_battery: "LOW BATT",
    wan_up: "up",
    wan_down: "DOWN",
    clock_ok: "synced",
    clock_bad: "UNSYNCED",
    newest: "Newest message:",
    legend: &[
        "Times: d days, h hours, m minutes. ≈ battery runtime left. ! a critical alarm. ~ last known.",
        "LOST: lost contact. OFF: shut down. OFF-UPS: shut down, UPS battery nearly flat.",
        "Lost: readings lost with no reason given by the box.",
    ],
};

/// The words of `lang` (`en`, anything else Vietnamese).
pub fn words(lang: &str) -> &'static Words {
    if lang == "en" {
        &EN
    } else {
        &VI
    }
}
