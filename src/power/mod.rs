//! Power: the gateway shuts the Pi down cleanly before the UPS that powers
//! it runs flat (docs/ups.md, "Shutting the Pi down on a long
//! power cut").
//!
//! [`Monitor`] watches every poll of the configured UPS (the device's poll
//! tap) and feeds the pure [`decide::Decider`]: on battery it turns the
//! spool's write-through on (every reading committed before it is sent),
//! and off again with the mains; when a condition holds on two consecutive
//! good polls it raises `power.shutdown`, gives the event a bounded time to
//! reach the broker, and hands the decision to the app, which stops the
//! gateway in the order of [`crate::app`] (offline status `power`), has the
//! UPS switch off later and come back with the mains ([`ups_command`]),
//! and runs `shutdown_command` ([`run_shutdown_command`]). Mains returning
//! before the stop begins cancel it all with `power.restored`.

pub(crate) mod config;
pub(crate) mod decide;
pub(crate) mod logind;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::config::PowerConfig;
use self::decide::{Decider, Limits, Reason, Step, UpsReading};
use crate::events;
use crate::model::{now_ms, Value, Values};
use crate::sink::mqtt::SinkCounters;
use crate::source::tap::{PollState, UpsCommand};
use crate::source::DeviceHandle;
use crate::spool::{LaneHandle, Spool};
use crate::status::{PowerState, PowerStatus, StatusHub};

/// How long `power.shutdown` has to reach the broker, while the link is
/// up, before the gateway begins to stop.
pub(crate) const PUBLISH_WAIT: Duration = Duration::from_secs(5);
/// How long the UPS's own link has to take the shutdown-and-return command
/// (it goes between two polls; a UPS that cannot be opened never takes it),
/// at least: [`command_wait`] gives each kind what its exchange can take.
pub(crate) const UPS_COMMAND_WAIT: Duration = Duration::from_secs(10);

/// How long the UPS `dev` may take the shutdown-and-return command: a poll
/// in progress first, then the command's own exchange, each reply within
/// the device's `timeout`. NUT: a `LIST VAR` (3 timeouts), then `SET VAR`
/// and `INSTCMD`, each tracked for up to 3 timeouts. APC Smart: stepping
/// the grace delay (up to 12 steps of `p` and `-`), then `Q`, `S`, `@000`.
/// Megatec: a poll and the command.
pub(crate) fn command_wait(dev: &crate::source::config::DeviceConfig) -> Duration {
    use crate::source::config::DeviceConfig;
    let (timeout, replies) = match dev {
        DeviceConfig::Nut(n) => (n.timeout, 10),
        DeviceConfig::ApcSmart(a) => (a.timeout.get(), 32),
        DeviceConfig::Megatec(m) => (m.timeout.get(), 4),
        _ => (Duration::ZERO, 0),
    };
    UPS_COMMAND_WAIT.max(timeout.saturating_mul(replies) + Duration::from_secs(5))
}
/// How long `shutdown_command` may run before it is killed.
pub(crate) const COMMAND_WAIT: Duration = Duration::from_secs(30);

/// A shutdown the monitor decided, for the app to carry out.
#[derive(Debug, Clone)]
pub(crate) struct Shutdown {
    pub reason: Reason,
}

/// How the monitor tells that the MQTT sink delivered the event: its lane
/// in the spool and its acknowledgement counter.
pub(crate) struct Delivery {
    pub lane: LaneHandle,
    pub counters: Arc<SinkCounters>,
}

/// The power monitor's parts (app.rs wires them).
pub(crate) struct Monitor {
    pub cfg: PowerConfig,
    /// The UPS that powers the Pi.
    pub ups: DeviceHandle,
    /// Where `power.*` events are raised (the gateway device).
    pub gateway: DeviceHandle,
    pub spool: Arc<Spool>,
    pub status: StatusHub,
    pub delivery: Delivery,
}

/// How the wait for the event ended.
enum Waited {
    /// Published, the link is down, or the time is up: go on.
    Done,
    /// The mains came back after this long on battery: call it off.
    Restored(Duration, Option<UpsReading>),
    Cancelled,
}

impl Monitor {
    /// The snapshot's `power` at start: on mains until the UPS says
    /// otherwise.
    pub(crate) fn initial_status(cfg: &PowerConfig) -> PowerStatus {
        PowerStatus {
            ups: cfg.ups.clone(),
            state: PowerState::Mains,
            since_ms: now_ms(),
            write_through: false,
            reason: None,
            reason_vi: None,
        }
    }

    /// Watches the UPS until `cancel`; sends a decided shutdown on
    /// `decided` (once), then waits for `cancel`.
    pub(crate) async fn run(self, cancel: CancellationToken, decided: oneshot::Sender<Shutdown>) {
        tracing::info!(
            ups = %self.cfg.ups,
            conditions = %self.cfg.conditions().join("; "),
            "power: watching the UPS that powers this Pi"
        );
        let mut polls = self.ups.polls();
        let mut d = Decider::new(Limits::of(&self.cfg));
        loop {
            let Some((n, values)) = next_poll(&mut polls, &cancel).await else {
                return;
            };
            match d.poll(n, values.as_ref(), Instant::now()) {
                Step::Nothing => {}
                Step::OnBattery => self.on_battery(),
                Step::Restored { on_battery_for } => self.restored(
                    on_battery_for,
                    false,
                    values.as_ref().and_then(UpsReading::of),
                ),
                Step::Shutdown {
                    reason,
                    reading,
                    on_battery_for,
                } => {
                    self.announce(&reason, &reading, on_battery_for);
                    match self.wait_published(&mut polls, &mut d, &cancel).await {
                        Waited::Cancelled => return,
                        Waited::Restored(for_, r) => {
                            self.restored(for_, true, r);
                            continue;
                        }
                        Waited::Done => {}
                    }
                    let _ = decided.send(Shutdown { reason });
                    cancel.cancelled().await;
                    return;
                }
            }
        }
    }

    fn set_status(&self, f: impl FnOnce(&mut PowerStatus)) {
        self.status.update(|s| {
            if let Some(p) = s.power.as_mut() {
                f(p)
            }
        });
    }

    fn on_battery(&self) {
        tracing::warn!(ups = %self.cfg.ups, "power: the UPS is on battery; every reading is written to the card before it is sent");
        self.spool.set_write_through(true);
        self.set_status(|p| {
            p.state = PowerState::OnBattery;
            p.since_ms = now_ms();
            p.write_through = true;
        });
    }

    fn restored(&self, on_battery_for: Duration, cancelled: bool, r: Option<UpsReading>) {
        self.spool.set_write_through(false);
        self.set_status(|p| {
            p.state = PowerState::Mains;
            p.since_ms = now_ms();
            p.write_through = false;
            p.reason = None;
            p.reason_vi = None;
        });
        let secs = on_battery_for.as_secs();
        let for_ = humantime::format_duration(Duration::from_secs(secs));
        let note = if cancelled {
            "; the shutdown is called off"
        } else {
            ""
        };
        tracing::info!(ups = %self.cfg.ups, on_battery_for = %for_, cancelled, "power: mains back");
        let mut v = Values::new();
        v.set("power.ups", self.cfg.ups.clone());
        v.num("power.on_battery_for", secs as f64);
        v.set("power.shutdown_cancelled", cancelled);
        if let Some(r) = r {
            v.set("ups.status", r.status);
        }
        self.gateway.report(
            events::POWER_RESTORED,
            &[("for", &for_), ("cancelled", &note)],
            v,
        );
    }

    fn announce(&self, reason: &Reason, r: &UpsReading, on_battery_for: Duration) {
        let (en, vi) = (reason.words(), reason.words_vi());
        tracing::error!(ups = %self.cfg.ups, reason = %en, status = %r.status, "power: shutting the Pi down");
        self.set_status(|p| {
            p.state = PowerState::ShuttingDown;
            p.since_ms = now_ms();
            p.reason = Some(en.clone());
            p.reason_vi = Some(vi.clone());
        });
        let mut v = Values::new();
        v.set("power.ups", self.cfg.ups.clone());
        v.set("power.reason", reason.code());
        v.num("power.on_battery_for", on_battery_for.as_secs() as f64);
        v.num(
            "power.ups_off_delay",
            self.cfg.ups_off_delay.as_secs() as f64,
        );
        v.set("ups.status", r.status.clone());
        if let Some(x) = r.runtime {
            v.num("battery.runtime", x);
        }
        if let Some(x) = r.charge {
            v.num("battery.charge", x);
        }
        let ev = events::POWER_SHUTDOWN;
        let msg = ev.render(&[
            ("reason", &en),
            ("ups", &self.cfg.ups),
            ("status", &r.status),
        ]);
        if let Some(m) = ev.render_vi(&[("reason", &vi)]) {
            v.set("message.vi", m);
        }
        self.gateway.event(ev.severity, ev.code, &msg, v);
    }

    /// Gives `power.shutdown` up to [`PUBLISH_WAIT`] to be acknowledged
    /// while the link is up: until the MQTT lane has nothing pending, or
    /// the broker acknowledged as many records as were pending when the
    /// event was queued (events go out first, so the event is among them).
    /// Polls go on meanwhile: mains back calls the shutdown off.
    async fn wait_published(
        &self,
        polls: &mut watch::Receiver<PollState>,
        d: &mut Decider,
        cancel: &CancellationToken,
    ) -> Waited {
        let link = self.status.subscribe();
        let acked = || self.delivery.counters.records_acked.load(Ordering::Relaxed);
        let (acked0, pending0) = (acked(), self.delivery.lane.pending());
        let deadline = Instant::now() + PUBLISH_WAIT;
        loop {
            if !link.borrow().uplink.connected {
                tracing::warn!("power: no link to the broker; power.shutdown is kept in the spool");
                return Waited::Done;
            }
            if self.delivery.lane.pending() == 0 || acked().saturating_sub(acked0) >= pending0 {
                return Waited::Done;
            }
            tokio::select! {
                _ = cancel.cancelled() => return Waited::Cancelled,
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(wait = ?PUBLISH_WAIT, "power: power.shutdown not acknowledged in time; it is kept in the spool");
                    return Waited::Done;
                }
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                r = polls.changed() => {
                    if r.is_err() {
                        continue;
                    }
                    let (n, values) = {
                        let p = polls.borrow_and_update();
                        (p.n, p.values.clone())
                    };
                    if let Step::Restored { on_battery_for } = d.poll(n, values.as_ref(), Instant::now()) {
                        return Waited::Restored(on_battery_for, values.as_ref().and_then(UpsReading::of));
                    }
                }
            }
        }
    }
}

/// The next poll's number and values; None on cancel (a tap whose device
/// is gone waits for cancel).
async fn next_poll(
    polls: &mut watch::Receiver<PollState>,
    cancel: &CancellationToken,
) -> Option<(u64, Option<Values>)> {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return None,
            r = polls.changed() => {
                if r.is_err() {
                    cancel.cancelled().await;
                    return None;
                }
            }
        }
        let p = polls.borrow_and_update();
        if p.n > 0 {
            return Some((p.n, p.values.clone()));
        }
    }
}

/// Asks the UPS, over its own link, to switch its output off after
/// `ups_off_delay` and on again with the mains (`0s`: not asked). Waits at
/// most `wait` ([`command_wait`]); the outcome is logged and returned in
/// words.
pub(crate) async fn ups_command(
    cfg: &PowerConfig,
    ups: &DeviceHandle,
    wait: Duration,
) -> Result<String, String> {
    if cfg.ups_off_delay.is_zero() {
        tracing::info!("power: ups_off_delay = 0s: the UPS is not asked to switch off");
        return Err("not asked (ups_off_delay = 0s)".into());
    }
    let cmd = UpsCommand::ShutdownReturn {
        off_after: cfg.ups_off_delay,
    };
    let r = match tokio::time::timeout(wait, ups.ups_command(cmd)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "the UPS's link did not take the command within {}",
            humantime::format_duration(wait)
        )),
    };
    match &r {
        Ok(sent) => {
            tracing::warn!(ups = %cfg.ups, %sent, "power: the UPS will switch off and come back with the mains")
        }
        Err(e) => {
            tracing::error!(ups = %cfg.ups, error = %e, "power: the UPS was not told to switch off; it will run until its battery is flat")
        }
    }
    r
}

/// Runs `shutdown_command` as a child process (at most [`COMMAND_WAIT`]),
/// logging its outcome; true when it exited 0.
pub(crate) async fn run_shutdown_command(cfg: &PowerConfig) -> bool {
    let Some((prog, args)) = cfg.shutdown_command.split_first() else {
        return false;
    };
    tracing::warn!(command = ?cfg.shutdown_command, "power: running the shutdown command");
    let child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(command = ?cfg.shutdown_command, error = %e, "power: the shutdown command could not be started; the Pi stays on");
            return false;
        }
    };
    match tokio::time::timeout(COMMAND_WAIT, child.wait_with_output()).await {
        Ok(Ok(out)) => {
            let said = |b: &[u8]| {
                let t = String::from_utf8_lossy(b);
                crate::source::cut(t.trim(), 512).into_owned()
            };
            if out.status.success() {
                tracing::info!(command = ?cfg.shutdown_command, stdout = %said(&out.stdout), "power: the shutdown command succeeded");
                true
            } else {
                tracing::error!(command = ?cfg.shutdown_command, status = %out.status, stderr = %said(&out.stderr), "power: the shutdown command failed; the Pi stays on (docs/ups.md: wardgate check says whether it is allowed)");
                false
            }
        }
        Ok(Err(e)) => {
            tracing::error!(command = ?cfg.shutdown_command, error = %e, "power: waiting for the shutdown command failed");
            false
        }
        Err(_) => {
            tracing::error!(command = ?cfg.shutdown_command, wait = ?COMMAND_WAIT, "power: the shutdown command did not finish in time; killed");
            false
        }
    }
}

/// The value of `name` in `values` in words, for `wardgate check`.
pub(crate) fn shown(values: &Values, name: &str) -> String {
    match values.get(name) {
        Some(Value::Str(s)) => s.clone(),
        Some(v) => v
            .as_f64()
            .map(|x| x.to_string())
            .unwrap_or_else(|| serde_json::to_string(v).unwrap_or_default()),
        None => "(not given)".into(),
    }
}
