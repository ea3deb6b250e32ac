//! The `[[device]]` table of `type = "nut"` and its checks.

use std::time::Duration;

use serde::Deserialize;

use crate::config::types::{default_interval, duration_problem, AbsPath, Port};
use crate::source::threshold::ThresholdConfig;

/// A UPS served by an existing NUT `upsd` (any UPS NUT supports, USB HID
/// models included). One device per UPS name, so each has its own health,
/// sequence and events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NutConfig {
    pub id: String,
    #[serde(default = "default_nut_host")]
    pub host: String,
    #[serde(default = "default_nut_port")]
    pub port: Port,
    /// The UPS name in upsd (`upsc -l` lists them).
    pub ups: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<AbsPath>,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_nut_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Alarms on this device's values (`[[device.threshold]]`).
    #[serde(default)]
    pub threshold: Vec<ThresholdConfig>,
}

fn default_nut_host() -> String {
    "127.0.0.1".into()
}
fn default_nut_port() -> Port {
    Port::of(3493)
}
/// The bounds of a network peer's reply timeout (NUT here, the probe's
/// too): 100 ms to 30 s, as for the serial and SNMP devices. Shorter than
/// a LAN round trip under load times out for nothing; longer leaves the
/// device looking alive long after it stopped answering. (Kept a plain
/// `Duration`, bounded here, so the client code is not touched.)
pub(crate) const TIMEOUT_MIN: Duration = Duration::from_millis(100);
pub(crate) const TIMEOUT_MAX: Option<Duration> = Some(Duration::from_secs(30));

/// Also the probe's default timeout.
pub(crate) fn default_nut_timeout() -> Duration {
    Duration::from_secs(5)
}

impl NutConfig {
    /// Problems the types cannot see, each naming its key under `key`.
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.host.trim().is_empty() {
            p.push(format!("{key}.host: must not be empty"));
        }
        if self.ups.is_empty() || self.ups.contains(char::is_whitespace) {
            p.push(format!("{key}.ups: {:?} is not a NUT UPS name", self.ups));
        }
        if self.username.is_none() && self.password_file.is_some() {
            p.push(format!("{key}.password_file: set, but username is not"));
        }
        if let Some(why) = duration_problem(self.timeout, TIMEOUT_MIN, TIMEOUT_MAX) {
            p.push(format!("{key}.timeout: {why}"));
        }
        p
    }
}
