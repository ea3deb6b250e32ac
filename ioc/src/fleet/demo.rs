//! A fleet to look at: the load generator's traffic for `sites` sites
//! (their ledgers, holes, resets, backlogs), then for each site what a
//! running gateway says next (its inventory, a live UPS reading, its
//! telemetry), with a few sites in trouble: one on battery, one offline,
//! one with a growing backlog, one without internet, one with alarms, one
//! with an unsynchronised clock, two on a newer version. For the page's
//! tests, its screenshots and its bench.

use wardgate_contract::{
    ClockState, Delivered, Envelope, Epoch, Event, Message, OfflineReason, Record, Sample,
    Severity, Status, Values, GATEWAY_DEVICE,
};

use super::{FeedError, Fleet, FleetError, Monitor};
use crate::ledger::Ledger;
use crate::loadgen::{generate, LoadConfig, LoadgenError};

/// Why the demo could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The load generator refused the size or prefix.
    #[error(transparent)]
    Loadgen(#[from] LoadgenError),
    /// A message of the traffic was refused: a bug in the generator.
    #[error(transparent)]
    Feed(#[from] FeedError),
    /// An inventory the demo built was refused: a bug in the demo.
    #[error(transparent)]
    Fleet(#[from] FleetError),
}

/// Which site plays which trouble (by index; the rest are well).
pub const ON_BATTERY: usize = 3;
pub const OFFLINE: usize = 5;
pub const BACKLOG: usize = 7;
pub const WAN_DOWN: usize = 9;
pub const ALARMS: usize = 11;
pub const UNSYNCED: usize = 13;

/// The demo fleet and the time to look at it (ms).
pub fn demo(sites: usize, seed: u64) -> Result<(Monitor, i64), DemoError> {
    let cfg = LoadConfig {
        sites,
        seed,
        ..LoadConfig::default()
    };
    let traffic = generate(&cfg)?;
    let mut m = Monitor::new(&cfg.prefix, Ledger::default(), Fleet::default());
    let mut end = 0;
    for w in &traffic.messages {
        m.handle(&w.topic, &w.payload, w.at_ms)?;
        end = end.max(w.at_ms);
    }
    let now = end + 20 * 60_000;
    for i in 0..sites {
        let site = format!("site-{i:05}");
        let devices = m
            .fleet
            .site(&site)
            .map(|s| s.devices.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        // Straight to the fleet view: these messages are not numbered
        // as the generator numbers the site's streams, and the ledger
        // keeps what the generator planted.
        for (msg, at) in now_messages(&site, i, &devices, now) {
            match msg {
                Now::Msg(msg) => m.fleet.apply(&site, &msg, at),
                Now::Inventory(p) => m.fleet.inventory(&site, &p, at)?,
            }
        }
    }
    m.fleet.tick(now);
    Ok((m, now))
}

enum Now {
    Msg(Message),
    Inventory(Vec<u8>),
}

fn envelope<R: Record>(site: &str, device: &str, records: Vec<R>) -> Envelope<R> {
    Envelope {
        site: site.to_owned(),
        device: device.to_owned(),
        epoch: Epoch(0xdead_beef),
        records: records
            .into_iter()
            .map(|record| Delivered {
                historical: false,
                record,
            })
            .collect(),
    }
}

fn tel(site: &str, device: &str, s: Sample) -> Now {
    Now::Msg(Message::Telemetry(envelope(site, device, vec![s])))
}

fn evs(site: &str, device: &str, e: Event) -> Now {
    Now::Msg(Message::Events(envelope(site, device, vec![e])))
}

fn sample(seq: u64, ts: i64, clock: ClockState, v: Values) -> Sample {
    Sample {
        seq,
        ts,
        clock,
        values: v,
    }
}

fn event(seq: u64, ts: i64, severity: Severity, code: &str, msg: &str, v: Values) -> Event {
    Event {
        seq,
        ts,
        clock: ClockState::Synced,
        severity,
        code: code.into(),
        message: msg.into(),
        values: v,
    }
}

fn inventory(site: &str, version: &str, clock: &str, devices: &[String]) -> Vec<u8> {
    let devs: Vec<String> = devices
        .iter()
        .map(|d| {
            let (kind, words) = match d.as_str() {
                "ups1" => ("megatec", r#"{"ups.load":{"unit":"%","vi":"Tải","en":"Load"},"ups.status":{"vi":"Trạng thái","en":"Status"},"battery.runtime":{"unit":"s","vi":"Thời gian pin còn","en":"Battery runtime"}}"#),
                "env1" => ("modbus", r#"{"ambient.temperature":{"unit":"°C","vi":"Nhiệt độ","en":"Temperature"}}"#),
                _ => ("gpio", r#"{"door":{"vi":"Cửa phòng máy","en":"Equipment room door"}}"#),
            };
            format!(r#"{{"id":"{d}","type":"{kind}","interval_ms":5000,"values":[],"words":{words}}}"#)
        })
        .collect();
    format!(
        r#"{{"site":"{site}","version":"{version}","boot_id":"b","run_id":"r","started":1,"config_hash":"sha256:{:08x}","clock":"{clock}","devices":[{}],"sinks":["mqtt"],"commands":{{"enabled":true,"allow":["status"]}}}}"#,
        site.len() * 2_654_435_761 % 0xffff_ffff,
        devs.join(",")
    )
    .into_bytes()
}

/// What site `i` says in the last minutes before `now`.
fn now_messages(site: &str, i: usize, devices: &[String], now: i64) -> Vec<(Now, i64)> {
    let mut out = Vec::new();
    let t = now - 60_000;
    let version = if i % 17 == 16 { "0.2.0" } else { "0.1.0" };
    let clock = if i == UNSYNCED { "unsynced" } else { "synced" };
    let inv = inventory(site, version, clock, devices);
    out.push((Now::Inventory(inv), t - 600_000));
    if i == OFFLINE {
        let st = Status::Offline {
            reason: OfflineReason::Lost,
        };
        out.push((Now::Msg(Message::Status(st)), t - 1_500_000));
        return out;
    }
    let c = if i == UNSYNCED {
        ClockState::Unsynced
    } else {
        ClockState::Synced
    };
    let seq = 10_000_000;
    if devices.iter().any(|d| d == "ups1") {
        let on_battery = i == ON_BATTERY;
        if on_battery {
            let mut v = Values::new();
            v.set("ups.status", "OB DISCHRG");
            let msg = "UPS on battery: mains power lost";
            let e = event(
                seq,
                t - 540_000,
                Severity::Critical,
                "ups.on_battery",
                msg,
                v,
            );
            out.push((evs(site, "ups1", e), t - 540_000));
        }
        let mut v = Values::new();
        v.set("ups.status", if on_battery { "OB DISCHRG" } else { "OL" });
        v.num(
            "battery.runtime",
            if on_battery { 1_260.0 } else { 3_983.0 },
        );
        v.num("ups.load", 22.6);
        out.push((tel(site, "ups1", sample(seq, t, c, v)), t));
    }
    for d in devices
        .iter()
        .filter(|d| *d != "ups1" && *d != GATEWAY_DEVICE)
    {
        let mut v = Values::new();
        if d == "env1" {
            v.num("ambient.temperature", if i == ALARMS { 38.5 } else { 27.0 });
        } else {
            v.set("door", "closed");
        }
        out.push((tel(site, d, sample(seq, t, c, v)), t));
    }
    if i == ALARMS {
        let mut v = Values::new();
        v.num("ambient.temperature", 38.5);
        v.num("threshold.limit", 35.0);
        v.set("message.vi", "phòng máy 38,5 °C > 35 °C");
        let msg = "equipment room 38.5 °C > 35 °C";
        let e = event(
            seq + 1,
            t - 300_000,
            Severity::Warning,
            "threshold.high",
            msg,
            v,
        );
        out.push((evs(site, "ups1", e), t - 300_000));
        let mut v = Values::new();
        v.set("door", "open");
        let e = event(
            0,
            t - 200_000,
            Severity::Warning,
            "door.open",
            "Cửa phòng máy open",
            v,
        );
        out.push((evs(site, "contacts", e), t - 200_000));
    }
    if i == WAN_DOWN {
        let msg = "No probe target answers: the internet link is down";
        let e = event(
            0,
            t - 900_000,
            Severity::Critical,
            "wan.down",
            msg,
            Values::new(),
        );
        out.push((evs(site, "wan", e), t - 900_000));
    }
    for (k, at) in [(0u64, t - 60_000), (1, t)] {
        let mut v = Values::new();
        let depth = if i == BACKLOG { 340 + k * 60 } else { 0 };
        v.num("spool.depth", depth as f64);
        v.num("gateway.uptime", 86_400.0 + (at - t) as f64 / 1000.0);
        out.push((tel(site, GATEWAY_DEVICE, sample(seq + k, at, c, v)), at));
    }
    out
}
