//! The `[web]` and `[led]` sections: the local status page and the
//! status LED, and their checks.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::types::{defaults_of, BcmPin, Bounded, Within};

/// How many connections the page serves at once (a quarter of them per
/// client). Every connection holds a file descriptor; the gateway lowers
/// this at start if the process's descriptor limit is small.
pub(crate) type MaxConnections = Bounded<1, 1024>;
/// How long a client may take to send a request's head, and how long a
/// kept-alive connection may sit idle between requests.
pub(crate) type HeaderTimeout = Within<1_000, 60_000>;

/// The local status page.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_web_listen")]
    pub listen: String,
    /// Optional HTTP basic auth: both or neither.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// "vi" (default) or "en": the page's language unless the person
    /// picks the other one with the link (remembered in a cookie).
    #[serde(default = "default_language")]
    pub language: String,
    /// The site's time zone for the times on the page: a zone without
    /// daylight saving time (`Asia/Ho_Chi_Minh`, the default) or `UTC+7`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Connections served at once; more are closed as soon as accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: MaxConnections,
    /// The header-read and idle keep-alive timeout.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: HeaderTimeout,
    /// Names the page also answers to (a name the office's DNS gives the
    /// Pi, say). Any IP address, `localhost`, the box's host name and
    /// `<host name>.local` are always allowed: those cover how staff open
    /// the page, and none of them can be pointed at the Pi by another site.
    /// A request for any other name is refused (421), which is what stops
    /// DNS rebinding: another site's name re-pointed at the Pi. No "*": a
    /// name is listed, or the defence is kept.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

impl Default for WebConfig {
    fn default() -> Self {
        defaults_of("web")
    }
}

fn default_true() -> bool {
    true
}
fn default_web_listen() -> String {
    "0.0.0.0:8080".into()
}
fn default_language() -> String {
    "vi".into()
}
fn default_timezone() -> String {
    "Asia/Ho_Chi_Minh".into()
}
fn default_max_connections() -> MaxConnections {
    MaxConnections::of(32)
}
fn default_header_timeout() -> HeaderTimeout {
    HeaderTimeout::of(Duration::from_secs(10))
}

impl WebConfig {
    /// The site's time zone (Vietnam's when `timezone` is not valid, which
    /// [`WebConfig::problems`] reports).
    pub fn zone(&self) -> crate::status::words::Zone {
        crate::status::words::Zone::parse(&self.timezone).unwrap_or_default()
    }

    /// Problems, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let (w, mut p) = (self, Vec::new());
        if w.listen.parse::<std::net::SocketAddr>().is_err() {
            p.push(format!(
                "web.listen: {:?} is not an address:port such as \"0.0.0.0:8080\"",
                w.listen
            ));
        }
        if w.language != "vi" && w.language != "en" {
            p.push(format!(
                "web.language: {:?} must be \"vi\" or \"en\"",
                w.language
            ));
        }
        if crate::status::words::Zone::parse(&w.timezone).is_none() {
            p.push(format!(
                "web.timezone: {:?} is not a zone without daylight saving time ({}) or UTC+H[:MM]",
                w.timezone,
                crate::status::words::Zone::names().join(", ")
            ));
        }
        for h in &w.allowed_hosts {
            if h.contains('*') {
                p.push(format!(
                    "web.allowed_hosts: {h:?}: no wildcards; list each name the page is opened by \
                     (IP addresses, localhost and this box's own name are always allowed)"
                ));
            } else if crate::status::web::host::parse_name(h).is_err() {
                p.push(format!(
                    "web.allowed_hosts: {h:?} is not a host name such as \"gateway.ward3.lan\" \
                     (no port, no scheme)"
                ));
            }
        }
        if w.username.is_some() != w.password_file.is_some() {
            p.push("web.username / web.password_file: give both or neither".into());
        }
        p
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedBackend {
    /// The kernel's LED class (the Pi's onboard ACT LED).
    Sysfs,
    /// An external LED on a GPIO pin.
    Gpio,
    /// No status LED.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedConfig {
    #[serde(default = "default_led_backend")]
    pub backend: LedBackend,
    /// The LED's directory (`/sys/class/leds/ACT`; `led0` on older Pi OS).
    #[serde(default = "default_led_path")]
    pub path: PathBuf,
    /// BCM pin number, for `backend = "gpio"`.
    #[serde(default)]
    pub pin: Option<BcmPin>,
    #[serde(default)]
    pub active_low: bool,
}

impl Default for LedConfig {
    fn default() -> Self {
        defaults_of("led")
    }
}

fn default_led_backend() -> LedBackend {
    LedBackend::Sysfs
}
fn default_led_path() -> PathBuf {
    PathBuf::from(crate::host::LED_ACT)
}

impl LedConfig {
    /// Problems, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        match (self.backend, self.pin) {
            (LedBackend::Gpio, None) => {
                vec!["led.pin: needed with led.backend = \"gpio\" (BCM number)".into()]
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_hosts_are_names() {
        let with = |hosts: &[&str]| WebConfig {
            allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..Default::default()
        };
        assert!(WebConfig::default().allowed_hosts.is_empty());
        assert!(with(&["gw.ward3.lan", "GW-3.", "10.0.0.5"])
            .problems()
            .is_empty());
        for bad in ["*", "*.ward3.lan", "gw.lan:8080", "http://gw.lan", ""] {
            let p = with(&[bad]).problems();
            assert_eq!(p.len(), 1, "{bad}: {p:?}");
            assert!(p[0].starts_with("web.allowed_hosts: "), "{p:?}");
        }
        assert!(with(&["*"]).problems()[0].contains("no wildcards"));
    }
}
