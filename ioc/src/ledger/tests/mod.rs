//! Table tests of the ledger: a case is a list of steps (messages as the
//! gateway sends them, built with the contract's types) and the holes one
//! stream must show after them.

mod explanations;
mod transitions;

use wardgate_contract::{
    codes, ClockState, Delivered, Envelope, Epoch, Event, GatewayHealth, Kind, Message, Sample,
    Severity, Status, Values, GATEWAY_DEVICE,
};

use super::*;

pub(super) const SITE: &str = "xa-a";
pub(super) const A: Epoch = Epoch(0xa);
pub(super) const B: Epoch = Epoch(0xb);

/// One message to the ledger.
#[derive(Debug, Clone)]
pub(super) enum Step {
    /// Online status of a boot and run.
    Online(&'static str, &'static str),
    Offline,
    /// Samples of a device: epoch, numbers, historical. `ts` = seq × 1000.
    S(&'static str, Epoch, &'static [u64], bool),
    /// The gateway's telemetry (live): epoch, seq, depth, `full` count, uptime.
    Gw(Epoch, u64, u64, u64, u64),
    /// The same sent from the backlog (historical): epoch, seq, depth.
    GwBacklog(Epoch, u64, u64),
    /// A gateway event: epoch, seq, ts, code, values.
    Ev(Epoch, u64, i64, &'static str, Values),
    /// A sample with its clock state and ts: device, epoch, seq, clock, ts.
    Timed(&'static str, Epoch, u64, ClockState, i64),
}
pub(super) use Step::*;

pub(super) fn sample(seq: u64, ts: i64, clock: ClockState) -> Sample {
    let mut values = Values::new();
    values.num("ups.load", seq as f64);
    Sample {
        seq,
        ts,
        clock,
        values,
    }
}

pub(super) fn telemetry(device: &str, epoch: Epoch, samples: Vec<Delivered<Sample>>) -> Message {
    Message::Telemetry(Envelope {
        site: SITE.into(),
        device: device.into(),
        epoch,
        records: samples,
    })
}

pub(super) fn gw_event(epoch: Epoch, seq: u64, ts: i64, code: &str, values: Values) -> Message {
    // A reset is a first start (info) only when `reset_values` says so.
    let severity = match code {
        codes::SEQUENCE_RESET if values.get("first_start").is_some() => Severity::Info,
        codes::SEQUENCE_RESET => Severity::Critical,
        _ => Severity::Warning,
    };
    let mut values = values;
    values.0.remove("first_start");
    Message::Events(Envelope {
        site: SITE.into(),
        device: GATEWAY_DEVICE.into(),
        epoch,
        records: vec![Delivered {
            historical: false,
            record: Event {
                seq,
                ts,
                clock: ClockState::Synced,
                severity,
                code: code.into(),
                message: "m".into(),
                values,
            },
        }],
    })
}

/// A gateway telemetry message with these readings.
pub(super) fn gw_telemetry(
    epoch: Epoch,
    seq: u64,
    depth: u64,
    full: u64,
    uptime_s: u64,
    historical: bool,
) -> Message {
    let mut h = GatewayHealth {
        depth,
        uptime_s,
        ..GatewayHealth::default()
    };
    h.set_dropped(wardgate_contract::DropReason::Full, full);
    let record = Sample {
        seq,
        ts: seq as i64 * 1000,
        clock: ClockState::Synced,
        values: h.values(),
    };
    telemetry(
        GATEWAY_DEVICE,
        epoch,
        vec![Delivered { historical, record }],
    )
}

pub(super) fn apply(l: &mut Ledger, step: &Step) -> Applied {
    let msg = match step {
        Online(boot, run) => Message::Status(Status::Online {
            version: "0.1.0".into(),
            boot_id: (*boot).into(),
            run_id: (*run).into(),
            started: 0,
        }),
        Offline => Message::Status(Status::Offline {
            reason: wardgate_contract::OfflineReason::Lost,
        }),
        S(device, epoch, seqs, historical) => telemetry(
            device,
            *epoch,
            seqs.iter()
                .map(|s| Delivered {
                    historical: *historical,
                    record: sample(*s, *s as i64 * 1000, ClockState::Synced),
                })
                .collect(),
        ),
        GwBacklog(epoch, seq, depth) => gw_telemetry(*epoch, *seq, *depth, 0, 60, true),
        Gw(epoch, seq, depth, full, uptime_s) => {
            gw_telemetry(*epoch, *seq, *depth, *full, *uptime_s, false)
        }
        Ev(epoch, seq, ts, code, values) => gw_event(*epoch, *seq, *ts, code, values.clone()),
        Timed(device, epoch, seq, clock, ts) => telemetry(
            device,
            *epoch,
            vec![Delivered {
                historical: false,
                record: sample(*seq, *ts, *clock),
            }],
        ),
    };
    l.apply(SITE, &msg, 0)
}

pub(super) fn run(steps: &[Step]) -> Ledger {
    let mut l = Ledger::default();
    for s in steps {
        apply(&mut l, s);
    }
    l
}

/// The holes of a device's samples in an epoch: (first, last, state).
pub(super) fn holes(l: &Ledger, device: &str, epoch: Epoch) -> Vec<(u64, u64, HoleState)> {
    let key = StreamKey {
        site: SITE.into(),
        device: device.into(),
        kind: Kind::Sample,
        epoch,
    };
    l.stream(&key)
        .map(|r| {
            r.holes
                .iter()
                .map(|p| (p.range.first, p.range.last, p.state))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn vals(pairs: &[(&str, f64)]) -> Values {
    let mut v = Values::new();
    for (n, x) in pairs {
        v.num(n, *x);
    }
    v
}

/// The values of a `gateway.sequence_reset` of `epoch`.
pub(super) fn reset_values(epoch: Epoch, previous: Option<Epoch>, first_start: bool) -> Values {
    let r = wardgate_contract::SequenceReset {
        epoch,
        previous_epoch: previous,
        reason: "test".into(),
        first_start,
    };
    let mut v = r.values();
    if first_start {
        v.set("first_start", true);
    }
    v
}

pub(super) use HoleState::{Pending, Unexplained};

pub(super) fn explained(r: Reason) -> HoleState {
    HoleState::Explained(r)
}
