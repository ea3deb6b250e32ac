//! The durable buffer between sources and sinks, split in two:
//!
//! - the **queue** (memory, `queue/`): stamping, lanes (one per sink,
//!   named by [`Lane`]), batches, acknowledgements, priorities. Sources and
//!   sinks touch only this, under a short lock that is never held across
//!   disk I/O, so `push` and `next_batch` never wait for the SD card.
//! - the **store** (SQLite, [`db`], and the sequence files, [`positions`]
//!   and [`used`]), behind `store/`: used only by the commit task
//!   ([`Spool::run_flusher`]). Each commit round (`commit.rs`) takes its
//!   work out of the queue, does the disk work with the lock released, and
//!   gives the results back.
//!
//! Under the default `spill` policy a record goes to the sinks from memory
//! and is written to SQLite only when it was not acknowledged within
//! `spill_after`, when the sink's link is down, or when the memory queue is
//! full; under `wal` every record is committed before it is sent. A row is
//! deleted only after its sink acknowledged it; each sink has its own rows.
//!
//! When the store cannot be used (read-only or full disk, permission denied)
//! the spool is *degraded*: readings keep flowing from memory, the store is
//! tried again every few seconds, and what cannot be kept is counted.
//!
//! Sequence numbers belong to an *epoch*: a number is published only once it
//! is covered by a reservation on disk, so no `(device, kind, epoch, seq)` is
//! ever used twice. When no reservation can be made or found, a new epoch is
//! started and announced.
//!
//! The rooms: this file is the facade ([`Spool`], and [`LaneHandle`] for a
//! sink), holding the parts and delegating; it does no I/O itself.
//! `report.rs` holds what the spool tells the gateway (counters, notices,
//! stats), `error.rs` its error, `retime.rs` the correction of the time of
//! readings taken before the clock synchronised. `open.rs` runs once at
//! start; `commit.rs` is the commit round, the only place where the queue
//! and the store meet.

mod commit;
pub(crate) mod config;
pub mod db;
mod error;
mod open;
#[cfg(feature = "plant-faults")]
mod plant;
pub mod positions;
mod queue;
mod report;
mod retime;
mod store;
#[cfg(test)]
mod tests;
pub(crate) mod used;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use self::config::{SpoolConfig, SpoolPolicy};
use crate::clock::{Clock, KernelClock};
use crate::model::Reading;
use queue::Queue;
use report::{lock, Reporter};
use retime::ClockCache;
use store::StoreSlot;

pub use db::{row_checksum, valid_device_id};
pub use error::SpoolError;
pub use queue::seq::SEQ_BLOCK;
pub use queue::{Batch, Lane};
pub use report::{DropReason, Notice, Resumed, SpoolCounters, SpoolStats, StartReport};
pub use store::degraded_words;

pub struct Spool {
    cfg: SpoolConfig,
    site: Arc<str>,
    queue: Mutex<Queue>,
    store: StoreSlot,
    /// Wakes the commit task early (a reservation, a wal record, a backlog
    /// read is wanted).
    wake: Notify,
    report: Reporter,
    clock: ClockCache,
    closed: AtomicBool,
    /// Write-through asked for at run time (the UPS is on battery): every
    /// record is committed before it is sent, as under policy `wal`.
    write_through: AtomicBool,
    /// Completed commit rounds.
    progress: AtomicU64,
}

/// A handle a sink uses to take batches and acknowledge them.
#[derive(Clone)]
pub struct LaneHandle {
    spool: Arc<Spool>,
    lane: Lane,
    notify: Arc<Notify>,
}

impl Spool {
    /// Opens the spool at `cfg.path` for the sinks' `lanes`. Never fails on
    /// the disk's account: a corrupt file is moved aside and replaced, and
    /// a store that cannot be opened or written leaves the spool degraded
    /// (reported by [`Spool::take_notices`]), retried every few seconds.
    pub fn open(
        cfg: &SpoolConfig,
        site: &str,
        lanes: &[Lane],
    ) -> Result<(Arc<Spool>, StartReport), SpoolError> {
        Self::open_with_clock(cfg, site, lanes, Arc::new(KernelClock::new()))
    }

    /// [`Spool::open`] with the clock readings are stamped by (a test's).
    pub fn open_with_clock(
        cfg: &SpoolConfig,
        site: &str,
        lanes: &[Lane],
        clock: Arc<dyn Clock>,
    ) -> Result<(Arc<Spool>, StartReport), SpoolError> {
        let opened = open::open(cfg, lanes, clock.boot_id());
        let spool = Arc::new(Spool {
            cfg: cfg.clone(),
            site: Arc::from(site),
            queue: Mutex::new(opened.queue),
            store: StoreSlot::new(opened.store),
            wake: Notify::new(),
            report: opened.report,
            clock: ClockCache::new(clock),
            closed: AtomicBool::new(false),
            write_through: AtomicBool::new(false),
            progress: AtomicU64::new(0),
        });
        Ok((spool, opened.start))
    }

    pub fn site(&self) -> &str {
        &self.site
    }

    pub fn path(&self) -> &Path {
        &self.cfg.path
    }

    pub fn counters(&self) -> &SpoolCounters {
        &self.report.counters
    }

    /// The current sequence epoch.
    pub fn epoch(&self) -> u64 {
        lock(&self.queue).epoch()
    }

    /// The handle of a sink's lane, if the spool was opened with it.
    pub fn lane(self: &Arc<Self>, lane: Lane) -> Option<LaneHandle> {
        let q = lock(&self.queue);
        q.has_lane(lane).then(|| LaneHandle {
            spool: self.clone(),
            lane,
            notify: q.lane_notify(lane),
        })
    }

    /// Stamps a reading with seq, time and clock state and queues it for
    /// every sink. Never waits for the disk (the kernel's clock state is
    /// asked at most every few seconds). Returns the record's sequence
    /// number.
    pub fn push(&self, device: &Arc<str>, reading: Reading) -> Result<u64, SpoolError> {
        let mut q = lock(&self.queue);
        let now = q.see_clock(&self.clock, &self.report, &self.wake);
        let pushed = q.push(device, reading, now, self.write_through(), &self.report)?;
        drop(q);
        if pushed.wake {
            self.wake.notify_one();
        }
        Ok(pushed.seq)
    }

    /// Switches write-through on or off at run time (on while the UPS is
    /// on battery, so a power cut that follows loses nothing). Under
    /// policy `wal` it is always on.
    pub fn set_write_through(&self, on: bool) {
        let was = self.write_through.swap(on, Ordering::SeqCst);
        if was != on {
            tracing::info!(
                on,
                "spool write-through (every reading committed before it is sent)"
            );
        }
    }

    /// Whether records are committed before they are sent: policy `wal`,
    /// or write-through asked for at run time.
    pub(crate) fn write_through(&self) -> bool {
        self.cfg.policy == SpoolPolicy::Wal || self.write_through.load(Ordering::SeqCst)
    }

    /// What happened since the last call, oldest first.
    pub fn take_notices(&self) -> Vec<Notice> {
        self.report.take_notices()
    }

    /// Waits for notices and returns them.
    pub async fn next_notices(&self) -> Vec<Notice> {
        self.report.next_notices().await
    }

    /// Completed commit rounds.
    pub fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> SpoolStats {
        let (memory, epoch) = {
            let q = lock(&self.queue);
            (q.memory(), q.epoch())
        };
        let degraded = self.report.degraded();
        let counters = &self.report.counters;
        SpoolStats {
            disk_rows: counters.disk_rows.load(Ordering::Relaxed).max(0) as u64,
            disk_bytes: counters.disk_bytes.load(Ordering::Relaxed),
            memory: memory as u64,
            dropped: counters.dropped_total(),
            write_errors: counters.write_errors.load(Ordering::Relaxed),
            spilled: counters.spilled.load(Ordering::Relaxed),
            degraded: degraded.as_ref().map(|d| d.0.clone()),
            degraded_detail: degraded.map(|d| d.1),
            epoch: positions::epoch_hex(epoch),
        }
    }

    /// One commit round (`commit.rs`). Blocking; run it on a blocking
    /// thread. `all` writes every unacknowledged record in memory
    /// (shutdown).
    pub fn flush(&self, all: bool) -> Result<(), SpoolError> {
        let mut store = self.store.take();
        let round = commit::Round {
            cfg: &self.cfg,
            queue: &self.queue,
            report: &self.report,
            clock: &self.clock,
            wake: &self.wake,
        };
        let r = round.run(&mut store, all);
        self.store.put(store);
        self.progress.fetch_add(1, Ordering::Relaxed);
        r
    }

    /// The last commit at shutdown: everything unacknowledged is written,
    /// acknowledged rows deleted, exact sequence positions recorded and the
    /// spool marked clean. A store that cannot be written is reported, not
    /// an error: what it could not keep is the loss a degraded store
    /// declares.
    pub fn close(&self) -> Result<(), SpoolError> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let flushed = self.flush(true);
        let mut store = self.store.take();
        let (epoch, durable, exact) = lock(&self.queue).exact_positions();
        let mut result = flushed;
        if durable {
            if let Err(e) = store.record_clean_stop(epoch, &exact, &self.report.counters) {
                result = Err(e);
            }
        }
        let memory = self.stats().memory;
        self.store.put(store);
        match &result {
            Ok(()) => tracing::info!(
                rows = self.report.counters.disk_rows.load(Ordering::Relaxed),
                "spool closed cleanly"
            ),
            Err(e) => {
                tracing::error!(error = %e, lost = memory, "spool closed without keeping everything")
            }
        }
        result
    }

    /// Runs the commit loop until `cancel`; the caller calls [`Spool::close`]
    /// afterwards.
    pub async fn run_flusher(self: Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
        // The first round at once, then on the housekeeping grid.
        let mut tick = crate::tick::every(self.cfg.commit_interval);
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                    _ = self.wake.notified() => {}
                }
            }
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.flush(false)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "spool commit round"),
                Err(e) => tracing::error!(error = %e, "spool commit task failed"),
            }
        }
    }
}

/// A sink's side of the spool: taking batches (events, then live
/// telemetry, then the backlog the commit round read ahead), acknowledging
/// them, giving everything in flight back when the link drops, and setting
/// aside what can never be sent. Touches only the memory queue, under its
/// short lock: never waits for the disk (acknowledged rows are left for
/// the commit round to delete).
impl LaneHandle {
    pub fn spool(&self) -> &Arc<Spool> {
        &self.spool
    }

    /// Cuts this lane's batches at about `max_bytes` bytes of bodies (a
    /// single larger record goes alone). The sink says it once, when it
    /// takes its lane; batches read ahead for another bound are read again.
    pub fn set_max_bytes(&self, max_bytes: usize) {
        lock(&self.spool.queue).set_max_bytes(self.lane, max_bytes.max(1));
    }

    /// Tells the spool whether this sink can deliver. While it cannot, the
    /// next commit writes its queued records to disk.
    pub fn set_link(&self, up: bool) {
        lock(&self.spool.queue).set_link(self.lane, up);
        if up {
            self.spool.wake.notify_one();
        }
    }

    /// Waits for the next batch: events first, then live telemetry, then the
    /// disk backlog (each stream in `seq` order), within `max_records`
    /// records and the lane's byte bound ([`LaneHandle::set_max_bytes`]).
    /// Never waits for the disk: the commit task reads the backlog ahead.
    pub async fn next_batch(&self, max_records: usize) -> Result<Batch, SpoolError> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (batch, want) = lock(&self.spool.queue).next_batch(self.lane, max_records.max(1));
            if want {
                self.spool.wake.notify_one();
            }
            if let Some(b) = batch {
                return Ok(b);
            }
            notified.await;
        }
    }

    /// The sink's broker acknowledged a batch; returns how many records it held.
    /// A record taken with the clock unsynchronised and not corrected
    /// before it went is noted (`retime.rs`): the operations centre is told
    /// how to correct it once the clock syncs.
    pub fn ack(&self, batch_id: u64) -> usize {
        let n = lock(&self.spool.queue).ack(self.lane, batch_id);
        if n > 0 {
            self.spool
                .report
                .counters
                .acked
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        n
    }

    /// The link went down: nothing in flight will be acknowledged. Memory
    /// records go back to the front of their queues (those already on disk
    /// are left to the backlog), and the backlog is read again from the
    /// start of each stream, in `seq` order.
    pub fn nack_all(&self) {
        lock(&self.spool.queue).nack_all(self.lane);
    }

    /// Sets a batch aside for good: its records are never sent, counted as
    /// dropped (`too_large`, or `corrupt` for any other reason), and each
    /// reported in a `spool.quarantined` notice. For records the broker can
    /// never take.
    pub fn set_aside(&self, batch_id: u64, reason: &str) {
        let Some(out) = lock(&self.spool.queue).set_aside(self.lane, batch_id) else {
            return;
        };
        // A record that cannot be sent is either too large for the broker
        // or carries a device id no topic can (damage the checksum missed).
        let why = if reason.contains("large") {
            DropReason::TooLarge
        } else {
            DropReason::Corrupt
        };
        let report = &self.spool.report;
        report.count_drop(why, out.len() as u64);
        for (device, kind, seq, bytes) in out {
            tracing::error!(%device, ?kind, seq, bytes, reason, "record set aside: it can never be sent");
            report.notice(Notice::Quarantined {
                device,
                kind,
                seq,
                bytes,
                reason: reason.to_owned(),
            });
        }
    }

    /// Records of this sink not yet acknowledged (memory and disk; see
    /// the queue's `pending` for which disk rows count).
    pub fn pending(&self) -> u64 {
        lock(&self.spool.queue).pending(self.lane, &self.spool.report.counters)
    }
}
