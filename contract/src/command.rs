//! Commands from the operations centre (docs/mqtt.md, "Commands from the
//! IOC"): the request the IOC publishes on `{prefix}/{site}/cmd/{op}/{id}`
//! and the replies the gateway publishes on `.../{id}/reply`.
//!
//! The IOC builds a request's payload (`{"expires": …, "args": {…}}`) with
//! [`Request`] and reads replies with [`Reply::decode`], which names what
//! is wrong with one that is not the contract's and never panics. A gateway
//! reads a request with [`Target::parse`] (its topic), [`check_size`] and
//! [`RequestPayload`] (its payload), and builds its replies with
//! [`Reply::new`]; [`Request::decode`] is all of the reading in one call,
//! for a reader with no rules of its own between the steps.
//!
//! Which ops exist, what their args are, who may send which and when the
//! clock is good enough to run them is the gateway's business (it rejects
//! what it does not know, with the reason): this module has only the
//! envelope's own rules, and their words, which go into the `reason` of a
//! `rejected` reply.

use serde::{Deserialize, Serialize};

use crate::topic::{valid_command_id, valid_op, Topic, TopicError};

/// The largest request payload a gateway reads (64 KiB); a larger one is
/// rejected (`too large`) before it is parsed.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// How far ahead of the gateway's clock `expires` may be (24 h); further
/// is rejected: a request valid for longer could be replayed after a
/// gateway forgot its id (ids are kept 7 days).
pub const MAX_EXPIRES_AHEAD_MS: i64 = 24 * 3600 * 1000;

/// `{prefix}/{site}/cmd/{op}/{id}`: where a request is published.
pub fn request_topic(prefix: &str, site: &str, op: &str, id: &str) -> String {
    format!("{prefix}/{site}/cmd/{op}/{id}")
}

/// `{prefix}/{site}/cmd/+/+`: what a gateway subscribes to for its
/// requests.
pub fn request_filter(prefix: &str, site: &str) -> String {
    format!("{prefix}/{site}/cmd/+/+")
}

/// `{prefix}/{site}/cmd/{op}/{id}/reply`: where its replies come (QoS 1,
/// not retained; subscribe before publishing the request).
pub fn reply_topic(prefix: &str, site: &str, op: &str, id: &str) -> String {
    format!("{prefix}/{site}/cmd/{op}/{id}/reply")
}

/// `{prefix}/{site}/inventory`: the retained inventory, whose `commands`
/// says whether the site takes commands and which ops.
pub fn inventory_topic(prefix: &str, site: &str) -> String {
    format!("{prefix}/{site}/inventory")
}

/// Why a request cannot be built or read, or a reply is not the
/// contract's. A gateway puts the words of the request's errors in the
/// `reason` of its `rejected` reply.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The op is not `[a-z0-9._-]{1,64}`: no topic can carry it; fix the
    /// op's name.
    #[error("op {0:?} is not [a-z0-9._-]{{1,64}}")]
    BadOp(String),
    /// The id is not `[A-Za-z0-9_-]{1,64}`: the gateway would not answer;
    /// choose another (a random one).
    #[error("id {0:?} is not [A-Za-z0-9_-]{{1,64}}")]
    BadId(String),
    /// The payload is larger than a gateway reads: rejected unread; send
    /// less.
    #[error("too large: {0} bytes, at most {MAX_REQUEST_BYTES}")]
    TooLarge(usize),
    /// `expires` is before 1970: a request that no gateway runs.
    #[error("expires {0} is before 1970")]
    BadExpires(i64),
    /// A payload that is not a request's JSON (the words say what is
    /// wrong): rejected; fix the sender.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// `expires` is not after the gateway's time: rejected, never run;
    /// send it again with a new `expires` if it is still wanted.
    #[error("expired: expires {expires} is not after the gateway's time {now}")]
    Expired { expires: i64, now: i64 },
    /// `expires` is more than [`MAX_EXPIRES_AHEAD_MS`] ahead of the
    /// gateway's time: rejected; send a nearer one (or the clocks
    /// disagree).
    #[error("expires is more than 24 h ahead of the gateway's time")]
    TooFarAhead,
    /// A reply that is not JSON of the reply's shape (the message names
    /// the field): not from a gateway of this contract; count it, ignore it.
    #[error("a reply that is not the contract's: {0}")]
    BadReply(String),
}

/// Where a command is in its workflow: `accepted` → `executing` →
/// `successful` | `failed`, or straight to `rejected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyStatus {
    Accepted,
    Executing,
    Successful,
    Failed,
    Rejected,
}

impl ReplyStatus {
    /// The command is over: no other status follows (a copy may).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ReplyStatus::Successful | ReplyStatus::Failed | ReplyStatus::Rejected
        )
    }

    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyStatus::Accepted => "accepted",
            ReplyStatus::Executing => "executing",
            ReplyStatus::Successful => "successful",
            ReplyStatus::Failed => "failed",
            ReplyStatus::Rejected => "rejected",
        }
    }
}

/// The op and id a request's topic names; its replies name them again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub op: String,
    pub id: String,
}

impl Target {
    /// The op and id of a request to `site` under `prefix`. `Ok(None)`: not
    /// a request to this site (another site's, a reply, another kind of
    /// topic): ignore it. An error: a request to this site whose op or id
    /// breaks its pattern, so no reply topic can name it: log it and drop
    /// it, no reply.
    pub fn parse(prefix: &str, site: &str, topic: &str) -> Result<Option<Target>, TopicError> {
        match Topic::parse(prefix, topic) {
            Ok(Topic::Command { site: s, op, id }) if s == site => Ok(Some(Target {
                op: op.to_owned(),
                id: id.to_owned(),
            })),
            Err(e @ TopicError::BadCommand { .. }) => {
                // Only `{prefix}/{site}/cmd/{op}/{id}` of this site, not a
                // reply topic or another site's request.
                let ours = topic
                    .strip_prefix(prefix)
                    .and_then(|r| r.strip_prefix('/'))
                    .and_then(|r| r.strip_prefix(site))
                    .and_then(|r| r.strip_prefix("/cmd/"))
                    .is_some_and(|r| r.matches('/').count() == 1);
                if ours {
                    Err(e)
                } else {
                    Ok(None)
                }
            }
            _ => Ok(None),
        }
    }
}

/// A request: its topic's op and id, and the payload's `expires` and
/// `args`.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub op: String,
    pub id: String,
    /// ms since the epoch; the gateway rejects the request after it.
    pub expires: i64,
    /// The op's arguments (an object; empty for ops without any).
    pub args: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
struct Payload<'a> {
    expires: i64,
    args: &'a serde_json::Map<String, serde_json::Value>,
}

impl Request {
    /// A request, its op and id checked against their patterns.
    pub fn new(
        op: &str,
        id: &str,
        expires: i64,
        args: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Request, CommandError> {
        if !valid_op(op) {
            return Err(CommandError::BadOp(op.to_owned()));
        }
        if !valid_command_id(id) {
            return Err(CommandError::BadId(id.to_owned()));
        }
        if expires < 0 {
            return Err(CommandError::BadExpires(expires));
        }
        Ok(Request {
            op: op.to_owned(),
            id: id.to_owned(),
            expires,
            args,
        })
    }

    /// Reads a request as a gateway does, every rule of the contract in a
    /// gateway's order: the op and id patterns, [`check_size`], the
    /// payload's shape ([`RequestPayload::decode`]), `expires` against
    /// `now_ms` ([`RequestPayload::check_expires`]; `None`: a clock that
    /// cannot judge it, so it is not judged) and `args`
    /// ([`RequestPayload::into_args`]).
    pub fn decode(
        op: &str,
        id: &str,
        payload: &[u8],
        now_ms: Option<i64>,
    ) -> Result<Request, CommandError> {
        if !valid_op(op) {
            return Err(CommandError::BadOp(op.to_owned()));
        }
        if !valid_command_id(id) {
            return Err(CommandError::BadId(id.to_owned()));
        }
        check_size(payload)?;
        let p = RequestPayload::decode(payload)?;
        if let Some(now) = now_ms {
            p.check_expires(now)?;
        }
        let expires = p.expires;
        Ok(Request {
            op: op.to_owned(),
            id: id.to_owned(),
            expires,
            args: p.into_args()?,
        })
    }

    /// `{prefix}/{site}/cmd/{op}/{id}`.
    pub fn topic(&self, prefix: &str, site: &str) -> String {
        request_topic(prefix, site, &self.op, &self.id)
    }

    /// `{prefix}/{site}/cmd/{op}/{id}/reply`.
    pub fn reply_topic(&self, prefix: &str, site: &str) -> String {
        reply_topic(prefix, site, &self.op, &self.id)
    }

    /// The payload, `{"expires":…,"args":{…}}`, at most
    /// [`MAX_REQUEST_BYTES`].
    pub fn to_vec(&self) -> Result<Vec<u8>, CommandError> {
        let body = serde_json::to_vec(&Payload {
            expires: self.expires,
            args: &self.args,
        })
        .map_err(|e| CommandError::Malformed(e.to_string()))?;
        check_size(&body)?;
        Ok(body)
    }
}

/// The first rule a request meets, before it is parsed: at most
/// [`MAX_REQUEST_BYTES`] (exactly that many is fine).
pub fn check_size(payload: &[u8]) -> Result<(), CommandError> {
    if payload.len() > MAX_REQUEST_BYTES {
        return Err(CommandError::TooLarge(payload.len()));
    }
    Ok(())
}

/// A request's payload as a gateway reads it: `expires` read, the rest
/// checked step by step, so that a gateway can put its own rules (which
/// ops run while its clock is not synchronised) between the steps.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestPayload {
    /// ms since the epoch, at least 0.
    pub expires: i64,
    args: Option<serde_json::Value>,
}

/// The payload's keys: no others (the schema's `additionalProperties`).
/// Its name is in serde's words for a payload of the wrong type ("expected
/// struct Envelope"), which go into the reason: keep it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    #[serde(default)]
    expires: Option<serde_json::Value>,
    #[serde(default)]
    args: Option<serde_json::Value>,
}

impl RequestPayload {
    /// Reads the JSON: an object of `expires` (required, an integer, at
    /// least 0) and `args`, no other key. `args` is checked by
    /// [`RequestPayload::into_args`].
    pub fn decode(payload: &[u8]) -> Result<RequestPayload, CommandError> {
        let w: Envelope =
            serde_json::from_slice(payload).map_err(|e| CommandError::Malformed(e.to_string()))?;
        let expires = match w.expires {
            None | Some(serde_json::Value::Null) => {
                return Err(CommandError::Malformed("expires is required".into()))
            }
            Some(v) => match v.as_i64() {
                Some(ms) if ms >= 0 => ms,
                _ => {
                    return Err(CommandError::Malformed(
                        "expires must be milliseconds since the epoch (an integer)".into(),
                    ))
                }
            },
        };
        Ok(RequestPayload {
            expires,
            args: w.args,
        })
    }

    /// The expiry rule, for a gateway whose clock can judge it: `expires`
    /// after `now_ms`, and at most [`MAX_EXPIRES_AHEAD_MS`] after it.
    pub fn check_expires(&self, now_ms: i64) -> Result<(), CommandError> {
        if self.expires <= now_ms {
            return Err(CommandError::Expired {
                expires: self.expires,
                now: now_ms,
            });
        }
        if self.expires - now_ms > MAX_EXPIRES_AHEAD_MS {
            return Err(CommandError::TooFarAhead);
        }
        Ok(())
    }

    /// `args`: an object; left out or `null` is the empty one. What keys
    /// it may have is the op's (the gateway's) business.
    pub fn into_args(self) -> Result<serde_json::Map<String, serde_json::Value>, CommandError> {
        match self.args {
            None | Some(serde_json::Value::Null) => Ok(Default::default()),
            Some(serde_json::Value::Object(m)) => Ok(m),
            Some(_) => Err(CommandError::Malformed("args must be an object".into())),
        }
    }
}

/// One reply: `{"id","op","status","reason","result","ts","replayed"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    pub id: String,
    pub op: String,
    pub status: ReplyStatus,
    /// Why it was rejected or failed, in words; `None` otherwise.
    pub reason: Option<String>,
    /// The op's result when successful; `None` otherwise.
    pub result: Option<serde_json::Value>,
    /// When the gateway wrote it (its clock, ms; the stored reply's time
    /// when replayed).
    pub ts: i64,
    /// The stored reply of an id already completed: the op did not run
    /// again.
    pub replayed: bool,
}

impl Reply {
    /// A reply to the request `t` with `status`, written at `ts`: no
    /// reason or result yet, not replayed.
    pub fn new(t: &Target, status: ReplyStatus, ts: i64) -> Reply {
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

    /// With why it was rejected or failed.
    pub fn with_reason(mut self, why: impl Into<String>) -> Reply {
        self.reason = Some(why.into());
        self
    }

    /// With the op's result.
    pub fn with_result(mut self, r: serde_json::Value) -> Reply {
        self.result = Some(r);
        self
    }

    /// Reads a reply payload; every field is required (the schema's), and
    /// a `rejected` or `failed` reply must say why.
    pub fn decode(payload: &[u8]) -> Result<Reply, CommandError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wire {
            id: String,
            op: String,
            status: ReplyStatus,
            reason: Option<String>,
            // Required, but may be null: `Option` alone would let it be
            // left out.
            result: serde_json::Value,
            ts: i64,
            replayed: bool,
        }
        let w: Wire =
            serde_json::from_slice(payload).map_err(|e| CommandError::BadReply(e.to_string()))?;
        if !valid_command_id(&w.id) {
            return Err(CommandError::BadReply(format!("id {:?}", w.id)));
        }
        if !valid_op(&w.op) {
            return Err(CommandError::BadReply(format!("op {:?}", w.op)));
        }
        let refused = matches!(w.status, ReplyStatus::Rejected | ReplyStatus::Failed);
        if refused && w.reason.is_none() {
            return Err(CommandError::BadReply(format!(
                "a {} reply without a reason",
                w.status.as_str()
            )));
        }
        Ok(Reply {
            id: w.id,
            op: w.op,
            status: w.status,
            reason: w.reason,
            result: (!w.result.is_null()).then_some(w.result),
            ts: w.ts,
            replayed: w.replayed,
        })
    }

    /// The reply as the gateway writes it, as text.
    pub fn to_json(&self) -> String {
        // Strings, numbers and JSON values: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The reply as the gateway writes it.
    pub fn to_vec(&self) -> Vec<u8> {
        self.to_json().into_bytes()
    }
}

#[cfg(test)]
mod tests;
