//! The `[[device]]` table of `type = "system"` (the Pi's own health),
//! beside `system.rs`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::source::threshold::ThresholdConfig;

/// The Pi's own health; added automatically (id "pi") unless
/// `gateway.system_health = false` or a `system` device is configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    pub id: String,
    #[serde(default = "default_system_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_thermal")]
    pub thermal_path: PathBuf,
    /// The firmware's throttling flags (same as `vcgencmd get_throttled`).
    #[serde(default = "default_throttled")]
    pub throttled_path: PathBuf,
    #[serde(default = "default_proc")]
    pub proc_root: PathBuf,
    #[serde(default)]
    pub threshold: Vec<ThresholdConfig>,
}

fn default_system_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_thermal() -> PathBuf {
    PathBuf::from(crate::host::THERMAL_ZONE0)
}
fn default_throttled() -> PathBuf {
    PathBuf::from(crate::host::THROTTLED)
}
fn default_proc() -> PathBuf {
    PathBuf::from("/proc")
}

impl SystemConfig {
    /// The automatic Pi health device.
    pub fn automatic() -> SystemConfig {
        SystemConfig {
            id: "pi".into(),
            interval: default_system_interval(),
            thermal_path: default_thermal(),
            throttled_path: default_throttled(),
            proc_root: default_proc(),
            threshold: Vec::new(),
        }
    }

    /// Problems the types cannot see: none today.
    pub fn problems(&self, _key: &str) -> Vec<String> {
        Vec::new()
    }
}
