//! Sources: one file per kind. Each runs as one task that reads its device
//! and reports through a [`DeviceHandle`], which stamps readings into the
//! spool, keeps the device's health and failure streak in the status
//! snapshot, and counts what the spool refused. Polled kinds run under the
//! one retry loop in [`supervisor`].

pub mod apc;
pub(crate) mod config;
pub(crate) mod gpio;
pub(crate) mod gpio_config;
pub mod megatec;
pub mod modbus;
pub mod nut;
pub mod onewire;
pub(crate) mod onewire_config;
pub(crate) mod probe;
pub(crate) mod probe_config;
pub mod serial;
pub(crate) mod sim;
pub(crate) mod sim_config;
pub mod snmp;
pub(crate) mod snmp_config;
pub(crate) mod supervisor;
pub mod system;
pub mod system_config;
pub mod tap;
pub(crate) mod threshold;
pub(crate) mod ups;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::config::DeviceConfig;
use crate::events::{self, EventDef};
use crate::model::{now_ms, valid_value_name, Health, Reading, Severity, Value, Values};
use crate::spool::Spool;
use crate::status::{RecentEvent, StatusHub};

/// No good reading for this many intervals makes a device stale
/// (`device.lost`, docs/mqtt.md).
pub const STALE_AFTER_INTERVALS: u32 = 3;

/// Longest word (string value) published, in characters: a longer one is
/// cut at a character boundary and counted as `long_value`. The longest a
/// real device sends are model and firmware names of a few dozen.
pub const MAX_STRING_CHARS: usize = 256;

/// Longest fault or stale reason kept, in characters (a peer's error text
/// goes into it).
pub const MAX_REASON_CHARS: usize = 512;

/// Names (left out or cut) logged per device; past this many, further ones
/// are only counted, so a peer inventing names cannot fill the log.
const MAX_NAMES_LOGGED: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The device could not be read; the source reports a fault and retries.
    #[error("{0}")]
    Device(String),
}

struct HealthState {
    health: Health,
    samples: u64,
    ever_ok: bool,
    last_good: Option<Instant>,
    last_status: Option<Instant>,
    /// Failed polls since the last good reading (or the last reopen).
    streak: u32,
    /// The spool is refusing this device's records: logged once, at the
    /// first refusal, and again when it accepts one.
    spool_refusing: bool,
    /// The event codes of trouble (`device.fault`, `device.stale`) already
    /// sent since the last good reading: each is sent once until the
    /// device recovers, however often its reason changes.
    raised: Vec<&'static str>,
    /// Value names already logged as left out or cut ([`MAX_NAMES_LOGGED`]).
    names_logged: HashSet<String>,
}

/// What a source uses to report. Cloning shares the device's state.
#[derive(Clone)]
pub struct DeviceHandle {
    id: Arc<str>,
    interval: Duration,
    spool: Arc<Spool>,
    status: StatusHub,
    state: Arc<Mutex<HealthState>>,
    thresholds: Arc<Vec<(threshold::ThresholdConfig, Mutex<threshold::ThresholdState>)>>,
    born: tokio::time::Instant,
    /// "Read now" asked by the `poll` command.
    poll: Arc<PollNow>,
    /// Every poll's outcome, for watchers (the power monitor).
    polls: Arc<tap::PollTap>,
    /// A command for the UPS, run by the device's loop.
    commands: Arc<tap::CommandSlot>,
}

/// A request to read a device now (the `poll` command): the device's loop
/// wakes on `wake`; the next sample refreshes the snapshot at once.
#[derive(Debug, Default)]
struct PollNow {
    wake: tokio::sync::Notify,
    pending: std::sync::atomic::AtomicBool,
}

/// How long after the stale limit the health monitor, the backstop, looks:
/// a source whose own polls are just then failing gives its verdict first,
/// with the reason it knows (the port not answering, upsd's DATA-STALE).
/// The monitor used to look every 500 ms, so `device.lost` came within
/// half a second after the limit; it still does.
pub(crate) const STALE_GRACE: Duration = Duration::from_millis(500);

impl DeviceHandle {
    pub fn new(
        id: &str,
        kind: &str,
        interval: Duration,
        spool: Arc<Spool>,
        status: StatusHub,
    ) -> Self {
        status.add_device(id, kind);
        DeviceHandle {
            id: Arc::from(id),
            interval,
            spool,
            status,
            state: Arc::new(Mutex::new(HealthState {
                health: Health::Stale,
                samples: 0,
                ever_ok: false,
                last_good: None,
                last_status: None,
                streak: 0,
                spool_refusing: false,
                raised: Vec::new(),
                names_logged: HashSet::new(),
            })),
            thresholds: Arc::new(Vec::new()),
            born: tokio::time::Instant::now(),
            poll: Arc::default(),
            polls: Arc::default(),
            commands: Arc::default(),
        }
    }

    /// Every poll's outcome from now on (good with its values, or failed).
    pub fn polls(&self) -> tokio::sync::watch::Receiver<tap::PollState> {
        self.polls.subscribe()
    }

    /// Sends a command to the UPS through the device's own loop, between
    /// two polls; resolves with what was sent, or why it was not (a kind
    /// that takes no commands answers at once). The caller bounds the wait:
    /// a device that cannot be opened never takes it.
    pub async fn ups_command(&self, cmd: tap::UpsCommand) -> tap::CommandResult {
        match self.commands.put(cmd).await {
            Ok(r) => r,
            Err(_) => Err("the device stopped before it took the command".into()),
        }
    }

    /// Resolves with a command left for the device (the supervisor selects
    /// on it between polls).
    pub(crate) async fn command_requested(
        &self,
    ) -> (
        tap::UpsCommand,
        tokio::sync::oneshot::Sender<tap::CommandResult>,
    ) {
        self.commands.take().await
    }

    /// Asks the device's loop to read now (the `poll` command); the next
    /// sample goes into the snapshot at once.
    pub fn request_poll(&self) {
        self.poll
            .pending
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.poll.wake.notify_one();
    }

    /// Resolves when a read-now was asked for (the supervisor selects on it).
    pub(crate) async fn poll_requested(&self) {
        self.poll.wake.notified().await
    }

    /// Watches these thresholds on every sample.
    pub fn with_thresholds(mut self, t: &[threshold::ThresholdConfig]) -> Self {
        self.thresholds = Arc::new(
            t.iter()
                .map(|c| (c.clone(), Mutex::new(threshold::ThresholdState::default())))
                .collect(),
        );
        self
    }

    fn check_thresholds(&self, values: &Values) {
        let now = self.born.elapsed();
        for (cfg, st) in self.thresholds.iter() {
            let Some(v) = values.get(&cfg.value).and_then(|v| v.as_f64()) else {
                continue;
            };
            let t = st
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .update(cfg, v, now);
            if let Some(t) = t {
                let (code, en, vi) = threshold::describe(cfg, &t);
                let mut ev = Values::new();
                ev.num(&cfg.value, v);
                let (threshold::Transition::Raised { limit, .. }
                | threshold::Transition::Cleared { limit, .. }) = t;
                ev.num("threshold.limit", limit);
                ev.set("message.vi", vi);
                let sev = if code == events::THRESHOLD_CLEARED.code {
                    events::THRESHOLD_CLEARED.severity
                } else {
                    cfg.severity
                };
                self.event(sev, code, &en, ev);
            }
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a record in the spool. A refusal (it cannot encode the record)
    /// is counted as the device's `spool` error, so it shows in the status,
    /// the page and `device.<id>.errors`; it is logged once per run of
    /// refusals, not per record.
    fn push(&self, reading: Reading) {
        let r = self.spool.push(&self.id, reading);
        let log = {
            let mut st = self.lock();
            let log = st.spool_refusing != r.is_err();
            st.spool_refusing = r.is_err();
            log
        };
        match r {
            Ok(_) if log => tracing::info!(device = %self.id, "the spool keeps records again"),
            Ok(_) => {}
            Err(e) => {
                self.count_error("spool");
                if log {
                    tracing::error!(device = %self.id, error = %e, "the spool refused a record; further refusals are only counted");
                }
            }
        }
    }

    /// A good reading; ends the failure streak. Its values are checked
    /// first ([`DeviceHandle::clean`]).
    pub fn sample(&self, values: Values) {
        let values = self.clean(values, false);
        let now = Instant::now();
        let (was, ever_ok, refresh, count) = {
            let mut st = self.lock();
            st.samples += 1;
            st.streak = 0;
            st.raised.clear();
            let was = st.health.clone();
            let ever_ok = st.ever_ok;
            st.health = Health::Ok;
            st.ever_ok = true;
            st.last_good = Some(now);
            // The snapshot needs fresh values, not one update per sample
            // under load.
            let asked = self
                .poll
                .pending
                .swap(false, std::sync::atomic::Ordering::Relaxed);
            let refresh = was != Health::Ok
                || asked
                || st
                    .last_status
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_millis(250));
            if refresh {
                st.last_status = Some(now);
            }
            (was, ever_ok, refresh, st.samples)
        };
        if refresh {
            let v = values.clone();
            self.status.update(|s| {
                if let Some(d) = s.devices.get_mut(&*self.id) {
                    d.health = Health::Ok;
                    d.last_seen_ms = Some(now_ms());
                    d.last_values = v;
                    d.samples = count;
                }
            });
        }
        if !self.thresholds.is_empty() {
            self.check_thresholds(&values);
        }
        self.polls.record(Some(&values));
        self.push(Reading::Sample(values));
        if was != Health::Ok && ever_ok {
            self.report(
                events::DEVICE_RESTORED,
                &[("device", &self.id)],
                Values::new(),
            );
        }
    }

    /// An event of the catalogue with its message's parts filled in.
    pub fn report(&self, ev: EventDef, args: &[(&str, &dyn std::fmt::Display)], values: Values) {
        self.event(ev.severity, ev.code, &ev.render(args), values)
    }

    /// A state change or alarm, sent ahead of telemetry. Its values are
    /// checked as a sample's are, except that the gateway's own Vietnamese
    /// message is not cut.
    pub fn event(&self, severity: Severity, code: &str, message: &str, values: Values) {
        let values = self.clean(values, true);
        tracing::info!(device = %self.id, code, %message, "event");
        self.status.record_event(RecentEvent {
            device: self.id.to_string(),
            ts: now_ms(),
            severity,
            code: code.to_owned(),
            message: message.to_owned(),
            message_vi: match values.get("message.vi") {
                Some(crate::model::Value::Str(m)) => Some(m.clone()),
                _ => None,
            },
        });
        self.push(Reading::Event {
            severity,
            code: code.to_owned(),
            message: message.to_owned(),
            values,
        });
    }

    /// The device failed; `reason` says how. An event is sent on the change.
    pub fn fault(&self, reason: &str) {
        self.degrade(
            Health::Fault(reason.to_owned()),
            events::DEVICE_FAULT,
            reason,
        )
    }

    /// The device's data is stale for a known reason (e.g. upsd's
    /// DATA-STALE); an event is sent on the change.
    pub fn mark_stale(&self, reason: &str) {
        self.degrade(Health::Stale, events::DEVICE_STALE, reason)
    }

    /// Moves the device to `health`; on a change (a new reason included),
    /// updates the status. `ev` is sent on a change only if it was not sent
    /// since the last good reading: one event per kind of trouble until the
    /// device recovers, so a device whose error text changes every poll
    /// raises one `device.fault`, and the page shows the latest reason.
    fn degrade(&self, health: Health, ev: EventDef, reason: &str) {
        self.polls.record(None);
        let health = match health {
            Health::Fault(r) => Health::Fault(cut(&r, MAX_REASON_CHARS).into_owned()),
            h => h,
        };
        let reason = cut(reason, MAX_REASON_CHARS);
        let (changed, announce) = {
            let mut st = self.lock();
            let changed = st.health != health;
            st.health = health.clone();
            let announce = changed && !st.raised.contains(&ev.code);
            if announce {
                st.raised.push(ev.code);
            }
            (changed, announce)
        };
        if changed {
            self.status.update(|s| {
                if let Some(d) = s.devices.get_mut(&*self.id) {
                    d.health = health;
                }
            });
        }
        if announce {
            self.report(
                ev,
                &[("device", &self.id), ("reason", &reason)],
                Values::new(),
            );
        }
    }

    /// Marks the device stale when no good reading came for three intervals.
    pub fn check_stale(&self) {
        self.lose(false)
    }

    /// Marks a device that is still ok stale now (`device.lost`), when its
    /// polls failed for as many intervals as make it stale: so a fault that
    /// follows at once never comes without the `device.lost` before it.
    pub fn lost(&self) {
        self.lose(true)
    }

    /// How long without a good reading makes the device stale.
    fn stale_limit(&self) -> Duration {
        self.interval
            .saturating_mul(STALE_AFTER_INTERVALS)
            .max(Duration::from_millis(10))
    }

    /// When the health monitor looks at the device next if no good
    /// reading comes: [`STALE_GRACE`] after [`DeviceHandle::check_stale`]
    /// would first find it stale. None while it is not ok or has never
    /// read.
    pub fn stale_at(&self) -> Option<Instant> {
        let limit = self.stale_limit();
        let st = self.lock();
        match st.last_good {
            Some(t) if st.health == Health::Ok => Some(t + limit + STALE_GRACE),
            _ => None,
        }
    }

    /// How often to look at a device with no deadline: its stale limit.
    pub fn stale_period(&self) -> Duration {
        self.stale_limit()
    }

    fn lose(&self, now: bool) {
        let limit = self.stale_limit();
        let became_stale = {
            let mut st = self.lock();
            let late = st.last_good.is_some_and(|t| now || t.elapsed() > limit);
            if st.health == Health::Ok && late {
                st.health = Health::Stale;
                st.raised.push(events::DEVICE_LOST.code);
                true
            } else {
                false
            }
        };
        if became_stale {
            self.status.update(|s| {
                if let Some(d) = s.devices.get_mut(&*self.id) {
                    d.health = Health::Stale;
                }
            });
            self.report(
                events::DEVICE_LOST,
                &[
                    ("device", &self.id),
                    ("limit", &humantime::format_duration(limit)),
                ],
                Values::new(),
            );
        }
    }

    /// A failed poll: counts it under `kind` (timeout, garbage, ...) when
    /// given and extends the failure streak; returns the streak's length.
    pub fn failed(&self, kind: Option<&str>) -> u32 {
        if let Some(k) = kind {
            self.count_error(k);
        }
        self.polls.record(None);
        let mut st = self.lock();
        st.streak = st.streak.saturating_add(1);
        st.streak
    }

    /// A fresh connection starts a fresh streak.
    pub fn reset_streak(&self) {
        self.lock().streak = 0;
    }

    /// Counts a failed read (timeout, garbage, malformed reply) by kind.
    pub fn count_error(&self, kind: &str) {
        self.count_errors(kind, 1)
    }

    fn count_errors(&self, kind: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.status.update(|s| {
            if let Some(d) = s.devices.get_mut(&*self.id) {
                *d.errors.entry(kind.to_owned()).or_default() += n;
            }
        });
    }

    /// Value names a source left out itself for being outside the
    /// contract: counted as `bad_name` and logged once per name, as
    /// [`DeviceHandle::clean`] does.
    pub fn left_out(&self, names: &[String]) {
        for n in names {
            self.log_name_once(n, "a value name outside the contract, left out");
        }
        self.count_errors("bad_name", names.len() as u64);
    }

    /// Logs `what` about the value `name` once per name (and per run), for
    /// at most [`MAX_NAMES_LOGGED`] names.
    fn log_name_once(&self, name: &str, what: &str) {
        let first = {
            let mut st = self.lock();
            let full = st.names_logged.len() >= MAX_NAMES_LOGGED;
            match () {
                _ if st.names_logged.contains(name) => None,
                _ if full => None,
                _ => {
                    st.names_logged.insert(name.to_owned());
                    Some(st.names_logged.len() == MAX_NAMES_LOGGED)
                }
            }
        };
        if let Some(last) = first {
            let shown: String = name.chars().take(64).collect();
            tracing::warn!(device = %self.id, name = %shown.escape_debug(), "{what}; counted, logged once");
            if last {
                tracing::warn!(device = %self.id, "{MAX_NAMES_LOGGED} value names logged; further ones are only counted");
            }
        }
    }

    /// The one check of what a peer sent, before anything is published or
    /// shown: names outside the contract's pattern (`[A-Za-z0-9_.-]{1,128}`,
    /// docs/schema) are left out and counted as `bad_name` (no mapping: a
    /// mapped name could collide with a real one), words longer than
    /// [`MAX_STRING_CHARS`] are cut at a character boundary and counted as
    /// `long_value`; each name is logged once. `event`: the gateway's own
    /// `message.vi` is kept whole.
    fn clean(&self, mut values: Values, event: bool) -> Values {
        let long = |n: &str, v: &Value| {
            matches!(v, Value::Str(s) if s.len() > MAX_STRING_CHARS
                && s.chars().count() > MAX_STRING_CHARS)
                && !(event && n == "message.vi")
        };
        if values
            .0
            .iter()
            .all(|(n, v)| valid_value_name(n) && !long(n, v))
        {
            return values;
        }
        let mut bad = Vec::new();
        values.0.retain(|n, _| {
            let ok = valid_value_name(n);
            if !ok {
                bad.push(n.clone());
            }
            ok
        });
        self.left_out(&bad);
        let mut cut_names = 0;
        for (n, v) in values.0.iter_mut() {
            if long(n, v) {
                if let Value::Str(s) = v {
                    *s = cut(s, MAX_STRING_CHARS).into_owned();
                }
                cut_names += 1;
                self.log_name_once(
                    n,
                    &format!("a word longer than {MAX_STRING_CHARS} characters, cut"),
                );
            }
        }
        self.count_errors("long_value", cut_names);
        values
    }

    pub fn health(&self) -> Health {
        self.lock().health.clone()
    }
}

/// `s` cut to at most `max` characters, at a character boundary.
pub fn cut(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        Some((i, _)) => std::borrow::Cow::Owned(s[..i].to_owned()),
        None => std::borrow::Cow::Borrowed(s),
    }
}

/// What sources share: where the spool lives (the Pi health source reports
/// its free space) and the Modbus buses.
#[derive(Clone, Default)]
pub struct Shared {
    pub spool_dir: std::path::PathBuf,
    pub buses: modbus::bus::Buses,
}

/// Runs one configured device until `cancel`.
pub async fn run(
    cfg: DeviceConfig,
    handle: DeviceHandle,
    shared: Shared,
    cancel: CancellationToken,
) {
    let spool_dir = shared.spool_dir;
    match cfg {
        DeviceConfig::Modbus(c) => {
            let bus = shared.buses.get(&c);
            modbus::run(c, bus, handle, cancel).await
        }
        DeviceConfig::Snmp(c) => snmp::run(c, handle, cancel).await,
        DeviceConfig::OneWire(c) => onewire::run(c, handle, cancel).await,
        DeviceConfig::Probe(c) => probe::run(c, handle, cancel).await,
        DeviceConfig::Gpio(c) => gpio::run(c, handle, cancel).await,
        DeviceConfig::System(c) => system::run(c, spool_dir, handle, cancel).await,
        DeviceConfig::Sim(c) => sim::run(c, handle, cancel).await,
        DeviceConfig::Megatec(c) => megatec::run(c, handle, cancel).await,
        DeviceConfig::Nut(c) => nut::run(c, handle, cancel).await,
        DeviceConfig::ApcSmart(c) => apc::run(c, handle, cancel).await,
    }
}

/// Reads a device once, for `wardgate check`.
pub async fn probe(cfg: &DeviceConfig) -> Result<Values, SourceError> {
    match cfg {
        DeviceConfig::Sim(c) => Ok(sim::probe(c)),
        DeviceConfig::Megatec(c) => megatec::probe(c)
            .await
            .map_err(|e| SourceError::Device(e.to_string())),
        DeviceConfig::Nut(c) => nut::probe(c)
            .await
            .map_err(|e| SourceError::Device(e.to_string())),
        DeviceConfig::ApcSmart(c) => apc::probe(c)
            .await
            .map_err(|e| SourceError::Device(e.to_string())),
        DeviceConfig::OneWire(c) => match onewire::read_all(c) {
            Ok((v, bad)) if !v.is_empty() || bad.is_empty() => Ok(v),
            Ok((_, bad)) => Err(SourceError::Device(format!(
                "every probe gave a bad reading: {}",
                bad.iter()
                    .map(|(id, e)| format!("{id}: {e}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            Err(e) => Err(SourceError::Device(e)),
        },
        DeviceConfig::System(c) => Ok(system::read_all(c, std::path::Path::new("/"))),
        DeviceConfig::Probe(c) => Ok(probe::probe_once(c).await),
        DeviceConfig::Gpio(c) => gpio::probe(c).map_err(|e| SourceError::Device(e.to_string())),
        DeviceConfig::Modbus(c) => modbus::probe(c)
            .await
            .map_err(|e| SourceError::Device(e.to_string())),
        DeviceConfig::Snmp(c) => snmp::probe(c)
            .await
            .map_err(|e| SourceError::Device(e.to_string())),
    }
}

#[cfg(test)]
mod tests;
