//! What each op does: identify, poll, status, spool.stats, log.tail,
//! config.get and restart. Each returns its `result` or why it failed.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::inventory::{self, ConfigFile};
use super::request::{Args, Op, Request};
use super::{logring, Parts};
use crate::model::now_ms;
use crate::spool::Spool;

/// How long `poll` waits for the device's reading.
const POLL_WAIT: Duration = Duration::from_secs(20);
/// How long `restart` waits for its reply to be acknowledged before it
/// stops (the reply is in the spool either way).
const RESTART_REPLY_WAIT: Duration = Duration::from_secs(3);

pub(super) struct Ops {
    p: Parts,
    file: ConfigFile,
}

impl Ops {
    pub(super) fn new(p: Parts) -> Ops {
        let file = ConfigFile::read(p.cfg.file.as_deref());
        Ops { p, file }
    }

    pub(super) fn spool(&self) -> &std::sync::Arc<Spool> {
        &self.p.spool
    }

    pub(super) fn spool_path(&self) -> PathBuf {
        self.p.cfg.spool_path.clone()
    }

    pub(super) fn prefix_site(&self) -> (String, String) {
        (self.p.cfg.prefix.clone(), self.p.cfg.site.clone())
    }

    pub(super) fn allowed(&self) -> Vec<Op> {
        self.p.cfg.commands.allowed()
    }

    /// The largest reply that fits in a message (`mqtt.max_packet_size`
    /// less room for the topic and header).
    pub(super) fn max_reply(&self) -> usize {
        usize::try_from(self.p.cfg.max_packet_size)
            .unwrap_or(usize::MAX)
            .saturating_sub(1024)
    }

    pub(super) fn trust_clock(&self) -> bool {
        self.p.cfg.commands.trust_clock
    }

    pub(super) fn inventory(&self) -> Vec<u8> {
        inventory::build(&self.p.cfg, &self.p.run, &self.file, &self.p.status.get())
    }

    pub(super) async fn run(&self, req: &Request) -> Result<Value, String> {
        match &req.args {
            Args::Identify { seconds } => {
                self.p.status.identify_remote(Duration::from_secs(*seconds));
                tracing::info!(
                    seconds,
                    "identify requested by the operations centre: LED flickers"
                );
                Ok(json!({ "seconds": seconds, "until": now_ms() + (*seconds as i64) * 1000 }))
            }
            Args::Poll { device } => self.poll(device).await,
            Args::Status => serde_json::to_value(self.p.status.get()).map_err(|e| e.to_string()),
            Args::SpoolStats => {
                let running =
                    serde_json::to_value(self.p.spool.stats()).map_err(|e| e.to_string())?;
                let path = self.spool_path();
                let read = self.p.stored_stats;
                let stored = tokio::task::spawn_blocking(move || read(&path))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(match stored {
                    Ok(s) => json!({ "running": running, "store": s }),
                    Err(e) => json!({ "running": running, "store": null, "store_error": e }),
                })
            }
            Args::LogTail { lines, level } => {
                let l = logring::ring().tail(*lines, *level);
                Ok(json!({ "lines": l }))
            }
            Args::ConfigGet => Ok(self.file.result()),
            Args::Restart => Ok(json!({ "restarting": true })),
            // Run by the dispatcher itself (it restarts the gateway).
            Args::ConfigSet(_) => Err("config.set is run by the dispatcher".into()),
        }
    }

    async fn poll(&self, device: &str) -> Result<Value, String> {
        let Some(h) = self.p.devices.get(device) else {
            let known: Vec<&str> = self.p.devices.keys().map(String::as_str).collect();
            return Err(format!(
                "no device {device:?} on this gateway (devices: {})",
                known.join(", ")
            ));
        };
        let mut rx = self.p.status.subscribe();
        let before = rx
            .borrow_and_update()
            .devices
            .get(device)
            .map(|d| d.samples)
            .unwrap_or(0);
        h.request_poll();
        let wait = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if let Some(d) = s.devices.get(device) {
                        if d.samples > before {
                            return Ok(json!({
                                "device": device,
                                "ts": d.last_seen_ms,
                                "values": d.last_values,
                            }));
                        }
                    }
                }
                if rx.changed().await.is_err() {
                    return Err("the gateway is stopping".to_owned());
                }
            }
        };
        match tokio::time::timeout(POLL_WAIT, wait).await {
            Ok(r) => r,
            Err(_) => {
                let health = self
                    .p
                    .status
                    .get()
                    .devices
                    .get(device)
                    .map(|d| d.health.to_string())
                    .unwrap_or_default();
                Err(format!(
                    "device {device} gave no reading within {} s ({health})",
                    POLL_WAIT.as_secs()
                ))
            }
        }
    }

    pub(super) fn config_path(&self) -> Option<PathBuf> {
        self.p.cfg.file.clone()
    }

    pub(super) fn running_hash(&self) -> &str {
        &self.file.hash
    }

    pub(super) fn confirm_within(&self) -> Duration {
        self.p.cfg.commands.confirm_within.get()
    }

    /// Checks and writes a new config (on a blocking thread).
    pub(super) async fn config_set(
        &self,
        id: &str,
        a: &super::change::SetArgs,
    ) -> Result<super::change::Pending, super::change::ChangeError> {
        let (cfg, hash, id, a) = (
            self.p.changes.clone(),
            self.file.hash.clone(),
            id.to_owned(),
            a.clone(),
        );
        tokio::task::spawn_blocking(move || super::change::apply(&*cfg, &hash, &id, &a))
            .await
            .map_err(|e| super::change::ChangeError::Failed(e.to_string()))?
    }

    /// Whether the run with a new config has what it must: the broker and a
    /// reading from every device. Err: what is missing, in words.
    pub(super) fn confirmed(&self) -> Result<(), String> {
        let s = self.p.status.get();
        let mut missing = Vec::new();
        if !s.uplink.connected {
            missing.push(format!(
                "no connection to the broker{}",
                s.uplink
                    .last_error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
        }
        let silent: Vec<String> = self
            .p
            .cfg
            .devices
            .iter()
            .map(|d| d.id.clone())
            .filter(|id| s.devices.get(id).is_none_or(|d| d.samples == 0))
            .collect();
        if !silent.is_empty() {
            missing.push(format!("no reading from {}", silent.join(", ")));
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing.join("; "))
        }
    }

    /// Stops the gateway now for a restart (config.set).
    pub(super) fn restart_now(&self) {
        self.p.restart.cancel();
    }

    /// After `restart`'s reply was queued: waits briefly for the uplink to
    /// take it, then stops the gateway.
    pub(super) async fn restart_after_reply(&self) {
        if let Some(lane) = self.p.spool.lane(crate::spool::Lane::Mqtt) {
            let deadline = tokio::time::Instant::now() + RESTART_REPLY_WAIT;
            while lane.pending() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        tracing::info!("restart requested by the operations centre: stopping cleanly");
        self.p.restart.cancel();
    }
}
