//! `[report]`: the monthly report's office hours, time zone, offline rule
//! and environment bounds. Every key has a default (Vietnam's working
//! week); `config/ioc.example.toml` documents each.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;

use super::calendar::days_from_civil;
use crate::fleet::FleetConfig;

/// Why `[report]` cannot be used: the key and why.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {why}")]
pub struct ReportConfigError {
    pub key: &'static str,
    pub why: String,
}

fn bad(key: &'static str, why: impl Into<String>) -> ReportConfigError {
    ReportConfigError {
        key,
        why: why.into(),
    }
}

/// `[report]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReport {
    #[serde(default = "default_offset")]
    pub utc_offset: String,
    #[serde(default = "default_days")]
    pub office_days: Vec<String>,
    #[serde(default = "default_hours")]
    pub office_hours: Vec<String>,
    #[serde(default)]
    pub holidays: Vec<String>,
    #[serde(default = "default_offline_after", with = "humantime_serde")]
    pub offline_after: Duration,
    /// `[min, max]`, or `[]`: no bound.
    #[serde(default = "default_temperature")]
    pub temperature: Vec<f64>,
    #[serde(default = "default_humidity")]
    pub humidity: Vec<f64>,
}

impl Default for RawReport {
    fn default() -> Self {
        RawReport {
            utc_offset: default_offset(),
            office_days: default_days(),
            office_hours: default_hours(),
            holidays: Vec::new(),
            offline_after: default_offline_after(),
            temperature: default_temperature(),
            humidity: default_humidity(),
        }
    }
}

fn default_offset() -> String {
    "+07:00".into()
}
fn default_days() -> Vec<String> {
    ["mon", "tue", "wed", "thu", "fri"]
        .map(String::from)
        .to_vec()
}
fn default_hours() -> Vec<String> {
    vec!["07:30-11:30".into(), "13:00-17:00".into()]
}
/// The fleet view's silence limit: three of the gateway's telemetry
/// intervals, at least 3 minutes (one default, kept in one place).
fn default_offline_after() -> Duration {
    Duration::from_millis(FleetConfig::default().min_silent_ms)
}
fn default_temperature() -> Vec<f64> {
    vec![10.0, 35.0]
}
fn default_humidity() -> Vec<f64> {
    vec![20.0, 80.0]
}

/// `[report]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportConfig {
    /// Local time, seconds east of UTC (fixed: no daylight saving).
    pub offset_s: i32,
    /// Office days, Monday first.
    pub office_days: [bool; 7],
    /// Office hours of an office day: `[from, to)` in minutes after
    /// midnight, in order, not overlapping.
    pub office_hours: Vec<(u32, u32)>,
    /// Local days (since 1970-01-01) with no office hours.
    pub holidays: BTreeSet<i64>,
    /// A site not heard of for this long is offline, whatever its status.
    pub offline_after_ms: i64,
    /// `ambient.temperature` (°C) outside `[min, max]` is an excursion.
    pub temperature: Option<(f64, f64)>,
    /// `ambient.humidity` (%) outside `[min, max]` is an excursion.
    pub humidity: Option<(f64, f64)>,
}

impl Default for ReportConfig {
    fn default() -> Self {
        RawReport::default()
            .validate()
            .expect("the defaults are valid (tested)")
    }
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn clock(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 1440).then_some(h * 60 + m)
}

fn bounds(key: &'static str, b: &[f64]) -> Result<Option<(f64, f64)>, ReportConfigError> {
    match *b {
        [] => Ok(None),
        [lo, hi] if lo.is_finite() && hi.is_finite() && lo < hi => Ok(Some((lo, hi))),
        _ => Err(bad(
            key,
            "must be [min, max] with min < max, or [] for none",
        )),
    }
}

impl RawReport {
    pub fn validate(self) -> Result<ReportConfig, ReportConfigError> {
        let o = self.utc_offset.as_str();
        let (sign, rest) = match o.as_bytes().first() {
            Some(b'+') => (1, &o[1..]),
            Some(b'-') => (-1, &o[1..]),
            _ => return Err(bad("report.utc_offset", "must be like \"+07:00\"")),
        };
        let off = clock(rest).filter(|m| *m <= 14 * 60).ok_or_else(|| {
            bad(
                "report.utc_offset",
                "must be like \"+07:00\", at most 14 hours",
            )
        })?;
        let mut office_days = [false; 7];
        for d in &self.office_days {
            let i = DAYS
                .iter()
                .position(|x| x.eq_ignore_ascii_case(d))
                .ok_or_else(|| {
                    bad(
                        "report.office_days",
                        format!("{d:?} is not one of {DAYS:?}"),
                    )
                })?;
            office_days[i] = true;
        }
        let mut hours = Vec::new();
        for h in &self.office_hours {
            let span = h
                .split_once('-')
                .and_then(|(a, b)| Some((clock(a.trim())?, clock(b.trim())?)))
                .filter(|(a, b)| a < b)
                .ok_or_else(|| {
                    bad(
                        "report.office_hours",
                        format!("{h:?} is not like \"07:30-11:30\""),
                    )
                })?;
            hours.push(span);
        }
        hours.sort_unstable();
        if hours.windows(2).any(|w| w[0].1 > w[1].0) {
            return Err(bad("report.office_hours", "the spans overlap"));
        }
        let mut holidays = BTreeSet::new();
        for h in &self.holidays {
            let p: Vec<&str> = h.split('-').collect();
            let day = match p.as_slice() {
                [y, m, d] if y.len() == 4 && m.len() == 2 && d.len() == 2 => {
                    match (y.parse::<i64>(), m.parse::<u32>(), d.parse::<u32>()) {
                        (Ok(y), Ok(m), Ok(d)) if (1..=12).contains(&m) && (1..=31).contains(&d) => {
                            Some(days_from_civil(y, m, d))
                        }
                        _ => None,
                    }
                }
                _ => None,
            }
            .ok_or_else(|| {
                bad(
                    "report.holidays",
                    format!("{h:?} is not a date like \"2026-09-02\""),
                )
            })?;
            holidays.insert(day);
        }
        if self.offline_after < Duration::from_secs(30)
            || self.offline_after > Duration::from_secs(86_400)
        {
            return Err(bad("report.offline_after", "must be 30s-1day"));
        }
        Ok(ReportConfig {
            offset_s: sign * i32::try_from(off * 60).unwrap_or(0),
            office_days,
            office_hours: hours,
            holidays,
            offline_after_ms: i64::try_from(self.offline_after.as_millis()).unwrap_or(i64::MAX),
            temperature: bounds("report.temperature", &self.temperature)?,
            humidity: bounds("report.humidity", &self.humidity)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ReportConfig, String> {
        let raw: RawReport = toml::from_str(text).map_err(|e| e.to_string())?;
        raw.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_vietnams_working_week() {
        let c = parse("").unwrap();
        assert_eq!(c, ReportConfig::default());
        assert_eq!(c.offset_s, 7 * 3600);
        assert_eq!(c.office_days, [true, true, true, true, true, false, false]);
        assert_eq!(c.office_hours, vec![(450, 690), (780, 1020)]);
        assert_eq!(c.offline_after_ms, 180_000);
        assert_eq!(c.temperature, Some((10.0, 35.0)));
    }

    #[test]
    fn each_bad_key_is_named() {
        let cases = [
            ("utc_offset = \"7\"", "report.utc_offset"),
            ("utc_offset = \"+15:00\"", "report.utc_offset"),
            ("office_days = [\"mo\"]", "report.office_days"),
            ("office_hours = [\"11:30-07:30\"]", "report.office_hours"),
            (
                "office_hours = [\"07:00-12:00\", \"11:00-13:00\"]",
                "overlap",
            ),
            ("holidays = [\"2026-9-2\"]", "report.holidays"),
            ("offline_after = \"1s\"", "report.offline_after"),
            ("temperature = [35.0, 10.0]", "report.temperature"),
            ("humidity = [1.0]", "report.humidity"),
            ("colour = 1", "unknown field"),
        ];
        for (text, says) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
        let c = parse("utc_offset = \"-03:30\"\nholidays = [\"2026-09-02\"]\ntemperature = []\n")
            .unwrap();
        assert_eq!(c.temperature, None, "[]: no bound");
        assert_eq!(c.offset_s, -(3 * 3600 + 1800));
        assert!(c.holidays.contains(&days_from_civil(2026, 9, 2)));
    }
}
