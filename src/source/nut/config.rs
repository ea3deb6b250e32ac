//! The `[[device]]` table of `type = "nut"` and its checks.

use std::time::Duration;

use serde::Deserialize;

use crate::source::threshold::ThresholdConfig;
use crate::types::{default_interval, duration_problem, AbsPath, Port};

/// A UPS served by an existing NUT `upsd` (any UPS NUT supports, USB HID
/// models included). One device per UPS name, so each has its own health,
/// sequence and events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NutConfig {
    pub id: String,
    #[serde(default = "default_nut_host")]
    pub host: String,
    #[serde(default = "default_nut_port")]
    pub port: Port,
    /// The UPS name in upsd (`upsc -l` lists them).
    pub ups: String,
    /// A user of upsd.users, for the power-off (`INSTCMD shutdown.return`
    /// and `SET VAR ups.delay.shutdown`; docs/ups.md); reading needs none.
    #[serde(default)]
    pub username: Option<String>,
    /// Its password, alone in a file (read at each connection, never
    /// logged; `wardgate check` warns when others can read it).
    #[serde(default)]
    pub password_file: Option<AbsPath>,
    /// TLS to upsd: `STARTTLS`, then the handshake, verifying upsd's
    /// certificate against `ca_file` and `host`, before anything else
    /// (the login included). Never falls back to clear text.
    #[serde(default)]
    pub tls: bool,
    /// The CA that signed upsd's certificate (PEM); the system's CAs when
    /// not set. Only with `tls = true`.
    #[serde(default)]
    pub ca_file: Option<AbsPath>,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_nut_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Alarms on this device's values (`[[device.threshold]]`).
    #[serde(default)]
    pub threshold: Vec<ThresholdConfig>,
}

/// Longest upsd user name accepted.
const USERNAME_MAX: usize = 64;

fn default_nut_host() -> String {
    "127.0.0.1".into()
}
fn default_nut_port() -> Port {
    Port::of(3493)
}
/// The bounds of a network peer's reply timeout (NUT here, the probe's
/// too): 100 ms to 30 s, as for the serial and SNMP devices. Shorter than
/// a LAN round trip under load times out for nothing; longer leaves the
/// device looking alive long after it stopped answering. (Kept a plain
/// `Duration`, bounded here, so the client code is not touched.)
pub(crate) const TIMEOUT_MIN: Duration = Duration::from_millis(100);
pub(crate) const TIMEOUT_MAX: Option<Duration> = Some(Duration::from_secs(30));

/// Also the probe's default timeout.
pub(crate) fn default_nut_timeout() -> Duration {
    Duration::from_secs(5)
}

impl NutConfig {
    /// Problems the types cannot see, each naming its key under `key`.
    pub(crate) fn problems(&self, key: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.host.trim().is_empty() {
            p.push(format!("{key}.host: must not be empty"));
        }
        if self.ups.is_empty()
            || self
                .ups
                .contains(|c: char| c.is_whitespace() || c.is_control())
        {
            p.push(format!("{key}.ups: {:?} is not a NUT UPS name", self.ups));
        }
        if self.username.is_none() && self.password_file.is_some() {
            p.push(format!("{key}.password_file: set, but username is not"));
        }
        if let Some(u) = &self.username {
            // upsd.users section names: one word, at most NUT's 64.
            if u.is_empty()
                || u.len() > USERNAME_MAX
                || u.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                p.push(format!(
                    "{key}.username: {u:?} is not an upsd user name (one word, 1 to {USERNAME_MAX} characters)"
                ));
            }
            if self.password_file.is_none() {
                p.push(format!(
                    "{key}.username: set, but password_file is not (upsd takes commands only from a user with a password)"
                ));
            }
        }
        if !self.tls && self.ca_file.is_some() {
            p.push(format!(
                "{key}.ca_file: set, but tls is not (set tls = true to use it)"
            ));
        }
        if self.tls
            && !self.host.trim().is_empty()
            && rustls::pki_types::ServerName::try_from(self.host.as_str()).is_err()
        {
            p.push(format!(
                "{key}.host: {:?} is not a host name or IP address, which TLS needs to check upsd's certificate",
                self.host
            ));
        }
        if let Some(why) = duration_problem(self.timeout, TIMEOUT_MIN, TIMEOUT_MAX) {
            p.push(format!("{key}.timeout: {why}"));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn problems(extra: &str) -> Vec<String> {
        let text =
            format!("site = \"s\"\n[[device]]\nid = \"u\"\ntype = \"nut\"\nups = \"x\"\n{extra}");
        match Config::from_toml(&text) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems(),
        }
    }

    #[test]
    fn login_keys_are_checked() {
        let pw = "password_file = \"/etc/wardgate/nut.password\"\n";
        let cases: &[(String, Option<&str>)] = &[
            (String::new(), None),
            (format!("username = \"wardgate\"\n{pw}"), None),
            (
                "username = \"wardgate\"\n".into(),
                Some("device[0].username: set, but password_file is not"),
            ),
            (
                pw.into(),
                Some("device[0].password_file: set, but username is not"),
            ),
            (
                format!("username = \"ward gate\"\n{pw}"),
                Some("device[0].username: \"ward gate\" is not an upsd user name"),
            ),
            (
                format!("username = \"\"\n{pw}"),
                Some("device[0].username: \"\" is not an upsd user name"),
            ),
            (
                format!("username = \"{}\"\n{pw}", "u".repeat(65)),
                Some("is not an upsd user name (one word, 1 to 64 characters)"),
            ),
            (
                "username = \"w\"\npassword_file = \"nut.password\"\n".into(),
                Some("must be an absolute path"),
            ),
        ];
        check(cases);
    }

    #[test]
    fn tls_keys_are_checked() {
        let cases: &[(String, Option<&str>)] = &[
            ("tls = true\n".into(), None),
            ("tls = false\n".into(), None),
            (
                "tls = true\nca_file = \"/etc/wardgate/nut-ca.pem\"\n".into(),
                None,
            ),
            ("tls = true\nhost = \"ups.example\"\n".into(), None),
            ("tls = true\nhost = \"192.0.2.7\"\n".into(), None),
            (
                "ca_file = \"/etc/wardgate/nut-ca.pem\"\n".into(),
                Some("device[0].ca_file: set, but tls is not"),
            ),
            (
                "tls = true\nca_file = \"nut-ca.pem\"\n".into(),
                Some("must be an absolute path"),
            ),
            (
                "tls = true\nhost = \"not a host\"\n".into(),
                Some("device[0].host: \"not a host\" is not a host name or IP address"),
            ),
            ("tls = \"maybe\"\n".into(), Some("tls")),
        ];
        check(cases);
    }

    fn check(cases: &[(String, Option<&str>)]) {
        for (extra, want) in cases {
            let p = problems(extra);
            match want {
                None => assert!(p.is_empty(), "{extra}: {p:?}"),
                Some(w) => assert!(
                    p.iter().any(|m| m.contains(w)),
                    "{extra}: wanted {w}, got {p:?}"
                ),
            }
        }
    }
}
