//! The MQTT sink: QoS 1 to the operations centre's broker, committing a
//! batch to the spool only when the broker's PUBACK for it arrives.
//!
//! Each connection is a fresh rumqttc client and event loop. rumqttc keeps
//! unacknowledged publishes only in memory and drops them on reconnect when
//! the broker has no stored session, so wardgate never lets it retransmit:
//! when a connection ends, everything in flight goes back to the spool
//! (`nack_all`) and is sent again on the next connection. The spool, not the
//! client, is the source of truth.
//!
//! Acks are tied to batches as thin-edge's bridge does: publishes enter
//! rumqttc's request channel in order, so the n-th `Outgoing::Publish(pkid)`
//! belongs to the n-th publish request; a FIFO of tags maps pkid to batch,
//! and `Incoming::PubAck(pkid)` commits it. Publishing happens in its own
//! task, never in the task that polls the event loop.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions,
    Outgoing, Packet, QoS, TlsConfiguration, Transport,
};
use tokio_util::sync::CancellationToken;

use super::payload;
use crate::config::Config;
use crate::model::now_ms;
use crate::spool::LaneHandle;
use crate::status::StatusHub;

/// The name of this sink's lane in the spool.
pub const SINK_NAME: &str = "mqtt";

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// TLS material could not be loaded: logged and shown in the status;
    /// retried with backoff (the technician may be copying the files in).
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The password file could not be read: as for `Tls`.
    #[error("reading mqtt.password_file {path}: {source}")]
    Password {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The broker could not be reached or refused us: retried with backoff.
    #[error("{0}")]
    Connect(String),
}

/// Counters this sink keeps for status and gateway telemetry.
#[derive(Debug, Default)]
pub struct SinkCounters {
    pub messages_acked: AtomicU64,
    pub records_acked: AtomicU64,
    pub last_ack_ms: AtomicI64,
    pub connects: AtomicU64,
}

/// Identity of this run, for the birth message.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub version: String,
    pub boot_id: String,
    pub run_id: String,
    pub started_ms: i64,
}

pub struct MqttSink {
    cfg: Arc<Config>,
    lane: LaneHandle,
    status: StatusHub,
    run: RunInfo,
    counters: Arc<SinkCounters>,
}

/// Jittered exponential backoff, reset only after the link stayed up a while.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    reset_after: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration, reset_after: Duration) -> Self {
        Backoff {
            min,
            max,
            current: min,
            reset_after,
        }
    }

    /// The next delay: uniformly between half and all of the current step,
    /// which then doubles up to the maximum.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let step = self.current;
        self.current = (self.current * 2).min(self.max);
        let lo = step.as_millis() as u64 / 2;
        let hi = step.as_millis() as u64;
        Duration::from_millis(rng.random_range(lo..=hi.max(lo)))
    }

    /// A connection ended after being up for `up`.
    pub fn connection_ended(&mut self, up: Duration) {
        if up >= self.reset_after {
            self.current = self.min;
        }
    }
}

enum SessionEnd {
    Cancelled,
    Failed { error: String, up: Duration },
}

impl MqttSink {
    pub fn new(
        cfg: Arc<Config>,
        lane: LaneHandle,
        status: StatusHub,
        run: RunInfo,
        counters: Arc<SinkCounters>,
    ) -> Self {
        MqttSink {
            cfg,
            lane,
            status,
            run,
            counters,
        }
    }

    /// Connects, publishes, reconnects, until `cancel`; then publishes the
    /// offline status and disconnects.
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        loop {
            if cancel.is_cancelled() {
                return;
            }
            match self.session(&cancel).await {
                SessionEnd::Cancelled => return,
                SessionEnd::Failed { error, up } => {
                    self.lane.set_link(false);
                    backoff.connection_ended(up);
                    let delay = backoff.next_delay(&mut rand::rng());
                    tracing::warn!(
                        broker = %format!("{}:{}", self.cfg.mqtt.host, self.cfg.mqtt_port()),
                        %error,
                        retry_in = %humantime::format_duration(Duration::from_millis(delay.as_millis() as u64)),
                        "MQTT link down"
                    );
                    self.status.update(|s| {
                        if s.uplink.connected || s.uplink.since_ms == 0 {
                            s.uplink.since_ms = now_ms();
                        }
                        s.uplink.connected = false;
                        s.uplink.last_error = Some(error.clone());
                    });
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    fn options(&self) -> Result<MqttOptions, MqttError> {
        let c = &self.cfg;
        let mut o = MqttOptions::new(c.mqtt_client_id(), c.mqtt.host.clone(), c.mqtt_port());
        o.set_keep_alive(c.mqtt.keep_alive);
        o.set_clean_session(true);
        o.set_inflight(c.mqtt.inflight.clamp(1, 65_535) as u16);
        // A backlog batch of max_batch records must fit in one packet.
        o.set_max_packet_size(1 << 20, 16 << 20);
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

    async fn session(&self, cancel: &CancellationToken) -> SessionEnd {
        let failed = |error: String| SessionEnd::Failed {
            error,
            up: Duration::ZERO,
        };
        self.status.update(|s| s.uplink.attempts += 1);
        let opts = match self.options() {
            Ok(o) => o,
            Err(e) => return failed(e.to_string()),
        };
        let (client, mut el) = AsyncClient::new(opts, 64);
        let connect = tokio::time::timeout(self.cfg.mqtt.connect_timeout, wait_connack(&mut el));
        let connected = tokio::select! {
            _ = cancel.cancelled() => return SessionEnd::Cancelled,
            r = connect => r,
        };
        match connected {
            Err(_) => return failed("timed out waiting for the broker's CONNACK".into()),
            Ok(Err(e)) => return failed(describe(&e, &self.cfg)),
            Ok(Ok(())) => {}
        }
        let up_since = Instant::now();
        let n = self.counters.connects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            broker = %format!("{}:{}", self.cfg.mqtt.host, self.cfg.mqtt_port()),
            tls = self.cfg.mqtt_tls(),
            "MQTT connected"
        );
        self.status.update(|s| {
            s.uplink.connected = true;
            s.uplink.since_ms = now_ms();
            s.uplink.last_error = None;
            if n > 0 {
                s.uplink.reconnects += 1;
            }
        });
        self.lane.set_link(true);

        let tags: Arc<Mutex<VecDeque<Option<u64>>>> = Arc::default();
        let status_topic = payload::status_topic(&self.cfg.mqtt.prefix, &self.cfg.site);
        tags_push(&tags, None);
        let birth = payload::status_online(
            &self.run.version,
            &self.run.boot_id,
            &self.run.run_id,
            self.run.started_ms,
        );
        if let Err(e) = client.try_publish(&status_topic, QoS::AtLeastOnce, true, birth) {
            return self.end(failed(format!("queueing the birth message: {e}")));
        }

        let publisher = tokio::spawn(publish_loop(
            client.clone(),
            self.lane.clone(),
            tags.clone(),
            self.cfg.clone(),
        ));
        let mut pkids: HashMap<u16, u64> = HashMap::new();
        let end = loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    publisher.abort();
                    let _ = publisher.await;
                    self.goodbye(&client, &mut el, &tags, &mut pkids, &status_topic).await;
                    break SessionEnd::Cancelled;
                }
                ev = el.poll() => match ev {
                    Ok(ev) => { self.on_event(ev, &tags, &mut pkids); }
                    Err(e) => {
                        publisher.abort();
                        break SessionEnd::Failed { error: describe(&e, &self.cfg), up: up_since.elapsed() };
                    }
                },
            }
        };
        self.end(end)
    }

    fn end(&self, end: SessionEnd) -> SessionEnd {
        self.lane.set_link(false);
        self.lane.nack_all();
        end
    }

    fn on_event(
        &self,
        ev: Event,
        tags: &Mutex<VecDeque<Option<u64>>>,
        pkids: &mut HashMap<u16, u64>,
    ) -> Option<u16> {
        match ev {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                let tag = tags.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                match tag {
                    Some(Some(batch)) => {
                        pkids.insert(pkid, batch);
                    }
                    Some(None) => return Some(pkid),
                    None => tracing::warn!(pkid, "publish without a tag: ack will not commit"),
                }
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(batch) = pkids.remove(&ack.pkid) {
                    let n = self.lane.ack(batch);
                    self.counters.messages_acked.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .records_acked
                        .fetch_add(n as u64, Ordering::Relaxed);
                    self.counters.last_ack_ms.store(now_ms(), Ordering::Relaxed);
                }
            }
            _ => {}
        }
        None
    }

    /// Clean stop: the offline status (retained), acknowledged, then DISCONNECT.
    async fn goodbye(
        &self,
        client: &AsyncClient,
        el: &mut EventLoop,
        tags: &Mutex<VecDeque<Option<u64>>>,
        pkids: &mut HashMap<u16, u64>,
        status_topic: &str,
    ) {
        tags_push(tags, None);
        if client
            .try_publish(
                status_topic,
                QoS::AtLeastOnce,
                true,
                payload::status_offline("shutdown"),
            )
            .is_err()
        {
            return;
        }
        let wait = async {
            let mut offline_pkid = None;
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(ack))) if Some(ack.pkid) == offline_pkid => {
                        return;
                    }
                    Ok(ev) => {
                        // Data acks that arrive meanwhile still commit.
                        if let Some(p) = self.on_event(ev, tags, pkids) {
                            offline_pkid = Some(p);
                        }
                    }
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), wait).await;
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while el.poll().await.is_ok() {}
        })
        .await;
        tracing::info!("MQTT disconnected (offline status sent)");
    }
}

fn tags_push(tags: &Mutex<VecDeque<Option<u64>>>, tag: Option<u64>) {
    tags.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push_back(tag);
}

async fn wait_connack(el: &mut EventLoop) -> Result<(), ConnectionError> {
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = el.poll().await? {
            return Ok(());
        }
    }
}

/// Takes batches from the spool and hands them to rumqttc, in order.
async fn publish_loop(
    client: AsyncClient,
    lane: LaneHandle,
    tags: Arc<Mutex<VecDeque<Option<u64>>>>,
    cfg: Arc<Config>,
) {
    let max = cfg.mqtt.max_batch.max(1) as usize;
    let gap = cfg
        .mqtt
        .backlog_rate
        .map(|r| Duration::from_secs_f64(1.0 / r));
    let mut next_backlog = tokio::time::Instant::now();
    loop {
        let batch = match lane.next_batch(max, 256 * 1024).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "reading the spool failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if batch.historical {
            if let Some(gap) = gap {
                tokio::time::sleep_until(next_backlog).await;
                next_backlog = tokio::time::Instant::now().max(next_backlog) + gap;
            }
        }
        let topic = payload::data_topic(&cfg.mqtt.prefix, &cfg.site, &batch.device, batch.kind);
        let body = payload::encode_batch(&cfg.site, &batch);
        tags_push(&tags, Some(batch.id));
        if client
            .publish(topic, QoS::AtLeastOnce, false, body)
            .await
            .is_err()
        {
            // The event loop is gone; the session is ending.
            return;
        }
    }
}

fn read_password(path: &Path) -> Result<String, MqttError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
        .map_err(|e| MqttError::Password {
            path: path.display().to_string(),
            source: e,
        })
}

/// rustls with the ring provider; roots from `ca_file` or the system store.
pub fn tls_config(
    ca_file: Option<&Path>,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<rustls::ClientConfig, MqttError> {
    let tls = |m: String| MqttError::Tls(m);
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(ca) => {
            let f = File::open(ca).map_err(|e| tls(format!("{}: {e}", ca.display())))?;
            let mut n = 0;
            for cert in rustls_pemfile::certs(&mut BufReader::new(f)) {
                let cert = cert.map_err(|e| tls(format!("{}: {e}", ca.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| tls(format!("{}: {e}", ca.display())))?;
                n += 1;
            }
            if n == 0 {
                return Err(tls(format!("{}: no PEM certificate in it", ca.display())));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(tls(
                    "no system CA certificates found; set mqtt.ca_file".into()
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))?
        .with_root_certificates(roots);
    match (cert_file, key_file) {
        (Some(cert), Some(key)) => {
            let f = File::open(cert).map_err(|e| tls(format!("{}: {e}", cert.display())))?;
            let chain: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(f))
                .collect::<Result<_, _>>()
                .map_err(|e| tls(format!("{}: {e}", cert.display())))?;
            let f = File::open(key).map_err(|e| tls(format!("{}: {e}", key.display())))?;
            let key_der = rustls_pemfile::private_key(&mut BufReader::new(f))
                .map_err(|e| tls(format!("{}: {e}", key.display())))?
                .ok_or_else(|| tls(format!("{}: no private key in it", key.display())))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| tls(format!("client certificate: {e}")))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// A connection error in words a technician can act on.
fn describe(e: &ConnectionError, cfg: &Config) -> String {
    let broker = format!("{}:{}", cfg.mqtt.host, cfg.mqtt_port());
    match e {
        ConnectionError::ConnectionRefused(code) => match code {
            ConnectReturnCode::BadUserNamePassword => {
                format!("broker {broker} refused the login: bad username or password")
            }
            ConnectReturnCode::NotAuthorized => {
                format!("broker {broker} refused the login: not authorised")
            }
            ConnectReturnCode::BadClientId => {
                format!(
                    "broker {broker} refused the client id {:?}",
                    cfg.mqtt_client_id()
                )
            }
            other => format!("broker {broker} refused the connection: {other:?}"),
        },
        ConnectionError::Tls(t) => format!("TLS with {broker} failed: {t}"),
        ConnectionError::Io(io) => format!("cannot reach broker {broker}: {io}"),
        ConnectionError::NetworkTimeout => format!("timed out connecting to {broker}"),
        other => format!("MQTT connection to {broker}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut b = Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        let mut steps = Vec::new();
        for _ in 0..10 {
            steps.push(b.next_delay(&mut rng));
        }
        assert!(steps[0] >= Duration::from_millis(500) && steps[0] <= Duration::from_secs(1));
        assert!(steps[3] >= Duration::from_secs(4) && steps[3] <= Duration::from_secs(8));
        for s in &steps {
            assert!(*s <= Duration::from_secs(60));
        }
        assert!(steps[9] >= Duration::from_secs(30));
        // A short connection does not reset the backoff...
        b.connection_ended(Duration::from_secs(5));
        assert!(b.next_delay(&mut rng) >= Duration::from_secs(30));
        // ...a minute-long one does.
        b.connection_ended(Duration::from_secs(61));
        assert!(b.next_delay(&mut rng) <= Duration::from_secs(1));
    }

    #[test]
    fn missing_ca_file_is_a_clear_error() {
        let e = tls_config(Some(Path::new("/nonexistent/ca.pem")), None, None).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn ca_file_without_certificates_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a certificate").unwrap();
        let e = tls_config(Some(&p), None, None).unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }
}
