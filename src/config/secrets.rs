//! Secret files bound to the key they were installed for, whatever wrote
//! the config (the card, `config.set`, a hand edit).
//!
//! A password file is read by the service and sent to whoever the key
//! that names it talks to. A config that names the MQTT password as a NUT
//! device's `password_file` sends it to that upsd in clear; as
//! `influxdb.token_file`, to the database. So each secret key has the
//! installed names that belong to it ([`INSTALLED`]: what provisioning and
//! the docs install), no other key may name them, no file may serve two
//! kinds of secret, and a NUT password serves one upsd.

use std::path::{Component, Path, PathBuf};

use super::{Config, DeviceConfig};

/// What a secret is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    MqttPassword,
    MqttKey,
    InfluxToken,
    WebPassword,
    NutPassword,
}

impl Role {
    /// The key (pattern) that names a file of this role.
    pub fn key(self) -> &'static str {
        match self {
            Role::MqttPassword => "mqtt.password_file",
            Role::MqttKey => "mqtt.key_file",
            Role::InfluxToken => "influxdb.token_file",
            Role::WebPassword => "web.password_file",
            Role::NutPassword => "device[].password_file (nut)",
        }
    }

    fn words(self) -> &'static str {
        match self {
            Role::MqttPassword => "the MQTT password",
            Role::MqttKey => "the MQTT client key",
            Role::InfluxToken => "the InfluxDB token",
            Role::WebPassword => "the local page's password",
            Role::NutPassword => "a upsd password",
        }
    }
}

/// The file names each secret is installed under (provisioning's names in
/// /etc/wardgate, and the docs'): only its own key may name such a file,
/// wherever it is.
pub(crate) const INSTALLED: &[(&str, Role)] = &[
    ("mqtt.password", Role::MqttPassword),
    ("client.key", Role::MqttKey),
    ("influx.token", Role::InfluxToken),
    ("web.password", Role::WebPassword),
    ("nut.password", Role::NutPassword),
];

/// One key of a config that names a secret file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretUse {
    /// The key, as problems name it (`mqtt.password_file`,
    /// `device[2].password_file`).
    pub key: String,
    pub path: PathBuf,
    pub role: Role,
    /// Who receives it: `mqtt broker:8883`, `nut 127.0.0.1:3493`,
    /// `influxdb https://db:8086`, `local` (the page checks it).
    pub to: String,
}

impl Config {
    /// Every key that names a secret file, with where the secret goes.
    pub fn secret_uses(&self) -> Vec<SecretUse> {
        let mut v = Vec::new();
        let mqtt_to = format!(
            "mqtt {}:{}",
            self.mqtt.host.trim().to_ascii_lowercase(),
            self.mqtt_port()
        );
        let mut push = |key: String, path: Option<&Path>, role: Role, to: String| {
            if let Some(p) = path {
                v.push(SecretUse {
                    key,
                    path: p.to_path_buf(),
                    role,
                    to,
                });
            }
        };
        push(
            "mqtt.password_file".into(),
            self.mqtt.password_file.as_deref(),
            Role::MqttPassword,
            mqtt_to.clone(),
        );
        push(
            "mqtt.key_file".into(),
            self.mqtt.key_file.as_deref(),
            Role::MqttKey,
            mqtt_to,
        );
        push(
            "influxdb.token_file".into(),
            self.influxdb.token_file.as_deref(),
            Role::InfluxToken,
            format!("influxdb {}", self.influxdb.url.as_deref().unwrap_or("")),
        );
        push(
            "web.password_file".into(),
            self.web.password_file.as_deref(),
            Role::WebPassword,
            "local".into(),
        );
        for (i, d) in self.devices.iter().enumerate() {
            if let DeviceConfig::Nut(n) = d {
                push(
                    format!("device[{i}].password_file"),
                    n.password_file.as_deref(),
                    Role::NutPassword,
                    format!(
                        "nut {}:{}",
                        n.host.trim().to_ascii_lowercase(),
                        n.port.get()
                    ),
                );
            }
        }
        v
    }

    /// The binding rules over [`Config::secret_uses`], one problem each.
    pub(super) fn secret_problems(&self) -> Vec<String> {
        let uses = self.secret_uses();
        let mut p = Vec::new();
        for u in &uses {
            if u.path.components().any(|c| c == Component::ParentDir) {
                p.push(format!(
                    "{}: {} has a \"..\" in it; name the secret's file directly",
                    u.key,
                    u.path.display()
                ));
                continue;
            }
            let name = u.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some((_, owner)) = INSTALLED.iter().find(|(n, r)| *n == name && *r != u.role) {
                p.push(format!(
                    "{}: {} is the name {} is installed under ({} names it); a secret file is read only by its own key",
                    u.key,
                    u.path.display(),
                    owner.words(),
                    owner.key()
                ));
            }
        }
        // The same file (as written, `.` and `//` aside) for two roles, or
        // one upsd password for two upsd.
        for (i, a) in uses.iter().enumerate() {
            for b in &uses[..i] {
                if a.path.components().ne(b.path.components()) {
                    continue;
                }
                if a.role != b.role {
                    p.push(format!(
                        "{}: {} is also {} ({}); one file serves one kind of secret",
                        a.key,
                        a.path.display(),
                        b.role.words(),
                        b.key
                    ));
                } else if a.to != b.to {
                    p.push(format!(
                        "{}: {} is also the password {} sends to {}; a password file serves one upsd (this one is {})",
                        a.key,
                        a.path.display(),
                        b.key,
                        b.to.trim_start_matches("nut "),
                        a.to.trim_start_matches("nut ")
                    ));
                }
            }
        }
        p
    }
}
