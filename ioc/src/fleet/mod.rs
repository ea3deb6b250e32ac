//! The fleet view: a pure state machine (no clock read, no I/O) that
//! keeps, per site, what an operator looks at first: online or offline
//! and since when, mains or battery, the WAN link, alarms raised, the
//! backlog on the card and its age, the clock, version and config hash,
//! and per device its last reading and health (docs/ioc.md, "Fleet
//! view").
//!
//! Fed the decoded messages the ledger gets ([`Fleet::apply`]) and the
//! inventory ([`Fleet::inventory`]); [`Fleet::tick`] moves what time
//! alone changes. The ledger's holes are not kept here: the page and
//! `/metrics` read them from the [`crate::ledger::Ledger`] beside it.

pub mod demo;
mod feed;
mod inventory;
mod rank;
mod read;
mod site;

use std::collections::BTreeMap;

use wardgate_contract::{Message, Status};

pub use feed::{FeedError, Monitor};
pub use inventory::{Inventory, InventoryDevice, Words};
pub use rank::{concerns, rank, Concern};
pub use site::{
    Alarm, Backlog, Device, DeviceHealth, Identity, Presence, Recent, Since, Site, Ups, Uptime,
    RECENT,
};

/// What the fleet view may be told that it cannot take.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// An inventory payload that is not the contract's: count it as
    /// malformed for the site, log it, keep the previous inventory.
    #[error("site {site}: inventory: {source}")]
    Inventory {
        site: String,
        #[source]
        source: serde_json::Error,
    },
    /// An inventory naming another site than its topic: a contract
    /// break; it is not used.
    #[error("site {site}: the inventory names site {named:?}")]
    InventorySite { site: String, named: String },
}

impl FleetError {
    /// The site whose message it was.
    pub fn site(&self) -> &str {
        match self {
            FleetError::Inventory { site, .. } | FleetError::InventorySite { site, .. } => site,
        }
    }
}

/// How time turns into state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetConfig {
    /// A device with no reading for this many of its intervals, while its
    /// site is online, is shown silent.
    pub silent_intervals: u32,
    /// The interval of a device the inventory has not described.
    pub default_interval_ms: u64,
    /// Never silent sooner than this: a device read every 5 s is not
    /// silent after 15 s of a slow link (3 of the gateway's telemetry
    /// intervals by default).
    pub min_silent_ms: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            silent_intervals: 3,
            default_interval_ms: 60_000,
            min_silent_ms: 180_000,
        }
    }
}

/// Every site heard of.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    config: FleetConfig,
    sites: BTreeMap<String, Site>,
    /// The time of the last [`Fleet::tick`].
    now_ms: i64,
}

impl Fleet {
    pub fn new(config: FleetConfig) -> Self {
        Fleet {
            config,
            ..Fleet::default()
        }
    }

    /// A fleet view from a saved state ([`Fleet::state`]): what a store
    /// gives back after a restart. The retained status and inventory that
    /// the broker sends again on subscribing then correct it.
    pub fn restore(config: FleetConfig, sites: BTreeMap<String, Site>) -> Self {
        Fleet {
            config,
            sites,
            now_ms: 0,
        }
    }

    /// The state to save: every site (plain serde structs).
    pub fn state(&self) -> &BTreeMap<String, Site> {
        &self.sites
    }

    /// Takes one decoded message of `site` (the topic's) received at
    /// `received_at_ms` (the consumer's clock).
    pub fn apply(&mut self, site: &str, msg: &Message, received_at_ms: i64) {
        let s = self.site_mut(site);
        s.last_seen_ms = Some(
            s.last_seen_ms
                .map_or(received_at_ms, |t| t.max(received_at_ms)),
        );
        match msg {
            Message::Telemetry(env) => read::telemetry(s, env, received_at_ms),
            Message::Events(env) => read::events(s, env, received_at_ms),
            Message::Status(st) => status(s, st, received_at_ms),
        }
    }

    /// Takes an inventory payload of `site`.
    pub fn inventory(
        &mut self,
        site: &str,
        payload: &[u8],
        received_at_ms: i64,
    ) -> Result<(), FleetError> {
        let inv = Inventory::from_slice(payload).map_err(|source| FleetError::Inventory {
            site: site.to_owned(),
            source,
        })?;
        if inv.site != site {
            return Err(FleetError::InventorySite {
                site: site.to_owned(),
                named: inv.site,
            });
        }
        let s = self.site_mut(site);
        s.last_seen_ms = Some(
            s.last_seen_ms
                .map_or(received_at_ms, |t| t.max(received_at_ms)),
        );
        s.identity.version = Some(inv.version);
        s.identity.config_hash = Some(inv.config_hash);
        s.identity.boot_id = Some(inv.boot_id);
        s.identity.run_id = Some(inv.run_id);
        s.identity.inventory_ms = Some(received_at_ms);
        Since::set(&mut s.clock, inv.clock == "synced", received_at_ms);
        for d in inv.devices {
            let dev = s.devices.entry(d.id).or_default();
            dev.kind = Some(d.kind);
            dev.interval_ms = Some(d.interval_ms);
            dev.words = d.words;
        }
        Ok(())
    }

    /// Moves what time alone changes: a device of an online site with no
    /// reading for `silent_intervals` of its intervals becomes silent.
    /// Returns the sites it changed (for the store to save them).
    pub fn tick(&mut self, now_ms: i64) -> Vec<String> {
        self.now_ms = now_ms;
        let cfg = self.config;
        let mut changed = Vec::new();
        for (id, s) in self.sites.iter_mut() {
            let Some(p) = s.presence.as_ref().filter(|p| p.value == Presence::Online) else {
                continue;
            };
            let online_since = p.since_ms;
            let mut touched = false;
            for d in s.devices.values_mut() {
                let interval = d.interval_ms.unwrap_or(cfg.default_interval_ms);
                let limit = interval
                    .saturating_mul(u64::from(cfg.silent_intervals))
                    .max(cfg.min_silent_ms);
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                let heard = d.last_reading_ms.unwrap_or(online_since).max(online_since);
                let quiet = now_ms.saturating_sub(heard) > limit;
                let ok = matches!(
                    d.health.as_ref().map(|h| &h.value),
                    None | Some(DeviceHealth::Ok)
                );
                if quiet && ok && Since::set(&mut d.health, DeviceHealth::Silent, now_ms) {
                    touched = true;
                }
            }
            if touched {
                changed.push(id.clone());
            }
        }
        changed
    }

    /// The time of the last tick (0 before any).
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    pub fn site(&self, site: &str) -> Option<&Site> {
        self.sites.get(site)
    }

    /// Every site, by id.
    pub fn sites(&self) -> impl Iterator<Item = (&str, &Site)> {
        self.sites.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.sites.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }

    fn site_mut(&mut self, site: &str) -> &mut Site {
        if !self.sites.contains_key(site) {
            self.sites.insert(site.to_owned(), Site::default());
        }
        self.sites
            .get_mut(site)
            .expect("the site was inserted just above")
    }
}

fn status(s: &mut Site, st: &Status, at_ms: i64) {
    match st {
        Status::Online {
            version,
            boot_id,
            run_id,
            ..
        } => {
            Since::set(&mut s.presence, Presence::Online, at_ms);
            s.identity.version = Some(version.clone());
            s.identity.boot_id = Some(boot_id.clone());
            s.identity.run_id = Some(run_id.clone());
        }
        Status::Offline { reason } => {
            // The time runs from the first offline word; a second one
            // (lost after shutdown) changes the reason, not the time.
            let since = match &s.presence {
                Some(Since {
                    value: Presence::Offline { .. },
                    since_ms,
                }) => *since_ms,
                _ => at_ms,
            };
            s.presence = Some(Since {
                value: Presence::Offline {
                    reason: reason.as_str().to_owned(),
                },
                since_ms: since,
            });
        }
    }
}

#[cfg(test)]
mod tests;
