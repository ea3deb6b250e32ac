//! `wardgate-ioc send <site> <op> [args…]`: one command to one site's
//! gateway (docs/mqtt.md, "Commands from the IOC"; docs/ioc.md, "send").
//!
//! The request is the contract crate's [`Request`] (a random id, an
//! expiry); it goes over a connection of its own (client id
//! `<client_id>-send-<8 hex digits of the id>`, a clean session: the
//! ingest's persistent session is not touched), QoS 1, not retained.
//! Before publishing, the sender subscribes to the site's retained
//! inventory (an unknown site has none: nothing is sent) and to the
//! request's reply topic, so no reply can come before the subscription.
//! Then it prints every reply of that id (each status once) until a final
//! one, or until the time is up.
//!
//! One task polls rumqttc's event loop and only `try_` calls go to the
//! client, so a full request channel cannot deadlock it (the house rule).

pub mod args;
mod session;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use rand::RngCore;
use wardgate_contract::{valid_id, CommandError, Request};

pub use args::{Args, ArgsError};
use session::{Outcome, Session};

/// Exit codes (sysexits.h, as `check`'s).
pub mod exit {
    /// A `successful` reply.
    pub const OK: u8 = 0;
    /// The gateway answered `rejected` or `failed`, or its inventory says
    /// it takes no commands.
    pub const REFUSED: u8 = 1;
    /// A bad command line (site id, op, args): clap's own code for one.
    pub const USAGE: u8 = 2;
    /// No retained inventory for the site on the broker: an unknown site
    /// (EX_NOHOST).
    pub const NO_SITE: u8 = 68;
    /// The broker cannot be reached or refuses the subscription
    /// (EX_UNAVAILABLE).
    pub const UNAVAILABLE: u8 = 69;
    /// No final reply in time (EX_TEMPFAIL).
    pub const NO_REPLY: u8 = 75;
    /// The config cannot be used (EX_CONFIG).
    pub const CONFIG: u8 = 78;
}

/// The longest `--expires-in`: a gateway rejects a request that expires
/// further ahead.
pub const MAX_EXPIRES_IN: Duration =
    Duration::from_millis(wardgate_contract::command::MAX_EXPIRES_AHEAD_MS as u64);

/// Why a command could not be sent or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The config cannot be used: fix the file (exit 78).
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// The command line is wrong (exit 2): fix it.
    #[error("{0}")]
    Usage(String),
    /// The broker cannot be reached or refused what the sender needs
    /// (exit 69): check `[mqtt]` and the broker's ACL.
    #[error("{0}")]
    Broker(String),
    /// No gateway ever announced this site on this broker (exit 68):
    /// check the id and `mqtt.prefix`.
    #[error("{0}")]
    UnknownSite(String),
    /// The gateway refused the command, or takes none (exit 1).
    #[error("{0}")]
    Refused(String),
    /// No final reply in time (exit 75): the gateway may be offline.
    #[error("{0}")]
    NoReply(String),
}

impl SendError {
    /// The exit code that says which it was.
    pub fn code(&self) -> u8 {
        match self {
            SendError::Config(_) => exit::CONFIG,
            SendError::Usage(_) => exit::USAGE,
            SendError::Broker(_) => exit::UNAVAILABLE,
            SendError::UnknownSite(_) => exit::NO_SITE,
            SendError::Refused(_) => exit::REFUSED,
            SendError::NoReply(_) => exit::NO_REPLY,
        }
    }
}

impl From<CommandError> for SendError {
    fn from(e: CommandError) -> Self {
        SendError::Usage(e.to_string())
    }
}

/// What to send and how long to wait.
#[derive(Debug, Clone)]
pub struct SendOptions {
    pub site: String,
    pub op: String,
    /// The arguments after the op, as typed ([`args`]).
    pub args: Vec<String>,
    /// `expires` = now + this.
    pub expires_in: Duration,
    /// How long to wait for a final reply after the request is
    /// published (`None`: the expiry and 30 s more, for an op accepted
    /// just before it expires).
    pub timeout: Option<Duration>,
    /// Each reply as one line of JSON instead of words.
    pub json: bool,
}

/// A new random request id: 128 bits in hex (the contract asks for a new,
/// unguessable id per command, so nobody can claim it first).
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Sends the command, prints the replies on `out` and what went wrong on
/// `err`; returns the exit code.
pub async fn send(path: &Path, opts: &SendOptions, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let outcome = run(path, opts, out, err).await;
    let code = match &outcome {
        Ok(()) => exit::OK,
        Err(e) => {
            let _ = writeln!(err, "wardgate-ioc send: {e}");
            e.code()
        }
    };
    let _ = out.flush();
    code
}

async fn run(
    path: &Path,
    opts: &SendOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), SendError> {
    let cfg = crate::config::load(path)?;
    if !valid_id(&opts.site) {
        return Err(SendError::Usage(format!(
            "site {:?} is not a site id ([a-z0-9][a-z0-9_-]*, at most 64 characters)",
            opts.site
        )));
    }
    if opts.expires_in > MAX_EXPIRES_IN {
        return Err(SendError::Usage(
            "--expires-in: at most 24h (a gateway rejects a request that expires further ahead)"
                .into(),
        ));
    }
    let args = Args::parse(&opts.args).map_err(|e| SendError::Usage(e.to_string()))?;
    let now = crate::web::system_ms();
    let expires_ms = i64::try_from(opts.expires_in.as_millis()).unwrap_or(i64::MAX);
    let request = Request::new(
        &opts.op,
        &new_id(),
        now.saturating_add(expires_ms),
        args.map.clone(),
    )?;
    let payload = request.to_vec()?;
    let wait = opts
        .timeout
        .unwrap_or(opts.expires_in + Duration::from_secs(30));
    let note = format!(
        "{} to {}, id {}, expires in {}; waiting up to {} for replies",
        request.op,
        opts.site,
        request.id,
        humantime::format_duration(opts.expires_in),
        humantime::format_duration(wait)
    );
    let mut session = Session::new(&cfg.mqtt, &opts.site, &request, payload, opts.json)?;
    match session.run(wait, &note, out, err).await? {
        Outcome::Successful => Ok(()),
        Outcome::Refused { status, reason } => {
            let mut msg = format!("{} {status} {}: {reason}", opts.site, request.op);
            if let Some(h) = args.hint(&reason) {
                msg.push_str(&format!(" (hint: {h})"));
            }
            Err(SendError::Refused(msg))
        }
    }
}
