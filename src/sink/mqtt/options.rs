//! What a connection is made with: rumqttc's options (client id, keep
//! alive, packet limits, last will, credentials) and the rustls client
//! configuration from `mqtt.ca_file`, `cert_file` and `key_file`. Reads
//! the password and TLS files each time a connection is attempted (so a
//! technician can fix them without a restart); never opens a connection.

use std::path::Path;
use std::sync::Arc;

use rumqttc::{LastWill, MqttOptions, NetworkOptions, QoS, TlsConfiguration, Transport};

use super::{MqttError, MqttSink};
use crate::sink::config::MqttSetup;
use crate::sink::lane::Lane;
use crate::sink::payload;

/// The least the gateway reads from the broker in one packet: acks, pings
/// and command requests (at most 64 KiB each). Above the broker's own
/// packet limit, so that whatever the broker accepts, a retained request
/// included, can be read and refused ("too large") rather than end the
/// connection at every reconnect; docs/mqtt.md asks for a broker limit
/// between `mqtt.max_packet_size` and this. 8 MiB read once fits the
/// unit's MemoryMax (64 MiB) beside a full backlog (18 MiB measured).
pub(super) const MIN_INCOMING_PACKET: usize = 8 << 20;

/// The incoming limit in force: [`MIN_INCOMING_PACKET`], or more when
/// `mqtt.max_packet_size` is bigger (the broker's limit is at least that).
pub(super) fn max_incoming_packet(cfg: &MqttSetup) -> usize {
    MIN_INCOMING_PACKET.max(max_packet_size(cfg))
}

impl<L: Lane> MqttSink<L> {
    pub(super) fn options(&self) -> Result<MqttOptions, MqttError> {
        let c = &self.cfg;
        let mut o = MqttOptions::new(c.mqtt_client_id(), c.mqtt.host.clone(), c.mqtt_port());
        o.set_keep_alive(c.mqtt.keep_alive.get());
        o.set_clean_session(true);
        o.set_inflight(u16::try_from(c.mqtt.inflight.get()).expect("mqtt.inflight is 1-65535"));
        // The same limit the publisher checks before handing a message over,
        // so rumqttc never meets a packet it refuses (which would end the
        // connection, again and again).
        o.set_max_packet_size(max_incoming_packet(c), max_packet_size(c));
        o.set_last_will(LastWill::new(
            payload::status_topic(&c.mqtt.prefix, &c.site),
            payload::status_offline("lost"),
            QoS::AtLeastOnce,
            true,
        ));
        if let Some(user) = &c.mqtt.username {
            let password = match &c.mqtt.password_file {
                Some(p) => read_password(p)?,
                None => String::new(),
            };
            o.set_credentials(user.clone(), password);
        }
        if c.mqtt_tls() {
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(tls_config(
                    c.mqtt.ca_file.as_deref(),
                    c.mqtt.cert_file.as_deref(),
                    c.mqtt.key_file.as_deref(),
                )?),
            )));
        }
        Ok(o)
    }
}

/// `mqtt.max_packet_size` in bytes, as rumqttc counts packets.
pub(super) fn max_packet_size(cfg: &MqttSetup) -> usize {
    usize::try_from(cfg.mqtt.max_packet_size.as_u64()).unwrap_or(usize::MAX)
}

/// rumqttc's own connection timeout (whole seconds, default 5 s) would cut
/// an attempt short of `mqtt.connect_timeout`: set it to at least that, so
/// the sink's own timeout is the one that applies.
pub(super) fn network_options(cfg: &MqttSetup) -> NetworkOptions {
    let t = cfg.mqtt.connect_timeout.get();
    let secs = t.as_secs() + u64::from(t.subsec_nanos() > 0);
    let mut n = NetworkOptions::new();
    n.set_connection_timeout(secs.max(1));
    n
}

fn read_password(path: &Path) -> Result<String, MqttError> {
    crate::host::file::read_secret_line(path).map_err(MqttError::Password)
}

/// The shared rustls configuration ([`crate::tls::tls_config`]), its
/// errors as this sink's.
pub(super) fn tls_config(
    ca_file: Option<&Path>,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<rustls::ClientConfig, MqttError> {
    crate::tls::tls_config(ca_file, cert_file, key_file)
        .map_err(|e| MqttError::Tls(e.hint("mqtt.ca_file")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared builder's tests are in src/tls.rs; here, that its errors
    /// stay this sink's TLS setup errors, naming the sink's keys.
    #[test]
    fn tls_errors_are_the_sinks() {
        let e = tls_config(Some(Path::new("/nonexistent/ca.pem")), None, None).unwrap_err();
        assert!(matches!(e, MqttError::Tls(_)), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("TLS setup: /nonexistent/ca.pem: "),
            "{e}"
        );
    }
}
