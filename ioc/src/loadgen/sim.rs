//! One site's gateway, simulated: it numbers its records as the gateway
//! does (per device and kind, within an epoch), keeps a backlog while the
//! link is down and sends it behind live readings, and loses readings only
//! in the ways docs/mqtt.md describes, saying so as the gateway does (or,
//! for the planted undeclared holes, not at all).

use std::collections::BTreeMap;

use wardgate_contract::{
    codes, data_topic, status_topic, ClockState, CorruptRecords, Degraded, Delivered, DropReason,
    Envelope, Epoch, Event, GatewayHealth, Kind, OfflineReason, Quarantined, Record, Restored,
    ResumedStream, Sample, SeqRange, SequenceReset, Severity, Status, StreamKey, UncleanStop,
    Values, GATEWAY_DEVICE,
};

use super::{LoadConfig, Planted, Rng, Wire};

const DEVICES: [&str; 3] = ["ups1", "env1", "door1"];
/// Between two live steps.
const STEP_MS: i64 = 5_000;
/// What the simulated gateway's clock starts at (2026-11-27).
const T0: i64 = 1_795_832_190_000;

/// A scenario: a step of a site's life.
type Scenario<'a> = fn(&mut Sim<'a>);

pub(super) struct Sim<'a> {
    cfg: &'a LoadConfig,
    rng: Rng,
    site: String,
    devices: Vec<&'static str>,
    out: Vec<Wire>,
    planted: Planted,
    epoch: Epoch,
    ts: i64,
    boot: u32,
    run: u32,
    run_start: i64,
    /// The next number of each (device, kind) in the current epoch.
    next: BTreeMap<(String, Kind), u64>,
    /// This run's drop counters.
    health: GatewayHealth,
    /// The last live sample sent per device (for copies).
    last_sent: BTreeMap<&'static str, Sample>,
    /// Device 0's first message, sent again at the end.
    first_message: Option<Wire>,
    /// The highest number sent per stream.
    sent_max: BTreeMap<(String, Kind, Epoch), u64>,
    /// Numbers an unclean stop leaves missing: (device, kind, epoch,
    /// resumed, first missing). They are holes only once a number at or
    /// after `resumed` is sent: counted at the end.
    stop_gaps: Vec<(String, Kind, Epoch, u64, u64)>,
}

impl<'a> Sim<'a> {
    pub(super) fn run(cfg: &'a LoadConfig, index: usize) -> (Vec<Wire>, Planted) {
        let mut rng = Rng::new(cfg.seed.wrapping_mul(0x100_0000_01b3) ^ index as u64);
        let n = 1 + rng.below(DEVICES.len() as u64) as usize;
        let epoch = Epoch(rng.next_u64());
        let mut s = Sim {
            cfg,
            rng,
            site: format!("site-{index:05}"),
            devices: DEVICES[..n].to_vec(),
            out: Vec::new(),
            planted: Planted::default(),
            epoch,
            ts: T0 + index as i64 * 7,
            boot: 0,
            run: 0,
            run_start: T0,
            next: BTreeMap::new(),
            health: GatewayHealth::default(),
            last_sent: BTreeMap::new(),
            first_message: None,
            sent_max: BTreeMap::new(),
            stop_gaps: Vec::new(),
        };
        s.script();
        (s.out, s.planted)
    }

    /// The site's life: a start, quiet stretches, and each scenario with
    /// its chance; undeclared holes last; the backlog drained at the end.
    fn script(&mut self) {
        self.start(true);
        self.reset(None, true);
        self.quiet();
        let scenarios: [(u64, Scenario<'a>); 7] = [
            (50, Self::backlog_with_drops),
            (25, Self::degraded_card),
            (30, Self::clock_correction),
            (20, Self::crash),
            (15, Self::power_cut),
            (10, Self::wiped_card),
            (10, Self::own_epoch),
        ];
        for (i, (chance, scenario)) in scenarios.into_iter().enumerate() {
            if self.rng.chance(chance) {
                self.planted.scenarios[i] += 1;
                scenario(self);
                self.quiet();
            }
        }
        self.undeclared_holes();
        self.copies();
        self.quiet();
        for (device, kind, epoch, resumed, first) in std::mem::take(&mut self.stop_gaps) {
            if self
                .sent_max
                .get(&(device, kind, epoch))
                .is_some_and(|m| *m >= resumed)
            {
                self.planted.declared += resumed - first;
            }
        }
    }

    // ---- the gateway's primitives ----

    fn stamp(&mut self, device: &str, kind: Kind) -> u64 {
        let n = self.next.entry((device.to_owned(), kind)).or_insert(0);
        let seq = *n;
        *n += 1;
        seq
    }

    fn sample(&mut self, device: &str) -> Sample {
        let seq = self.stamp(device, Kind::Sample);
        let mut values = Values::new();
        values.num("ups.load", (self.rng.below(1000) as f64) / 10.0);
        values.set("ups.status", "OL");
        Sample {
            seq,
            ts: self.ts,
            clock: ClockState::Synced,
            values,
        }
    }

    fn send<R: Record>(&mut self, device: &str, records: Vec<R>, historical: bool) {
        if records.is_empty() {
            return;
        }
        let env = Envelope {
            site: self.site.clone(),
            device: device.to_owned(),
            epoch: self.epoch,
            records: records
                .into_iter()
                .map(|record| Delivered { historical, record })
                .collect(),
        };
        self.planted.records += env.records.len() as u64;
        let top = env
            .records
            .iter()
            .map(|d| d.record.seq())
            .max()
            .unwrap_or(0);
        let max = self
            .sent_max
            .entry((device.to_owned(), R::KIND, self.epoch))
            .or_insert(top);
        *max = (*max).max(top);
        self.wire(
            data_topic(&self.cfg.prefix, &self.site, device, R::KIND),
            env.to_vec(),
        );
    }

    fn wire(&mut self, topic: String, payload: Vec<u8>) {
        self.out.push(Wire {
            topic,
            payload,
            at_ms: self.ts,
        });
    }

    fn status(&mut self, status: Status) {
        let topic = status_topic(&self.cfg.prefix, &self.site);
        self.wire(topic, status.to_vec());
    }

    /// A new run (and boot): the online status; counters start again.
    fn start(&mut self, new_boot: bool) {
        self.run += 1;
        if new_boot {
            self.boot += 1;
        }
        self.run_start = self.ts;
        self.health = GatewayHealth::default();
        self.status(Status::Online {
            version: "0.1.0".into(),
            boot_id: format!("{}-boot-{}", self.site, self.boot),
            run_id: format!("{}-run-{}", self.site, self.run),
            started: self.ts,
        });
    }

    fn gw_event(&mut self, code: &str, severity: Severity, values: Values) {
        let seq = self.stamp(GATEWAY_DEVICE, Kind::Event);
        let ev = Event {
            seq,
            ts: self.ts,
            clock: ClockState::Synced,
            severity,
            code: code.into(),
            message: code.into(),
            values,
        };
        self.send(GATEWAY_DEVICE, vec![ev], false);
    }

    /// The gateway's telemetry, live, with its backlog's depth.
    fn gw_telemetry(&mut self, depth: u64) {
        self.health.depth = depth;
        self.health.uptime_s = ((self.ts - self.run_start) / 1000) as u64 + 1;
        let seq = self.stamp(GATEWAY_DEVICE, Kind::Sample);
        let s = Sample {
            seq,
            ts: self.ts,
            clock: ClockState::Synced,
            values: self.health.values(),
        };
        self.send(GATEWAY_DEVICE, vec![s], false);
    }

    fn reset(&mut self, previous: Option<Epoch>, first_start: bool) {
        let r = SequenceReset {
            epoch: self.epoch,
            previous_epoch: previous,
            reason: "simulated".into(),
            first_start,
        };
        self.gw_event(codes::SEQUENCE_RESET, r.severity(), r.values());
    }

    /// One live step: every device sends a sample (sometimes sent twice).
    fn step(&mut self) {
        self.ts += STEP_MS;
        for d in self.devices.clone() {
            let s = self.sample(d);
            self.send(d, vec![s.clone()], false);
            if self.first_message.is_none() {
                self.first_message = self.out.last().cloned();
            }
            if self.rng.chance(3) {
                self.planted.duplicates += 1;
                self.send(d, vec![s.clone()], false);
                self.planted.records -= 1;
            }
            self.last_sent.insert(d, s);
        }
        if self.rng.chance(10) {
            let seq = self.stamp(self.devices[0], Kind::Event);
            let ev = Event {
                seq,
                ts: self.ts,
                clock: ClockState::Synced,
                severity: Severity::Critical,
                code: "ups.on_battery".into(),
                message: "UPS on battery: mains power lost".into(),
                values: Values::new(),
            };
            self.send(self.devices[0], vec![ev], false);
        }
    }

    /// Live steps, then the gateway's telemetry: nothing waiting.
    fn quiet(&mut self) {
        for _ in 0..self.cfg.steps {
            self.step();
        }
        self.gw_telemetry(0);
    }

    /// Samples taken but kept on the card (not sent), per device.
    fn keep(&mut self, steps: u64) -> Vec<(&'static str, Vec<Sample>)> {
        let mut kept: Vec<(&'static str, Vec<Sample>)> =
            self.devices.iter().map(|d| (*d, Vec::new())).collect();
        for _ in 0..steps {
            self.ts += STEP_MS;
            for (d, list) in kept.iter_mut() {
                let s = self.sample(d);
                list.push(s);
            }
        }
        kept
    }

    /// Sends a backlog, oldest first, in batches of at most 100.
    fn send_backlog(&mut self, kept: Vec<(&'static str, Vec<Sample>)>) {
        for (d, list) in kept {
            for chunk in list.chunks(100) {
                self.send(d, chunk.to_vec(), true);
                if self.rng.chance(10) {
                    // The broker's acknowledgement was lost: sent again.
                    self.planted.duplicates += chunk.len() as u64;
                    self.planted.records -= chunk.len() as u64;
                    self.send(d, chunk.to_vec(), true);
                }
            }
        }
    }

    // ---- scenarios ----

    /// The link drops; the card keeps readings; the oldest are dropped
    /// (spool full, counted), some are damaged (counted and reported), one
    /// is set aside (reported with its number); live readings go ahead of
    /// the backlog, which follows.
    fn backlog_with_drops(&mut self) {
        self.status(Status::Offline {
            reason: OfflineReason::Lost,
        });
        let steps = 5 + self.rng.below(15);
        let mut kept = self.keep(steps);
        let mut full = 0;
        for (_, list) in kept.iter_mut() {
            let m = self.rng.below(3).min(list.len() as u64) as usize;
            list.drain(..m);
            full += m as u64;
        }
        self.health.set_dropped(
            DropReason::Full,
            self.health.dropped(DropReason::Full) + full,
        );
        let corrupt = {
            let list = &mut kept[0].1;
            let r = self.rng.below(3).min(list.len().saturating_sub(2) as u64) as usize;
            list.drain(1..1 + r);
            r as u64
        };
        self.health.set_dropped(
            DropReason::Corrupt,
            self.health.dropped(DropReason::Corrupt) + corrupt,
        );
        // The second to last of device 0's backlog is set aside.
        let quarantined = {
            let list = &mut kept[0].1;
            (list.len() > 2).then(|| list.remove(list.len() - 2))
        };
        self.status_online_same_run();
        self.step();
        let depth: u64 = kept.iter().map(|(_, l)| l.len() as u64).sum();
        self.gw_telemetry(depth.max(1));
        if corrupt > 0 {
            let c = CorruptRecords {
                records: corrupt,
                reason: "checksum".into(),
            };
            self.gw_event(codes::SPOOL_CORRUPT_RECORD, Severity::Warning, c.values());
        }
        if let Some(q) = quarantined {
            self.health.set_dropped(
                DropReason::TooLarge,
                self.health.dropped(DropReason::TooLarge) + 1,
            );
            let v = Quarantined {
                device: self.devices[0].into(),
                kind: Kind::Sample,
                seq: q.seq,
                bytes: 2_000_000,
            };
            self.gw_event(codes::SPOOL_QUARANTINED, Severity::Warning, v.values());
            self.planted.declared += 1;
        }
        self.planted.declared += full + corrupt;
        self.send_backlog(kept);
        self.gw_telemetry(0);
    }

    fn status_online_same_run(&mut self) {
        self.status(Status::Online {
            version: "0.1.0".into(),
            boot_id: format!("{}-boot-{}", self.site, self.boot),
            run_id: format!("{}-run-{}", self.site, self.run),
            started: self.run_start,
        });
    }

    /// The card cannot be written for a while; readings that did not fit
    /// in memory are lost (counted in write_failed, said by spool.restored).
    fn degraded_card(&mut self) {
        self.ts += STEP_MS;
        let d = Degraded {
            reason: "read_only".into(),
        };
        self.gw_event(codes::SPOOL_DEGRADED, Severity::Critical, d.values());
        let lost = 1 + self.rng.below(4);
        for _ in 0..lost {
            self.ts += STEP_MS;
            let _ = self.sample(self.devices[0]);
        }
        self.step();
        self.ts += STEP_MS;
        self.health.set_dropped(
            DropReason::WriteFailed,
            self.health.dropped(DropReason::WriteFailed) + lost,
        );
        let r = Restored {
            degraded_for_s: (lost + 2) * 5,
            lost,
        };
        self.gw_event(codes::SPOOL_RESTORED, Severity::Info, r.values());
        self.planted.declared += lost;
        self.gw_telemetry(0);
    }

    /// Readings sent with an unsynchronised clock, a correction, and some
    /// of them delivered again corrected.
    fn clock_correction(&mut self) {
        let offset_ms: i64 = 86_400_000 + self.rng.below(1000) as i64;
        let d = self.devices[0];
        let mut sent = Vec::new();
        for _ in 0..3 {
            self.ts += STEP_MS;
            let mut s = self.sample(d);
            s.ts -= offset_ms;
            s.clock = ClockState::Unsynced;
            self.send(d, vec![s.clone()], false);
            sent.push(s);
        }
        let (first, last) = (sent[0].seq, sent[sent.len() - 1].seq);
        let mut v = Values::new();
        v.set("record.device", d);
        v.set("record.kind", "samples");
        v.set("record.epoch", self.epoch.to_string());
        v.num("record.first_seq", first as f64);
        v.num("record.last_seq", last as f64);
        v.num("record.count", sent.len() as f64);
        v.num("clock.offset_ms", offset_ms as f64);
        self.gw_event(codes::CLOCK_CORRECTED, Severity::Info, v);
        for mut s in sent {
            if !self.rng.chance(50) {
                continue;
            }
            s.retime(s.ts + offset_ms, ClockState::Corrected);
            self.planted.corrected_copies += 1;
            self.planted.records -= 1;
            self.send(d, vec![s], false);
        }
        self.gw_telemetry(0);
    }

    /// Every stream's last number used, losing the last few readings of
    /// each device (stamped, never sent); returns the streams' positions.
    fn stop_losing_tail(&mut self) -> Vec<((String, Kind), u64)> {
        for d in self.devices.clone() {
            let lost = self.rng.below(3);
            for _ in 0..lost {
                let _ = self.sample(d);
            }
        }
        self.next.iter().map(|(k, n)| (k.clone(), *n)).collect()
    }

    /// Where each stream resumes: the end of its reserved block.
    fn resume_all(&mut self) -> Vec<ResumedStream> {
        let mut out = Vec::new();
        for ((device, kind), n) in self.next.iter_mut() {
            let resumed = (*n / 64 + 1) * 64;
            out.push(ResumedStream {
                device: device.clone(),
                kind: *kind,
                resumed,
                last_used: n.checked_sub(1),
            });
            *n = resumed;
        }
        out
    }

    /// Notes the numbers the stop leaves missing (after the last sent,
    /// before the resume point): all explained by the unclean stop.
    fn count_stop_gap(&mut self, used: &[((String, Kind), u64)], streams: &[ResumedStream]) {
        for s in streams {
            if let Some((_, n)) = used.iter().find(|(k, _)| k.0 == s.device && k.1 == s.kind) {
                let first = self.sent_below(&s.device, s.kind, *n);
                self.stop_gaps
                    .push((s.device.clone(), s.kind, self.epoch, s.resumed, first));
            }
        }
    }

    /// The first number not sent of a stream: its tail lost in the stop
    /// starts after the last one sent. Device samples lose up to 2 at the
    /// tail; what was sent is tracked by `last_sent`.
    fn sent_below(&self, device: &str, kind: Kind, next: u64) -> u64 {
        match kind {
            Kind::Sample => self
                .last_sent
                .iter()
                .find(|(d, _)| **d == device)
                .map(|(_, s)| s.seq + 1)
                .unwrap_or(next),
            Kind::Event => next,
        }
    }

    /// A crash of the service (same boot): exact last-used numbers.
    fn crash(&mut self) {
        self.unclean(false);
    }

    /// A power cut (new boot): no last-used numbers.
    fn power_cut(&mut self) {
        self.unclean(true);
    }

    fn unclean(&mut self, power_cut: bool) {
        let used = self.stop_losing_tail();
        let mut streams = self.resume_all();
        if power_cut {
            for s in streams.iter_mut() {
                s.last_used = None;
            }
        }
        self.count_stop_gap(&used, &streams);
        self.ts += 30_000;
        self.start(power_cut);
        let u = UncleanStop { streams };
        self.gw_event(codes::UNCLEAN_STOP, Severity::Warning, u.values());
        self.gw_telemetry(0);
    }

    /// The link drops with readings kept on the card; the card dies and is
    /// replaced: a new epoch (no previous one known), the backlog lost.
    fn wiped_card(&mut self) {
        self.status(Status::Offline {
            reason: OfflineReason::Lost,
        });
        let steps = 3 + self.rng.below(5);
        let kept = self.keep(steps);
        self.status_online_same_run();
        self.step();
        let depth: u64 = kept.iter().map(|(_, l)| l.len() as u64).sum();
        self.gw_telemetry(depth);
        self.planted.declared += depth;
        // The card is replaced: a new boot, a new epoch, numbers from 0.
        self.ts += 600_000;
        self.epoch = Epoch(self.rng.next_u64());
        self.next.clear();
        self.last_sent.clear();
        self.start(true);
        self.reset(None, false);
        self.gw_telemetry(0);
    }

    /// A crash, then a run that cannot write the card: it counts in an
    /// epoch of its own (its reset names the previous), its unclean stop
    /// speaks of the previous epoch; an undeclared hole in its own
    /// numbers; then the next run resumes the previous epoch and declares
    /// the same stop again.
    fn own_epoch(&mut self) {
        let used = self.stop_losing_tail();
        let streams = self.resume_all();
        self.count_stop_gap(&used, &streams);
        let previous = self.epoch;
        let positions = std::mem::take(&mut self.next);
        let last_sent = std::mem::take(&mut self.last_sent);
        self.ts += 30_000;
        self.start(false);
        self.epoch = Epoch(self.rng.next_u64());
        self.reset(Some(previous), false);
        let stop = UncleanStop { streams };
        self.gw_event(codes::UNCLEAN_STOP, Severity::Warning, stop.values());
        self.quiet();
        // Sometimes the hole spans the previous epoch's resume point: a
        // ledger applying the stop to this epoch would explain part of it.
        let d0 = (self.devices[0].to_owned(), Kind::Sample);
        let here = self.next.get(&d0).copied().unwrap_or(0);
        let resumed = positions.get(&d0).copied().unwrap_or(0);
        let n = if resumed > here && self.rng.chance(50) {
            resumed - here + 1 + self.rng.below(3)
        } else {
            1 + self.rng.below(3)
        };
        self.skip_undeclared(self.devices[0], n);
        self.quiet();
        // A clean stop; the next run resumes the previous epoch.
        self.status(Status::Offline {
            reason: OfflineReason::Shutdown,
        });
        self.ts += 30_000;
        self.epoch = previous;
        self.next = positions;
        self.last_sent = last_sent;
        self.start(false);
        self.gw_event(codes::UNCLEAN_STOP, Severity::Warning, stop.values());
        self.gw_telemetry(0);
    }

    // ---- what the gateway never does: planted for the check ----

    /// Numbers of `device` skipped with nothing said; a live step follows
    /// so the hole is seen.
    fn skip_undeclared(&mut self, device: &'static str, n: u64) {
        let key = (device.to_owned(), Kind::Sample);
        let first = self.next.get(&key).copied().unwrap_or(0);
        self.next.insert(key, first + n);
        self.planted.undeclared.push((
            StreamKey {
                site: self.site.clone(),
                device: device.into(),
                kind: Kind::Sample,
                epoch: self.epoch,
            },
            SeqRange {
                first,
                last: first + n - 1,
            },
        ));
        self.step();
    }

    fn undeclared_holes(&mut self) {
        if self.rng.chance(30) {
            let d = self.devices[self.rng.below(self.devices.len() as u64) as usize];
            let n = 1 + self.rng.below(5);
            self.skip_undeclared(d, n);
        }
        if self.rng.chance(2) {
            self.skip_undeclared(self.devices[0], 1_000_000);
        }
    }

    /// A copy of the site's first message (long ago), and now and then a
    /// copy of a recent record with other content (a broken gateway).
    fn copies(&mut self) {
        if let Some(first) = self.first_message.clone() {
            self.planted.duplicates += 1;
            self.out.push(first);
        }
        if self.rng.chance(5) {
            let d = self.devices[0];
            if let Some(mut s) = self.last_sent.get(d).cloned() {
                s.values.num("ups.load", 1000.0);
                self.planted.conflicts += 1;
                self.send(d, vec![s], false);
                self.planted.records -= 1;
            }
        }
    }
}
