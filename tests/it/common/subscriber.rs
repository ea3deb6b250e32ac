//! The test subscriber: a durable MQTT client on the test's site that
//! records every message and checks each against the contract
//! (contract.rs), failing the test when dropped if one broke it; and the
//! client loop it and the tests' other MQTT clients run.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{check_envelope, eventually, is_request_topic, test_site, within, Schemas, WAIT};

/// A message a subscriber received.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    /// MQTT 3.1.1 meaning: true only for a retained message delivered
    /// because the subscriber (re)subscribed, false for a live one.
    pub retain: bool,
    pub body: Value,
}

/// A durable subscriber on `{prefix}/{site}/#` that records every message
/// and checks each against the contract: the JSON Schemas in docs/schema/,
/// the topic's shape, `site` and `device` in the payload against the
/// topic, and the retain flag as the gateway published it (status
/// retained, everything else not). The retain flag a 3.1.1 subscriber sees
/// on a live message is always false, so a second, MQTT 5 client with
/// retain-as-published checks it on every live message.
///
/// The check cannot be skipped: when the subscriber is dropped (at the end
/// of the test that started it, whether or not the test read anything), it
/// fails the test if any message broke the contract, listing them.
/// [`Subscriber::assert_all_valid`] checks the same earlier, at a point the
/// test chooses. The one way out is [`Subscriber::expect_invalid`], for a
/// test that breaks the contract on purpose.
pub struct Subscriber {
    pub msgs: Arc<Mutex<Vec<Msg>>>,
    pub invalid: Arc<Mutex<Vec<String>>>,
    cancel: CancellationToken,
    /// Set by [`Subscriber::expect_invalid`]: the drop check is off.
    invalid_expected: bool,
}

impl Subscriber {
    /// Subscribes on this test's site ([`test_site`]); returns once the
    /// broker confirmed both subscriptions, so start it before the gateway.
    pub async fn start(port: u16, prefix: &str) -> Subscriber {
        Self::start_site(port, prefix, &test_site()).await
    }

    pub async fn start_site(port: u16, prefix: &str, site: &str) -> Subscriber {
        Self::start_login(port, prefix, site, None).await
    }

    /// As [`Subscriber::start_site`], logging in with a user name and password.
    pub async fn start_login(
        port: u16,
        prefix: &str,
        site: &str,
        login: Option<(&str, &str)>,
    ) -> Subscriber {
        use rumqttc::{AsyncClient, MqttOptions};
        let msgs: Arc<Mutex<Vec<Msg>>> = Arc::default();
        let invalid: Arc<Mutex<Vec<String>>> = Arc::default();
        let cancel = CancellationToken::new();
        let id = format!("test-sub-{}", rand::random::<u32>());
        let mut o = MqttOptions::new(id.clone(), "127.0.0.1", port);
        o.set_clean_session(false);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(16 << 20, 1 << 20);
        if let Some((user, pass)) = login {
            o.set_credentials(user, pass);
        }
        let (client, el) = AsyncClient::new(o, 100);
        let (m, inv) = (msgs.clone(), invalid.clone());
        let (pfx, st) = (prefix.to_owned(), site.to_owned());
        let schemas = Schemas::load();
        run_subscribed(
            (client, el),
            format!("{prefix}/{site}/#"),
            cancel.clone(),
            (Duration::from_secs(10), "subscription"),
            move |p| {
                if is_request_topic(&p.topic) {
                    m.lock().unwrap().push(Msg {
                        topic: p.topic.clone(),
                        retain: p.retain,
                        body: serde_json::from_slice(&p.payload).unwrap_or(Value::Null),
                    });
                    return;
                }
                let body: Value = match serde_json::from_slice(&p.payload) {
                    Ok(v) => v,
                    Err(e) => {
                        inv.lock()
                            .unwrap()
                            .push(format!("{}: not JSON: {e}", p.topic));
                        return;
                    }
                };
                if let Some(problem) = schemas.check(&p.topic, &body) {
                    inv.lock().unwrap().push(problem);
                }
                inv.lock()
                    .unwrap()
                    .extend(check_envelope(&pfx, &st, &p.topic, None, &body));
                m.lock().unwrap().push(Msg {
                    topic: p.topic.clone(),
                    retain: p.retain,
                    body,
                });
            },
        )
        .await;
        retain_checker(
            port,
            prefix,
            site,
            login,
            &id,
            invalid.clone(),
            cancel.clone(),
        )
        .await;
        Subscriber {
            msgs,
            invalid,
            cancel,
            invalid_expected: false,
        }
    }

    /// For a test that publishes messages breaking the contract on purpose
    /// (to see this subscriber catch them) and reads [`Subscriber::invalid`]
    /// itself: turns off the check on drop. [`Subscriber::assert_all_valid`]
    /// still checks when called. Not for quieting a gateway that breaks
    /// the contract: that is a bug to fix.
    pub fn expect_invalid(mut self) -> Subscriber {
        self.invalid_expected = true;
        self
    }

    pub fn all(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }

    /// Every sample received for a device, in arrival order, with the
    /// message index and whether it was historical.
    pub fn samples(&self, device: &str) -> Vec<(usize, Value)> {
        self.records(device, "telemetry", "samples")
    }

    pub fn events(&self, device: &str) -> Vec<(usize, Value)> {
        self.records(device, "event", "events")
    }

    fn records(&self, device: &str, leaf: &str, array: &str) -> Vec<(usize, Value)> {
        let suffix = format!("/{device}/{leaf}");
        let mut out = Vec::new();
        for (i, m) in self.all().iter().enumerate() {
            if m.topic.ends_with(&suffix) {
                if let Some(a) = m.body[array].as_array() {
                    for r in a {
                        out.push((i, r.clone()));
                    }
                }
            }
        }
        out
    }

    /// Distinct sample seqs of a device.
    pub fn seqs(&self, device: &str) -> std::collections::BTreeSet<u64> {
        self.samples(device)
            .iter()
            .filter_map(|(_, s)| s["seq"].as_u64())
            .collect()
    }

    pub fn assert_all_valid(&self) {
        let inv = self.invalid.lock().unwrap();
        assert!(inv.is_empty(), "messages that break the contract: {inv:#?}");
    }

    pub fn statuses(&self) -> Vec<Msg> {
        self.all()
            .into_iter()
            .filter(|m| m.topic.ends_with("/status"))
            .collect()
    }

    /// Waits until an offline status arrived at or after message `from`
    /// (the shutdown status of a clean stop, or the last will the broker
    /// publishes when the gateway was killed). The broker passes a client's
    /// messages on in the order it got them, and the offline status comes
    /// after everything the gateway sent: once it is here, everything the
    /// broker acknowledged before the stop has reached this subscriber.
    /// (Not for a stop with a hung broker: no offline status comes then.)
    pub async fn offline_after(&self, from: usize) {
        eventually(WAIT, "the offline status after the stop", || {
            self.all()
                .iter()
                .skip(from)
                .any(|m| m.topic.ends_with("/status") && m.body["state"] == "offline")
        })
        .await;
    }
}

/// Runs an MQTT 3.1.1 client (its `client` and event loop) until `cancel`:
/// subscribes to `filter` (QoS 1) at every connection, hands each message
/// to `on_publish`, and sleeps 100 ms after an error (rumqttc reconnects on
/// the next poll). Returns once the broker confirmed the first
/// subscription; fails the test if that takes longer than `confirm_within.0`
/// (`confirm_within.1` names the subscription).
pub async fn run_subscribed(
    (client, mut el): (rumqttc::AsyncClient, rumqttc::EventLoop),
    filter: String,
    cancel: CancellationToken,
    confirm_within: (Duration, &str),
    mut on_publish: impl FnMut(rumqttc::Publish) + Send + 'static,
) {
    use rumqttc::{Event, Packet, QoS};
    let subscribed = Arc::new(tokio::sync::Notify::new());
    let sub2 = subscribed.clone();
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => return,
                ev = el.poll() => ev,
            };
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => sub2.notify_one(),
                Ok(Event::Incoming(Packet::Publish(p))) => on_publish(p),
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    within(confirm_within.0, confirm_within.1, subscribed.notified()).await;
}

/// An MQTT 5 client on the same topics with retain-as-published and no
/// retained copies on subscribe: sees the retain flag of every live message
/// as the gateway set it, and reports a wrong one.
async fn retain_checker(
    port: u16,
    prefix: &str,
    site: &str,
    login: Option<(&str, &str)>,
    id: &str,
    invalid: Arc<Mutex<Vec<String>>>,
    cancel: CancellationToken,
) {
    use rumqttc::v5::mqttbytes::v5::{Filter, Packet, RetainForwardRule};
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let mut o = MqttOptions::new(format!("{id}-retain"), "127.0.0.1", port);
    // A durable session: survives broker restarts (the broker persists it).
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(3600));
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(Some(16 << 20));
    if let Some((user, pass)) = login {
        o.set_credentials(user, pass);
    }
    let (client, mut el) = AsyncClient::new(o, 100);
    let mut filter = Filter::new(format!("{prefix}/{site}/#"), QoS::AtLeastOnce);
    filter.preserve_retain = true;
    filter.retain_forward_rule = RetainForwardRule::Never;
    let subscribed = Arc::new(tokio::sync::Notify::new());
    let sub2 = subscribed.clone();
    let (prefix, site) = (prefix.to_owned(), site.to_owned());
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => return,
                ev = el.poll() => ev,
            };
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe_many([filter.clone()]);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => sub2.notify_one(),
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    let body: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    let bad: Vec<String> =
                        check_envelope(&prefix, &site, &topic, Some(p.retain), &body)
                            .into_iter()
                            .filter(|b| b.contains("retained"))
                            .collect();
                    invalid.lock().unwrap().extend(bad);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    within(
        Duration::from_secs(10),
        "retain-checking subscription",
        subscribed.notified(),
    )
    .await;
}

impl Drop for Subscriber {
    /// Stops both clients, then fails the test if any message broke the
    /// contract (not while the thread is already panicking: a second panic
    /// would abort the whole test binary and hide the first failure).
    fn drop(&mut self) {
        self.cancel.cancel();
        if self.invalid_expected || std::thread::panicking() {
            return;
        }
        let inv = self.invalid.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            inv.is_empty(),
            "messages that break the contract (checked as the subscriber was dropped): {inv:#?}"
        );
    }
}
