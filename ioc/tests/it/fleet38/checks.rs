//! What the fleet test asserts: the pages while the fleet runs; the
//! ledger, `/metrics` and VictoriaMetrics against what the witness heard
//! once it has stopped.

use std::collections::{BTreeMap, BTreeSet};

use wardgate_contract::{DropReason, Kind, SeqRange, StreamKey};
use wardgate_ioc::ledger::{HoleState, Ledger, Piece, Reason, StopKind, StreamId};

use super::super::ingest_peers::{Ioc, Vm};
use super::witness::Heard;
use super::{metrics, of, site, BATTERY, KILLED, SITES};

/// Text without tags, spaces collapsed.
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut tag = false;
    for c in html.chars() {
        match c {
            '<' => tag = true,
            '>' if tag => {
                tag = false;
                out.push(' ');
            }
            _ if tag => {}
            c => out.push(c),
        }
    }
    out.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" ,", ",")
}

/// Per site on `/`: the text of the cell labelled `label`.
fn cells(html: &str, label: &str) -> BTreeMap<String, String> {
    let at = format!("data-label=\"{label}\"");
    html.split("<tr class=\"")
        .skip(1)
        .filter_map(|row| {
            let id = row.split_once("<b>")?.1.split_once("</b>")?.0.to_owned();
            let cell = row.split_once(at.as_str())?.1.split_once("</td>")?.0;
            Some((id, text(&format!("<x {cell}"))))
        })
        .collect()
}

/// `/` and the site pages, in Vietnamese and English: which site is on
/// battery, no unexplained holes anywhere, the damaged row's reason.
pub fn pages(ioc: &Ioc) {
    let langs = [
        (
            "",
            ("Kết nối", "đang kết nối"),
            "Nguồn điện",
            "mất điện lưới, đang chạy pin UPS",
            "Mất không rõ lý do",
            "38 điểm: 38 đang kết nối, 0 mất kết nối, 1 đang chạy pin, 0 mất số liệu không rõ lý do",
        ),
        (
            "?lang=en",
            ("Link", "online"),
            "Power",
            "mains lost, on UPS battery",
            "Lost, no reason",
            "38 sites: 38 online, 0 offline, 1 on battery, 0 with readings missing, no reason given",
        ),
    ];
    for (q, (link, online), power, on_battery, holes, summary) in langs {
        let (s, page) = ioc.get(&format!("/{q}"));
        assert_eq!(s, 200);
        let said = text(&page);
        let at = said.find(&summary[..3]).unwrap_or(0);
        let near: String = said[at..]
            .chars()
            .take(summary.chars().count() + 20)
            .collect();
        if !said.contains(summary) {
            // The sites that make the difference: offline, or with holes.
            let odd: Vec<_> = cells(&page, link)
                .into_iter()
                .chain(cells(&page, holes))
                .filter(|(_, c)| c != "0" && !c.starts_with(online))
                .collect();
            panic!("/{q} says {near:?}, not {summary:?}: {odd:?}");
        }
        let power = cells(&page, power);
        assert_eq!(power.len(), SITES, "a row per site on /{q}");
        for (id, cell) in &power {
            assert_eq!(
                cell.contains(on_battery),
                *id == site(BATTERY),
                "/{q}: {id}'s power: {cell:?}"
            );
        }
        for (id, cell) in cells(&page, holes) {
            assert_eq!(cell, "0", "/{q}: {id}'s unexplained holes");
        }
        let (s, page) = ioc.get(&format!("/site/{}{q}", site(BATTERY)));
        assert_eq!(s, 200);
        assert!(page.contains(on_battery), "/site/{}{q}", site(BATTERY));
    }
    let x = site(KILLED);
    // The reasons of the damaged row and of the numbers the stop skipped.
    for (q, reasons, lost, explained) in [
        (
            "",
            ["bị hỏng", "số không dùng"],
            "mất, không rõ lý do",
            "mất, có lý do",
        ),
        (
            "?lang=en",
            ["damaged", "numbers never used"],
            "lost, no reason given",
            "lost, reason given",
        ),
    ] {
        let (s, page) = ioc.get(&format!("/site/{x}{q}"));
        assert_eq!(s, 200);
        let t = text(&page);
        for r in reasons {
            assert!(t.contains(r), "/site/{x}{q}: {r:?} not said");
        }
        assert!(
            t.contains(explained),
            "/site/{x}{q}: {explained:?} not said"
        );
        // "…: 0" above the streams, and in no stream's holes.
        let none = format!("{lost}: 0");
        assert!(t.contains(&none), "/site/{x}{q}: {none:?} not said");
        assert_eq!(t.matches(lost).count(), 1, "/site/{x}{q}: {lost:?}");
    }
}

fn key(site: &str, id: &StreamId) -> StreamKey {
    StreamKey {
        site: site.to_owned(),
        device: id.device.clone(),
        kind: id.kind,
        epoch: id.epoch,
    }
}

/// Every stream the witness heard is in the ledger with as many records
/// (`at_least`: or more, while the fleet runs and the ioc may be a
/// message ahead of the witness).
pub fn received_as_heard(l: &Ledger, heard: &Heard, at_least: bool) -> bool {
    not_as_heard(l, heard, at_least).is_empty()
}

/// The streams whose records in the ledger are not as many as the
/// witness heard (or fewer, `at_least`): (stream, ledger's, witness's).
pub fn not_as_heard(
    l: &Ledger,
    heard: &Heard,
    at_least: bool,
) -> Vec<(StreamKey, Option<u64>, u64)> {
    heard
        .streams
        .iter()
        .filter_map(|(k, seqs)| {
            let want = seqs.len() as u64;
            let got = l.stream(k).map(|r| r.received);
            let ok = got.is_some_and(|n| n == want || at_least && n > want);
            (!ok).then(|| (k.clone(), got, want))
        })
        .collect()
}

/// The holes the killed site's gateway declared, as the ledger must show
/// them: its unclean stop (read with the contract's rule, against the
/// highest number heard below each resume point) and the damaged row.
fn declared(heard: &Heard, x: &str, damaged: u64) -> BTreeMap<StreamKey, Vec<Piece>> {
    let mut want: BTreeMap<StreamKey, Vec<Piece>> = BTreeMap::new();
    let stops = heard.unclean_stops(x);
    assert_eq!(stops.len(), 1, "{x}: one unclean stop declared: {stops:?}");
    let (epoch, stop) = &stops[0];
    for rs in &stop.streams {
        let k = StreamKey {
            site: x.to_owned(),
            device: rs.device.clone(),
            kind: rs.kind,
            epoch: *epoch,
        };
        // A stream that sent nothing from its resume point on shows no hole.
        let Some(seqs) = heard
            .streams
            .get(&k)
            .filter(|s| s.last() >= Some(&rs.resumed))
        else {
            continue;
        };
        let below = seqs.range(..rs.resumed).next_back().copied();
        let ex = rs.explains(below);
        let stop = if rs.last_used.is_some() {
            StopKind::Crash
        } else {
            StopKind::Unknown
        };
        for (range, reason) in [
            (ex.lost, Reason::UncleanStop(stop)),
            (ex.unused, Reason::Unused),
        ] {
            if let Some(range) = range {
                want.entry(k.clone()).or_default().push(Piece {
                    range,
                    state: HoleState::Explained(reason),
                });
            }
        }
    }
    let ups = StreamKey {
        site: x.to_owned(),
        device: "ups1".into(),
        kind: Kind::Sample,
        epoch: *epoch,
    };
    let v = want.entry(ups).or_default();
    assert!(
        !v.iter()
            .any(|p| (p.range.first..=p.range.last).contains(&damaged)),
        "the damaged row {damaged} is among the stop's numbers: {v:?}"
    );
    v.push(Piece {
        range: SeqRange {
            first: damaged,
            last: damaged,
        },
        state: HoleState::Explained(Reason::Dropped(DropReason::Corrupt)),
    });
    for v in want.values_mut() {
        v.sort_by_key(|p| p.range.first);
    }
    want
}

/// The ledger as committed, stream by stream, against the witness: the
/// same streams and records; holes only where the killed gateway declared
/// them, with its reasons; what each gateway lost is what it declared.
/// Returns the numbers explained as lost and those explained as never
/// used (the rest of the blocks the killed gateway had reserved).
pub fn ledger(l: &Ledger, heard: &Heard, damaged: u64) -> (u64, u64) {
    let fleet = l.fleet_totals();
    assert_eq!(fleet.unexplained, 0, "unexplained: {:?}", l.unexplained());
    assert_eq!(
        fleet.pending,
        0,
        "pending: {:?}",
        l.holes_in(HoleState::Pending)
    );
    assert_eq!(
        (fleet.contract_breaks, fleet.malformed, fleet.before_start),
        (0, 0, 0)
    );
    // The outage's backlog came behind live readings: holes, filled late.
    assert!(fleet.filled_late > 0, "{fleet:?}");
    assert_eq!(l.sites().count(), SITES);
    let x = site(KILLED);
    let want = declared(heard, &x, damaged);
    for i in 0..SITES {
        let s = site(i);
        let streams = l.streams(&s);
        let in_ledger: BTreeSet<StreamKey> = streams.iter().map(|r| key(&s, &r.stream)).collect();
        let in_heard: BTreeSet<StreamKey> = heard.site(&s).map(|(k, _)| k.clone()).collect();
        assert_eq!(in_ledger, in_heard, "{s}: the streams");
        for r in &streams {
            let k = key(&s, &r.stream);
            let seqs = &heard.streams[&k];
            assert_eq!(r.received, seqs.len() as u64, "{k:?}: received");
            assert_eq!(r.highest, seqs.last().copied(), "{k:?}: highest");
            let expect = want.get(&k).cloned().unwrap_or_default();
            assert_eq!(r.holes, expect, "{k:?}: the holes");
            let numbers: BTreeSet<u64> = expect
                .iter()
                .flat_map(|p| p.range.first..=p.range.last)
                .collect();
            assert_eq!(
                Heard::missing(seqs),
                numbers,
                "{k:?}: what the gateway lost is what it declared"
            );
        }
        if s != x {
            assert!(heard.unclean_stops(&s).is_empty(), "{s}: an unclean stop");
            assert_eq!(heard.corrupt_declared(&s), 0, "{s}: a corrupt row");
        }
    }
    assert_eq!(heard.corrupt_declared(&x), 1, "{x}: spool.corrupt_record");
    assert_eq!(
        heard.dropped_corrupt.get(&x),
        Some(&1),
        "{x}: dropped.corrupt"
    );
    for (k, pieces) in &want {
        eprintln!("fleet38: {x} {} {:?}: {pieces:?}", k.device, k.kind);
    }
    let t = l.totals(&x).expect("the killed site");
    let is_unused = |p: &&Piece| p.state == HoleState::Explained(Reason::Unused);
    let unused: u64 = want
        .values()
        .flatten()
        .filter(is_unused)
        .map(|p| p.range.len())
        .sum();
    let lost: u64 = want
        .values()
        .flatten()
        .filter(|p| !is_unused(p))
        .map(|p| p.range.len())
        .sum();
    // Numbers never used are not missing readings: counted apart.
    assert!(lost >= 1, "{x}: the damaged row is a lost reading");
    assert_eq!(
        (t.explained, t.unused, t.pending, t.unexplained),
        (lost, unused, 0, 0),
        "{x}"
    );
    (lost, unused)
}

/// `/metrics` says the same: no pending, no unexplained hole anywhere;
/// `explained` and `unused` numbers at the killed site only.
pub fn metrics_after(ioc: &Ioc, (explained, unused): (u64, u64)) {
    let m = metrics(ioc);
    assert_eq!(m.get("wardgate_fleet_sites"), Some(&(SITES as f64)));
    assert_eq!(m.get("wardgate_ioc_messages_malformed_total"), Some(&0.0));
    for i in 0..SITES {
        let s = site(i);
        let holes = |state| of(&m, "wardgate_ledger_holes", &s, Some(state));
        let (x, u) = if i == KILLED {
            (explained as f64, unused as f64)
        } else {
            (0.0, 0.0)
        };
        assert_eq!(
            (
                holes("pending"),
                holes("unexplained"),
                holes("explained"),
                holes("unused")
            ),
            (Some(0.0), Some(0.0), Some(x), Some(u)),
            "{s}: holes on /metrics"
        );
    }
}

/// Every reading and event the witness heard is a point in
/// VictoriaMetrics, by its `seq` field, per site and device; every site
/// is there. Returns the points counted.
pub fn tsdb(vm: &Vm, heard: &Heard) -> usize {
    let mut total = 0;
    for (name, kind) in [("telemetry_seq", Kind::Sample), ("event_seq", Kind::Event)] {
        let mut got: BTreeMap<(String, String), BTreeSet<u64>> = BTreeMap::new();
        for (labels, pts) in vm.export_matching(&format!("{{__name__=\"{name}\"}}")) {
            let at = (labels["site"].clone(), labels["device"].clone());
            got.entry(at)
                .or_default()
                .extend(pts.iter().map(|p| p.1 as u64));
        }
        let mut want: BTreeMap<(String, String), BTreeSet<u64>> = BTreeMap::new();
        for (k, seqs) in heard.streams.iter().filter(|(k, _)| k.kind == kind) {
            want.entry((k.site.clone(), k.device.clone()))
                .or_default()
                .extend(seqs);
        }
        let keys: BTreeSet<_> = got.keys().chain(want.keys()).cloned().collect();
        let differ: Vec<_> = keys
            .iter()
            .filter_map(|k| {
                let (g, w) = (got.get(k).cloned(), want.get(k).cloned());
                let (g, w) = (g.unwrap_or_default(), w.unwrap_or_default());
                let missing: Vec<_> = w.difference(&g).collect();
                let extra: Vec<_> = g.difference(&w).collect();
                (!missing.is_empty() || !extra.is_empty()).then(|| {
                    format!("{k:?}: not in VictoriaMetrics {missing:?}, not sent {extra:?}")
                })
            })
            .collect();
        assert!(differ.is_empty(), "{name}: {differ:#?}");
        total += got.values().map(BTreeSet::len).sum::<usize>();
        if kind == Kind::Sample {
            let sites: BTreeSet<&String> = got.keys().map(|(s, _)| s).collect();
            assert_eq!(sites.len(), SITES, "readings from every site");
        }
    }
    total
}
