//! The broker side of the ingest: rumqttc's MQTT 3.1.1 client (the
//! gateway's own client; mosquitto 2, EMQX, HiveMQ and VerneMQ accept
//! `$share/<group>/...` from 3.1.1 clients, so MQTT 5 is not needed for
//! shared subscriptions), a persistent session (clean session false, a
//! fixed client id), QoS 1 and manual acknowledgements.
//!
//! [`poll`] owns the `EventLoop`: it forwards what arrives to the ingest
//! through a bounded channel and never waits on the ingest otherwise (the
//! ingest acknowledges with `try_ack`, which never blocks), so there is no
//! cycle. On an error it sleeps a jittered, growing back-off before the
//! next `poll()` (rumqttc reconnects on the very next call).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeFilter,
    SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};

use super::IngestError;
use crate::backoff::Backoff;
use crate::config::MqttConfig;

/// The largest message read: the gateway sends at most
/// `mqtt.max_packet_size` (1 MiB by default, docs/mqtt.md "Sizes").
const MAX_INCOMING: usize = 16 << 20;

/// What the broker side tells the ingest.
#[derive(Debug)]
pub enum FromBroker {
    /// A connection is up (`generation` counts connections).
    Connected {
        generation: u64,
        session_present: bool,
    },
    /// A message of connection `generation`.
    Publish { generation: u64, publish: Publish },
    /// The connection is down.
    Down(String),
}

/// The topic filters: telemetry and events through the shared group when
/// one is set, status and inventory in every instance (retained, small).
pub fn filters(c: &MqttConfig) -> Vec<String> {
    let p = &c.prefix;
    let shared = |f: String| match &c.shared_group {
        Some(g) => format!("$share/{g}/{f}"),
        None => f,
    };
    vec![
        format!("{p}/+/inventory"),
        format!("{p}/+/status"),
        shared(format!("{p}/+/+/event")),
        shared(format!("{p}/+/+/telemetry")),
    ]
}

/// rumqttc's options for `client_id` (the config's, or another for a probe).
pub fn options(c: &MqttConfig, client_id: &str, clean: bool) -> Result<MqttOptions, IngestError> {
    let mut o = MqttOptions::new(client_id, c.host.clone(), c.port);
    o.set_keep_alive(c.keep_alive);
    o.set_clean_session(clean);
    o.set_manual_acks(true);
    o.set_max_packet_size(MAX_INCOMING, 64 << 10);
    if let Some(user) = &c.username {
        let password = match &c.password_file {
            Some(p) => read_line(p).map_err(|e| IngestError::Secret {
                key: "mqtt.password_file",
                why: e,
            })?,
            None => String::new(),
        };
        o.set_credentials(user.clone(), password);
    }
    if let Some(t) = &c.tls {
        let cfg = tls_config(
            t.ca_file.as_deref(),
            t.cert_file.as_deref(),
            t.key_file.as_deref(),
        )
        .map_err(|why| IngestError::Secret {
            key: "mqtt.ca_file",
            why,
        })?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(cfg),
        )));
    }
    Ok(o)
}

fn read_line(p: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(text.lines().next().unwrap_or("").trim().to_owned())
}

/// rustls with the ring provider; roots from `ca_file` or none given: the
/// system's bundle at /etc/ssl/certs/ca-certificates.crt.
fn tls_config(
    ca_file: Option<&Path>,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ca = ca_file.unwrap_or(Path::new("/etc/ssl/certs/ca-certificates.crt"));
    let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no PEM certificate in it", ca.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match (cert_file, key_file) {
        (Some(cert), Some(key)) => {
            let pem = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
            let chain: Vec<_> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let pem = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
            let key_der = PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| format!("client certificate: {e}"))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// Subscribes (QoS 1) to every filter; never blocks.
pub fn subscribe(client: &AsyncClient, filters: &[String]) -> Result<(), rumqttc::ClientError> {
    client.try_subscribe_many(
        filters
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce)),
    )
}

/// Drives the event loop until the client's disconnect is written, or
/// `stop`; see the module comment.
pub async fn poll(
    mut el: EventLoop,
    client: AsyncClient,
    filters: Vec<String>,
    tx: mpsc::Sender<FromBroker>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut up_since: Option<Instant> = None;
    let mut generation = 0u64;
    loop {
        let ev = tokio::select! {
            ev = el.poll() => ev,
            _ = stop.changed() => return,
        };
        let msg = match ev {
            Ok(Event::Incoming(Packet::ConnAck(c))) => {
                generation += 1;
                up_since = Some(Instant::now());
                // A broker that kept the session kept its subscriptions:
                // subscribing again would send the retained status and
                // inventory again, ahead of older messages still queued
                // for this session (out of order for the ledger). A new
                // session (first start, or the broker lost it) subscribes.
                if !c.session_present {
                    if let Err(e) = subscribe(&client, &filters) {
                        tracing::error!(error = %e, "cannot subscribe");
                    }
                }
                FromBroker::Connected {
                    generation,
                    session_present: c.session_present,
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => FromBroker::Publish {
                generation,
                publish,
            },
            Ok(Event::Incoming(Packet::SubAck(s))) => {
                if s.return_codes.contains(&SubscribeReasonCode::Failure) {
                    tracing::error!(codes = ?s.return_codes, ?filters, "the broker refused a subscription (ACL?)");
                } else {
                    tracing::info!(?filters, "subscribed");
                }
                continue;
            }
            // The ingest asked to disconnect after its last commit: the
            // acknowledgements queued before it have been written.
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => continue,
            Err(e) => {
                if up_since.is_some_and(|t| t.elapsed() > Duration::from_secs(60)) {
                    backoff.reset();
                }
                up_since = None;
                let wait = backoff.next_wait();
                tracing::warn!(error = %e, ?wait, "MQTT connection down; reconnecting after the wait");
                let _ = tx.send(FromBroker::Down(e.to_string())).await;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
        };
        // The ingest has stopped: keep polling (its last acknowledgements
        // and the disconnect are still to be written); what comes now is
        // not acknowledged and comes again.
        let _ = tx.send(msg).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_filters_only_for_data() {
        let raw = crate::config::parse(
            "[mqtt]\nhost=\"h\"\nprefix=\"p\"\nshared_group=\"g\"\n[store]\npath=\"/x\"",
        )
        .unwrap()
        .validate()
        .unwrap();
        assert_eq!(
            filters(&raw.mqtt),
            vec![
                "p/+/inventory",
                "p/+/status",
                "$share/g/p/+/+/event",
                "$share/g/p/+/+/telemetry"
            ]
        );
    }
}
