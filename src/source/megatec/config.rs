//! The `[[device]]` table of `type = "megatec"` and its checks.

use std::time::Duration;

use serde::Deserialize;

use crate::config::types::{default_interval, Baud, SerialPath, Within};
use crate::source::threshold::ThresholdConfig;

/// How long to wait for each reply from a UPS on a serial line: 100ms to 30s.
pub type ReplyTimeout = Within<100, 30_000>;

/// A Megatec / Q1 UPS on a serial line (Santak-class and most low-cost UPS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MegatecConfig {
    pub id: String,
    /// Stable path of the serial port (`/dev/serial/by-id/...`).
    pub serial: SerialPath,
    #[serde(default = "default_ups_baud")]
    pub baud: Baud,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// How long to wait for each reply.
    #[serde(default = "default_reply_timeout")]
    pub timeout: ReplyTimeout,
    /// Battery voltage at 0 % and 100 % for estimating `battery.charge`.
    /// Default: 10.4 V and 13.0 V per 12 V of the rated battery voltage.
    #[serde(default)]
    pub battery_voltage_low: Option<f64>,
    #[serde(default)]
    pub battery_voltage_high: Option<f64>,
    /// Alarms on this device's values (`[[device.threshold]]`).
    #[serde(default)]
    pub threshold: Vec<ThresholdConfig>,
}

/// 2400 baud: what Megatec and APC Smart UPS speak out of the box.
pub(crate) fn default_ups_baud() -> Baud {
    Baud::of(2400)
}

pub(crate) fn default_reply_timeout() -> ReplyTimeout {
    ReplyTimeout::of(Duration::from_secs(2))
}

impl MegatecConfig {
    /// Problems the types cannot see, each naming its key under `key`.
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut p = Vec::new();
        match (self.battery_voltage_low, self.battery_voltage_high) {
            (Some(l), Some(h)) if !(l.is_finite() && h.is_finite() && 0.0 < l && l < h) => p.push(
                format!("{key}.battery_voltage_low/high: {l} / {h}: need 0 < low < high"),
            ),
            (Some(_), None) | (None, Some(_)) => p.push(format!(
                "{key}.battery_voltage_low/high: give both or neither"
            )),
            _ => {}
        }
        p
    }
}
