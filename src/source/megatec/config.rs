//! The `[[device]]` table of `type = "megatec"` and its checks.

use std::time::Duration;

use serde::Deserialize;

use crate::source::threshold::ThresholdConfig;
use crate::types::{default_interval, Baud, SerialPath, Within};

/// How long to wait for each reply from a UPS on a serial line: 100ms to 30s.
pub(crate) type ReplyTimeout = Within<100, 30_000>;

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
    /// After `[power]` had the UPS switch its output off, how long it waits
    /// before switching it on again once the mains are back (the `R` of
    /// `S<n>R<m>`, NUT's `ondelay`): whole minutes, 1 to 9999. Three by
    /// default, as NUT: some early firmware never comes back with 1 or 2.
    #[serde(default = "default_return_delay")]
    pub return_delay: ReturnDelay,
}

/// `return_delay`: 1 minute to 9999 minutes.
pub(crate) type ReturnDelay = Within<60_000, { 9999 * 60_000 }>;

fn default_return_delay() -> ReturnDelay {
    ReturnDelay::of(Duration::from_secs(180))
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
        if self.return_delay.get().as_secs() % 60 != 0
            || self.return_delay.get().subsec_nanos() != 0
        {
            p.push(format!(
                "{key}.return_delay: {} is not a whole number of minutes (the UPS counts minutes)",
                self.return_delay
            ));
        }
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
