//! One batch of messages between two commits: each message through the
//! pipeline ([`Consumer`]), and what the commit must save: the sites and
//! streams it touched, device types from inventories, and the
//! line-protocol points of the new readings.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Deserialize;
use wardgate_contract::{Message, StreamKey, Topic, GATEWAY_DEVICE};

use super::ratelog::RateLog;
use crate::ledger::{Ledger, RecordOutcome};
use crate::pipeline::{ConsumeError, Consumer};
use crate::store::Commit;
use crate::tsdb::line;

/// The part of an inventory the ingest reads: each device's `type`, the
/// time-series `type` tag (docs/influxdb.md).
#[derive(Deserialize)]
struct Inventory {
    devices: Vec<InventoryDevice>,
}

#[derive(Deserialize)]
struct InventoryDevice {
    id: String,
    #[serde(rename = "type")]
    kind: String,
}

/// What a batch holds until its commit.
#[derive(Debug)]
pub struct Batch {
    prefix: String,
    types: BTreeMap<(String, String), String>,
    sites: BTreeSet<String>,
    streams: BTreeSet<StreamKey>,
    new_types: Vec<((String, String), String)>,
    lines: Vec<String>,
    /// False without a `[tsdb]`: no points are made (nothing would drain
    /// the outbox).
    write_points: bool,
    log: RateLog,
}

impl Batch {
    /// A batch knowing the device types saved before.
    pub fn new(prefix: &str, types: BTreeMap<(String, String), String>) -> Self {
        Batch {
            prefix: prefix.to_owned(),
            types,
            sites: BTreeSet::new(),
            streams: BTreeSet::new(),
            new_types: Vec::new(),
            lines: Vec::new(),
            write_points: true,
            log: RateLog::new(Duration::from_secs(60)),
        }
    }

    /// Makes no time-series points (no `[tsdb]` configured).
    pub fn without_points(mut self) -> Self {
        self.write_points = false;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.sites.is_empty() && self.new_types.is_empty() && self.lines.is_empty()
    }

    /// Takes one message; returns true when its topic is not the
    /// contract's (counted by the caller, logged here once a minute).
    pub fn take(&mut self, c: &mut Consumer, topic: &str, payload: &[u8], at_ms: i64) -> bool {
        let parsed = match Topic::parse(&self.prefix, topic) {
            Ok(t) => t,
            Err(e) => {
                // Nothing of the contract to count it under: the caller
                // counts it; logged once a minute.
                if let Some(held) = self.log.allow("", Instant::now()) {
                    tracing::warn!(topic, error = %e, held, "message on a topic outside the contract: dropped");
                }
                return true;
            }
        };
        let site = parsed.site().to_owned();
        self.sites.insert(site.clone());
        match c.handle(topic, payload, at_ms) {
            Ok(Some(applied)) => {
                let conflicts = applied
                    .records
                    .iter()
                    .filter(|o| matches!(o, RecordOutcome::Conflict))
                    .count();
                if conflicts > 0 {
                    // Counted in the site's `contract_breaks`; the first
                    // copy is kept.
                    let key = format!("{site}/conflict");
                    if let Some(held) = self.log.allow(&key, Instant::now()) {
                        tracing::warn!(%site, topic, conflicts, held, "a copy with other content than the record received before (contract break): first kept");
                    }
                }
                if let Topic::Data { .. } = parsed {
                    // It decoded in `handle`: decode again for its stream
                    // and points (the consumer keeps the message to itself).
                    if let Ok(m) = Message::decode(&parsed, payload) {
                        self.points(&site, &m, &applied.records);
                    }
                }
            }
            Ok(None) => {
                if let Topic::Inventory { .. } = parsed {
                    self.inventory(&mut c.ledger, &site, payload);
                }
            }
            Err(ConsumeError::Decode { site, source }) => {
                // Counted as malformed in the site's totals (saved with
                // the site at this batch's commit).
                if let Some(held) = self.log.allow(&site, Instant::now()) {
                    tracing::warn!(%site, topic, error = %source, held, "payload outside the contract: counted as malformed, not stored");
                }
            }
            Err(ConsumeError::Topic(_)) => {}
        }
        false
    }

    fn inventory(&mut self, ledger: &mut Ledger, site: &str, payload: &[u8]) {
        match serde_json::from_slice::<Inventory>(payload) {
            Ok(inv) => {
                for d in inv.devices {
                    let k = (site.to_owned(), d.id);
                    if self.types.get(&k) != Some(&d.kind) {
                        self.types.insert(k.clone(), d.kind.clone());
                        self.new_types.push((k, d.kind));
                    }
                }
            }
            Err(e) => {
                ledger.malformed(site);
                if let Some(held) = self.log.allow(site, Instant::now()) {
                    tracing::warn!(%site, error = %e, held, "inventory outside the contract: counted as malformed");
                }
            }
        }
    }

    /// The stream a data message touched, and the points of its new
    /// readings.
    fn points(&mut self, site: &str, m: &Message, outcomes: &[RecordOutcome]) {
        let write_ts = |o: &RecordOutcome, ts: i64| match o {
            RecordOutcome::New { corrected_ts, .. }
            | RecordOutcome::FilledLate { corrected_ts } => Some(corrected_ts.unwrap_or(ts)),
            RecordOutcome::CorrectedCopy => Some(ts),
            _ => None,
        };
        match m {
            Message::Telemetry(env) => {
                self.streams.insert(env.stream_key());
                if !self.write_points {
                    return;
                }
                let ty = if env.device == GATEWAY_DEVICE {
                    GATEWAY_DEVICE.to_owned()
                } else {
                    match self.types.get(&(site.to_owned(), env.device.clone())) {
                        Some(t) => t.clone(),
                        None => {
                            let key = format!("{site}/{}/type", env.device);
                            if let Some(held) = self.log.allow(&key, Instant::now()) {
                                tracing::warn!(%site, device = %env.device, held, "no inventory names this device's type yet: written with type=-");
                            }
                            String::new()
                        }
                    }
                };
                for (d, o) in env.records.iter().zip(outcomes) {
                    if let Some(ts) = write_ts(o, d.record.ts) {
                        self.lines
                            .push(line::sample(site, &env.device, &ty, &d.record, ts));
                    }
                }
            }
            Message::Events(env) => {
                self.streams.insert(env.stream_key());
                if !self.write_points {
                    return;
                }
                for (d, o) in env.records.iter().zip(outcomes) {
                    if let Some(ts) = write_ts(o, d.record.ts) {
                        self.lines
                            .push(line::event(site, &env.device, &d.record, ts));
                    }
                }
            }
            Message::Status(_) => {}
        }
    }

    /// What the commit saves; the batch starts empty again.
    pub fn drain(&mut self, ledger: &Ledger, messages: u64) -> Commit {
        let state = ledger.state();
        let sites = std::mem::take(&mut self.sites)
            .into_iter()
            .filter_map(|s| state.sites.get(&s).map(|st| (s, st.clone())))
            .collect();
        let windows = std::mem::take(&mut self.streams)
            .into_iter()
            .filter_map(|k| ledger.dedup().saved(&k).map(|w| (k, w)))
            .collect();
        Commit {
            sites,
            windows,
            types: std::mem::take(&mut self.new_types),
            lines: std::mem::take(&mut self.lines),
            messages,
            delivered: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEL: &[u8] = br#"{"site":"xa-a","device":"ups1","epoch":"0000000000000001","samples":[{"historical":false,"seq":0,"ts":5,"clock":"synced","values":{"battery.charge":97.0}}]}"#;

    #[test]
    fn types_from_the_inventory_points_once_and_everything_counted() {
        let mut c = Consumer::new("ioc", Ledger::default());
        let mut b = Batch::new("ioc", BTreeMap::new());
        // Before any inventory: type "-".
        assert!(!b.take(&mut c, "ioc/xa-a/ups1/telemetry", TEL, 0));
        let inv = br#"{"site":"xa-a","devices":[{"id":"ups1","type":"megatec"}]}"#;
        assert!(!b.take(&mut c, "ioc/xa-a/inventory", inv, 0));
        let tel2 = String::from_utf8_lossy(TEL).replace("\"seq\":0", "\"seq\":1");
        assert!(!b.take(&mut c, "ioc/xa-a/ups1/telemetry", tel2.as_bytes(), 0));
        // A copy: nothing written. A bad payload and a bad inventory: malformed.
        assert!(!b.take(&mut c, "ioc/xa-a/ups1/telemetry", TEL, 0));
        assert!(!b.take(&mut c, "ioc/xa-a/ups1/telemetry", b"{", 0));
        assert!(!b.take(&mut c, "ioc/xa-a/inventory", b"[]", 0));
        // Outside the contract: the caller counts it.
        assert!(b.take(&mut c, "elsewhere/x", b"{}", 0));
        let commit = b.drain(&c.ledger, 7);
        assert_eq!(
            commit.lines,
            vec![
                "telemetry,device=ups1,site=xa-a,type=- battery.charge=97.0,seq=0i 5",
                "telemetry,device=ups1,site=xa-a,type=megatec battery.charge=97.0,seq=1i 5",
            ]
        );
        assert_eq!(
            commit.types,
            vec![(("xa-a".into(), "ups1".into()), "megatec".into())]
        );
        assert_eq!(commit.sites.len(), 1);
        assert_eq!(commit.windows.len(), 1);
        let t = c.ledger.totals("xa-a").unwrap();
        assert_eq!((t.received, t.duplicates, t.malformed), (2, 1, 2));
        assert!(b.is_empty());
        // Without [tsdb]: no points.
        let mut b = Batch::new("ioc", BTreeMap::new()).without_points();
        let tel3 = String::from_utf8_lossy(TEL).replace("\"seq\":0", "\"seq\":2");
        b.take(&mut c, "ioc/xa-a/ups1/telemetry", tel3.as_bytes(), 0);
        let commit = b.drain(&c.ledger, 1);
        assert!(commit.lines.is_empty());
        assert_eq!(
            commit.windows.len(),
            1,
            "the stream's window is saved all the same"
        );
    }
}
