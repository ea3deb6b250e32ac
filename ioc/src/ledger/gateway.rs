//! What the gateway says about itself, taken into a site's state: its
//! status (online, offline, which boot and run), its telemetry (backlog
//! depth, drop counters) and its events (resets, unclean stops, spool
//! losses, clock corrections). Read with the contract's readers; a report
//! they refuse is counted as a contract break and explains nothing.

use wardgate_contract::{
    codes, ClockCorrection, CorruptRecords, Degraded, Delivered, Event, GatewayHealth, Kind,
    Quarantined, Restored, Sample, SequenceReset, Status, StreamKey, UncleanStop, GATEWAY_DEVICE,
};

use super::counters::{self, CounterReading};
use super::state::{
    Backlog, CorrectionSeen, QuarantineSeen, ResetSeen, RunInfo, SiteState, StopKind, StopSeen,
    StreamId, Window,
};
use super::{Change, GatewayRecord};

/// A status: online (which run) or offline. A new run's backlog is
/// unknown until its first live telemetry.
pub(crate) fn status(site: &mut SiteState, status: &Status) {
    match status {
        Status::Online {
            boot_id, run_id, ..
        } => {
            let new_run = site.run.as_ref().is_none_or(|r| r.run_id != *run_id);
            if new_run {
                site.previous_boot = site.run.take().map(|r| r.boot_id);
                site.run = Some(RunInfo {
                    boot_id: boot_id.clone(),
                    run_id: run_id.clone(),
                });
                site.backlog = None;
            }
            site.online = Some(true);
        }
        Status::Offline { .. } => {
            site.online = Some(false);
            site.backlog = None;
        }
    }
}

impl GatewayRecord for Sample {
    /// The gateway's telemetry: its drop counters always; its backlog when
    /// it is the newest live reading. `spool.depth` = 0 while the site is
    /// online settles every hole of the reading's epoch: no backlog can
    /// fill them any more.
    fn gateway(
        site: &mut SiteState,
        key: &StreamKey,
        d: &Delivered<Self>,
        _changes: &mut Vec<Change>,
    ) -> bool {
        let health = match GatewayHealth::from_sample(&d.record) {
            Ok(h) => h,
            Err(_) => {
                site.totals.contract_breaks += 1;
                return false;
            }
        };
        let order = site.epoch_order(key.epoch);
        let before = counters::totals(&site.counters);
        counters::insert(
            &mut site.counters,
            CounterReading::new(order, d.record.seq, &health),
        );
        let mut dirty = counters::totals(&site.counters) != before;
        let id = StreamId {
            device: GATEWAY_DEVICE.to_owned(),
            kind: Kind::Sample,
            epoch: key.epoch,
        };
        let newest = site.streams.get(&id).and_then(|s| s.highest) == Some(d.record.seq);
        if !d.historical && newest {
            site.backlog = Some(Backlog {
                epoch: key.epoch,
                depth: health.depth,
            });
            if health.depth == 0 && site.online == Some(true) {
                for (_, st) in site
                    .streams
                    .iter_mut()
                    .filter(|(sid, _)| sid.epoch == key.epoch)
                {
                    dirty |= st.settle();
                }
            }
        }
        dirty
    }
}

impl GatewayRecord for Event {
    fn gateway(
        site: &mut SiteState,
        key: &StreamKey,
        d: &Delivered<Self>,
        changes: &mut Vec<Change>,
    ) -> bool {
        let ev = &d.record;
        let read = match ev.code.as_str() {
            codes::SEQUENCE_RESET => SequenceReset::from_event(ev).map(|r| reset(site, r)),
            codes::UNCLEAN_STOP => UncleanStop::from_event(ev).map(|u| unclean(site, key, u)),
            codes::SPOOL_QUARANTINED => Quarantined::from_event(ev).map(|q| {
                site.quarantined.push(QuarantineSeen {
                    stream: StreamId {
                        device: q.device,
                        kind: q.kind,
                        epoch: key.epoch,
                    },
                    seq: q.seq,
                });
                true
            }),
            codes::SPOOL_CORRUPT_RECORD => CorruptRecords::from_event(ev).map(|c| {
                site.corrupt_events = site.corrupt_events.saturating_add(c.records);
                true
            }),
            codes::SPOOL_DEGRADED => Degraded::from_event(ev).map(|_| {
                degraded(&mut site.degraded, ev.ts);
                true
            }),
            codes::SPOOL_RESTORED => Restored::from_event(ev).map(|r| {
                restored(&mut site.degraded, ev.ts);
                site.restored_lost = site.restored_lost.saturating_add(r.lost);
                true
            }),
            codes::CLOCK_CORRECTED => match ClockCorrection::from_event(&key.site, ev) {
                Ok(c) => {
                    site.corrections.push(CorrectionSeen {
                        stream: StreamId {
                            device: c.stream.device.clone(),
                            kind: c.stream.kind,
                            epoch: c.stream.epoch,
                        },
                        range: c.range,
                        count: c.count,
                        offset_ms: c.offset_ms,
                    });
                    changes.push(Change::Correction(c));
                    Ok(false)
                }
                Err(_) => {
                    site.totals.contract_breaks += 1;
                    Ok(false)
                }
            },
            _ => Ok(false),
        };
        read.unwrap_or_else(|_| {
            site.totals.contract_breaks += 1;
            false
        })
    }
}

/// A new epoch. Without `previous_epoch` (and not a first start) the
/// positions were lost with the card: the epoch the site was live in
/// before is closed, its backlog gone.
fn reset(site: &mut SiteState, r: SequenceReset) -> bool {
    if site.reset_of(r.epoch).is_some() {
        return false;
    }
    site.epoch_order(r.epoch);
    let closes = if r.first_start || r.previous_epoch.is_some() {
        None
    } else {
        site.live_epochs.iter().find(|e| **e != r.epoch).copied()
    };
    site.resets.push(ResetSeen {
        epoch: r.epoch,
        previous_epoch: r.previous_epoch,
        first_start: r.first_start,
        closes,
    });
    true
}

/// An unclean stop, each stream with the epoch that carried it.
fn unclean(site: &mut SiteState, key: &StreamKey, u: UncleanStop) -> bool {
    let boots = (
        site.previous_boot.as_deref(),
        site.run.as_ref().map(|r| r.boot_id.as_str()),
    );
    let power_cut = matches!(boots, (Some(a), Some(b)) if a != b);
    for s in u.streams {
        let stop = match (s.last_used, power_cut) {
            (Some(_), _) => StopKind::Crash,
            (None, true) => StopKind::PowerCut,
            (None, false) => StopKind::Unknown,
        };
        site.stops.push(StopSeen {
            carried: key.epoch,
            device: s.device,
            kind: s.kind,
            resumed: s.resumed,
            last_used: s.last_used,
            stop,
        });
    }
    true
}

/// `spool.degraded` at `ts`: closes the start of a window whose end came
/// first, or opens one.
fn degraded(windows: &mut Vec<Window>, ts: i64) {
    match windows
        .iter_mut()
        .find(|w| w.from_ts.is_none() && w.to_ts.is_some_and(|t| t >= ts))
    {
        Some(w) => w.from_ts = Some(ts),
        None => windows.push(Window {
            from_ts: Some(ts),
            to_ts: None,
        }),
    }
}

/// `spool.restored` at `ts`: ends the latest open window begun before it.
fn restored(windows: &mut Vec<Window>, ts: i64) {
    match windows
        .iter_mut()
        .rev()
        .find(|w| w.to_ts.is_none() && w.from_ts.is_none_or(|f| f <= ts))
    {
        Some(w) => w.to_ts = Some(ts),
        None => windows.push(Window {
            from_ts: None,
            to_ts: Some(ts),
        }),
    }
}
