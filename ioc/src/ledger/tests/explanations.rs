//! Each explanation the contract gives, duplicates, clock corrections,
//! epochs, and saving and restoring the state.

use wardgate_contract::{
    CorruptRecords, Degraded, DropReason, Quarantined, Restored, ResumedStream, SeqRange,
    UncleanStop,
};

use super::*;

const ON: Step = Online("boot-1", "run-1");

fn quarantined(seq: u64) -> Values {
    Quarantined {
        device: "ups1".into(),
        kind: Kind::Sample,
        seq,
        bytes: 2_000_000,
    }
    .values()
}

fn corrupt(records: u64) -> Values {
    CorruptRecords {
        records,
        reason: "checksum".into(),
    }
    .values()
}

fn stop(device: &'static str, resumed: u64, last_used: Option<u64>) -> Values {
    UncleanStop {
        streams: vec![ResumedStream {
            device: device.into(),
            kind: Kind::Sample,
            resumed,
            last_used,
        }],
    }
    .values()
}

fn degraded() -> Values {
    Degraded {
        reason: "read_only".into(),
    }
    .values()
}

fn restored(lost: u64) -> Values {
    Restored {
        degraded_for_s: 3,
        lost,
    }
    .values()
}

#[test]
fn explanations_table_quarantine_counts_and_degraded() {
    use Reason::*;
    let q = codes::SPOOL_QUARANTINED;
    let cases: Vec<Case> = vec![
        (
            "spool.quarantined names one number, at once",
            vec![
                ON,
                S("ups1", A, &[0, 5], false),
                Ev(A, 0, 1, q, quarantined(3)),
            ],
            vec![
                (1, 2, Pending),
                (3, 3, explained(Quarantined)),
                (4, 4, Pending),
            ],
        ),
        (
            "a quarantine told before the hole opens",
            vec![
                ON,
                Ev(A, 0, 1, q, quarantined(3)),
                S("ups1", A, &[0, 1, 2, 4], false),
                Gw(A, 0, 0, 0, 60),
            ],
            vec![(3, 3, explained(Quarantined))],
        ),
        (
            "a quarantine of another epoch explains nothing here",
            vec![
                ON,
                S("ups1", A, &[0, 1, 2, 4], false),
                Ev(B, 0, 1, q, quarantined(3)),
                Gw(A, 0, 0, 0, 60),
            ],
            vec![(3, 3, Unexplained)],
        ),
        (
            "spool.dropped.full explains the oldest numbers",
            vec![ON, S("ups1", A, &[0, 5, 9], false), Gw(A, 0, 0, 5, 60)],
            vec![
                (1, 4, explained(Dropped(DropReason::Full))),
                (6, 6, explained(Dropped(DropReason::Full))),
                (7, 8, Unexplained),
            ],
        ),
        (
            "counts add up over runs (the counter starts again at each start)",
            vec![
                ON,
                S("ups1", A, &[0, 3, 6], false),
                Gw(A, 0, 2, 2, 600),
                Online("boot-1", "run-2"),
                Gw(A, 1, 0, 2, 60),
            ],
            vec![
                (1, 2, explained(Dropped(DropReason::Full))),
                (4, 5, explained(Dropped(DropReason::Full))),
            ],
        ),
        (
            "a count is not used before the backlog is drained",
            vec![ON, S("ups1", A, &[0, 5], false), Gw(A, 0, 3, 4, 60)],
            vec![(1, 4, Pending)],
        ),
        (
            "spool.corrupt_record explains after the hole was unexplained",
            vec![
                ON,
                S("ups1", A, &[0, 5], false),
                Gw(A, 0, 0, 0, 60),
                Ev(A, 0, 6000, codes::SPOOL_CORRUPT_RECORD, corrupt(2)),
            ],
            vec![
                (1, 2, explained(Dropped(DropReason::Corrupt))),
                (3, 4, Unexplained),
            ],
        ),
        (
            "spool.degraded explains what was taken while the card could not be written",
            vec![
                ON,
                S("ups1", A, &[0, 1], false),
                Ev(A, 0, 1500, codes::SPOOL_DEGRADED, degraded()),
                S("ups1", A, &[5], false),
                Ev(A, 1, 4500, codes::SPOOL_RESTORED, restored(3)),
                S("ups1", A, &[6, 9], false),
                Gw(A, 0, 0, 0, 60),
            ],
            vec![(2, 4, explained(Degraded)), (7, 8, Unexplained)],
        ),
        (
            "the write_failed count is used by the degraded window first",
            vec![
                ON,
                S("ups1", A, &[0, 1], false),
                Ev(A, 0, 1500, codes::SPOOL_DEGRADED, degraded()),
                S("ups1", A, &[5], false),
                Ev(A, 1, 4500, codes::SPOOL_RESTORED, restored(3)),
                S("ups1", A, &[6, 8], false),
                Gw(A, 0, 0, 0, 60),
            ],
            vec![(2, 4, explained(Degraded)), (7, 7, Unexplained)],
        ),
    ];
    check(cases);
}

#[test]
fn explanations_table_unclean_stops_and_resets() {
    use Reason::*;
    let cases: Vec<Case> = vec![
        (
            "unclean stop after a crash: lost up to seq_last_used, unused after",
            vec![
                ON,
                S("ups1", A, &[0, 1, 2, 3], false),
                Online("boot-1", "run-2"),
                Ev(A, 0, 1, codes::UNCLEAN_STOP, stop("ups1", 64, Some(5))),
                S("ups1", A, &[64], false),
            ],
            vec![
                (4, 5, explained(UncleanStop(StopKind::Crash))),
                (6, 63, explained(Unused)),
            ],
        ),
        (
            "unclean stop after a power cut (boot changed)",
            vec![
                ON,
                S("ups1", A, &[0, 1, 2, 3], false),
                Online("boot-2", "run-2"),
                Ev(A, 0, 1, codes::UNCLEAN_STOP, stop("ups1", 64, None)),
                S("ups1", A, &[64], false),
            ],
            vec![(4, 63, explained(UncleanStop(StopKind::PowerCut)))],
        ),
        (
            "an unclean stop explains only the numbers after the highest received below",
            vec![
                ON,
                S("ups1", A, &[0, 3], false),
                Gw(A, 0, 0, 0, 60),
                S("ups1", A, &[5], false),
                Ev(A, 0, 1, codes::UNCLEAN_STOP, stop("ups1", 64, None)),
                S("ups1", A, &[64], false),
                Gw(A, 1, 0, 0, 60),
            ],
            vec![
                (1, 2, Unexplained),
                (4, 4, Unexplained),
                (6, 63, explained(UncleanStop(StopKind::Unknown))),
            ],
        ),
        (
            "backlog arriving after an unclean stop moves the explained range up",
            vec![
                ON,
                S("ups1", A, &[0], false),
                Ev(A, 0, 1, codes::UNCLEAN_STOP, stop("ups1", 64, Some(10))),
                S("ups1", A, &[64], false),
                S("ups1", A, &[1, 2, 3], true),
            ],
            vec![
                (4, 10, explained(UncleanStop(StopKind::Crash))),
                (11, 63, explained(Unused)),
            ],
        ),
        (
            "a sequence reset without previous_epoch closes the old epoch's pending holes",
            vec![
                ON,
                S("ups1", A, &[0, 5], false),
                Gw(A, 0, 3, 0, 60),
                Online("boot-2", "run-2"),
                Ev(B, 0, 1, codes::SEQUENCE_RESET, reset_values(B, None, false)),
                S("ups1", B, &[0], false),
            ],
            vec![(1, 4, explained(SequenceReset))],
        ),
        (
            "... but not holes already unexplained",
            vec![
                ON,
                S("ups1", A, &[0, 5], false),
                Gw(A, 0, 0, 0, 60),
                S("ups1", A, &[7], false),
                Ev(B, 0, 1, codes::SEQUENCE_RESET, reset_values(B, None, false)),
            ],
            vec![(1, 4, Unexplained), (6, 6, explained(SequenceReset))],
        ),
        (
            "a first start closes nothing",
            vec![
                ON,
                S("ups1", A, &[0, 5], false),
                Ev(B, 0, 1, codes::SEQUENCE_RESET, reset_values(B, None, true)),
            ],
            vec![(1, 4, Pending)],
        ),
        (
            "a reset with previous_epoch (an epoch of its own) leaves the old epoch pending",
            vec![
                ON,
                S("ups1", A, &[0, 5], false),
                Ev(
                    B,
                    0,
                    1,
                    codes::SEQUENCE_RESET,
                    reset_values(B, Some(A), false),
                ),
                Gw(B, 0, 0, 0, 60),
            ],
            vec![(1, 4, Pending)],
        ),
    ];
    check(cases);
}

/// What a case shows, its steps, the holes of ups1 in epoch A.
type Case = (&'static str, Vec<Step>, Vec<(u64, u64, HoleState)>);

fn check(cases: Vec<Case>) {
    for (what, steps, want) in cases {
        let l = run(&steps);
        assert_eq!(holes(&l, "ups1", A), want, "{what}");
    }
}

#[test]
fn an_unclean_stop_in_an_epoch_of_its_own_speaks_of_the_previous_one() {
    let steps = [
        ON,
        S("ups1", A, &[0, 1, 2], false),
        // The next run cannot write the card: epoch B of its own, which
        // names A; its unclean stop travels in B but speaks of A.
        Online("boot-1", "run-2"),
        Ev(
            B,
            0,
            1,
            codes::SEQUENCE_RESET,
            reset_values(B, Some(A), false),
        ),
        Ev(B, 1, 2, codes::UNCLEAN_STOP, stop("ups1", 64, Some(4))),
        S("ups1", B, &[0, 3], false),
        Gw(B, 0, 0, 0, 60),
        // The run after resumes A where it was reserved.
        Online("boot-1", "run-3"),
        S("ups1", A, &[64], false),
    ];
    let l = run(&steps);
    use Reason::*;
    assert_eq!(
        holes(&l, "ups1", A),
        [
            (3, 4, explained(UncleanStop(StopKind::Crash))),
            (5, 63, explained(Unused))
        ]
    );
    // Not applied to B's own numbers: its hole is unexplained.
    assert_eq!(holes(&l, "ups1", B), [(1, 2, Unexplained)]);
    // Numbers never used are not missing readings: counted apart from
    // the two lost in the crash.
    let t = l.totals(SITE).unwrap();
    assert_eq!((t.explained, t.unused, t.unexplained), (2, 59, 2));
    // The stop arriving before the reset that names A: the same once both are in.
    let mut reordered = steps.to_vec();
    reordered.swap(3, 4);
    let l2 = run(&reordered);
    assert_eq!(holes(&l2, "ups1", A), holes(&l, "ups1", A));
    assert_eq!(holes(&l2, "ups1", B), holes(&l, "ups1", B));
}

#[test]
fn counted_explanations_go_to_the_oldest_holes_across_streams() {
    // ups1's hole (before ts 5000) is older than env1's (before ts 9000).
    let steps = [
        ON,
        S("env1", A, &[0, 7, 9], false),
        S("ups1", A, &[0, 5], false),
        Gw(A, 0, 0, 6, 60),
    ];
    let l = run(&steps);
    let full = explained(Reason::Dropped(DropReason::Full));
    assert_eq!(holes(&l, "ups1", A), [(1, 4, full)]);
    assert_eq!(
        holes(&l, "env1", A),
        [(1, 2, full), (3, 6, Unexplained), (8, 8, Unexplained)]
    );
    let t = l.totals(SITE).unwrap();
    assert_eq!((t.explained, t.unexplained, t.pending), (6, 5, 0));
}

#[test]
fn duplicates_in_and_beyond_the_window_and_contract_breaks() {
    let mut l = Ledger::new(LedgerConfig::default(), crate::dedup::Dedup::new(2, 100));
    let mut out = Vec::new();
    for s in [
        ON,
        S("ups1", A, &[0, 1, 2, 3], false),
        // In the window (2, 3): judged by content.
        S("ups1", A, &[3], false),
        // Beyond it: told by the numbers.
        S("ups1", A, &[0], true),
    ] {
        out.push(apply(&mut l, &s).records);
    }
    assert_eq!(out[2], [RecordOutcome::Duplicate]);
    assert_eq!(out[3], [RecordOutcome::Duplicate]);
    // Number 3 again with other content: a contract break, counted per site.
    let mut other = sample(3, 3000, ClockState::Synced);
    other.values.num("ups.load", 99.0);
    let msg = telemetry(
        "ups1",
        A,
        vec![Delivered {
            historical: false,
            record: other,
        }],
    );
    assert_eq!(l.apply(SITE, &msg, 0).records, [RecordOutcome::Conflict]);
    let t = l.totals(SITE).unwrap();
    assert_eq!((t.received, t.duplicates, t.contract_breaks), (4, 2, 1));
    assert!(l.unexplained().is_empty());
}

#[test]
fn a_clock_correction_replaces_the_unsynced_copy_and_covers_later_ones() {
    let mut l = Ledger::default();
    apply(&mut l, &ON);
    let first = apply(&mut l, &Timed("ups1", A, 0, ClockState::Unsynced, 1000));
    assert_eq!(
        first.records,
        [RecordOutcome::New {
            corrected_ts: None,
            opened: false
        }]
    );
    let c = wardgate_contract::ClockCorrection {
        stream: StreamKey {
            site: SITE.into(),
            device: "ups1".into(),
            kind: Kind::Sample,
            epoch: A,
        },
        range: SeqRange { first: 0, last: 2 },
        count: 3,
        offset_ms: 86_400_000,
    };
    let mut v = Values::new();
    v.set("record.device", "ups1");
    v.set("record.kind", "samples");
    v.set("record.epoch", A.to_string());
    v.num("record.first_seq", 0.0);
    v.num("record.last_seq", 2.0);
    v.num("record.count", 3.0);
    v.num("clock.offset_ms", 86_400_000.0);
    let got = apply(&mut l, &Ev(A, 0, 5, codes::CLOCK_CORRECTED, v));
    assert_eq!(got.changes, [Change::Correction(c)]);
    // The redelivered corrected copy: not a conflict, not a new reading.
    let again = apply(
        &mut l,
        &Timed("ups1", A, 0, ClockState::Corrected, 86_401_000),
    );
    assert_eq!(again.records, [RecordOutcome::CorrectedCopy]);
    // An unsynced record the correction covers, arriving later.
    let later = apply(&mut l, &Timed("ups1", A, 1, ClockState::Unsynced, 2000));
    assert_eq!(
        later.records,
        [RecordOutcome::New {
            corrected_ts: Some(86_402_000),
            opened: false
        }]
    );
    // Outside the range: as it came (and 2 is missing).
    let outside = apply(&mut l, &Timed("ups1", A, 3, ClockState::Unsynced, 3000));
    assert_eq!(
        outside.records,
        [RecordOutcome::New {
            corrected_ts: None,
            opened: true
        }]
    );
    // Three samples and the gateway's event.
    let t = l.totals(SITE).unwrap();
    assert_eq!(
        (
            t.received,
            t.duplicates,
            t.corrected_copies,
            t.contract_breaks
        ),
        (4, 0, 1, 0)
    );
}

#[test]
fn a_new_epoch_is_a_new_stream_from_zero_and_a_late_joiner_starts_where_it_joins() {
    let l = run(&[
        ON,
        S("ups1", A, &[40, 41], false),
        S("ups1", B, &[2], false),
    ]);
    assert_eq!(holes(&l, "ups1", A), [(0, 39, Pending)]);
    assert_eq!(holes(&l, "ups1", B), [(0, 1, Pending)]);
    let mut late = Ledger::new(
        LedgerConfig { from_zero: false },
        crate::dedup::Dedup::default(),
    );
    for s in [
        ON,
        S("ups1", A, &[40, 41], false),
        S("ups1", A, &[7], true),
        Ev(B, 0, 1, codes::SEQUENCE_RESET, reset_values(B, None, false)),
        S("ups1", B, &[2], false),
    ] {
        apply(&mut late, &s);
    }
    assert_eq!(holes(&late, "ups1", A), []);
    assert_eq!(late.totals(SITE).unwrap().before_start, 1);
    // Its reset was seen: B is followed from 0.
    assert_eq!(holes(&late, "ups1", B), [(0, 1, Pending)]);
}

#[test]
fn a_broken_gateway_report_is_a_contract_break_that_explains_nothing() {
    let l = run(&[
        ON,
        S("ups1", A, &[0, 5], false),
        Ev(
            A,
            0,
            1,
            codes::SPOOL_QUARANTINED,
            vals(&[("record.seq", 3.0)]),
        ),
        Gw(A, 0, 0, 0, 60),
    ]);
    assert_eq!(holes(&l, "ups1", A), [(1, 4, Unexplained)]);
    assert_eq!(l.totals(SITE).unwrap().contract_breaks, 1);
}

#[test]
fn the_state_saves_and_restores() {
    let l = run(&[
        ON,
        S("ups1", A, &[0, 5, 9], false),
        Ev(A, 0, 1, codes::SPOOL_QUARANTINED, quarantined(3)),
        Gw(A, 0, 0, 2, 60),
        Ev(A, 1, 2, codes::UNCLEAN_STOP, stop("ups1", 64, Some(12))),
        S("ups1", A, &[64], false),
        S("ups1", B, &[0, 4], false),
    ]);
    let json = serde_json::to_string(l.state()).unwrap();
    let back: LedgerState = serde_json::from_str(&json).unwrap();
    let r = Ledger::restore(
        LedgerConfig::default(),
        crate::dedup::Dedup::default(),
        back,
    )
    .unwrap();
    assert_eq!(r.streams(SITE), l.streams(SITE));
    assert_eq!(r.totals(SITE), l.totals(SITE));
    assert!(!l.streams(SITE).is_empty());
    // A damaged state is refused, naming the stream.
    let mut bad = l.state().clone();
    let site = bad.sites.get_mut(SITE).unwrap();
    let st = site.streams.values_mut().next().unwrap();
    st.holes.insert(
        1_000,
        RawHole {
            last: 2_000,
            settled: false,
            after_ts: None,
            before_ts: 0,
        },
    );
    let err = Ledger::restore(LedgerConfig::default(), crate::dedup::Dedup::default(), bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("above the highest"), "{err}");
}
