//! Commands from the operations centre (docs/mqtt.md, "Commands from the
//! IOC"): the request the IOC publishes on `{prefix}/{site}/cmd/{op}/{id}`
//! and the replies the gateway publishes on `.../{id}/reply`.
//!
//! [`Request`] builds a request's payload (`{"expires": …, "args": {…}}`);
//! [`Reply::decode`] reads a reply and names what is wrong with one that is
//! not the contract's, never panics. Which ops exist and what their args
//! are is the gateway's business (it rejects what it does not know, with
//! the reason): this module checks only the envelope's own rules.

use serde::{Deserialize, Serialize};

use crate::topic::{valid_command_id, valid_op};

/// The largest request payload a gateway reads (64 KiB); a larger one is
/// rejected (`too large`).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// How far ahead of the gateway's clock `expires` may be (24 h); further
/// is rejected.
pub const MAX_EXPIRES_AHEAD_MS: i64 = 24 * 3600 * 1000;

/// `{prefix}/{site}/cmd/{op}/{id}`: where a request is published.
pub fn request_topic(prefix: &str, site: &str, op: &str, id: &str) -> String {
    format!("{prefix}/{site}/cmd/{op}/{id}")
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

/// Why a request cannot be built or a reply is not the contract's.
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
    /// The payload would be larger than a gateway reads: send less.
    #[error("the request is {0} bytes, a gateway reads at most {MAX_REQUEST_BYTES}")]
    TooLarge(usize),
    /// `expires` is before 1970: a request that no gateway runs.
    #[error("expires {0} is before 1970")]
    BadExpires(i64),
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
        .map_err(|e| CommandError::BadReply(e.to_string()))?;
        if body.len() > MAX_REQUEST_BYTES {
            return Err(CommandError::TooLarge(body.len()));
        }
        Ok(body)
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

    /// The reply as the gateway writes it.
    pub fn to_vec(&self) -> Vec<u8> {
        // Strings, numbers and JSON values: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        match v {
            serde_json::Value::Object(m) => m,
            _ => panic!("an object"),
        }
    }

    #[test]
    fn a_request_is_the_schemas_and_names_its_topics() {
        let r = Request::new(
            "poll",
            "c-81",
            1_795_832_250_000,
            args(json!({"device": "ups1"})),
        )
        .unwrap();
        assert_eq!(r.topic("ioc", "xa-a"), "ioc/xa-a/cmd/poll/c-81");
        assert_eq!(r.reply_topic("ioc", "xa-a"), "ioc/xa-a/cmd/poll/c-81/reply");
        let body = r.to_vec().unwrap();
        assert_eq!(
            String::from_utf8(body.clone()).unwrap(),
            r#"{"expires":1795832250000,"args":{"device":"ups1"}}"#
        );
        let schema: serde_json::Value =
            serde_json::from_str(crate::schema::COMMAND_REQUEST).unwrap();
        let v = jsonschema::validator_for(&schema).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v.is_valid(&doc));
        let none = Request::new("status", "x", 1, Default::default()).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&none.to_vec().unwrap()).unwrap();
        assert_eq!(doc, json!({"expires": 1, "args": {}}));
        assert!(v.is_valid(&doc));
        // Both topics parse back as the contract's.
        use crate::topic::Topic;
        let t = r.topic("ioc", "xa-a");
        assert!(matches!(
            Topic::parse("ioc", &t),
            Ok(Topic::Command {
                op: "poll",
                id: "c-81",
                ..
            })
        ));
        let t = r.reply_topic("ioc", "xa-a");
        assert!(matches!(
            Topic::parse("ioc", &t),
            Ok(Topic::Reply {
                op: "poll",
                id: "c-81",
                ..
            })
        ));
    }

    #[test]
    fn a_request_outside_the_patterns_is_refused() {
        let a = Default::default;
        assert!(matches!(
            Request::new("Poll", "c1", 1, a()),
            Err(CommandError::BadOp(_))
        ));
        assert!(matches!(
            Request::new("poll", "c 1", 1, a()),
            Err(CommandError::BadId(_))
        ));
        assert!(matches!(
            Request::new("poll", &"a".repeat(65), 1, a()),
            Err(CommandError::BadId(_))
        ));
        assert!(matches!(
            Request::new("poll", "c1", -1, a()),
            Err(CommandError::BadExpires(-1))
        ));
        let big = args(json!({"toml": "x".repeat(MAX_REQUEST_BYTES)}));
        let r = Request::new("config.set", "c1", 1, big).unwrap();
        assert!(matches!(r.to_vec(), Err(CommandError::TooLarge(_))));
    }

    #[test]
    fn replies_decode_and_bad_ones_are_named() {
        // docs/mqtt.md's example.
        let ok = br#"{"id":"c-81","op":"poll","status":"successful","reason":null,
 "result":{"device":"ups1","ts":1795832191000,"values":{"ups.load":31.0}},
 "ts":1795832191020,"replayed":false}"#;
        let r = Reply::decode(ok).unwrap();
        assert_eq!(r.status, ReplyStatus::Successful);
        assert!(r.status.is_final());
        assert_eq!(r.result.as_ref().unwrap()["device"], "ups1");
        let schema: serde_json::Value = serde_json::from_str(crate::schema::COMMAND_REPLY).unwrap();
        let v = jsonschema::validator_for(&schema).unwrap();
        let back: serde_json::Value = serde_json::from_slice(&r.to_vec()).unwrap();
        assert!(v.is_valid(&back), "{back}");
        assert_eq!(Reply::decode(&r.to_vec()).unwrap(), r);

        let rejected = br#"{"id":"c1","op":"reboot","status":"rejected","reason":"unknown op \"reboot\"","result":null,"ts":1,"replayed":false}"#;
        let r = Reply::decode(rejected).unwrap();
        assert_eq!(r.status, ReplyStatus::Rejected);
        assert_eq!(r.reason.as_deref(), Some("unknown op \"reboot\""));
        assert_eq!(r.result, None);
        for s in ["accepted", "executing"] {
            let p = format!(
                r#"{{"id":"c1","op":"poll","status":"{s}","reason":null,"result":null,"ts":1,"replayed":false}}"#
            );
            assert!(!Reply::decode(p.as_bytes()).unwrap().status.is_final());
        }

        let bad: &[(&[u8], &str)] = &[
            (b"", "EOF"),
            (b"\xff\xfe", "expected value"),
            (br#"{"id":"c1"}"#, "missing field"),
            (
                br#"{"id":"c1","op":"poll","status":"done","reason":null,"result":null,"ts":1,"replayed":false}"#,
                "unknown variant",
            ),
            (
                br#"{"id":"c1","op":"poll","status":"failed","reason":null,"result":null,"ts":1,"replayed":false}"#,
                "without a reason",
            ),
            (
                br#"{"id":"c 1","op":"poll","status":"accepted","reason":null,"result":null,"ts":1,"replayed":false}"#,
                "id",
            ),
            (
                br#"{"id":"c1","op":"poll","status":"accepted","reason":null,"ts":1,"replayed":false}"#,
                "missing field `result`",
            ),
            (
                br#"{"id":"c1","op":"poll","status":"accepted","reason":null,"result":null,"ts":1,"replayed":false,"x":1}"#,
                "unknown field",
            ),
        ];
        for (payload, says) in bad {
            let e = Reply::decode(payload).unwrap_err().to_string();
            assert!(e.contains(says), "{e} should say {says}");
        }
    }
}
