//! A witness beside wardgate-ioc: an MQTT session of its own on `ioc/#`
//! (QoS 1, persistent, so it lives through the broker's outage as the
//! ioc's does) that keeps every message, and what they say, read with the
//! contract crate alone: which numbers each stream delivered, and what
//! each gateway declared about its losses. The test's expectations come
//! from here, not from wardgate-ioc.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rumqttc::{Client, Event as MqttEvent, MqttOptions, Packet, QoS};
use wardgate_contract::{
    CorruptRecords, DropReason, Epoch, Event, GatewayHealth, Message, StreamKey, Topic,
    UncleanStop, GATEWAY_DEVICE,
};

use super::super::ingest_peers::{pause, wait_for, WAIT};

type Log = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// The witness's session; stopped (disconnected) when dropped.
pub struct Witness {
    stop: Arc<AtomicBool>,
    log: Log,
    thread: Option<JoinHandle<()>>,
}

impl Witness {
    /// Connects, subscribes and returns once the broker granted it.
    pub fn start(port: u16) -> Witness {
        let stop = Arc::new(AtomicBool::new(false));
        let log: Log = Arc::default();
        let ready = Arc::new(AtomicBool::new(false));
        let (s, l, r) = (stop.clone(), log.clone(), ready.clone());
        let thread = std::thread::spawn(move || listen(port, &s, &l, &r));
        wait_for("the witness's subscription", WAIT, || {
            ready.load(Ordering::SeqCst)
        });
        Witness {
            stop,
            log,
            thread: Some(thread),
        }
    }

    /// Messages heard so far (copies included).
    pub fn len(&self) -> usize {
        self.log.lock().expect("witness log").len()
    }

    /// What the messages heard so far say.
    pub fn heard(&self) -> Heard {
        self.heard_since(usize::MAX)
    }

    /// The same, with the sites whose gateway said it had drained its
    /// backlog (live telemetry, `spool.depth` 0) in the messages from the
    /// `mark`th on (a `len()` taken earlier).
    pub fn heard_since(&self, mark: usize) -> Heard {
        Heard::of(&self.log.lock().expect("witness log"), mark)
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn listen(port: u16, stop: &AtomicBool, log: &Log, ready: &AtomicBool) {
    let mut o = MqttOptions::new("fleet38-witness", "127.0.0.1", port);
    o.set_clean_session(false);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(16 << 20, 16 << 20);
    let (client, mut conn) = Client::new(o, 64);
    client
        .subscribe("ioc/#", QoS::AtLeastOnce)
        .expect("the witness subscribes");
    while !stop.load(Ordering::SeqCst) {
        match conn.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(MqttEvent::Incoming(Packet::Publish(p)))) => log
                .lock()
                .expect("witness log")
                .push((p.topic, p.payload.to_vec())),
            Ok(Ok(MqttEvent::Incoming(Packet::SubAck(_)))) => ready.store(true, Ordering::SeqCst),
            Ok(Ok(_)) | Err(_) => {}
            // The broker is away (the outage): rumqttc reconnects on the
            // next poll; never spin.
            Ok(Err(_)) => pause(Duration::from_millis(200)),
        }
    }
    let _ = client.disconnect();
}

/// What the witness heard, by the contract's rules.
#[derive(Debug, Default)]
pub struct Heard {
    /// The distinct numbers each stream delivered.
    pub streams: BTreeMap<StreamKey, BTreeSet<u64>>,
    /// The gateway's own events, once each: (site, epoch, seq) -> event.
    pub gateway_events: BTreeMap<(String, Epoch, u64), Event>,
    /// Per site, the highest `spool.dropped.corrupt` its telemetry said.
    pub dropped_corrupt: BTreeMap<String, u64>,
    /// Sites whose live gateway telemetry said `spool.depth` 0 since the
    /// mark.
    pub drained_since: BTreeSet<String>,
    /// Payloads the contract refuses (none expected).
    pub refused: Vec<String>,
}

impl Heard {
    fn of(log: &[(String, Vec<u8>)], mark: usize) -> Heard {
        let mut h = Heard::default();
        for (i, (topic, payload)) in log.iter().enumerate() {
            let Ok(t) = Topic::parse("ioc", topic) else {
                h.refused.push(topic.clone());
                continue;
            };
            let site = t.site().to_owned();
            match Message::decode(&t, payload) {
                Ok(Message::Telemetry(env)) => {
                    let key = stream(
                        &site,
                        &env.device,
                        wardgate_contract::Kind::Sample,
                        env.epoch,
                    );
                    let seqs = h.streams.entry(key).or_default();
                    for d in &env.records {
                        seqs.insert(d.record.seq);
                        if env.device == GATEWAY_DEVICE {
                            if let Ok(g) = GatewayHealth::from_sample(&d.record) {
                                if i >= mark && !d.historical && g.depth == 0 {
                                    h.drained_since.insert(site.clone());
                                }
                                let n = g.dropped(DropReason::Corrupt);
                                let e = h.dropped_corrupt.entry(site.clone()).or_default();
                                *e = (*e).max(n);
                            }
                        }
                    }
                }
                Ok(Message::Events(env)) => {
                    let key = stream(
                        &site,
                        &env.device,
                        wardgate_contract::Kind::Event,
                        env.epoch,
                    );
                    let seqs = h.streams.entry(key).or_default();
                    for d in &env.records {
                        seqs.insert(d.record.seq);
                        if env.device == GATEWAY_DEVICE {
                            h.gateway_events
                                .insert((site.clone(), env.epoch, d.record.seq), d.record.clone());
                        }
                    }
                }
                Ok(Message::Status(_)) => {}
                // Inventories are not typed by the contract crate.
                Err(_) if matches!(t, Topic::Inventory { .. }) => {}
                Err(e) => h.refused.push(format!("{topic}: {e}")),
            }
        }
        h
    }

    /// A site's streams and their numbers.
    pub fn site<'a>(
        &'a self,
        site: &'a str,
    ) -> impl Iterator<Item = (&'a StreamKey, &'a BTreeSet<u64>)> + 'a {
        self.streams.iter().filter(move |(k, _)| k.site == site)
    }

    /// A site's gateway events with this code, with the epoch that carried
    /// each.
    pub fn events<'a>(
        &'a self,
        site: &'a str,
        code: &'a str,
    ) -> impl Iterator<Item = (Epoch, &'a Event)> + 'a {
        self.gateway_events
            .iter()
            .filter(move |((s, _, _), e)| s == site && e.code == code)
            .map(|((_, epoch, _), e)| (*epoch, e))
    }

    /// A site's unclean stops, read, with the epoch that carried each.
    pub fn unclean_stops(&self, site: &str) -> Vec<(Epoch, UncleanStop)> {
        self.events(site, wardgate_contract::codes::UNCLEAN_STOP)
            .map(|(epoch, e)| (epoch, UncleanStop::from_event(e).expect("unclean stop")))
            .collect()
    }

    /// How many records a site's `spool.corrupt_record` events declared.
    pub fn corrupt_declared(&self, site: &str) -> u64 {
        self.events(site, wardgate_contract::codes::SPOOL_CORRUPT_RECORD)
            .map(|(_, e)| {
                CorruptRecords::from_event(e)
                    .expect("corrupt_record")
                    .records
            })
            .sum()
    }

    /// The numbers missing from a stream: below its highest, never heard.
    pub fn missing(seqs: &BTreeSet<u64>) -> BTreeSet<u64> {
        let top = seqs.last().copied().unwrap_or(0);
        (0..=top).filter(|n| !seqs.contains(n)).collect()
    }
}

fn stream(site: &str, device: &str, kind: wardgate_contract::Kind, epoch: Epoch) -> StreamKey {
    StreamKey {
        site: site.to_owned(),
        device: device.to_owned(),
        kind,
        epoch,
    }
}
