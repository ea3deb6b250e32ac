//! Remote operation from the operations centre: commands over MQTT
//! against the spawned binary and a real mosquitto, replies checked
//! against docs/schema/command-reply.schema.json, the retained inventory
//! against docs/schema/inventory.schema.json, and the ACL example of
//! docs/mqtt.md. Here: the operations centre's command client ([`Ioc`])
//! and the helpers every command test uses; the tests, by concern, in
//! the modules below.

mod acl;
mod config_set;
mod ops;
mod requests;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::common::*;

/// The operations centre's command client: publishes requests and records
/// every reply of this site. A reply that is not JSON, breaks
/// docs/schema/command-reply.schema.json or names another op or id than
/// its topic is recorded in `invalid` (the MQTT task must not panic: a
/// panic in a spawned task is lost), and the test fails on it from its own
/// task: as soon as it reads replies, and at the latest when the client is
/// dropped.
struct Ioc {
    client: rumqttc::AsyncClient,
    replies: Arc<Mutex<Vec<Value>>>,
    invalid: Arc<Mutex<Vec<String>>>,
    site: String,
    cancel: CancellationToken,
}

impl Drop for Ioc {
    fn drop(&mut self) {
        self.cancel.cancel();
        // Not while already panicking: a second panic aborts the binary.
        if !std::thread::panicking() {
            self.assert_replies_valid();
        }
    }
}

const FINAL: [&str; 3] = ["successful", "failed", "rejected"];

impl Ioc {
    async fn start(port: u16, site: &str, login: Option<(&str, &str)>) -> Ioc {
        use rumqttc::{AsyncClient, MqttOptions};
        let mut o = MqttOptions::new(
            format!("test-ioc-{}", rand::random::<u32>()),
            "127.0.0.1",
            port,
        );
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(16 << 20, 1 << 20);
        if let Some((u, p)) = login {
            o.set_credentials(u, p);
        }
        let (client, el) = AsyncClient::new(o, 100);
        let replies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let invalid: Arc<Mutex<Vec<String>>> = Arc::default();
        let cancel = CancellationToken::new();
        let (r, inv) = (replies.clone(), invalid.clone());
        let schemas = Schemas::load();
        let st = site.to_owned();
        run_subscribed(
            (client.clone(), el),
            format!("ioc/{site}/cmd/+/+/reply"),
            cancel.clone(),
            (WAIT, "IOC subscription"),
            move |p| {
                let body: Value = match serde_json::from_slice(&p.payload) {
                    Ok(v) => v,
                    Err(e) => {
                        let text = String::from_utf8_lossy(&p.payload);
                        inv.lock()
                            .unwrap()
                            .push(format!("{}: reply not JSON: {e}: {text}", p.topic));
                        return;
                    }
                };
                if let Some(problem) = schemas.check(&p.topic, &body) {
                    inv.lock()
                        .unwrap()
                        .push(format!("reply against the schema: {problem}"));
                }
                inv.lock()
                    .unwrap()
                    .extend(check_envelope("ioc", &st, &p.topic, None, &body));
                let mut b = body.clone();
                b["_topic"] = json!(p.topic);
                r.lock().unwrap().push(b);
            },
        )
        .await;
        Ioc {
            client,
            replies,
            invalid,
            site: site.to_owned(),
            cancel,
        }
    }

    /// Fails the test if any reply so far was invalid (see [`Ioc`]).
    fn assert_replies_valid(&self) {
        let inv = self.invalid.lock().unwrap_or_else(|e| e.into_inner());
        assert!(inv.is_empty(), "invalid command replies: {inv:#?}");
    }

    async fn send_raw(&self, op: &str, id: &str, payload: Vec<u8>, retain: bool) {
        self.client
            .publish(
                format!("ioc/{}/cmd/{op}/{id}", self.site),
                rumqttc::QoS::AtLeastOnce,
                retain,
                payload,
            )
            .await
            .unwrap();
    }

    /// A request valid for a minute.
    async fn send(&self, op: &str, id: &str, args: Value) {
        self.send_raw(op, id, request(args).into_bytes(), false)
            .await;
    }

    fn replies_of(&self, id: &str) -> Vec<Value> {
        self.assert_replies_valid();
        self.replies
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r["id"] == id)
            .cloned()
            .collect()
    }

    /// Waits for the `n`th final reply of `id` (1 = the first).
    async fn final_reply_n(&self, id: &str, n: usize) -> Value {
        let mut out = None;
        let ok = wait_for(WAIT, || {
            let f: Vec<Value> = self
                .replies_of(id)
                .into_iter()
                .filter(|r| FINAL.contains(&r["status"].as_str().unwrap_or("")))
                .collect();
            out = f.get(n - 1).cloned();
            out.is_some()
        })
        .await;
        assert!(
            ok,
            "no final reply #{n} for {id}; replies: {:?}",
            self.replies_of(id)
        );
        out.unwrap()
    }

    async fn final_reply(&self, id: &str) -> Value {
        self.final_reply_n(id, 1).await
    }

    /// The running config's hash, by `config.get`: sent again under a new
    /// id every 2 s until one is answered (a request published in the
    /// moment between "MQTT connected" and the gateway's subscription
    /// reaching the broker is not delivered to it: not retained).
    async fn running_hash(&self) -> String {
        for n in 0..30 {
            let id = format!("hash-{n}");
            self.send("config.get", &id, json!({})).await;
            let got = wait_for(Duration::from_secs(2), || {
                self.replies_of(&id)
                    .iter()
                    .any(|r| r["status"] == "successful")
            })
            .await;
            if got {
                let r = self.final_reply(&id).await;
                return r["result"]["hash"].as_str().unwrap().to_owned();
            }
        }
        panic!("config.get never answered");
    }

    fn statuses_of(&self, id: &str) -> Vec<String> {
        self.replies_of(id)
            .iter()
            .map(|r| r["status"].as_str().unwrap_or("").to_owned())
            .collect()
    }
}

fn now() -> i64 {
    wardgate::model::now_ms()
}

fn request(args: Value) -> String {
    json!({"expires": now() + 60_000, "args": args}).to_string()
}

/// Commands enabled for `allow`, the clock trusted (this machine's kernel
/// may say unsynced), no Pi health device, and `devices`.
fn cmd_config(allow: &[&str], devices: &str) -> String {
    let allow: Vec<String> = allow.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "[gateway]\nsystem_health = false\n[commands]\nallow = [{}]\ntrust_clock = true\n{devices}",
        allow.join(", ")
    )
}

async fn connected(gw: &Process, from: usize) {
    eventually(WAIT, "the gateway connected", || {
        gw.log_text()
            .get(from..)
            .is_some_and(|t| t.contains("MQTT connected"))
    })
    .await;
}

fn sha256(text: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}
