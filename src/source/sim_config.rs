//! The `[[device]]` table of `type = "sim"` (a simulated device, for tests
//! and demonstrations), beside `sim.rs`.

use std::time::Duration;

use serde::Deserialize;

use crate::source::threshold::ThresholdConfig;
use crate::types::{default_interval, Bounded};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SimProfile {
    /// UPS-like values: status, load, battery, input/output voltage.
    Ups,
    /// Environment sensor values: temperature and humidity.
    Sensor,
}

/// A whole number, 0 or more.
pub(crate) type NonNegative = Bounded<0, { u64::MAX }>;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    pub id: String,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_sim_profile")]
    pub profile: SimProfile,
    /// Produce an event every N samples (0 = never). For the UPS profile the
    /// events toggle between "on battery" and "back on mains".
    #[serde(default = "zero")]
    pub event_every: NonNegative,
    /// Samples produced per interval tick (for load tests), 1-100000.
    #[serde(default = "one")]
    pub samples_per_tick: Bounded<1, 100_000>,
    /// Stop after this many samples (0 = never).
    #[serde(default = "zero")]
    pub count: NonNegative,
    /// Alarms on this device's values (`[[device.threshold]]`).
    #[serde(default)]
    pub threshold: Vec<ThresholdConfig>,
}

fn default_sim_profile() -> SimProfile {
    SimProfile::Ups
}
fn zero() -> NonNegative {
    Bounded::of(0)
}
fn one() -> Bounded<1, 100_000> {
    Bounded::of(1)
}

impl SimConfig {
    /// Problems the types cannot see: none today.
    pub fn problems(&self, _key: &str) -> Vec<String> {
        Vec::new()
    }
}
