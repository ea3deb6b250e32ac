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
//!
//! The rooms: this file holds the sink's types and its reconnect loop;
//! `options.rs` builds what a connection is made with (client options,
//! credentials, TLS), `session.rs` runs one connection (the event loop, the
//! publisher task, stall detection), and `backoff.rs` paces the attempts.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::ack::AckTracker;
use super::lane::Lane;
use crate::model::{now_ms, Severity, Values};
use crate::sink::config::MqttSetup;
use crate::status::StatusHub;

mod backoff;
mod commands;
mod options;
mod session;

pub(crate) use backoff::Backoff;
use backoff::{BACKOFF_FAST_TRIES, BACKOFF_HEALTHY_AFTER, BACKOFF_MAX, BACKOFF_MIN};
pub(crate) use commands::CommandPort;

/// The name of this sink's lane in the spool.
pub(crate) const SINK_NAME: &str = crate::spool::Lane::Mqtt.name();

#[derive(Debug, thiserror::Error)]
pub(crate) enum MqttError {
    /// TLS material could not be loaded: logged and shown in the status;
    /// retried with backoff (the technician may be copying the files in).
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The password file could not be read: as for `Tls`.
    #[error("reading mqtt.password_file {0}")]
    Password(#[source] crate::host::file::FileError),
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
    /// Command requests dropped because the dispatcher's inbox was full
    /// (`commands.dropped`).
    pub commands_dropped: AtomicU64,
    /// Command requests refused by the rate limit (`commands.limited`).
    pub commands_limited: AtomicU64,
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

/// Why the gateway stops, for the offline status's `reason`: `shutdown`
/// unless the app sets another (`power`) before it stops the sink.
#[derive(Debug, Clone, Default)]
pub struct StopReason(Arc<Mutex<Option<&'static str>>>);

impl StopReason {
    pub fn set(&self, reason: &'static str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }

    pub fn get(&self) -> &'static str {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or("shutdown")
    }
}

/// How the sink raises a gateway event (app.rs passes one that records it
/// on the gateway device): severity, code, message, values.
pub(crate) type EventReport = Arc<dyn Fn(Severity, &str, &str, Values) + Send + Sync>;

pub struct MqttSink<L: Lane> {
    cfg: Arc<MqttSetup>,
    lane: L,
    status: StatusHub,
    run: RunInfo,
    counters: Arc<SinkCounters>,
    report: EventReport,
    /// Commands and the inventory, when `[commands] enabled`.
    commands: Option<Arc<dyn CommandPort>>,
    /// The offline status's reason at a clean stop.
    stop_reason: StopReason,
    /// Until when the command subscription is left out: the broker sent a
    /// packet over the incoming limit right after it (a retained request
    /// too big to read), and telemetry must not die of a command topic.
    commands_suspended: std::sync::Mutex<Option<std::time::Instant>>,
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
        cfg: Arc<MqttSetup>,
        lane: L,
        status: StatusHub,
        run: RunInfo,
        counters: Arc<SinkCounters>,
        report: EventReport,
    ) -> Self {
        lane.set_max_bytes(
            usize::try_from(cfg.mqtt.max_batch_bytes.as_u64()).unwrap_or(usize::MAX),
        );
        MqttSink {
            cfg,
            lane,
            status,
            run,
            counters,
            report,
            commands: None,
            stop_reason: StopReason::default(),
            commands_suspended: std::sync::Mutex::new(None),
        }
    }

    /// Where the app says why it stops (the offline status's `reason`).
    pub fn with_stop_reason(mut self, reason: StopReason) -> Self {
        self.stop_reason = reason;
        self
    }

    /// Subscribes to the command topics on every connection, hands requests
    /// to the dispatcher, publishes reply records on their reply topics and
    /// the retained inventory.
    pub fn with_commands(mut self, link: Arc<dyn CommandPort>) -> Self {
        self.commands = Some(link);
        self
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
                tracing::warn!("stopping while the MQTT link is down; offline status not sent");
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
                        _ = cancel.cancelled() => {
                            tracing::warn!("stopping while the MQTT link is down; offline status not sent");
                            return;
                        }
                        _ = self.alive(tokio::time::sleep(delay)) => {}
                    }
                }
            }
        }
    }

    /// Runs `f`, advancing the sink's sign of life every second meanwhile.
    async fn alive<T>(&self, f: impl Future<Output = T>) -> T {
        super::lane::beating(&self.counters.alive, f).await
    }
}
