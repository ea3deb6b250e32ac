//! Requests and replies of the command channel: pure functions, no I/O.
//!
//! A request arrives on `{prefix}/{site}/cmd/{op}/{id}` with the payload
//! `{"expires": <ms since epoch>, "args": {…}}`; [`parse_topic`] reads the
//! topic, [`validate`] the payload against the allow-list, the clock and
//! each op's arguments. Whatever is wrong becomes a [`Rejection`] whose
//! words go into the `rejected` reply. The reply is [`Reply`], published on
//! `{prefix}/{site}/cmd/{op}/{id}/reply`.

use serde::{Deserialize, Serialize};

/// The largest request payload accepted (64 KiB); a larger one is rejected
/// without being parsed.
pub(crate) const MAX_REQUEST: usize = 64 * 1024;

/// How far ahead `expires` may be: a request valid for longer could be
/// replayed after its id is forgotten (ids are kept 7 days).
pub(crate) const MAX_EXPIRES_AHEAD_MS: i64 = 24 * 3600 * 1000;

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

/// `id`: `[A-Za-z0-9_-]{1,64}`, chosen by the operations centre.
pub(crate) fn valid_request_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An op word that may name a reply topic even when it is not a known op
/// (so an unknown op can still be answered): `[a-z0-9._-]{1,64}`.
pub(crate) fn valid_op_word(op: &str) -> bool {
    (1..=64).contains(&op.len())
        && op.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// The subscription: `{prefix}/{site}/cmd/+/+`.
pub(crate) fn request_filter(prefix: &str, site: &str) -> String {
    format!("{prefix}/{site}/cmd/+/+")
}

/// `{prefix}/{site}/cmd/{op}/{id}/reply`.
pub(crate) fn reply_topic(prefix: &str, site: &str, op: &str, id: &str) -> String {
    format!("{prefix}/{site}/cmd/{op}/{id}/reply")
}

/// The op and id a request topic names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub op: String,
    pub id: String,
}

/// Why a topic is not answered at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TopicError {
    /// Not `{prefix}/{site}/cmd/{op}/{id}` of this gateway: ignored (the
    /// broker should never deliver it).
    #[error("not a request topic of this gateway")]
    NotOurs,
    /// The id or op cannot name a reply topic or be remembered: logged
    /// and dropped, no reply.
    #[error(
        "request id {0:?} is not [A-Za-z0-9_-]{{1,64}} (or the op word is unusable); no reply"
    )]
    BadId(String),
}

/// Reads a request topic.
pub(crate) fn parse_topic(prefix: &str, site: &str, topic: &str) -> Result<Target, TopicError> {
    let rest = topic
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('/'))
        .and_then(|r| r.strip_prefix(site))
        .and_then(|r| r.strip_prefix("/cmd/"))
        .ok_or(TopicError::NotOurs)?;
    let mut parts = rest.split('/');
    let (Some(op), Some(id), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(TopicError::NotOurs);
    };
    if !valid_request_id(id) || !valid_op_word(op) {
        return Err(TopicError::BadId(id.chars().take(80).collect()));
    }
    Ok(Target {
        op: op.to_owned(),
        id: id.to_owned(),
    })
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
struct Envelope {
    #[serde(default)]
    expires: Option<serde_json::Value>,
    #[serde(default)]
    args: Option<serde_json::Value>,
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

/// Checks a request's payload: size, op known and allowed, JSON shape,
/// `expires` present and (with a trusted clock) neither past nor more than
/// a day ahead, the clock rule, and the op's arguments.
pub(crate) fn validate(
    target: &Target,
    payload: &[u8],
    p: &Policy<'_>,
) -> Result<Request, Rejection> {
    if payload.len() > MAX_REQUEST {
        return reject(format!(
            "too large: {} bytes, at most {MAX_REQUEST}",
            payload.len()
        ));
    }
    let Some(op) = Op::from_name(&target.op) else {
        return reject(format!("unknown op {:?}", target.op));
    };
    if !p.allow.contains(&op) {
        return reject(format!(
            "op {} is not allowed on this gateway ([commands] allow)",
            op.name()
        ));
    }
    let env: Envelope = match serde_json::from_slice(payload) {
        Ok(e) => e,
        Err(e) => return reject(format!("malformed request: {e}")),
    };
    let expires =
        match env.expires {
            None | Some(serde_json::Value::Null) => {
                return reject("malformed request: expires is required")
            }
            Some(v) => match v.as_i64() {
                Some(ms) if ms >= 0 => ms,
                _ => return reject(
                    "malformed request: expires must be milliseconds since the epoch (an integer)",
                ),
            },
        };
    if p.clock_trusted {
        if expires <= p.now_ms {
            return reject(format!(
                "expired: expires {expires} is not after the gateway's time {}",
                p.now_ms
            ));
        }
        if expires - p.now_ms > MAX_EXPIRES_AHEAD_MS {
            return reject("expires is more than 24 h ahead of the gateway's time");
        }
    } else if !Op::SAFE_UNSYNCED.contains(&op) {
        return reject(format!(
            "the gateway's clock is not synchronised: only identify, poll and status run, not {}",
            op.name()
        ));
    }
    let args = match env.args {
        None | Some(serde_json::Value::Null) => serde_json::Value::Object(Default::default()),
        Some(v @ serde_json::Value::Object(_)) => v,
        Some(_) => return reject("malformed request: args must be an object"),
    };
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

/// Where a command is in its workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum State {
    Accepted,
    Executing,
    Successful,
    Failed,
    Rejected,
}

impl State {
    /// The command is over: its reply is remembered.
    #[cfg_attr(not(test), allow(dead_code))] // used by the tests
    pub(crate) fn is_final(self) -> bool {
        matches!(self, State::Successful | State::Failed | State::Rejected)
    }
}

/// `{"id","op","status","reason","result","ts","replayed"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Reply {
    pub id: String,
    pub op: String,
    pub status: State,
    pub reason: Option<String>,
    pub result: Option<serde_json::Value>,
    pub ts: i64,
    pub replayed: bool,
}

impl Reply {
    pub(crate) fn new(t: &Target, status: State, ts: i64) -> Reply {
        Reply {
            id: t.id.clone(),
            op: t.op.clone(),
            status,
            reason: None,
            result: None,
            ts,
            replayed: false,
        }
    }

    pub(crate) fn with_reason(mut self, why: impl Into<String>) -> Reply {
        self.reason = Some(why.into());
        self
    }

    pub(crate) fn with_result(mut self, r: serde_json::Value) -> Reply {
        self.result = Some(r);
        self
    }

    /// Makes the reply fit in `max` bytes of JSON: a `lines` list (log.tail)
    /// loses its oldest lines and says `"truncated": true`; any other
    /// result too large turns the reply into `failed` with the reason.
    pub(crate) fn fit(mut self, max: usize) -> Reply {
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
                    self.status = State::Failed;
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

    pub(crate) fn to_json(&self) -> String {
        // A struct of strings, numbers and JSON values always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
