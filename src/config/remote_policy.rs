//! What a remote `config.set` may change: a local policy, deny by default.
//!
//! Whoever can publish on the site's `cmd` topics with `config.set`
//! allowed could otherwise rewrite any key: point a NUT device's
//! `password_file` at the MQTT password and its `host` at their own box,
//! run any program as `power.shutdown_command`, trust another CA, or turn
//! the commands off for good. So a remote change is compared key by key
//! with the running file, and every changed key must be one this policy
//! allows; a refused change is `rejected`, naming each refused key, and
//! nothing is written.
//!
//! Built in (allowed): intervals, timeouts, thresholds, labels and other
//! words of a device, its profile and bus settings, the batch and timing
//! knobs of `[mqtt]`, `[influxdb]` (not its url or files) and `[spool]`
//! (not its path), `[gateway]`, `site` and `mqtt.prefix` (with
//! `allow_broker_change`), and adding or removing devices of known kinds
//! on endpoints (serial ports, host and port) already in the running
//! config or on loopback. Everything else is refused: every file path,
//! `[power]`, `[web]`, `[led]`, `[commands]`, the broker's host, port,
//! TLS, certificates, login and client id, `influxdb.url`, a device's
//! login and TLS, and moving a device with a login to another endpoint.
//!
//! The built-in policy is widened (or narrowed) only by a file the service
//! cannot write, [`DEFAULT_PATH`] (`wardgate run --remote-change-policy`):
//! owned by root, not writable by group or others, in a directory likewise
//! (`/etc/wardgate` is group-writable for `config.set`, so the file is not
//! there). A file that exists but is not trusted, or does not parse,
//! refuses every remote change until it is fixed.
//!
//! ```toml
//! # /etc/wardgate-remote-change.toml
//! allow = ["mqtt.host", "mqtt.port", "device.*.host"]
//! deny = ["spool"]
//! ```
//!
//! A pattern is a dotted key, `*` standing for one level; it also covers
//! every key below it (`power` is all of `[power]`). A device's keys are
//! `device.<id>.<key>`; a removed device is `device.<id>`. `deny` wins
//! over `allow`, and `allow` over the built-in rules.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::{Config, DeviceConfig, ModbusTransport};

/// Where the policy file is looked for unless the command line says.
pub const DEFAULT_PATH: &str = "/etc/wardgate-remote-change.toml";

impl Config {
    /// Where `config.set` reads what a remote change may touch.
    pub fn remote_policy_path(&self) -> PathBuf {
        self.remote_policy
            .clone()
            .unwrap_or_else(|| DEFAULT_PATH.into())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file is there but the service (or another user) could change
    /// it, or it is not a regular file: not trusted, so no remote change
    /// is allowed until root fixes it.
    #[error("{path}: not trusted ({why}); no remote change is allowed until it is fixed (owner root, mode 0644 or tighter, in a directory only root can write)")]
    Untrusted { path: String, why: String },
    /// The file does not parse: no remote change is allowed until it does.
    #[error("{path}: {why}; no remote change is allowed until it is fixed")]
    Invalid { path: String, why: String },
}

/// One refused key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub key: String,
    pub why: String,
}

/// The policy in force: the built-in rules, widened or narrowed by the
/// root-owned file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    allow: Vec<Vec<String>>,
    deny: Vec<Vec<String>>,
    /// The file it came from, if one was there.
    pub source: Option<PathBuf>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

/// Keys of the sections a remote change may touch (all others are
/// refused). `site` and `mqtt.prefix` still need `allow_broker_change`.
const SECTION_KEYS: &[&str] = &[
    "site",
    "mqtt.prefix",
    "mqtt.max_batch",
    "mqtt.backlog_rate",
    "mqtt.keep_alive",
    "mqtt.inflight",
    "mqtt.connect_timeout",
    "mqtt.max_batch_bytes",
    "mqtt.max_packet_size",
    "mqtt.stall_timeout",
    "influxdb.org",
    "influxdb.bucket",
    "influxdb.timeout",
    "influxdb.max_batch",
    "influxdb.gzip",
    "spool.policy",
    "spool.spill_after",
    "spool.commit_interval",
    "spool.max_bytes",
    "spool.max_age",
    "spool.memory_max",
    "gateway.telemetry_interval",
    "gateway.system_health",
];

/// A device's keys a remote change may touch: timing, thresholds, words,
/// profiles and bus settings. Any key not here and not in
/// [`DEVICE_ENDPOINT_KEYS`] is refused (files, paths, logins, TLS, and
/// keys added later until they are placed here).
const DEVICE_KEYS: &[&str] = &[
    "id",
    "type",
    "interval",
    "timeout",
    "threshold",
    "profile",
    "event_every",
    "samples_per_tick",
    "count",
    "baud",
    "battery_voltage_low",
    "battery_voltage_high",
    "return_delay",
    "ups",
    "unit",
    "parity",
    "stop_bits",
    "gap",
    "registers",
    "community",
    "interfaces",
    "wan",
    "retries",
    "window",
    "inputs",
    "names",
];

/// A device's keys that say where it is: allowed when the device ends up
/// on an endpoint the running config already has (or on loopback).
const DEVICE_ENDPOINT_KEYS: &[&str] = &["host", "port", "serial", "transport", "targets"];

fn pattern(s: &str) -> Result<Vec<String>, String> {
    let segs: Vec<String> = s.split('.').map(str::to_owned).collect();
    if s.is_empty() || segs.iter().any(|x| x.is_empty()) {
        return Err(format!(
            "{s:?} is not a key pattern (dotted keys, * for one level)"
        ));
    }
    Ok(segs)
}

/// Whether `pat` covers `key` (the key itself or anything below it).
fn covers(pat: &[String], key: &[&str]) -> bool {
    pat.len() <= key.len() && pat.iter().zip(key).all(|(p, k)| p == "*" || p == k)
}

impl Policy {
    /// The built-in rules alone.
    pub fn built_in() -> Policy {
        Policy::default()
    }

    /// The policy at `path`: the built-in rules when there is no file
    /// there, else the file's, if root owns it and only root can change
    /// it.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let shown = || path.display().to_string();
        let untrusted = |why: String| PolicyError::Untrusted { path: shown(), why };
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Policy::built_in()),
            Err(e) => return Err(untrusted(e.to_string())),
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dmeta =
            std::fs::metadata(dir).map_err(|e| untrusted(format!("{}: {e}", dir.display())))?;
        if dmeta.uid() != 0 {
            return Err(untrusted(format!("{} is not owned by root", dir.display())));
        }
        // A sticky directory (/tmp) lets nobody else rename root's file.
        if dmeta.mode() & 0o022 != 0 && dmeta.mode() & 0o1000 == 0 {
            return Err(untrusted(format!(
                "others than root can write {}",
                dir.display()
            )));
        }
        if !meta.is_file() {
            return Err(untrusted("not a regular file".into()));
        }
        if meta.uid() != 0 {
            return Err(untrusted("not owned by root".into()));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(untrusted("writable by group or others".into()));
        }
        let bytes = crate::host::file::read(path, crate::host::file::FileKind::Secret)
            .map_err(|e| untrusted(e.to_string()))?;
        let invalid = |why: String| PolicyError::Invalid { path: shown(), why };
        let text = String::from_utf8(bytes).map_err(|_| invalid("not UTF-8 text".into()))?;
        let f: PolicyFile = toml::from_str(&text).map_err(|e| invalid(e.message().to_owned()))?;
        let parse = |v: Vec<String>| -> Result<Vec<Vec<String>>, PolicyError> {
            v.iter().map(|s| pattern(s).map_err(invalid)).collect()
        };
        Ok(Policy {
            allow: parse(f.allow)?,
            deny: parse(f.deny)?,
            source: Some(path.to_owned()),
        })
    }

    /// What the file adds to and takes from the built-in rules, in words
    /// (for `wardgate check`).
    pub fn describe(&self) -> String {
        let join = |v: &[Vec<String>]| v.iter().map(|p| p.join(".")).collect::<Vec<_>>().join(", ");
        match &self.source {
            None => "built in (no policy file)".into(),
            Some(p) => format!(
                "built in, from {}: allow [{}], deny [{}]",
                p.display(),
                join(&self.allow),
                join(&self.deny)
            ),
        }
    }

    fn file_says(&self, key: &[&str]) -> Option<bool> {
        if self.deny.iter().any(|p| covers(p, key)) {
            return Some(false);
        }
        if self.allow.iter().any(|p| covers(p, key)) {
            return Some(true);
        }
        None
    }

    /// Every key of `new_text` (over the running `old_text`) the policy
    /// refuses; empty when the change may be tried. Both configs are
    /// already valid (`old`, `new` are them parsed).
    pub fn refusals(
        &self,
        old_text: &str,
        old: &Config,
        new_text: &str,
        new: &Config,
    ) -> Vec<Refusal> {
        let (Ok(o), Ok(n)) = (
            toml::from_str::<toml::Table>(old_text),
            toml::from_str::<toml::Table>(new_text),
        ) else {
            // Both parsed as configs a moment ago; refuse rather than guess.
            return vec![Refusal {
                key: "(file)".into(),
                why: "cannot be compared with the running config".into(),
            }];
        };
        let mut out = Vec::new();
        let mut refuse = |key: String, why: &str| {
            out.push(Refusal {
                key,
                why: why.to_owned(),
            })
        };
        // The sections: every key written differently.
        for key in changed_section_keys(&o, &n) {
            let segs: Vec<&str> = key.split('.').collect();
            let ok = self
                .file_says(&segs)
                .unwrap_or_else(|| SECTION_KEYS.contains(&key.as_str()));
            if !ok {
                refuse(key, "not changed remotely");
            }
        }
        // The devices, by id.
        let known = Endpoints::of(old);
        let (od, nd) = (devices_by_id(&o), devices_by_id(&n));
        for id in od.keys() {
            if !nd.contains_key(id) {
                let key = format!("device.{id}");
                if self.file_says(&["device", id]) == Some(false) {
                    refuse(key, "not removed remotely");
                }
            }
        }
        for (id, table) in &nd {
            let before = od.get(id).filter(|t| t.get("type") == table.get("type"));
            let cfg = new.devices.iter().find(|d| d.id() == id.as_str());
            let mut moved = false;
            for k in changed_keys(before.copied(), table) {
                let path = format!("device.{id}.{k}");
                match self.file_says(&["device", id, &k]) {
                    Some(true) => continue,
                    Some(false) => {
                        refuse(path, "not changed remotely");
                        continue;
                    }
                    None => {}
                }
                if DEVICE_ENDPOINT_KEYS.contains(&k.as_str()) {
                    moved = true;
                } else if !DEVICE_KEYS.contains(&k.as_str()) {
                    refuse(path, "not changed remotely");
                }
            }
            if !moved {
                continue;
            }
            let Some(cfg) = cfg else { continue };
            if before.is_some() && has_login(cfg) {
                refuse(
                    format!("device.{id}.host"),
                    "a device with a login is not moved remotely (its password would go to the new place)",
                );
                continue;
            }
            for (key, unknown) in known.unknown_of(cfg) {
                refuse(
                    format!("device.{id}.{key}"),
                    &format!("{unknown} is not an endpoint of the running config"),
                );
            }
        }
        // One line per key, in order.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        out
    }
}

/// The devices of a raw config, by id (`[[device]]` tables).
fn devices_by_id(t: &toml::Table) -> BTreeMap<String, &toml::Table> {
    let mut m = BTreeMap::new();
    if let Some(toml::Value::Array(a)) = t.get("device") {
        for d in a {
            if let toml::Value::Table(d) = d {
                if let Some(toml::Value::String(id)) = d.get("id") {
                    m.insert(id.clone(), d);
                }
            }
        }
    }
    m
}

/// Keys of a device table written differently (all of them when it is
/// new, or of another kind).
fn changed_keys(before: Option<&toml::Table>, after: &toml::Table) -> Vec<String> {
    let empty = toml::Table::new();
    let before = before.unwrap_or(&empty);
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| k.to_string())
        .collect()
}

/// The section keys (`site`, `mqtt.host`, `power.ups`, ...) written
/// differently; a section table added or removed whole counts each of its
/// keys (an empty one, itself).
fn changed_section_keys(o: &toml::Table, n: &toml::Table) -> Vec<String> {
    let mut out = Vec::new();
    let names: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    for name in names.into_iter().filter(|k| k.as_str() != "device") {
        match (o.get(name), n.get(name)) {
            (a, b) if a == b => {}
            (
                a @ (None | Some(toml::Value::Table(_))),
                b @ (None | Some(toml::Value::Table(_))),
            ) => {
                let empty = toml::Table::new();
                let ta = match a {
                    Some(toml::Value::Table(t)) => t,
                    _ => &empty,
                };
                let tb = match b {
                    Some(toml::Value::Table(t)) => t,
                    _ => &empty,
                };
                let keys = changed_keys(Some(ta), tb);
                if keys.is_empty() {
                    out.push(name.to_string());
                }
                out.extend(keys.into_iter().map(|k| format!("{name}.{k}")));
            }
            _ => out.push(name.to_string()),
        }
    }
    out
}

/// A NUT device that logs in: its password must not follow it elsewhere.
fn has_login(d: &DeviceConfig) -> bool {
    matches!(d, DeviceConfig::Nut(n) if n.username.is_some() || n.password_file.is_some())
}

fn loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

fn norm_host(h: &str) -> String {
    h.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// The host of a probe target's address (`host`, `host:port`,
/// `[v6]:port`).
fn address_host(a: &str) -> String {
    if let Some(rest) = a.strip_prefix('[') {
        return norm_host(rest.split(']').next().unwrap_or(rest));
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.parse::<u16>().is_ok() => norm_host(h),
        _ => norm_host(a),
    }
}

/// The endpoints of the running config: serial ports, (host, port) pairs
/// of network devices, and every host it names (the broker's and the
/// database's included, for probes).
#[derive(Debug, Default)]
struct Endpoints {
    serial: BTreeSet<PathBuf>,
    net: BTreeSet<(String, u16)>,
    hosts: BTreeSet<String>,
}

impl Endpoints {
    fn of(cfg: &Config) -> Endpoints {
        let mut e = Endpoints::default();
        e.hosts.insert(norm_host(&cfg.mqtt.host));
        e.net.insert((norm_host(&cfg.mqtt.host), cfg.mqtt_port()));
        if let Some(u) = cfg.influxdb.url.as_deref() {
            if let Some(rest) = u.split("://").nth(1) {
                let hostport = rest.split('/').next().unwrap_or(rest);
                e.hosts.insert(address_host(hostport));
            }
        }
        for d in &cfg.devices {
            for (_, ep) in endpoints_of(d) {
                match ep {
                    Endpoint::Serial(p) => {
                        e.serial.insert(p);
                    }
                    Endpoint::Net(h, port) => {
                        e.hosts.insert(h.clone());
                        e.net.insert((h, port));
                    }
                    Endpoint::Host(h) => {
                        e.hosts.insert(h);
                    }
                }
            }
        }
        e
    }

    /// The endpoints of `d` the running config does not have, with the
    /// key that names each.
    fn unknown_of(&self, d: &DeviceConfig) -> Vec<(&'static str, String)> {
        endpoints_of(d)
            .into_iter()
            .filter_map(|(key, ep)| match ep {
                Endpoint::Serial(p) if !self.serial.contains(&p) => {
                    Some((key, p.display().to_string()))
                }
                Endpoint::Net(h, port)
                    if !loopback(&h) && !self.net.contains(&(h.clone(), port)) =>
                {
                    Some((key, format!("{h}:{port}")))
                }
                Endpoint::Host(h) if !loopback(&h) && !self.hosts.contains(&h) => Some((key, h)),
                _ => None,
            })
            .collect()
    }
}

enum Endpoint {
    Serial(PathBuf),
    Net(String, u16),
    Host(String),
}

/// Where a device is, with the key that says so.
fn endpoints_of(d: &DeviceConfig) -> Vec<(&'static str, Endpoint)> {
    match d {
        DeviceConfig::Megatec(c) => vec![("serial", Endpoint::Serial(c.serial.to_path_buf()))],
        DeviceConfig::ApcSmart(c) => vec![("serial", Endpoint::Serial(c.serial.to_path_buf()))],
        DeviceConfig::Modbus(c) => match c.transport {
            ModbusTransport::Rtu => c
                .serial
                .iter()
                .map(|s| ("serial", Endpoint::Serial(s.to_path_buf())))
                .collect(),
            ModbusTransport::Tcp => c
                .host
                .iter()
                .map(|h| ("host", Endpoint::Net(norm_host(h), c.port.get())))
                .collect(),
        },
        DeviceConfig::Nut(c) => vec![("host", Endpoint::Net(norm_host(&c.host), c.port.get()))],
        DeviceConfig::Snmp(c) => vec![("host", Endpoint::Net(norm_host(&c.host), c.port.get()))],
        DeviceConfig::Probe(c) => c
            .targets
            .iter()
            .map(|t| ("targets", Endpoint::Host(address_host(&t.address))))
            .collect(),
        DeviceConfig::Sim(_)
        | DeviceConfig::OneWire(_)
        | DeviceConfig::System(_)
        | DeviceConfig::Gpio(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
