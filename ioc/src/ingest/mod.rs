//! MQTT in, through the pipeline (decode, de-duplication, the ledger) and
//! the fleet view, into the store, then acknowledged: docs/ioc.md,
//! "Running wardgate-ioc". The pages and `/metrics` read the same ledger
//! and fleet view ([`SharedView`]).
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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Publish};
use tokio::sync::{mpsc, watch, Notify};

use crate::config::Config;
use crate::dedup::Dedup;
use crate::fleet::{Fleet, FleetConfig, Monitor};
use crate::history::Tracker;
use crate::ledger::{Ledger, LedgerConfig, LedgerError};
use crate::metrics::ServiceCounts;
use crate::store::{message_digest, Store, StoreError, KEEP_COMMITS};
use crate::web::SharedView;

pub use batch::{Batch, Taken};
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
    /// The pages' address cannot be listened on (taken by another
    /// process, not an address of this host): change `web.listen` or stop
    /// the other process; the service does not start without its pages.
    #[error("web.listen {addr}: {source}")]
    Web {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Where the ingest resumes: a batch knowing the device types, the
/// digests of the last commits' messages, and the points waiting in the
/// outbox.
pub struct Resume {
    pub batch: Batch,
    pub committed: HashMap<u64, u64>,
    pub outbox: u64,
}

/// The ledger and the fleet view (in a [`Monitor`]) restored from what the
/// store saved, and where the ingest resumes.
pub fn restore(cfg: &Config, store: &mut dyn Store) -> Result<(Monitor, Resume), IngestError> {
    let (loaded, outbox) =
        tokio::task::block_in_place(|| Ok::<_, StoreError>((store.load()?, store.outbox_len()?)))?;
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
    for (site, why) in &loaded.fleet_unreadable {
        tracing::warn!(%site, %why, "the saved fleet view of this site cannot be read: it starts afresh");
    }
    let fleet = Fleet::restore(FleetConfig::default(), loaded.fleet);
    tracing::info!(
        sites = ledger.state().sites.len(),
        fleet_sites = fleet.len(),
        messages = loaded.messages,
        outbox,
        "ledger and fleet view restored from the store"
    );
    let committed = loaded.delivered.into_iter().map(|d| (d, 0)).collect();
    let totals = ledger
        .state()
        .sites
        .iter()
        .map(|(site, s)| (site.clone(), s.totals))
        .collect();
    let tracker = Tracker::new(cfg.report.track(), loaded.history, totals);
    let mut batch = Batch::new(loaded.types).with_history(tracker);
    if cfg.tsdb.is_none() {
        batch = batch.without_points();
    }
    let monitor = Monitor::new(&cfg.mqtt.prefix, ledger, fleet);
    Ok((
        monitor,
        Resume {
            batch,
            committed,
            outbox,
        },
    ))
}

/// The running ingest.
pub struct Ingest {
    /// The ledger and the fleet view, shared with the pages: written one
    /// message at a time, never locked across a store write.
    pub view: Arc<SharedView>,
    pub store: Box<dyn Store>,
    pub batch: Batch,
    pub client: AsyncClient,
    pub cfg: Config,
    /// Woken after each commit with new points (the time-series writer).
    pub wake: Arc<Notify>,
    pub counts: Arc<ServiceCounts>,
    generation: u64,
    /// This batch's messages: connection, message, digest.
    pending: Vec<(u64, Publish, u64)>,
    /// Committed messages whose acknowledgement did not fit in the
    /// client's request channel yet (a burst: the event loop hands out the
    /// messages it read before it takes requests), in the order received:
    /// PUBACKs go out in that order (MQTT 3.1.1, 4.6), at the next tick.
    acks: VecDeque<(u64, Publish)>,
    /// Digests of the messages of the last [`KEEP_COMMITS`] commits (and
    /// the commit's number): a copy with DUP set of one of them is the
    /// broker sending again a message whose acknowledgement it did not
    /// get; it is acknowledged without being applied again.
    committed: HashMap<u64, u64>,
    /// Commits made by this process.
    commit_no: u64,
}

impl Ingest {
    pub fn new(
        cfg: Config,
        view: Arc<SharedView>,
        resume: Resume,
        store: Box<dyn Store>,
        client: AsyncClient,
        wake: Arc<Notify>,
        counts: Arc<ServiceCounts>,
    ) -> Self {
        Ingest {
            view,
            store,
            batch: resume.batch,
            client,
            cfg,
            wake,
            counts,
            generation: 0,
            pending: Vec::new(),
            acks: VecDeque::new(),
            committed: resume.committed,
            commit_no: 0,
        }
    }

    /// Takes what the broker side sends until `stop`; commits what is
    /// pending before it returns. The fleet view's clock moves once a
    /// second (devices turn silent); what that changes is saved with the
    /// next commit.
    pub async fn run(
        &mut self,
        mut rx: mpsc::Receiver<FromBroker>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), IngestError> {
        let mut tick = tokio::time::interval(self.cfg.ingest.commit_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut fleet_tick = tokio::time::interval(Duration::from_secs(1));
        fleet_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut report = Instant::now();
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => self.take(m)?,
                    None => break,
                },
                _ = tick.tick() => self.commit()?,
                _ = fleet_tick.tick() => {
                    let changed = self.view.tick();
                    self.batch.touch(changed);
                }
                _ = stop.changed() => break,
            }
            if self.pending.len() >= self.cfg.ingest.commit_messages {
                self.commit()?;
            }
            if report.elapsed() >= Duration::from_secs(60) {
                report = Instant::now();
                self.log("ingest");
            }
        }
        self.commit()?;
        // Acknowledgements still waiting for room: a second at most (the
        // broker sends what is left again, and it is known as committed).
        for _ in 0..20 {
            if self.acks.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.send_acks();
        }
        self.log("ingest stopped");
        Ok(())
    }

    fn log(&self, what: &str) {
        let c = &*self.counts;
        tracing::info!(
            messages = c.received.load(Relaxed),
            commits = c.commits.load(Relaxed),
            acked = c.acknowledged.load(Relaxed),
            not_acked = c.not_acknowledged.load(Relaxed),
            redelivered = c.redelivered.load(Relaxed),
            malformed = c.malformed.load(Relaxed),
            foreign = c.foreign.load(Relaxed),
            lines = c.points_queued.load(Relaxed),
            "{what}"
        );
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
                ServiceCounts::add(&self.counts.received, 1);
                let digest = message_digest(publish.pkid, &publish.topic, &publish.payload);
                if publish.dup && self.committed.remove(&digest).is_some() {
                    // Committed before (a restart or a reconnect came
                    // between the commit and its acknowledgement).
                    ServiceCounts::add(&self.counts.redelivered, 1);
                    self.pending.push((generation, publish, digest));
                    return Ok(());
                }
                if publish.dup {
                    tracing::debug!(pkid = publish.pkid, topic = %publish.topic, "a copy sent again of a message not committed: applied");
                }
                let now_ms = self.view.now_ms();
                let taken = {
                    // One message's hold of the lock: the pages wait no
                    // longer than that.
                    let mut m = self.view.write();
                    self.batch
                        .take(&mut m, &publish.topic, &publish.payload, now_ms)
                };
                match taken {
                    Taken::Applied => {}
                    Taken::Malformed => ServiceCounts::add(&self.counts.malformed, 1),
                    Taken::Foreign => ServiceCounts::add(&self.counts.foreign, 1),
                }
                self.pending.push((generation, publish, digest));
            }
        }
        Ok(())
    }

    /// Writes the batch in one transaction, then acknowledges its messages.
    pub fn commit(&mut self) -> Result<(), IngestError> {
        self.send_acks();
        if self.pending.is_empty() && self.batch.is_empty() {
            return Ok(());
        }
        let mut c = {
            // The touched sites' states are copied under the read lock;
            // the store writes them after it is released.
            let m = self.view.read();
            self.batch.drain(&m, self.pending.len() as u64)
        };
        c.delivered = self.pending.iter().map(|p| p.2).collect();
        let lines = c.lines.len() as u64;
        // Counted in the outbox before the rows exist: the writer cannot
        // take them out of the gauge before they were put in.
        ServiceCounts::add(&self.counts.outbox, lines);
        if let Err(e) = tokio::task::block_in_place(|| self.store.commit(&c)) {
            self.counts.outbox_down(lines);
            return Err(e.into());
        }
        self.commit_no += 1;
        ServiceCounts::add(&self.counts.commits, 1);
        ServiceCounts::add(&self.counts.committed, c.messages);
        ServiceCounts::add(&self.counts.points_queued, lines);
        let no = self.commit_no;
        self.committed.retain(|_, at| *at + KEEP_COMMITS > no);
        for d in &c.delivered {
            self.committed.insert(*d, no);
        }
        self.acks.extend(
            self.pending
                .drain(..)
                .map(|(generation, p, _)| (generation, p)),
        );
        self.send_acks();
        if lines > 0 {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Hands the committed messages' acknowledgements to the client, in
    /// order, as far as its request channel takes them (never waits). One
    /// of a connection that is gone is dropped: its packet id died with
    /// it, and the broker sends the message again.
    fn send_acks(&mut self) {
        while let Some((generation, p)) = self.acks.front() {
            if *generation != self.generation {
                ServiceCounts::add(&self.counts.not_acknowledged, 1);
            } else if self.client.try_ack(p).is_ok() {
                ServiceCounts::add(&self.counts.acknowledged, 1);
            } else {
                // Full: the rest wait for the next tick, in order.
                return;
            }
            self.acks.pop_front();
        }
    }
}

/// Device types known at start (for [`Batch::new`]).
pub type Types = BTreeMap<(String, String), String>;
