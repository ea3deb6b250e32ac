//! The `[mqtt]` section: where and how the MQTT sink publishes, and the
//! checks that span its keys.

use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::config::types::{defaults_of, duration_problem, AbsPath, Bounded, Port};

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
    /// Default `wardgate-{site}`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Records per batch, 1-10000.
    #[serde(default = "default_max_batch")]
    pub max_batch: Bounded<1, 10_000>,
    /// Cap on backlog messages per second; `None` = as fast as acks come.
    #[serde(default)]
    pub backlog_rate: Option<f64>,
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// QoS 1 messages in flight (sent, not yet acknowledged), 1-65535.
    #[serde(default = "default_inflight")]
    pub inflight: Bounded<1, 65_535>,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// A batch's record bodies total at most this (a single record may exceed it).
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: ByteSize,
    /// No MQTT packet bigger than this is sent; a record that would need
    /// one is set aside instead of blocking the uplink.
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: ByteSize,
    /// Records pending, link up and no PUBACK for this long: the link is
    /// stuck (reconnect, `mqtt.stalled` event, `/healthz` 503).
    #[serde(default = "default_stall_timeout", with = "humantime_serde")]
    pub stall_timeout: Duration,
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
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_inflight() -> Bounded<1, 65_535> {
    Bounded::of(100)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(20)
}
fn default_max_batch_bytes() -> ByteSize {
    ByteSize::kib(256)
}
fn default_max_packet_size() -> ByteSize {
    ByteSize::mib(1)
}
fn default_stall_timeout() -> Duration {
    Duration::from_secs(60)
}

impl MqttConfig {
    /// Problems the types cannot see, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let (m, mut p) = (self, Vec::new());
        let secs = Duration::from_secs;
        if m.host.trim().is_empty() {
            p.push("mqtt.host: must not be empty".into());
        }
        if m.prefix.is_empty()
            || m.prefix.contains(['#', '+'])
            || m.prefix.starts_with('/')
            || m.prefix.ends_with('/')
        {
            p.push(format!(
                "mqtt.prefix: {:?} is not a topic prefix (no #, +, or leading/trailing /)",
                m.prefix
            ));
        }
        if let Some(r) = m.backlog_rate {
            if !(r.is_finite() && r > 0.0) {
                p.push(format!(
                    "mqtt.backlog_rate: {r} must be a positive number of messages per second"
                ));
            }
        }
        if let Some(why) = duration_problem(m.keep_alive, secs(5), None) {
            p.push(format!("mqtt.keep_alive: {why}"));
        }
        if m.cert_file.is_some() != m.key_file.is_some() {
            p.push("mqtt.cert_file / mqtt.key_file: give both or neither".into());
        }
        if m.tls == Some(false) && (m.ca_file.is_some() || m.cert_file.is_some()) {
            p.push("mqtt.tls: false, but ca_file or cert_file is set".into());
        }
        if m.username.is_none() && m.password_file.is_some() {
            p.push("mqtt.password_file: set, but mqtt.username is not".into());
        }
        if let Some(id) = &m.client_id {
            if id.is_empty() || id.len() > 128 {
                p.push(format!("mqtt.client_id: {id:?} must be 1-128 characters"));
            }
        }
        if let Some(why) = duration_problem(m.connect_timeout, secs(1), Some(secs(600))) {
            p.push(format!("mqtt.connect_timeout: {why}"));
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
        if let Some(why) = duration_problem(m.stall_timeout, secs(1), Some(secs(3600))) {
            p.push(format!("mqtt.stall_timeout: {why}"));
        }
        if let Some(r) = m.backlog_rate.filter(|r| r.is_finite() && *r > 0.0) {
            // A paced backlog must not look like a stuck link.
            if 1.0 / r >= m.stall_timeout.as_secs_f64() {
                p.push(format!(
                    "mqtt.backlog_rate: {r} messages per second is slower than one per mqtt.stall_timeout ({})",
                    humantime::format_duration(m.stall_timeout)
                ));
            }
        }
        p
    }
}
