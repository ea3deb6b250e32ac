//! APC Smart-UPS over a serial line (`type = "apc-smart"`).
//!
//! Alerts (`!` line fail, `$` restored, `%` low battery, `+` recovered)
//! arrive unsolicited; they become events at once, not at the next poll.

pub mod codec;
pub mod config;

use std::collections::HashSet;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use self::config::ApcSmartConfig;
use super::serial::{self, Frame, SerialError};
use super::supervisor::{self, Action, Device, Fail, Policy};
use super::ups::publish;
use super::DeviceHandle;
use crate::events;
use crate::model::{Severity, Values};
use codec::{Alert, CodecError, Command, Reply};

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
        self.io.write_all(&[cmd.byte()]).await?;
        self.io.flush().await?;
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
                self.alerts.extend(alerts);
                for b in rest {
                    match serial::push_byte(&mut line, b, b"\r\n", codec::MAX_REPLY) {
                        Frame::Done => return Ok(()),
                        Frame::TooLong => return Err(ApcError::TooLong(codec::MAX_REPLY)),
                        Frame::More => {}
                    }
                }
            }
        };
        match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok(())) => Ok(codec::parse(cmd, &line)?),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ApcError::Timeout(cmd.byte() as char, self.timeout)),
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
mod tests {
    use super::*;

    #[test]
    fn alerts_update_the_known_status() {
        let mut s = Some("OL".to_owned());
        apply(&mut s, "OB", "OL");
        assert_eq!(s.as_deref(), Some("OB"));
        apply(&mut s, "LB", "");
        assert_eq!(s.as_deref(), Some("LB OB"));
        apply(&mut s, "", "LB");
        apply(&mut s, "OL", "OB");
        assert_eq!(s.as_deref(), Some("OL"));
    }

    #[test]
    fn alert_words_are_the_contract() {
        assert_eq!(
            alert_event(Alert::TurningOff),
            (
                Severity::Critical,
                "ups.shutdown_pending",
                "UPS is about to turn off",
                None
            )
        );
        assert_eq!(
            alert_event(Alert::Abnormal),
            (
                Severity::Warning,
                "ups.abnormal",
                "UPS reports an abnormal condition",
                None
            )
        );
        assert_eq!(
            alert_event(Alert::LineFail),
            (
                Severity::Critical,
                "ups.on_battery",
                "UPS on battery: mains power lost",
                Some(("OB", "OL"))
            )
        );
    }

    #[tokio::test]
    async fn smart_mode_poll_and_alerts_over_a_stream() {
        let (a, mut b) = tokio::io::duplex(256);
        tokio::spawn(async move {
            let mut c = [0u8; 1];
            while b.read(&mut c).await.unwrap_or(0) == 1 {
                let reply: &[u8] = match c[0] {
                    b'Y' => b"SM\r\n",
                    // An alert inside the status reply.
                    b'Q' => b"1!0\r\n",
                    b'B' => b"27.87\r\n",
                    b'f' => b"094.0\r\n",
                    b'j' => b"0012:\r\n",
                    _ => b"NA\r\n",
                };
                let _ = b.write_all(reply).await;
            }
        });
        let mut u = ApcSmart::new(a, Duration::from_secs(1));
        u.smart_mode().await.unwrap();
        let v = u.poll().await.unwrap();
        assert_eq!(v.get("ups.status"), Some(&"OB".into()));
        assert_eq!(
            v.get("battery.runtime").and_then(|x| x.as_f64()),
            Some(720.0)
        );
        assert_eq!(u.take_alerts(), vec![Alert::LineFail]);
        // NA variables are not asked again.
        assert!(u.unsupported.contains(&b'C'));
    }
}
