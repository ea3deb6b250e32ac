use super::*;
use crate::model::ClockState;

fn event(code: &str, severity: Severity, values: Values) -> Event {
    Event {
        seq: 3,
        ts: 1_795_832_190_039,
        clock: ClockState::Synced,
        severity,
        code: code.into(),
        message: "m".into(),
        values,
    }
}

fn r(first: u64, last: u64) -> Option<SeqRange> {
    Some(SeqRange { first, last })
}

#[test]
fn unclean_stop_explains_the_numbers_below_the_resume_point() {
    let s = |last_used| ResumedStream {
        device: "ups1".into(),
        kind: Kind::Sample,
        resumed: 1000,
        last_used,
    };
    // (last_used, highest received below resumed, lost, unused)
    #[allow(clippy::type_complexity)]
    let cases: &[(Option<u64>, Option<u64>, Option<SeqRange>, Option<SeqRange>)] = &[
        // A crash: up to last_used lost, after it never used.
        (Some(950), Some(940), r(941, 950), r(951, 999)),
        (Some(950), None, r(0, 950), r(951, 999)),
        // Everything used was received: the rest is unused.
        (Some(950), Some(950), None, r(951, 999)),
        (Some(940), Some(950), None, r(951, 999)),
        // The last used number is the one before the resume point.
        (Some(999), Some(990), r(991, 999), None),
        // A power cut: lost or unused, cannot be told apart.
        (None, Some(940), r(941, 999), None),
        (None, None, r(0, 999), None),
        // Nothing between.
        (None, Some(999), None, None),
        (Some(10), Some(1200), None, None),
    ];
    for (last_used, highest, lost, unused) in cases {
        let got = s(*last_used).explains(*highest);
        assert_eq!(
            (got.lost, got.unused),
            (*lost, *unused),
            "{last_used:?} {highest:?}"
        );
    }
    let at_zero = ResumedStream {
        resumed: 0,
        ..s(None)
    };
    assert_eq!(at_zero.explains(None), StopExplains::default());
}

#[test]
fn unclean_stop_reads_and_writes_its_values() {
    let stop = UncleanStop {
        streams: vec![
            ResumedStream {
                device: "gateway".into(),
                kind: Kind::Sample,
                resumed: 64,
                last_used: None,
            },
            ResumedStream {
                device: "ups-1".into(),
                kind: Kind::Event,
                resumed: 128,
                last_used: Some(100),
            },
        ],
    };
    let ev = event(codes::UNCLEAN_STOP, Severity::Warning, stop.values());
    assert_eq!(UncleanStop::from_event(&ev), Ok(stop));
    let names: Vec<&String> = ev.values.0.keys().collect();
    assert_eq!(
        names,
        [
            "seq_last_used.ups-1.events",
            "seq_resumed.gateway.samples",
            "seq_resumed.ups-1.events"
        ]
    );
}

#[test]
fn broken_gateway_events_are_errors() {
    let vals = |pairs: &[(&str, Value)]| {
        let mut v = Values::new();
        for (n, x) in pairs {
            v.set(n, x.clone());
        }
        v
    };
    let n = Value::Num;
    let s = |x: &str| Value::from(x);
    let cases: Vec<(Event, &str)> = vec![
        (
            event(codes::UNCLEAN_STOP, Severity::Warning, Values::new()),
            "without seq_resumed",
        ),
        (
            event(
                codes::UNCLEAN_STOP,
                Severity::Warning,
                vals(&[("seq_resumed.ups1.sample", n(5.0))]),
            ),
            "seq_resumed.<device>",
        ),
        (
            event(
                codes::UNCLEAN_STOP,
                Severity::Warning,
                vals(&[("seq_resumed.ups1.samples", n(-1.0))]),
            ),
            "whole number",
        ),
        (
            event(
                codes::UNCLEAN_STOP,
                Severity::Warning,
                vals(&[
                    ("seq_resumed.ups1.samples", n(5.0)),
                    ("seq_last_used.ups1.samples", s("4")),
                ]),
            ),
            "seq_last_used.ups1.samples",
        ),
        (
            event(codes::SEQUENCE_RESET, Severity::Critical, Values::new()),
            "without epoch",
        ),
        (
            event(
                codes::SEQUENCE_RESET,
                Severity::Critical,
                vals(&[
                    ("epoch", s("00000000000000ab")),
                    ("previous_epoch", s("AB")),
                ]),
            ),
            "previous_epoch",
        ),
        (
            event(
                codes::SPOOL_QUARANTINED,
                Severity::Warning,
                vals(&[
                    ("record.device", s("ups1")),
                    ("record.kind", s("sample")),
                    ("record.seq", n(1.0)),
                ]),
            ),
            "record.kind",
        ),
        (
            event(
                codes::SPOOL_QUARANTINED,
                Severity::Warning,
                vals(&[("record.device", s("ups1")), ("record.kind", s("samples"))]),
            ),
            "without record.seq",
        ),
        (
            event(
                codes::SPOOL_CORRUPT_RECORD,
                Severity::Warning,
                vals(&[("spool.records", n(1.5))]),
            ),
            "spool.records",
        ),
        (
            event(codes::SPOOL_RESTORED, Severity::Info, Values::new()),
            "without spool.lost",
        ),
        (
            event(codes::SPOOL_DEGRADED, Severity::Critical, Values::new()),
            "without spool.reason",
        ),
    ];
    for (ev, says) in cases {
        let err = match ev.code.as_str() {
            codes::UNCLEAN_STOP => UncleanStop::from_event(&ev).map(|_| ()),
            codes::SEQUENCE_RESET => SequenceReset::from_event(&ev).map(|_| ()),
            codes::SPOOL_QUARANTINED => Quarantined::from_event(&ev).map(|_| ()),
            codes::SPOOL_CORRUPT_RECORD => CorruptRecords::from_event(&ev).map(|_| ()),
            codes::SPOOL_RESTORED => Restored::from_event(&ev).map(|_| ()),
            _ => Degraded::from_event(&ev).map(|_| ()),
        }
        .expect_err(says)
        .to_string();
        assert!(err.contains(says), "{err} / {says}");
    }
    let other = event("ups.on_battery", Severity::Critical, Values::new());
    assert!(matches!(
        Quarantined::from_event(&other),
        Err(GatewayError::OtherCode { .. })
    ));
}

#[test]
fn events_read_back_what_they_write() {
    let reset = SequenceReset {
        epoch: Epoch(0xab),
        previous_epoch: Some(Epoch(0xaa)),
        reason: "the spool cannot be written".into(),
        first_start: false,
    };
    let ev = event(codes::SEQUENCE_RESET, reset.severity(), reset.values());
    assert_eq!(SequenceReset::from_event(&ev).as_ref(), Ok(&reset));
    let first = SequenceReset {
        previous_epoch: None,
        first_start: true,
        ..reset.clone()
    };
    let ev = event(codes::SEQUENCE_RESET, first.severity(), first.values());
    assert_eq!(SequenceReset::from_event(&ev), Ok(first));

    let q = Quarantined {
        device: "ups1".into(),
        kind: Kind::Event,
        seq: 77,
        bytes: 2_000_000,
    };
    let ev = event(codes::SPOOL_QUARANTINED, Severity::Warning, q.values());
    assert_eq!(Quarantined::from_event(&ev), Ok(q));

    let c = CorruptRecords {
        records: 12,
        reason: "checksum (12)".into(),
    };
    let ev = event(codes::SPOOL_CORRUPT_RECORD, Severity::Warning, c.values());
    assert_eq!(CorruptRecords::from_event(&ev), Ok(c));

    let d = Degraded {
        reason: "read_only".into(),
    };
    let ev = event(codes::SPOOL_DEGRADED, Severity::Critical, d.values());
    assert_eq!(Degraded::from_event(&ev), Ok(d));

    let rs = Restored {
        degraded_for_s: 90,
        lost: 4,
    };
    let ev = event(codes::SPOOL_RESTORED, Severity::Info, rs.values());
    assert_eq!(Restored::from_event(&ev), Ok(rs));
}

#[test]
fn which_epoch_an_unclean_stop_speaks_of() {
    let own = SequenceReset {
        epoch: Epoch(2),
        previous_epoch: Some(Epoch(1)),
        reason: "the spool cannot be written".into(),
        first_start: false,
    };
    let wiped = SequenceReset {
        previous_epoch: None,
        ..own.clone()
    };
    // (carried in, the reset known, the epoch the numbers belong to)
    let cases = [
        (Epoch(2), None, Epoch(2)),
        (Epoch(2), Some(&own), Epoch(1)),
        (Epoch(2), Some(&wiped), Epoch(2)),
        // A reset announcing another epoch says nothing of this one.
        (Epoch(3), Some(&own), Epoch(3)),
    ];
    for (carried, reset, want) in cases {
        assert_eq!(UncleanStop::epoch_spoken_of(carried, reset), want);
    }
}

#[test]
fn gateway_health_reads_depth_and_drops() {
    let mut h = GatewayHealth {
        depth: 12,
        uptime_s: 3600,
        degraded: true,
        ..GatewayHealth::default()
    };
    h.set_dropped(DropReason::Full, 5);
    h.set_dropped(DropReason::Corrupt, 2);
    let s = Sample {
        seq: 1,
        ts: 1,
        clock: ClockState::Synced,
        values: h.values(),
    };
    assert_eq!(s.values.get("spool.dropped"), Some(&Value::Num(7.0)));
    assert_eq!(GatewayHealth::from_sample(&s).as_ref(), Ok(&h));
    assert_eq!(h.dropped(DropReason::Full), 5);
    // Only spool.depth is required.
    let mut only = Values::new();
    only.num("spool.depth", 0.0);
    let s = Sample { values: only, ..s };
    assert_eq!(GatewayHealth::from_sample(&s), Ok(GatewayHealth::default()));
    let s = Sample {
        values: Values::new(),
        ..s
    };
    assert!(GatewayHealth::from_sample(&s)
        .unwrap_err()
        .to_string()
        .contains("without spool.depth"));
    let names: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        names,
        ["full", "age", "write_failed", "corrupt", "too_large"]
    );
}
