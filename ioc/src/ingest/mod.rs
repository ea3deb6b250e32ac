//! MQTT in, through the pipeline (decode, de-duplication, the ledger), into
//! the store, then acknowledged: docs/ioc.md, "Running wardgate-ioc".
//!
//! A message is acknowledged (PUBACK) only after the ledger has taken it
//! AND the store has committed the batch it belongs to (every
//! `ingest.commit_interval` or `commit_messages` messages): a crash never
//! loses a message the broker considers delivered. What was applied but
//! not committed is lost with the process and comes again from the broker
//! (not acknowledged), applied afresh to the state of the last commit.
//! What was committed but not acknowledged comes again and is a duplicate
//! (the ledger's numbers and the saved windows say so): counted as one,
//! never as a new reading.

pub mod batch;
pub mod check;
pub mod mqtt;
pub mod ratelog;
pub mod service;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Publish};
use tokio::sync::{mpsc, watch, Notify};

use crate::config::Config;
use crate::dedup::Dedup;
use crate::ledger::{Ledger, LedgerConfig, LedgerError};
use crate::pipeline::Consumer;
use crate::store::{message_digest, Store, StoreError, KEEP_COMMITS};

pub use batch::Batch;
pub use mqtt::FromBroker;

/// Why the ingest stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The store failed: the batch was not acknowledged (the broker
    /// redelivers it); the service exits and systemd starts it again from
    /// the last commit.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The saved ledger is damaged: move the store aside.
    #[error("saved ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// A password, key or certificate file cannot be read: fix it.
    #[error("{key}: {why}")]
    Secret { key: &'static str, why: String },
}

/// Counts of the running ingest (logged; the metrics page reads them later).
#[derive(Debug, Default, Clone, Copy)]
pub struct IngestCounts {
    pub messages: u64,
    pub commits: u64,
    pub acked: u64,
    /// Not acknowledged because the connection they came on is gone (the
    /// broker sends them again) or the request channel was full.
    pub not_acked: u64,
    /// Copies the broker sent again of messages committed before.
    pub redelivered: u64,
    /// Topics outside the contract (counted, logged once a minute).
    pub foreign: u64,
    pub lines: u64,
}

/// The ledger restored from what the store saved.
pub fn restore(
    cfg: &Config,
    store: &mut dyn Store,
) -> Result<(Ledger, Batch, HashMap<u64, u64>), IngestError> {
    let loaded = tokio::task::block_in_place(|| store.load())?;
    let mut dedup = Dedup::default();
    for (k, w) in loaded.windows {
        dedup.restore_window(&k, w);
    }
    let ledger = Ledger::restore(
        LedgerConfig {
            from_zero: cfg.ingest.from_zero,
        },
        dedup,
        loaded.state,
    )?;
    tracing::info!(
        sites = ledger.state().sites.len(),
        messages = loaded.messages,
        "ledger restored from the store"
    );
    let delivered = loaded.delivered.into_iter().map(|d| (d, 0)).collect();
    let mut batch = Batch::new(&cfg.mqtt.prefix, loaded.types);
    if cfg.tsdb.is_none() {
        batch = batch.without_points();
    }
    Ok((ledger, batch, delivered))
}

/// The running ingest.
pub struct Ingest {
    pub consumer: Consumer,
    pub store: Box<dyn Store>,
    pub batch: Batch,
    pub client: AsyncClient,
    pub cfg: Config,
    /// Woken after each commit with new points (the time-series writer).
    pub wake: Arc<Notify>,
    pub counts: IngestCounts,
    generation: u64,
    /// This batch's messages: connection, message, digest.
    pending: Vec<(u64, Publish, u64)>,
    /// Digests of the messages of the last [`KEEP_COMMITS`] commits (and
    /// the commit's number): a copy with DUP set of one of them is the
    /// broker sending again a message whose acknowledgement it did not
    /// get; it is acknowledged without being applied again.
    committed: HashMap<u64, u64>,
}

impl Ingest {
    pub fn new(
        cfg: Config,
        ledger: Ledger,
        batch: Batch,
        committed: HashMap<u64, u64>,
        store: Box<dyn Store>,
        client: AsyncClient,
        wake: Arc<Notify>,
    ) -> Self {
        Ingest {
            consumer: Consumer::new(&cfg.mqtt.prefix, ledger),
            store,
            batch,
            client,
            cfg,
            wake,
            counts: IngestCounts::default(),
            generation: 0,
            pending: Vec::new(),
            committed,
        }
    }

    /// Takes what the broker side sends until `stop`; commits what is
    /// pending before it returns.
    pub async fn run(
        &mut self,
        mut rx: mpsc::Receiver<FromBroker>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), IngestError> {
        let mut tick = tokio::time::interval(self.cfg.ingest.commit_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut report = Instant::now();
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => self.take(m)?,
                    None => break,
                },
                _ = tick.tick() => self.commit()?,
                _ = stop.changed() => break,
            }
            if self.pending.len() >= self.cfg.ingest.commit_messages {
                self.commit()?;
            }
            if report.elapsed() >= Duration::from_secs(60) {
                report = Instant::now();
                let c = self.counts;
                tracing::info!(
                    c.messages,
                    c.commits,
                    c.acked,
                    c.not_acked,
                    c.redelivered,
                    c.foreign,
                    c.lines,
                    "ingest"
                );
            }
        }
        self.commit()?;
        let c = self.counts;
        tracing::info!(
            c.messages,
            c.commits,
            c.acked,
            c.not_acked,
            c.redelivered,
            c.foreign,
            c.lines,
            "ingest stopped"
        );
        Ok(())
    }

    fn take(&mut self, m: FromBroker) -> Result<(), IngestError> {
        match m {
            FromBroker::Connected {
                generation,
                session_present,
            } => {
                // Messages of the connection before are committed but not
                // acknowledged: their packet ids belong to it. The broker
                // sends them again (duplicates).
                self.commit()?;
                self.generation = generation;
                tracing::info!(session_present, "MQTT connected");
            }
            FromBroker::Down(_) => {
                // The packet ids of this connection's messages die with it:
                // commit them, acknowledge none (the broker sends them again
                // with DUP set on the next connection, and they are
                // recognised as committed).
                self.generation = 0;
                self.commit()?;
            }
            FromBroker::Publish {
                generation,
                publish,
            } => {
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                    .unwrap_or(0);
                self.counts.messages += 1;
                let digest = message_digest(publish.pkid, &publish.topic, &publish.payload);
                if publish.dup && self.committed.remove(&digest).is_some() {
                    // Committed before (a restart or a reconnect came
                    // between the commit and its acknowledgement).
                    self.counts.redelivered += 1;
                    self.pending.push((generation, publish, digest));
                    return Ok(());
                }
                if publish.dup {
                    tracing::debug!(pkid = publish.pkid, topic = %publish.topic, "a copy sent again of a message not committed: applied");
                }
                let foreign =
                    self.batch
                        .take(&mut self.consumer, &publish.topic, &publish.payload, now_ms);
                if foreign {
                    self.counts.foreign += 1;
                }
                self.pending.push((generation, publish, digest));
            }
        }
        Ok(())
    }

    /// Writes the batch in one transaction, then acknowledges its messages.
    pub fn commit(&mut self) -> Result<(), IngestError> {
        if self.pending.is_empty() && self.batch.is_empty() {
            return Ok(());
        }
        let mut c = self
            .batch
            .drain(&self.consumer.ledger, self.pending.len() as u64);
        c.delivered = self.pending.iter().map(|p| p.2).collect();
        let lines = c.lines.len() as u64;
        tokio::task::block_in_place(|| self.store.commit(&c))?;
        self.counts.commits += 1;
        let no = self.counts.commits;
        self.committed.retain(|_, at| *at + KEEP_COMMITS > no);
        for d in &c.delivered {
            self.committed.insert(*d, no);
        }
        self.counts.lines += lines;
        for (generation, p, _) in self.pending.drain(..) {
            if generation != self.generation || self.client.try_ack(&p).is_err() {
                self.counts.not_acked += 1;
            } else {
                self.counts.acked += 1;
            }
        }
        if lines > 0 {
            self.wake.notify_one();
        }
        Ok(())
    }
}

/// Device types known at start (for [`Batch::new`]).
pub type Types = BTreeMap<(String, String), String>;
