//! NUT client (`type = "nut"`): reads a UPS from an existing `upsd` over
//! TCP. This covers every UPS NUT supports, USB HID models included.
//! With `tls = true`, the connection becomes TLS (`STARTTLS`, then the
//! handshake checking upsd's certificate) before anything else is said,
//! and never falls back to clear text ([`connect`]).

pub mod codec;
pub(crate) mod config;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use self::config::NutConfig;
use super::supervisor::{self, Action, Device, Fail, Policy};
use super::tap::{CommandResult, UpsCommand};
use super::DeviceHandle;
use crate::model::{Value, Values};
use codec::{Line, ListOutcome, ListVar};

#[derive(Debug, thiserror::Error)]
pub(crate) enum NutError {
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
    #[error("reading password_file {0}")]
    Password(#[source] crate::host::file::FileError),
    /// `tls = true`, and the CA could not be loaded: fault until fixed;
    /// nothing was sent.
    #[error("TLS to upsd: {0}")]
    TlsSetup(String),
    /// `tls = true`, and upsd answered STARTTLS with `ERR <code>`: fault
    /// (reconnect later); nothing more was sent, never the login.
    #[error("{}", codec::explain_starttls(.0))]
    NoTls(String),
    /// `tls = true`, and the TLS handshake failed (upsd's certificate not
    /// trusted or not for `host`, or upsd broke off): fault (reconnect
    /// later); nothing more was sent, never the login.
    #[error("TLS handshake with upsd at {0} failed: {1}; nothing more was sent (no login)")]
    Handshake(String, String),
}

/// A whole `LIST VAR` reply must arrive within this many per-line timeouts.
/// A real upsd sends its ~50-150 variables in a few milliseconds; the
/// bound stops a peer that drips one line at a time from holding a poll
/// (and the device's health) for up to the variable limit times the
/// per-line timeout.
const REPLY_DEADLINE_FACTOR: u32 = 3;

/// The variable that holds the UPS's delay before its output goes off
/// (NUT's name; in seconds).
const DELAY_VAR: &str = "ups.delay.shutdown";

/// How often a tracked command's outcome is asked for while it waits for
/// the driver (which acts between its own polls).
const TRACKING_POLL: Duration = Duration::from_millis(200);

/// A variable no driver has, for `wardgate check`: upsd checks the user's
/// password and SET right before it looks the variable up, so `SET VAR`
/// of this one tells whether the login works, and sets nothing.
const LOGIN_PROBE_VAR: &str = "wardgate.login.check";

/// One connection to upsd, over any byte stream.
struct Nut<S> {
    io: BufReader<S>,
    timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Nut<S> {
    fn new(io: S, timeout: Duration) -> Self {
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

    /// `STARTTLS`; Ok once upsd answered `OK STARTTLS` (the handshake
    /// comes next), `NoTls` for its `ERR`. upsd must send nothing after
    /// its answer until the handshake: bytes already waiting would be
    /// read as if they came over TLS (a man in the middle's injection), so
    /// they are an error too. Returns the stream for the handshake.
    async fn starttls(mut self) -> Result<S, NutError> {
        self.send(codec::request::CMD_STARTTLS).await?;
        let answer = match self.line().await {
            Err(NutError::Timeout(t)) => {
                return Err(NutError::Codec(codec::CodecError::Malformed(format!(
                    "no answer to STARTTLS within {t:?}: is this upsd's port (3493), not a TLS-only one?"
                ))))
            }
            other => other?,
        };
        match codec::parse_starttls(&answer)? {
            codec::StartTls::Ok => {}
            codec::StartTls::Refused(code) => return Err(NutError::NoTls(code)),
        }
        if !self.io.buffer().is_empty() {
            return Err(NutError::Codec(codec::CodecError::Malformed(
                "upsd sent more after OK STARTTLS, before the TLS handshake".into(),
            )));
        }
        Ok(self.io.into_inner())
    }

    async fn login(&mut self, user: &str, password: &str) -> Result<(), NutError> {
        self.send(&codec::request::cmd_username(user)?).await?;
        self.expect_ok().await?;
        self.send(&codec::request::cmd_password(password)?).await?;
        self.expect_ok().await
    }

    /// `LIST VAR <ups>`, mapped to values.
    async fn list_var(&mut self, ups: &str) -> Result<Values, NutError> {
        self.list_vars(ups).await.map(|v| codec::to_values(&v))
    }

    /// `LIST VAR <ups>` as upsd said it, within the codec's limits on
    /// line length, variables and bytes ([`codec::ListVar`]).
    /// The whole reply must arrive within [`REPLY_DEADLINE_FACTOR`] times
    /// the per-line timeout.
    async fn list_vars(&mut self, ups: &str) -> Result<Vec<(String, String)>, NutError> {
        self.send(&codec::request::cmd_list_var(ups)?).await?;
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

impl<S: AsyncRead + AsyncWrite + Unpin> Nut<S> {
    /// One command that upsd answers with one line.
    async fn ask(&mut self, cmd: &str) -> Result<Line, NutError> {
        self.send(cmd).await?;
        Ok(codec::parse_line(&self.line().await?)?)
    }

    /// `SET TRACKING ON`: true when upsd keeps each command's outcome
    /// (upsd 2.8 and later); an older one answers ERR.
    async fn tracking_on(&mut self) -> Result<bool, NutError> {
        match self.ask(codec::request::CMD_TRACKING_ON).await? {
            Line::Ok => Ok(true),
            Line::Err(_) => Ok(false),
            other => Err(unexpected("SET TRACKING ON", &other)),
        }
    }

    /// `GET VAR <ups> <var>`.
    async fn get_var(&mut self, ups: &str, var: &str) -> Result<String, NutError> {
        match self.ask(&codec::request::cmd_get_var(ups, var)?).await? {
            Line::Var {
                ups: u,
                name,
                value,
            } if u == ups && name == var => Ok(value),
            Line::Err(code) => Err(NutError::Server(code)),
            other => Err(unexpected("GET VAR", &other)),
        }
    }

    /// Sends a `SET VAR` or `INSTCMD`; the tracking id when upsd tracks it.
    async fn act(&mut self, cmd: &str) -> Result<Option<String>, NutError> {
        match self.ask(cmd).await? {
            Line::Ok => Ok(None),
            Line::OkTracking(id) => Ok(Some(id)),
            Line::Err(code) => Err(NutError::Server(code)),
            other => Err(unexpected(cmd.trim_end(), &other)),
        }
    }

    /// The outcome of a tracked command: true once the driver carried it
    /// out, false if it is still pending after [`REPLY_DEADLINE_FACTOR`]
    /// timeouts, `Server(code)` when it failed.
    async fn outcome(&mut self, id: &str) -> Result<bool, NutError> {
        let deadline =
            tokio::time::Instant::now() + self.timeout.saturating_mul(REPLY_DEADLINE_FACTOR);
        loop {
            match self.ask(&codec::request::cmd_get_tracking(id)?).await? {
                Line::Success => return Ok(true),
                Line::Pending => {}
                Line::Err(code) => return Err(NutError::Server(code)),
                other => return Err(unexpected("GET TRACKING", &other)),
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(TRACKING_POLL).await;
        }
    }

    /// A `SET VAR` or `INSTCMD`, then its outcome when upsd tracks it:
    /// the words for a success, `Server(code)` for a refusal or failure.
    async fn act_and_wait(&mut self, cmd: &str) -> Result<&'static str, NutError> {
        match self.act(cmd).await? {
            None => Ok("upsd passed it to the driver (this upsd does not report the outcome)"),
            Some(id) => match self.outcome(&id).await? {
                true => Ok("the driver carried it out"),
                false => Ok("upsd passed it to the driver, which has not reported yet"),
            },
        }
    }

    /// Sets `ups.delay.shutdown` to `secs` if the driver has it and it
    /// differs; returns what happened in words (a refusal included: the
    /// UPS then keeps its own delay, and the command is still sent).
    async fn set_delay(&mut self, ups: &str, secs: u64) -> Result<String, NutError> {
        let now = match self.get_var(ups, DELAY_VAR).await {
            Ok(v) => v,
            Err(NutError::Server(code)) => {
                return Ok(format!(
                    "{}; the driver's own delay applies",
                    codec::explain_refusal(&code, &format!("GET VAR {DELAY_VAR}"))
                ))
            }
            Err(e) => return Err(e),
        };
        if now.trim().parse::<f64>().ok() == Some(secs as f64) {
            return Ok(format!("{DELAY_VAR} is {secs} s already"));
        }
        let set = codec::request::cmd_set_var(ups, DELAY_VAR, &secs.to_string())?;
        match self.act_and_wait(&set).await {
            Ok(how) => Ok(format!("{DELAY_VAR} set to {secs} s (was {now} s): {how}")),
            Err(NutError::Server(code)) => Ok(format!(
                "{}; the UPS keeps {now} s",
                codec::explain_refusal(&code, &format!("SET VAR {DELAY_VAR} {secs}"))
            )),
            Err(e) => Err(e),
        }
    }

    /// NUT's `shutdown.return`, with `ups.delay.shutdown` set to
    /// `off_after` (whole seconds, rounded up) first where the driver
    /// lets it be set. The connection must be logged in (USERNAME and
    /// PASSWORD sent). Returns what was sent in words; `Err` says why the
    /// command was not taken (each ERR of upsd in plain words).
    async fn shutdown_return(&mut self, ups: &str, off_after: Duration) -> Result<String, String> {
        let secs = off_after.as_secs() + u64::from(off_after.subsec_nanos() > 0);
        let io = |e: NutError| e.to_string();
        self.tracking_on().await.map_err(io)?;
        let delay = self.set_delay(ups, secs).await.map_err(io)?;
        let cmd = codec::request::cmd_instcmd(ups, "shutdown.return").map_err(|e| e.to_string())?;
        match self.act_and_wait(&cmd).await {
            Ok(how) => Ok(format!("{delay}; then INSTCMD shutdown.return: {how}")),
            Err(NutError::Server(code)) => Err(format!(
                "{delay}; {}",
                codec::explain_refusal(&code, "INSTCMD shutdown.return")
            )),
            Err(e) => Err(format!("{delay}; INSTCMD shutdown.return: {e}")),
        }
    }
}

fn unexpected(what: &str, line: &Line) -> NutError {
    NutError::Codec(codec::CodecError::Malformed(format!(
        "unexpected reply to {what}: {line:?}"
    )))
}

/// The byte stream to upsd: clear text, or TLS after `STARTTLS`.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The TLS client for `cfg` (its `ca_file`, or the system's CAs), read
/// at each connection so a CA file fixed by the technician is taken
/// without a restart.
fn tls_connector(cfg: &NutConfig) -> Result<tokio_rustls::TlsConnector, NutError> {
    let key = format!("ca_file on device {}", cfg.id);
    let tls = crate::tls::tls_config(cfg.ca_file.as_deref(), None, None)
        .map_err(|e| NutError::TlsSetup(e.hint(&key)))?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(tls)))
}

/// Plain words for a failed handshake: what is wrong with upsd's
/// certificate when that is the cause, else the error as rustls said it.
fn handshake_words(e: &std::io::Error, host: &str) -> String {
    use rustls::CertificateError as C;
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe => format!(
                "upsd broke off the handshake ({e}): check upsd's log, its certificate (CERTPATH/CERTIDENT or CERTFILE) and that it does not ask for a client certificate (CERTREQUEST: the gateway has none for upsd)"
            ),
            _ => e.to_string(),
        };
    };
    match tls {
        rustls::Error::InvalidCertificate(c) => {
            let why = match c {
                C::UnknownIssuer | C::BadSignature => {
                    "it is not signed by a CA the gateway trusts (ca_file, or the system's CAs)"
                        .to_owned()
                }
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    format!("it is not for host {host:?} (its subject alternative names)")
                }
                C::Expired | C::ExpiredContext { .. } => "it has expired".to_owned(),
                C::NotValidYet | C::NotValidYetContext { .. } => {
                    "it is not valid yet (is the clock right?)".to_owned()
                }
                C::Revoked => "it is revoked".to_owned(),
                C::Other(o) if format!("{o:?}").contains("CaUsedAsEndEntity") => {
                    "it is a CA certificate (a self-signed certificate with CA:TRUE, as `openssl req -x509` makes): upsd needs a certificate signed by a CA, with that CA in ca_file (docs/ups.md)".to_owned()
                }
                other => format!("{other:?}"),
            };
            format!("upsd's certificate was refused: {why} ({tls})")
        }
        other => other.to_string(),
    }
}

/// A connection to upsd for `cfg`, logged in when it has a username.
/// With `tls`, the CA is loaded before anything is sent, then `STARTTLS`
/// and the handshake (checking upsd's certificate against the CA and
/// `host`) come first, and a refusal or a failed handshake ends the
/// attempt: nothing goes in clear text but the word STARTTLS.
async fn connect(cfg: &NutConfig) -> Result<Nut<Conn>, NutError> {
    let tls = cfg.tls.then(|| tls_connector(cfg)).transpose()?;
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let tcp = tokio::time::timeout(cfg.timeout, TcpStream::connect(&addr))
        .await
        .map_err(|_| NutError::Timeout(cfg.timeout))?
        .map_err(|e| NutError::Connect(addr.clone(), e))?;
    let _ = tcp.set_nodelay(true);
    let stream = match tls {
        None => Conn::Plain(tcp),
        Some(tls) => {
            let tcp = Nut::new(tcp, cfg.timeout).starttls().await?;
            let name = rustls::pki_types::ServerName::try_from(cfg.host.clone())
                .map_err(|e| NutError::TlsSetup(format!("host {:?}: {e}", cfg.host)))?;
            let s = tokio::time::timeout(cfg.timeout, tls.connect(name, tcp))
                .await
                .map_err(|_| {
                    NutError::Handshake(addr.clone(), format!("no answer within {:?}", cfg.timeout))
                })?
                .map_err(|e| NutError::Handshake(addr.clone(), handshake_words(&e, &cfg.host)))?;
            Conn::Tls(Box::new(s))
        }
    };
    let mut nut = Nut::new(stream, cfg.timeout);
    if let Some(user) = &cfg.username {
        // A password file that cannot be read is a configuration fault,
        // shown as one (device.fault naming the file, on the page and to
        // the IOC), not a login quietly left out that would only surface
        // when the power-off is refused.
        let password = match &cfg.password_file {
            Some(p) => crate::host::file::read_secret_line(p).map_err(NutError::Password)?,
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
    type Conn = Nut<Conn>;

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
                    NutError::Codec(codec::CodecError::Unsendable(_)) => "config",
                    NutError::Codec(_) => "malformed",
                    _ => "connection",
                }),
                e.to_string(),
            )),
        }
    }

    /// `shutdown.return` through upsd on the device's own (logged-in)
    /// connection ([`Nut::shutdown_return`]).
    async fn command(
        &mut self,
        c: &mut Self::Conn,
        _h: &DeviceHandle,
        cmd: UpsCommand,
    ) -> CommandResult {
        let where_ = format!("NUT {}@{}:{}", self.cfg.ups, self.cfg.host, self.cfg.port);
        if self.cfg.username.is_none() {
            return Err(format!(
                "{where_}: no username: upsd takes instant commands only from a user of upsd.users; set username and password_file on this device (docs/ups.md)"
            ));
        }
        match cmd {
            UpsCommand::ShutdownReturn { off_after } => c
                .shutdown_return(&self.cfg.ups, off_after)
                .await
                .map(|t| format!("{where_}: {t}"))
                .map_err(|e| format!("{where_}: {e}")),
        }
    }
}

/// Asks upsd every interval; a broken connection is made again an interval
/// later.
pub async fn run(cfg: NutConfig, h: DeviceHandle, cancel: CancellationToken) {
    for w in [password_file_warning(&cfg), cleartext_warning(&cfg)]
        .into_iter()
        .flatten()
    {
        tracing::warn!("{w}");
    }
    let policy = Policy::new(cfg.interval);
    let ups = Ups {
        cfg,
        last_status: None,
    };
    supervisor::run(ups, policy, h, cancel).await
}

/// Reads the UPS once, for `wardgate check`.
pub(crate) async fn probe(cfg: &NutConfig) -> Result<Values, NutError> {
    let mut c = connect(cfg).await?;
    c.list_var(&cfg.ups).await
}

/// The warning for a password file that other users of the box can read,
/// naming the device; None when private, absent or unreadable.
fn password_file_warning(cfg: &NutConfig) -> Option<String> {
    let path = cfg.password_file.as_deref()?;
    crate::host::file::readable_by_others(path).then(|| {
            format!(
                "device {} password_file {}: readable by other users of this box; make it private (chmod o-r)",
                cfg.id,
                path.display()
            )
        })
}

/// The warning for a login (username and password) that would cross the
/// network in clear text: a username, `tls` off, and upsd not on this
/// box. A warning, not an error: many upsd builds in the field have no
/// certificate (or no TLS at all) yet.
/// Without a login, the readings themselves: anyone who can answer for
/// that address can forge them.
pub(crate) fn cleartext_warning(cfg: &NutConfig) -> Option<String> {
    if cfg.tls || crate::tls::is_loopback(&cfg.host) {
        return None;
    }
    Some(if cfg.username.is_some() {
        format!(
            "device {}: the upsd login (username and password) goes to {} in clear text; set tls = true on this device and give upsd a certificate (CERTPATH and CERTIDENT, or CERTFILE, in upsd.conf; docs/ups.md)",
            cfg.id, cfg.host
        )
    } else {
        format!(
            "device {}: upsd on {} is read in clear text, so whoever answers for that address can forge its readings; set tls = true on this device and give upsd a certificate (CERTPATH and CERTIDENT, or CERTFILE, in upsd.conf; docs/ups.md)",
            cfg.id, cfg.host
        )
    })
}

/// For `wardgate check`, on a device with a username: whether upsd
/// accepts the login, and the delay the power-off would set. Each line
/// with true when it is fine (a warning included), false when the
/// power-off could not work.
pub(crate) async fn check_login(cfg: &NutConfig) -> Vec<(bool, String)> {
    let Some(user) = &cfg.username else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    // (The clear-text warning is said with the config's, before any device.)
    if let Some(w) = password_file_warning(cfg) {
        lines.push((true, format!("warning: {w}")));
    }
    let mut c = match connect(cfg).await {
        Ok(c) => c,
        Err(e) => {
            lines.push((false, format!("login: NOT ACCEPTED: {e}")));
            return lines;
        }
    };
    // upsd checks the password only when it is used: a SET of a variable
    // no driver has is refused for a wrong password or a missing SET right
    // (ACCESS-DENIED), and otherwise answered VAR-NOT-SUPPORTED.
    let probe = match codec::request::cmd_set_var(&cfg.ups, LOGIN_PROBE_VAR, "0") {
        Ok(p) => p,
        Err(e) => {
            lines.push((false, format!("login: NOT CHECKED: {e}")));
            return lines;
        }
    };
    match c.act(&probe).await {
        Err(NutError::Server(code)) if code == "VAR-NOT-SUPPORTED" => lines.push((
            true,
            format!("login: ok: upsd accepts user {user:?} (password and actions = SET)"),
        )),
        Ok(_) => lines.push((true, format!("login: ok: upsd accepts user {user:?}"))),
        Err(NutError::Server(code)) if code == "ACCESS-DENIED" => lines.push((
            false,
            format!(
                "login: NOT ACCEPTED: upsd refused user {user:?} (ERR ACCESS-DENIED): wrong password or unknown user, or no `actions = SET` for it in upsd.users; the power-off (shutdown.return) would be refused too"
            ),
        )),
        Err(NutError::Server(code)) => lines.push((
            false,
            format!("login: NOT ACCEPTED: {}", codec::explain_refusal(&code, "login")),
        )),
        Err(e) => {
            lines.push((false, format!("login: NOT ACCEPTED: {e}")));
            return lines;
        }
    }
    match c.get_var(&cfg.ups, DELAY_VAR).await {
        Ok(v) => lines.push((
            true,
            format!("{DELAY_VAR} = {v} s (the power-off sets it to ups_off_delay)"),
        )),
        Err(NutError::Server(_)) => lines.push((
            true,
            format!(
                "{DELAY_VAR}: the driver has none, so the power-off uses the driver's own delay"
            ),
        )),
        Err(e) => lines.push((false, format!("{DELAY_VAR}: {e}"))),
    }
    lines
}

#[cfg(test)]
mod tests;
