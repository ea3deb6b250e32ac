//! The retained inventory (`{prefix}/{site}/inventory`) the operations
//! centre builds its fleet view from, and the running config file as
//! `config.get` returns it (secrets removed, with its hash). Pure apart
//! from reading the config file once at start.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{json, Value};

use super::config::CommandSetup;
use crate::model::ClockState;
use crate::sink::mqtt::RunInfo;
use crate::status::Snapshot;

/// Key names whose values are secrets, wherever they are in the file
/// (`community` is SNMP's password).
const SECRET_KEYS: [&str; 6] = ["password", "token", "secret", "community", "psk", "api_key"];

fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    // A path to a file that holds a secret is not itself one.
    !k.ends_with("_file") && SECRET_KEYS.iter().any(|s| k.contains(s))
}

/// The config file the gateway started with.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConfigFile {
    pub path: Option<PathBuf>,
    /// `sha256:` and the hex SHA-256 of the file's bytes (of nothing when
    /// the gateway runs on defaults and environment only).
    pub hash: String,
    /// The file as TOML with secret values taken out.
    pub toml: String,
    /// The keys taken out (`device[1].community`).
    pub removed: Vec<String>,
    /// Why the file could not be read again, if it could not.
    pub error: Option<String>,
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl ConfigFile {
    /// Reads the file once (at start: the hash is the running config's).
    pub(crate) fn read(path: Option<&Path>) -> ConfigFile {
        let Some(path) = path else {
            return ConfigFile {
                hash: sha256_hex(b""),
                ..Default::default()
            };
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let mut f = Self::from_text(&String::from_utf8_lossy(&bytes));
                f.hash = sha256_hex(&bytes);
                f.path = Some(path.to_path_buf());
                f
            }
            Err(e) => ConfigFile {
                path: Some(path.to_path_buf()),
                hash: String::new(),
                error: Some(format!("{}: {e}", path.display())),
                ..Default::default()
            },
        }
    }

    /// The TOML text with secrets taken out.
    pub(crate) fn from_text(text: &str) -> ConfigFile {
        let mut f = ConfigFile {
            hash: sha256_hex(text.as_bytes()),
            ..Default::default()
        };
        match text.parse::<toml::Table>() {
            Ok(mut t) => {
                redact(&mut t, "", &mut f.removed);
                f.toml = toml::to_string(&t).unwrap_or_default();
            }
            Err(e) => f.error = Some(format!("the file is not TOML: {e}")),
        }
        f
    }

    /// `config.get`'s result.
    pub(crate) fn result(&self) -> Value {
        let env: Vec<String> = std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .filter(|k| k.starts_with("WARDGATE__"))
            .collect();
        json!({
            "path": self.path,
            "hash": self.hash,
            "toml": self.toml,
            "removed": self.removed,
            "environment": env,
            "error": self.error,
        })
    }
}

fn redact(t: &mut toml::Table, at: &str, removed: &mut Vec<String>) {
    let keys: Vec<String> = t.keys().cloned().collect();
    for k in keys {
        let here = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        if is_secret(&k) {
            t.remove(&k);
            removed.push(here);
            continue;
        }
        match t.get_mut(&k) {
            Some(toml::Value::Table(sub)) => redact(sub, &here, removed),
            Some(toml::Value::Array(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let toml::Value::Table(sub) = item {
                        redact(sub, &format!("{here}[{i}]"), removed);
                    }
                }
            }
            _ => {}
        }
    }
}

#[derive(Serialize)]
struct DeviceEntry {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    interval_ms: u64,
    /// The value names seen so far (a device that has not answered yet has
    /// none).
    values: Vec<String>,
    /// Each of those values in words: the unit it is published in and its
    /// Vietnamese and English label (the config's words first, then the
    /// page's table; the name itself when neither knows it).
    words: std::collections::BTreeMap<String, ValueWords>,
}

#[derive(Serialize)]
struct ValueWords {
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<String>,
    vi: String,
    en: String,
}

/// The words of one value of a device, as the page shows them.
fn words_of(name: &str, configured: Option<&crate::status::words::Label>) -> ValueWords {
    let (vi, en) = crate::status::words::labels(name);
    let unit = crate::status::words::unit(name)
        .filter(|u| !u.is_empty())
        .map(str::to_owned);
    match configured {
        Some(l) => ValueWords {
            unit: l.unit.clone().or(unit),
            vi: l.vi.clone().or_else(|| l.en.clone()).unwrap_or(vi),
            en: l.en.clone().or_else(|| l.vi.clone()).unwrap_or(en),
        },
        None => ValueWords { unit, vi, en },
    }
}

/// The inventory message. It holds nothing that changes every second, so
/// it is published again only when something in it changed.
pub(crate) fn build(
    cfg: &CommandSetup,
    run: &RunInfo,
    file: &ConfigFile,
    status: &Snapshot,
) -> Vec<u8> {
    let devices: Vec<DeviceEntry> = cfg
        .devices
        .iter()
        .map(|d| {
            let st = status.devices.get(&d.id);
            let values: Vec<String> = st
                .map(|s| s.last_values.0.keys().cloned().collect())
                .unwrap_or_default();
            let words = values
                .iter()
                .map(|n| (n.clone(), words_of(n, st.and_then(|s| s.labels.get(n)))))
                .collect();
            DeviceEntry {
                id: d.id.clone(),
                kind: d.kind.clone(),
                interval_ms: d.interval.as_millis() as u64,
                values,
                words,
            }
        })
        .collect();
    let clock = match crate::model::kernel_clock_state() {
        ClockState::Synced => "synced",
        ClockState::Unsynced | ClockState::Corrected => "unsynced",
    };
    let allowed: Vec<&str> = cfg.commands.allowed().iter().map(|o| o.name()).collect();
    let mut sinks = vec![crate::sink::mqtt::SINK_NAME];
    if cfg.influx_enabled {
        sinks.push(crate::sink::influx::SINK_NAME);
    }
    let v = json!({
        "site": cfg.site,
        "version": run.version,
        "boot_id": run.boot_id,
        "run_id": run.run_id,
        "started": run.started_ms,
        "config_hash": file.hash,
        "clock": clock,
        "devices": devices,
        "sinks": sinks,
        "commands": {
            "enabled": cfg.commands.enabled,
            "allow": if cfg.commands.enabled { allowed } else { Vec::new() },
        },
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_taken_out_and_listed() {
        let text = "site = \"s\"\n[mqtt]\nusername = \"gw\"\npassword_file = \"/etc/p\"\npassword = \"hunter2\"\n\n[[device]]\nid = \"r\"\ntype = \"snmp\"\ncommunity = \"s3cret\"\n[influx]\ntoken = \"abc\"\n";
        let f = ConfigFile::from_text(text);
        assert_eq!(
            f.removed,
            vec!["device[0].community", "influx.token", "mqtt.password"]
        );
        for secret in ["hunter2", "s3cret", "abc"] {
            assert!(!f.toml.contains(secret), "{}", f.toml);
        }
        assert!(f.toml.contains("password_file = \"/etc/p\""), "{}", f.toml);
        assert!(f.toml.contains("username = \"gw\""), "{}", f.toml);
        let back: toml::Table = f.toml.parse().unwrap();
        assert_eq!(back["site"].as_str(), Some("s"));
        assert_eq!(f.hash, sha256_hex(text.as_bytes()));
        assert!(f.hash.starts_with("sha256:") && f.hash.len() == 7 + 64);
        let bad = ConfigFile::from_text("site = ");
        assert!(bad.error.is_some());
    }

    #[test]
    fn inventory_lists_devices_sinks_and_commands() {
        let cfg = crate::config::Config::from_toml(
            "site = \"s\"\n[gateway]\nsystem_health = false\n[commands]\nallow = [\"status\", \"config.get\"]\n[[device]]\nid = \"ups1\"\ntype = \"sim\"\ninterval = \"2s\"\n",
        )
        .unwrap()
        .command_setup();
        let run = RunInfo {
            version: "1.2.3".into(),
            boot_id: "b".into(),
            run_id: "r".into(),
            started_ms: 5,
        };
        let hub = crate::status::StatusHub::new("s");
        hub.add_device("ups1", "sim");
        let mut snap = hub.get();
        let inv = |snap: &Snapshot| {
            serde_json::from_slice::<Value>(&build(&cfg, &run, &ConfigFile::from_text(""), snap))
                .unwrap()
        };
        let v = inv(&snap);
        assert_eq!(v["devices"][0]["id"], "ups1");
        assert_eq!(v["devices"][0]["type"], "sim");
        assert_eq!(v["devices"][0]["interval_ms"], 2000);
        assert_eq!(v["devices"][0]["values"], json!([]));
        assert_eq!(v["sinks"], json!(["mqtt"]));
        assert_eq!(v["commands"]["allow"], json!(["status", "config.get"]));
        assert_eq!(v["version"], "1.2.3");
        let before = build(&cfg, &run, &ConfigFile::from_text(""), &snap);
        if let Some(d) = snap.devices.get_mut("ups1") {
            d.last_values.num("ups.load", 3.0);
        }
        assert_eq!(inv(&snap)["devices"][0]["values"], json!(["ups.load"]));
        // Each value in words, with its unit: the table's, or the config's
        // words first.
        assert_eq!(
            inv(&snap)["devices"][0]["words"],
            json!({"ups.load": {"unit": "%", "vi": "Tải", "en": "Load"}})
        );
        if let Some(d) = snap.devices.get_mut("ups1") {
            d.last_values.num("tank.level", 120.0);
            d.labels.insert(
                "tank.level".into(),
                crate::status::words::Label {
                    vi: Some("Mức nước bể".into()),
                    en: None,
                    unit: Some("cm".into()),
                },
            );
        }
        assert_eq!(
            inv(&snap)["devices"][0]["words"]["tank.level"],
            json!({"unit": "cm", "vi": "Mức nước bể", "en": "Mức nước bể"})
        );
        assert_ne!(
            before,
            build(&cfg, &run, &ConfigFile::from_text(""), &snap),
            "a change shows"
        );
    }
}
