//! Configuration: built-in defaults, then one TOML file
//! (`/etc/wardgate/wardgate.toml` or `--config PATH`), then environment
//! variables `WARDGATE__SECTION__KEY`.
//!
//! This room loads the layers, holds the top-level sections and gathers
//! every problem; each component's own section lives beside it (as
//! Vector's `SourceConfig`/`SinkConfig` do): `[mqtt]` in `sink::config`,
//! `[influxdb]` in `sink::influx::config`,
//! `[spool]` in `spool::config`, `[web]`/`[led]` in `status::config`, and
//! each `[[device]]` kind in `source::<kind>::config` (or
//! `source::<kind>_config` beside a one-file source). Values with a range
//! are [`types`] that parse once, so nothing is clamped where it is used.
//!
//! Defaults live in exactly one place: the `#[serde(default = ...)]`
//! attributes. Unknown keys are errors. Loading reports every problem at
//! once, one line each, naming the key and the bad value: a value a type
//! rejects is reported and left out (so its default is used) while the
//! rest is read and checked on.

mod device;
mod remote;
pub mod remote_policy;
pub(crate) mod secrets;
#[cfg(test)]
mod tests;

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::model::valid_id;

pub use crate::command::config::CommandsConfig;
pub use crate::power::config::PowerConfig;
pub use crate::sink::config::MqttConfig;
pub use crate::sink::influx::config::InfluxConfig;
pub use crate::source::apc::config::ApcSmartConfig;
pub use crate::source::gpio_config::{GpioConfig, GpioInput, GpioMode, Pull};
pub use crate::source::megatec::config::MegatecConfig;
pub use crate::source::modbus::config::{ModbusConfig, ModbusTransport, ParityName};
pub use crate::source::nut::config::NutConfig;
pub use crate::source::onewire_config::OneWireConfig;
pub use crate::source::probe_config::{ProbeConfig, ProbeMethod, ProbeTarget};
pub use crate::source::sim_config::{SimConfig, SimProfile};
pub use crate::source::snmp_config::{IfRef, SnmpConfig};
pub use crate::source::system_config::SystemConfig;
pub use crate::spool::config::{SpoolConfig, SpoolPolicy};
pub use crate::status::config::{LedBackend, LedConfig, WebConfig};
pub use crate::telemetry::{GatewayConfig, TelemetryInterval};
pub use device::DeviceConfig;

/// Where the daemon looks when no `--config` is given.
pub const DEFAULT_PATH: &str = "/etc/wardgate/wardgate.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed as TOML, or has no keys a
    /// config can be read from: the operator fixes the file; the daemon
    /// does not start.
    #[error("{0}")]
    Load(String),
    /// The file parsed but some keys or values are invalid, one message per
    /// problem: the operator fixes the file; the daemon does not start.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

impl ConfigError {
    /// Every problem, one per line.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Load(m) => vec![m.clone()],
            ConfigError::Invalid(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This gateway's site id, used in every topic. Required.
    #[serde(default)]
    pub site: String,
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// The InfluxDB sink, on when `influxdb.url` is set.
    #[serde(default)]
    pub influxdb: InfluxConfig,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub gateway: GatewayConfig,
    #[serde(default)]
    pub led: LedConfig,
    #[serde(default)]
    pub web: WebConfig,
    #[serde(default)]
    pub commands: CommandsConfig,
    /// The UPS that powers this Pi, and when to shut the Pi down.
    #[serde(default)]
    pub power: Option<PowerConfig>,
    /// The `[[device]]` tables: read one by one by the loader (each kind
    /// has its own struct), never by this derive.
    #[serde(skip_deserializing)]
    pub devices: Vec<DeviceConfig>,
    /// The file this config was read from, if any (for `config.get`).
    #[serde(skip_deserializing)]
    pub file: Option<std::path::PathBuf>,
    /// The remote-change policy file (`wardgate run
    /// --remote-change-policy`), never a key of the file: `config.set`
    /// must not be able to move it.
    #[serde(skip_deserializing)]
    pub remote_policy: Option<std::path::PathBuf>,
}

/// The largest config file read (a real one is a few KiB; the same cap as
/// provisioning's).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads the config file: at most [`MAX_CONFIG_BYTES`], and strictly UTF-8
/// (the config crate would read bad bytes as U+FFFD and accept them in any
/// string, e.g. a label or a path).
fn read_text(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let fail = |e: String| ConfigError::Load(format!("{}: {e}", path.display()));
    let f = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    f.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(fail(format!(
            "larger than {} KiB: not a wardgate configuration",
            MAX_CONFIG_BYTES / 1024
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        fail(format!(
            "not UTF-8 text: a byte that is not UTF-8 on line {line} (save the file as UTF-8)"
        ))
    })
}

impl Config {
    /// Loads the file (if it exists or was named) and the environment, then
    /// validates. `explicit` says whether the path was given on the command
    /// line: a named file that is missing is an error, the default one is not.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        Self::load_with_env(path, explicit, std::env::vars())
    }

    /// As [`Config::load`], with the environment given (for tests).
    pub fn load_with_env(
        path: &Path,
        explicit: bool,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let env: std::collections::HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("WARDGATE__"))
            .collect();
        let mut builder = ::config::Config::builder();
        if explicit || path.exists() {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "{}: no such file",
                    path.display()
                )));
            }
            let text = read_text(path)?;
            builder =
                builder.add_source(::config::File::from_str(&text, ::config::FileFormat::Toml));
        }
        builder = builder.add_source(
            ::config::Environment::with_prefix("WARDGATE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        let raw = builder
            .build()
            .map_err(|e| ConfigError::Load(format!("{}: {e}", path.display())))?;
        let file = path.exists().then(|| path.to_path_buf());
        Self::from_layers(raw).map(|cfg| Config { file, ..cfg })
    }

    /// Parses a TOML text (no environment), then validates. For tests and tools.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw = ::config::Config::builder()
            .add_source(::config::File::from_str(text, ::config::FileFormat::Toml))
            .build()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        Self::from_layers(raw)
    }

    /// Reads the merged layers: the sections, then each `[[device]]` by
    /// its `type`, gathering what the types reject; then the checks the
    /// types cannot make. Every problem is reported together.
    fn from_layers(raw: ::config::Config) -> Result<Config, ConfigError> {
        let tree: ::config::Value = raw
            .try_deserialize()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        let mut table = match tree.kind {
            ::config::ValueKind::Table(t) => t,
            ::config::ValueKind::Nil => Default::default(),
            _ => return Err(ConfigError::Load("the config is not a table".into())),
        };
        let devices = table.remove("device");
        let mut p = Vec::new();
        let sections = read_gathering::<Config>(
            ::config::Value::new(None, ::config::ValueKind::Table(table)),
            "",
            &mut p,
        );
        let (devices, all_read) = device::read_all(devices, &mut p);
        let mut later = Vec::new();
        match sections {
            Some(mut cfg) if all_read => {
                cfg.devices = devices.into_iter().map(|(_, d)| d).collect();
                later = cfg.problems();
                if p.is_empty() && later.is_empty() {
                    return Ok(cfg);
                }
            }
            // What could be read is still checked, so that one bad table
            // does not hide the problems of the others.
            sections => {
                if let Some(cfg) = sections {
                    later.extend(cfg.problems_of_sections());
                }
                later.extend(device::problems(devices.iter().map(|(i, d)| (*i, d))));
            }
        }
        // A rejected key stood in by its default: what is said about it
        // now (e.g. "led.pin: needed") is already said better.
        let rejected: std::collections::HashSet<String> =
            p.iter().map(|m| problem_key(m).to_owned()).collect();
        p.extend(
            later
                .into_iter()
                .filter(|m| !rejected.contains(problem_key(m))),
        );
        Err(ConfigError::Invalid(p))
    }

    /// Every problem, one message each, naming the key and the bad value.
    /// (Values the types reject never get this far: see [`types`].)
    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = self.problems();
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(p))
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut p = self.problems_of_sections();
        p.extend(device::problems(self.devices.iter().enumerate()));
        if let Some(power) = &self.power {
            p.extend(power.problems(&self.devices));
        }
        p.extend(self.secret_problems());
        p
    }

    fn problems_of_sections(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.site.is_empty() {
            p.push(
                "site: missing; set site = \"your-site-id\" (lowercase letters, digits, - and _)"
                    .into(),
            );
        } else if !valid_id(&self.site) {
            p.push(format!(
                "site: {:?} is not a valid id (lowercase letters, digits, - and _, starting with a letter or digit)",
                self.site
            ));
        }
        p.extend(self.mqtt.problems());
        p.extend(self.influxdb.problems());
        p.extend(self.spool.problems());
        // [web] is checked beside it; its password file is a path like
        // every other, and the service runs from /.
        if let Some(why) = self
            .web
            .password_file
            .as_ref()
            .and_then(|f| crate::types::absolute_path_problem(f))
        {
            p.push(format!("web.password_file: {why}"));
        }
        p.extend(self.led.problems());
        p.extend(self.web.problems());
        p.extend(self.file_problems());
        p
    }

    /// Warnings for the sections' secret files that other users of the box
    /// can read (`wardgate check` prints them, the daemon logs them at
    /// start); the web page's and each NUT device's password files have
    /// their own, said where those are used.
    pub fn secret_warnings(&self) -> Vec<String> {
        let m = &self.mqtt;
        [
            ("mqtt.password_file", m.password_file.as_deref()),
            ("mqtt.key_file", m.key_file.as_deref()),
            ("influxdb.token_file", self.influxdb.token_file.as_deref()),
        ]
        .into_iter()
        .filter_map(|(key, path)| {
            let path = path?;
            crate::host::file::readable_by_others(path).then(|| {
                format!(
                    "{key} {}: readable by other users of this box; make it private (chmod o-r)",
                    path.display()
                )
            })
        })
        .collect()
    }

    /// The sections' files that exist but cannot be what they are named
    /// for (a device such as /dev/zero, a FIFO, a directory, a secret
    /// behind a link, a size no such file has): the host's one reader's
    /// rules ([`crate::host::file`]), said before the daemon starts.
    fn file_problems(&self) -> Vec<String> {
        use crate::host::file::{config_problem, FileKind};
        let m = &self.mqtt;
        let i = &self.influxdb;
        let files: [(&str, Option<&std::path::Path>, FileKind); 7] = [
            (
                "mqtt.password_file",
                m.password_file.as_deref(),
                FileKind::Secret,
            ),
            ("mqtt.key_file", m.key_file.as_deref(), FileKind::Secret),
            (
                "mqtt.cert_file",
                m.cert_file.as_deref(),
                FileKind::Certificate,
            ),
            ("mqtt.ca_file", m.ca_file.as_deref(), FileKind::Certificate),
            (
                "influxdb.token_file",
                i.token_file.as_deref(),
                FileKind::Secret,
            ),
            (
                "influxdb.ca_file",
                i.ca_file.as_deref(),
                FileKind::Certificate,
            ),
            (
                "web.password_file",
                self.web.password_file.as_deref(),
                FileKind::Secret,
            ),
        ];
        files
            .into_iter()
            .filter_map(|(key, path, kind)| {
                config_problem(path?, kind).map(|why| format!("{key}: {why}"))
            })
            .collect()
    }

    /// The configured devices, plus the automatic Pi health device.
    pub fn all_devices(&self) -> Vec<DeviceConfig> {
        let mut d = self.devices.clone();
        let has_system = d.iter().any(|x| matches!(x, DeviceConfig::System(_)));
        let pi_taken = d.iter().any(|x| x.id() == "pi");
        if self.gateway.system_health && !has_system && !pi_taken {
            d.push(DeviceConfig::System(SystemConfig::automatic()));
        }
        d
    }

    /// TLS in effect: as configured, or on unless the broker is on loopback.
    pub fn mqtt_tls(&self) -> bool {
        self.mqtt.tls_in_effect()
    }

    pub fn mqtt_port(&self) -> u16 {
        self.mqtt.port_in_effect()
    }

    /// The InfluxDB sink's section, site and device kinds.
    pub fn influx_setup(&self) -> crate::sink::influx::config::InfluxSetup {
        let mut device_kinds: std::collections::HashMap<String, String> = self
            .all_devices()
            .iter()
            .map(|d| (d.id().to_owned(), d.kind().to_owned()))
            .collect();
        device_kinds.insert(crate::ids::GATEWAY_DEVICE.to_owned(), "gateway".to_owned());
        crate::sink::influx::config::InfluxSetup {
            site: self.site.clone(),
            influxdb: self.influxdb.clone(),
            device_kinds,
        }
    }

    /// What the gateway's own telemetry is built from.
    pub fn telemetry_setup(&self) -> crate::telemetry::TelemetrySetup {
        crate::telemetry::TelemetrySetup {
            interval: self.gateway.telemetry_interval.get(),
            max_packet_size: self.mqtt.max_packet_size.as_u64(),
        }
    }

    /// What the command dispatcher is built from.
    pub fn command_setup(&self) -> crate::command::config::CommandSetup {
        crate::command::config::CommandSetup {
            commands: self.commands.clone(),
            site: self.site.clone(),
            prefix: self.mqtt.prefix.clone(),
            max_packet_size: self.mqtt.max_packet_size.as_u64(),
            spool_path: self.spool.path.to_path_buf(),
            file: self.file.clone(),
            devices: self
                .all_devices()
                .iter()
                .map(|d| crate::command::config::DeviceInfo {
                    id: d.id().to_owned(),
                    kind: d.kind().to_owned(),
                    interval: d.interval(),
                })
                .collect(),
            influx_enabled: self.influxdb.enabled(),
        }
    }

    /// The MQTT sink's section and site.
    pub fn mqtt_setup(&self) -> crate::sink::config::MqttSetup {
        crate::sink::config::MqttSetup {
            site: self.site.clone(),
            mqtt: self.mqtt.clone(),
        }
    }

    pub fn mqtt_client_id(&self) -> String {
        self.mqtt.client_id_for(&self.site)
    }
}

/// Deserialises `tree` as a `T`. A key whose value is rejected (out of
/// range, wrong type, unknown key) is reported as `prefix.key: why` and
/// taken out, and the rest is read again, so that one bad value does not
/// hide the others; the key's default then stands in (the config is not
/// used: it is only checked further). `None` when `T` cannot be read at all
/// (a required key missing or rejected, a bad list element).
fn read_gathering<T: DeserializeOwned>(
    mut tree: ::config::Value,
    prefix: &str,
    problems: &mut Vec<String>,
) -> Option<T> {
    let mut taken: Vec<Vec<String>> = Vec::new();
    // Each round takes one key out; a table has only so many.
    for _ in 0..256 {
        let err = match serde_path_to_error::deserialize::<_, T>(tree.clone()) {
            Ok(t) => return Some(t),
            Err(e) => e,
        };
        // Only a path of table keys can be taken out.
        let segs: Option<Vec<String>> = err
            .path()
            .iter()
            .map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                _ => None,
            })
            .collect();
        let key = match (prefix, err.path().to_string().as_str()) {
            (p, ".") | (p, "") => p.to_owned(),
            ("", k) => k.to_owned(),
            (p, k) => format!("{p}.{k}"),
        };
        // A required key that was taken out: already reported.
        if let Some(s) = &segs {
            if taken.iter().any(|t| t.starts_with(s) && t.len() > s.len()) {
                return None;
            }
        }
        let why = without_key_suffix(&err.into_inner().to_string());
        problems.push(match (missing_field(&why), key.is_empty()) {
            // Name the missing key itself (`device[0].community`).
            (Some(f), true) => format!("{f}: missing (it has no default)"),
            (Some(f), false) => format!("{key}.{f}: missing (it has no default)"),
            (None, true) => why,
            (None, false) => format!("{key}: {why}"),
        });
        match segs {
            Some(s) if take_out(&mut tree, &s) => taken.push(s),
            _ => return None,
        }
    }
    None
}

/// The field a "missing field" message names (serde says "missing field
/// `x`", the `config` crate "missing configuration field \"x\"").
fn missing_field(msg: &str) -> Option<&str> {
    msg.strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
        .or_else(|| {
            msg.strip_prefix("missing configuration field \"")
                .and_then(|r| r.strip_suffix('"'))
        })
}

/// The key a problem line names (the text before the first ": ").
fn problem_key(line: &str) -> &str {
    line.split(": ").next().unwrap_or(line)
}

/// The `config` crate ends its messages with " for key `a.b`": the key is
/// already in front of the line.
fn without_key_suffix(msg: &str) -> String {
    match msg.rfind(" for key `") {
        Some(i) if msg.ends_with('`') => msg[..i].to_owned(),
        _ => msg.to_owned(),
    }
}

/// Removes the table entry at `path` (map keys only). False when `path`
/// does not end in a key of a table (the root, a list element).
fn take_out(tree: &mut ::config::Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = tree;
    for seg in parents {
        let ::config::ValueKind::Table(t) = &mut node.kind else {
            return false;
        };
        match t.get_mut(seg) {
            Some(n) => node = n,
            None => return false,
        }
    }
    match &mut node.kind {
        ::config::ValueKind::Table(t) => t.remove(last).is_some(),
        _ => false,
    }
}
