//! Remote operation from the operations centre: commands over MQTT with an
//! allow-list, replies that travel through the spool, and the retained
//! inventory.
//!
//! The path of a command: the MQTT sink subscribes to
//! `{prefix}/{site}/cmd/+/+` on every new connection and hands each request
//! to the [`Dispatcher`] over a bounded channel with `try_send` (it never
//! waits, never calls into a source). Two things drop a request there, each
//! counted in the gateway telemetry: the rate limit ([`limit`]: 10 a
//! second, bursts of 50; `commands.limited`), then a full inbox
//! (`commands.dropped`). The dispatcher, owned and spawned by the app, checks the
//! request ([`request`]), looks its id up in the replay store ([`store`]),
//! runs the op ([`ops`]) and pushes each reply into the spool as a record
//! of the reserved device [`REPLY_DEVICE`]: durable and ahead of telemetry
//! like every event. The sink publishes those records on
//! `{prefix}/{site}/cmd/{op}/{id}/reply` ([`reply_messages`]) instead of the
//! event topic. Nothing flows back from the dispatcher to the MQTT task
//! except through the spool, so no channel closes a cycle.
//!
//! What is remembered, and why only that. Replay exists so that a request
//! delivered twice (a broker's redelivery, a retained request at every
//! reconnect) does not act twice. That matters only for ops that act:
//! `identify` (no data changes, but the LED flickers in the ward for up to
//! an hour), `restart`, `config.set` ([`request::Op::remembered`]).
//! Their final replies are kept, capped ([`store::MAX_REPLIES`],
//! [`store::MAX_BYTES`]) and 7 days at most, in a file of their own beside
//! the spool, so no command ever takes room from readings. The read-only
//! ops are answered afresh each time, which is also the truer answer, and
//! rejections are never kept (nothing ran). "id reused" stays coherent
//! with this: its purpose is that nobody can claim in advance the id of a
//! command that will act, or make it answer another request; an id is
//! claimed only by a kept reply, so a read-only request or a rejected one
//! claims nothing, and an id that answered a command that acts answers no
//! other request (read-only ones included) while it is kept. Without
//! this, every request with a new id stored its reply in a table of the
//! spool's file, which counts against `spool.max_bytes`: a flood of
//! commands made the spool drop readings as `full`.
//!
//! The rooms: `request.rs` validates with this gateway's ops and rules on
//! top of the contract's (`wardgate_contract::command`: topics, envelope,
//! expiry, replies; pure), `limit.rs` is the
//! rate limit (pure), `store.rs` remembers completed ids, `ops.rs` runs
//! each op, `change.rs` is `config.set` (write,
//! restart, confirm or roll back), `policy.rs` what a remote change may
//! touch, `access.rs` whether the service may
//! write its config directory (for `config.set` and `wardgate check`),
//! `inventory.rs` builds the retained
//! inventory, `logring.rs` keeps the last log lines, `config.rs` is the
//! `[commands]` section.

pub(crate) mod access;
pub mod change;
pub(crate) mod config;
pub(crate) mod inventory;
pub(crate) mod limit;
pub mod logring;
mod ops;
pub(crate) mod request;
pub(crate) mod store;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::model::{now_ms, ClockState, Event, Reading, Severity, Values};
use crate::sink::mqtt::{RunInfo, SinkCounters};
use crate::source::DeviceHandle;
use crate::spool::{Batch, Spool};
use crate::status::StatusHub;
use request::{Fit, Op};
use store::ReplayStore;
use wardgate_contract::command::{self as contract, Reply, ReplyStatus, Target};
use wardgate_contract::topic::{valid_command_id, valid_op};

pub use crate::ids::{REPLY_CODE, REPLY_DEVICE};

/// Requests waiting for the dispatcher; more are dropped (logged).
pub const INBOX: usize = 64;

/// How often the inventory is rebuilt to see whether it changed.
const INVENTORY_EVERY: Duration = Duration::from_secs(5);

/// The `restart` command ended the gateway: `main` exits with
/// `exit::RESTART` so the service manager starts it again.
#[derive(Debug, thiserror::Error)]
#[error("restart requested by the operations centre")]
pub struct RestartRequested;

/// A request as it came off the wire.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// What the MQTT sink needs for commands and the inventory.
#[derive(Clone)]
pub struct CommandLink {
    /// Hands requests to the dispatcher (`try_send`: never waits).
    pub inbox: mpsc::Sender<Inbound>,
    /// `{prefix}/{site}/cmd/+/+`; None when `[commands] enabled = false`.
    pub filter: Option<String>,
    /// `{prefix}/{site}/inventory` and the current inventory (retained).
    pub inventory_topic: String,
    pub inventory: watch::Receiver<Vec<u8>>,
    /// The rate limit, shared by every session of the sink (a reconnect
    /// does not refill it).
    pub limiter: Arc<Mutex<limit::Limiter>>,
    /// `mqtt.prefix` and the site: the reply topics live under them.
    pub prefix: String,
    pub site: String,
}

impl crate::sink::mqtt::CommandPort for CommandLink {
    fn filter(&self) -> Option<String> {
        self.filter.clone()
    }

    fn inventory(&self) -> (String, watch::Receiver<Vec<u8>>) {
        (self.inventory_topic.clone(), self.inventory.clone())
    }

    fn hand_over(&self, topic: &str, payload: &[u8], counters: &SinkCounters) -> bool {
        CommandLink::hand_over(self, topic, payload, counters)
    }

    fn reply_messages(&self, batch: &Batch) -> Result<Vec<(String, Vec<u8>)>, String> {
        reply_messages(&self.prefix, &self.site, batch)
    }
}

impl CommandLink {
    /// Hands a message over; false when the rate limit refuses it (one
    /// more in the sink's `commands_limited`, `commands.limited`, and a
    /// warning now and then) or when the inbox is full or the dispatcher
    /// is gone (a warning and one more in `commands_dropped`,
    /// `commands.dropped`). An empty payload (a retained request cleared)
    /// takes no token: the dispatcher ignores it at once, and the IOC
    /// clearing many must not count as a flood.
    pub fn hand_over(&self, topic: &str, payload: &[u8], counters: &SinkCounters) -> bool {
        if !payload.is_empty() {
            let verdict = self
                .limiter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .check(std::time::Instant::now());
            if verdict != limit::Verdict::Take {
                let n = counters.commands_limited.fetch_add(1, Ordering::Relaxed) + 1;
                if let limit::Verdict::RefuseAndWarn(since) = verdict {
                    tracing::warn!(
                        %topic,
                        refused = since,
                        limited = n,
                        "command requests past the rate limit ({} a second, bursts of {}) dropped, no reply",
                        limit::RATE_PER_SEC,
                        limit::BURST
                    );
                }
                return false;
            }
        }
        let dropped = &counters.commands_dropped;
        match self.inbox.try_send(Inbound {
            topic: topic.to_owned(),
            payload: payload.to_vec(),
        }) {
            Ok(()) => true,
            Err(e) => {
                let n = dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(%topic, error = %e, dropped = n, "command request dropped: the dispatcher's inbox is full or closed");
                false
            }
        }
    }
}

/// Reads the spool file's own figures (blocking), as JSON.
pub type StoredStats = fn(&std::path::Path) -> Result<serde_json::Value, String>;

/// Everything the dispatcher runs commands with.
pub struct Parts {
    pub cfg: config::CommandSetup,
    /// The running config, to check a `config.set` against.
    pub changes: Arc<dyn change::ChangeCheck>,
    /// What `wardgate spool stats` says of the spool file (`spool.stats`
    /// answers with it beside the running figures); given by the app.
    pub stored_stats: StoredStats,
    pub spool: Arc<Spool>,
    pub status: StatusHub,
    /// Configured devices by id (for `poll`).
    pub devices: BTreeMap<String, DeviceHandle>,
    pub run: RunInfo,
    /// Cancelled by `restart`: the app stops cleanly and returns
    /// [`RestartRequested`].
    pub restart: CancellationToken,
}

/// Runs commands one at a time; owned by the app.
pub struct Dispatcher {
    ops: ops::Ops,
    rx: mpsc::Receiver<Inbound>,
    store: Option<Arc<ReplayStore>>,
    inventory: watch::Sender<Vec<u8>>,
    reply_device: Arc<str>,
    /// A config change this run must confirm, and by when.
    confirming: Option<(change::Pending, tokio::time::Instant)>,
    /// The digest of each request being run whose reply is kept
    /// ([`request::Op::remembered`]), by id, stored with its final reply
    /// ([`request_digest`]).
    digests: std::collections::HashMap<String, String>,
}

/// What identifies one request under its id: the op and its `args`
/// (SHA-256 of the op and the args as canonical JSON, keys sorted; the
/// first 16 bytes in hex). A broker's redelivery, or the operations centre
/// sending the same request again with a new `expires`, is the same
/// request; other args or another op under a known id are not. A payload
/// that is not JSON is digested as it is (it is rejected, never stored).
pub fn request_digest(op: &str, payload: &[u8]) -> String {
    let args = serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .map(|v| {
            v.get("args")
                .cloned()
                .unwrap_or(serde_json::Value::Null)
                .to_string()
        });
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(op.as_bytes());
    ctx.update(&[0]);
    match &args {
        Some(a) => ctx.update(a.as_bytes()),
        None => ctx.update(payload),
    }
    ctx.finish().as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The link for the sink and the dispatcher for the app. The replay store
/// is opened when the dispatcher starts (on a blocking thread).
pub fn wire(parts: Parts) -> (CommandLink, Dispatcher) {
    let (tx, rx) = mpsc::channel(INBOX);
    let prefix = parts.cfg.prefix.clone();
    let site = parts.cfg.site.clone();
    let enabled = parts.cfg.commands.enabled;
    let ops = ops::Ops::new(parts);
    let (inv_tx, inv_rx) = watch::channel(ops.inventory());
    (
        CommandLink {
            inbox: tx,
            filter: enabled.then(|| contract::request_filter(&prefix, &site)),
            inventory_topic: contract::inventory_topic(&prefix, &site),
            inventory: inv_rx,
            limiter: Arc::new(Mutex::new(limit::Limiter::new(std::time::Instant::now()))),
            prefix,
            site,
        },
        Dispatcher {
            ops,
            rx,
            store: None,
            inventory: inv_tx,
            reply_device: Arc::from(REPLY_DEVICE),
            confirming: None,
            digests: std::collections::HashMap::new(),
        },
    )
}

/// Gives the sink its command link and returns the dispatcher for the app
/// to spawn. With `[commands] enabled = false` the sink subscribes to
/// nothing; the inventory is published all the same.
pub fn attach<L: crate::sink::lane::Lane>(
    sink: crate::sink::mqtt::MqttSink<L>,
    parts: Parts,
) -> (crate::sink::mqtt::MqttSink<L>, Dispatcher) {
    let (link, d) = wire(parts);
    (sink.with_commands(Arc::new(link)), d)
}

impl Dispatcher {
    /// Handles requests until `cancel`, and keeps the inventory current.
    pub async fn run(mut self, cancel: CancellationToken) {
        let path = self.ops.spool_path();
        let store = tokio::task::spawn_blocking(move || ReplayStore::open(&path, now_ms()))
            .await
            .unwrap_or_else(|_| ReplayStore::in_memory());
        self.store = Some(Arc::new(store));
        self.resume_change().await;
        self.warn_if_config_set_cannot_write().await;
        // The inventory at once, then on the housekeeping grid.
        self.refresh_inventory();
        let mut tick = crate::tick::every(INVENTORY_EVERY);
        let mut second = crate::tick::every(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = second.tick(), if self.confirming.is_some() => self.check_change().await,
                m = self.rx.recv() => match m {
                    Some(m) => self.handle(m).await,
                    None => return,
                },
                _ = tick.tick() => self.refresh_inventory(),
            }
        }
    }

    fn refresh_inventory(&self) {
        let inv = self.ops.inventory();
        self.inventory.send_if_modified(|cur| {
            if *cur == inv {
                false
            } else {
                *cur = inv;
                true
            }
        });
    }

    async fn handle(&mut self, m: Inbound) {
        let (prefix, site) = self.ops.prefix_site();
        let t = match Target::parse(&prefix, &site, &m.topic) {
            Ok(Some(t)) => t,
            // Not a request to this gateway (the broker should never
            // deliver one): ignored.
            Ok(None) => return,
            // No reply topic can name it: logged and dropped, no reply.
            Err(e) => {
                tracing::warn!(topic = %m.topic, error = %e, "command request ignored");
                return;
            }
        };
        if m.payload.is_empty() {
            // The operations centre clearing a retained request.
            tracing::debug!(topic = %m.topic, "empty command payload (a retained request cleared); ignored");
            return;
        }
        let now = now_ms();
        let digest = request_digest(&t.op, &m.payload);
        if let Some(stored) = self.recall(&t.id, now).await {
            if stored.answers(&t.op, &digest) {
                let mut reply = stored.reply;
                tracing::info!(op = %t.op, id = %t.id, status = ?reply.status, "command id seen before: stored reply sent again, not run");
                reply.replayed = true;
                self.send(&t, &reply);
            } else {
                // Another request under an id that already answered one:
                // never run, never stored (the first one's reply stays).
                tracing::warn!(op = %t.op, id = %t.id, first_op = %stored.reply.op, "command id reused by another request: rejected");
                let reply = Reply::new(&t, ReplyStatus::Rejected, now).with_reason(format!(
                    "id reused: {:?} already answered another request (op {}); use a new id for each request",
                    t.id, stored.reply.op
                ));
                self.send(&t, &reply);
            }
            return;
        }
        let allow = self.ops.allowed();
        let trusted =
            self.ops.trust_clock() || crate::model::kernel_clock_state() == ClockState::Synced;
        let policy = request::Policy {
            allow: &allow,
            clock_trusted: trusted,
            now_ms: now,
        };
        let req = match request::validate(&t, &m.payload, &policy) {
            Ok(r) => r,
            Err(rej) => {
                // Not stored: nothing ran, the same request again gets the
                // same answer, and a rejected request cannot claim its id
                // (or fill the store) for one that comes later.
                tracing::warn!(op = %t.op, id = %t.id, reason = %rej, "command rejected");
                let reply = Reply::new(&t, ReplyStatus::Rejected, now).with_reason(rej.0);
                self.send(&t, &reply);
                return;
            }
        };
        if req.op.remembered() {
            self.digests.insert(t.id.clone(), digest);
        }
        if self.confirming.as_ref().is_some_and(|(p, _)| p.id == t.id) {
            tracing::info!(id = %t.id, "config change still being confirmed; request ignored");
            return;
        }
        tracing::info!(op = %t.op, id = %t.id, "command from the operations centre");
        self.send(&t, &Reply::new(&t, ReplyStatus::Accepted, now_ms()));
        self.send(&t, &Reply::new(&t, ReplyStatus::Executing, now_ms()));
        if let request::Args::ConfigSet(a) = &req.args {
            match self.ops.config_set(&t.id, a).await {
                Ok(_) => {
                    tracing::warn!(id = %t.id, "config changed by the operations centre: restarting into it");
                    self.ops.restart_now();
                }
                Err(e) => {
                    tracing::warn!(id = %t.id, reason = %e, "config.set refused");
                    let state = match e {
                        change::ChangeError::Refused(_) => ReplyStatus::Rejected,
                        change::ChangeError::Failed(_) => ReplyStatus::Failed,
                    };
                    let reply = Reply::new(&t, state, now_ms()).with_reason(e.to_string());
                    self.finish(&t, reply).await;
                }
            }
            return;
        }
        let outcome = self.ops.run(&req).await;
        let reply = match outcome {
            Ok(result) => Reply::new(&t, ReplyStatus::Successful, now_ms()).with_result(result),
            Err(why) => {
                tracing::warn!(op = %t.op, id = %t.id, reason = %why, "command failed");
                Reply::new(&t, ReplyStatus::Failed, now_ms()).with_reason(why)
            }
        };
        let reply = reply.fit(self.ops.max_reply());
        let restart = req.op == Op::Restart && reply.status == ReplyStatus::Successful;
        self.finish(&t, reply).await;
        if restart {
            self.ops.restart_after_reply().await;
        }
    }

    /// A config change left by the previous run: confirm it (this run has
    /// the new config), or reply that it was rolled back.
    async fn resume_change(&mut self) {
        let Some(path) = self.ops.config_path() else {
            return;
        };
        let Some(p) = change::read_pending(&path) else {
            return;
        };
        let t = Target {
            op: Op::ConfigSet.name().to_owned(),
            id: p.id.clone(),
        };
        let running = self.ops.running_hash().to_owned();
        match p.phase {
            change::Phase::Trying if running == p.new_hash => {
                // The window runs from the first start with the new config
                // (a restart does not open a new one).
                let spent = p
                    .since_first_start(&change::Start::now())
                    .unwrap_or_default();
                let left = self.ops.confirm_within().saturating_sub(spent);
                tracing::info!(id = %p.id, attempt = p.attempts, left = ?left, "running a changed config: confirming it");
                let deadline = tokio::time::Instant::now() + left;
                self.confirming = Some((p, deadline));
            }
            phase => {
                let why = match (phase, &p.reason) {
                    (change::Phase::RolledBack, Some(r)) => {
                        format!("the new config was rolled back: {r}")
                    }
                    _ => "the config running is not the one config.set wrote".to_owned(),
                };
                let reply = Reply::new(&t, ReplyStatus::Failed, now_ms())
                    .with_reason(why)
                    .with_result(
                        serde_json::json!({ "hash": running, "rejected_hash": p.new_hash }),
                    );
                self.finish(&t, reply).await;
                change::clear_pending(&path);
            }
        }
    }

    /// With `config.set` allowed, says at start (in the journal) when the
    /// service may not write its config directory, and what to run.
    async fn warn_if_config_set_cannot_write(&self) {
        if !self.ops.allowed().contains(&Op::ConfigSet) {
            return;
        }
        let Some(dir) = self
            .ops
            .config_path()
            .and_then(|p| p.parent().map(|d| d.to_path_buf()))
            .filter(|d| !d.as_os_str().is_empty())
        else {
            return;
        };
        let d = dir.clone();
        let missing = tokio::task::spawn_blocking(move || access::for_this_process(&d))
            .await
            .unwrap_or_default();
        if !missing.is_empty() {
            tracing::warn!(
                "config.set is allowed but will fail: {}",
                access::advice(&dir, &missing)
            );
        }
    }

    /// Once a second while a change is being confirmed.
    async fn check_change(&mut self) {
        let Some((p, deadline)) = self.confirming.clone() else {
            return;
        };
        let Some(path) = self.ops.config_path() else {
            return;
        };
        let t = Target {
            op: Op::ConfigSet.name().to_owned(),
            id: p.id.clone(),
        };
        match self.ops.confirmed() {
            Ok(()) => {
                self.confirming = None;
                tracing::info!(id = %p.id, "config change confirmed");
                let reply = Reply::new(&t, ReplyStatus::Successful, now_ms()).with_result(
                    serde_json::json!({ "hash": p.new_hash, "previous_hash": p.old_hash }),
                );
                self.finish(&t, reply).await;
                change::clear_pending(&path);
            }
            Err(missing) if tokio::time::Instant::now() >= deadline => {
                self.confirming = None;
                let why = format!(
                    "not confirmed within {} s: {missing}",
                    self.ops.confirm_within().as_secs()
                );
                let p2 = path.clone();
                let rolled = tokio::task::spawn_blocking(move || change::roll_back(&p2, &why))
                    .await
                    .unwrap_or(false);
                if rolled {
                    self.ops.restart_now();
                }
            }
            Err(_) => {}
        }
    }

    async fn recall(&self, id: &str, now: i64) -> Option<store::Stored> {
        let store = self.store.clone()?;
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || store.get(&id, now))
            .await
            .ok()
            .flatten()
    }

    /// Remembers the final reply of an op that changed something (with the
    /// digest of its request, when this run received it), then sends it.
    async fn finish(&mut self, t: &Target, reply: Reply) {
        let digest = self.digests.remove(&t.id);
        let keep = Op::from_name(&t.op).is_some_and(Op::remembered);
        if let Some(store) = self.store.clone().filter(|_| keep) {
            let r = reply.clone();
            let _ = tokio::task::spawn_blocking(move || store.put(&r, digest.as_deref(), now_ms()))
                .await;
        }
        self.send(t, &reply);
    }

    /// Pushes a reply into the spool (durable, ahead of telemetry).
    fn send(&self, t: &Target, reply: &Reply) {
        let mut v = Values::new();
        v.set("op", t.op.as_str());
        v.set("id", t.id.as_str());
        let r = self.ops.spool().push(
            &self.reply_device,
            Reading::Event {
                severity: Severity::Info,
                code: REPLY_CODE.to_owned(),
                message: reply.to_json(),
                values: v,
            },
        );
        if let Err(e) = r {
            tracing::error!(op = %t.op, id = %t.id, error = %e, "command reply could not be queued");
        }
    }
}

/// The messages of a batch of reply records: (topic, payload) each, in
/// order. For the MQTT sink; an error when a record is not a reply.
pub fn reply_messages(
    prefix: &str,
    site: &str,
    batch: &Batch,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    batch
        .bodies
        .iter()
        .map(|body| {
            let ev: Event = serde_json::from_str(body)
                .map_err(|e| format!("a reply record is not an event: {e}"))?;
            let word = |k: &str| match ev.values.get(k) {
                Some(crate::model::Value::Str(s)) => Ok(s.clone()),
                _ => Err(format!("a reply record has no {k}")),
            };
            let (op, id) = (word("op")?, word("id")?);
            if ev.code != REPLY_CODE || !valid_op(&op) || !valid_command_id(&id) {
                return Err(format!(
                    "a reply record names no reply topic ({op:?}, {id:?})"
                ));
            }
            Ok((
                contract::reply_topic(prefix, site, &op, &id),
                ev.message.into_bytes(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests;
