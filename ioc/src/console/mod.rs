//! `wardgate-ioc fleet`: the fleet table in a terminal, or as JSON for
//! scripts (docs/ioc.md, "fleet").
//!
//! It reads the state the running service keeps: the SQLite store its
//! config names, read-only ([`snapshot`]). Not the service's web server:
//! the store answers whether the service runs or not (after a crash, in a
//! restart loop, before a broker is up: when an operator at a terminal
//! most wants to know), needs no port and no login in front of the pages,
//! and gives the ledger and the fleet view of one commit, at most one
//! `ingest.commit_interval` behind the pages. It needs read access to the
//! store's file (root, or the service's user).

pub mod snapshot;
pub mod table;
pub mod words;

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::fleet::{concerns, Alarm, Concern, Presence};
use crate::ledger::SiteTotals;
use snapshot::{SavedSite, Snapshot, SnapshotError};

/// Exit codes (sysexits.h, as `check`'s).
pub mod exit {
    pub const OK: u8 = 0;
    /// The store cannot be read (EX_UNAVAILABLE).
    pub const UNAVAILABLE: u8 = 69;
    /// The config cannot be used (EX_CONFIG).
    pub const CONFIG: u8 = 78;
}

/// Why the table cannot be printed.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The config cannot be used (exit 78): fix the file.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// The store cannot be read (exit 69): the message says why.
    #[error("{0}")]
    Store(#[from] SnapshotError),
    /// The output cannot be written (a closed pipe): nothing to do.
    #[error("writing the output: {0}")]
    Write(#[from] std::io::Error),
}

/// Prints the fleet from the store `path`'s config names: the table in
/// `lang` (`vi` unless `en`), or JSON. Returns the exit code.
pub fn fleet(path: &Path, lang: &str, json: bool, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let r = (|| -> Result<(), ConsoleError> {
        let cfg = crate::config::load(path)?;
        let snap = snapshot::read(&cfg.store_path, cfg.ingest.from_zero)?;
        let now = crate::web::system_ms();
        for (site, what, why) in &snap.unreadable {
            writeln!(
                err,
                "wardgate-ioc fleet: site {site}: its saved {what} does not read: {why}"
            )?;
        }
        if json {
            let doc = to_json(&snap, &cfg.store_path.display().to_string(), now);
            serde_json::to_writer_pretty(&mut *out, &doc).map_err(std::io::Error::other)?;
            writeln!(out)?;
        } else {
            out.write_all(table::render(words::words(lang), &snap, now).as_bytes())?;
        }
        out.flush()?;
        Ok(())
    })();
    match r {
        Ok(()) => exit::OK,
        Err(e) => {
            let _ = writeln!(err, "wardgate-ioc fleet: {e}");
            match e {
                ConsoleError::Config(_) => exit::CONFIG,
                _ => exit::UNAVAILABLE,
            }
        }
    }
}

/// The JSON document: the store, the time, every site worst first.
#[derive(Debug, Serialize)]
pub struct FleetJson<'a> {
    pub store: String,
    pub generated_ms: i64,
    pub messages_committed: u64,
    pub sites: Vec<SiteJson<'a>>,
}

/// One site for scripts: what the table shows, with times in ms (the
/// consumer's clock) and nothing cut.
#[derive(Debug, Serialize)]
pub struct SiteJson<'a> {
    pub site: &'a str,
    /// What is wrong, worst first (`offline`, `low_battery`, `on_battery`,
    /// `wan_down`, `critical_alarm`, `unexplained_holes`, `alarm`,
    /// `device_trouble`, `backlog`, `clock_unsynced`, `unknown`).
    pub concerns: Vec<&'static str>,
    /// `online`, `offline` or null (no status yet).
    pub state: Option<&'static str>,
    /// The offline status's reason (`lost`, `shutdown`, `power`).
    pub reason: Option<&'a str>,
    pub since_ms: Option<i64>,
    pub last_seen_ms: Option<i64>,
    pub on_battery: Option<bool>,
    pub low_battery: Option<bool>,
    pub on_battery_since_ms: Option<i64>,
    pub battery_runtime_s: Option<f64>,
    pub wan_up: Option<bool>,
    pub wan_since_ms: Option<i64>,
    pub alarms: Vec<&'a Alarm>,
    pub backlog: Option<u64>,
    pub backlog_since_ms: Option<i64>,
    pub clock_synced: Option<bool>,
    pub clock_since_ms: Option<i64>,
    pub version: Option<&'a str>,
    pub config_hash: Option<&'a str>,
    /// Numbers lost with no reason given (null: no ledger, or one that
    /// does not read).
    pub unexplained: Option<u64>,
    pub totals: Option<SiteTotals>,
}

/// A concern's word for scripts.
pub fn concern_word(c: Concern) -> &'static str {
    match c {
        Concern::Offline => "offline",
        Concern::LowBattery => "low_battery",
        Concern::OnBattery => "on_battery",
        Concern::WanDown => "wan_down",
        Concern::CriticalAlarm => "critical_alarm",
        Concern::UnexplainedHoles => "unexplained_holes",
        Concern::Alarm => "alarm",
        Concern::DeviceTrouble => "device_trouble",
        Concern::Backlog => "backlog",
        Concern::ClockUnsynced => "clock_unsynced",
        Concern::Unknown => "unknown",
    }
}

/// The document `--json` prints.
pub fn to_json<'a>(snap: &'a Snapshot, store: &str, now_ms: i64) -> FleetJson<'a> {
    FleetJson {
        store: store.to_owned(),
        generated_ms: now_ms,
        messages_committed: snap.messages,
        sites: table::ordered(snap)
            .into_iter()
            .map(|(id, s)| site_json(id, s))
            .collect(),
    }
}

fn site_json<'a>(id: &'a str, saved: &'a SavedSite) -> SiteJson<'a> {
    let s = &saved.site;
    let totals = table::ok_totals(saved);
    let ups = s.ups();
    SiteJson {
        site: id,
        concerns: concerns(s, totals.as_ref())
            .into_iter()
            .map(concern_word)
            .collect(),
        state: s.online().map(|on| if on { "online" } else { "offline" }),
        reason: s.presence.as_ref().and_then(|p| match &p.value {
            Presence::Offline { reason } => Some(reason.as_str()),
            Presence::Online => None,
        }),
        since_ms: s.presence.as_ref().map(|p| p.since_ms),
        last_seen_ms: s.last_seen_ms,
        on_battery: s.on_battery(),
        low_battery: ups.map(|u| u.on_battery.value && u.low_battery),
        on_battery_since_ms: ups
            .filter(|u| u.on_battery.value)
            .map(|u| u.on_battery.since_ms),
        battery_runtime_s: ups.and_then(|u| u.runtime_s).filter(|r| r.is_finite()),
        wan_up: s.wan.as_ref().map(|w| w.value),
        wan_since_ms: s.wan.as_ref().map(|w| w.since_ms),
        alarms: s.alarms.values().collect(),
        backlog: s.backlog.map(|b| b.depth),
        backlog_since_ms: s.backlog.and_then(|b| b.since_ms),
        clock_synced: s.clock.as_ref().map(|c| c.value),
        clock_since_ms: s.clock.as_ref().map(|c| c.since_ms),
        version: s.identity.version.as_deref(),
        config_hash: s.identity.config_hash.as_deref(),
        unexplained: totals.map(|t| t.unexplained),
        totals,
    }
}

#[cfg(test)]
mod tests;
