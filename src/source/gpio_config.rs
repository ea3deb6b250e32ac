//! The `[[device]]` table of `type = "gpio"` (contacts and pulse counters)
//! and its checks (beside `gpio.rs`, which reads the pins).

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use crate::model::Severity;
use crate::source::threshold::ThresholdConfig;
use crate::types::{default_interval, BcmPin, Within};

/// How long an input must stay put to count as a change: at most 10s.
pub(crate) type Debounce = Within<0, 10_000>;

/// Dry contacts and pulse counters on GPIO inputs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioConfig {
    pub id: String,
    /// How often the inputs' state is published (changes are events at once).
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    pub inputs: Vec<GpioInput>,
    #[serde(default)]
    pub threshold: Vec<ThresholdConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pull {
    Up,
    Down,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpioMode {
    /// A contact: each debounced change is an event.
    Contact,
    /// A pulse counter (energy meter S0 output): rising edges are counted.
    Counter,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioInput {
    /// BCM pin number.
    pub pin: BcmPin,
    /// Value name and event prefix: `door` -> `door`, `door.open`.
    pub name: String,
    /// Words for the active and the inactive state, e.g. ["open", "closed"],
    /// ["wet", "dry"].
    #[serde(default = "default_states")]
    pub states: [String; 2],
    #[serde(default = "default_pull")]
    pub pull: Pull,
    /// Active when the pin is low (contacts to ground with a pull-up).
    #[serde(default)]
    pub active_low: bool,
    #[serde(default = "default_debounce")]
    pub debounce: Debounce,
    #[serde(default = "default_gpio_mode")]
    pub mode: GpioMode,
    /// Severity of the event when the input becomes active.
    #[serde(default = "default_warning")]
    pub severity: Severity,
    /// Words for people in messages (e.g. "Cửa phòng máy").
    #[serde(default)]
    pub label: Option<String>,
}

fn default_states() -> [String; 2] {
    ["active".into(), "inactive".into()]
}
fn default_pull() -> Pull {
    Pull::Up
}
fn default_debounce() -> Debounce {
    Debounce::of(Duration::from_millis(50))
}
fn default_gpio_mode() -> GpioMode {
    GpioMode::Contact
}
fn default_warning() -> Severity {
    Severity::Warning
}

/// A word that goes into value names and event codes.
fn code_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl GpioConfig {
    /// Problems the types cannot see, each naming its key under `key`.
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.inputs.is_empty() {
            p.push(format!("{key}.inputs: give at least one input"));
        }
        let mut pins = HashSet::new();
        for (ii, i) in self.inputs.iter().enumerate() {
            let k = format!("{key}.inputs[{ii}]");
            if !pins.insert(i.pin) {
                p.push(format!("{k}.pin: {} is used twice", i.pin));
            }
            if !code_word(&i.name) {
                p.push(format!(
                    "{k}.name: {:?} must be lowercase letters, digits and _",
                    i.name
                ));
            }
            for w in &i.states {
                if !code_word(w) {
                    p.push(format!(
                        "{k}.states: {w:?} must be lowercase letters, digits and _"
                    ));
                }
            }
        }
        p
    }
}
