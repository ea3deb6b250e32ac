//! The tracker fed through `Monitor::handle` (the ingest's call): the
//! intervals, spans heard and day counts it collects.

use super::*;
use crate::fleet::{Fleet, Monitor};
use crate::ledger::Ledger;

const CFG: TrackConfig = TrackConfig {
    offline_after_ms: 180_000,
    offset_s: 7 * 3600,
    temperature: Some((10.0, 35.0)),
    humidity: None,
};

struct Feed {
    m: Monitor,
    t: Tracker,
    seq: std::collections::BTreeMap<String, u64>,
}

impl Feed {
    fn new() -> Feed {
        Feed {
            m: Monitor::new("ioc", Ledger::default(), Fleet::default()),
            t: Tracker::new(CFG, Resumed::default(), BTreeMap::new()),
            seq: BTreeMap::new(),
        }
    }

    fn send(&mut self, topic: &str, payload: &str, at: i64) {
        let _ = self
            .m
            .handle(&format!("ioc/xa-a/{topic}"), payload.as_bytes(), at);
        if topic != "status" {
            self.t.hear("xa-a", at);
        }
        self.t.observe(
            "xa-a",
            self.m.fleet.site("xa-a"),
            self.m.ledger.totals("xa-a"),
            at,
        );
    }

    fn status(&mut self, online: bool, at: i64) {
        let p = if online {
            r#"{"state":"online","version":"0.1.0","boot_id":"b","run_id":"r","started":1}"#
        } else {
            r#"{"state":"offline","reason":"lost"}"#
        };
        self.send("status", p, at);
    }

    fn sample(&mut self, device: &str, values: &str, at: i64) {
        let n = self.seq.entry(format!("{device}/s")).or_default();
        let seq = *n;
        *n += 1;
        let p = format!(
            r#"{{"site":"xa-a","device":"{device}","epoch":"0000000000000001","samples":[{{"historical":false,"seq":{seq},"ts":{at},"clock":"synced","values":{values}}}]}}"#
        );
        self.send(&format!("{device}/telemetry"), &p, at);
    }

    fn event(&mut self, device: &str, code: &str, severity: &str, values: &str, at: i64) {
        let n = self.seq.entry(format!("{device}/e")).or_default();
        let seq = *n;
        *n += 1;
        let p = format!(
            r#"{{"site":"xa-a","device":"{device}","epoch":"0000000000000001","events":[{{"historical":false,"seq":{seq},"ts":{at},"clock":"synced","severity":"{severity}","code":"{code}","message":"m","values":{values}}}]}}"#
        );
        self.send(&format!("{device}/event"), &p, at);
    }
}

fn summary(d: &Delta) -> Vec<(Condition, String, i64, Option<i64>)> {
    d.intervals
        .iter()
        .map(|i| (i.condition, i.detail.clone(), i.start_ms, i.end_ms))
        .collect()
}

#[test]
fn conditions_open_and_close_with_the_fleet_view() {
    use Condition::*;
    let mut f = Feed::new();
    let min = 60_000;
    f.status(true, 0);
    f.sample("ups1", r#"{"ups.status":"OL"}"#, min);
    f.sample("ups1", r#"{"ups.status":"OB"}"#, 2 * min);
    f.event("router", "wan.down", "critical", "{}", 3 * min);
    f.event(
        "env1",
        "threshold.high",
        "warning",
        r#"{"ambient.temperature":38.0,"threshold.limit":35.0}"#,
        4 * min,
    );
    f.event("gpio1", "door.open", "warning", "{}", 4 * min);
    f.event("gpio1", "door.closed", "info", "{}", 5 * min);
    f.sample("env2", r#"{"ambient.temperature":41.5}"#, 5 * min);
    f.sample("ups1", r#"{"ups.status":"OL"}"#, 6 * min);
    f.event("router", "wan.up", "info", "{}", 6 * min);
    f.event(
        "env1",
        "threshold.cleared",
        "info",
        r#"{"ambient.temperature":30.0,"threshold.limit":35.0}"#,
        7 * min,
    );
    f.sample("env2", r#"{"ambient.temperature":22.0}"#, 7 * min);
    f.status(false, 8 * min);
    let d = f.t.drain();
    assert_eq!(
        summary(&d),
        vec![
            (Battery, "".into(), 2 * min, None),
            (WanDown, "".into(), 3 * min, None),
            (
                Temperature,
                "env1/ambient.temperature".into(),
                4 * min,
                None
            ),
            (Contact, "gpio1/door".into(), 4 * min, None),
            (Contact, "gpio1/door".into(), 4 * min, Some(5 * min)),
            (
                Temperature,
                "env2/ambient.temperature".into(),
                5 * min,
                None
            ),
            (Battery, "".into(), 2 * min, Some(6 * min)),
            (WanDown, "".into(), 3 * min, Some(6 * min)),
            (
                Temperature,
                "env1/ambient.temperature".into(),
                4 * min,
                Some(7 * min)
            ),
            (
                Temperature,
                "env2/ambient.temperature".into(),
                5 * min,
                Some(7 * min)
            ),
            (Offline, "".into(), 8 * min, None),
        ]
    );
    // One span heard, from the first message the gateway sent to its
    // last (a status is not a sign of life): no two more than 3 minutes
    // apart.
    assert_eq!(
        d.heard.into_iter().collect::<Vec<_>>(),
        vec![(("xa-a".into(), min), 7 * min)]
    );
    // Five samples and six events, received on one local day.
    let day = d.days[&("xa-a".into(), 0)];
    assert_eq!(day.received, 11);
    assert_eq!(f.t.drain(), Delta::default());
}

#[test]
fn a_silence_longer_than_offline_after_starts_a_new_span() {
    let mut f = Feed::new();
    f.status(true, 0);
    f.sample("ups1", r#"{"ups.status":"OL"}"#, 1_000);
    f.sample("ups1", r#"{"ups.status":"OL"}"#, 181_000);
    f.sample("ups1", r#"{"ups.status":"OL"}"#, 361_001);
    // The retained status again at a restart of the consumer: not heard.
    f.status(true, 900_000);
    let d = f.t.drain();
    assert_eq!(
        d.heard.into_iter().collect::<Vec<_>>(),
        vec![
            (("xa-a".into(), 1_000), 181_000),
            (("xa-a".into(), 361_001), 361_001)
        ]
    );
}

#[test]
fn counts_go_to_the_local_day_of_arrival_and_resume_from_the_totals() {
    let mut f = Feed::new();
    // 16:59:59 UTC is 23:59:59 in Vietnam; a second later the next day.
    let midnight = 17 * 3_600_000;
    f.sample("ups1", r#"{"ups.status":"OL"}"#, midnight - 1_000);
    f.sample("ups1", r#"{"ups.status":"OL"}"#, midnight);
    // A copy: a duplicate, on day 1.
    let copy = r#"{"site":"xa-a","device":"ups1","epoch":"0000000000000001","samples":[{"historical":false,"seq":1,"ts":61200000,"clock":"synced","values":{"ups.status":"OL"}}]}"#;
    f.send("ups1/telemetry", copy, midnight + 1);
    f.send("ups1/telemetry", "{", midnight + 2);
    let d = f.t.drain();
    let got: Vec<(i64, DayCounts)> = d.days.iter().map(|((_, day), c)| (*day, *c)).collect();
    assert_eq!(
        got,
        vec![
            (
                0,
                DayCounts {
                    received: 1,
                    ..DayCounts::default()
                }
            ),
            (
                1,
                DayCounts {
                    received: 1,
                    duplicates: 1,
                    malformed: 1,
                    ..DayCounts::default()
                }
            ),
        ]
    );
    // A tracker restored with these totals counts only what comes after.
    let totals =
        f.m.ledger
            .state()
            .sites
            .iter()
            .map(|(k, v)| (k.clone(), v.totals))
            .collect();
    let mut t = Tracker::new(CFG, Resumed::default(), totals);
    t.observe("xa-a", None, f.m.ledger.totals("xa-a"), midnight + 3);
    assert!(t.drain().days.is_empty());
}

#[test]
fn a_restored_tracker_keeps_the_open_intervals_start() {
    let mut f = Feed::new();
    f.status(true, 0);
    f.sample("ups1", r#"{"ups.status":"OB"}"#, 1_000);
    let d = f.t.drain();
    let open: Vec<Interval> = d
        .intervals
        .into_iter()
        .filter(|i| i.end_ms.is_none())
        .collect();
    let heard = [(
        "xa-a".to_owned(),
        Heard {
            start_ms: 0,
            last_ms: 1_000,
        },
    )]
    .into();
    let mut t = Tracker::new(CFG, Resumed { open, heard }, BTreeMap::new());
    // The same view: nothing changes, the span goes on.
    t.hear("xa-a", 2_000);
    t.observe("xa-a", f.m.fleet.site("xa-a"), None, 2_000);
    let d = t.drain();
    assert!(d.intervals.is_empty());
    assert_eq!(
        d.heard.into_iter().collect::<Vec<_>>(),
        vec![(("xa-a".into(), 0), 2_000)]
    );
    assert_eq!("wan_down".parse::<Condition>().unwrap(), Condition::WanDown);
    assert!("martian".parse::<Condition>().is_err());
}
