//! The `[[device]]` table of `type = "probe"` and its checks (beside
//! `probe.rs`, which measures reachability).

use std::time::Duration;

use serde::Deserialize;

use crate::model::valid_id;
use crate::source::nut::config::{default_nut_timeout, TIMEOUT_MAX, TIMEOUT_MIN};
use crate::source::threshold::ThresholdConfig;
use crate::types::{duration_problem, Bounded};

/// Reachability of hosts: TCP connect time or ICMP echo.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    pub id: String,
    #[serde(default = "default_probe_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_nut_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Rounds over which loss is computed (1-1000).
    #[serde(default = "default_probe_window")]
    pub window: Bounded<1, 1000>,
    pub targets: Vec<ProbeTarget>,
    #[serde(default)]
    pub threshold: Vec<ThresholdConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeTarget {
    /// Used in value names: `<name>.latency`, `<name>.loss`, `<name>.up`.
    pub name: String,
    /// `host:port` for TCP; `host` or `host:port` for ICMP (the port is
    /// used when ICMP is not permitted and TCP is measured instead; 443
    /// when not given).
    pub address: String,
    #[serde(default)]
    pub method: ProbeMethod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProbeMethod {
    /// Time to open a TCP connection (no privilege needed).
    #[default]
    Tcp,
    /// ICMP echo (ping); needs net.ipv4.ping_group_range to include the
    /// service's group, or CAP_NET_RAW.
    Icmp,
}

impl ProbeTarget {
    /// Host and port, with the ICMP fallback port filled in.
    pub fn host_port(&self) -> Option<(String, u16)> {
        let a = self.address.trim();
        // [v6]:port, host:port, or a bare host / v6 address for ICMP.
        if let Some(rest) = a.strip_prefix('[') {
            let (h, p) = rest.split_once(']')?;
            let port = match p.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None if p.is_empty() && self.method == ProbeMethod::Icmp => 443,
                None => return None,
            };
            return Some((h.to_owned(), port));
        }
        match a.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => Some((h.to_owned(), p.parse().ok()?)),
            _ if self.method == ProbeMethod::Icmp && !a.is_empty() => Some((a.to_owned(), 443)),
            _ => None,
        }
    }
}

fn default_probe_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_probe_window() -> Bounded<1, 1000> {
    Bounded::of(10)
}

impl ProbeConfig {
    /// Problems the types cannot see, each naming its key under `key`.
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.targets.is_empty() {
            p.push(format!("{key}.targets: give at least one target"));
        }
        if let Some(why) = duration_problem(self.timeout, TIMEOUT_MIN, TIMEOUT_MAX) {
            p.push(format!("{key}.timeout: {why}"));
        }
        for (ti, t) in self.targets.iter().enumerate() {
            if !valid_id(&t.name) {
                p.push(format!(
                    "{key}.targets[{ti}].name: {:?} is not a valid name",
                    t.name
                ));
            }
            if t.host_port().is_none() {
                p.push(format!(
                    "{key}.targets[{ti}].address: {:?} is not {}",
                    t.address,
                    if t.method == ProbeMethod::Icmp {
                        "a host or host:port"
                    } else {
                        "host:port"
                    }
                ));
            }
        }
        p
    }
}
