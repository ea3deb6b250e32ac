//! A scenario's rig (broker, recorder, the gateway under test and what
//! the harness did to them) and its outcome: the accounting of what
//! arrived, the scenario's own failures and notes, the verdict.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::accounting::{account, num, Account, Destroyed, Known};
use crate::peers::{Broker, Gateway};
use crate::recorder::{contains, Rec, Recorder};
use crate::util::{free_port, sleep_ms};
use crate::Opts;

pub struct Outcome {
    pub name: &'static str,
    pub cycles: u32,
    pub acct: Account,
    pub failures: Vec<String>,
    pub notes: Vec<String>,
    pub skipped: Option<String>,
    pub secs: f64,
}

impl Outcome {
    pub fn verdict(&self) -> &'static str {
        if self.skipped.is_some() {
            "SKIP"
        } else if self.failures.is_empty()
            && self.acct.reused == 0
            && self.acct.invalid_json == 0
            && self.acct.schema_invalid == 0
            && self.acct.undeclared == 0
        {
            "PASS"
        } else {
            "FAIL"
        }
    }

    pub fn skip(name: &'static str, why: String) -> Outcome {
        Outcome {
            name,
            cycles: 0,
            acct: Account::default(),
            failures: vec![],
            notes: vec![],
            skipped: Some(why),
            secs: 0.0,
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
pub enum Load {
    /// ups1 every 20 ms (an event every 50 samples), env1 every 50 ms.
    Normal,
    /// ups1 10 samples every 20 ms (500/s), env1 as usual: spill writes.
    Heavy,
    /// No devices: only the gateway's own telemetry (used to drain).
    None,
}

pub struct Rig {
    // Field order is drop order: the gateway goes before the broker.
    pub gw: Gateway,
    pub rec: Recorder,
    pub broker: Broker,
    pub name: &'static str,
    pub o: Opts,
    pub web: u16,
    pub spool: PathBuf,
    pub destroyed: Destroyed,
    pub damaged: Destroyed,
    pub degraded: Vec<(i64, i64)>,
    pub heavy: bool,
    pub failures: Vec<String>,
    pub notes: Vec<String>,
    pub cycles: u32,
    pub t0: Instant,
    pub _dir: tempfile::TempDir,
}

impl Rig {
    /// `spool_dir`: where spool.db goes (a mount), else a temp dir.
    pub async fn new(name: &'static str, o: &Opts, spool_dir: Option<&Path>) -> Rig {
        Self::with_broker(name, o, spool_dir, Broker::start()).await
    }

    pub async fn with_broker(
        name: &'static str,
        o: &Opts,
        spool_dir: Option<&Path>,
        broker: Broker,
    ) -> Rig {
        let dir = tempfile::tempdir().expect("temp dir");
        let rec = Recorder::start(broker.port).await;
        let spool = spool_dir.unwrap_or(dir.path()).join("spool.db");
        let gw = Gateway {
            bin: o.bin.clone(),
            cfg: dir.path().join("wardgate.toml"),
            log: dir.path().join("wardgate.log"),
            env: o
                .plant
                .iter()
                .map(|p| ("WARDGATE_PLANT".to_owned(), p.clone()))
                .collect(),
            child: None,
            runs: 0,
            starts: vec![],
            last_exit: None,
            starts_wall: vec![],
            kills: vec![],
            wal: false,
            stops: vec![],
        };
        Rig {
            gw,
            rec,
            broker,
            name,
            o: o.clone(),
            web: free_port(),
            spool,
            destroyed: BTreeSet::new(),
            damaged: BTreeSet::new(),
            degraded: vec![],
            heavy: false,
            failures: vec![],
            notes: vec![],
            cycles: 0,
            t0: Instant::now(),
            _dir: dir,
        }
    }

    /// A configuration that every binary since the spine accepts (only
    /// long-standing keys: unknown keys are errors).
    pub fn config(&self, load: Load, policy: &str) -> String {
        let mut t = format!(
            "site = \"faults\"\n\
             [mqtt]\nhost = \"127.0.0.1\"\nport = {}\nkeep_alive = \"5s\"\nconnect_timeout = \"5s\"\n\
             [spool]\npath = \"{}\"\npolicy = \"{policy}\"\n\
             [gateway]\ntelemetry_interval = \"1s\"\nsystem_health = false\n\
             [web]\nenabled = true\nlisten = \"127.0.0.1:{}\"\n\
             [led]\nbackend = \"none\"\n",
            self.broker.port,
            self.spool.display(),
            self.web
        );
        let ups_per_tick = if load == Load::Heavy { 10 } else { 1 };
        if load != Load::None {
            t.push_str(&format!(
                "[[device]]\nid = \"ups1\"\ntype = \"sim\"\nprofile = \"ups\"\ninterval = \"20ms\"\nevent_every = 50\nsamples_per_tick = {ups_per_tick}\n\
                 [[device]]\nid = \"env1\"\ntype = \"sim\"\nprofile = \"sensor\"\ninterval = \"50ms\"\nevent_every = 20\n"
            ));
        }
        t
    }

    pub fn start(&mut self, load: Load) {
        self.heavy |= load == Load::Heavy;
        let c = self.config(load, "spill");
        self.gw.start(&c);
    }

    /// What the accounting needs to know of this rig's runs.
    pub fn known(&self) -> Known {
        Known {
            destroyed: self.destroyed.clone(),
            damaged: self.damaged.clone(),
            kills: self.gw.kills.clone(),
            stops: self.gw.stops.clone(),
            degraded: self.degraded.clone(),
            first_start_ms: self.gw.starts_wall.first().copied().unwrap_or(0),
            starts: self.gw.starts_wall.clone(),
            heavy: self.heavy,
        }
    }

    pub fn fail(&mut self, what: String) {
        self.failures.push(what);
    }

    pub fn note(&mut self, what: String) {
        self.notes.push(what);
    }

    /// Waits for a record from `from` on that satisfies `pred`, giving up
    /// early when the gateway has exited (nothing more will come).
    pub async fn wait_while_up(
        &mut self,
        from: usize,
        limit: Duration,
        pred: &dyn Fn(&Rec) -> bool,
    ) -> Option<usize> {
        let deadline = Instant::now() + limit;
        let mut grace = 2;
        loop {
            let step = Duration::from_millis(250);
            if let Some(i) = self.rec.wait_for(from, step, pred).await {
                return Some(i);
            }
            if !self.gw.running() {
                // What it sent just before exiting may still be on its way.
                grace -= 1;
                if grace == 0 {
                    return None;
                }
            }
            if Instant::now() > deadline {
                return None;
            }
        }
    }

    /// Waits for a live ups1 reading that arrived after record `from`.
    pub async fn live_after(&mut self, from: usize, limit: Duration) -> Option<usize> {
        self.wait_while_up(from, limit, &|r| r.is_live("ups1"))
            .await
    }

    /// After the broker's return (records from `from` on): the gateway's
    /// birth message, then a live ups1 reading within `limit` of it; the
    /// seconds from `since` to the birth. The birth may take long: after an
    /// outage of more than a few seconds the reconnect backoff has grown
    /// (up to 75 s), as designed; how fast a restart is caught is
    /// `broker_restarts`' to judge, not the scenarios that use this.
    pub async fn live_after_reconnect(
        &mut self,
        from: usize,
        since: Instant,
        limit: Duration,
    ) -> Result<f64, String> {
        let Some(b) = self
            .wait_while_up(from, Duration::from_secs(90), &|r| r.is_status_online())
            .await
        else {
            return Err("no birth message within 90 s of the broker's return".into());
        };
        let at = self.rec.lock()[b].at;
        let secs = at.saturating_duration_since(since).as_secs_f64();
        match self.live_after(b, limit).await {
            Some(_) => Ok(secs),
            None => Err(format!(
                "no live reading within {limit:?} of the reconnection ({secs:.1} s after the broker's return)"
            )),
        }
    }

    /// Waits for an event with `code` on the gateway device among the
    /// records from `from` on; its values.
    pub async fn event_seen(&mut self, from: usize, code: &str, limit: Duration) -> Option<Value> {
        let needle = format!("\"code\":\"{code}\"");
        let i = self
            .wait_while_up(from, limit, &|r| {
                r.topic.ends_with("/gateway/event") && contains(&r.payload, needle.as_bytes())
            })
            .await?;
        let body = self.rec.lock()[i].json()?;
        body["events"]
            .as_array()?
            .iter()
            .find(|e| e["code"] == code)
            .map(|e| e["values"].clone())
    }

    /// Expects a `spool.degraded` event saying `reason` (README, "Faults and
    /// what they do") among the records from `from` on.
    pub async fn expect_degraded(&mut self, from: usize, reason: &str) {
        match self
            .event_seen(from, "spool.degraded", Duration::from_secs(10))
            .await
        {
            None => self.fail(format!(
                "no spool.degraded event (reason {reason} expected)"
            )),
            Some(v) if v["spool.reason"] != reason => self.fail(format!(
                "spool.degraded says {} (expected reason {reason})",
                v["spool.reason"]
            )),
            Some(_) => {}
        }
    }

    /// SIGTERM; a failure unless it exits 0 within `limit`.
    pub async fn term_expect_0(&mut self, limit: Duration, when: &str) -> Option<Duration> {
        match self.gw.term(limit).await {
            Ok((Some(0), took)) => Some(took),
            Ok((code, took)) => {
                let tail = self.gw.log_tail(3);
                self.fail(format!(
                    "{when}: SIGTERM exit code {code:?} after {took:.1?} (log: {tail})"
                ));
                Some(took)
            }
            Err(e) => {
                self.fail(format!("{when}: {e}"));
                None
            }
        }
    }

    /// The common ending ([`Rig::drain`]), then the accounting.
    pub async fn finish(mut self) -> Outcome {
        self.drain().await;
        self.outcome()
    }

    /// The common ending. A gateway still running is stopped cleanly (a
    /// scenario that means to end with a kill -9 does it itself). Then:
    ///
    /// 1. the closing run, with the devices and the broker up: each device
    ///    stream's first new numbers show whether the previous runs lost
    ///    their tails; it runs until the backlog is sent and every device
    ///    stream (samples and events) has a new number;
    /// 2. kill -9, so that the next start's `gateway.unclean_stop` declares
    ///    the last number each stream used: the tail of the closing run is
    ///    checked too (its crash loss, readings in flight with the broker
    ///    up, is bounded by the kill's window like any other);
    /// 3. the final run, with no devices, until its telemetry reports an
    ///    empty spool; a clean stop, and time for the recorder to receive
    ///    everything.
    pub async fn drain(&mut self) {
        self.broker.resume();
        self.broker.spawn();
        let limit = Duration::from_secs(self.o.pick(30, 300));
        if self.gw.running() {
            self.term_expect_0(Duration::from_secs(15), "stop before the closing run")
                .await;
        }
        // 1. The closing run.
        let from = self.rec.len();
        self.start(Load::Normal);
        let deadline = Instant::now() + limit;
        let streams = [
            "/ups1/telemetry",
            "/ups1/event",
            "/env1/telemetry",
            "/env1/event",
        ];
        let mut done = false;
        while Instant::now() < deadline && self.gw.running() {
            let ok = {
                let recs = self.rec.lock();
                let new = &recs[from.min(recs.len())..];
                streams
                    .iter()
                    .all(|s| new.iter().any(|r| r.topic.ends_with(s)))
                    && new.iter().rev().any(|r| {
                        r.topic.ends_with("/gateway/telemetry")
                            && r.json().is_some_and(|v| {
                                v["samples"]
                                    .as_array()
                                    .and_then(|a| a.last())
                                    .is_some_and(|s| {
                                        num(&s["values"]["spool.depth"]) == Some(0.0)
                                            && num(&s["values"]["spool.memory"])
                                                .is_some_and(|m| m <= 50.0)
                                    })
                            })
                    })
            };
            if ok {
                done = true;
                break;
            }
            sleep_ms(100).await;
        }
        if !done {
            let tail = self.gw.log_tail(3);
            let why = if let Some(code) = self.gw.exit_code() {
                format!("exited with {code:?}")
            } else {
                "still running".into()
            };
            self.fail(format!(
                "closing run: backlog not sent or a device stream silent within {limit:?} ({why}; log: {tail})"
            ));
        }
        // 2. kill -9.
        self.gw.kill9();
        // 3. The final run.
        let from = self.rec.len();
        self.start(Load::None);
        let drained = self
            .wait_while_up(from, limit, &|r| {
                r.topic.ends_with("/gateway/telemetry")
                    && r.json().is_some_and(|v| {
                        v["samples"]
                            .as_array()
                            .and_then(|a| a.last())
                            .is_some_and(spool_empty)
                    })
            })
            .await;
        if drained.is_none() {
            let tail = self.gw.log_tail(3);
            let why = if let Some(code) = self.gw.exit_code() {
                format!("exited with {code:?}")
            } else {
                "still running".into()
            };
            self.fail(format!(
                "backlog not drained within {limit:?} ({why}; log: {tail})"
            ));
        }
        let before_stop = self.rec.len();
        let failures_before = self.failures.len();
        self.term_expect_0(Duration::from_secs(15), "final stop")
            .await;
        // The barrier: the final run's offline status is the last thing it
        // publishes, on the same connection as everything before it, so
        // once it is here the rest is too (a fixed quiet period is not: a
        // pause between broker and recorder longer than it left records
        // out, counted lost). Then a short quiet for the broker's own
        // redeliveries.
        let limit = Duration::from_secs(20);
        let offline = self
            .rec
            .wait_for(before_stop, limit, &|r| r.is_status_offline_clean())
            .await;
        if offline.is_none() {
            let what = format!(
                "final stop: no offline status (clean stop) arrived within {limit:?}, so what the run sent before it may still have been on its way and counted lost"
            );
            if self.failures.len() > failures_before {
                // The stop already failed (not exit 0, or killed).
                self.note(what);
            } else {
                self.fail(what);
            }
        }
        self.rec
            .settle(Duration::from_millis(300), Duration::from_secs(5))
            .await;
        // Without the final run's unclean_stop the closing run's tail
        // would go unchecked.
        let declared = self
            .rec
            .find(from, &|r| {
                r.topic.ends_with("/gateway/event")
                    && contains(&r.payload, b"\"code\":\"gateway.unclean_stop\"")
            })
            .is_some();
        if !declared {
            self.fail(
                "final run: no gateway.unclean_stop after the closing kill -9, so the tail of each stream cannot be checked".into(),
            );
        }
    }

    pub fn outcome(mut self) -> Outcome {
        let acct = {
            let recs = self.rec.lock();
            account(&recs, &self.known())
        };
        let again = self.rec.redelivered.load(Ordering::Relaxed);
        if again > 0 {
            self.notes.push(format!(
                "{again} broker redeliveries to the recorder (broker restarted before its PUBACK) not counted"
            ));
        }
        if !acct.reused_examples.is_empty() {
            self.notes.push(format!(
                "seq reused, e.g. {}",
                acct.reused_examples.join(" | ")
            ));
        }
        if !acct.invalid_examples.is_empty() {
            self.notes.push(format!(
                "invalid JSON, e.g. {}",
                acct.invalid_examples.join(" | ")
            ));
        }
        if !acct.schema_examples.is_empty() {
            self.notes.push(format!(
                "against the schema, e.g. {}",
                acct.schema_examples.join(" | ")
            ));
        }
        if !acct.declared_by_reason.is_empty() {
            let by: Vec<String> = acct
                .declared_by_reason
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            self.notes.push(format!(
                "missing readings excused by declared drops: {}",
                by.join(", ")
            ));
        }
        if !acct.declared_unused.is_empty() {
            let by: Vec<String> = acct
                .declared_unused
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            self.notes.push(format!(
                "declared drops that excused nothing (over-declared): {}",
                by.join(", ")
            ));
        }
        if acct.crash > 0 {
            self.notes.push(format!(
                "{} readings lost in {} kill -9s (at or below seq_last_used, taken within the loss bound before a kill); most in {}",
                acct.crash,
                self.gw.kills.len(),
                acct.crash_by_stream.join(" | ")
            ));
        }
        if acct.overstated > 0 {
            self.notes.push(format!(
                "{} numbers at or below a seq_last_used cannot have been taken before the last stop (by the stream's period): seq_last_used said more than was used (not counted as loss)",
                acct.overstated
            ));
        }
        if acct.degraded_stop > 0 {
            self.notes.push(format!(
                "{} readings lost at a stop with the card full (at or below seq_last_used, taken from the loss bound before the fill to the stop, or in a run started with the card full; declared by spool.degraded and the unclean stops)",
                acct.degraded_stop
            ));
        }
        if acct.undeclared > 0 {
            self.notes.push(format!(
                "{} missing, {} declared dropped, {} of them at or below a seq_last_used but neither a kill's loss nor a full card's; missing e.g. {}",
                acct.missing,
                acct.declared_drops,
                acct.too_old_for_crash,
                acct.missing_examples.join(", ")
            ));
        }
        Outcome {
            name: self.name,
            cycles: if self.cycles > 0 {
                self.cycles
            } else {
                self.gw.runs
            },
            acct,
            failures: std::mem::take(&mut self.failures),
            notes: std::mem::take(&mut self.notes),
            skipped: None,
            secs: self.t0.elapsed().as_secs_f64(),
        }
    }
}

/// A gateway telemetry sample saying nothing is left to send: no row on
/// disk and at most the gateway's own few records in memory.
pub fn spool_empty(s: &Value) -> bool {
    num(&s["values"]["spool.depth"]) == Some(0.0)
        && num(&s["values"]["spool.memory"]).is_some_and(|m| m <= 2.0)
}

pub fn with_expectation(mut out: Outcome, check: impl Fn(&Account) -> Option<String>) -> Outcome {
    if let Some(f) = check(&out.acct) {
        out.failures.push(f);
    }
    out
}
