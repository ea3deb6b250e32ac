//! The `[[device]]` table of `type = "snmp"` and its checks (beside
//! `snmp.rs`, which reads the router).

use std::time::Duration;

use serde::Deserialize;

use crate::source::threshold::ThresholdConfig;
use crate::types::{Bounded, Port, Within};

/// How long to wait for each SNMP reply: 100ms to 30s.
pub(crate) type SnmpTimeout = Within<100, 30_000>;

/// A router (or switch) read over SNMP v2c.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnmpConfig {
    pub id: String,
    pub host: String,
    #[serde(default = "default_snmp_port")]
    pub port: Port,
    /// The router's read-only community. Required: a default such as
    /// `public` is a universal password (ETSI EN 303 645, 5.1).
    pub community: String,
    /// Interfaces by ifName (`"eth0"`, `"pppoe-wan"`) or ifIndex (`2`).
    #[serde(default)]
    pub interfaces: Vec<IfRef>,
    /// The interface that is the ward's link to the outside: its down/up
    /// changes are critical `wan.down` / `wan.up` events.
    #[serde(default)]
    pub wan: Option<IfRef>,
    #[serde(default = "default_snmp_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_snmp_timeout")]
    pub timeout: SnmpTimeout,
    /// Tries after the first, per request: 0 to 5.
    #[serde(default = "default_retries")]
    pub retries: Bounded<0, 5>,
    #[serde(default)]
    pub threshold: Vec<ThresholdConfig>,
}

/// An interface named by ifName or by ifIndex.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum IfRef {
    Index(i64),
    Name(String),
}

impl std::fmt::Display for IfRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IfRef::Index(i) => write!(f, "ifIndex {i}"),
            IfRef::Name(n) => write!(f, "{n}"),
        }
    }
}

fn default_snmp_port() -> Port {
    Port::of(161)
}
fn default_snmp_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_snmp_timeout() -> SnmpTimeout {
    SnmpTimeout::of(Duration::from_secs(2))
}
fn default_retries() -> Bounded<0, 5> {
    Bounded::of(1)
}

impl SnmpConfig {
    /// Problems the types cannot see, each naming its key under `key`.
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.host.trim().is_empty() {
            p.push(format!("{key}.host: must not be empty"));
        }
        if self.community.is_empty() {
            p.push(format!("{key}.community: must not be empty"));
        }
        for (ii, i) in self.interfaces.iter().chain(self.wan.iter()).enumerate() {
            match i {
                IfRef::Index(n) if !(1..=i64::from(i32::MAX)).contains(n) => p.push(format!(
                    "{key}.interfaces[{ii}]: {n} is not an ifIndex (1 or more)"
                )),
                IfRef::Name(n) if n.trim().is_empty() => {
                    p.push(format!("{key}.interfaces[{ii}]: empty interface name"))
                }
                _ => {}
            }
        }
        p
    }
}
