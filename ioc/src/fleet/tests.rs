//! Each field's transitions, as tables: messages in (with their receive
//! times), the field read after each.

use wardgate_contract::{
    ClockState, Delivered, Envelope, Epoch, Event, Message, OfflineReason, Sample, Severity,
    Status, Values, GATEWAY_DEVICE,
};

use super::*;

const SITE: &str = "xa-a";

fn online() -> Message {
    Message::Status(Status::Online {
        version: "0.1.0".into(),
        boot_id: "b1".into(),
        run_id: "r1".into(),
        started: 0,
    })
}

fn offline(reason: &str) -> Message {
    Message::Status(Status::Offline {
        reason: OfflineReason::from(reason),
    })
}

fn values(pairs: &[(&str, &str)]) -> Values {
    let mut v = Values::new();
    for (k, x) in pairs {
        match (x.parse::<f64>(), *x) {
            (Ok(n), _) => {
                v.num(k, n);
            }
            (_, "true") => v.set(k, true),
            (_, "false") => v.set(k, false),
            _ => v.set(k, *x),
        }
    }
    v
}

fn sample_on(device: &str, clock: ClockState, historical: bool, v: &[(&str, &str)]) -> Message {
    Message::Telemetry(Envelope {
        site: SITE.into(),
        device: device.into(),
        epoch: Epoch(1),
        records: vec![Delivered {
            historical,
            record: Sample {
                seq: 0,
                ts: 1_000,
                clock,
                values: values(v),
            },
        }],
    })
}

fn live(device: &str, v: &[(&str, &str)]) -> Message {
    sample_on(device, ClockState::Synced, false, v)
}

fn event_on(device: &str, code: &str, sev: Severity, v: &[(&str, &str)]) -> Message {
    Message::Events(Envelope {
        site: SITE.into(),
        device: device.into(),
        epoch: Epoch(1),
        records: vec![Delivered {
            historical: false,
            record: Event {
                seq: 0,
                ts: 1_000,
                clock: ClockState::Synced,
                severity: sev,
                code: code.into(),
                message: format!("{code} happened"),
                values: values(v),
            },
        }],
    })
}

/// A message, its receive time and the field's value after it.
type Step<T> = (i64, Message, T);

/// Applies each message at its time and reads `field` after each.
fn run<T: PartialEq + std::fmt::Debug>(steps: Vec<(i64, Message, T)>, field: impl Fn(&Site) -> T) {
    let mut f = Fleet::default();
    for (i, (at, m, want)) in steps.into_iter().enumerate() {
        f.apply(SITE, &m, at);
        let got = field(f.site(SITE).expect("the site is known"));
        assert_eq!(got, want, "step {i}: {m:?}");
    }
}

#[test]
fn presence_and_since() {
    let p = |s: &Site| s.presence.as_ref().map(|p| (p.value.clone(), p.since_ms));
    let off = |r: &str| Presence::Offline { reason: r.into() };
    run(
        vec![
            (10, live("ups1", &[]), None),
            (20, online(), Some((Presence::Online, 20))),
            // A birth again (a reconnect seen twice): still since 20.
            (30, online(), Some((Presence::Online, 20))),
            (40, offline("lost"), Some((off("lost"), 40))),
            // Another offline word: its reason, the time of the first.
            (50, offline("power"), Some((off("power"), 40))),
            (60, offline("martian"), Some((off("martian"), 40))),
            (70, online(), Some((Presence::Online, 70))),
        ],
        p,
    );
    run(
        vec![(5, live("ups1", &[]), Some(5)), (9, online(), Some(9))],
        |s| s.last_seen_ms,
    );
}

#[test]
fn mains_and_battery() {
    let b = |s: &Site| {
        s.ups().map(|u| {
            (
                u.on_battery.value,
                u.on_battery.since_ms,
                u.runtime_s,
                u.low_battery,
            )
        })
    };
    let crit = Severity::Critical;
    run(
        vec![
            (1, live("env1", &[("ambient.temperature", "30")]), None),
            (
                2,
                live("ups1", &[("ups.status", "OL"), ("battery.runtime", "3600")]),
                Some((false, 2, Some(3600.0), false)),
            ),
            (
                3,
                event_on("ups1", "ups.on_battery", crit, &[("ups.status", "OB")]),
                Some((true, 3, Some(3600.0), false)),
            ),
            (
                4,
                live(
                    "ups1",
                    &[("ups.status", "OB DISCHRG"), ("battery.runtime", "1200")],
                ),
                Some((true, 3, Some(1200.0), false)),
            ),
            (
                5,
                live(
                    "ups1",
                    &[("ups.status", "OB LB"), ("battery.runtime", "90")],
                ),
                Some((true, 3, Some(90.0), true)),
            ),
            // History from the backlog does not move the state.
            (
                6,
                sample_on("ups1", ClockState::Synced, true, &[("ups.status", "OL")]),
                Some((true, 3, Some(90.0), true)),
            ),
            (
                7,
                event_on("ups1", "ups.on_line", Severity::Info, &[]),
                Some((false, 7, Some(90.0), true)),
            ),
            (
                8,
                event_on("ups1", "ups.battery_ok", Severity::Info, &[]),
                Some((false, 7, Some(90.0), false)),
            ),
            (
                9,
                live("ups1", &[("ups.status", "OL CHRG")]),
                Some((false, 7, Some(90.0), false)),
            ),
        ],
        b,
    );
    run(
        vec![
            (1, live("ups1", &[("ups.status", "OL")]), Some(false)),
            (2, live("ups2", &[("ups.status", "OB")]), Some(true)),
            (3, live("ups2", &[("ups.status", "OL")]), Some(false)),
        ],
        Site::on_battery,
    );
}

#[test]
fn wan_from_events_and_probes() {
    let w = |s: &Site| s.wan.as_ref().map(|w| (w.value, w.since_ms));
    let mut f = Fleet::default();
    let inv = br#"{"site":"xa-a","version":"0.2.0","boot_id":"b","run_id":"r","started":1,"config_hash":"sha256:ab","clock":"synced","devices":[{"id":"wan","type":"probe","interval_ms":30000,"values":[],"words":{}}],"sinks":["mqtt"],"commands":{"enabled":true,"allow":[]}}"#;
    f.inventory(SITE, inv, 0).unwrap();
    let steps: Vec<Step<Option<(bool, i64)>>> = vec![
        (
            1,
            live("wan", &[("dns.up", "true"), ("broker.up", "false")]),
            Some((true, 1)),
        ),
        (
            2,
            live("wan", &[("dns.up", "false"), ("broker.up", "false")]),
            Some((false, 2)),
        ),
        (
            3,
            event_on("router", "wan.down", Severity::Critical, &[]),
            Some((false, 2)),
        ),
        (
            4,
            event_on("router", "wan.up", Severity::Info, &[]),
            Some((true, 4)),
        ),
        // A device that is not a probe says nothing of the WAN.
        (5, live("ups1", &[("x.up", "false")]), Some((true, 4))),
    ];
    for (at, m, want) in steps {
        f.apply(SITE, &m, at);
        assert_eq!(w(f.site(SITE).unwrap()), want, "{m:?}");
    }
}

#[test]
fn alarms_raised_and_cleared() {
    let keys = |s: &Site| {
        s.alarms
            .iter()
            .map(|(k, a)| format!("{k}@{}", a.since_ms))
            .collect::<Vec<_>>()
    };
    let w = Severity::Warning;
    let i = Severity::Info;
    let t_high = [
        ("ambient.temperature", "38.5"),
        ("threshold.limit", "35"),
        ("message.vi", "phòng máy 38,5 °C > 35 °C"),
    ];
    let t_clear = [("ambient.temperature", "33"), ("threshold.limit", "35")];
    run(
        vec![
            (
                1,
                event_on("env1", "threshold.high", w, &t_high),
                vec!["env1/ambient.temperature@1".to_owned()],
            ),
            // Raised again: still since the first.
            (
                2,
                event_on("env1", "threshold.high", w, &t_high),
                vec!["env1/ambient.temperature@1".to_owned()],
            ),
            (
                3,
                event_on("contacts", "door.open", w, &[("door", "open")]),
                vec![
                    "contacts/door@3".to_owned(),
                    "env1/ambient.temperature@1".to_owned(),
                ],
            ),
            (
                4,
                event_on("contacts", "water.wet", Severity::Critical, &[]),
                vec![
                    "contacts/door@3".to_owned(),
                    "contacts/water@4".to_owned(),
                    "env1/ambient.temperature@1".to_owned(),
                ],
            ),
            (
                5,
                event_on("contacts", "door.closed", i, &[]),
                vec![
                    "contacts/water@4".to_owned(),
                    "env1/ambient.temperature@1".to_owned(),
                ],
            ),
            (
                6,
                event_on("env1", "threshold.cleared", i, &t_clear),
                vec!["contacts/water@4".to_owned()],
            ),
            (7, event_on("contacts", "water.dry", i, &[]), vec![]),
            (
                8,
                event_on("ups1", "ups.overload", w, &[]),
                vec!["ups1/ups.overload@8".to_owned()],
            ),
            (
                9,
                event_on("router", "interface.down", w, &[("interface", "eth1")]),
                vec![
                    "router/interface.down:eth1@9".to_owned(),
                    "ups1/ups.overload@8".to_owned(),
                ],
            ),
            (
                10,
                event_on("router", "interface.up", i, &[("interface", "eth1")]),
                vec!["ups1/ups.overload@8".to_owned()],
            ),
            (11, event_on("ups1", "ups.overload_cleared", i, &[]), vec![]),
            // Codes of the catalogue's families are not contacts.
            (12, event_on("ups1", "ups.replace_battery", w, &[]), vec![]),
            (13, event_on("gateway", "mqtt.stalled", w, &[]), vec![]),
            (
                14,
                event_on("gateway", "spool.degraded", Severity::Critical, &[]),
                vec!["gateway/spool.degraded@14".to_owned()],
            ),
            (15, event_on("gateway", "spool.restored", i, &[]), vec![]),
        ],
        keys,
    );
}

#[test]
fn backlog_depth_and_age() {
    let b = |s: &Site| s.backlog.map(|b| (b.depth, b.since_ms));
    let gw = |depth: &str| live(GATEWAY_DEVICE, &[("spool.depth", depth)]);
    let old = sample_on(
        GATEWAY_DEVICE,
        ClockState::Synced,
        true,
        &[("spool.depth", "999")],
    );
    run(
        vec![
            (1, gw("0"), Some((0, None))),
            (2, gw("40"), Some((40, Some(2)))),
            (3, gw("90"), Some((90, Some(2)))),
            (4, old, Some((90, Some(2)))),
            (5, gw("10"), Some((10, Some(2)))),
            (6, gw("0"), Some((0, None))),
            (7, gw("5"), Some((5, Some(7)))),
        ],
        b,
    );
}

#[test]
fn clock_and_uptime() {
    let c = |s: &Site| {
        s.clock
            .as_ref()
            .map(|c| (c.value, c.since_ms))
            .zip(s.uptime.map(|u| (u.seconds, u.boot)))
    };
    let un = ClockState::Unsynced;
    run(
        vec![
            (
                1,
                sample_on(
                    GATEWAY_DEVICE,
                    un,
                    false,
                    &[("spool.depth", "0"), ("gateway.uptime", "60")],
                ),
                Some(((false, 1), (60.0, false))),
            ),
            (
                2,
                sample_on("ups1", un, false, &[]),
                Some(((false, 1), (60.0, false))),
            ),
            // A backlog record's clock is history.
            (
                3,
                sample_on("ups1", ClockState::Synced, true, &[]),
                Some(((false, 1), (60.0, false))),
            ),
            (
                4,
                sample_on("pi", un, false, &[("system.uptime", "4000")]),
                Some(((false, 1), (4000.0, true))),
            ),
            // The service's uptime does not replace the Pi's fresh one.
            (
                5,
                sample_on(
                    GATEWAY_DEVICE,
                    un,
                    false,
                    &[("spool.depth", "0"), ("gateway.uptime", "120")],
                ),
                Some(((false, 1), (4000.0, true))),
            ),
            (
                6,
                sample_on("ups1", ClockState::Corrected, false, &[]),
                Some(((true, 6), (4000.0, true))),
            ),
            (
                7,
                sample_on("ups1", ClockState::Synced, false, &[]),
                Some(((true, 6), (4000.0, true))),
            ),
        ],
        c,
    );
    let mut f = Fleet::default();
    f.apply(SITE, &online(), 0);
    f.apply(
        SITE,
        &sample_on("pi", un, false, &[("system.uptime", "100")]),
        1_000,
    );
    assert_eq!(f.site(SITE).unwrap().uptime_at(61_000), Some(160.0));
    f.apply(SITE, &offline("lost"), 2_000);
    assert_eq!(f.site(SITE).unwrap().uptime_at(61_000), Some(100.0));
}

#[test]
fn inventory_identity_and_devices() {
    let mut f = Fleet::default();
    let inv = |site: &str, clock: &str| {
        format!(
            r#"{{"site":"{site}","version":"0.3.0","boot_id":"b9","run_id":"r9","started":1,"config_hash":"sha256:9f2c","clock":"{clock}","devices":[{{"id":"ups1","type":"megatec","interval_ms":5000,"values":["ups.load"],"words":{{"ups.load":{{"unit":"%","vi":"Tải","en":"Load"}}}}}}],"sinks":["mqtt"],"commands":{{"enabled":true,"allow":["status"]}}}}"#
        )
    };
    f.inventory(SITE, inv(SITE, "unsynced").as_bytes(), 10)
        .unwrap();
    let s = f.site(SITE).unwrap();
    assert_eq!(s.identity.version.as_deref(), Some("0.3.0"));
    assert_eq!(s.identity.config_hash.as_deref(), Some("sha256:9f2c"));
    assert_eq!(s.clock.as_ref().map(|c| c.value), Some(false));
    let d = &s.devices["ups1"];
    assert_eq!(
        (d.kind.as_deref(), d.interval_ms),
        (Some("megatec"), Some(5000))
    );
    assert_eq!(d.words["ups.load"].vi, "Tải");
    f.inventory(SITE, inv(SITE, "synced").as_bytes(), 20)
        .unwrap();
    assert_eq!(
        f.site(SITE)
            .unwrap()
            .clock
            .as_ref()
            .map(|c| (c.value, c.since_ms)),
        Some((true, 20))
    );
    let other = inv("xa-b", "synced");
    let cases: &[(&str, &[u8], &str)] = &[
        ("xa-a", b"{", "inventory"),
        ("xa-a", br#"{"site":"xa-a"}"#, "missing field"),
        ("xa-a", other.as_bytes(), "names site"),
    ];
    for (site, payload, says) in cases {
        let e = f.inventory(site, payload, 30).unwrap_err().to_string();
        assert!(e.contains(says), "{e}");
    }
    assert_eq!(f.site(SITE).unwrap().identity.inventory_ms, Some(20));
}

#[test]
fn device_health_and_silence() {
    let h = |s: &Site| {
        s.devices
            .get("ups1")
            .and_then(|d| d.health.as_ref())
            .map(|h| (h.value.clone(), h.since_ms))
    };
    let fault = DeviceHealth::Fault(Some("device.fault happened".into()));
    run(
        vec![
            (1, live("ups1", &[]), Some((DeviceHealth::Ok, 1))),
            (
                2,
                event_on("ups1", "device.lost", Severity::Warning, &[]),
                Some((DeviceHealth::Stale, 2)),
            ),
            (3, live("ups1", &[]), Some((DeviceHealth::Ok, 3))),
            (
                4,
                event_on("ups1", "device.fault", Severity::Warning, &[]),
                Some((fault.clone(), 4)),
            ),
            // A reading while faulted (a partial one) leaves the fault.
            (5, live("ups1", &[]), Some((fault.clone(), 4))),
            (
                6,
                live(
                    GATEWAY_DEVICE,
                    &[("spool.depth", "0"), ("device.ups1.health", "fault")],
                ),
                Some((fault, 4)),
            ),
            (
                7,
                event_on("ups1", "device.restored", Severity::Info, &[]),
                Some((DeviceHealth::Ok, 7)),
            ),
            (
                8,
                live(
                    GATEWAY_DEVICE,
                    &[("spool.depth", "0"), ("device.ups1.health", "stale")],
                ),
                Some((DeviceHealth::Stale, 8)),
            ),
        ],
        h,
    );
    // Silence: three intervals without a reading while online.
    let mut f = Fleet::default();
    f.apply(SITE, &online(), 0);
    f.apply(SITE, &live("ups1", &[]), 1_000);
    // The tick names the sites it changed (saved with the next commit),
    // once: a device already silent is no change.
    let cases = [
        (100_000, DeviceHealth::Ok, 0),
        (181_001, DeviceHealth::Silent, 1),
        (182_000, DeviceHealth::Silent, 0),
    ];
    for (now, want, changed) in cases {
        assert_eq!(f.tick(now).len(), changed, "at {now}");
        assert_eq!(
            h(f.site(SITE).unwrap()).map(|h| h.0),
            Some(want),
            "at {now}"
        );
    }
    f.apply(SITE, &live("ups1", &[]), 200_000);
    assert_eq!(
        h(f.site(SITE).unwrap()).map(|h| h.0),
        Some(DeviceHealth::Ok)
    );
    // Offline: nothing turns silent.
    f.apply(SITE, &offline("lost"), 210_000);
    f.tick(10_000_000);
    assert_eq!(
        h(f.site(SITE).unwrap()).map(|h| h.0),
        Some(DeviceHealth::Ok)
    );
    assert_eq!(f.now_ms(), 10_000_000);
}

#[test]
fn recent_events_are_kept_bounded() {
    let mut f = Fleet::default();
    for i in 0..(RECENT as i64 + 5) {
        f.apply(
            SITE,
            &event_on("ups1", "ups.test_started", Severity::Info, &[]),
            i,
        );
    }
    let s = f.site(SITE).unwrap();
    assert_eq!(s.recent.len(), RECENT);
    assert_eq!(
        s.recent.back().map(|r| r.received_ms),
        Some(RECENT as i64 + 4)
    );
}

#[test]
fn sites_rank_worst_first() {
    use crate::ledger::SiteTotals;
    let mut f = Fleet::default();
    let feed: Vec<(&str, Vec<Message>)> = vec![
        ("ok", vec![online()]),
        ("off", vec![offline("lost")]),
        ("bat", vec![online(), live("ups1", &[("ups.status", "OB")])]),
        (
            "low",
            vec![online(), live("ups1", &[("ups.status", "OB LB")])],
        ),
        (
            "wan",
            vec![online(), event_on("r", "wan.down", Severity::Critical, &[])],
        ),
        (
            "log",
            vec![online(), live(GATEWAY_DEVICE, &[("spool.depth", "7")])],
        ),
        (
            "clk",
            vec![online(), sample_on("x", ClockState::Unsynced, false, &[])],
        ),
        ("new", vec![live("x", &[])]),
    ];
    for (site, msgs) in &feed {
        for m in msgs {
            // The messages name SITE; the fleet takes the topic's site.
            f.apply(site, m, 1);
        }
    }
    let holes = SiteTotals {
        unexplained: 3,
        ..SiteTotals::default()
    };
    let mut order: Vec<(&str, (u8, i64))> = f
        .sites()
        .map(|(id, s)| (id, rank(s, (id == "ok").then_some(&holes))))
        .collect();
    order.sort_by_key(|(id, r)| (*r, *id));
    let ids: Vec<&str> = order.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, ["off", "low", "bat", "wan", "ok", "log", "clk", "new"]);
    assert_eq!(
        rank::concerns(f.site("ok").unwrap(), None),
        Vec::<Concern>::new()
    );
}

#[test]
fn state_saves_as_json_and_restores() {
    let (m, _) = super::demo::demo(12, 2).unwrap();
    let json = serde_json::to_string(m.fleet.state()).unwrap();
    let back: std::collections::BTreeMap<String, Site> = serde_json::from_str(&json).unwrap();
    let f = Fleet::restore(FleetConfig::default(), back);
    assert_eq!(f.state(), m.fleet.state());
    // The alarms raised by events, which no retained message brings back.
    let alarms = f
        .site("site-00011")
        .map(|s| s.alarms.keys().cloned().collect::<Vec<_>>());
    assert_eq!(
        alarms,
        Some(vec![
            "contacts/door".to_owned(),
            "ups1/ambient.temperature".to_owned()
        ])
    );
}
