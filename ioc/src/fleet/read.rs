//! How each message moves a site's fields. Live records (`historical:
//! false`) say how things are now and move the state, in the order they
//! arrive; backlog records are history: they move only a device's last
//! reading time and the list of recent events.

use wardgate_contract::{Delivered, Event, Events, Sample, Severity, Telemetry, Value, Values};

use super::site::{synced, Alarm, Backlog, Device, DeviceHealth, Recent, Since, Site, Ups, Uptime};

/// Events that raise an alarm and the code that clears it. The key of the
/// alarm is the raising code (with `values.interface` for an interface).
const PAIRS: &[(&str, &str)] = &[
    ("ups.overload", "ups.overload_cleared"),
    ("ups.bypass", "ups.bypass_ended"),
    ("ups.off", "ups.on"),
    ("ups.abnormal", "ups.abnormal_cleared"),
    ("ups.shutdown_pending", "ups.on_line"),
    ("pi.under_voltage", "pi.voltage_ok"),
    ("spool.degraded", "spool.restored"),
    ("interface.down", "interface.up"),
];

/// Code families of the gateway's catalogue (src/events.rs): an event of
/// any other family on a device is a contact (`<input>.<state>`).
const FAMILIES: &[&str] = &[
    "ups",
    "device",
    "threshold",
    "pi",
    "wan",
    "interface",
    "router",
    "modbus",
    "mqtt",
    "influxdb",
    "spool",
    "gateway",
    "power",
    "clock",
    "cmd",
    "config",
];

/// A value in words for the site page (numbers as sent, flags, words).
fn word(v: &Value) -> String {
    match v {
        Value::Num(n) => format!("{n}"),
        Value::Bool(b) => b.to_string(),
        Value::Str(s) => s.clone(),
    }
}

fn ups_tokens(values: &Values) -> Option<(bool, bool)> {
    let st = values.get("ups.status")?.as_str()?;
    let has = |t: &str| st.split_whitespace().any(|x| x == t);
    Some((has("OB"), has("LB")))
}

fn ups_entry(d: &mut Device, at_ms: i64) -> &mut Ups {
    d.ups.get_or_insert(Ups {
        on_battery: Since {
            value: false,
            since_ms: at_ms,
        },
        runtime_s: None,
        low_battery: false,
    })
}

fn set_on_battery(d: &mut Device, on: bool, at_ms: i64) {
    let u = ups_entry(d, at_ms);
    if u.on_battery.value != on {
        u.on_battery = Since {
            value: on,
            since_ms: at_ms,
        };
    }
}

fn set_health(d: &mut Device, h: DeviceHealth, at_ms: i64) {
    let slot = &mut d.health;
    Since::set(slot, h, at_ms);
}

pub(super) fn telemetry(site: &mut Site, env: &Telemetry, at_ms: i64) {
    if env.device == wardgate_contract::GATEWAY_DEVICE {
        for d in env.records.iter().filter(|d| !d.historical) {
            gateway_sample(site, &d.record, at_ms);
        }
        return;
    }
    let probe = site
        .devices
        .get(&env.device)
        .and_then(|d| d.kind.as_deref())
        == Some("probe");
    let dev = site.devices.entry(env.device.clone()).or_default();
    for Delivered { historical, record } in &env.records {
        dev.last_ts = Some(dev.last_ts.map_or(record.ts, |t| t.max(record.ts)));
        dev.last_reading_ms = Some(at_ms);
        if *historical {
            continue;
        }
        device_sample(dev, record, at_ms);
        Since::set(&mut site.clock, synced(record.clock), at_ms);
        if let Some(up) = record.values.get("system.uptime").and_then(Value::as_f64) {
            site.uptime = Some(Uptime {
                seconds: up,
                at_ms,
                boot: true,
            });
        }
        if probe {
            let ups: Vec<bool> = record
                .values
                .0
                .iter()
                .filter(|(k, _)| k.ends_with(".up"))
                .filter_map(|(_, v)| match v {
                    Value::Bool(b) => Some(*b),
                    _ => None,
                })
                .collect();
            if !ups.is_empty() {
                Since::set(&mut site.wan, ups.iter().any(|b| *b), at_ms);
            }
        }
    }
}

fn device_sample(dev: &mut Device, s: &Sample, at_ms: i64) {
    dev.values = s
        .values
        .0
        .iter()
        .map(|(k, v)| (k.clone(), word(v)))
        .collect();
    if matches!(
        dev.health.as_ref().map(|h| &h.value),
        None | Some(DeviceHealth::Silent | DeviceHealth::Stale)
    ) {
        set_health(dev, DeviceHealth::Ok, at_ms);
    }
    if let Some((ob, lb)) = ups_tokens(&s.values) {
        set_on_battery(dev, ob, at_ms);
        ups_entry(dev, at_ms).low_battery = lb;
    }
    if let Some(rt) = s.values.get("battery.runtime").and_then(Value::as_f64) {
        ups_entry(dev, at_ms).runtime_s = Some(rt);
    }
}

fn gateway_sample(site: &mut Site, s: &Sample, at_ms: i64) {
    Since::set(&mut site.clock, synced(s.clock), at_ms);
    let v = &s.values;
    if let Some(depth) = v.get("spool.depth").and_then(Value::as_f64) {
        let depth = depth.max(0.0) as u64;
        let since_ms = match site.backlog {
            _ if depth == 0 => None,
            Some(Backlog {
                since_ms: Some(t), ..
            }) => Some(t),
            _ => Some(at_ms),
        };
        site.backlog = Some(Backlog {
            depth,
            since_ms,
            at_ms,
        });
    }
    if let Some(up) = v.get("gateway.uptime").and_then(Value::as_f64) {
        // The Pi's own uptime (since boot) wins when a `system` device
        // sends it; the service's stands in for it otherwise.
        if !site
            .uptime
            .is_some_and(|u| u.boot && at_ms - u.at_ms < 600_000)
        {
            site.uptime = Some(Uptime {
                seconds: up,
                at_ms,
                boot: false,
            });
        }
    }
    for (name, value) in &v.0 {
        let Some(id) = name
            .strip_prefix("device.")
            .and_then(|r| r.strip_suffix(".health"))
        else {
            continue;
        };
        let Some(w) = value.as_str() else { continue };
        let dev = site.devices.entry(id.to_owned()).or_default();
        let h = match w {
            "ok" => DeviceHealth::Ok,
            "stale" => DeviceHealth::Stale,
            "fault" => match dev.health.as_ref().map(|h| &h.value) {
                // Keep the reason its `device.fault` event gave.
                Some(DeviceHealth::Fault(r)) => DeviceHealth::Fault(r.clone()),
                _ => DeviceHealth::Fault(None),
            },
            _ => continue,
        };
        set_health(dev, h, at_ms);
    }
}

pub(super) fn events(site: &mut Site, env: &Events, at_ms: i64) {
    for Delivered { historical, record } in &env.records {
        site.remember(Recent {
            device: env.device.clone(),
            code: record.code.clone(),
            severity: record.severity,
            message: record.message.clone(),
            message_vi: message_vi(&record.values),
            ts: record.ts,
            received_ms: at_ms,
        });
        if !historical {
            event(site, &env.device, record, at_ms);
        }
    }
}

fn message_vi(v: &Values) -> Option<String> {
    v.get("message.vi")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn raise(site: &mut Site, device: &str, key: String, e: &Event, at_ms: i64) {
    let slot = alarm_key(device, &key);
    if site.alarms.contains_key(&slot) {
        return;
    }
    site.alarms.insert(
        slot,
        Alarm {
            device: device.to_owned(),
            code: e.code.clone(),
            severity: e.severity,
            message: e.message.clone(),
            message_vi: message_vi(&e.values),
            since_ms: at_ms,
        },
    );
}

/// `<device>/<key>`: a device id has no `/` (the contract's grammar).
fn alarm_key(device: &str, key: &str) -> String {
    format!("{device}/{key}")
}

fn clear(site: &mut Site, device: &str, key: String) {
    site.alarms.remove(&alarm_key(device, &key));
}

/// The value a threshold event is about: its values but the limit and
/// the Vietnamese message.
fn threshold_key(v: &Values) -> String {
    v.0.keys()
        .find(|k| *k != "threshold.limit" && *k != "message.vi")
        .cloned()
        .unwrap_or_default()
}

fn event(site: &mut Site, device: &str, e: &Event, at_ms: i64) {
    let code = e.code.as_str();
    let interface = |base: &str| match e.values.get("interface").and_then(Value::as_str) {
        Some(i) => format!("{base}:{i}"),
        None => base.to_owned(),
    };
    match code {
        "ups.on_battery" | "ups.on_line" => {
            let dev = site.devices.entry(device.to_owned()).or_default();
            set_on_battery(dev, code == "ups.on_battery", at_ms);
            if let Some(rt) = e.values.get("battery.runtime").and_then(Value::as_f64) {
                ups_entry(dev, at_ms).runtime_s = Some(rt);
            }
            if code == "ups.on_line" {
                clear(site, device, "ups.shutdown_pending".into());
            }
        }
        "ups.low_battery" | "ups.battery_ok" => {
            let dev = site.devices.entry(device.to_owned()).or_default();
            ups_entry(dev, at_ms).low_battery = code == "ups.low_battery";
        }
        "wan.down" | "wan.up" => {
            Since::set(&mut site.wan, code == "wan.up", at_ms);
        }
        "device.lost" | "device.fault" | "device.restored" => {
            let h = match code {
                "device.lost" => DeviceHealth::Stale,
                "device.fault" => DeviceHealth::Fault(Some(e.message.clone())),
                _ => DeviceHealth::Ok,
            };
            let dev = site.devices.entry(device.to_owned()).or_default();
            set_health(dev, h, at_ms);
        }
        "threshold.high" | "threshold.low" => {
            let key = threshold_key(&e.values);
            raise(site, device, key, e, at_ms);
        }
        "threshold.cleared" => clear(site, device, threshold_key(&e.values)),
        _ => paired_or_contact(site, device, e, at_ms, &interface),
    }
}

fn paired_or_contact(
    site: &mut Site,
    device: &str,
    e: &Event,
    at_ms: i64,
    interface: &dyn Fn(&str) -> String,
) {
    let code = e.code.as_str();
    if let Some((up, _)) = PAIRS.iter().find(|(up, _)| *up == code) {
        raise(site, device, interface(up), e, at_ms);
        return;
    }
    if let Some((up, _)) = PAIRS.iter().find(|(_, down)| *down == code) {
        clear(site, device, interface(up));
        return;
    }
    let Some((input, _state)) = code.rsplit_once('.') else {
        return;
    };
    let family = code.split('.').next().unwrap_or_default();
    if device == wardgate_contract::GATEWAY_DEVICE || FAMILIES.contains(&family) {
        return;
    }
    // A contact: its configured severity when it becomes active, info
    // when it goes back (docs/mqtt.md, `<input>.<state>`).
    if e.severity >= Severity::Warning {
        raise(site, device, input.to_owned(), e, at_ms);
    } else {
        clear(site, device, input.to_owned());
    }
}
