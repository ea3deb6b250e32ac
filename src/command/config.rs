//! The `[commands]` section: whether the gateway listens for commands from
//! the operations centre, which ops it runs, and whether it trusts its
//! clock without NTP.

use std::time::Duration;

use serde::Deserialize;

use super::request::Op;
use crate::types::{defaults_of, Within};

/// How long a config set by `config.set` has to prove itself: 10 s to 1 h.
pub(crate) type ConfirmWithin = Within<10_000, 3_600_000>;

/// An op name in `[commands] allow`, checked when the config is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct OpName(pub Op);

impl TryFrom<String> for OpName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Op::from_name(&s).map(OpName).ok_or_else(|| {
            let known: Vec<&str> = Op::ALL.iter().map(|o| o.name()).collect();
            format!("{s:?} is not an op (known: {})", known.join(", "))
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsConfig {
    /// Subscribe to `{prefix}/{site}/cmd/+/+` and run commands.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The ops that run; any other is rejected with the reason.
    #[serde(default = "default_allow")]
    pub allow: Vec<OpName>,
    /// `config.set`: how long a new config has to reconnect and read each
    /// device before the old one is restored.
    #[serde(default = "default_confirm_within")]
    pub confirm_within: ConfirmWithin,
    /// Treat the clock as synchronised even when the kernel says it is not
    /// (a Pi with a battery-backed RTC and no NTP). Without it, only
    /// identify, poll and status run while the clock is unsynchronised.
    #[serde(default)]
    pub trust_clock: bool,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        defaults_of("commands")
    }
}

fn default_true() -> bool {
    true
}
fn default_allow() -> Vec<OpName> {
    vec![OpName(Op::Identify), OpName(Op::Poll), OpName(Op::Status)]
}
fn default_confirm_within() -> ConfirmWithin {
    ConfirmWithin::of(Duration::from_secs(120))
}

impl CommandsConfig {
    /// The allowed ops, without repeats.
    pub fn allowed(&self) -> Vec<Op> {
        let mut v: Vec<Op> = self.allow.iter().map(|o| o.0).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// One device as the commands see it (the inventory, `config.set`'s
/// confirmation).
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub id: String,
    pub kind: String,
    pub interval: std::time::Duration,
}

/// What the dispatcher is built from: its own section and the few facts
/// of the rest of the config its ops report (never the whole config).
#[derive(Debug, Clone)]
pub struct CommandSetup {
    pub commands: CommandsConfig,
    pub site: String,
    /// `mqtt.prefix`: the command and reply topics live under it.
    pub prefix: String,
    /// `mqtt.max_packet_size`: a reply must fit one packet.
    pub max_packet_size: u64,
    /// `spool.path`: the replay store sits beside it; `spool.stats` reads it.
    pub spool_path: std::path::PathBuf,
    /// The file the running config was read from (`config.get`).
    pub file: Option<std::path::PathBuf>,
    /// Every device the gateway reads, the automatic Pi health included.
    pub devices: Vec<DeviceInfo>,
    /// Whether the InfluxDB sink is on (the inventory lists the sinks).
    pub influx_enabled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn defaults_and_names() {
        let c = Config::from_toml("site = \"s\"\n").unwrap();
        assert!(c.commands.enabled);
        assert_eq!(
            c.commands.allowed(),
            vec![Op::Identify, Op::Poll, Op::Status]
        );
        assert_eq!(c.commands.confirm_within.get(), Duration::from_secs(120));
        assert!(!c.commands.trust_clock);
        let c = Config::from_toml(
            "site = \"s\"\n[commands]\nallow = [\"config.get\", \"log.tail\", \"config.get\"]\n",
        )
        .unwrap();
        assert_eq!(c.commands.allowed(), vec![Op::LogTail, Op::ConfigGet]);
        let e = Config::from_toml("site = \"s\"\n[commands]\nallow = [\"reboot\"]\n")
            .unwrap_err()
            .problems()
            .join("\n");
        assert!(e.contains("\"reboot\" is not an op"), "{e}");
        let e = Config::from_toml("site = \"s\"\n[commands]\nconfirm_within = \"1s\"\n")
            .unwrap_err()
            .problems()
            .join("\n");
        assert!(e.contains("commands.confirm_within"), "{e}");
        let e = Config::from_toml("site = \"s\"\n[commands]\nallowed = []\n")
            .unwrap_err()
            .problems()
            .join("\n");
        assert!(e.contains("allowed"), "{e}");
    }
}
