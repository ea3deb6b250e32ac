//! One connection to the broker: connect, the birth message, the publisher
//! task, the event loop that ties PUBACKs to batches, stall detection, and
//! the clean goodbye. Publishing runs in its own task and never in the task
//! that polls rumqttc's event loop (a full request channel would deadlock
//! it); a batch is acknowledged to the spool only on its PUBACK, and when
//! the connection ends everything in flight goes back to the spool.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Outgoing, Packet, QoS,
};
use tokio_util::sync::CancellationToken;

use super::options::{max_packet_size, network_options};
use super::{lock, MqttSink, SessionEnd, SinkCounters};
use crate::model::{now_ms, Kind, Values};
use crate::sink::ack::{AckTracker, Acked, Sent, Tag};
use crate::sink::config::MqttSetup;
use crate::sink::lane::Lane;
use crate::sink::payload;

impl<L: Lane> MqttSink<L> {
    /// One connection: connect, announce (birth, command subscription),
    /// then publish and follow acknowledgements until it ends.
    pub(super) async fn session(&self, cancel: &CancellationToken) -> SessionEnd {
        let (client, mut el) = match self.connect(cancel).await {
            Ok(c) => c,
            Err(end) => return end,
        };
        let up_since = Instant::now();
        let tracker: Arc<Mutex<AckTracker>> = Arc::default();
        let status_topic = payload::status_topic(&self.cfg.mqtt.prefix, &self.cfg.site);
        let subscribed = match self.announce(&client, &tracker, &status_topic) {
            Ok(s) => s,
            Err(error) => {
                return self.end(SessionEnd::Failed {
                    error,
                    up: Duration::ZERO,
                })
            }
        };
        let publisher = tokio::spawn(publish_loop(
            client.clone(),
            self.lane.clone(),
            tracker.clone(),
            self.cfg.clone(),
            self.counters.clone(),
            self.commands.clone(),
        ));
        let end = self
            .follow(
                cancel,
                &client,
                &mut el,
                &tracker,
                publisher,
                &status_topic,
                subscribed.as_deref(),
                up_since,
            )
            .await;
        let lost = lock(&tracker).connection_lost();
        if !lost.is_empty() {
            tracing::debug!(
                batches = lost.len(),
                "unacknowledged batches go back to the spool"
            );
        }
        self.end(end)
    }

    /// Connects and waits for the broker's CONNACK (within
    /// `mqtt.connect_timeout`); marks the link up.
    async fn connect(
        &self,
        cancel: &CancellationToken,
    ) -> Result<(AsyncClient, EventLoop), SessionEnd> {
        let failed = |error: String| SessionEnd::Failed {
            error,
            up: Duration::ZERO,
        };
        self.status.update(|s| s.uplink.attempts += 1);
        let opts = self.options().map_err(|e| failed(e.to_string()))?;
        let (client, mut el) = AsyncClient::new(opts, 64);
        el.set_network_options(network_options(&self.cfg));
        let connect =
            tokio::time::timeout(self.cfg.mqtt.connect_timeout.get(), wait_connack(&mut el));
        let connected = tokio::select! {
            _ = cancel.cancelled() => {
                tracing::warn!("stopping before the broker answered; offline status not sent");
                return Err(SessionEnd::Cancelled);
            }
            r = self.alive(connect) => r,
        };
        match connected {
            Err(_) => return Err(failed("timed out waiting for the broker's CONNACK".into())),
            Ok(Err(e)) => return Err(failed(describe(&e, &self.cfg))),
            Ok(Ok(())) => {}
        }
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
        Ok((client, el))
    }

    /// Queues the retained birth message and subscribes to the command
    /// topics; the subscription's filter when there is one.
    fn announce(
        &self,
        client: &AsyncClient,
        tracker: &Mutex<AckTracker>,
        status_topic: &str,
    ) -> Result<Option<String>, String> {
        let birth = payload::status_online(
            &self.run.version,
            &self.run.boot_id,
            &self.run.run_id,
            self.run.started_ms,
        );
        lock(tracker).queue(Tag::Birth);
        client
            .try_publish(status_topic, QoS::AtLeastOnce, true, birth)
            .map_err(|e| format!("queueing the birth message: {e}"))?;
        // rumqttc does not restore subscriptions, and with a clean session
        // neither does the broker: subscribe on every connection (unless a
        // request too big to read suspended it, below).
        let filter = self
            .commands
            .as_ref()
            .and_then(|l| l.filter())
            .filter(|_| !self.commands_suspended_now());
        if let Some(filter) = &filter {
            client
                .try_subscribe(filter.clone(), QoS::AtLeastOnce)
                .map_err(|e| format!("subscribing to commands: {e}"))?;
        }
        Ok(filter)
    }

    /// Polls the connection until it ends: acknowledgements to the
    /// tracker, requests to the dispatcher, a stall or a dead publisher
    /// ends it; a stop says goodbye.
    #[allow(clippy::too_many_arguments)]
    async fn follow(
        &self,
        cancel: &CancellationToken,
        client: &AsyncClient,
        el: &mut EventLoop,
        tracker: &Arc<Mutex<AckTracker>>,
        mut publisher: tokio::task::JoinHandle<String>,
        status_topic: &str,
        subscribed: Option<&str>,
        up_since: Instant,
    ) -> SessionEnd {
        let failed_up = |error: String| SessionEnd::Failed {
            error,
            up: up_since.elapsed(),
        };
        let mut tick = crate::tick::every(Duration::from_secs(1));
        // When delivery last moved: connected, a batch acknowledged, or
        // nothing pending.
        let mut moved = Instant::now();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    publisher.abort();
                    let _ = (&mut publisher).await;
                    self.goodbye(client, el, tracker, status_topic).await;
                    return SessionEnd::Cancelled;
                }
                r = &mut publisher => {
                    let error = match r {
                        Ok(error) => error,
                        Err(e) => format!("the MQTT publisher task failed: {e}"),
                    };
                    tracing::error!(%error, "MQTT publishing stopped; ending the connection");
                    return failed_up(error);
                }
                _ = tick.tick() => {
                    self.counters.alive.fetch_add(1, Ordering::Relaxed);
                    let pending = self.lane.pending();
                    if pending == 0 {
                        moved = Instant::now();
                        self.unstalled();
                    } else if moved.elapsed() >= self.cfg.mqtt.stall_timeout.get() {
                        publisher.abort();
                        return failed_up(self.stalled(pending, moved.elapsed()));
                    }
                }
                ev = el.poll() => match ev {
                    Ok(ev) => match self.on_event(ev, tracker) {
                        Ok(Some(Tag::Batch(_))) => {
                            moved = Instant::now();
                            self.unstalled();
                        }
                        Ok(_) => {}
                        Err(error) => {
                            publisher.abort();
                            tracing::error!(%error, "MQTT acknowledgements cannot be tied to messages; ending the connection");
                            return failed_up(error);
                        }
                    },
                    Err(e) => {
                        publisher.abort();
                        if let (Some(size), Some(filter)) = (oversized(&e), subscribed) {
                            self.suspend_commands(size, filter);
                        }
                        return failed_up(describe(&e, &self.cfg));
                    }
                },
            }
        }
    }

    fn commands_suspended_now(&self) -> bool {
        let mut s = self
            .commands_suspended
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match *s {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                *s = None;
                tracing::info!("subscribing to commands again after a request too big to read");
                false
            }
            None => false,
        }
    }

    /// The broker sent more than the incoming limit on a connection that
    /// subscribed to commands: almost surely a retained request bigger than
    /// the broker should allow. Without the subscription the next
    /// connections carry telemetry; it is tried again after
    /// [`COMMANDS_SUSPENDED_FOR`].
    fn suspend_commands(&self, size: usize, filter: &str) {
        *self
            .commands_suspended
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + COMMANDS_SUSPENDED_FOR);
        tracing::error!(
            size,
            limit = super::options::max_incoming_packet(&self.cfg),
            topics = filter,
            "the broker sent a packet larger than the gateway reads, after the command subscription: \
             most likely a retained request on these topics; commands are not read for {} min (telemetry goes on). \
             Find it with `mosquitto_sub -v --retained-only -t '{filter}'`, remove it with \
             `mosquitto_pub -r -n -t <topic>`, and set the broker's packet limit at or below the gateway's (docs/mqtt.md)",
            COMMANDS_SUSPENDED_FOR.as_secs() / 60
        );
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
            let ev = crate::events::MQTT_STALLED;
            let msg = ev.render(&[("secs", &secs), ("pending", &pending)]);
            (self.report)(ev.severity, ev.code, &msg, v);
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
            // A command request: handed to the dispatcher, never run here.
            Event::Incoming(Packet::Publish(p)) => {
                if let Some(link) = &self.commands {
                    link.hand_over(&p.topic, &p.payload, &self.counters);
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Clean stop: the offline status (retained; `reason` as the app set
    /// it: `shutdown`, or `power`), acknowledged, then DISCONNECT.
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
                payload::status_offline(self.stop_reason.get()),
            )
            .is_err()
        {
            lock(tracker).unqueue_last();
            tracing::warn!(
                "MQTT disconnected; offline status not sent: the client's queue is full (broker not acknowledging)"
            );
            return;
        }
        // Whether the broker acknowledged the offline status.
        let wait = async {
            loop {
                match el.poll().await {
                    // Data acks that arrive meanwhile still commit.
                    Ok(ev) => match self.on_event(ev, tracker) {
                        Ok(Some(Tag::Offline)) => return true,
                        Err(_) => return false,
                        Ok(_) => {}
                    },
                    Err(_) => return false,
                }
            }
        };
        let sent = tokio::time::timeout(Duration::from_secs(3), wait)
            .await
            .unwrap_or(false);
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while el.poll().await.is_ok() {}
        })
        .await;
        if sent {
            tracing::info!("MQTT disconnected (offline status sent)");
        } else {
            tracing::warn!(
                "MQTT disconnected; offline status not sent: the broker did not acknowledge it within 3 s"
            );
        }
    }
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
    cfg: Arc<MqttSetup>,
    counters: Arc<SinkCounters>,
    port: Option<Arc<dyn super::CommandPort>>,
) -> String {
    let mut inventory = port.as_ref().map(|p| p.inventory());
    let max = cfg.mqtt.max_batch.as_usize();
    let max_packet = max_packet_size(&cfg);
    let gap = cfg.mqtt.backlog_rate.map(|r| r.gap());
    let mut next_backlog = tokio::time::Instant::now();
    // The inventory, retained: once on every connection, then on change.
    // Published here, by the one task that queues while the session runs,
    // so the tracker's order stays true.
    if let Some((topic, rx)) = &mut inventory {
        let body = rx.borrow_and_update().clone();
        if let Err(e) = publish_inventory(&client, &tracker, topic, body, max_packet).await {
            return e;
        }
    }
    loop {
        // next_batch takes a batch only when it returns: safe to drop
        // while it waits for one.
        let changed = match &mut inventory {
            Some((_, rx)) => tokio::select! {
                b = lane.next_batch(max) => Err(b),
                r = rx.changed() => Ok(r.is_ok()),
            },
            None => Err(lane.next_batch(max).await),
        };
        let batch = match changed {
            Err(b) => b,
            Ok(true) => {
                if let Some((topic, rx)) = &mut inventory {
                    let body = rx.borrow_and_update().clone();
                    if let Err(e) =
                        publish_inventory(&client, &tracker, topic, body, max_packet).await
                    {
                        return e;
                    }
                }
                continue;
            }
            // The dispatcher is gone (stopping): no more inventory.
            Ok(false) => {
                inventory = None;
                continue;
            }
        };
        let batch = match batch {
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
        if &*batch.device == crate::ids::REPLY_DEVICE && batch.kind == Kind::Event {
            if let Err(e) = publish_replies(
                &client,
                &lane,
                &tracker,
                &cfg,
                &counters,
                port.as_deref(),
                &batch,
            )
            .await
            {
                return e;
            }
            continue;
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

/// The retained inventory, unless it is too large for a packet (then it is
/// left out with a warning: rumqttc would end the connection over it).
async fn publish_inventory(
    client: &AsyncClient,
    tracker: &Mutex<AckTracker>,
    topic: &str,
    body: Vec<u8>,
    max_packet: usize,
) -> Result<(), String> {
    let size = payload::publish_packet_size(topic, body.len());
    if size > max_packet {
        tracing::warn!(
            bytes = size,
            max = max_packet,
            "the inventory is larger than mqtt.max_packet_size; not published"
        );
        return Ok(());
    }
    publish_tagged(client, tracker, Tag::Inventory, topic, true, body).await
}

/// Hands one publish to the client under `tag`; the error says why not.
async fn publish_tagged(
    client: &AsyncClient,
    tracker: &Mutex<AckTracker>,
    tag: Tag,
    topic: &str,
    retain: bool,
    body: Vec<u8>,
) -> Result<(), String> {
    let queued = Queued::new(tracker, tag);
    if let Err(e) = client.publish(topic, QoS::AtLeastOnce, retain, body).await {
        return Err(format!("handing a message to the MQTT client failed: {e}"));
    }
    queued.handed_over();
    Ok(())
}

/// A batch of command replies: one message per reply on its reply topic;
/// the batch is committed on the last one's PUBACK. A batch that names no
/// reply topic, or a reply too large for a packet, is set aside.
async fn publish_replies<L: Lane>(
    client: &AsyncClient,
    lane: &L,
    tracker: &Mutex<AckTracker>,
    cfg: &MqttSetup,
    counters: &SinkCounters,
    port: Option<&dyn super::CommandPort>,
    batch: &crate::spool::Batch,
) -> Result<(), String> {
    let msgs = match port.map(|p| p.reply_messages(batch)) {
        Some(m) => m,
        None => Err("no command port: replies cannot be addressed".into()),
    };
    let msgs = match msgs {
        Ok(m) => m,
        Err(e) => {
            counters.set_aside.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "command replies set aside, never published");
            lane.set_aside(batch.id, "malformed command reply");
            return Ok(());
        }
    };
    let max_packet = max_packet_size(cfg);
    if msgs
        .iter()
        .any(|(t, b)| payload::publish_packet_size(t, b.len()) > max_packet)
    {
        counters.set_aside.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            max = max_packet,
            "a command reply larger than mqtt.max_packet_size is set aside, never published"
        );
        lane.set_aside(batch.id, "too large");
        return Ok(());
    }
    let n = msgs.len();
    for (i, (topic, body)) in msgs.into_iter().enumerate() {
        let tag = if i + 1 == n {
            Tag::Batch(batch.id)
        } else {
            Tag::Part
        };
        publish_tagged(client, tracker, tag, &topic, false, body).await?;
    }
    Ok(())
}

/// How long the command subscription is left out after a packet too big
/// to read came with it.
const COMMANDS_SUSPENDED_FOR: Duration = Duration::from_secs(600);

/// The size of an incoming packet over the limit, if that ended the
/// connection.
fn oversized(e: &ConnectionError) -> Option<usize> {
    match e {
        ConnectionError::MqttState(rumqttc::StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(n),
        )) => Some(*n),
        _ => None,
    }
}

/// A connection error in words a technician can act on.
fn describe(e: &ConnectionError, cfg: &MqttSetup) -> String {
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
        e if oversized(e).is_some() => format!(
            "broker {broker} sent a packet of {} bytes, more than the gateway reads ({})",
            oversized(e).unwrap_or_default(),
            super::options::max_incoming_packet(cfg)
        ),
        other => format!("MQTT connection to {broker}: {other}"),
    }
}

#[cfg(test)]
mod tests;
