//! One batch of messages between two commits: each message through the
//! ledger and the fleet view ([`Monitor::handle`], one decode), and what
//! the commit must save: the sites and streams it touched, device types
//! from inventories, and the line-protocol points of the new readings.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use wardgate_contract::{Message, StreamKey, Topic, GATEWAY_DEVICE};

use super::ratelog::RateLog;
use crate::fleet::{FeedError, Monitor};
use crate::history::Tracker;
use crate::ledger::RecordOutcome;
use crate::pipeline::{ConsumeError, Handled};
use crate::store::Commit;
use crate::tsdb::line;

/// What became of one message, for the caller's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Decoded and applied (or a topic of the contract nobody reads).
    Applied,
    /// A payload (or inventory) outside the contract: counted as
    /// malformed for its site, logged here at most once a minute.
    Malformed,
    /// A topic outside the contract: nothing to count it under but the
    /// caller's count; logged here at most once a minute.
    Foreign,
}

/// What a batch holds until its commit.
#[derive(Debug)]
pub struct Batch {
    types: BTreeMap<(String, String), String>,
    sites: BTreeSet<String>,
    streams: BTreeSet<StreamKey>,
    new_types: Vec<((String, String), String)>,
    lines: Vec<String>,
    /// False without a `[tsdb]`: no points are made (nothing would drain
    /// the outbox).
    write_points: bool,
    /// The monthly report's history (none: not kept, as in tests of the
    /// ledger alone).
    history: Option<Tracker>,
    log: RateLog,
}

impl Batch {
    /// A batch knowing the device types saved before.
    pub fn new(types: BTreeMap<(String, String), String>) -> Self {
        Batch {
            types,
            sites: BTreeSet::new(),
            streams: BTreeSet::new(),
            new_types: Vec::new(),
            lines: Vec::new(),
            write_points: true,
            history: None,
            log: RateLog::new(Duration::from_secs(60)),
        }
    }

    /// Keeps the monthly report's history with `tracker`: each message's
    /// site observed after it was applied, the changes saved in the
    /// batch's commit.
    pub fn with_history(mut self, tracker: Tracker) -> Self {
        self.history = Some(tracker);
        self
    }

    /// Makes no time-series points (no `[tsdb]` configured).
    pub fn without_points(mut self) -> Self {
        self.write_points = false;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.sites.is_empty() && self.new_types.is_empty() && self.lines.is_empty()
    }

    /// Takes one message (below), then shows its site's fleet view and
    /// ledger totals to the history tracker; what the gateway sent itself
    /// (not a status or an inventory, retained at the broker) is a sign
    /// of life.
    pub fn take(&mut self, m: &mut Monitor, topic: &str, payload: &[u8], at_ms: i64) -> Taken {
        let (taken, site) = self.apply(m, topic, payload, at_ms);
        if let (Some(t), Some(site)) = (self.history.as_mut(), site) {
            let retained = topic.ends_with("/status") || topic.ends_with("/inventory");
            if !retained {
                t.hear(&site, at_ms);
            }
            t.observe(&site, m.fleet.site(&site), m.ledger.totals(&site), at_ms);
        }
        taken
    }

    /// Sites changed by something else than a message (a device turned
    /// silent): saved at the next commit.
    pub fn touch(&mut self, sites: impl IntoIterator<Item = String>) {
        self.sites.extend(sites);
    }

    /// Takes one message through the ledger and the fleet view; and the
    /// site it was about, if its topic named one.
    fn apply(
        &mut self,
        m: &mut Monitor,
        topic: &str,
        payload: &[u8],
        at_ms: i64,
    ) -> (Taken, Option<String>) {
        match m.handle(topic, payload, at_ms) {
            Ok(Handled::Message {
                topic: t,
                message,
                applied,
            }) => {
                let site = t.site();
                self.sites.insert(site.to_owned());
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
                self.points(site, &message, &applied.records);
                (Taken::Applied, Some(site.to_owned()))
            }
            Ok(Handled::Untyped(t)) => {
                let site = t.site();
                self.sites.insert(site.to_owned());
                if let Topic::Inventory { .. } = t {
                    self.inventory(m, site);
                }
                (Taken::Applied, Some(site.to_owned()))
            }
            Err(FeedError::Consume(ConsumeError::Topic(e))) => {
                if let Some(held) = self.log.allow("", Instant::now()) {
                    tracing::warn!(topic, error = %e, held, "message on a topic outside the contract: dropped");
                }
                (Taken::Foreign, None)
            }
            Err(FeedError::Consume(ConsumeError::Decode { site, source })) => {
                // Counted as malformed in the site's totals (saved with
                // the site at this batch's commit).
                if let Some(held) = self.log.allow(&site, Instant::now()) {
                    tracing::warn!(%site, topic, error = %source, held, "payload outside the contract: counted as malformed, not stored");
                }
                self.sites.insert(site.clone());
                (Taken::Malformed, Some(site))
            }
            Err(FeedError::Fleet(e)) => {
                let site = e.site().to_owned();
                if let Some(held) = self.log.allow(&site, Instant::now()) {
                    tracing::warn!(%site, error = %e, held, "inventory outside the contract: counted as malformed");
                }
                self.sites.insert(site.clone());
                (Taken::Malformed, Some(site))
            }
        }
    }

    /// The devices' types, as the fleet view read them from the inventory
    /// just taken: the time-series `type` tag.
    fn inventory(&mut self, m: &Monitor, site: &str) {
        let Some(s) = m.fleet.site(site) else {
            return;
        };
        for (id, d) in &s.devices {
            let Some(kind) = &d.kind else { continue };
            let k = (site.to_owned(), id.clone());
            if self.types.get(&k) != Some(kind) {
                self.types.insert(k.clone(), kind.clone());
                self.new_types.push((k, kind.clone()));
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
    pub fn drain(&mut self, m: &Monitor, messages: u64) -> Commit {
        let ledger = &m.ledger;
        let state = ledger.state();
        let touched = std::mem::take(&mut self.sites);
        let fleet = touched
            .iter()
            .filter_map(|s| m.fleet.site(s).map(|st| (s.clone(), st.clone())))
            .collect();
        let sites = touched
            .into_iter()
            .filter_map(|s| state.sites.get(&s).map(|st| (s, st.clone())))
            .collect();
        let windows = std::mem::take(&mut self.streams)
            .into_iter()
            .filter_map(|k| ledger.dedup().saved(&k).map(|w| (k, w)))
            .collect();
        Commit {
            sites,
            fleet,
            windows,
            types: std::mem::take(&mut self.new_types),
            lines: std::mem::take(&mut self.lines),
            messages,
            delivered: Vec::new(),
            history: self
                .history
                .as_mut()
                .map(Tracker::drain)
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Fleet;
    use crate::ledger::Ledger;

    const TEL: &[u8] = br#"{"site":"xa-a","device":"ups1","epoch":"0000000000000001","samples":[{"historical":false,"seq":0,"ts":5,"clock":"synced","values":{"battery.charge":97.0}}]}"#;
    const INV: &[u8] = br#"{"site":"xa-a","version":"0.1.0","boot_id":"b","run_id":"r","started":1,"config_hash":"sha256:ab","clock":"synced","devices":[{"id":"ups1","type":"megatec","interval_ms":5000,"values":[],"words":{}}],"sinks":["mqtt"],"commands":{"enabled":false,"allow":[]}}"#;

    #[test]
    fn types_from_the_inventory_points_once_and_everything_counted() {
        let mut m = Monitor::new("ioc", Ledger::default(), Fleet::default());
        let mut b = Batch::new(BTreeMap::new());
        // Before any inventory: type "-".
        assert_eq!(
            b.take(&mut m, "ioc/xa-a/ups1/telemetry", TEL, 0),
            Taken::Applied
        );
        assert_eq!(b.take(&mut m, "ioc/xa-a/inventory", INV, 0), Taken::Applied);
        let tel2 = String::from_utf8_lossy(TEL).replace("\"seq\":0", "\"seq\":1");
        let t2 = b.take(&mut m, "ioc/xa-a/ups1/telemetry", tel2.as_bytes(), 0);
        assert_eq!(t2, Taken::Applied);
        // A copy: nothing written. A bad payload and a bad inventory: malformed.
        assert_eq!(
            b.take(&mut m, "ioc/xa-a/ups1/telemetry", TEL, 0),
            Taken::Applied
        );
        let bad = b.take(&mut m, "ioc/xa-a/ups1/telemetry", b"{", 0);
        assert_eq!(bad, Taken::Malformed);
        assert_eq!(
            b.take(&mut m, "ioc/xa-a/inventory", b"[]", 0),
            Taken::Malformed
        );
        // Outside the contract: the caller counts it.
        assert_eq!(b.take(&mut m, "elsewhere/x", b"{}", 0), Taken::Foreign);
        let commit = b.drain(&m, 7);
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
        // The fleet view of the site, saved beside its ledger.
        assert_eq!(commit.fleet.len(), 1);
        assert_eq!(commit.fleet[0].1.identity.version.as_deref(), Some("0.1.0"));
        let t = m.ledger.totals("xa-a").unwrap();
        assert_eq!((t.received, t.duplicates, t.malformed), (2, 1, 2));
        assert!(b.is_empty());
        // Without [tsdb]: no points.
        let mut b = Batch::new(BTreeMap::new()).without_points();
        let tel3 = String::from_utf8_lossy(TEL).replace("\"seq\":0", "\"seq\":2");
        b.take(&mut m, "ioc/xa-a/ups1/telemetry", tel3.as_bytes(), 0);
        let commit = b.drain(&m, 1);
        assert!(commit.lines.is_empty());
        assert_eq!(
            commit.windows.len(),
            1,
            "the stream's window is saved all the same"
        );
        // A site a tick changed is saved too.
        b.touch(["xa-a".to_owned()]);
        assert!(!b.is_empty());
        assert_eq!(b.drain(&m, 0).fleet.len(), 1);
    }
}
