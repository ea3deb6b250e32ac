//! The `[web]` and `[led]` sections: the local status page and the
//! status LED, and their checks.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::types::{defaults_of, BcmPin};

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
    /// "vi" (default) or "en", when the browser does not say.
    #[serde(default = "default_language")]
    pub language: String,
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

impl WebConfig {
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
    PathBuf::from("/sys/class/leds/ACT")
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
