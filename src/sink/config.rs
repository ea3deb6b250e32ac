//! The `[mqtt]` section: where and how the MQTT sink publishes, and the
//! checks that span its keys.

use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::types::{defaults_of, AbsPath, Bounded, MessageRate, Port, Within};

/// Backlog messages per second: at least 1 (a slower pace is a stuck
/// uplink by another name, and `1e-300` stopped the publisher), at most
/// 10,000 (beyond what a Pi's broker link acknowledges: the same as
/// unpaced).
pub(crate) type BacklogRate = MessageRate<1, 10_000>;
/// MQTT keep-alive: 5 s to 65,535 s. The CONNECT packet carries it as a
/// 16-bit count of seconds, so 65,536 s would wrap to 0 (keep-alive off);
/// below 5 s a slow link drops for nothing.
pub(crate) type KeepAlive = Within<5_000, 65_535_000>;
/// One connection attempt (TCP, TLS and CONNACK): 1 s to 10 min.
pub(crate) type ConnectTimeout = Within<1_000, 600_000>;
/// No PUBACK for this long with records pending is a stuck link: 1 s to 1 h.
pub(crate) type StallTimeout = Within<1_000, 3_600_000>;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    #[serde(default = "default_host")]
    pub host: String,
    /// Default 8883 with TLS, 1883 without.
    #[serde(default)]
    pub port: Option<Port>,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// `None`: TLS unless the broker is on loopback.
    #[serde(default)]
    pub tls: Option<bool>,
    #[serde(default)]
    pub ca_file: Option<AbsPath>,
    #[serde(default)]
    pub cert_file: Option<AbsPath>,
    #[serde(default)]
    pub key_file: Option<AbsPath>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<AbsPath>,
    /// Let `password_file` go to a broker that is not on loopback with TLS
    /// off (the password crosses the network in clear). Default false.
    #[serde(default)]
    pub allow_plaintext_credentials: bool,
    /// Default `wardgate-{site}`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Records per batch, 1-10000.
    #[serde(default = "default_max_batch")]
    pub max_batch: Bounded<1, 10_000>,
    /// Cap on backlog messages per second (1-10000); `None` = as fast as
    /// acks come.
    #[serde(default)]
    pub backlog_rate: Option<BacklogRate>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive: KeepAlive,
    /// QoS 1 messages in flight (sent, not yet acknowledged), 1-65535.
    #[serde(default = "default_inflight")]
    pub inflight: Bounded<1, 65_535>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: ConnectTimeout,
    /// A batch's record bodies total at most this (a single record may exceed it).
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: ByteSize,
    /// No MQTT packet bigger than this is sent; a record that would need
    /// one is set aside instead of blocking the uplink.
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: ByteSize,
    /// Records pending, link up and no PUBACK for this long: the link is
    /// stuck (reconnect, `mqtt.stalled` event, `/healthz` 503).
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout: StallTimeout,
}

/// What the MQTT sink is built from: its own section and the site it
/// speaks for (never the whole config).
#[derive(Debug, Clone)]
pub struct MqttSetup {
    pub site: String,
    pub mqtt: MqttConfig,
}

impl MqttSetup {
    pub fn mqtt_tls(&self) -> bool {
        self.mqtt.tls_in_effect()
    }

    pub fn mqtt_port(&self) -> u16 {
        self.mqtt.port_in_effect()
    }

    pub fn mqtt_client_id(&self) -> String {
        self.mqtt.client_id_for(&self.site)
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        defaults_of("mqtt")
    }
}

fn default_host() -> String {
    "localhost".into()
}
fn default_prefix() -> String {
    "ioc".into()
}
fn default_max_batch() -> Bounded<1, 10_000> {
    Bounded::of(100)
}
fn default_keep_alive() -> KeepAlive {
    KeepAlive::of(Duration::from_secs(30))
}
fn default_inflight() -> Bounded<1, 65_535> {
    Bounded::of(100)
}
fn default_connect_timeout() -> ConnectTimeout {
    ConnectTimeout::of(Duration::from_secs(20))
}
fn default_max_batch_bytes() -> ByteSize {
    ByteSize::kib(256)
}
fn default_max_packet_size() -> ByteSize {
    ByteSize::mib(1)
}
fn default_stall_timeout() -> StallTimeout {
    StallTimeout::of(Duration::from_secs(60))
}

impl MqttConfig {
    /// TLS in effect: as configured, or on unless the broker is on loopback.
    pub fn tls_in_effect(&self) -> bool {
        self.tls.unwrap_or_else(|| !is_loopback(&self.host))
    }

    /// The port in effect: as configured, or 8883 with TLS and 1883 without.
    pub fn port_in_effect(&self) -> u16 {
        match self.port {
            Some(p) => p.get(),
            None if self.tls_in_effect() => 8883,
            None => 1883,
        }
    }

    /// The client id in effect: as configured, or `wardgate-<site>`.
    pub fn client_id_for(&self, site: &str) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("wardgate-{site}"))
    }

    /// Problems the types cannot see, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let (m, mut p) = (self, Vec::new());
        if m.host.trim().is_empty() {
            p.push("mqtt.host: must not be empty".into());
        }
        // `$` starts the broker's own topics ($SYS, and `$share/...` would
        // turn the command subscription into a shared one); control
        // characters (NUL above all) and empty levels make topics no ACL
        // written by hand matches.
        if m.prefix.is_empty()
            || m.prefix.contains(['#', '+'])
            || m.prefix.starts_with(['/', '$'])
            || m.prefix.ends_with('/')
            || m.prefix.contains("//")
            || m.prefix.contains(char::is_control)
        {
            p.push(format!(
                "mqtt.prefix: {:?} is not a topic prefix (no #, +, $ at the start, control characters, empty levels, or leading/trailing /)",
                m.prefix
            ));
        }
        if m.cert_file.is_some() != m.key_file.is_some() {
            p.push("mqtt.cert_file / mqtt.key_file: give both or neither".into());
        }
        p.extend(m.tls_problems());
        if m.username.is_none() && m.password_file.is_some() {
            p.push("mqtt.password_file: set, but mqtt.username is not".into());
        }
        if let Some(id) = &m.client_id {
            if id.is_empty() || id.len() > 128 {
                p.push(format!("mqtt.client_id: {id:?} must be 1-128 characters"));
            }
        }
        // MQTT's own limit is 256 MiB - 1; below 4 KiB not even one
        // reading with its envelope fits.
        let (packet, batch) = (m.max_packet_size.as_u64(), m.max_batch_bytes.as_u64());
        if !(4 << 10..256 << 20).contains(&packet) {
            p.push(format!(
                "mqtt.max_packet_size: {} must be at least 4 KiB and less than 256 MiB",
                m.max_packet_size
            ));
        }
        if batch < 1 << 10 || batch >= packet {
            p.push(format!(
                "mqtt.max_batch_bytes: {} must be at least 1 KiB and less than mqtt.max_packet_size ({})",
                m.max_batch_bytes, m.max_packet_size
            ));
        }
        if let Some(r) = m.backlog_rate {
            // A paced backlog must not look like a stuck link.
            if r.gap() >= m.stall_timeout.get() {
                p.push(format!(
                    "mqtt.backlog_rate: {r} messages per second is slower than one per mqtt.stall_timeout ({})",
                    m.stall_timeout
                ));
            }
        }
        p
    }

    /// TLS files with TLS off, and a password that would go out in clear.
    /// TLS is decided by [`MqttConfig::tls_in_effect`] alone: a file never
    /// turns it on, so one given while it is off is an error, not ignored.
    fn tls_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.tls_in_effect() {
            return p;
        }
        let why = match self.tls {
            Some(_) => "mqtt.tls = false".to_owned(),
            None => format!(
                "the broker {} is on loopback, where TLS is off unless mqtt.tls = true",
                self.host
            ),
        };
        for (key, set) in [
            ("mqtt.ca_file", self.ca_file.is_some()),
            ("mqtt.cert_file", self.cert_file.is_some()),
            ("mqtt.key_file", self.key_file.is_some()),
        ] {
            if set {
                p.push(format!(
                    "{key}: set, but TLS is off ({why}), so it would not be used; set mqtt.tls = true, or remove it"
                ));
            }
        }
        if self.password_file.is_some()
            && !is_loopback(&self.host)
            && !self.allow_plaintext_credentials
        {
            p.push(format!(
                "mqtt.password_file: TLS is off ({why}), so the password would cross the network to {} in clear; turn TLS on, or set mqtt.allow_plaintext_credentials = true if that network is trusted",
                self.host
            ));
        }
        p
    }
}

pub(crate) use crate::tls::is_loopback;
