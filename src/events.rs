//! The event catalogue: every event code the gateway can publish, with its
//! severity and its message templates in English and Vietnamese.
//!
//! Sources, the gateway's own reports and the local page take their words
//! from here, and docs/mqtt.md lists every code (a unit test checks both
//! ways). The codes, severities and English messages are part of the MQTT
//! contract: change them only as the contract allows (add, never rename).
//!
//! Templates name their parts in braces (`{device}`, `{reason}`); [`fill`]
//! puts the values in. Where a code is sent with more than one English
//! message (a different wording per source), each wording has its own entry
//! with the same code, severity and Vietnamese words.

use std::fmt::{self, Write as _};

use crate::model::Severity;
use Severity::{Critical, Info, Warning};

/// How an event is said in Vietnamese.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vi {
    /// No words of the gateway's own: the page shows the message as sent.
    /// Only for the GPIO contacts, whose label and state words are the
    /// technician's (written in Vietnamese in the config where wanted).
    None,
    /// Fixed words the page shows for this code.
    Page(&'static str),
    /// A template the sender fills with the event's values and sends in
    /// `values."message.vi"`, which the page shows.
    Carried(&'static str),
}

/// One kind of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventDef {
    /// Machine-readable, dotted like value names. `<input>.<state>` stands
    /// for codes the config names (GPIO contacts).
    pub code: &'static str,
    /// The severity it is sent with (the default, when `varies` says the
    /// config or the situation chooses another).
    pub severity: Severity,
    /// When the severity is not always `severity`, in words (for the docs).
    pub varies: Option<&'static str>,
    /// The English message template (`message` of the event).
    pub message: &'static str,
    pub vi: Vi,
}

impl EventDef {
    /// The English message with `args` filled in.
    pub fn render(&self, args: &[(&str, &dyn fmt::Display)]) -> String {
        fill(self.message, args)
    }

    /// The Vietnamese message with `args` filled in, when there is one.
    pub fn render_vi(&self, args: &[(&str, &dyn fmt::Display)]) -> Option<String> {
        match self.vi {
            Vi::None => None,
            Vi::Page(t) | Vi::Carried(t) => Some(fill(t, args)),
        }
    }
}

/// Puts `args` into `template`'s `{name}` parts in one pass (a value that
/// itself contains braces is not read again). A part without a value stays
/// as it is written, so a forgotten argument shows in the message and in
/// tests rather than vanishing.
pub(crate) fn fill(template: &str, args: &[(&str, &dyn fmt::Display)]) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let name = &after[..close];
                match args.iter().find(|(n, _)| *n == name) {
                    Some((_, v)) => {
                        let _ = write!(out, "{v}");
                    }
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

const fn def(code: &'static str, severity: Severity, message: &'static str, vi: Vi) -> EventDef {
    EventDef {
        code,
        severity,
        varies: None,
        message,
        vi,
    }
}

// ---- UPS: changes of `ups.status` (source/ups.rs) and APC alerts ----

pub(crate) const UPS_ON_BATTERY: EventDef = def(
    "ups.on_battery",
    Critical,
    "UPS on battery: mains power lost",
    Vi::Page("UPS chuyển sang chạy pin: mất điện lưới"),
);
pub(crate) const UPS_ON_LINE: EventDef = def(
    "ups.on_line",
    Info,
    "UPS back on mains power",
    Vi::Page("UPS đã có điện lưới trở lại"),
);
pub(crate) const UPS_LOW_BATTERY: EventDef = def(
    "ups.low_battery",
    Critical,
    "UPS battery low: the UPS will shut down soon",
    Vi::Page("Pin UPS yếu: UPS sắp tắt"),
);
pub(crate) const UPS_BATTERY_OK: EventDef = def(
    "ups.battery_ok",
    Info,
    "UPS battery no longer low",
    Vi::Page("Pin UPS không còn yếu"),
);
pub(crate) const UPS_REPLACE_BATTERY: EventDef = def(
    "ups.replace_battery",
    Warning,
    "UPS asks for its battery to be replaced",
    Vi::Page("UPS báo cần thay pin"),
);
pub(crate) const UPS_OVERLOAD: EventDef = def(
    "ups.overload",
    Warning,
    "UPS overloaded",
    Vi::Page("UPS quá tải"),
);
pub(crate) const UPS_OVERLOAD_CLEARED: EventDef = def(
    "ups.overload_cleared",
    Info,
    "UPS no longer overloaded",
    Vi::Page("UPS hết quá tải"),
);
pub(crate) const UPS_BYPASS: EventDef = def(
    "ups.bypass",
    Warning,
    "UPS on bypass: the load is not protected",
    Vi::Page("UPS chạy bypass: thiết bị không được bảo vệ"),
);
pub(crate) const UPS_BYPASS_ENDED: EventDef = def(
    "ups.bypass_ended",
    Info,
    "UPS no longer on bypass",
    Vi::Page("UPS hết chạy bypass"),
);
pub(crate) const UPS_SHUTDOWN_PENDING: EventDef = def(
    "ups.shutdown_pending",
    Critical,
    "UPS shutdown pending",
    Vi::Page("UPS sắp tắt"),
);
/// `ups.shutdown_pending` as an APC Smart-UPS announces it (alert `*`).
pub(crate) const UPS_TURNING_OFF: EventDef = def(
    "ups.shutdown_pending",
    Critical,
    "UPS is about to turn off",
    Vi::Page("UPS sắp tắt"),
);
pub(crate) const UPS_TEST_STARTED: EventDef = def(
    "ups.test_started",
    Info,
    "UPS battery test in progress",
    Vi::Page("UPS đang kiểm tra pin"),
);
pub(crate) const UPS_TEST_ENDED: EventDef = def(
    "ups.test_ended",
    Info,
    "UPS battery test ended",
    Vi::Page("UPS đã kiểm tra pin xong"),
);
pub(crate) const UPS_OFF: EventDef = def(
    "ups.off",
    Critical,
    "UPS output is off",
    Vi::Page("UPS đã tắt nguồn ra"),
);
pub(crate) const UPS_ON: EventDef = def(
    "ups.on",
    Info,
    "UPS output is on again",
    Vi::Page("UPS đã bật nguồn ra"),
);
/// APC Smart-UPS alert `?`.
pub(crate) const UPS_ABNORMAL: EventDef = def(
    "ups.abnormal",
    Warning,
    "UPS reports an abnormal condition",
    Vi::Page("UPS báo có tình trạng bất thường"),
);
/// APC Smart-UPS alert `=`.
pub(crate) const UPS_ABNORMAL_CLEARED: EventDef = def(
    "ups.abnormal_cleared",
    Info,
    "UPS abnormal condition cleared",
    Vi::Page("UPS đã hết tình trạng bất thường"),
);

// ---- Any device: health (source/mod.rs, DeviceHandle) ----

/// No good reading for three intervals (`{limit}`: how long, in words).
pub(crate) const DEVICE_LOST: EventDef = def(
    "device.lost",
    Warning,
    "{device} has not answered for {limit}",
    Vi::Page("Thiết bị không có số liệu mới"),
);
/// `device.lost` for a reason the source knows (e.g. upsd's DATA-STALE).
pub(crate) const DEVICE_STALE: EventDef = def(
    "device.lost",
    Warning,
    "{device}: {reason}",
    Vi::Page("Thiết bị không có số liệu mới"),
);
pub(crate) const DEVICE_FAULT: EventDef = def(
    "device.fault",
    Warning,
    "{device}: {reason}",
    Vi::Page("Thiết bị bị lỗi"),
);
pub(crate) const DEVICE_RESTORED: EventDef = def(
    "device.restored",
    Info,
    "{device} is answering again",
    Vi::Page("Thiết bị hoạt động trở lại"),
);

// ---- Simulated sensor (source/sim.rs) ----

pub(crate) const DOOR_OPEN: EventDef = def(
    "door.open",
    Warning,
    "Equipment room door opened",
    Vi::Page("Cửa phòng máy mở"),
);
pub(crate) const DOOR_CLOSED: EventDef = def(
    "door.closed",
    Info,
    "Equipment room door closed",
    Vi::Page("Cửa phòng máy đóng"),
);

// ---- Thresholds on any value (source/threshold.rs) ----
// `{label}`: the configured label (English or Vietnamese), `{unit}`: the
// unit with its leading space, or nothing.

pub(crate) const THRESHOLD_HIGH: EventDef = EventDef {
    code: "threshold.high",
    severity: Warning,
    varies: Some("per config (the threshold's `severity`)"),
    message: "{label} {value}{unit} > {limit}{unit}",
    vi: Vi::Carried("{label} {value}{unit} > {limit}{unit}"),
};
pub(crate) const THRESHOLD_LOW: EventDef = EventDef {
    code: "threshold.low",
    severity: Warning,
    varies: Some("per config (the threshold's `severity`)"),
    message: "{label} {value}{unit} < {limit}{unit}",
    vi: Vi::Carried("{label} {value}{unit} < {limit}{unit}"),
};
pub(crate) const THRESHOLD_CLEARED: EventDef = def(
    "threshold.cleared",
    Info,
    "{label} back to normal: {value}{unit}",
    Vi::Carried("{label} đã trở lại bình thường: {value}{unit}"),
);

// ---- GPIO contacts (source/gpio.rs) ----

/// A contact changed: the code is the input's `name` and the state's word
/// (`door.open`); `{label}` is the input's label, or its name.
pub(crate) const GPIO_CONTACT: EventDef = EventDef {
    code: "<input>.<state>",
    severity: Warning,
    varies: Some("per config (the input's `severity`) when it becomes active; info when inactive"),
    message: "{label} {state}",
    vi: Vi::None,
};

// ---- The Pi itself (source/system.rs) ----

pub(crate) const PI_UNDER_VOLTAGE: EventDef = def(
    "pi.under_voltage",
    Warning,
    "Under-voltage on the Pi: check its power supply (a weak supply corrupts SD cards)",
    Vi::Page("Nguồn điện của Pi bị yếu: kiểm tra bộ nguồn (nguồn yếu làm hỏng thẻ nhớ)"),
);
pub(crate) const PI_VOLTAGE_OK: EventDef = def(
    "pi.voltage_ok",
    Info,
    "The Pi's supply voltage is normal again",
    Vi::Page("Nguồn điện của Pi đã bình thường trở lại"),
);

// ---- The router over SNMP (source/snmp.rs) ----
// `{interface}`: the interface's name, `{state}`: its oper status word.

pub(crate) const ROUTER_RESTARTED: EventDef = def(
    "router.restarted",
    Warning,
    "The router restarted (its uptime went back)",
    Vi::Page("Router vừa khởi động lại"),
);
pub(crate) const WAN_DOWN: EventDef = def(
    "wan.down",
    Critical,
    "The router's WAN interface {interface} is {state}: the internet link is down",
    Vi::Page("Mất kết nối Internet"),
);
pub(crate) const WAN_UP: EventDef = def(
    "wan.up",
    Info,
    "The router's WAN interface {interface} is up again",
    Vi::Page("Kết nối Internet đã có lại"),
);
pub(crate) const INTERFACE_DOWN: EventDef = def(
    "interface.down",
    Warning,
    "Router interface {interface} is {state}",
    Vi::Page("Một cổng mạng của router không hoạt động"),
);
pub(crate) const INTERFACE_UP: EventDef = def(
    "interface.up",
    Info,
    "Router interface {interface} is up again",
    Vi::Page("Cổng mạng của router đã hoạt động trở lại"),
);

// ---- Reachability probes (source/probe.rs) ----

/// `wan.down` as the probes see it (no target answers).
pub(crate) const PROBE_WAN_DOWN: EventDef = def(
    "wan.down",
    Critical,
    "No probe target answers: the internet link is down",
    Vi::Page("Mất kết nối Internet"),
);
/// `wan.up` as the probes see it.
pub(crate) const PROBE_WAN_UP: EventDef = def(
    "wan.up",
    Info,
    "The internet link is back",
    Vi::Page("Kết nối Internet đã có lại"),
);

// ---- Modbus (source/modbus) ----

/// Part of the register map was refused (`{reason}`: the exception).
pub(crate) const MODBUS_EXCEPTION: EventDef = def(
    "modbus.exception",
    Warning,
    "{device}: {reason}",
    Vi::Page("Thiết bị Modbus từ chối đọc một phần số liệu"),
);

// ---- The MQTT sink (sink/mqtt/session.rs) ----

pub(crate) const MQTT_STALLED: EventDef = def(
    "mqtt.stalled",
    Warning,
    "The broker has not acknowledged anything for {secs} s while {pending} records wait to be sent; reconnecting.",
    Vi::Page("Máy chủ trung tâm không xác nhận dữ liệu: đang kết nối lại"),
);

// ---- The InfluxDB sink (reported by sink/influx) ----

pub(crate) const INFLUXDB_TOKEN_REFUSED: EventDef = def(
    "influxdb.token_refused",
    Critical,
    "InfluxDB at {url} refused the write ({status}): {reason}. Every reading is kept and the write is tried again every few minutes; check influxdb.token_file, org and bucket.",
    Vi::Page("Cơ sở dữ liệu InfluxDB từ chối mã truy cập; dữ liệu vẫn được giữ lại."),
);

pub(crate) const INFLUXDB_REJECTED: EventDef = def(
    "influxdb.rejected",
    Warning,
    "InfluxDB refused {count} point(s) as malformed ({status}: {reason}); they were set aside and will not be written there (MQTT still has them). The rest were written.",
    Vi::Page("InfluxDB từ chối một số số liệu sai định dạng (MQTT vẫn có đủ)"),
);

pub(crate) const INFLUXDB_RETENTION: EventDef = def(
    "influxdb.retention",
    Warning,
    "InfluxDB dropped {count} point(s) as outside the bucket's retention ({reason}); they are not sent again.",
    Vi::Page("InfluxDB bỏ một số số liệu quá hạn lưu giữ"),
);

pub(crate) const INFLUXDB_RESTORED: EventDef = def(
    "influxdb.restored",
    Info,
    "InfluxDB accepts writes again after {after}; {pending} reading(s) waiting are being written.",
    Vi::Page("InfluxDB nhận số liệu trở lại: đang ghi số liệu đang chờ"),
);

// ---- The spool and the gateway (reported by telemetry.rs) ----

pub(crate) const SPOOL_CORRUPT: EventDef = def(
    "spool.corrupt",
    Critical,
    "The spool was unreadable ({reason}) and was moved to {moved_to}; a new one was started. Readings in it were not sent.",
    Vi::Page("Dữ liệu lưu tạm bị hỏng và đã được tạo mới"),
);
/// `{streams}`: one [`UNCLEAN_STREAM_USED`] or [`UNCLEAN_STREAM`] per
/// stream, joined with "; ".
pub(crate) const GATEWAY_UNCLEAN_STOP: EventDef = def(
    "gateway.unclean_stop",
    Warning,
    "wardgate did not stop cleanly last time (power cut or crash). {streams}. Numbers after the last known used one and before the resume point that never arrive were either never used or were readings lost in the stop (at most those of the last spool.spill_after + spool.commit_interval).",
    Vi::Page("Lần trước thiết bị bị tắt đột ngột (mất điện?)"),
);
/// One stream of [`GATEWAY_UNCLEAN_STOP`] whose last used number is known.
pub(crate) const UNCLEAN_STREAM_USED: &str =
    "{device} {kind}: last known used {used}, resumes at {at}";
/// One stream of [`GATEWAY_UNCLEAN_STOP`] (after a power cut).
pub(crate) const UNCLEAN_STREAM: &str = "{device} {kind}: resumes at {at}";
pub(crate) const SPOOL_CORRUPT_RECORD: EventDef = def(
    "spool.corrupt_record",
    Warning,
    "{count} damaged record(s) in the spool were dropped, not sent ({reason}).",
    Vi::Carried("{count} bản ghi bị hỏng trong bộ nhớ đệm đã bị bỏ, không gửi."),
);
/// `{reason}`: the reason in words (English: `spool::degraded_words`,
/// Vietnamese: [`degraded_reason_vi`]), `{detail}`: the system's words.
pub(crate) const SPOOL_DEGRADED: EventDef = def(
    "spool.degraded",
    Critical,
    "Readings cannot be kept on the card: {reason} ({detail}). They are sent from memory; if the link drops they are lost. Tried again every few seconds.",
    Vi::Carried("Không lưu được dữ liệu vào thẻ nhớ: {reason}. Dữ liệu vẫn được gửi từ bộ nhớ."),
);
/// `{after}`: how long the card could not be written, in words.
pub(crate) const SPOOL_RESTORED: EventDef = def(
    "spool.restored",
    Info,
    "The spool can be written again after {after}; {lost} reading(s) could not be kept meanwhile.",
    Vi::Carried("Đã lưu được dữ liệu vào thẻ nhớ trở lại."),
);
pub(crate) const SPOOL_QUARANTINED: EventDef = def(
    "spool.quarantined",
    Warning,
    "A record of {device} (seq {seq}, {bytes} bytes) was set aside and will not be sent: {reason}.",
    Vi::Carried("Một bản ghi của {device} đã bị để riêng, không gửi được."),
);
pub(crate) const GATEWAY_SEQUENCE_RESET: EventDef = EventDef {
    code: "gateway.sequence_reset",
    severity: Critical,
    varies: Some("info on a first start"),
    message: "Sequence numbers start again at 0 in epoch {epoch}: {reason}.",
    vi: Vi::Carried("Số thứ tự dữ liệu bắt đầu lại từ 0."),
};

/// `{kind}`: `samples` or `events`; `{offset}`: the offset in words;
/// `{offset_ms}`: the same in ms, signed.
pub(crate) const GATEWAY_CLOCK_CORRECTED: EventDef = def(
    "gateway.clock_corrected",
    Info,
    "The clock synchronised after running {offset}: {count} {kind} of {device} (seq {first} to {last}, epoch {epoch}) were sent with the unsynchronised time; add {offset_ms} ms to the ts of those marked unsynced.",
    Vi::Carried("Đồng hồ đã được đồng bộ: thời gian của {count} bản ghi của {device} đã gửi trước đó cần cộng thêm {offset_ms} ms."),
);

// ---- Power: the gateway shuts the Pi down before the UPS runs flat (power/) ----

pub(crate) const POWER_SHUTDOWN: EventDef = def(
    "power.shutdown",
    Critical,
    "Shutting the Pi down: {reason} (UPS {ups}, {status}). Readings are kept on the SD card.",
    Vi::Carried(
        "Đang tắt thiết bị an toàn do mất điện kéo dài: {reason}. Dữ liệu được giữ trên thẻ nhớ.",
    ),
);
pub(crate) const POWER_RESTORED: EventDef = def(
    "power.restored",
    Info,
    "Mains power back after {for} on battery{cancelled}.",
    Vi::Page("Đã có điện lưới trở lại; thiết bị không cần tắt"),
);

/// The spool's `spool.degraded` reason in Vietnamese.
pub(crate) fn degraded_reason_vi(reason: &str) -> &'static str {
    match reason {
        "read_only" => "thẻ nhớ chỉ đọc",
        "permission_denied" => "không có quyền ghi thư mục lưu trữ",
        "disk_full" => "đĩa đầy",
        _ => "lỗi ghi đĩa",
    }
}

/// Every entry of the catalogue.
pub(crate) const ALL: &[EventDef] = &[
    UPS_ON_BATTERY,
    UPS_ON_LINE,
    UPS_LOW_BATTERY,
    UPS_BATTERY_OK,
    UPS_REPLACE_BATTERY,
    UPS_OVERLOAD,
    UPS_OVERLOAD_CLEARED,
    UPS_BYPASS,
    UPS_BYPASS_ENDED,
    UPS_SHUTDOWN_PENDING,
    UPS_TURNING_OFF,
    UPS_TEST_STARTED,
    UPS_TEST_ENDED,
    UPS_OFF,
    UPS_ON,
    UPS_ABNORMAL,
    UPS_ABNORMAL_CLEARED,
    DEVICE_LOST,
    DEVICE_STALE,
    DEVICE_FAULT,
    DEVICE_RESTORED,
    DOOR_OPEN,
    DOOR_CLOSED,
    THRESHOLD_HIGH,
    THRESHOLD_LOW,
    THRESHOLD_CLEARED,
    GPIO_CONTACT,
    PI_UNDER_VOLTAGE,
    PI_VOLTAGE_OK,
    ROUTER_RESTARTED,
    WAN_DOWN,
    WAN_UP,
    INTERFACE_DOWN,
    INTERFACE_UP,
    PROBE_WAN_DOWN,
    PROBE_WAN_UP,
    MODBUS_EXCEPTION,
    MQTT_STALLED,
    INFLUXDB_TOKEN_REFUSED,
    INFLUXDB_REJECTED,
    INFLUXDB_RETENTION,
    INFLUXDB_RESTORED,
    SPOOL_CORRUPT,
    GATEWAY_UNCLEAN_STOP,
    SPOOL_CORRUPT_RECORD,
    SPOOL_DEGRADED,
    SPOOL_RESTORED,
    SPOOL_QUARANTINED,
    GATEWAY_SEQUENCE_RESET,
    GATEWAY_CLOCK_CORRECTED,
    POWER_SHUTDOWN,
    POWER_RESTORED,
];

/// The words the page shows for `code` in Vietnamese, when the event did
/// not carry its own (`message.vi`).
pub(crate) fn page_vi(code: &str) -> Option<&'static str> {
    ALL.iter().find_map(|d| match d.vi {
        Vi::Page(w) if d.code == code => Some(w),
        _ => None,
    })
}

#[cfg(test)]
mod tests;
