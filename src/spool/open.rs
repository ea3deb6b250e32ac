//! Opening the spool, once, before any task: the store
//! ([`store::open`](super::store)), the sequence positions it found turned
//! into the queue's streams (resumed after a clean or an unclean stop, or a
//! new epoch), the numbers reserved ahead, and what to report (a file moved
//! aside, streams resumed after an unclean stop, a new epoch, a degraded
//! store). It never fails on the disk's account: a store that cannot be
//! used leaves the spool degraded, not the gateway stopped.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::config::SpoolConfig;
use super::positions::{self, Mark};
use super::queue::seq::{new_epoch, SEQ_BLOCK};
use super::queue::{Lane, Queue, SeqState};
use super::report::{Notice, Reporter, Resumed, SpoolCounters, StartReport};
use super::store::open::{self as store_open, Known};
use super::store::{Failure, Store};
use super::used::{self, Previous, UsedMarks};
use crate::model::Kind;

/// The streams' sequence states, by device and kind.
type Seqs = HashMap<(Arc<str>, Kind), SeqState>;

/// Why a new epoch starts: (the reason in words, whether this is the
/// gateway's first start).
type Reset = (String, bool);

/// The opened spool's parts, for the facade to hold.
pub(super) struct Opened {
    pub(super) queue: Queue,
    pub(super) store: Store,
    pub(super) report: Reporter,
    pub(super) start: StartReport,
}

/// Opens the spool of `cfg` for `lanes`; `clock_boot` is the boot the
/// spool's clock stamps readings in.
pub(super) fn open(cfg: &SpoolConfig, lanes: &[Lane], clock_boot: Arc<str>) -> Opened {
    let counters = SpoolCounters::default();
    let mut notices = Vec::new();
    let store_open::Opened {
        mut store,
        known,
        empty_db,
        moved_aside,
        mut degraded,
    } = store_open::open(&cfg.path, &counters);
    let mut start = StartReport {
        moved_aside,
        resumed_unclean: Vec::new(),
    };
    // Where each stream continues: where it stood, or in a new epoch.
    let prev_used = used::read_previous(&used::path_for(&cfg.path));
    let boot = used::boot_id();
    let (mut seqs, epoch, reset) = match known {
        Some(known) => {
            let (seqs, epoch) = resume(known, prev_used.as_ref(), &boot, &mut start);
            (seqs, epoch, None)
        }
        None => {
            let first_start = empty_db && start.moved_aside.is_none() && degraded.is_none();
            let reason = new_epoch_reason(first_start, start.moved_aside.is_some());
            (HashMap::new(), new_epoch(), Some((reason, first_start)))
        }
    };
    // Numbers reserved ahead, or an epoch of its own when they cannot be.
    let (epoch, epoch_durable, reset) = match reserve_ahead(&mut store, &mut seqs, epoch) {
        Ok(()) => (epoch, true, reset),
        Err((reason, detail)) => {
            if degraded.is_none() {
                degraded = Some((reason, detail));
            }
            let new = own_epoch(&mut store, &mut seqs, epoch, reset, &mut notices);
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
        take_over_used(&store, &seqs, epoch)
    } else {
        None
    };
    let mut queue = Queue::new(lanes, seqs, (epoch, epoch_durable), used, clock_boot);
    note_backlog(&mut queue, &store);
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
        store.health.degraded_at_start(reason);
    }
    Opened {
        queue,
        store,
        report: Reporter::new(counters, notices, degraded_now),
        start,
    }
}

/// Why a new epoch starts when no positions were found.
fn new_epoch_reason(first_start: bool, moved_aside: bool) -> String {
    if first_start {
        "first start: no sequence positions yet".to_owned()
    } else if moved_aside {
        "the spool was unreadable and no sequence positions were kept beside it".to_owned()
    } else {
        "no sequence positions could be read".to_owned()
    }
}

/// The used-marks file taken over for `epoch`, holding each stream's mark.
fn take_over_used(store: &Store, seqs: &Seqs, epoch: u64) -> Option<UsedMarks> {
    store.take_over_used(epoch).map(|mut u| {
        for s in seqs.values() {
            if let Some(slot) = s.slot {
                u.set(slot, s.mark);
            }
        }
        u
    })
}

/// Notes in each lane the backlog streams the store holds for it.
fn note_backlog(queue: &mut Queue, store: &Store) {
    if let Some(d) = store.db.as_ref() {
        queue.note_backlog(|lane, kind| match d.streams(lane.name(), kind) {
            Ok(keys) => Some(keys),
            Err(e) => {
                tracing::error!(error = %e, "listing the backlog failed");
                None
            }
        });
    }
}

/// Each known stream continues at its reserved mark. After an unclean
/// stop it is reported with the last number known to be used: exact only
/// from the used-marks file of the same epoch and the same boot (a crash,
/// not a power cut).
fn resume(
    (epoch, clean, marks): Known,
    prev_used: Option<&Previous>,
    boot: &str,
    start: &mut StartReport,
) -> (Seqs, u64) {
    let mut seqs = HashMap::new();
    for (key, m) in &marks {
        let Some((kind, dev)) = positions::parse_stream_key(key) else {
            tracing::warn!(%key, "ignoring unknown sequence entry");
            continue;
        };
        let mut last_used_here = None;
        if !clean && m.reserved > 0 {
            let last_used = prev_used
                .filter(|p| p.epoch == epoch && p.boot_id == boot && !boot.is_empty())
                .and_then(|p| p.next.get(m.slot? as usize).copied())
                .filter(|n| *n > 0)
                .map(|n| n - 1);
            last_used_here = last_used;
            start.resumed_unclean.push(Resumed {
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
    (seqs, epoch)
}

/// Reserves a block ahead for every known stream and marks the run
/// unclean until a clean stop says otherwise; once on disk, the streams
/// may send the reserved numbers.
fn reserve_ahead(store: &mut Store, seqs: &mut Seqs, epoch: u64) -> Result<(), Failure> {
    let marks = seqs
        .iter()
        .map(|((dev, kind), s)| {
            let mark = Mark {
                reserved: s.next + SEQ_BLOCK,
                used: s.next as i64 - 1,
                slot: s.slot,
            };
            (positions::stream_key(*kind, dev), mark)
        })
        .collect();
    store.reserve_ahead(epoch, marks)?;
    for ((dev, kind), s) in seqs.iter_mut() {
        if let Some(m) = store.marks().get(&positions::stream_key(*kind, dev)) {
            s.durable = m.reserved;
            s.slot = m.slot;
        }
    }
    Ok(())
}

/// The positions cannot be written: numbers that cannot be reserved must
/// not be reused after a restart, so this run counts in an epoch of its
/// own, announced. Returns it.
fn own_epoch(
    store: &mut Store,
    seqs: &mut Seqs,
    previous: u64,
    reset: Option<Reset>,
    notices: &mut Vec<Notice>,
) -> u64 {
    seqs.clear();
    store.forget_marks();
    let why = match &reset {
        Some((r, _)) => format!("{r}; the spool cannot be written"),
        None => "the spool cannot be written, so sequence positions cannot be kept".to_owned(),
    };
    let new = new_epoch();
    notices.push(Notice::SequenceReset {
        epoch: new,
        previous: Some(previous),
        reason: why,
        first_start: false,
    });
    new
}
