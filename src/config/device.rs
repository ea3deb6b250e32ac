//! Reading the `[[device]]` tables: each table by its `type` into that
//! kind's struct (the set of kinds is closed: [`DeviceConfig`] in
//! `source/`), and the checks every kind shares (id, interval, thresholds)
//! or that span devices.

use std::collections::HashSet;
use std::time::Duration;

use super::read_gathering;
use crate::ids::{GATEWAY_DEVICE, REPLY_DEVICE};
use crate::model::valid_id;
use crate::source::config::KINDS;
use crate::source::threshold::ThresholdConfig;
use crate::types::{duration_problem, DAY_MS};

pub use crate::source::config::DeviceConfig;

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Reads one `[[device]]` table (`key` is `device[i]`), gathering
/// problems; `None` when it cannot be read.
fn read_one(key: &str, v: ::config::Value, p: &mut Vec<String>) -> Option<DeviceConfig> {
    let ::config::ValueKind::Table(mut t) = v.kind else {
        p.push(format!("{key}: must be a [[device]] table"));
        return None;
    };
    let kind = match t.remove("type").map(|k| k.into_string()) {
        Some(Ok(k)) => k,
        Some(Err(e)) => {
            p.push(format!("{key}.type: {e}"));
            return None;
        }
        None => {
            p.push(format!(
                "{key}: missing field `type` (one of {})",
                KINDS.join(", ")
            ));
            return None;
        }
    };
    let v = ::config::Value::new(None, ::config::ValueKind::Table(t));
    Some(match kind.as_str() {
        "sim" => DeviceConfig::Sim(read_gathering(v, key, p)?),
        "megatec" => DeviceConfig::Megatec(read_gathering(v, key, p)?),
        "nut" => DeviceConfig::Nut(read_gathering(v, key, p)?),
        "apc-smart" => DeviceConfig::ApcSmart(read_gathering(v, key, p)?),
        "onewire" => DeviceConfig::OneWire(read_gathering(v, key, p)?),
        "system" => DeviceConfig::System(read_gathering(v, key, p)?),
        "probe" => DeviceConfig::Probe(read_gathering(v, key, p)?),
        "gpio" => DeviceConfig::Gpio(read_gathering(v, key, p)?),
        "modbus" => DeviceConfig::Modbus(read_gathering(v, key, p)?),
        "snmp" => DeviceConfig::Snmp(read_gathering(v, key, p)?),
        other => {
            p.push(format!(
                "{key}.type: unknown variant `{other}`, expected one of {}",
                KINDS.join(", ")
            ));
            return None;
        }
    })
}

/// Reads every `[[device]]` table (`tables`: the `device` key, if any),
/// gathering problems: those read, with their index in `[[device]]`, and
/// whether every table could be read.
pub(super) fn read_all(
    tables: Option<::config::Value>,
    p: &mut Vec<String>,
) -> (Vec<(usize, DeviceConfig)>, bool) {
    let list = match tables.map(|t| t.into_array()) {
        None => return (Vec::new(), true),
        Some(Ok(list)) => list,
        Some(Err(e)) => {
            p.push(format!(
                "device: {e} (write each device as a [[device]] table)"
            ));
            return (Vec::new(), false);
        }
    };
    let mut devices = Vec::new();
    let mut all = true;
    for (i, v) in list.into_iter().enumerate() {
        match read_one(&format!("device[{i}]"), v, p) {
            Some(d) => devices.push((i, d)),
            None => all = false,
        }
    }
    (devices, all)
}

/// The bounds of a threshold's numbers: limits that are numbers (TOML
/// allows `nan` and `inf`, which no reading ever crosses) and a `for` of
/// at most a day.
fn threshold_bounds(t: &ThresholdConfig, key: &str) -> Vec<String> {
    let mut p = Vec::new();
    for (name, v) in [("high", t.high), ("low", t.low)] {
        match v {
            Some(v) if !v.is_finite() => {
                p.push(format!("{key}.{name}: {v} must be a finite number"))
            }
            _ => {}
        }
    }
    if let Some(why) = duration_problem(t.for_, ms(0), Some(ms(DAY_MS))) {
        p.push(format!("{key}.for: {why}"));
    }
    p
}

/// Problems of the devices (with their index in `[[device]]`): those every
/// kind shares, each kind's own, and those that span devices.
pub(super) fn problems<'a>(
    devices: impl Iterator<Item = (usize, &'a DeviceConfig)> + Clone,
) -> Vec<String> {
    let mut p = Vec::new();
    let mut seen = HashSet::new();
    for (i, d) in devices.clone() {
        let id = d.id();
        let key = format!("device[{i}]");
        if !valid_id(id) {
            p.push(format!(
                "{key}.id: {id:?} is not a valid id (lowercase letters, digits, - and _, starting with a letter or digit)"
            ));
        } else if id == GATEWAY_DEVICE {
            p.push(format!(
                "{key}.id: {id:?} is reserved for the gateway's own telemetry"
            ));
        } else if id == REPLY_DEVICE {
            p.push(format!("{key}.id: {id:?} is reserved for command replies"));
        } else if !seen.insert(id) {
            p.push(format!("{key}.id: {id:?} is used by another device"));
        }
        for (ti, t) in d.thresholds().iter().enumerate() {
            let tk = format!("{key}.threshold[{ti}]");
            p.extend(t.problems(&tk));
            p.extend(threshold_bounds(t, &tk));
        }
        // 1 ms: the simulator's load tests poll that fast; one day: see
        // DAY_MS (the supervisor's timers and the staleness deadline of
        // three intervals are built from it).
        if let Some(why) = duration_problem(d.interval(), ms(1), Some(ms(DAY_MS))) {
            p.push(format!("{key}.interval: {why}"));
        }
        p.extend(d.kind_problems(&key));
        for (k, path, kind) in d.files() {
            if let Some(why) = crate::host::file::config_problem(path, kind) {
                p.push(format!("{key}.{k}: {why}"));
            }
        }
    }
    p.extend(crate::source::modbus::config::shared_bus_problems(
        devices.filter_map(|(i, d)| match d {
            DeviceConfig::Modbus(c) => Some((i, c)),
            _ => None,
        }),
    ));
    p
}
