//! One site as the operations centre sees it: what its gateway last said
//! about itself and its devices, each field with the time it last changed.
//! The fields are plain data; `super::read` fills them from messages.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use wardgate_contract::{ClockState, Severity};

/// Online or offline, from the retained status (birth or last will).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Presence {
    /// The birth message of a run.
    Online,
    /// The last will (`lost`), a clean stop (`shutdown`), a stop because
    /// the UPS runs flat (`power`), or a reason this contract does not know.
    Offline { reason: String },
}

/// A value with the time (the consumer's clock, ms) it took that value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Since<T> {
    pub value: T,
    pub since_ms: i64,
}

impl<T: PartialEq> Since<T> {
    /// Sets `slot` to `value`; the time moves only when the value changes.
    pub(crate) fn set(slot: &mut Option<Since<T>>, value: T, at_ms: i64) -> bool {
        match slot {
            Some(s) if s.value == value => false,
            _ => {
                *slot = Some(Since {
                    value,
                    since_ms: at_ms,
                });
                true
            }
        }
    }
}

/// Mains or battery, as one UPS last said (a live `ups.status`, or a live
/// `ups.on_battery` / `ups.on_line` event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ups {
    /// On battery, since when (the consumer's clock).
    pub on_battery: Since<bool>,
    /// `battery.runtime` (seconds) of the last live reading that had it.
    pub runtime_s: Option<f64>,
    /// `ups.status` has `LB`, or `ups.low_battery` without `ups.battery_ok`.
    pub low_battery: bool,
}

/// A device's health: the gateway's `device.<id>.health`, or its
/// `device.lost` / `device.fault` / `device.restored` events, or (at the
/// IOC) no reading for three of the device's intervals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceHealth {
    Ok,
    /// The gateway has no fresh reading of it.
    Stale,
    /// The gateway reports a fault, with its reason when one was sent.
    Fault(Option<String>),
    /// The IOC has had no reading of it for three intervals while the
    /// site was online (the gateway's own word may not have come).
    Silent,
}

impl DeviceHealth {
    /// The word for metrics and logs.
    pub fn word(&self) -> &'static str {
        match self {
            DeviceHealth::Ok => "ok",
            DeviceHealth::Stale => "stale",
            DeviceHealth::Fault(_) => "fault",
            DeviceHealth::Silent => "silent",
        }
    }
}

/// One device of a site (not the gateway itself).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// The inventory's `type` (`megatec`, `nut`, `probe`, `gpio`…).
    pub kind: Option<String>,
    /// The inventory's `interval_ms`.
    pub interval_ms: Option<u64>,
    /// When its last reading arrived (consumer's clock).
    pub last_reading_ms: Option<i64>,
    /// The `ts` of its newest reading (the gateway's clock).
    pub last_ts: Option<i64>,
    pub health: Option<Since<DeviceHealth>>,
    /// The values of its last live reading.
    pub values: BTreeMap<String, String>,
    /// Its value names in words (the inventory's `words`).
    pub words: BTreeMap<String, super::inventory::Words>,
    pub ups: Option<Ups>,
}

/// An alarm that is raised now: a threshold crossed, a contact active, a
/// UPS or Pi condition; it goes away when cleared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    pub device: String,
    /// The event code that raised it.
    pub code: String,
    pub severity: Severity,
    /// The event's message (English or the configured label: free text).
    pub message: String,
    /// `values."message.vi"`, when sent (free text).
    pub message_vi: Option<String>,
    pub since_ms: i64,
}

/// An event kept for the site's page (the last few).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recent {
    pub device: String,
    pub code: String,
    pub severity: Severity,
    pub message: String,
    pub message_vi: Option<String>,
    /// The event's `ts` (gateway clock).
    pub ts: i64,
    pub received_ms: i64,
}

/// The backlog waiting on the gateway's card (`spool.depth` of its live
/// telemetry) and since when it has been above 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backlog {
    pub depth: u64,
    /// When a depth above 0 was first seen after a 0 (None at 0).
    pub since_ms: Option<i64>,
    pub at_ms: i64,
}

/// Seconds since the Pi booted (`system.uptime`) or, without it, since
/// the service started (`gateway.uptime`), at a time (consumer's clock).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Uptime {
    pub seconds: f64,
    pub at_ms: i64,
    /// `true`: since boot (`system.uptime`); `false`: since the service
    /// started (`gateway.uptime`).
    pub boot: bool,
}

/// What the inventory says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub version: Option<String>,
    pub config_hash: Option<String>,
    pub boot_id: Option<String>,
    pub run_id: Option<String>,
    pub inventory_ms: Option<i64>,
}

/// Everything the fleet view keeps of one site.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Site {
    pub presence: Option<Since<Presence>>,
    /// When any message of the site last arrived (consumer's clock).
    pub last_seen_ms: Option<i64>,
    /// WAN up (`true`) or down, from live `wan.down`/`wan.up` events or a
    /// probe device's `<target>.up` values.
    pub wan: Option<Since<bool>>,
    pub backlog: Option<Backlog>,
    /// Synced (`true`) or not, from the newest live record's `clock` and
    /// the inventory's `clock`.
    pub clock: Option<Since<bool>>,
    pub uptime: Option<Uptime>,
    pub identity: Identity,
    pub devices: BTreeMap<String, Device>,
    /// Raised alarms by `<device>/<key>`: the key is the value name of a
    /// threshold, the input name of a contact, the code of a paired event.
    pub alarms: BTreeMap<String, Alarm>,
    /// The last [`RECENT`] events, newest last.
    pub recent: VecDeque<Recent>,
}

/// How many events a site keeps for its page.
pub const RECENT: usize = 12;

impl Site {
    /// On battery: any UPS of the site on battery (None: no UPS heard of).
    pub fn on_battery(&self) -> Option<bool> {
        let mut any = None;
        for u in self.devices.values().filter_map(|d| d.ups.as_ref()) {
            let b = u.on_battery.value;
            any = Some(any.unwrap_or(false) || b);
        }
        any
    }

    /// The UPS on battery the longest (or any UPS), for "since" and runtime.
    pub fn ups(&self) -> Option<&Ups> {
        self.devices
            .values()
            .filter_map(|d| d.ups.as_ref())
            .min_by_key(|u| (!u.on_battery.value, u.on_battery.since_ms))
    }

    /// Online now (`None`: no status seen yet).
    pub fn online(&self) -> Option<bool> {
        self.presence
            .as_ref()
            .map(|p| matches!(p.value, Presence::Online))
    }

    /// Seconds of uptime at `now_ms`, counting on from the last reading
    /// while online.
    pub fn uptime_at(&self, now_ms: i64) -> Option<f64> {
        let u = self.uptime?;
        let on = self.online() == Some(true);
        let extra = if on {
            (now_ms.saturating_sub(u.at_ms)).max(0) as f64 / 1000.0
        } else {
            0.0
        };
        Some(u.seconds + extra)
    }

    pub(crate) fn remember(&mut self, r: Recent) {
        if self.recent.len() >= RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(r);
    }
}

/// How a clock state reads: corrected records were corrected because the
/// clock is synchronised now.
pub(crate) fn synced(c: ClockState) -> bool {
    !matches!(c, ClockState::Unsynced)
}
