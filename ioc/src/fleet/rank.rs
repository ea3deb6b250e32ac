//! What is wrong with a site, worst first: the order of the fleet page.

use serde::Serialize;

use super::site::{DeviceHealth, Presence, Site};
use crate::ledger::SiteTotals;

/// One thing wrong with a site. The order of the variants is the order of
/// concern: an offline site first, a site with nothing wrong last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Concern {
    Offline,
    LowBattery,
    OnBattery,
    /// The link may go next: before the holes, which are about the past.
    WanDown,
    CriticalAlarm,
    UnexplainedHoles,
    Alarm,
    DeviceTrouble,
    Backlog,
    ClockUnsynced,
    /// No status seen yet.
    Unknown,
}

/// Everything wrong with `site` (its ledger totals beside it), worst first.
pub fn concerns(site: &Site, totals: Option<&SiteTotals>) -> Vec<Concern> {
    let mut out = Vec::new();
    match site.presence.as_ref().map(|p| &p.value) {
        Some(Presence::Offline { .. }) => out.push(Concern::Offline),
        None => out.push(Concern::Unknown),
        Some(Presence::Online) => {}
    }
    if let Some(u) = site.ups().filter(|u| u.on_battery.value) {
        out.push(if u.low_battery {
            Concern::LowBattery
        } else {
            Concern::OnBattery
        });
    }
    if totals.is_some_and(|t| t.unexplained > 0) {
        out.push(Concern::UnexplainedHoles);
    }
    if site.wan.as_ref().is_some_and(|w| !w.value) {
        out.push(Concern::WanDown);
    }
    let critical = site
        .alarms
        .values()
        .any(|a| a.severity == wardgate_contract::Severity::Critical);
    if critical {
        out.push(Concern::CriticalAlarm);
    } else if !site.alarms.is_empty() {
        out.push(Concern::Alarm);
    }
    let trouble = site.devices.values().any(|d| {
        d.health
            .as_ref()
            .is_some_and(|h| h.value != DeviceHealth::Ok)
    });
    if trouble {
        out.push(Concern::DeviceTrouble);
    }
    if site.backlog.is_some_and(|b| b.depth > 0) {
        out.push(Concern::Backlog);
    }
    if site.clock.as_ref().is_some_and(|c| !c.value) {
        out.push(Concern::ClockUnsynced);
    }
    out.sort();
    out
}

/// The key that sorts sites worst first: the worst concern (none sorts
/// last), then the longest-standing, then the id.
pub fn rank(site: &Site, totals: Option<&SiteTotals>) -> (u8, i64) {
    let worst = concerns(site, totals).first().copied();
    let level = worst.map_or(u8::MAX, |c| c as u8);
    let since = match worst {
        Some(Concern::Offline) => site.presence.as_ref().map(|p| p.since_ms),
        Some(Concern::OnBattery | Concern::LowBattery) => site.ups().map(|u| u.on_battery.since_ms),
        Some(Concern::Backlog) => site.backlog.and_then(|b| b.since_ms),
        _ => None,
    };
    (level, since.unwrap_or(i64::MAX))
}
