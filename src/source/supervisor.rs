//! The one retry loop of a polled device: open, poll every interval, count
//! each failure, fault or mark stale after a streak, reopen after a pause,
//! and stop at once on cancel at every await. Each kind says only how to
//! open and poll its device ([`Device`]), what a failure asks for
//! ([`Fail`]) and its timings ([`Policy`]); health, the failure streak and
//! the events go through the [`DeviceHandle`].
//!
//! The sequence every kind gives when its device stops answering
//! (docs/mqtt.md, docs/ups.md, docs/sensors.md): `device.lost` once no good
//! reading came for three intervals (or, at the latest, with the failure
//! that ends the streak), then `device.fault` where the kind faults after a
//! streak, and `device.restored` with the next good reading.

use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::tap::{CommandResult, UpsCommand};
use super::{DeviceHandle, STALE_AFTER_INTERVALS};

/// What a failed open or poll asks the supervisor to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// The device said nothing useful (timeout, garbage): one more in the
    /// streak. After [`Policy::streak`] in a row, [`Policy::after_streak`];
    /// before that, stale once no good reading came for three intervals.
    Streak,
    /// Fault at once with the reason, keeping the connection (a Modbus
    /// exception, upsd's DRIVER-NOT-CONNECTED, an SNMP agent that is silent).
    Fault,
    /// Stale at once with the reason, keeping the connection (upsd's
    /// DATA-STALE).
    Stale,
    /// The link is gone (unplugged adapter, closed connection): fault at
    /// once and reopen after [`Policy::reopen_pause`]. A failed open is
    /// always this.
    Reopen,
}

/// A failed open or poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fail {
    pub action: Action,
    /// The error-count key in the status (`timeout`, `garbage`, ...); None
    /// when the device counted it already or does not count it.
    pub count: Option<&'static str>,
    /// In words, for the fault or stale event.
    pub reason: String,
}

impl Fail {
    pub(crate) fn new(
        action: Action,
        count: Option<&'static str>,
        reason: impl Into<String>,
    ) -> Self {
        Fail {
            action,
            count,
            reason: reason.into(),
        }
    }
}

/// What a streak of failed polls leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterStreak {
    /// Stale with the last failure's reason (`device.lost`), and the link
    /// reopened in case it is confused (the serial UPS kinds).
    StaleAndReopen,
    /// `device.lost` if the device was still ok, then `device.fault` with
    /// the last failure's reason; the link is kept (Modbus).
    Fault,
}

/// A kind's timings and what its failures lead to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// Time between polls.
    pub interval: Duration,
    /// When a poll overruns its interval (as each kind's loop did before).
    pub missed: MissedTickBehavior,
    /// Failed polls in a row that end a streak.
    pub streak: u32,
    pub after_streak: AfterStreak,
    /// Pause after a failed open before the next try: bounded and fixed
    /// (docs/ups.md: "tried again every interval"), no jitter.
    pub open_retry: Duration,
    /// Pause before reopening a link that was lost or confused.
    pub reopen_pause: Duration,
}

impl Policy {
    /// Polls every `interval` (a late poll delays the next), faults after
    /// three failures in a row, and opens and reopens every interval.
    pub(crate) fn new(interval: Duration) -> Self {
        Policy {
            interval,
            missed: MissedTickBehavior::Delay,
            streak: STALE_AFTER_INTERVALS,
            after_streak: AfterStreak::Fault,
            open_retry: interval,
            reopen_pause: interval,
        }
    }
}

/// How to open and poll one kind of device. Crate-private: the futures are
/// known to be `Send` where each concrete kind is spawned.
pub(crate) trait Device {
    /// An open link (port, connection, session); dropped to close it.
    type Conn;

    /// Opens the link and does what each new link needs (Megatec's
    /// identify, APC's smart mode, SNMP's interface lookup).
    async fn open(&mut self, h: &DeviceHandle) -> Result<Self::Conn, Fail>;

    /// One poll: on success the device reports through `h` itself.
    async fn poll(&mut self, conn: &mut Self::Conn, h: &DeviceHandle) -> Result<(), Fail>;

    /// Runs between polls and is dropped when the next one is due, so it
    /// must be cancel-safe (APC listens for alerts here). Returns only on
    /// failure; by default it waits.
    async fn between(&mut self, _conn: &mut Self::Conn, _h: &DeviceHandle) -> Fail {
        std::future::pending().await
    }

    /// Sends a command to the UPS over the open link (between polls);
    /// returns what was sent in words. Kinds that take no commands keep
    /// the default.
    async fn command(
        &mut self,
        _conn: &mut Self::Conn,
        _h: &DeviceHandle,
        _cmd: UpsCommand,
    ) -> CommandResult {
        Err("this kind of device takes no UPS commands".into())
    }
}

/// Runs `dev` until `cancel`.
pub(crate) async fn run<D: Device>(
    mut dev: D,
    policy: Policy,
    h: DeviceHandle,
    cancel: CancellationToken,
) {
    loop {
        let opened = tokio::select! {
            _ = cancel.cancelled() => return,
            r = dev.open(&h) => r,
        };
        let mut conn = match opened {
            Ok(c) => c,
            Err(f) => {
                if let Some(k) = f.count {
                    h.count_error(k);
                }
                tracing::debug!(device = h.id(), reason = %f.reason, "open failed");
                h.fault(&f.reason);
                if !pause(&cancel, policy.open_retry).await {
                    return;
                }
                continue;
            }
        };
        h.reset_streak();
        let mut tick = tokio::time::interval(policy.interval);
        tick.set_missed_tick_behavior(policy.missed);
        loop {
            let failed_between = tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = tick.tick() => None,
                // The `poll` command: read now; the schedule goes on.
                _ = h.poll_requested() => None,
                // A UPS command (the power monitor): sent over this link,
                // then the schedule goes on.
                (cmd, reply) = h.command_requested() => {
                    let r = tokio::select! {
                        _ = cancel.cancelled() => return,
                        r = dev.command(&mut conn, &h, cmd) => r,
                    };
                    match &r {
                        Ok(sent) => tracing::info!(device = h.id(), %sent, "UPS command sent"),
                        Err(e) => tracing::warn!(device = h.id(), error = %e, "UPS command not sent"),
                    }
                    let _ = reply.send(r);
                    continue;
                }
                f = dev.between(&mut conn, &h) => Some(f),
            };
            let r = match failed_between {
                Some(f) => Err(f),
                None => tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = dev.poll(&mut conn, &h) => r,
                },
            };
            if let Err(f) = r {
                if !failed(&h, &policy, f) {
                    break;
                }
            }
        }
        drop(conn);
        if !pause(&cancel, policy.reopen_pause).await {
            return;
        }
    }
}

/// Counts and reports one failed poll; false when the link is to be
/// reopened.
fn failed(h: &DeviceHandle, policy: &Policy, f: Fail) -> bool {
    tracing::debug!(device = h.id(), reason = %f.reason, "poll failed");
    let streak = h.failed(f.count);
    match f.action {
        Action::Fault => h.fault(&f.reason),
        Action::Stale => h.mark_stale(&f.reason),
        Action::Reopen => {
            h.fault(&f.reason);
            return false;
        }
        Action::Streak if streak >= policy.streak => match policy.after_streak {
            AfterStreak::StaleAndReopen => {
                h.mark_stale(&f.reason);
                return false;
            }
            AfterStreak::Fault => {
                h.lost();
                h.fault(&f.reason);
            }
        },
        Action::Streak => h.check_stale(),
    }
    true
}

/// Sleeps `d`; false when cancelled first.
async fn pause(cancel: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

#[cfg(test)]
mod tests;
