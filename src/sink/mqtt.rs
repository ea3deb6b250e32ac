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
//! Acks are tied to batches by the pure [`AckTracker`]. Publishing happens
//! in its own task, never in the task that polls the event loop; if that
//! task ends, the session ends with the reason logged and shown.
//!
//! A batch that can never be sent (its device id cannot be a topic level, or
//! its message would exceed `mqtt.max_packet_size`) is set aside rather than
//! allowed to break the connection again and again. Records pending, link
//! up and no PUBACK for `mqtt.stall_timeout` is a stuck link: it is
//! reported, the session is ended, and `/healthz` answers 503 until acks
//! move again.

use std::fs::File;
use std::future::Future;
use std::io::BufReader;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::Rng;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions,
    NetworkOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport,
};
use tokio_util::sync::CancellationToken;

use super::ack::{AckTracker, Acked, Sent, Tag};
use super::lane::Lane;
use super::payload;
use crate::config::Config;
use crate::model::{now_ms, Severity, Values};
use crate::status::StatusHub;

/// The name of this sink's lane in the spool.
pub const SINK_NAME: &str = "mqtt";

/// Reconnect backoff: the first step, and the cap (a broker that refuses
/// for hours is tried about once a minute, never more often).
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Failed attempts retried at the first step before the delay grows: a
/// broker restart (down a few seconds) is caught within a second of its
/// return.
const BACKOFF_FAST_TRIES: u32 = 8;
/// A link that stayed up this long was healthy: its loss starts the
/// backoff again from the first step.
const BACKOFF_HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// Incoming packets are acks and pings only.
const MAX_INCOMING_PACKET: usize = 1 << 20;

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
    /// Times the link was found stuck (`mqtt.stalls`).
    pub stalls: AtomicU64,
    /// Stuck now: set when a stall is found, cleared when acks move again
    /// or nothing is pending.
    pub stalled: AtomicBool,
    /// Batches set aside because they could never be sent.
    pub set_aside: AtomicU64,
    /// Advances at least once a second while the sink's loop runs (the
    /// watchdog's sign that the sink is not wedged).
    pub alive: AtomicU64,
}

/// Identity of this run, for the birth message.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub version: String,
    pub boot_id: String,
    pub run_id: String,
    pub started_ms: i64,
}

/// How the sink raises a gateway event (app.rs passes one that records it
/// on the gateway device): severity, code, message, values.
pub type EventReport = Arc<dyn Fn(Severity, &str, &str, Values) + Send + Sync>;

pub struct MqttSink<L: Lane> {
    cfg: Arc<Config>,
    lane: L,
    status: StatusHub,
    run: RunInfo,
    counters: Arc<SinkCounters>,
    report: EventReport,
}

/// Jittered exponential backoff that starts over after a healthy link.
///
/// The first [`BACKOFF_FAST_TRIES`] failed attempts wait about `min` each
/// (half to all of it); after that the step doubles per failure up to
/// `max`, and at the cap the delay is between `max` and 1.25 x `max`. A
/// connection that stayed up `healthy_after` resets it; a shorter one does
/// not (a broker that accepts and then drops us keeps backing off).
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    fast_tries: u32,
    healthy_after: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration, fast_tries: u32, healthy_after: Duration) -> Self {
        Backoff {
            min,
            max,
            fast_tries,
            healthy_after,
            failures: 0,
        }
    }

    /// The delay before the next attempt, after one more failure.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let doublings = self
            .failures
            .saturating_add(1)
            .saturating_sub(self.fast_tries)
            .min(20);
        self.failures = self.failures.saturating_add(1);
        let min = self.min.as_millis() as u64;
        let max = self.max.as_millis() as u64;
        let step = min.saturating_mul(1 << doublings);
        let ms = if step >= max {
            rng.random_range(max..=max + max / 4)
        } else {
            rng.random_range(step / 2..=step)
        };
        Duration::from_millis(ms)
    }

    /// A connection ended after being up for `up` (zero: it never came up).
    pub fn connection_ended(&mut self, up: Duration) {
        if up >= self.healthy_after {
            self.failures = 0;
        }
    }
}

enum SessionEnd {
    Cancelled,
    Failed { error: String, up: Duration },
}

fn lock(m: &Mutex<AckTracker>) -> MutexGuard<'_, AckTracker> {
    // The tracker is plain data updated in single steps: usable after a
    // panic elsewhere.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<L: Lane> MqttSink<L> {
    pub fn new(
        cfg: Arc<Config>,
        lane: L,
        status: StatusHub,
        run: RunInfo,
        counters: Arc<SinkCounters>,
        report: EventReport,
    ) -> Self {
        MqttSink {
            cfg,
            lane,
            status,
            run,
            counters,
            report,
        }
    }

    /// Connects, publishes, reconnects, until `cancel`; then publishes the
    /// offline status and disconnects.
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(
            BACKOFF_MIN,
            BACKOFF_MAX,
            BACKOFF_FAST_TRIES,
            BACKOFF_HEALTHY_AFTER,
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
                        _ = self.alive(tokio::time::sleep(delay)) => {}
                    }
                }
            }
        }
    }

    /// Runs `f`, advancing the sink's sign of life every second meanwhile.
    async fn alive<T>(&self, f: impl Future<Output = T>) -> T {
        tokio::pin!(f);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                r = &mut f => return r,
                _ = tick.tick() => {
                    self.counters.alive.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn options(&self) -> Result<MqttOptions, MqttError> {
        let c = &self.cfg;
        let mut o = MqttOptions::new(c.mqtt_client_id(), c.mqtt.host.clone(), c.mqtt_port());
        o.set_keep_alive(c.mqtt.keep_alive);
        o.set_clean_session(true);
        o.set_inflight(u16::try_from(c.mqtt.inflight.get()).expect("mqtt.inflight is 1-65535"));
        // The same limit the publisher checks before handing a message over,
        // so rumqttc never meets a packet it refuses (which would end the
        // connection, again and again).
        o.set_max_packet_size(MAX_INCOMING_PACKET, max_packet_size(c));
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
        el.set_network_options(network_options(&self.cfg));
        let connect = tokio::time::timeout(self.cfg.mqtt.connect_timeout, wait_connack(&mut el));
        let connected = tokio::select! {
            _ = cancel.cancelled() => return SessionEnd::Cancelled,
            r = self.alive(connect) => r,
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

        let tracker: Arc<Mutex<AckTracker>> = Arc::default();
        let status_topic = payload::status_topic(&self.cfg.mqtt.prefix, &self.cfg.site);
        let birth = payload::status_online(
            &self.run.version,
            &self.run.boot_id,
            &self.run.run_id,
            self.run.started_ms,
        );
        lock(&tracker).queue(Tag::Birth);
        if let Err(e) = client.try_publish(&status_topic, QoS::AtLeastOnce, true, birth) {
            return self.end(failed(format!("queueing the birth message: {e}")));
        }

        let mut publisher = tokio::spawn(publish_loop(
            client.clone(),
            self.lane.clone(),
            tracker.clone(),
            self.cfg.clone(),
            self.counters.clone(),
        ));
        let failed_up = |error: String| SessionEnd::Failed {
            error,
            up: up_since.elapsed(),
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // When delivery last moved: connected, a batch acknowledged, or
        // nothing pending.
        let mut moved = Instant::now();
        let end = loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    publisher.abort();
                    let _ = (&mut publisher).await;
                    self.goodbye(&client, &mut el, &tracker, &status_topic).await;
                    break SessionEnd::Cancelled;
                }
                r = &mut publisher => {
                    let error = match r {
                        Ok(error) => error,
                        Err(e) => format!("the MQTT publisher task failed: {e}"),
                    };
                    tracing::error!(%error, "MQTT publishing stopped; ending the connection");
                    break failed_up(error);
                }
                _ = tick.tick() => {
                    self.counters.alive.fetch_add(1, Ordering::Relaxed);
                    let pending = self.lane.pending();
                    if pending == 0 {
                        moved = Instant::now();
                        self.unstalled();
                    } else if moved.elapsed() >= self.cfg.mqtt.stall_timeout {
                        publisher.abort();
                        break failed_up(self.stalled(pending, moved.elapsed()));
                    }
                }
                ev = el.poll() => match ev {
                    Ok(ev) => match self.on_event(ev, &tracker) {
                        Ok(Some(Tag::Batch(_))) => {
                            moved = Instant::now();
                            self.unstalled();
                        }
                        Ok(_) => {}
                        Err(error) => {
                            publisher.abort();
                            tracing::error!(%error, "MQTT acknowledgements cannot be tied to messages; ending the connection");
                            break failed_up(error);
                        }
                    },
                    Err(e) => {
                        publisher.abort();
                        break failed_up(describe(&e, &self.cfg));
                    }
                },
            }
        };
        let lost = lock(&tracker).connection_lost();
        if !lost.is_empty() {
            tracing::debug!(
                batches = lost.len(),
                "unacknowledged batches go back to the spool"
            );
        }
        self.end(end)
    }

    fn end(&self, end: SessionEnd) -> SessionEnd {
        self.lane.set_link(false);
        self.lane.nack_all();
        end
    }

    /// The link is stuck: counts it, reports it (once per stall, not once
    /// per reconnect), and returns the reason the session ends.
    fn stalled(&self, pending: u64, for_: Duration) -> String {
        let secs = for_.as_secs();
        self.counters.stalls.fetch_add(1, Ordering::Relaxed);
        let error = format!(
            "delivery stalled: {pending} records waiting and no acknowledgement from the broker for {secs} s"
        );
        tracing::warn!(
            pending,
            stalled_for = secs,
            "MQTT delivery stalled; reconnecting"
        );
        if !self.counters.stalled.swap(true, Ordering::Relaxed) {
            self.status.update(|s| s.uplink.stalled = true);
            let mut v = Values::new();
            v.num("mqtt.pending", pending as f64);
            v.num("mqtt.stalled_for", secs as f64);
            let msg = format!(
                "The broker has not acknowledged anything for {secs} s while {pending} records wait to be sent; reconnecting."
            );
            (self.report)(Severity::Warning, "mqtt.stalled", &msg, v);
        }
        error
    }

    /// Acks move again (or nothing is pending): no longer stuck.
    fn unstalled(&self) {
        if self.counters.stalled.swap(false, Ordering::Relaxed) {
            self.status.update(|s| s.uplink.stalled = false);
            tracing::info!("MQTT delivery moving again");
        }
    }

    /// Books one event of the connection; returns what a PUBACK
    /// acknowledged, or why acks can no longer be tied to messages.
    fn on_event(&self, ev: Event, tracker: &Mutex<AckTracker>) -> Result<Option<Tag>, String> {
        match ev {
            Event::Outgoing(Outgoing::Publish(pkid)) => match lock(tracker).sent(pkid) {
                Sent::Ok => Ok(None),
                Sent::Untagged(p) => Err(format!(
                    "publish {p} left with no record of what it carried"
                )),
                Sent::Reused { pkid, lost } => Err(format!(
                    "packet id {pkid} reused while {lost:?} was still unacknowledged"
                )),
            },
            Event::Incoming(Packet::PubAck(ack)) => match lock(tracker).acked(ack.pkid) {
                Acked::Tag(Tag::Batch(batch)) => {
                    let n = self.lane.ack(batch);
                    self.counters.messages_acked.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .records_acked
                        .fetch_add(n as u64, Ordering::Relaxed);
                    self.counters.last_ack_ms.store(now_ms(), Ordering::Relaxed);
                    Ok(Some(Tag::Batch(batch)))
                }
                Acked::Tag(tag) => Ok(Some(tag)),
                Acked::Unknown(pkid) => {
                    tracing::warn!(pkid, "PUBACK for a packet id not in flight; ignored");
                    Ok(None)
                }
            },
            _ => Ok(None),
        }
    }

    /// Clean stop: the offline status (retained), acknowledged, then DISCONNECT.
    async fn goodbye(
        &self,
        client: &AsyncClient,
        el: &mut EventLoop,
        tracker: &Mutex<AckTracker>,
        status_topic: &str,
    ) {
        lock(tracker).queue(Tag::Offline);
        if client
            .try_publish(
                status_topic,
                QoS::AtLeastOnce,
                true,
                payload::status_offline("shutdown"),
            )
            .is_err()
        {
            lock(tracker).unqueue_last();
            return;
        }
        let wait = async {
            loop {
                match el.poll().await {
                    // Data acks that arrive meanwhile still commit.
                    Ok(ev) => match self.on_event(ev, tracker) {
                        Ok(Some(Tag::Offline)) | Err(_) => return,
                        Ok(_) => {}
                    },
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

/// `mqtt.max_packet_size` in bytes, as rumqttc counts packets.
fn max_packet_size(cfg: &Config) -> usize {
    usize::try_from(cfg.mqtt.max_packet_size.as_u64()).unwrap_or(usize::MAX)
}

/// rumqttc's own connection timeout (whole seconds, default 5 s) would cut
/// an attempt short of `mqtt.connect_timeout`: set it to at least that, so
/// the sink's own timeout is the one that applies.
fn network_options(cfg: &Config) -> NetworkOptions {
    let t = cfg.mqtt.connect_timeout;
    let secs = t.as_secs() + u64::from(t.subsec_nanos() > 0);
    let mut n = NetworkOptions::new();
    n.set_connection_timeout(secs.max(1));
    n
}

async fn wait_connack(el: &mut EventLoop) -> Result<(), ConnectionError> {
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = el.poll().await? {
            return Ok(());
        }
    }
}

/// A publish request's tag, queued in the tracker until the request is in
/// the client's channel: if the publish is abandoned first (task aborted,
/// channel closed), the tag is taken back so the FIFO stays true.
struct Queued<'a> {
    tracker: &'a Mutex<AckTracker>,
    armed: bool,
}

impl<'a> Queued<'a> {
    fn new(tracker: &'a Mutex<AckTracker>, tag: Tag) -> Self {
        lock(tracker).queue(tag);
        Queued {
            tracker,
            armed: true,
        }
    }

    fn handed_over(mut self) {
        self.armed = false;
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.armed {
            // Only the publisher queues while it runs, so its tag is the last.
            lock(self.tracker).unqueue_last();
        }
    }
}

/// Takes batches from the lane and hands them to rumqttc, in order. Runs
/// until publishing fails; returns why (never silently).
async fn publish_loop<L: Lane>(
    client: AsyncClient,
    lane: L,
    tracker: Arc<Mutex<AckTracker>>,
    cfg: Arc<Config>,
    counters: Arc<SinkCounters>,
) -> String {
    let max = cfg.mqtt.max_batch.as_usize();
    let max_bytes = usize::try_from(cfg.mqtt.max_batch_bytes.as_u64()).unwrap_or(usize::MAX);
    let max_packet = max_packet_size(&cfg);
    let gap = cfg
        .mqtt
        .backlog_rate
        .map(|r| Duration::from_secs_f64(1.0 / r));
    let mut next_backlog = tokio::time::Instant::now();
    loop {
        let batch = match lane.next_batch(max, max_bytes).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "reading the spool failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if !payload::valid_device(&batch.device) {
            counters.set_aside.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                device = ?batch.device,
                records = batch.bodies.len(),
                "a batch whose device id cannot be a topic level is set aside, never published"
            );
            lane.set_aside(batch.id, "bad device id");
            continue;
        }
        if batch.historical {
            if let Some(gap) = gap {
                tokio::time::sleep_until(next_backlog).await;
                next_backlog = tokio::time::Instant::now().max(next_backlog) + gap;
            }
        }
        let topic = payload::data_topic(&cfg.mqtt.prefix, &cfg.site, &batch.device, batch.kind);
        let body = payload::encode_batch(&cfg.site, &batch, batch.epoch);
        let size = payload::publish_packet_size(&topic, body.len());
        if size > max_packet {
            counters.set_aside.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                device = %batch.device,
                records = batch.bodies.len(),
                bytes = size,
                max = max_packet,
                "a message larger than mqtt.max_packet_size is set aside, never published"
            );
            lane.set_aside(batch.id, "too large");
            continue;
        }
        let queued = Queued::new(&tracker, Tag::Batch(batch.id));
        if let Err(e) = client.publish(topic, QoS::AtLeastOnce, false, body).await {
            return format!("handing a message to the MQTT client failed: {e}");
        }
        queued.handed_over();
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
    use crate::spool::{Batch, SpoolError};
    use rand::SeedableRng;

    fn backoff() -> Backoff {
        Backoff::new(
            BACKOFF_MIN,
            BACKOFF_MAX,
            BACKOFF_FAST_TRIES,
            BACKOFF_HEALTHY_AFTER,
        )
    }

    fn secs(d: Duration) -> f64 {
        d.as_secs_f64()
    }

    #[test]
    fn backoff_fast_first_then_grows_with_jitter_and_caps() {
        for seed in 0..50 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut b = backoff();
            let d: Vec<f64> = (0..30).map(|_| secs(b.next_delay(&mut rng))).collect();
            // The fast tries: half a second to a second each.
            for x in &d[..8] {
                assert!((0.5..=1.0).contains(x), "seed {seed}: {d:?}");
            }
            // Then doubling: 1-2 s, 2-4 s, 4-8 s...
            assert!((1.0..=2.0).contains(&d[8]), "seed {seed}: {d:?}");
            assert!((2.0..=4.0).contains(&d[9]), "seed {seed}: {d:?}");
            assert!((16.0..=32.0).contains(&d[12]), "seed {seed}: {d:?}");
            // At the cap: never more often than once a minute.
            for x in &d[13..] {
                assert!((60.0..=75.0).contains(x), "seed {seed}: {d:?}");
            }
            // Jitter: not all the same.
            assert!(
                d[..8].windows(2).any(|w| w[0] != w[1]),
                "seed {seed}: {d:?}"
            );
        }
    }

    #[test]
    fn backoff_resets_only_after_a_healthy_link() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut b = backoff();
        for _ in 0..20 {
            b.next_delay(&mut rng);
        }
        // A connection that came up and dropped at once keeps the step...
        b.connection_ended(Duration::from_secs(3));
        assert!(b.next_delay(&mut rng) >= Duration::from_secs(60));
        // ...so does a failed attempt...
        b.connection_ended(Duration::ZERO);
        assert!(b.next_delay(&mut rng) >= Duration::from_secs(60));
        // ...a link up for ten seconds starts over.
        b.connection_ended(Duration::from_secs(10));
        assert!(b.next_delay(&mut rng) <= Duration::from_secs(1));
    }

    /// Twenty broker restarts, each down for up to 3 s, 20-40 s apart: the
    /// first attempt after the broker is back comes within 5 s of the drop
    /// in every case (the issue asks for 95 %), checked over many seeds.
    #[test]
    fn backoff_catches_a_broker_restart_within_five_seconds() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut b = backoff();
        let mut late = 0;
        let mut total = 0;
        for _ in 0..200 {
            for restart in 0..20u32 {
                let down = 0.5 + f64::from(restart % 6) * 0.5; // 0.5..3 s
                let mut t = 0.0;
                loop {
                    t += secs(b.next_delay(&mut rng));
                    if t >= down {
                        break;
                    }
                    b.connection_ended(Duration::ZERO);
                }
                total += 1;
                if t > 5.0 {
                    late += 1;
                }
                // Up for 20-40 s before the next restart.
                b.connection_ended(Duration::from_secs(u64::from(20 + restart % 20)));
            }
        }
        assert_eq!(late, 0, "{late} of {total} reconnects took more than 5 s");
    }

    /// A lane fed by the test, recording what the sink did with it.
    #[derive(Clone, Default)]
    struct FakeLane(Arc<Mutex<FakeState>>);

    #[derive(Default)]
    struct FakeState {
        batches: std::collections::VecDeque<Batch>,
        set_aside: Vec<(u64, String)>,
        acked: Vec<u64>,
        nacks: usize,
    }

    impl FakeLane {
        fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
            self.0.lock().unwrap()
        }
        fn push(&self, id: u64, device: &str, bodies: &[&str]) {
            self.state().batches.push_back(Batch {
                id,
                kind: crate::model::Kind::Sample,
                device: Arc::from(device),
                epoch: 0,
                first_seq: 0,
                historical: false,
                bodies: bodies.iter().map(|b| Arc::from(*b)).collect(),
            });
        }
    }

    impl Lane for FakeLane {
        async fn next_batch(&self, _max: usize, _bytes: usize) -> Result<Batch, SpoolError> {
            loop {
                if let Some(b) = self.state().batches.pop_front() {
                    return Ok(b);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        fn ack(&self, id: u64) -> usize {
            self.state().acked.push(id);
            1
        }
        fn nack_all(&self) {
            self.state().nacks += 1;
        }
        fn set_link(&self, _up: bool) {}
        fn set_aside(&self, id: u64, reason: &str) {
            self.state().set_aside.push((id, reason.to_owned()));
        }
        fn pending(&self) -> u64 {
            self.state().batches.len() as u64
        }
    }

    /// Findings 5 and 6 in milliseconds: a batch with a device id that cannot
    /// be a topic, and one too big for a packet, are set aside and the next
    /// one is published; when the client is gone the loop says why.
    #[tokio::test]
    async fn publisher_sets_aside_what_cannot_be_sent_and_never_stops_silently() {
        let cfg = Arc::new(
            Config::from_toml(
                "site = \"s\"\n[mqtt]\nmax_packet_size = \"4 KiB\"\nmax_batch_bytes = \"1 KiB\"\n",
            )
            .unwrap(),
        );
        let lane = FakeLane::default();
        let big = format!("{{\"seq\":1,\"pad\":\"{}\"}}", "x".repeat(5000));
        lane.push(1, "ups#1", &[r#"{"seq":0}"#]);
        lane.push(2, "ups1", &[&big]);
        lane.push(3, "ups1", &[r#"{"seq":2}"#]);
        let (tx, rx) = flume::bounded(10);
        let client = AsyncClient::from_senders(tx);
        let tracker: Arc<Mutex<AckTracker>> = Arc::default();
        let counters = Arc::new(SinkCounters::default());
        let task = tokio::spawn(publish_loop(
            client,
            lane.clone(),
            tracker.clone(),
            cfg,
            counters.clone(),
        ));
        let req = tokio::time::timeout(Duration::from_secs(5), rx.recv_async())
            .await
            .expect("a publish within 5 s")
            .unwrap();
        let rumqttc::Request::Publish(p) = req else {
            panic!("not a publish: {req:?}");
        };
        assert_eq!(p.topic, "ioc/s/ups1/telemetry");
        assert!(String::from_utf8_lossy(&p.payload).contains(r#""seq":2"#));
        assert_eq!(
            lane.state().set_aside,
            vec![(1, "bad device id".to_owned()), (2, "too large".to_owned())]
        );
        assert_eq!(counters.set_aside.load(Ordering::Relaxed), 2);
        assert_eq!(lock(&tracker).sent(1), Sent::Ok);
        assert_eq!(lock(&tracker).acked(1), Acked::Tag(Tag::Batch(3)));

        // The client's channel closes (the event loop is gone).
        drop(rx);
        lane.push(4, "ups1", &[r#"{"seq":3}"#]);
        let why = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the publisher ends")
            .unwrap();
        assert!(
            why.contains("handing a message to the MQTT client failed"),
            "{why}"
        );
        assert_eq!(
            lock(&tracker).outstanding(),
            0,
            "the abandoned tag was taken back"
        );
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
