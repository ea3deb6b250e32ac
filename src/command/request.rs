//! Requests and replies of the command channel: pure functions, no I/O.
//!
//! The contract's part (the topics, the 64 KiB cap, the id and op
//! patterns, the payload's shape, the expiry rule, the reply and its
//! statuses) is `wardgate_contract::command`, shared with the operations
//! centre. This module adds this gateway's rules: which ops it knows and
//! their arguments, the allow-list, and which ops run while the clock is
//! not synchronised. [`validate`] applies both in one order; whatever is
//! wrong becomes a [`Rejection`] whose words go into the `rejected` reply.
//! [`Fit`] cuts a reply to the size of a message.

use serde::Deserialize;
use wardgate_contract::command::{
    check_size, CommandError, Reply, ReplyStatus, RequestPayload, Target,
};

/// The most `log.tail` returns.
pub(crate) const MAX_LOG_LINES: usize = 1000;

/// The longest `identify` (one hour).
pub(crate) const MAX_IDENTIFY_SECS: u64 = 3600;

/// Every operation this gateway knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Identify,
    Poll,
    Status,
    SpoolStats,
    LogTail,
    ConfigGet,
    ConfigSet,
    Restart,
}

impl Op {
    pub const ALL: [Op; 8] = [
        Op::Identify,
        Op::Poll,
        Op::Status,
        Op::SpoolStats,
        Op::LogTail,
        Op::ConfigGet,
        Op::ConfigSet,
        Op::Restart,
    ];

    /// The ops that run while the clock is not synchronised: they change
    /// nothing, so an old request replayed does no harm.
    pub const SAFE_UNSYNCED: [Op; 3] = [Op::Identify, Op::Poll, Op::Status];

    /// The ops whose final reply the replay store keeps: each acts (the
    /// LED flickers for the ward staff, the service stops, the config is
    /// replaced), so a redelivered request must get its
    /// reply again and not run twice. The others only read: sent again
    /// they are answered afresh, and keeping their replies would only let
    /// a flood of them fill the store (see the module doc of `command`).
    pub const REMEMBERED: [Op; 3] = [Op::Identify, Op::ConfigSet, Op::Restart];

    /// Whether this op's final reply is kept ([`Op::REMEMBERED`]).
    pub fn remembered(self) -> bool {
        Op::REMEMBERED.contains(&self)
    }

    /// The name in topics, `[commands] allow` and replies.
    pub fn name(self) -> &'static str {
        match self {
            Op::Identify => "identify",
            Op::Poll => "poll",
            Op::Status => "status",
            Op::SpoolStats => "spool.stats",
            Op::LogTail => "log.tail",
            Op::ConfigGet => "config.get",
            Op::ConfigSet => "config.set",
            Op::Restart => "restart",
        }
    }

    pub fn from_name(s: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|o| o.name() == s)
    }
}

/// A log level for `log.tail`'s filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn from_tracing(l: &tracing::Level) -> Level {
        match *l {
            tracing::Level::TRACE => Level::Trace,
            tracing::Level::DEBUG => Level::Debug,
            tracing::Level::INFO => Level::Info,
            tracing::Level::WARN => Level::Warn,
            tracing::Level::ERROR => Level::Error,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// A validated request's arguments.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Args {
    Identify { seconds: u64 },
    Poll { device: String },
    Status,
    SpoolStats,
    LogTail { lines: usize, level: Option<Level> },
    ConfigGet,
    ConfigSet(SetArgs),
    Restart,
}

/// A request that may run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Request {
    pub id: String,
    pub op: Op,
    pub expires: i64,
    pub args: Args,
}

/// Why a request is rejected, in words for the `reason` field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Rejection(pub String);

fn reject<T>(why: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection(why.into()))
}

/// What [`validate`] needs to know about the gateway.
#[derive(Debug, Clone)]
pub(crate) struct Policy<'a> {
    /// `[commands] allow`.
    pub allow: &'a [Op],
    /// The clock is synchronised (or `[commands] trust_clock`).
    pub clock_trusted: bool,
    pub now_ms: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentifyArgs {
    #[serde(default = "default_identify")]
    seconds: u64,
}
fn default_identify() -> u64 {
    60
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PollArgs {
    device: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogTailArgs {
    #[serde(default = "default_lines")]
    lines: usize,
    #[serde(default)]
    level: Option<Level>,
}
fn default_lines() -> usize {
    100
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// `config.set`'s arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct SetArgs {
    pub toml: String,
    pub base_hash: String,
    pub allow_broker_change: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigSetArgs {
    toml: String,
    base_hash: String,
    #[serde(default)]
    allow_broker_change: bool,
}

fn args_of<T: serde::de::DeserializeOwned>(op: Op, v: serde_json::Value) -> Result<T, Rejection> {
    serde_json::from_value(v)
        .map_err(|e| Rejection(format!("malformed args for {}: {e}", op.name())))
}

/// A rule of the contract broken: its words are the reason.
impl From<CommandError> for Rejection {
    fn from(e: CommandError) -> Rejection {
        Rejection(e.to_string())
    }
}

/// Checks a request's payload: the contract's size cap, op known and
/// allowed, the contract's JSON shape and `expires` (with a trusted clock,
/// the contract's expiry rule; without one, only the ops that change
/// nothing), `args` an object, and the op's arguments. The order decides
/// which reason a request wrong in several ways gets.
pub(crate) fn validate(
    target: &Target,
    payload: &[u8],
    p: &Policy<'_>,
) -> Result<Request, Rejection> {
    check_size(payload)?;
    let Some(op) = Op::from_name(&target.op) else {
        return reject(format!("unknown op {:?}", target.op));
    };
    if !p.allow.contains(&op) {
        return reject(format!(
            "op {} is not allowed on this gateway ([commands] allow)",
            op.name()
        ));
    }
    let payload = RequestPayload::decode(payload)?;
    if p.clock_trusted {
        payload.check_expires(p.now_ms)?;
    } else if !Op::SAFE_UNSYNCED.contains(&op) {
        return reject(format!(
            "the gateway's clock is not synchronised: only identify, poll and status run, not {}",
            op.name()
        ));
    }
    let expires = payload.expires;
    let args = serde_json::Value::Object(payload.into_args()?);
    let args = match op {
        Op::Identify => {
            let a: IdentifyArgs = args_of(op, args)?;
            if !(1..=MAX_IDENTIFY_SECS).contains(&a.seconds) {
                return reject(format!(
                    "malformed args for identify: seconds must be 1 to {MAX_IDENTIFY_SECS}"
                ));
            }
            Args::Identify { seconds: a.seconds }
        }
        Op::Poll => {
            let a: PollArgs = args_of(op, args)?;
            Args::Poll { device: a.device }
        }
        Op::LogTail => {
            let a: LogTailArgs = args_of(op, args)?;
            if !(1..=MAX_LOG_LINES).contains(&a.lines) {
                return reject(format!(
                    "malformed args for log.tail: lines must be 1 to {MAX_LOG_LINES}"
                ));
            }
            Args::LogTail {
                lines: a.lines,
                level: a.level,
            }
        }
        Op::ConfigSet => {
            let a: ConfigSetArgs = args_of(op, args)?;
            Args::ConfigSet(SetArgs {
                toml: a.toml,
                base_hash: a.base_hash,
                allow_broker_change: a.allow_broker_change,
            })
        }
        Op::Status | Op::SpoolStats | Op::ConfigGet | Op::Restart => {
            let _: NoArgs = args_of(op, args)?;
            match op {
                Op::Status => Args::Status,
                Op::SpoolStats => Args::SpoolStats,
                Op::ConfigGet => Args::ConfigGet,
                _ => Args::Restart,
            }
        }
    };
    Ok(Request {
        id: target.id.clone(),
        op,
        expires,
        args,
    })
}

/// Cutting a reply to the size of a message: this gateway's rule for its
/// own results (`log.tail`'s `lines`), on the contract's reply.
pub(crate) trait Fit {
    /// Makes the reply fit in `max` bytes of JSON: a `lines` list
    /// (log.tail) loses its oldest lines and says `"truncated": true`; any
    /// other result too large turns the reply into `failed` with the
    /// reason.
    fn fit(self, max: usize) -> Reply;
}

impl Fit for Reply {
    fn fit(mut self, max: usize) -> Reply {
        let len = self.to_json().len();
        if len <= max {
            return self;
        }
        if let Some(lines) = self
            .result
            .as_mut()
            .and_then(|r| r.get_mut("lines"))
            .and_then(|l| l.as_array_mut())
        {
            // Cut about what is too much, then line by line.
            let over = len - max;
            let mut cut = 0;
            while cut < over && !lines.is_empty() {
                cut += lines[0].to_string().len() + 1;
                lines.remove(0);
            }
        }
        if let Some(r) = self.result.as_mut().and_then(|r| r.as_object_mut()) {
            if r.contains_key("lines") {
                r.insert("truncated".into(), serde_json::Value::Bool(true));
            }
        }
        while self.to_json().len() > max {
            let lines = self
                .result
                .as_mut()
                .and_then(|r| r.get_mut("lines"))
                .and_then(|l| l.as_array_mut());
            match lines {
                Some(l) if !l.is_empty() => {
                    l.remove(0);
                }
                _ => {
                    self.status = ReplyStatus::Failed;
                    self.reason = Some(format!(
                        "the result ({len} bytes) is larger than a message may be ({max} bytes)"
                    ));
                    self.result = None;
                    break;
                }
            }
        }
        self
    }
}

#[cfg(test)]
mod tests;
