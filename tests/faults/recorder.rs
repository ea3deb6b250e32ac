//! What arrived: every message the broker delivered, with its arrival
//! time (the recorder, a durable subscriber), and the contract's JSON
//! Schemas each message is checked against.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

use crate::util::now_ms;

pub struct Rec {
    pub at: Instant,
    pub wall_ms: i64,
    pub topic: String,
    pub retain: bool,
    pub payload: Vec<u8>,
}

impl Rec {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.payload).ok()
    }

    pub fn is_status_online(&self) -> bool {
        !self.retain
            && self.topic.ends_with("/status")
            && self.json().is_some_and(|v| v["state"] == "online")
    }

    /// The offline status a clean stop publishes (`"reason":"shutdown"`,
    /// or `"power"`; binaries from before the reason have none): not the
    /// broker's last will (`"lost"`).
    pub fn is_status_offline_clean(&self) -> bool {
        !self.retain
            && self.topic.ends_with("/status")
            && self
                .json()
                .is_some_and(|v| v["state"] == "offline" && v["reason"] != "lost")
    }

    /// A live (not historical) sample of `device`.
    pub fn is_live(&self, device: &str) -> bool {
        self.topic.ends_with(&format!("/{device}/telemetry"))
            && contains(&self.payload, b"\"historical\":false")
    }
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A durable subscriber (clean_session = false, QoS 1) on `ioc/#` that keeps
/// every message with its arrival time. The broker's own redelivery of a
/// message to the recorder (it restarted before the recorder's PUBACK
/// reached it: same packet id, DUP set, same bytes) is the broker's copy,
/// not the gateway's: it is counted apart and not kept.
pub struct Recorder {
    pub recs: Arc<Mutex<Vec<Rec>>>,
    pub redelivered: Arc<AtomicU64>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    pub async fn start(port: u16) -> Recorder {
        let recs: Arc<Mutex<Vec<Rec>>> = Arc::default();
        let mut o = MqttOptions::new(
            format!("faults-rec-{}", rand::random::<u32>()),
            "127.0.0.1",
            port,
        );
        o.set_clean_session(false);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(64 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(o, 100);
        let subscribed = Arc::new(tokio::sync::Notify::new());
        let (r2, s2) = (recs.clone(), subscribed.clone());
        let redelivered: Arc<AtomicU64> = Arc::default();
        let redelivered2 = redelivered.clone();
        let task = tokio::spawn(async move {
            // The last message kept under each packet id.
            let mut by_pkid: HashMap<u16, usize> = HashMap::new();
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        if !ack.session_present {
                            let _ = client.try_subscribe("ioc/#", QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => s2.notify_one(),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let mut v = r2.lock().unwrap_or_else(|e| e.into_inner());
                        let again = p.dup
                            && by_pkid.get(&p.pkid).is_some_and(|&i| {
                                v[i].topic == p.topic && v[i].payload[..] == p.payload[..]
                            });
                        if again {
                            redelivered2.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        if p.pkid != 0 {
                            by_pkid.insert(p.pkid, v.len());
                        }
                        v.push(Rec {
                            at: Instant::now(),
                            wall_ms: now_ms(),
                            topic: p.topic.clone(),
                            retain: p.retain,
                            payload: p.payload.to_vec(),
                        });
                    }
                    Ok(_) => {}
                    // The broker is down or restarting: retry soon, as the
                    // reconnect figures are measured from what arrives here.
                    Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed.notified())
            .await
            .expect("recorder subscribed");
        Recorder {
            recs,
            redelivered,
            task,
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Rec>> {
        self.recs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Index of the first record from `from` on that satisfies `pred`.
    pub fn find(&self, from: usize, pred: &dyn Fn(&Rec) -> bool) -> Option<usize> {
        let v = self.lock();
        (from..v.len()).find(|&i| pred(&v[i]))
    }

    /// Polls until a record from `from` on satisfies `pred`.
    pub async fn wait_for(
        &self,
        from: usize,
        limit: Duration,
        pred: &dyn Fn(&Rec) -> bool,
    ) -> Option<usize> {
        let deadline = Instant::now() + limit;
        let mut scanned = from;
        loop {
            let n = self.len();
            if let Some(i) = self.find(scanned, pred) {
                return Some(i);
            }
            scanned = n;
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until nothing new arrived for `quiet` (at most `limit`).
    pub async fn settle(&self, quiet: Duration, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut n = self.len();
        let mut since = Instant::now();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let m = self.len();
            if m != n {
                n = m;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return;
            }
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The contract's JSON Schemas (docs/schema/), as tests/it/common/contract.rs
/// loads them.
pub struct Schemas {
    telemetry: jsonschema::Validator,
    event: jsonschema::Validator,
    status: jsonschema::Validator,
    inventory: jsonschema::Validator,
    reply: jsonschema::Validator,
}

impl Schemas {
    pub fn get() -> &'static Schemas {
        static S: std::sync::OnceLock<Schemas> = std::sync::OnceLock::new();
        S.get_or_init(|| {
            let load = |name: &str| {
                let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("docs/schema")
                    .join(name);
                let text = std::fs::read_to_string(&path).expect("schema file");
                let v: Value = serde_json::from_str(&text).expect("schema is JSON");
                jsonschema::validator_for(&v).expect("schema compiles")
            };
            Schemas {
                telemetry: load("telemetry.schema.json"),
                event: load("event.schema.json"),
                status: load("status.schema.json"),
                inventory: load("inventory.schema.json"),
                reply: load("command-reply.schema.json"),
            }
        })
    }

    /// What is wrong with one message the gateway published, if anything.
    pub fn check(&self, topic: &str, body: &Value) -> Option<String> {
        let v = if topic.ends_with("/telemetry") {
            &self.telemetry
        } else if topic.ends_with("/event") {
            &self.event
        } else if topic.ends_with("/status") {
            &self.status
        } else if topic.ends_with("/inventory") {
            &self.inventory
        } else if topic.ends_with("/reply") {
            &self.reply
        } else {
            return Some(format!("{topic}: not a topic of the contract"));
        };
        let errs: Vec<String> = v.iter_errors(body).map(|e| e.to_string()).collect();
        (!errs.is_empty()).then(|| {
            let text: String = body.to_string().chars().take(160).collect();
            format!("{topic}: {text}…: {}", errs.join("; "))
        })
    }
}
