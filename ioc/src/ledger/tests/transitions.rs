//! Every state a hole can be in, and every way between them.

use super::*;

const ON: Step = Online("boot-1", "run-1");

#[test]
fn hole_states_table() {
    // (what it shows, steps, holes of ups1 in epoch A)
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, Vec<Step>, Vec<(u64, u64, HoleState)>)> = vec![
        (
            "no gap, no hole",
            vec![ON, S("ups1", A, &[0, 1, 2], false)],
            vec![],
        ),
        (
            "a skip is pending at first",
            vec![ON, S("ups1", A, &[0, 5], false)],
            vec![(1, 4, Pending)],
        ),
        (
            "pending while the gateway has a backlog",
            vec![ON, S("ups1", A, &[0, 5], false), Gw(A, 0, 3, 0, 60)],
            vec![(1, 4, Pending)],
        ),
        (
            "unexplained once the backlog is drained while online",
            vec![ON, S("ups1", A, &[0, 5], false), Gw(A, 0, 0, 0, 60)],
            vec![(1, 4, Unexplained)],
        ),
        (
            "pending while offline (the gateway may come back with a backlog)",
            vec![
                ON,
                S("ups1", A, &[0, 5], false),
                Offline,
                Gw(A, 0, 0, 0, 60),
            ],
            vec![(1, 4, Pending)],
        ),
        (
            "pending while no status was seen",
            vec![S("ups1", A, &[0, 5], false), Gw(A, 0, 0, 0, 60)],
            vec![(1, 4, Pending)],
        ),
        (
            "a backlog telemetry's depth 0 is old news",
            vec![ON, S("ups1", A, &[0, 5], false), GwBacklog(A, 0, 0)],
            vec![(1, 4, Pending)],
        ),
        (
            "an older live telemetry than one seen does not settle",
            vec![
                ON,
                Gw(A, 5, 2, 0, 360),
                S("ups1", A, &[0, 5], false),
                Gw(A, 4, 0, 0, 300),
            ],
            vec![(1, 4, Pending)],
        ),
        (
            "depth 0 of another epoch settles nothing here",
            vec![ON, S("ups1", A, &[0, 5], false), Gw(B, 0, 0, 0, 60)],
            vec![(1, 4, Pending)],
        ),
        (
            "filled: a backlog record arrives, the hole splits",
            vec![ON, S("ups1", A, &[0, 5], false), S("ups1", A, &[2], true)],
            vec![(1, 1, Pending), (3, 4, Pending)],
        ),
        (
            "filled after being unexplained",
            vec![
                ON,
                S("ups1", A, &[0, 5], false),
                Gw(A, 0, 0, 0, 60),
                S("ups1", A, &[1, 2, 3], true),
            ],
            vec![(4, 4, Unexplained)],
        ),
        (
            "a hole opened after the drain is pending until the next one",
            vec![
                ON,
                S("ups1", A, &[0, 5], false),
                Gw(A, 0, 0, 0, 60),
                S("ups1", A, &[8], false),
            ],
            vec![(1, 4, Unexplained), (6, 7, Pending)],
        ),
        (
            "out-of-order backlog fills everything",
            vec![
                ON,
                S("ups1", A, &[10, 11], false),
                Gw(A, 0, 10, 0, 60),
                S("ups1", A, &[0, 1, 2, 3, 4], true),
                S("ups1", A, &[12], false),
                S("ups1", A, &[5, 6, 7, 8, 9], true),
                Gw(A, 1, 0, 0, 120),
            ],
            vec![],
        ),
        (
            "a million-number gap is one range",
            vec![ON, S("ups1", A, &[0, 1_000_001], false), Gw(A, 0, 0, 0, 60)],
            vec![(1, 1_000_000, Unexplained)],
        ),
    ];
    for (what, steps, want) in cases {
        let l = run(&steps);
        assert_eq!(holes(&l, "ups1", A), want, "{what}");
    }
}

#[test]
fn counts_received_filled_and_copies() {
    let mut l = Ledger::default();
    for s in [
        ON,
        S("ups1", A, &[0, 1, 4], false),
        S("ups1", A, &[1], false),
        S("ups1", A, &[2], true),
        S("ups1", A, &[2], true),
    ] {
        apply(&mut l, &s);
    }
    let t = l.totals(SITE).unwrap();
    assert_eq!(
        (
            t.received,
            t.filled_late,
            t.duplicates,
            t.pending,
            t.contract_breaks
        ),
        (4, 1, 2, 1, 0)
    );
    let r = l
        .streams(SITE)
        .into_iter()
        .find(|r| r.stream.device == "ups1")
        .unwrap();
    assert_eq!((r.received, r.filled_late, r.duplicates), (4, 1, 2));
}

#[test]
fn changes_name_the_streams_whose_holes_moved() {
    let mut l = Ledger::default();
    apply(&mut l, &ON);
    let opened = apply(&mut l, &S("ups1", A, &[0, 5], false));
    let id = StreamId {
        device: "ups1".into(),
        kind: Kind::Sample,
        epoch: A,
    };
    let counts = |pending, explained, unexplained| HoleCounts {
        pending,
        explained,
        unexplained,
        unused: 0,
    };
    assert_eq!(
        opened.changes,
        [Change::Holes {
            site: SITE.into(),
            stream: id.clone(),
            before: counts(0, 0, 0),
            after: counts(4, 0, 0),
        }]
    );
    // In order, nothing changes: no recomputation, no change.
    assert!(apply(&mut l, &S("ups1", A, &[6], false)).changes.is_empty());
    let settled = apply(&mut l, &Gw(A, 0, 0, 0, 60));
    assert_eq!(
        settled.changes,
        [Change::Holes {
            site: SITE.into(),
            stream: id,
            before: counts(4, 0, 0),
            after: counts(0, 0, 4),
        }]
    );
}
