//! The `[[device]]` table of `type = "onewire"` and its checks (beside
//! `onewire.rs`, which reads the probes).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::source::threshold::ThresholdConfig;
use crate::types::default_interval;

/// DS18B20 probes on the 1-Wire bus.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneWireConfig {
    pub id: String,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Where the kernel lists 1-Wire devices.
    #[serde(default = "default_w1_root")]
    pub root: PathBuf,
    /// Value names by probe id (`"28-0316a2795aff" = "rack.temperature"`).
    #[serde(default)]
    pub names: BTreeMap<String, String>,
    #[serde(default)]
    pub threshold: Vec<ThresholdConfig>,
}

fn default_w1_root() -> PathBuf {
    PathBuf::from(crate::host::W1_DEVICES)
}

impl OneWireConfig {
    /// Problems the types cannot see, each naming its key under `key`.
    pub fn problems(&self, key: &str) -> Vec<String> {
        // The names become value names in the contract.
        self.names
            .iter()
            .filter(|(_, name)| !crate::model::valid_value_name(name))
            .map(|(probe, name)| {
                format!("{key}.names.{probe:?}: {name:?} must be letters, digits, '.', '_' or '-'")
            })
            .collect()
    }
}
