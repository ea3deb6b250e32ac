//! The report's figures as tables: a site's history in, a month's row out.

use super::*;
use crate::report::calendar::days_from_civil;

const MIN: i64 = 60_000;
const H: i64 = 60 * MIN;

/// Local time in Vietnam (UTC+7) as UTC ms.
fn at(y: i64, m: u32, d: u32, hh: i64, mm: i64) -> i64 {
    days_from_civil(y, m, d) * DAY_MS + hh * H + mm * MIN - 7 * H
}

fn dec(d: u32, hh: i64, mm: i64) -> i64 {
    at(2026, 12, d, hh, mm)
}

fn iv(c: Condition, from: i64, to: Option<i64>) -> Interval {
    Interval {
        site: "xa-a".into(),
        condition: c,
        detail: String::new(),
        start_ms: from,
        end_ms: to,
    }
}

fn heard(spans: &[(i64, i64)]) -> Vec<Heard> {
    spans
        .iter()
        .map(|&(start_ms, last_ms)| Heard { start_ms, last_ms })
        .collect()
}

struct Case {
    name: &'static str,
    month: &'static str,
    now: i64,
    since: i64,
    heard: Vec<Heard>,
    intervals: Vec<Interval>,
    /// Minutes not available, office minutes not available, battery
    /// (episodes, minutes).
    down_min: i64,
    office_down_min: i64,
    battery: (u64, i64),
}

/// The table: December 2026 (and its neighbours) in Vietnam, the 24th a
/// holiday.
fn cases() -> Vec<Case> {
    use Condition::*;
    let always = || heard(&[(at(2026, 10, 1, 0, 0), at(2027, 2, 1, 0, 0))]);
    let after = at(2027, 1, 5, 0, 0);
    let long_ago = at(2026, 1, 1, 0, 0);
    vec![
        Case {
            name: "heard all month, never offline",
            month: "2026-12",
            now: after,
            since: long_ago,
            heard: always(),
            intervals: vec![],
            down_min: 0,
            office_down_min: 0,
            battery: (0, 0),
        },
        Case {
            name: "offline 11:00-13:30 on a Monday: 30 min before lunch, 30 after",
            month: "2026-12",
            now: after,
            since: long_ago,
            heard: always(),
            intervals: vec![iv(Offline, dec(7, 11, 0), Some(dec(7, 13, 30)))],
            down_min: 150,
            office_down_min: 60,
            battery: (0, 0),
        },
        Case {
            name: "offline on a Saturday and on a holiday: no office time lost",
            month: "2026-12",
            now: after,
            since: long_ago,
            heard: always(),
            intervals: vec![
                iv(Offline, dec(5, 8, 0), Some(dec(5, 10, 0))),
                iv(Offline, dec(24, 8, 0), Some(dec(24, 10, 0))),
            ],
            down_min: 240,
            office_down_min: 0,
            battery: (0, 0),
        },
        Case {
            name: "on battery across the month's start: December's hour",
            month: "2026-12",
            now: after,
            since: long_ago,
            heard: always(),
            intervals: vec![iv(Battery, at(2026, 11, 30, 23, 0), Some(dec(1, 1, 0)))],
            down_min: 0,
            office_down_min: 0,
            battery: (1, 60),
        },
        Case {
            name: "the same outage in November: November's hour",
            month: "2026-11",
            now: after,
            since: long_ago,
            heard: always(),
            intervals: vec![iv(Battery, at(2026, 11, 30, 23, 0), Some(dec(1, 1, 0)))],
            down_min: 0,
            office_down_min: 0,
            battery: (1, 60),
        },
        Case {
            name: "on battery, still open at the month's end",
            month: "2026-12",
            now: after,
            since: long_ago,
            heard: always(),
            intervals: vec![iv(Battery, dec(31, 22, 0), None)],
            down_min: 0,
            office_down_min: 0,
            battery: (1, 120),
        },
        Case {
            name: "still open: January so far (4 days)",
            month: "2027-01",
            now: after,
            since: long_ago,
            heard: always(),
            intervals: vec![iv(Battery, dec(31, 22, 0), None)],
            down_min: 0,
            office_down_min: 0,
            battery: (1, 4 * 24 * 60),
        },
        Case {
            name: "no message at all 09:00-11:00 on a Thursday: offline from 09:03",
            month: "2026-12",
            now: after,
            since: long_ago,
            heard: heard(&[
                (at(2026, 11, 1, 0, 0), dec(10, 9, 0)),
                (dec(10, 11, 0), at(2027, 2, 1, 0, 0)),
            ]),
            intervals: vec![],
            down_min: 117,
            office_down_min: 117,
            battery: (0, 0),
        },
        Case {
            name: "on battery while unheard: the outage counts, its unknown minutes do not",
            month: "2026-12",
            now: after,
            since: long_ago,
            heard: heard(&[
                (at(2026, 11, 1, 0, 0), dec(10, 9, 0)),
                (dec(10, 11, 0), at(2027, 2, 1, 0, 0)),
            ]),
            intervals: vec![iv(Battery, dec(10, 8, 0), Some(dec(10, 11, 30)))],
            down_min: 117,
            office_down_min: 117,
            battery: (1, 210 - 117),
        },
        Case {
            name: "never heard after the 20th and the status still online",
            month: "2026-12",
            now: after,
            since: long_ago,
            heard: heard(&[(at(2026, 11, 1, 0, 0), dec(20, 23, 57))]),
            intervals: vec![],
            down_min: 11 * 24 * 60,
            office_down_min: 8 * 8 * 60,
            battery: (0, 0),
        },
    ]
}

/// December 2026 (UTC+7): 31 days, 23 working days of 8 hours.
#[test]
fn availability_office_hours_and_episodes() {
    let cases = cases();
    let cfg = ReportConfig {
        holidays: [days_from_civil(2026, 12, 24)].into(),
        ..ReportConfig::default()
    };
    for c in cases {
        let site = SiteInput {
            site: "xa-a".into(),
            intervals: c.intervals,
            heard: c.heard,
            ..SiteInput::default()
        };
        let month: Month = c.month.parse().unwrap();
        let r = compute(&[site], month, c.now, Some(c.since), &cfg);
        let row = &r.rows[0];
        let (a, b) = month.bounds_ms(cfg.offset_s);
        let measured = b.min(c.now) - a;
        assert_eq!(row.window_ms, measured, "{}", c.name);
        assert_eq!(
            row.window_ms - row.available_ms,
            c.down_min * MIN,
            "{}",
            c.name
        );
        assert_eq!(
            row.office_ms - row.office_available_ms,
            c.office_down_min * MIN,
            "{}",
            c.name
        );
        assert_eq!(
            (row.battery.count, row.battery.ms),
            (c.battery.0, c.battery.1 * MIN),
            "{}",
            c.name
        );
    }
}

#[test]
fn office_hours_of_december_2026() {
    let month: Month = "2026-12".parse().unwrap();
    let cfg = ReportConfig::default();
    assert_eq!(office_spans(month, &cfg).total(), 23 * 8 * H);
    let holiday = ReportConfig {
        holidays: [days_from_civil(2026, 12, 24), days_from_civil(2026, 12, 26)].into(),
        ..ReportConfig::default()
    };
    // The 26th is a Saturday: one working day less.
    assert_eq!(office_spans(month, &holiday).total(), 22 * 8 * H);
    // The first span: Tuesday 1 December, 07:30 in Vietnam, 00:30 UTC.
    assert_eq!(
        office_spans(month, &cfg).spans()[0],
        (dec(1, 7, 30), dec(1, 11, 30))
    );
}

#[test]
fn the_month_so_far_and_a_history_started_in_it() {
    let cfg = ReportConfig::default();
    let month: Month = "2026-12".parse().unwrap();
    let site = SiteInput {
        site: "xa-a".into(),
        heard: heard(&[(dec(15, 0, 0), dec(31, 0, 0))]),
        ..SiteInput::default()
    };
    // Kept since Tuesday the 15th, now Sunday the 20th: 5 days, 4 working.
    let r = compute(
        std::slice::from_ref(&site),
        month,
        dec(20, 0, 0),
        Some(dec(15, 0, 0)),
        &cfg,
    );
    assert_eq!((r.from_ms, r.to_ms), (dec(15, 0, 0), dec(20, 0, 0)));
    let row = &r.rows[0];
    assert_eq!(row.window_ms, 5 * 24 * H);
    assert_eq!(row.availability(), Some(100.0));
    assert_eq!(row.office_ms, 4 * 8 * H);
    // Nothing kept yet, or a month still to come: nothing measured.
    let r = compute(
        std::slice::from_ref(&site),
        month,
        dec(20, 0, 0),
        None,
        &cfg,
    );
    assert_eq!((r.rows[0].window_ms, r.rows[0].availability()), (0, None));
    let r = compute(
        &[site],
        month.next(),
        dec(20, 0, 0),
        Some(dec(15, 0, 0)),
        &cfg,
    );
    assert_eq!(r.rows[0].office_availability(), None);
}

#[test]
fn counts_by_local_day_and_holes_by_the_month_of_their_readings() {
    let cfg = ReportConfig::default();
    let month: Month = "2026-12".parse().unwrap();
    let c = |received, duplicates| DayCounts {
        received,
        duplicates,
        corrected_copies: 1,
        contract_breaks: 2,
        ..DayCounts::default()
    };
    let hole = |ts, kind, count| HoleAt { ts, kind, count };
    let site = SiteInput {
        site: "xa-a".into(),
        days: vec![
            (days_from_civil(2026, 11, 30), c(1000, 0)),
            (days_from_civil(2026, 12, 1), c(90, 3)),
            (days_from_civil(2026, 12, 31), c(10, 0)),
            (days_from_civil(2027, 1, 1), c(1000, 0)),
        ],
        holes: vec![
            hole(dec(1, 0, 0) - 1, HoleKind::Unexplained, 100),
            hole(dec(1, 0, 0), HoleKind::Unexplained, 2),
            hole(dec(15, 0, 0), HoleKind::Explained, 5),
            hole(dec(31, 23, 59), HoleKind::Pending, 3),
            hole(at(2027, 1, 1, 0, 0), HoleKind::Unexplained, 100),
        ],
        ..SiteInput::default()
    };
    let mut other = site.clone();
    other.site = "xa-b".into();
    let r = compute(&[other, site], month, dec(31, 0, 0), Some(0), &cfg);
    assert_eq!(r.rows[0].site, "xa-a", "by site id");
    let row = &r.rows[0];
    assert_eq!((row.counts.received, row.counts.duplicates), (100, 3));
    assert_eq!(
        (row.counts.corrected_copies, row.counts.contract_breaks),
        (2, 4)
    );
    assert_eq!(row.copies_removed(), 5);
    assert_eq!((row.unexplained, row.explained, row.pending), (2, 5, 3));
    assert_eq!(row.completeness(), Some(100.0 * 100.0 / 110.0));
    assert_eq!(r.total.counts.received, 200);
    assert_eq!(r.total.unexplained, 4);
}

#[test]
fn environment_and_backlog() {
    use Condition::*;
    let cfg = ReportConfig::default();
    let month: Month = "2026-12".parse().unwrap();
    let mut two_sensors = vec![
        iv(Temperature, dec(3, 12, 0), Some(dec(3, 13, 0))),
        iv(Temperature, dec(3, 12, 30), Some(dec(3, 13, 30))),
        iv(Humidity, dec(4, 0, 0), Some(dec(4, 0, 10))),
        iv(Contact, dec(5, 0, 0), Some(dec(5, 0, 1))),
        iv(Contact, dec(6, 0, 0), None),
        iv(Backlog, dec(7, 0, 0), Some(dec(7, 0, 20))),
        iv(Backlog, dec(8, 0, 0), Some(dec(8, 2, 0))),
        iv(WanDown, dec(9, 0, 0), Some(dec(9, 0, 5))),
    ];
    two_sensors[1].detail = "env2/ambient.temperature".into();
    let site = SiteInput {
        site: "xa-a".into(),
        heard: heard(&[(0, dec(31, 0, 0))]),
        intervals: two_sensors,
        ..SiteInput::default()
    };
    let r = compute(&[site], month, dec(7, 0, 0), Some(0), &cfg);
    let row = &r.rows[0];
    // Two sensors over one stretch of heat: one episode of 90 minutes.
    assert_eq!((row.temperature.count, row.temperature.ms), (1, 90 * MIN));
    assert_eq!((row.humidity.count, row.humidity.ms), (1, 10 * MIN));
    assert_eq!((row.contacts.count, row.contacts.ms), (2, MIN + 24 * H));
    // Now is the 7th: the backlog of the 8th and the WAN of the 9th are
    // to come.
    assert_eq!((row.longest_backlog_ms, row.wan_down.count), (0, 0));
}
