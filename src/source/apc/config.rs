//! The `[[device]]` table of `type = "apc-smart"`: everything it needs is
//! checked by its types.

use std::time::Duration;

use serde::Deserialize;

use crate::source::megatec::config::{default_reply_timeout, default_ups_baud, ReplyTimeout};
use crate::source::threshold::ThresholdConfig;
use crate::types::{default_interval, Baud, SerialPath};

/// An APC Smart-UPS on a serial line (APC's "smart" cable, 940-0024).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApcSmartConfig {
    pub id: String,
    pub serial: SerialPath,
    #[serde(default = "default_ups_baud")]
    pub baud: Baud,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_reply_timeout")]
    pub timeout: ReplyTimeout,
    /// Alarms on this device's values (`[[device.threshold]]`).
    #[serde(default)]
    pub threshold: Vec<ThresholdConfig>,
}

impl ApcSmartConfig {
    /// Problems the types cannot see: none today.
    pub fn problems(&self, _key: &str) -> Vec<String> {
        Vec::new()
    }
}
