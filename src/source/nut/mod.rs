//! NUT client (`type = "nut"`): reads a UPS from an existing `upsd` over
//! TCP. This covers every UPS NUT supports, USB HID models included.

pub mod codec;
pub mod config;

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use self::config::NutConfig;
use super::supervisor::{self, Action, Device, Fail, Policy};
use super::DeviceHandle;
use crate::model::{Value, Values};
use codec::{ListOutcome, ListVar};

#[derive(Debug, thiserror::Error)]
pub enum NutError {
    /// upsd cannot be reached or the connection broke: fault, reconnect.
    #[error("upsd at {0}: {1}")]
    Connect(String, std::io::Error),
    /// upsd did not answer in time: counted; reconnect.
    #[error("upsd did not answer within {0:?}")]
    Timeout(Duration),
    /// upsd kept answering, but too slowly to finish a reply in time (a line
    /// every few seconds would hold a poll for hours): counted; reconnect.
    #[error("upsd did not finish its reply within {0:?}")]
    SlowReply(Duration),
    /// A line that breaks the protocol: counted; reconnect.
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
    /// upsd answered `ERR`: stale or fault with upsd's reason.
    #[error("{}", codec::explain(.0))]
    Server(String),
    /// The password file could not be read: fault until fixed.
    #[error("reading password_file {0}: {1}")]
    Password(String, std::io::Error),
}

/// A whole `LIST VAR` reply must arrive within this many per-line timeouts.
/// A real upsd sends its ~50-150 variables in a few milliseconds; the
/// bound stops a peer that drips one line at a time from holding a poll
/// (and the device's health) for up to the variable limit times the
/// per-line timeout.
pub const REPLY_DEADLINE_FACTOR: u32 = 3;

/// One connection to upsd, over any byte stream.
pub struct Nut<S> {
    io: BufReader<S>,
    timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Nut<S> {
    pub fn new(io: S, timeout: Duration) -> Self {
        Nut {
            io: BufReader::new(io),
            timeout,
        }
    }

    async fn line(&mut self) -> Result<String, NutError> {
        let mut framer = codec::LineReader::default();
        let read = async {
            loop {
                let chunk = self
                    .io
                    .fill_buf()
                    .await
                    .map_err(|e| NutError::Connect("the connection".into(), e))?;
                if chunk.is_empty() {
                    return Err(NutError::Connect(
                        "the connection".into(),
                        std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed by upsd"),
                    ));
                }
                let (take, line) = framer.feed(chunk);
                self.io.consume(take);
                if let Some(line) = line? {
                    return Ok(line);
                }
            }
        };
        match tokio::time::timeout(self.timeout, read).await {
            Ok(r) => r,
            Err(_) => Err(NutError::Timeout(self.timeout)),
        }
    }

    async fn send(&mut self, cmd: &str) -> Result<(), NutError> {
        let w = self.io.get_mut();
        w.write_all(cmd.as_bytes())
            .await
            .map_err(|e| NutError::Connect("the connection".into(), e))?;
        w.flush()
            .await
            .map_err(|e| NutError::Connect("the connection".into(), e))
    }

    async fn expect_ok(&mut self) -> Result<(), NutError> {
        match codec::parse_line(&self.line().await?)? {
            codec::Line::Ok => Ok(()),
            codec::Line::Err(code) => Err(NutError::Server(code)),
            other => Err(NutError::Codec(codec::CodecError::Malformed(format!(
                "expected OK, got {other:?}"
            )))),
        }
    }

    pub async fn login(&mut self, user: &str, password: &str) -> Result<(), NutError> {
        self.send(&codec::cmd_username(user)).await?;
        self.expect_ok().await?;
        self.send(&codec::cmd_password(password)).await?;
        self.expect_ok().await
    }

    /// `LIST VAR <ups>`, mapped to values.
    pub async fn list_var(&mut self, ups: &str) -> Result<Values, NutError> {
        self.list_vars(ups).await.map(|v| codec::to_values(&v))
    }

    /// `LIST VAR <ups>` as upsd said it, within the codec's limits on
    /// line length, variables and bytes ([`codec::ListVar`]).
    /// The whole reply must arrive within [`REPLY_DEADLINE_FACTOR`] times
    /// the per-line timeout.
    pub async fn list_vars(&mut self, ups: &str) -> Result<Vec<(String, String)>, NutError> {
        self.send(&codec::cmd_list_var(ups)).await?;
        let deadline = self.timeout.saturating_mul(REPLY_DEADLINE_FACTOR);
        let read = async {
            let mut list = ListVar::default();
            loop {
                let line = self.line().await?;
                match list.feed(ups, &line)? {
                    None => continue,
                    Some(ListOutcome::Vars(vars)) => return Ok(vars),
                    Some(ListOutcome::Err(code)) => return Err(NutError::Server(code)),
                }
            }
        };
        tokio::time::timeout(deadline, read)
            .await
            .unwrap_or(Err(NutError::SlowReply(deadline)))
    }
}

async fn connect(cfg: &NutConfig) -> Result<Nut<TcpStream>, NutError> {
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let tcp = tokio::time::timeout(cfg.timeout, TcpStream::connect(&addr))
        .await
        .map_err(|_| NutError::Timeout(cfg.timeout))?
        .map_err(|e| NutError::Connect(addr.clone(), e))?;
    let _ = tcp.set_nodelay(true);
    let mut nut = Nut::new(tcp, cfg.timeout);
    if let Some(user) = &cfg.username {
        let password = match &cfg.password_file {
            Some(p) => std::fs::read_to_string(p)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|e| NutError::Password(p.display().to_string(), e))?,
            None => String::new(),
        };
        nut.login(user, &password).await?;
    }
    Ok(nut)
}

/// What the supervisor keeps of a UPS behind upsd between connections.
struct Ups {
    cfg: NutConfig,
    last_status: Option<String>,
}

impl Device for Ups {
    type Conn = Nut<TcpStream>;

    async fn open(&mut self, _h: &DeviceHandle) -> Result<Self::Conn, Fail> {
        connect(&self.cfg)
            .await
            .map_err(|e| Fail::new(Action::Reopen, Some("connect"), e.to_string()))
    }

    async fn poll(&mut self, c: &mut Self::Conn, h: &DeviceHandle) -> Result<(), Fail> {
        match c.list_vars(&self.cfg.ups).await {
            Ok(vars) => {
                let (values, bad) = codec::to_values_checked(&vars);
                h.left_out(&bad);
                if values.get("ups.status") == Some(&Value::Str("WAIT".into())) {
                    // The driver is starting: not ready yet, not a fault.
                    tracing::debug!(device = h.id(), "upsd says WAIT");
                    return Ok(());
                }
                super::ups::publish(h, &mut self.last_status, values);
                Ok(())
            }
            // upsd answered: its reason, and the connection is kept.
            Err(NutError::Server(code)) => {
                let action = if code == "DATA-STALE" {
                    Action::Stale
                } else {
                    Action::Fault
                };
                Err(Fail::new(action, Some("upsd"), codec::explain(&code)))
            }
            Err(e) => Err(Fail::new(
                Action::Reopen,
                Some(match e {
                    NutError::Timeout(_) | NutError::SlowReply(_) => "timeout",
                    NutError::Codec(codec::CodecError::Limit(_)) => "limit",
                    NutError::Codec(_) => "malformed",
                    _ => "connection",
                }),
                e.to_string(),
            )),
        }
    }
}

/// Asks upsd every interval; a broken connection is made again an interval
/// later.
pub async fn run(cfg: NutConfig, h: DeviceHandle, cancel: CancellationToken) {
    let policy = Policy::new(cfg.interval);
    let ups = Ups {
        cfg,
        last_status: None,
    };
    supervisor::run(ups, policy, h, cancel).await
}

/// Reads the UPS once, for `wardgate check`.
pub async fn probe(cfg: &NutConfig) -> Result<Values, NutError> {
    let mut c = connect(cfg).await?;
    c.list_var(&cfg.ups).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn list_var_over_a_stream() {
        let (a, mut b) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let mut buf = [0u8; 256];
            let n = b.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"LIST VAR \"u\"\n");
            b.write_all(b"BEGIN LIST VAR u\nVAR u ups.status \"OL\"\nVAR u ups.load \"12\"\nEND LIST VAR u\n")
                .await
                .unwrap();
            let _ = b.read(&mut buf).await;
            b.write_all(b"ERR DATA-STALE\n").await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
        });
        let mut n = Nut::new(a, Duration::from_secs(1));
        let v = n.list_var("u").await.unwrap();
        assert_eq!(v.get("ups.load").and_then(|x| x.as_f64()), Some(12.0));
        match n.list_var("u").await {
            Err(NutError::Server(c)) => assert_eq!(c, "DATA-STALE"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn endless_list_is_cut_off() {
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let mut buf = [0u8; 256];
            let _ = b.read(&mut buf).await;
            let _ = b.write_all(b"BEGIN LIST VAR u\n").await;
            for i in 0.. {
                if b.write_all(format!("VAR u v.{i} \"1\"\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let mut n = Nut::new(a, Duration::from_secs(1));
        match n.list_var("u").await {
            Err(e @ NutError::Codec(codec::CodecError::Limit(_))) => {
                assert_eq!(e.to_string(), "upsd sent more than 1000 variables for u")
            }
            other => panic!("{other:?}"),
        }
    }

    /// One line a little faster than the per-line timeout, forever: the
    /// reply's own deadline ends it.
    #[tokio::test(start_paused = true)]
    async fn a_dripping_reply_is_cut_off_by_its_deadline() {
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let mut buf = [0u8; 256];
            let _ = b.read(&mut buf).await;
            let _ = b.write_all(b"BEGIN LIST VAR u\n").await;
            for i in 0..900 {
                tokio::time::sleep(Duration::from_millis(900)).await;
                if b.write_all(format!("VAR u v.{i} \"1\"\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let started = tokio::time::Instant::now();
        let mut n = Nut::new(a, Duration::from_secs(1));
        match n.list_var("u").await {
            Err(e @ NutError::SlowReply(_)) => {
                assert_eq!(e.to_string(), "upsd did not finish its reply within 3s")
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() <= Duration::from_secs(3) + Duration::from_millis(10));
    }

    #[tokio::test]
    async fn endless_line_is_rejected() {
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let mut buf = [0u8; 256];
            let _ = b.read(&mut buf).await;
            let _ = b.write_all(&vec![b'x'; 4000]).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        });
        let mut n = Nut::new(a, Duration::from_secs(1));
        assert!(matches!(n.list_var("u").await, Err(NutError::Codec(_))));
    }
}
