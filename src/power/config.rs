//! The `[power]` section: which UPS powers this Pi, when to shut the Pi
//! down, and how; and its checks.

use std::time::Duration;

use serde::Deserialize;

use crate::source::config::DeviceConfig;
use crate::types::duration_problem;

/// The gateway shuts the Pi down cleanly before the UPS it reads runs flat
/// (docs/ups.md, "Shutting the Pi down on a long power cut").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerConfig {
    /// The `[[device]]` id of the UPS (megatec, apc-smart or nut) that
    /// powers this Pi.
    pub ups: String,
    /// Shut down when the UPS's `battery.runtime` is below this on battery;
    /// 0s = not used. Always also on the UPS's own low-battery flag (`LB`).
    #[serde(default = "default_runtime_below", with = "humantime_serde")]
    pub shutdown_when_runtime_below: Duration,
    /// Shut down when `battery.charge` (percent) is below this on battery;
    /// unset = not used.
    #[serde(default)]
    pub shutdown_when_charge_below: Option<f64>,
    /// Shut down after this long on battery whatever the charge; 0s = not
    /// used.
    #[serde(default, with = "humantime_serde")]
    pub shutdown_after_on_battery: Duration,
    /// What powers the Pi off, run as a child process once everything is
    /// kept: the program (an absolute path or a name looked up in `PATH`)
    /// and its arguments.
    #[serde(default = "default_shutdown_command")]
    pub shutdown_command: Vec<String>,
    /// Ask the UPS to switch its output off after this long, and on again
    /// when the mains return (so the Pi boots again by itself); 0s = do
    /// not ask. It must leave the Pi time to power off.
    #[serde(default = "default_ups_off_delay", with = "humantime_serde")]
    pub ups_off_delay: Duration,
    /// Let `ups` be a NUT device on another box without TLS: anyone who
    /// can answer for that upsd (a spoofed address, a machine in the
    /// middle) could then say "OB LB" and have this Pi powered off, the
    /// real UPS never told. Off by default.
    #[serde(default)]
    pub allow_unauthenticated_power_source: bool,
}

fn default_runtime_below() -> Duration {
    Duration::from_secs(300)
}
fn default_shutdown_command() -> Vec<String> {
    vec!["systemctl".into(), "poweroff".into()]
}
fn default_ups_off_delay() -> Duration {
    Duration::from_secs(120)
}

/// The device kinds that can be `power.ups`.
pub(crate) const UPS_KINDS: &[&str] = &["megatec", "apc-smart", "nut"];

/// The UPS's delay before it cuts the power: a Megatec UPS takes 12 s to
/// 10 min (`S.2` to `S10`), APC and NUT as much; but the Pi must have
/// powered off by then (a Pi takes 10-20 s after the gateway's own stop),
/// so no less than 30 s is accepted.
pub(crate) const OFF_DELAY_MIN: Duration = Duration::from_secs(30);
pub(crate) const OFF_DELAY_MAX: Duration = Duration::from_secs(600);

impl PowerConfig {
    /// Problems, each naming its key; `devices` are the configured ones.
    pub fn problems(&self, devices: &[DeviceConfig]) -> Vec<String> {
        let mut p = Vec::new();
        match devices.iter().find(|d| d.id() == self.ups) {
            None => p.push(format!(
                "power.ups: {:?} is not a configured [[device]] id (it names the UPS that powers this Pi)",
                self.ups
            )),
            Some(d) if !UPS_KINDS.contains(&d.kind()) => p.push(format!(
                "power.ups: {:?} is a {} device, not a UPS ({})",
                self.ups,
                d.kind(),
                UPS_KINDS.join(", ")
            )),
            Some(DeviceConfig::Nut(n))
                if !n.tls
                    && !crate::tls::is_loopback(&n.host)
                    && !self.allow_unauthenticated_power_source =>
            {
                p.push(format!(
                    "power.ups: the nut device {:?} reads upsd on {} without TLS, so whoever answers for that address could power this Pi off; set tls = true on the device (docs/ups.md), or power.allow_unauthenticated_power_source = true if that network is trusted",
                    self.ups, n.host
                ))
            }
            Some(DeviceConfig::Nut(n)) if n.username.is_none() && !self.ups_off_delay.is_zero() => {
                p.push(format!(
                    "power.ups_off_delay: the nut device {:?} has no username/password_file, and upsd takes shutdown.return only from a user with a password (instcmds = shutdown.return, actions = SET in upsd.users; docs/ups.md); set them, or ups_off_delay = \"0s\" to leave the UPS on",
                    self.ups
                ))
            }
            Some(_) => {}
        }
        let zero_or = |d: Duration, min: Duration, max: Duration| {
            (!d.is_zero())
                .then(|| duration_problem(d, min, Some(max)))
                .flatten()
                .map(|why| format!("{why} (or 0s: not used)"))
        };
        let s = Duration::from_secs;
        if let Some(why) = zero_or(self.shutdown_when_runtime_below, s(10), s(2 * 3600)) {
            p.push(format!("power.shutdown_when_runtime_below: {why}"));
        }
        if let Some(c) = self.shutdown_when_charge_below {
            if !(c.is_finite() && (1.0..=99.0).contains(&c)) {
                p.push(format!(
                    "power.shutdown_when_charge_below: {c} must be between 1 and 99 (percent)"
                ));
            }
        }
        if let Some(why) = zero_or(self.shutdown_after_on_battery, s(10), s(24 * 3600)) {
            p.push(format!("power.shutdown_after_on_battery: {why}"));
        }
        if let Some(why) = zero_or(self.ups_off_delay, OFF_DELAY_MIN, OFF_DELAY_MAX) {
            p.push(format!("power.ups_off_delay: {why}"));
        }
        match self.shutdown_command.first() {
            None => p.push(
                "power.shutdown_command: empty; give the program and its arguments, e.g. [\"systemctl\", \"poweroff\"]"
                    .into(),
            ),
            Some(prog) if prog.is_empty() => {
                p.push("power.shutdown_command: the program is empty".into())
            }
            // The service runs from /: a relative path would name a file
            // nobody meant.
            Some(prog) if prog.contains('/') && !prog.starts_with('/') => p.push(format!(
                "power.shutdown_command: {prog:?} is a relative path; give an absolute one or a bare name looked up in PATH"
            )),
            Some(_) => {}
        }
        if self.shutdown_command.iter().any(|a| a.contains('\0')) {
            p.push("power.shutdown_command: an argument contains a NUL character".into());
        }
        p
    }

    /// The conditions in words, for the log and `wardgate check`.
    pub fn conditions(&self) -> Vec<String> {
        let f = humantime::format_duration;
        let mut c = vec!["the UPS says its battery is low (LB)".to_owned()];
        if !self.shutdown_when_runtime_below.is_zero() {
            c.push(format!(
                "battery.runtime below {}",
                f(self.shutdown_when_runtime_below)
            ));
        }
        if let Some(p) = self.shutdown_when_charge_below {
            c.push(format!("battery.charge below {p} %"));
        }
        if !self.shutdown_after_on_battery.is_zero() {
            c.push(format!(
                "on battery for {}",
                f(self.shutdown_after_on_battery)
            ));
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const UPS: &str = "[[device]]\nid = \"ups1\"\ntype = \"megatec\"\nserial = \"/dev/ttyUSB0\"\n[[device]]\nid = \"t\"\ntype = \"sim\"\n";

    fn load(power: &str) -> Result<Config, Vec<String>> {
        Config::from_toml(&format!("site = \"s\"\n{UPS}[power]\n{power}\n"))
            .map_err(|e| e.problems())
    }

    #[test]
    fn defaults_and_every_key() {
        let c = load("ups = \"ups1\"").unwrap();
        let p = c.power.unwrap();
        assert_eq!(p.shutdown_when_runtime_below.as_secs(), 300);
        assert_eq!(p.shutdown_when_charge_below, None);
        assert!(p.shutdown_after_on_battery.is_zero());
        assert_eq!(p.shutdown_command, ["systemctl", "poweroff"]);
        assert_eq!(p.ups_off_delay.as_secs(), 120);
        let c = load(
            "ups = \"ups1\"\nshutdown_when_runtime_below = \"0s\"\nshutdown_when_charge_below = 20\nshutdown_after_on_battery = \"30m\"\nshutdown_command = [\"/sbin/poweroff\"]\nups_off_delay = \"0s\"",
        )
        .unwrap();
        let p = c.power.unwrap();
        assert_eq!(p.shutdown_when_charge_below, Some(20.0));
        assert_eq!(p.conditions().len(), 3, "{:?}", p.conditions());
        assert!(Config::from_toml("site = \"s\"\n").unwrap().power.is_none());
    }

    #[test]
    fn bounds_are_checked_at_load() {
        let cases: &[(&str, &str)] = &[
            ("ups = \"nope\"", "power.ups: \"nope\" is not a configured"),
            ("ups = \"t\"", "power.ups: \"t\" is a sim device, not a UPS"),
            (
                "ups = \"ups1\"\nshutdown_when_runtime_below = \"5s\"",
                "power.shutdown_when_runtime_below: 5s must be between 10s and 2h",
            ),
            (
                "ups = \"ups1\"\nshutdown_when_charge_below = 0",
                "power.shutdown_when_charge_below: 0 must be between 1 and 99",
            ),
            (
                "ups = \"ups1\"\nshutdown_when_charge_below = 100",
                "power.shutdown_when_charge_below: 100 must be",
            ),
            (
                "ups = \"ups1\"\nshutdown_after_on_battery = \"2days\"",
                "power.shutdown_after_on_battery: 2days must be between",
            ),
            (
                "ups = \"ups1\"\nups_off_delay = \"5s\"",
                "power.ups_off_delay: 5s must be between 30s and 10m",
            ),
            (
                "ups = \"ups1\"\nups_off_delay = \"11m\"",
                "power.ups_off_delay: 11m must be",
            ),
            (
                "ups = \"ups1\"\nshutdown_command = []",
                "power.shutdown_command: empty",
            ),
            (
                "ups = \"ups1\"\nshutdown_command = [\"bin/off\"]",
                "power.shutdown_command: \"bin/off\" is a relative path",
            ),
            (
                "ups = \"ups1\"\nsoon = 1",
                "power.soon: unknown field `soon`",
            ),
            ("shutdown_command = []", "power.ups: missing"),
        ];
        // A NUT UPS takes the power-off only from a upsd user.
        let nut = "[[device]]\nid = \"n\"\ntype = \"nut\"\nups = \"u\"\n";
        let p = Config::from_toml(&format!("site = \"s\"\n{nut}[power]\nups = \"n\"\n"))
            .map_err(|e| e.problems())
            .expect_err("no upsd user");
        assert!(
            p.iter()
                .any(|m| m.contains("power.ups_off_delay: the nut device \"n\" has no username")),
            "{p:?}"
        );
        Config::from_toml(&format!(
            "site = \"s\"\n{nut}[power]\nups = \"n\"\nups_off_delay = \"0s\"\n"
        ))
        .expect("leaving the UPS on needs no user");
        for (text, want) in cases {
            let p = load(text).expect_err(text);
            assert!(p.iter().any(|m| m.contains(want)), "{text}: {p:?}");
        }
    }

    /// The commented `[power]` block of the example config loads, as it
    /// is once uncommented.
    /// A spoofed upsd (another box, no TLS) answering "OB LB"
    /// powered the Pi off for good. `power.ups` on such a NUT device is a
    /// config error unless allowed on purpose; on loopback or with TLS it
    /// is fine.
    #[test]
    fn a_remote_upsd_without_tls_cannot_power_the_pi_off_unless_allowed() {
        let nut = |host: &str, extra: &str| {
            format!(
                "site = \"s\"\n[[device]]\nid = \"u\"\ntype = \"nut\"\nhost = \"{host}\"\nups = \"x\"\n{extra}\n\
                 [power]\nups = \"u\"\nups_off_delay = \"0s\"\n"
            )
        };
        let e = Config::from_toml(&nut("192.0.2.7", ""))
            .unwrap_err()
            .problems();
        assert!(
            e.iter().any(|m| m.starts_with("power.ups:")
                && m.contains("without TLS")
                && m.contains("192.0.2.7")),
            "{e:?}"
        );
        Config::from_toml(&nut("127.0.0.1", "")).unwrap();
        Config::from_toml(&nut("192.0.2.7", "tls = true")).unwrap();
        Config::from_toml(&nut("192.0.2.7", "").replace(
            "[power]\n",
            "[power]\nallow_unauthenticated_power_source = true\n",
        ))
        .unwrap();
    }

    #[test]
    fn the_example_config_block_loads() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(root.join("config/wardgate.example.toml")).unwrap();
        let block: String = text
            .lines()
            .skip_while(|l| *l != "#[power]")
            .take_while(|l| l.starts_with('#'))
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| !l.starts_with(' '))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(block.contains("ups_off_delay"), "{block}");
        let c = Config::from_toml(&format!("site = \"s\"\n{UPS}{block}")).unwrap();
        let p = c.power.unwrap();
        assert_eq!(p.ups, "ups1");
        assert_eq!(p.shutdown_when_charge_below, Some(20.0));
    }
}
