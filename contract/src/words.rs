//! What people read for a value: one table of value names -> (Vietnamese,
//! English, unit, format), read by the gateway's local page, `wardgate
//! check` and (through [`unit`]) the inventory, and by the operations
//! centre's pages; numbers written the local way
//! (`23,5 °C` and `12.345` in Vietnamese, `23.5 °C` and `12,345` in
//! English), durations in words (`3 ngày 4 giờ`), and the site's time zone.
//!
//! A name may hold one `*`, standing for the part the configuration names
//! (an interface, a probe target, a 1-Wire id); the label's `{}` is that
//! part. Exact names are looked up first, then patterns in table order. A
//! value without an entry still shows, with its own name.

use crate::model::Value;
use table::YES_NO;

/// How a value is written for people.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Format {
    /// A number with this many decimals, then the unit.
    Num(u8),
    /// A count, with the word of what is counted (Vietnamese, English).
    Count(&'static str, &'static str),
    /// Bytes, in GB with one decimal; with the share of the total (the
    /// value named here) as a percentage when it is known.
    Bytes(Option<&'static str>),
    /// Seconds, as days and hours, hours and minutes, or minutes.
    Duration,
    /// Bits per second, in Mbit/s.
    Bps,
    /// true / false as words: (Vietnamese true, false, English true, false).
    YesNo(&'static [&'static str; 4]),
    /// Words as they come, some translated: (raw, Vietnamese, English).
    Words(&'static [(&'static str, &'static str, &'static str)]),
    /// NUT's `ups.status` tokens, as one phrase.
    UpsStatus,
    /// Not a line of its own (raw firmware bits, a total folded into the
    /// free line), but it has words for `wardgate check` and the inventory.
    Hidden,
}

/// One value name's words.
#[derive(Debug, Clone, Copy)]
pub struct Word {
    /// The value name, or a pattern with one `*`.
    pub name: &'static str,
    pub vi: &'static str,
    pub en: &'static str,
    /// The unit of the value as published (SI symbol; "" for none).
    pub unit: &'static str,
    pub format: Format,
}

mod table;
pub use table::WORDS;

/// The entry for `name` and the part its `*` stood for ("" for an exact name).
pub fn lookup(name: &str) -> Option<(&'static Word, &str)> {
    if let Some(e) = WORDS.iter().find(|e| e.name == name) {
        return Some((e, ""));
    }
    WORDS.iter().find_map(|e| {
        let (pre, post) = e.name.split_once('*')?;
        let mid = name.strip_prefix(pre)?.strip_suffix(post)?;
        (!mid.is_empty()).then_some((e, mid))
    })
}

/// The value's unit as published ("B", "s", "°C"...), for the inventory;
/// `None` for a name without an entry, `Some("")` for a value without unit.
pub fn unit(name: &str) -> Option<&'static str> {
    lookup(name).map(|(e, _)| e.unit)
}

/// The value's name in words, in `lang` ("vi" or "en"); its own name when
/// it has no entry.
pub fn label(name: &str, lang: &str) -> String {
    match lookup(name) {
        Some((e, part)) => {
            let l = if lang == "en" { e.en } else { e.vi };
            l.replace("{}", part)
        }
        None => name.to_owned(),
    }
}

/// Both labels, (Vietnamese, English).
pub fn labels(name: &str) -> (String, String) {
    (label(name, "vi"), label(name, "en"))
}

/// `x` with `decimals` decimals and grouped thousands: `12.345,6` in
/// Vietnamese, `12,345.6` in English.
pub fn number(x: f64, decimals: usize, lang: &str) -> String {
    if !x.is_finite() {
        return "—".into();
    }
    let (thousands, point) = if lang == "en" { (',', '.') } else { ('.', ',') };
    let s = format!("{:.*}", decimals, x.abs());
    let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
    let mut out = String::new();
    // "-0" is not a number anyone wants to read.
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

/// A whole count with grouped thousands.
pub fn count(n: u64, lang: &str) -> String {
    number(n as f64, 0, lang)
}

/// Seconds in words: "3 ngày 4 giờ" / "3 days 4 hours", "2 giờ 5 phút",
/// "20 phút", "dưới 1 phút".
pub fn duration(secs: f64, lang: &str) -> String {
    let en = lang == "en";
    let s = secs.max(0.0).round() as u64;
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    let unit = |n: u64, vi: &str, one: &str, many: &str| {
        if en {
            format!("{n} {}", if n == 1 { one } else { many })
        } else {
            format!("{n} {vi}")
        }
    };
    // The smaller part is left out when it is zero ("3 days", not "3 days
    // 0 hours").
    let two = |big: String, small: u64, vi: &str, one: &str, many: &str| {
        if small == 0 {
            big
        } else {
            format!("{big} {}", unit(small, vi, one, many))
        }
    };
    if d > 0 {
        two(unit(d, "ngày", "day", "days"), h, "giờ", "hour", "hours")
    } else if h > 0 {
        two(
            unit(h, "giờ", "hour", "hours"),
            m,
            "phút",
            "minute",
            "minutes",
        )
    } else if m > 0 || s == 0 {
        if en {
            format!("{m} min")
        } else {
            format!("{m} phút")
        }
    } else if en {
        "under a minute".into()
    } else {
        "dưới 1 phút".into()
    }
}

fn with_unit(n: String, unit: &str) -> String {
    if unit.is_empty() {
        n
    } else {
        format!("{n} {unit}")
    }
}

/// NUT status tokens in words (`OL`, `OB LB`, `OL CHRG`...).
pub fn ups_status(st: &str, lang: &str) -> String {
    let en = lang == "en";
    let toks: Vec<&str> = st.split_whitespace().collect();
    let mut parts: Vec<&str> = Vec::new();
    if toks.contains(&"OB") {
        parts.push(if en {
            "on battery"
        } else {
            "đang chạy bằng pin"
        });
    } else if toks.contains(&"OL") {
        parts.push(if en {
            "on mains power"
        } else {
            "đang dùng điện lưới"
        });
    }
    for (tok, vi, en_w) in [
        ("LB", "pin yếu", "low battery"),
        ("RB", "cần thay pin", "replace the battery"),
        ("CHRG", "đang sạc", "charging"),
        ("BYPASS", "đang đi tắt (bypass)", "on bypass"),
        ("CAL", "đang tự kiểm tra", "self-test running"),
        ("OVER", "quá tải", "overloaded"),
        ("FSD", "đang tắt theo lệnh", "shutting down"),
        ("OFF", "đầu ra tắt", "output off"),
        ("TRIM", "đang giảm áp", "trimming voltage"),
        ("BOOST", "đang tăng áp", "boosting voltage"),
    ] {
        if toks.contains(&tok) {
            parts.push(if en { en_w } else { vi });
        }
    }
    if parts.is_empty() {
        return st.to_owned();
    }
    parts.join(", ")
}

/// How `value` (named `name`, among `all` of its device's values) reads
/// in `lang`: the label and the words, or `None` for a hidden value.
pub fn show(
    name: &str,
    value: &Value,
    all: &crate::model::Values,
    lang: &str,
) -> Option<(String, String)> {
    let en = lang == "en";
    let Some((e, _)) = lookup(name) else {
        let text = match value {
            Value::Num(n) => number(*n, decimals_needed(*n), lang),
            Value::Bool(b) => YES_NO[usize::from(!*b) + if en { 2 } else { 0 }].to_owned(),
            Value::Str(s) => s.clone(),
        };
        return Some((name.to_owned(), text));
    };
    use Format::*;
    let text = match (e.format, value) {
        (Hidden, _) => return None,
        (UpsStatus, Value::Str(s)) => ups_status(s, lang),
        (Num(d), Value::Num(x)) => with_unit(number(*x, d as usize, lang), e.unit),
        (Count(vi, en_w), Value::Num(x)) => {
            format!("{} {}", number(*x, 0, lang), if en { en_w } else { vi })
        }
        (Bytes(total), Value::Num(x)) => {
            let gb = number(x / 1e9, 1, lang);
            let total = total.and_then(|t| all.get(t)).and_then(|t| t.as_f64());
            match total {
                Some(t) if t > 0.0 => format!("{gb} GB ({} %)", number(x / t * 100.0, 0, lang)),
                _ => format!("{gb} GB"),
            }
        }
        (Duration, Value::Num(x)) => duration(*x, lang),
        (Bps, Value::Num(x)) => format!("{} Mbit/s", number(x / 1e6, 1, lang)),
        (YesNo(words), Value::Bool(b)) => {
            words[usize::from(!*b) + if en { 2 } else { 0 }].to_owned()
        }
        (Words(table), Value::Str(s)) => table
            .iter()
            .find(|(raw, _, _)| raw == s)
            .map(|(_, vi, en_w)| if en { *en_w } else { *vi }.to_owned())
            .unwrap_or_else(|| s.clone()),
        // A value of another type than its entry expects: as it is.
        (_, Value::Num(x)) => with_unit(number(*x, 2, lang), e.unit),
        (_, Value::Bool(b)) => YES_NO[usize::from(!*b) + if en { 2 } else { 0 }].to_owned(),
        (_, Value::Str(s)) => s.clone(),
    };
    Some((label(name, lang), text))
}

/// Words the configuration gives one value (a Modbus register's `label`,
/// `label_en` and `unit`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Label {
    pub vi: Option<String>,
    pub en: Option<String>,
    pub unit: Option<String>,
}

/// As [`show`], with the configured words first: a value with a
/// configured label reads with it (and its unit after a number); others as
/// [`show`] says.
pub fn show_labelled(
    name: &str,
    value: &Value,
    all: &crate::model::Values,
    lang: &str,
    label: Option<&Label>,
) -> Option<(String, String)> {
    let Some(l) = label else {
        return show(name, value, all, lang);
    };
    let words = if lang == "en" {
        l.en.as_ref().or(l.vi.as_ref())
    } else {
        l.vi.as_ref().or(l.en.as_ref())
    };
    let Some(words) = words else {
        return show(name, value, all, lang);
    };
    let text = match (value, &l.unit) {
        (Value::Num(x), Some(u)) if !u.is_empty() => {
            with_unit(number(*x, decimals_needed(*x), lang), u)
        }
        _ => show(name, value, all, lang).map(|(_, t)| t)?,
    };
    Some((words.clone(), text))
}

/// How many decimals a value without a table entry shows: as many as it
/// needs, at most two (23,5 °C, not 23,50 °C; 1.234 cm; 0,07 A).
fn decimals_needed(x: f64) -> usize {
    let hundredths = (x * 100.0).round();
    if hundredths % 100.0 == 0.0 {
        0
    } else if hundredths % 10.0 == 0.0 {
        1
    } else {
        2
    }
}

/// Where a name sits in the table (unknown names last), to order a
/// device's lines.
pub fn rank(name: &str) -> usize {
    lookup(name)
        .and_then(|(e, _)| WORDS.iter().position(|x| x.name == e.name))
        .unwrap_or(WORDS.len())
}

/// The site's time zone: a fixed offset from UTC. The zones wardgate is
/// installed in keep no daylight saving time, so a table of offsets is
/// enough (and avoids shipping the tz database); `UTC+7`, `UTC+05:30`
/// and `UTC` are accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone {
    /// Seconds east of UTC.
    pub offset_s: i32,
}

/// Named zones without daylight saving time, and their offsets in minutes.
const ZONES: &[(&str, i32)] = &[
    ("Asia/Ho_Chi_Minh", 7 * 60),
    ("Asia/Saigon", 7 * 60),
    ("Asia/Bangkok", 7 * 60),
    ("Asia/Phnom_Penh", 7 * 60),
    ("Asia/Vientiane", 7 * 60),
    ("Asia/Jakarta", 7 * 60),
    ("Asia/Singapore", 8 * 60),
    ("Asia/Kuala_Lumpur", 8 * 60),
    ("Asia/Manila", 8 * 60),
    ("Asia/Shanghai", 8 * 60),
    ("Asia/Hong_Kong", 8 * 60),
    ("Asia/Taipei", 8 * 60),
    ("Asia/Tokyo", 9 * 60),
    ("Asia/Seoul", 9 * 60),
    ("Asia/Yangon", 6 * 60 + 30),
    ("Asia/Dhaka", 6 * 60),
    ("Asia/Kolkata", 5 * 60 + 30),
    ("UTC", 0),
    ("Etc/UTC", 0),
];

impl Zone {
    /// The default, `Asia/Ho_Chi_Minh` (UTC+7).
    pub const VIETNAM: Zone = Zone { offset_s: 7 * 3600 };

    /// A zone name from the table, or `UTC±H[:MM]`.
    pub fn parse(s: &str) -> Option<Zone> {
        if let Some((_, m)) = ZONES.iter().find(|(n, _)| *n == s) {
            return Some(Zone { offset_s: m * 60 });
        }
        let rest = s.strip_prefix("UTC")?;
        let (sign, rest) = match rest.as_bytes().first()? {
            b'+' => (1, &rest[1..]),
            b'-' => (-1, &rest[1..]),
            _ => return None,
        };
        let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
        let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
        ((0..=14).contains(&h) && (0..60).contains(&m)).then_some(Zone {
            offset_s: sign * (h * 3600 + m * 60),
        })
    }

    /// The zone names accepted, for an error message.
    pub fn names() -> Vec<&'static str> {
        ZONES.iter().map(|(n, _)| *n).collect()
    }

    /// Seconds since local midnight of `ms` (ms since the epoch).
    pub fn second_of_day(self, ms: i64) -> i64 {
        (ms.div_euclid(1000) + i64::from(self.offset_s)).rem_euclid(86_400)
    }

    /// "HH:MM" local time of `ms`.
    pub fn hhmm(self, ms: i64) -> String {
        let t = self.second_of_day(ms);
        format!("{:02}:{:02}", t / 3600, (t % 3600) / 60)
    }
}

impl Default for Zone {
    fn default() -> Self {
        Zone::VIETNAM
    }
}

/// The backlog after an outage, as it drains.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Catchup {
    /// Records sent again so far (of `total`), when the peak is known.
    pub sent: Option<u64>,
    /// Records waiting when the catch-up began (the peak), when known.
    pub total: Option<u64>,
    /// Records still waiting.
    pub left: u64,
    /// Records sent per second, when measured (0: measured, not moving).
    pub rate: Option<f64>,
}

impl Catchup {
    /// Seconds until done at the measured rate.
    pub fn eta_s(&self) -> Option<f64> {
        self.rate.filter(|r| *r > 0.0).map(|r| self.left as f64 / r)
    }

    /// The line the page and `wardgate spool stats` print: "Đang gửi lại dữ
    /// liệu đã lưu: 12.345 / 40.000 bản ghi, còn khoảng 3 phút".
    pub fn line(&self, lang: &str) -> String {
        let en = lang == "en";
        let mut s = String::from(if en {
            "Sending kept readings again: "
        } else {
            "Đang gửi lại dữ liệu đã lưu: "
        });
        let unit = if en { "readings" } else { "bản ghi" };
        match (self.sent, self.total) {
            (Some(sent), Some(total)) => s.push_str(&format!(
                "{} / {} {unit}",
                count(sent, lang),
                count(total, lang)
            )),
            _ => s.push_str(&format!(
                "{} {unit} {}",
                count(self.left, lang),
                if en { "waiting" } else { "đang chờ" }
            )),
        }
        match self.eta_s() {
            None if self.rate == Some(0.0) => s.push_str(if en {
                ", not moving (no link, or wardgate is not running)"
            } else {
                ", chưa gửi được (mất kết nối, hoặc wardgate không chạy)"
            }),
            Some(eta) if eta < 60.0 => s.push_str(if en {
                ", less than a minute left"
            } else {
                ", còn dưới 1 phút"
            }),
            Some(eta) => {
                let d = duration((eta / 60.0).ceil() * 60.0, lang);
                s.push_str(&if en {
                    format!(", about {d} left")
                } else {
                    format!(", còn khoảng {d}")
                });
            }
            None => s.push_str(if en {
                ", measuring the rate…"
            } else {
                ", đang đo tốc độ gửi…"
            }),
        }
        s
    }
}
