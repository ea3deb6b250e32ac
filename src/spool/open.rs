//! Opening the spool: the store, the sequence positions (from the
//! positions file, else from a spool of the first version), the epoch to
//! continue or to start, the reservations made ahead, and what to report (a
//! file moved aside, streams resumed after an unclean stop, a degraded
//! store). Runs once, before any task; it never fails on the disk's
//! account: a store that cannot be used leaves the spool degraded, not the
//! gateway stopped.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use super::commit::Store;
use super::config::SpoolConfig;
use super::db::Db;
use super::health::{io_reason, spool_error_reason, sql_reason, Degraded};
use super::positions::{self, Mark};
use super::queue::{Lane, SeqState, SEQ_BLOCK};
use super::retime::TimeState;
use super::stamp::{new_epoch, ClockCache};
use super::{
    used, Notice, Queue, Resumed, Spool, SpoolCounters, SpoolError, StartReport, STORE_RETRY,
};
use crate::clock::{Clock, KernelClock};
use crate::model::Kind;

impl Spool {
    /// Opens the spool at `cfg.path` for the named sinks. Never fails on the
    /// disk's account: a corrupt file is moved aside and replaced, and a
    /// store that cannot be opened or written leaves the spool degraded
    /// (reported by [`Spool::take_notices`]), retried every few seconds.
    pub fn open(
        cfg: &SpoolConfig,
        site: &str,
        sinks: &[&str],
    ) -> Result<(Arc<Spool>, StartReport), SpoolError> {
        Self::open_with_clock(cfg, site, sinks, Arc::new(KernelClock::new()))
    }

    /// [`Spool::open`] with the clock readings are stamped by (a test's).
    pub fn open_with_clock(
        cfg: &SpoolConfig,
        site: &str,
        sinks: &[&str],
        clock: Arc<dyn Clock>,
    ) -> Result<(Arc<Spool>, StartReport), SpoolError> {
        let path = cfg.path.to_path_buf();
        let pos_path = positions::path_for(&path);
        let mut report = StartReport::default();
        let mut notices = Vec::new();
        let counters = SpoolCounters::default();

        let file = positions::read(&pos_path);
        let mut degraded: Option<(&'static str, String)> = None;
        let mut db = match Db::open(&path) {
            Ok((db, r)) => {
                report.moved_aside = r.moved_aside;
                Some(db)
            }
            Err(e) => {
                degraded = Some(spool_error_reason(&e, &path));
                tracing::error!(spool = %path.display(), error = %e, "spool cannot be opened; readings stay in memory");
                None
            }
        };
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "sequence positions unreadable");
                if let (None, Some(io)) = (&degraded, e.io_error()) {
                    degraded = Some((io_reason(io), e.to_string()));
                }
                None
            }
        };

        // Where each stream stands, from the positions file, else from the
        // database (a spool of the first version keeps them only there).
        let mut known: Option<(u64, bool, BTreeMap<String, Mark>)> =
            file.and_then(|p| Some((positions::parse_epoch(&p.epoch)?, p.clean, p.streams)));
        let mut empty_db = true;
        if let Some(d) = db.as_mut() {
            match read_db_positions(d) {
                Ok((db_pos, rows)) => {
                    empty_db = rows == 0 && db_pos.is_none();
                    counters.disk_rows.store(rows as i64, Ordering::Relaxed);
                    if let Ok(b) = d.used_bytes() {
                        counters.disk_bytes.store(b, Ordering::Relaxed);
                    }
                    if let Ok(Some(n)) = d.meta_get("dropped") {
                        counters
                            .dropped_before
                            .store(n.max(0) as u64, Ordering::Relaxed);
                    }
                    match (&mut known, db_pos) {
                        (None, Some(p)) => known = Some(p),
                        // The database may know streams the file lost track
                        // of (never: the file is written first), or used
                        // marks from commits since the last reservation.
                        (Some((fe, _, fm)), Some((de, _, dm))) if *fe == de => {
                            for (k, m) in dm {
                                let e = fm.entry(k).or_insert(m);
                                e.reserved = e.reserved.max(m.reserved);
                                e.used = e.used.max(m.used);
                            }
                        }
                        _ => {}
                    }
                }
                Err(e) => {
                    degraded = Some(sql_reason(&e, &path));
                    db = None;
                }
            }
        }

        let used_path = used::path_for(&path);
        let prev_used = used::read_previous(&used_path);
        let boot = used::boot_id();
        let mut seqs = HashMap::new();
        let (epoch, reset) = match known {
            Some((epoch, clean, marks)) => {
                for (key, m) in &marks {
                    let Some((kind, dev)) = positions::parse_stream_key(key) else {
                        tracing::warn!(%key, "ignoring unknown sequence entry");
                        continue;
                    };
                    let mut last_used_here = None;
                    if !clean && m.reserved > 0 {
                        // Exact only from the used-marks file of the same
                        // epoch and the same boot (a crash, not a power cut).
                        let last_used = prev_used
                            .as_ref()
                            .filter(|p| p.epoch == epoch && p.boot_id == boot && !boot.is_empty())
                            .and_then(|p| p.next.get(m.slot? as usize).copied())
                            .filter(|n| *n > 0)
                            .map(|n| n - 1);
                        last_used_here = last_used;
                        report.resumed_unclean.push(Resumed {
                            device: dev.to_owned(),
                            kind,
                            at: m.reserved,
                            last_used,
                        });
                    }
                    seqs.insert(
                        (Arc::<str>::from(dev), kind),
                        SeqState {
                            next: m.reserved,
                            durable: m.reserved,
                            slot: m.slot,
                            mark: if clean {
                                m.reserved
                            } else {
                                last_used_here.map(|u| u + 1).unwrap_or(0)
                            },
                        },
                    );
                }
                (epoch, None)
            }
            None => {
                let first_start = empty_db && report.moved_aside.is_none() && degraded.is_none();
                let reason = if first_start {
                    "first start: no sequence positions yet".to_owned()
                } else if report.moved_aside.is_some() {
                    "the spool was unreadable and no sequence positions were kept beside it"
                        .to_owned()
                } else {
                    "no sequence positions could be read".to_owned()
                };
                (new_epoch(), Some((reason, first_start)))
            }
        };

        let mut store = Store {
            path: path.clone(),
            pos_path,
            db,
            degraded: None,
            next_try: Instant::now() + STORE_RETRY,
            last_age_check: None,
            age_base: None,
            age_step_seen: false,
            marks: BTreeMap::new(),
            dropped_written: counters.dropped_total(),
            correct_at: (0, 0),
            correct_failing: false,
        };
        // Reserve ahead for every known stream and mark the run unclean
        // until a clean stop says otherwise.
        for ((dev, kind), s) in seqs.iter_mut() {
            let key = positions::stream_key(*kind, dev);
            let reserved = s.next + SEQ_BLOCK;
            let slot = s.slot.or_else(|| store.free_slot());
            store.marks.insert(
                key,
                Mark {
                    reserved,
                    used: s.next as i64 - 1,
                    slot,
                },
            );
        }
        let persisted = store.write_positions(epoch, false);
        if persisted.is_ok() {
            // A spool of the first version kept positions in its database;
            // from now on the positions file is the only authority, so the
            // old copy must not outlive it.
            if let Some(d) = store.db.as_mut() {
                if let Err(e) = d.forget_positions() {
                    tracing::warn!(error = %e, "could not remove old sequence positions from the spool");
                }
            }
        }
        let (epoch, epoch_durable, reset) = match persisted {
            Ok(()) => {
                for ((dev, kind), s) in seqs.iter_mut() {
                    if let Some(m) = store.marks.get(&positions::stream_key(*kind, dev)) {
                        s.durable = m.reserved;
                        s.slot = m.slot;
                    }
                }
                (epoch, true, reset)
            }
            Err((reason, detail)) => {
                if degraded.is_none() {
                    degraded = Some((reason, detail));
                }
                // Numbers that cannot be reserved must not be reused after
                // a restart: this run counts in an epoch of its own.
                let previous = Some(epoch);
                seqs.clear();
                store.marks.clear();
                let why = match &reset {
                    Some((r, _)) => format!("{r}; the spool cannot be written"),
                    None => "the spool cannot be written, so sequence positions cannot be kept"
                        .to_owned(),
                };
                let new = new_epoch();
                notices.push(Notice::SequenceReset {
                    epoch: new,
                    previous,
                    reason: why,
                    first_start: false,
                });
                (new, false, None)
            }
        };
        if let Some((reason, first_start)) = reset {
            notices.push(Notice::SequenceReset {
                epoch,
                previous: None,
                reason,
                first_start,
            });
        }

        // The used marks belong to the epoch the positions file names: a
        // run counting in an epoch of its own (the positions could not be
        // written) leaves them to that epoch, whose next run owes exact
        // last-used numbers; it takes the file over once its own epoch is
        // on disk (the commit round that makes it durable).
        let used = if epoch_durable {
            create_used(&used_path, epoch, &boot).map(|mut u| {
                for s in seqs.values() {
                    if let Some(slot) = s.slot {
                        u.set(slot, s.mark);
                    }
                }
                u
            })
        } else {
            None
        };
        let mut lanes: Vec<Lane> = sinks.iter().map(|n| Lane::new(n)).collect();
        if let Some(d) = store.db.as_ref() {
            for lane in lanes.iter_mut() {
                for kind in [Kind::Sample, Kind::Event] {
                    match d.streams(&lane.name, kind) {
                        Ok(keys) => {
                            for k in keys {
                                lane.stream_has_rows(&k);
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "listing the backlog failed"),
                    }
                }
            }
        }
        let rows = counters.disk_rows.load(Ordering::Relaxed);
        if rows > 0 {
            tracing::info!(rows, "spool holds a backlog from before");
        }
        let mut degraded_now = None;
        if let Some((reason, detail)) = degraded {
            tracing::error!(reason, %detail, "spool degraded: readings are kept in memory only");
            notices.push(Notice::Degraded {
                reason,
                detail: detail.clone(),
            });
            degraded_now = Some((reason.to_owned(), detail.clone()));
            store.degraded = Some(Degraded {
                reason,
                since: Instant::now(),
                lost_at_start: 0,
            });
        }
        let spool = Arc::new(Spool {
            cfg: cfg.clone(),
            site: Arc::from(site),
            q: Mutex::new(Queue {
                lanes,
                seqs,
                epoch,
                epoch_durable,
                reserve_failing: !epoch_durable,
                wal_pending: Vec::new(),
                next_batch_id: 1,
                next_rid: 1,
                used,
                time: TimeState::new(clock.boot_id()),
            }),
            store: Mutex::new(Some(store)),
            store_free: Condvar::new(),
            wake: Notify::new(),
            counters,
            clock: ClockCache::new(clock),
            closed: AtomicBool::new(false),
            write_through: AtomicBool::new(false),
            progress: AtomicU64::new(0),
            notices: Mutex::new(notices),
            notice_wake: Notify::new(),
            degraded: Mutex::new(degraded_now),
        });
        Ok((spool, report))
    }
}

/// Positions kept in the database: (epoch, clean, marks) and the row count.
#[allow(clippy::type_complexity)]
fn read_db_positions(
    d: &Db,
) -> rusqlite::Result<(Option<(u64, bool, BTreeMap<String, Mark>)>, u64)> {
    let rows = d.row_count()?;
    let clean = d.meta_get("clean")? == Some(1);
    let epoch = d.meta_get("epoch")?;
    let mut marks: BTreeMap<String, Mark> = BTreeMap::new();
    for (key, value) in d.meta_all("seq/")? {
        let k = key.trim_start_matches("seq/").to_owned();
        marks
            .entry(k)
            .or_insert(Mark {
                reserved: 0,
                used: -1,
                slot: None,
            })
            .reserved = value.max(0) as u64;
    }
    for (key, value) in d.meta_all("used/")? {
        let k = key.trim_start_matches("used/").to_owned();
        if let Some(m) = marks.get_mut(&k) {
            m.used = m.used.max(value);
        }
    }
    if marks.is_empty() && epoch.is_none() {
        return Ok((None, rows));
    }
    // A spool of the first version has positions but no epoch: its numbers
    // continue in epoch 0.
    Ok((Some((epoch.unwrap_or(0) as u64, clean, marks)), rows))
}

/// Takes over the used-marks file for `epoch`; None (logged) leaves the run
/// without exact marks (a read-only card, say).
pub(super) fn create_used(
    path: &std::path::Path,
    epoch: u64,
    boot: &str,
) -> Option<used::UsedMarks> {
    match used::UsedMarks::create(path, epoch, boot) {
        Ok(u) => Some(u),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "no exact last-used marks this run");
            None
        }
    }
}
