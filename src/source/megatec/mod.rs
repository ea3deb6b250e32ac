//! Megatec / Q1 UPS over a serial line (`type = "megatec"`).
//!
//! The driver is generic over `AsyncRead + AsyncWrite`, so unit tests talk
//! to it through `tokio::io::duplex` and integration tests through a real
//! pseudo-terminal pair; the protocol itself lives in [`codec`].

pub mod codec;
pub(crate) mod config;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use self::config::MegatecConfig;
use super::serial::{self, Frame, SerialError};
use super::supervisor::{self, Action, AfterStreak, Device, Fail, Policy};
use super::tap::{CommandResult, UpsCommand};
use super::ups::publish;
use super::DeviceHandle;
use crate::model::Values;
use codec::{ChargeEstimate, CodecError, Command, Identity, Rated};

#[derive(Debug, thiserror::Error)]
pub enum MegatecError {
    /// No reply within the timeout: counted; after a few in a row the
    /// device is marked faulty and the port reopened.
    #[error("no reply to {0} within {1:?}")]
    Timeout(&'static str, Duration),
    /// More than the protocol allows without a CR (wrong baud rate, line
    /// noise): counted, the rest of the line is discarded.
    #[error("reply longer than {0} bytes without CR (wrong baud rate or line noise?)")]
    TooLong(usize),
    /// Some bytes came but no CR within the timeout (wrong baud rate, noise,
    /// or a cut-off reply): counted as garbage.
    #[error("{1} bytes without CR in reply to {0} (wrong baud rate or line noise?)")]
    Partial(&'static str, usize),
    /// The UPS sent something the codec rejects: counted.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The port failed (unplugged adapter): the device is faulty; reopen.
    #[error("serial port: {0}")]
    Io(#[from] std::io::Error),
    /// The port could not be opened: the device is faulty; retry.
    #[error(transparent)]
    Open(#[from] SerialError),
}

impl MegatecError {
    /// Whether the port itself is gone and must be reopened.
    fn port_lost(&self) -> bool {
        matches!(self, MegatecError::Io(_) | MegatecError::Open(_))
    }
}

/// One conversation with a Megatec UPS over any byte stream.
pub struct Megatec<S> {
    io: S,
    timeout: Duration,
    rated: Option<Rated>,
    ident: Option<Identity>,
    estimate: Option<ChargeEstimate>,
    configured_estimate: Option<ChargeEstimate>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Megatec<S> {
    pub fn new(io: S, timeout: Duration, estimate: Option<ChargeEstimate>) -> Self {
        Megatec {
            io,
            timeout,
            rated: None,
            ident: None,
            estimate,
            configured_estimate: estimate,
        }
    }

    /// Sends one command and reads one CR-terminated reply.
    pub async fn transact(&mut self, cmd: Command) -> Result<Vec<u8>, MegatecError> {
        let name = match cmd {
            Command::Q1 => "Q1",
            Command::F => "F",
            Command::I => "I",
            Command::Test => "T",
            Command::TestLow => "TL",
            Command::CancelTest => "CT",
        };
        self.exchange(cmd.bytes(), name).await
    }

    /// Sends a command that most UPS do not answer (`S..R..`): the answer
    /// if one comes within the timeout, None if none does.
    pub async fn send(
        &mut self,
        bytes: &[u8],
        name: &'static str,
    ) -> Result<Option<Vec<u8>>, MegatecError> {
        match self.exchange(bytes, name).await {
            Ok(r) => Ok(Some(r)),
            Err(MegatecError::Timeout(..)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes `bytes` and reads one CR-terminated reply.
    async fn exchange(
        &mut self,
        bytes: &[u8],
        name: &'static str,
    ) -> Result<Vec<u8>, MegatecError> {
        // Drop anything left over from an earlier, late reply.
        let mut junk = [0u8; 256];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1), self.io.read(&mut junk)).await
        {
            if n == 0 {
                break;
            }
        }
        self.io.write_all(bytes).await?;
        self.io.flush().await?;
        let mut reply = Vec::with_capacity(64);
        let read = async {
            let mut byte = [0u8; 1];
            loop {
                let n = self.io.read(&mut byte).await?;
                if n == 0 {
                    return Err(MegatecError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the port closed",
                    )));
                }
                match serial::push_byte(&mut reply, byte[0], b"\r", codec::MAX_REPLY) {
                    Frame::Done => return Ok(()),
                    Frame::TooLong => return Err(MegatecError::TooLong(codec::MAX_REPLY)),
                    Frame::More => {}
                }
            }
        };
        let r = tokio::time::timeout(self.timeout, read).await;
        match r {
            Ok(Ok(())) => Ok(reply),
            Ok(Err(e)) => Err(e),
            Err(_) if !reply.is_empty() => Err(MegatecError::Partial(name, reply.len())),
            Err(_) => Err(MegatecError::Timeout(name, self.timeout)),
        }
    }

    /// Reads the rated values and identity (at start and after a reconnect).
    /// Units that do not support them answer NAK or echo: that is fine.
    pub async fn identify(&mut self) -> Result<(), MegatecError> {
        match self.transact(Command::F).await {
            Ok(r) => match codec::parse_f(&r) {
                Ok(rated) => {
                    if self.configured_estimate.is_none() {
                        self.estimate = ChargeEstimate::from_rated(rated.battery_voltage);
                    }
                    self.rated = Some(rated);
                }
                Err(e) => tracing::debug!(error = %e, "F not supported"),
            },
            Err(e) if e.port_lost() => return Err(e),
            Err(e) => tracing::debug!(error = %e, "F not answered"),
        }
        match self.transact(Command::I).await {
            Ok(r) => match codec::parse_i(&r) {
                Ok(i) => self.ident = Some(i),
                Err(e) => tracing::debug!(error = %e, "I not supported"),
            },
            Err(e) if e.port_lost() => return Err(e),
            Err(e) => tracing::debug!(error = %e, "I not answered"),
        }
        Ok(())
    }

    /// One Q1 poll, mapped to NUT's names.
    pub async fn poll(&mut self) -> Result<Values, MegatecError> {
        let reply = self.transact(Command::Q1).await?;
        let q = codec::parse_q1(&reply)?;
        Ok(codec::to_values(
            &q,
            self.rated.as_ref(),
            self.ident.as_ref(),
            self.estimate,
        ))
    }
}

fn estimate_of(cfg: &MegatecConfig) -> Option<ChargeEstimate> {
    match (cfg.battery_voltage_low, cfg.battery_voltage_high) {
        (Some(low), Some(high)) => Some(ChargeEstimate { low, high }),
        _ => None,
    }
}

/// What the supervisor keeps of a Megatec UPS between links: how to open
/// its port (a serial line; a pipe in tests) and the last `ups.status`.
struct Ups<F> {
    cfg: MegatecConfig,
    open_port: F,
    last_status: Option<String>,
}

impl<F, S> Device for Ups<F>
where
    F: FnMut(&MegatecConfig) -> Result<S, MegatecError>,
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Conn = Megatec<S>;

    async fn open(&mut self, _h: &DeviceHandle) -> Result<Megatec<S>, Fail> {
        let port = (self.open_port)(&self.cfg)
            .map_err(|e| Fail::new(Action::Reopen, None, e.to_string()))?;
        let mut ups = Megatec::new(port, self.cfg.timeout.get(), estimate_of(&self.cfg));
        // Identify failing means the port is gone: a failed open, retried
        // after a pause like any other.
        ups.identify()
            .await
            .map_err(|e| Fail::new(Action::Reopen, None, e.to_string()))?;
        Ok(ups)
    }

    async fn poll(&mut self, ups: &mut Megatec<S>, h: &DeviceHandle) -> Result<(), Fail> {
        match ups.poll().await {
            Ok(values) => {
                publish(h, &mut self.last_status, values);
                Ok(())
            }
            // Reopen: an unplugged adapter comes back as a new device.
            Err(e) if e.port_lost() => Err(Fail::new(
                Action::Reopen,
                Some(error_kind(&e)),
                format!("{}: {e}", self.cfg.serial.display()),
            )),
            // The port is there but the UPS says nothing useful: after a
            // streak, stale, and reopen in case the line is confused.
            Err(e) => Err(Fail::new(
                Action::Streak,
                Some(error_kind(&e)),
                format!("not answering on {}: {e}", self.cfg.serial.display()),
            )),
        }
    }
    /// `shutdown.return`: `S<n>R<m>` (docs/ups.md), the output off after
    /// `off_after` (rounded down to the UPS's steps) and back on
    /// `return_delay` after that once the mains are there.
    async fn command(
        &mut self,
        ups: &mut Megatec<S>,
        _h: &DeviceHandle,
        cmd: UpsCommand,
    ) -> CommandResult {
        let UpsCommand::ShutdownReturn { off_after } = cmd;
        let minutes = (self.cfg.return_delay.get().as_secs() / 60).max(1) as u32;
        let c = codec::shutdown_return(off_after, minutes).map_err(|e| e.to_string())?;
        let wire = String::from_utf8_lossy(&c.bytes).trim_end().to_owned();
        let reply = ups
            .send(&c.bytes, "S")
            .await
            .map_err(|e| format!("{wire} not sent: {e}"))?;
        codec::parse_command_reply(reply.as_deref())
            .map_err(|e| format!("{wire} refused by the UPS: {e}"))?;
        Ok(format!(
            "{wire} (output off in {}, back {} min after that once the mains return)",
            humantime::format_duration(c.off_after),
            c.return_minutes
        ))
    }
}

/// The supervisor's timings for a serial UPS (Megatec and APC).
pub(super) fn serial_policy(interval: Duration) -> Policy {
    Policy {
        after_streak: AfterStreak::StaleAndReopen,
        // Opening a missing port is cheap: try again every interval, so a
        // replugged adapter is back within two polls.
        open_retry: interval,
        reopen_pause: Duration::from_millis(500),
        ..Policy::new(interval)
    }
}

pub async fn run(cfg: MegatecConfig, h: DeviceHandle, cancel: CancellationToken) {
    let policy = serial_policy(cfg.interval);
    let ups = Ups {
        cfg,
        open_port: |c: &MegatecConfig| {
            Ok(serial::open(&c.serial, c.baud.get(), Default::default())?)
        },
        last_status: None,
    };
    supervisor::run(ups, policy, h, cancel).await
}

fn error_kind(e: &MegatecError) -> &'static str {
    match e {
        MegatecError::Timeout(..) => "timeout",
        MegatecError::TooLong(_) | MegatecError::Partial(..) => "garbage",
        MegatecError::Codec(CodecError::Malformed(_)) => "malformed",
        MegatecError::Codec(_) => "unsupported",
        MegatecError::Io(_) | MegatecError::Open(_) => "port",
    }
}

/// Reads the UPS once, for `wardgate check`.
pub async fn probe(cfg: &MegatecConfig) -> Result<Values, MegatecError> {
    let port = serial::open(&cfg.serial, cfg.baud.get(), Default::default())?;
    let mut ups = Megatec::new(port, cfg.timeout.get(), estimate_of(cfg));
    ups.identify().await?;
    ups.poll().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    /// A scripted UPS on the other end of a duplex pipe.
    async fn fake_ups(io: tokio::io::DuplexStream, replies: Vec<(&'static str, &'static [u8])>) {
        let (r, mut w) = tokio::io::split(io);
        let mut r = BufReader::new(r);
        let mut line = Vec::new();
        while r.read_until(b'\r', &mut line).await.unwrap_or(0) > 0 {
            let cmd = String::from_utf8_lossy(&line).trim_end().to_string();
            line.clear();
            if let Some((_, reply)) = replies.iter().find(|(c, _)| *c == cmd) {
                if !reply.is_empty() {
                    let _ = w.write_all(reply).await;
                }
            }
        }
    }

    #[tokio::test]
    async fn identify_then_poll() {
        let (a, b) = tokio::io::duplex(256);
        tokio::spawn(fake_ups(
            b,
            vec![
                ("F", b"#230.0 004 024.0 50.0\r"),
                ("I", b"#SANTAK          BLAZER-PRO VT12046Q  \r"),
                ("Q1", b"(000.0 140.0 229.8 023 00.0 24.0 30.5 10001001\r"),
            ],
        ));
        let mut ups = Megatec::new(a, Duration::from_secs(1), None);
        ups.identify().await.unwrap();
        let v = ups.poll().await.unwrap();
        assert_eq!(v.get("ups.status"), Some(&"OB".into()));
        assert_eq!(v.get("device.model"), Some(&"BLAZER-PRO".into()));
        // 24 V on a 24 V rated battery: (24 - 20.8) / (26 - 20.8).
        assert_eq!(v.get("battery.charge").and_then(|x| x.as_f64()), Some(61.5));
    }

    #[tokio::test]
    async fn silent_ups_times_out_and_nak_is_tolerated() {
        let (a, b) = tokio::io::duplex(256);
        tokio::spawn(fake_ups(b, vec![("F", b"(NAK\r"), ("I", b"I\r")]));
        let mut ups = Megatec::new(a, Duration::from_millis(200), None);
        ups.identify().await.unwrap();
        match ups.poll().await {
            Err(MegatecError::Timeout("Q1", _)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn endless_garbage_is_cut_off() {
        let (a, mut b) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let _ = b.read(&mut buf).await;
            let _ = b.write_all(&[0x55u8; 1000]).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let mut ups = Megatec::new(a, Duration::from_secs(1), None);
        assert!(matches!(ups.poll().await, Err(MegatecError::TooLong(_))));
    }

    /// A Megatec device `u` with the given timing lines, its handle on a
    /// spool in a temporary directory (kept alive by the caller) and the
    /// status hub it reports to.
    fn device(
        timing: &str,
    ) -> (
        tempfile::TempDir,
        MegatecConfig,
        crate::status::StatusHub,
        DeviceHandle,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::Config::from_toml(&format!(
            "site = \"s\"\n[spool]\npath = \"{}\"\n[[device]]\nid = \"u\"\ntype = \"megatec\"\nserial = \"/dev/ttyUPS\"\n{timing}",
            dir.path().join("s.db").display()
        ))
        .unwrap();
        let crate::config::DeviceConfig::Megatec(mcfg) = cfg.devices[0].clone() else {
            panic!("not megatec")
        };
        let (spool, _) =
            crate::spool::Spool::open(&cfg.spool, "s", &[crate::spool::Lane::Mqtt]).unwrap();
        let hub = crate::status::StatusHub::new("s");
        let h = DeviceHandle::new("u", "megatec", mcfg.interval, spool, hub.clone());
        (dir, mcfg, hub, h)
    }

    /// A port that opens but is gone when the UPS is identified (adapter
    /// pulled at that moment): a fault, and the next open after a pause
    /// of one interval, not at once in a loop; cancel stops it at once.
    #[tokio::test(start_paused = true)]
    async fn identify_failure_pauses_before_reopening() {
        let (_dir, mcfg, hub, h) = device("interval = \"1s\"\n");
        let opens = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let n = opens.clone();
        let ups = Ups {
            cfg: mcfg.clone(),
            open_port: move |_: &MegatecConfig| {
                n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // The other end is gone: the first write fails.
                let (a, _) = tokio::io::duplex(64);
                Ok(a)
            },
            last_status: None,
        };
        let cancel = CancellationToken::new();
        let t0 = tokio::time::Instant::now();
        let task = tokio::spawn(supervisor::run(
            ups,
            serial_policy(mcfg.interval),
            h,
            cancel.clone(),
        ));
        tokio::time::sleep_until(t0 + Duration::from_millis(4500)).await;
        // At 0, 1, 2, 3 and 4 s.
        assert_eq!(opens.load(std::sync::atomic::Ordering::Relaxed), 5);
        assert!(matches!(
            hub.get().devices["u"].health,
            crate::model::Health::Fault(_)
        ));
        cancel.cancel();
        tokio::time::timeout(Duration::from_millis(1), task)
            .await
            .expect("cancel stops the pause at once")
            .unwrap();
    }

    /// `shutdown.return` through the supervisor, between polls, over the
    /// device's own link: `S02R0003` on the wire (2 min, 3 min by default),
    /// no answer expected; a UPS that echoes it refused it.
    #[tokio::test]
    async fn shutdown_return_goes_out_between_polls() {
        let (_dir, mcfg, _hub, h) = device("interval = \"100ms\"\ntimeout = \"200ms\"\n");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let echo = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen2, echo2) = (seen.clone(), echo.clone());
        let ups = Ups {
            cfg: mcfg.clone(),
            open_port: move |_: &MegatecConfig| {
                let (a, b) = tokio::io::duplex(256);
                let (seen, echo) = (seen2.clone(), echo2.clone());
                tokio::spawn(async move {
                    let (r, mut w) = tokio::io::split(b);
                    let mut r = BufReader::new(r);
                    let mut line = Vec::new();
                    while r.read_until(b'\r', &mut line).await.unwrap_or(0) > 0 {
                        let cmd = String::from_utf8_lossy(&line).trim_end().to_string();
                        line.clear();
                        seen.lock().unwrap().push(cmd.clone());
                        let reply: Vec<u8> = match cmd.as_str() {
                            "Q1" => b"(000.0 140.0 229.8 023 00.0 24.0 30.5 11001001\r".to_vec(),
                            c if c.starts_with('S')
                                && echo.load(std::sync::atomic::Ordering::Relaxed) =>
                            {
                                format!("{c}\r").into_bytes()
                            }
                            _ => continue,
                        };
                        let _ = w.write_all(&reply).await;
                    }
                });
                Ok(a)
            },
            last_status: None,
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(supervisor::run(
            ups,
            serial_policy(mcfg.interval),
            h.clone(),
            cancel.clone(),
        ));
        let off = UpsCommand::ShutdownReturn {
            off_after: Duration::from_secs(150),
        };
        let sent = tokio::time::timeout(Duration::from_secs(5), h.ups_command(off))
            .await
            .expect("taken within 5 s");
        let sent = sent.expect("sent");
        assert!(sent.starts_with("S02R0003 "), "{sent}");
        assert!(seen.lock().unwrap().contains(&"S02R0003".to_string()));
        // Polls go on after it.
        let polls = |s: &[String]| s.iter().filter(|c| *c == "Q1").count();
        let before = polls(&seen.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(polls(&seen.lock().unwrap()) > before);
        // Echoed back: refused.
        echo.store(true, std::sync::atomic::Ordering::Relaxed);
        let r = tokio::time::timeout(Duration::from_secs(5), h.ups_command(off))
            .await
            .expect("taken within 5 s");
        assert!(r.as_ref().is_err_and(|e| e.contains("refused")), "{r:?}");
        // Out of the UPS's range: not sent at all.
        let r = h
            .ups_command(UpsCommand::ShutdownReturn {
                off_after: Duration::from_secs(5),
            })
            .await;
        assert!(r.is_err(), "{r:?}");
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn closed_port_is_reported_as_lost() {
        let (a, b) = tokio::io::duplex(64);
        drop(b);
        let mut ups = Megatec::new(a, Duration::from_secs(1), None);
        let e = ups.poll().await.unwrap_err();
        assert!(e.port_lost(), "{e}");
    }
}
