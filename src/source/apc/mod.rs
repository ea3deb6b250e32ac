//! APC Smart-UPS over a serial line (`type = "apc-smart"`).
//!
//! Alerts (`!` line fail, `$` restored, `%` low battery, `+` recovered)
//! arrive unsolicited; they become events at once, not at the next poll.

pub mod codec;
pub(crate) mod config;

use std::collections::HashSet;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use self::config::ApcSmartConfig;
use super::serial::{self, Frame, SerialError};
use super::supervisor::{self, Action, Device, Fail, Policy};
use super::tap::{CommandResult, UpsCommand};
use super::ups::publish;
use super::DeviceHandle;
use crate::events;
use crate::model::{Severity, Values};
use codec::{Ack, Alert, CodecError, Command, GraceStep, Reply};

#[derive(Debug, thiserror::Error)]
pub enum ApcError {
    /// No reply in time: counted; a few in a row make the device faulty.
    #[error("no reply to '{0}' within {1:?}")]
    Timeout(char, Duration),
    /// Bytes without CR LF beyond what the protocol allows: counted.
    #[error("reply longer than {0} bytes (wrong baud rate or line noise?)")]
    TooLong(usize),
    /// The UPS did not enter smart mode: fault, retry after reopening.
    #[error("the UPS did not enter smart mode (is it an APC Smart-UPS on a smart cable?)")]
    NoSmartMode,
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The port failed (unplugged adapter): fault; reopen.
    #[error("serial port: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Open(#[from] SerialError),
    /// The UPS refused a command (`NA`, `NO`): the command is not sent;
    /// the caller says why in its result.
    #[error("the UPS answered {reply} to {cmd}")]
    Refused {
        cmd: &'static str,
        reply: &'static str,
    },
}

impl ApcError {
    fn port_lost(&self) -> bool {
        matches!(self, ApcError::Io(_) | ApcError::Open(_))
    }
}

pub struct ApcSmart<S> {
    io: S,
    timeout: Duration,
    alerts: Vec<Alert>,
    unsupported: HashSet<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ApcSmart<S> {
    pub fn new(io: S, timeout: Duration) -> Self {
        ApcSmart {
            io,
            timeout,
            alerts: Vec::new(),
            unsupported: HashSet::new(),
        }
    }

    /// Alerts received since the last call.
    pub fn take_alerts(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.alerts)
    }

    pub async fn transact(&mut self, cmd: Command) -> Result<Reply, ApcError> {
        self.send(&[cmd.byte()]).await?;
        let line = self.read_reply(cmd.byte(), false, self.timeout).await?;
        Ok(codec::parse(cmd, &line)?)
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), ApcError> {
        self.io.write_all(bytes).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Reads one reply line (alerts taken out) within `limit`; with
    /// `star_is_ok`, a `*` before any text is the whole reply (older
    /// models answer a shutdown command so; it is also the "turning off"
    /// alert, kept as such).
    async fn read_reply(
        &mut self,
        what: u8,
        star_is_ok: bool,
        limit: Duration,
    ) -> Result<Vec<u8>, ApcError> {
        let mut line = Vec::with_capacity(16);
        let mut byte = [0u8; 1];
        let read = async {
            loop {
                if self.io.read(&mut byte).await? == 0 {
                    return Err(ApcError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the port closed",
                    )));
                }
                let (alerts, rest) = codec::split_alerts(&byte);
                let star = alerts.contains(&Alert::TurningOff);
                self.alerts.extend(alerts);
                if star_is_ok && star && line.is_empty() {
                    return Ok(b"*".to_vec());
                }
                for b in rest {
                    match serial::push_byte(&mut line, b, b"\r\n", codec::MAX_REPLY) {
                        Frame::Done => return Ok(std::mem::take(&mut line)),
                        Frame::TooLong => return Err(ApcError::TooLong(codec::MAX_REPLY)),
                        Frame::More => {}
                    }
                }
            }
        };
        match tokio::time::timeout(limit, read).await {
            Ok(r) => r,
            Err(_) => Err(ApcError::Timeout(what as char, limit)),
        }
    }

    /// `Y` → `SM`; needed after every reconnect.
    pub async fn smart_mode(&mut self) -> Result<(), ApcError> {
        match self.transact(Command::SmartMode).await {
            Ok(Reply::SmartMode) => Ok(()),
            Err(e) if e.port_lost() => Err(e),
            _ => Err(ApcError::NoSmartMode),
        }
    }

    /// Every polled variable the UPS supports.
    pub async fn poll(&mut self) -> Result<Values, ApcError> {
        let mut v = Values::new();
        for cmd in Command::POLL {
            if self.unsupported.contains(&cmd.byte()) {
                continue;
            }
            match self.transact(cmd).await {
                Ok(Reply::Number(n)) => {
                    v.num(cmd.variable(), n);
                }
                Ok(Reply::Text(t)) | Ok(Reply::Status(t)) => v.set(cmd.variable(), t),
                Ok(Reply::SmartMode) => {}
                Err(ApcError::Codec(CodecError::NotAvailable)) => {
                    self.unsupported.insert(cmd.byte());
                }
                // Without the status there is no useful reading.
                Err(e) if cmd == Command::Status => return Err(e),
                Err(e) if e.port_lost() => return Err(e),
                Err(e) => tracing::debug!(command = ?cmd, error = %e, "APC variable not read"),
            }
        }
        Ok(v)
    }

    /// Waits up to `d` for alerts arriving between polls.
    pub async fn listen(&mut self, d: Duration) -> Result<(), ApcError> {
        let mut buf = [0u8; 16];
        match tokio::time::timeout(d, self.io.read(&mut buf)).await {
            Ok(Ok(0)) => Err(ApcError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the port closed",
            ))),
            Ok(Ok(n)) => {
                let (alerts, _) = codec::split_alerts(&buf[..n]);
                self.alerts.extend(alerts);
                Ok(())
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Ok(()),
        }
    }
}

/// How long the UPS has to refuse `@` before its digits are sent (NUT's
/// apcsmart waits 200 ms: a `NA` here means the digits would be taken as
/// commands).
const HIBERNATE_PEEK: Duration = Duration::from_millis(200);
/// Between the digits of `@000`, as NUT paces them.
const DIGIT_PACE: Duration = Duration::from_millis(50);

impl<S: AsyncRead + AsyncWrite + Unpin> ApcSmart<S> {
    /// Sends `cmd` and reads its acknowledgement.
    async fn ack(&mut self, cmd: Command) -> Result<Ack, ApcError> {
        self.send(&[cmd.byte()]).await?;
        let line = self.read_reply(cmd.byte(), true, self.timeout).await?;
        Ok(codec::parse_ack(&line)?)
    }

    /// `@000`: `@` alone, a short wait in which the UPS may refuse it,
    /// then the digits, paced.
    async fn hibernate(&mut self) -> Result<Ack, ApcError> {
        let at = Command::Hibernate.byte();
        self.send(&[at]).await?;
        match self.read_reply(at, true, HIBERNATE_PEEK).await {
            // Silence: the UPS waits for the digits.
            Err(ApcError::Timeout(..)) => {}
            Ok(line) => return Ok(codec::parse_ack(&line)?),
            Err(e) => return Err(e),
        }
        for d in codec::HIBERNATE_DIGITS {
            tokio::time::sleep(DIGIT_PACE).await;
            self.send(&[*d]).await?;
        }
        let line = self.read_reply(at, true, self.timeout).await?;
        Ok(codec::parse_ack(&line)?)
    }

    /// The grace delay now (`p`), None when the UPS does not report it.
    async fn grace_delay(&mut self) -> Result<Option<u32>, ApcError> {
        match self.transact(Command::GraceDelay).await {
            Ok(Reply::Number(n)) if (0.0..=f64::from(u16::MAX)).contains(&n) => Ok(Some(n as u32)),
            Ok(other) => Err(ApcError::Codec(CodecError::Malformed(format!(
                "grace delay {other:?}"
            )))),
            Err(ApcError::Codec(CodecError::NotAvailable)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Steps the grace delay (`p`, `-`) to the nearest not shorter than
    /// `wanted` ([`codec::grace_step`]); returns it in words.
    async fn set_grace_delay(&mut self, wanted: Duration) -> Result<String, ApcError> {
        let asked = wanted.as_secs();
        let Some(first) = self.grace_delay().await? else {
            return Ok(format!(
                "the UPS does not report its grace delay (p: NA), so it keeps its own (asked {asked} s)"
            ));
        };
        let mut seen = vec![first];
        loop {
            let now = *seen.last().unwrap_or(&first);
            match codec::grace_step(wanted, &seen) {
                GraceStep::Stay(v) => {
                    let fit = if u64::from(v) >= asked {
                        format!("the nearest not shorter than the {asked} s asked")
                    } else {
                        format!("the longest this UPS offers; {asked} s were asked")
                    };
                    let changed = if v == first { "kept" } else { "set" };
                    return Ok(format!(
                        "grace delay {changed} at {v} s ({fit}; a Smart-UPS offers only a few fixed values, usually 20, 180, 300, 600 s)"
                    ));
                }
                GraceStep::GiveUp => {
                    return Ok(format!(
                        "grace delay left at {now} s: no value near {asked} s after {} steps",
                        seen.len() - 1
                    ));
                }
                GraceStep::Next => {}
            }
            // `-` steps the value last read: read it first (it is, unless
            // an alert came in between), as NUT does.
            match self.ack(Command::NextValue).await? {
                Ack::Ok => {}
                Ack::No | Ack::NotAvailable => {
                    return Ok(format!(
                        "the UPS refused to change its grace delay, so it stays {now} s (asked {asked} s)"
                    ));
                }
            }
            match self.grace_delay().await? {
                Some(v) => seen.push(v),
                None => {
                    return Err(ApcError::Codec(CodecError::Malformed(
                        "the grace delay went unreadable while it was being set".into(),
                    )))
                }
            }
        }
    }

    /// Switches the output off after about `off_after` and on again when
    /// the mains return, as NUT's apcsmart does for `shutdown.return`
    /// (sdtype 0): the grace delay set to the nearest not shorter, then
    /// `S` on battery, `@000` on mains (and when `S` is refused because the
    /// mains came back meanwhile). Returns what was sent, in words.
    pub async fn shutdown_return(&mut self, off_after: Duration) -> Result<String, ApcError> {
        // A reply lost while stepping the grace delay must not cost the
        // power-off itself: the command goes anyway, with whatever delay
        // the UPS has now (a lost port is the exception: nothing can go).
        let grace = match self.set_grace_delay(off_after).await {
            Ok(g) => g,
            Err(e) if e.port_lost() => return Err(e),
            Err(e) => format!("grace delay not set ({e}): the UPS keeps the one it has"),
        };
        // NUT assumes on battery when the status cannot be read.
        let on_battery = match self.transact(Command::Status).await {
            Ok(Reply::Status(t)) => t.split_whitespace().any(|t| t == "OB"),
            Err(e) if e.port_lost() => return Err(e),
            _ => true,
        };
        let mut said = Vec::new();
        if on_battery {
            match self.ack(Command::SoftShutdown).await? {
                Ack::Ok => {
                    return Ok(format!(
                        "{grace}; then S (soft hibernate, on battery): the UPS answered OK; output off after the grace delay, on again when the mains return"
                    ))
                }
                Ack::No => said.push("S: NO"),
                Ack::NotAvailable => said.push("S: NA"),
            }
        }
        match self.hibernate().await? {
            Ack::Ok => Ok(format!(
                "{grace}; then @000 (hard hibernate{}): the UPS answered OK; output off after the grace delay, on again when the mains return",
                if said.is_empty() {
                    ", on mains".to_owned()
                } else {
                    format!(", after {}", said.join(", "))
                }
            )),
            Ack::No => Err(ApcError::Refused {
                cmd: "@000",
                reply: "NO",
            }),
            Ack::NotAvailable => Err(ApcError::Refused {
                cmd: "@000",
                reply: "NA",
            }),
        }
    }
}

/// The event for an alert, and how it changes the known status (so the
/// next poll does not report the same change twice).
fn alert_event(
    a: Alert,
) -> (
    Severity,
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
) {
    let (ev, change) = match a {
        Alert::LineFail => (events::UPS_ON_BATTERY, Some(("OB", "OL"))),
        Alert::LineRestored => (events::UPS_ON_LINE, Some(("OL", "OB"))),
        Alert::LowBattery => (events::UPS_LOW_BATTERY, Some(("LB", ""))),
        Alert::BatteryRecovered => (events::UPS_BATTERY_OK, Some(("", "LB"))),
        Alert::ReplaceBattery => (events::UPS_REPLACE_BATTERY, Some(("RB", ""))),
        Alert::Abnormal => (events::UPS_ABNORMAL, None),
        Alert::AbnormalCleared => (events::UPS_ABNORMAL_CLEARED, None),
        Alert::TurningOff => (events::UPS_TURNING_OFF, None),
    };
    (ev.severity, ev.code, ev.message, change)
}

fn apply(status: &mut Option<String>, add: &str, remove: &str) {
    let mut t: Vec<String> = status
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .filter(|t| *t != remove && *t != add)
        .map(str::to_owned)
        .collect();
    if !add.is_empty() {
        t.insert(0, add.to_owned());
    }
    *status = Some(t.join(" "));
}

fn raise_alerts(h: &DeviceHandle, alerts: Vec<Alert>, last: &mut Option<String>) {
    for a in alerts {
        let (sev, code, msg, change) = alert_event(a);
        if let Some((add, remove)) = change {
            apply(last, add, remove);
        }
        let mut v = Values::new();
        if let Some(s) = last.as_deref() {
            v.set("ups.status", s);
        }
        h.event(sev, code, msg, v);
    }
}

/// What the supervisor keeps of an APC UPS between links.
struct Ups {
    cfg: ApcSmartConfig,
    last_status: Option<String>,
}

impl Ups {
    fn port_lost(&self, e: &ApcError) -> Fail {
        Fail::new(
            Action::Reopen,
            Some("port"),
            format!("{}: {e}", self.cfg.serial.display()),
        )
    }
}

impl Device for Ups {
    type Conn = ApcSmart<tokio_serial::SerialStream>;

    async fn open(&mut self, _h: &DeviceHandle) -> Result<Self::Conn, Fail> {
        let port = serial::open(&self.cfg.serial, self.cfg.baud.get(), Default::default())
            .map_err(|e| Fail::new(Action::Reopen, None, e.to_string()))?;
        let mut ups = ApcSmart::new(port, self.cfg.timeout.get());
        ups.smart_mode()
            .await
            .map_err(|e| Fail::new(Action::Reopen, Some("smart_mode"), e.to_string()))?;
        Ok(ups)
    }

    async fn poll(&mut self, ups: &mut Self::Conn, h: &DeviceHandle) -> Result<(), Fail> {
        let r = ups.poll().await;
        raise_alerts(h, ups.take_alerts(), &mut self.last_status);
        match r {
            Ok(values) => {
                publish(h, &mut self.last_status, values);
                Ok(())
            }
            Err(e) if e.port_lost() => Err(self.port_lost(&e)),
            Err(e) => Err(Fail::new(
                Action::Streak,
                Some(match e {
                    ApcError::Timeout(..) => "timeout",
                    ApcError::TooLong(_) => "garbage",
                    ApcError::Codec(_) => "malformed",
                    _ => "port",
                }),
                format!("not answering on {}: {e}", self.cfg.serial.display()),
            )),
        }
    }

    /// The power-off with return ([`ApcSmart::shutdown_return`]); alerts
    /// that came with the replies are raised as usual.
    async fn command(
        &mut self,
        ups: &mut Self::Conn,
        h: &DeviceHandle,
        cmd: UpsCommand,
    ) -> CommandResult {
        let r = match cmd {
            UpsCommand::ShutdownReturn { off_after } => ups.shutdown_return(off_after).await,
        };
        raise_alerts(h, ups.take_alerts(), &mut self.last_status);
        r.map_err(|e| format!("APC {}: {e}", self.cfg.serial.display()))
    }

    /// Between polls, listens for alerts so they are sent at once.
    async fn between(&mut self, ups: &mut Self::Conn, h: &DeviceHandle) -> Fail {
        loop {
            let r = ups.listen(self.cfg.interval).await;
            raise_alerts(h, ups.take_alerts(), &mut self.last_status);
            if let Err(e) = r {
                return self.port_lost(&e);
            }
        }
    }
}

pub async fn run(cfg: ApcSmartConfig, h: DeviceHandle, cancel: CancellationToken) {
    let policy = Policy {
        // Polls keep their pace: one that overran is followed at once.
        missed: tokio::time::MissedTickBehavior::Burst,
        ..super::megatec::serial_policy(cfg.interval)
    };
    let ups = Ups {
        cfg,
        last_status: None,
    };
    supervisor::run(ups, policy, h, cancel).await
}

/// Reads the UPS once, for `wardgate check`.
pub async fn probe(cfg: &ApcSmartConfig) -> Result<Values, ApcError> {
    let port = serial::open(&cfg.serial, cfg.baud.get(), Default::default())?;
    let mut ups = ApcSmart::new(port, cfg.timeout.get());
    ups.smart_mode().await?;
    ups.poll().await
}

#[cfg(test)]
mod tests;
