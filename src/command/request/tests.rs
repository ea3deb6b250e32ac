//! Unit tests of request validation and replies (the topic, the id rules
//! and the reply's shape are the contract's: contract/src/command/tests.rs).
use super::*;
// The reply's statuses and the size and expiry limits are the contract's;
// the tests keep the gateway's short names for them.
use wardgate_contract::command::{
    ReplyStatus as State, MAX_EXPIRES_AHEAD_MS, MAX_REQUEST_BYTES as MAX_REQUEST,
};

const NOW: i64 = 1_800_000_000_000;

fn target(op: &str) -> Target {
    Target {
        op: op.into(),
        id: "r-1".into(),
    }
}

fn policy(allow: &[Op], trusted: bool) -> Policy<'_> {
    Policy {
        allow,
        clock_trusted: trusted,
        now_ms: NOW,
    }
}

fn check(op: &str, payload: &str) -> Result<Request, Rejection> {
    validate(&target(op), payload.as_bytes(), &policy(&Op::ALL, true))
}

fn rejected(op: &str, payload: &str) -> String {
    check(op, payload).expect_err("rejected").0
}

fn ok(expires: i64, args: &str) -> String {
    format!(r#"{{"expires":{expires},"args":{args}}}"#)
}

#[test]
fn valid_requests_and_defaults() {
    let r = check("identify", &ok(NOW + 1000, "{}")).unwrap();
    assert_eq!(r.args, Args::Identify { seconds: 60 });
    assert_eq!(r.expires, NOW + 1000);
    let r = check("identify", &format!(r#"{{"expires":{}}}"#, NOW + 1)).unwrap();
    assert_eq!(r.args, Args::Identify { seconds: 60 });
    let r = check("poll", &ok(NOW + 1000, r#"{"device":"ups1"}"#)).unwrap();
    assert_eq!(
        r.args,
        Args::Poll {
            device: "ups1".into()
        }
    );
    let r = check("log.tail", &ok(NOW + 1000, r#"{"lines":5,"level":"warn"}"#)).unwrap();
    assert_eq!(
        r.args,
        Args::LogTail {
            lines: 5,
            level: Some(Level::Warn)
        }
    );
    let r = check("log.tail", &ok(NOW + 1000, "null")).unwrap();
    assert_eq!(
        r.args,
        Args::LogTail {
            lines: 100,
            level: None
        }
    );
    for (op, args) in [
        ("status", Args::Status),
        ("spool.stats", Args::SpoolStats),
        ("config.get", Args::ConfigGet),
        ("restart", Args::Restart),
    ] {
        assert_eq!(check(op, &ok(NOW + 1, "{}")).unwrap().args, args, "{op}");
    }
}

#[test]
fn rejections_name_the_reason() {
    let e = rejected("reboot", &ok(NOW + 1, "{}"));
    assert!(e.starts_with("unknown op \"reboot\""), "{e}");
    let e = rejected("identify", "{not json");
    assert!(e.starts_with("malformed request:"), "{e}");
    let e = rejected("identify", "[]");
    assert!(e.starts_with("malformed request:"), "{e}");
    let e = rejected("identify", r#"{"args":{}}"#);
    assert_eq!(e, "malformed request: expires is required");
    let e = rejected("identify", r#"{"expires":"soon"}"#);
    assert!(e.contains("an integer"), "{e}");
    let e = rejected("identify", &format!(r#"{{"expires":{},"x":1}}"#, NOW + 1));
    assert!(e.contains("unknown field `x`"), "{e}");
    let e = rejected("identify", &ok(NOW, "{}"));
    assert!(e.starts_with("expired:"), "{e}");
    let e = rejected("identify", &ok(NOW + MAX_EXPIRES_AHEAD_MS + 1, "{}"));
    assert!(e.contains("24 h ahead"), "{e}");
    let e = rejected("identify", &ok(NOW + 1, r#"{"seconds":0}"#));
    assert!(e.contains("seconds must be 1 to 3600"), "{e}");
    let e = rejected("identify", &ok(NOW + 1, r#"{"secs":5}"#));
    assert!(e.starts_with("malformed args for identify"), "{e}");
    let e = rejected("poll", &ok(NOW + 1, "{}"));
    assert!(e.contains("missing field `device`"), "{e}");
    let e = rejected("log.tail", &ok(NOW + 1, r#"{"lines":1001}"#));
    assert!(e.contains("lines must be 1 to 1000"), "{e}");
    let e = rejected("log.tail", &ok(NOW + 1, r#"{"level":"loud"}"#));
    assert!(e.starts_with("malformed args for log.tail"), "{e}");
    let e = rejected("status", &ok(NOW + 1, r#"[1]"#));
    assert_eq!(e, "malformed request: args must be an object");
    let e = rejected("status", &ok(NOW + 1, r#"{"a":1}"#));
    assert!(e.starts_with("malformed args for status"), "{e}");
    let e = rejected("config.set", &ok(NOW + 1, "{}"));
    assert!(e.contains("missing field `toml`"), "{e}");
    let r = check(
        "config.set",
        &ok(
            NOW + 1,
            r#"{"toml":"site = \"s\"\n","base_hash":"sha256:1"}"#,
        ),
    )
    .unwrap();
    assert_eq!(
        r.args,
        Args::ConfigSet(crate::command::change::SetArgs {
            toml: "site = \"s\"\n".into(),
            base_hash: "sha256:1".into(),
            allow_broker_change: false
        })
    );
}

#[test]
fn too_large_is_rejected_before_parsing() {
    let big = format!(
        r#"{{"expires":{},"args":{{"device":"{}"}}}}"#,
        NOW + 1,
        "x".repeat(MAX_REQUEST)
    );
    let e = rejected("poll", &big);
    assert!(e.starts_with("too large:"), "{e}");
    // Exactly the cap is fine.
    let pad = MAX_REQUEST - ok(NOW + 1, r#"{"device":""}"#).len();
    let exact = ok(NOW + 1, &format!(r#"{{"device":"{}"}}"#, "x".repeat(pad)));
    assert_eq!(exact.len(), MAX_REQUEST);
    assert!(check("poll", &exact).is_ok());
}

#[test]
fn allow_list_and_unsynced_clock() {
    let allow = [Op::Identify, Op::Poll, Op::Status, Op::ConfigGet];
    let p = policy(&allow, true);
    let e = validate(&target("restart"), ok(NOW + 1, "{}").as_bytes(), &p).unwrap_err();
    assert!(e.0.contains("not allowed"), "{e}");
    assert!(validate(&target("config.get"), ok(NOW + 1, "{}").as_bytes(), &p).is_ok());

    // Unsynced: only the harmless three, and expiry is not judged by a
    // clock that may be years off.
    let p = policy(&allow, false);
    let e = validate(&target("config.get"), ok(NOW + 1, "{}").as_bytes(), &p).unwrap_err();
    assert!(e.0.contains("clock is not synchronised"), "{e}");
    for op in ["identify", "status"] {
        assert!(
            validate(&target(op), ok(1, "{}").as_bytes(), &p).is_ok(),
            "{op}"
        );
    }
    // expires is still required.
    let e = validate(&target("status"), b"{}", &p).unwrap_err();
    assert!(e.0.contains("expires is required"), "{e}");
}

#[test]
fn replies_are_cut_to_fit() {
    let t = target("log.tail");
    let lines: Vec<serde_json::Value> = (0..100)
        .map(|i| serde_json::json!({"message": format!("line {i:03} {}", "x".repeat(90))}))
        .collect();
    let r = Reply::new(&t, State::Successful, 1).with_result(serde_json::json!({"lines": lines}));
    let small = r.clone().fit(1_000_000);
    assert_eq!(small, r, "fits: unchanged");
    let cut = r.clone().fit(2_000);
    assert!(cut.to_json().len() <= 2_000);
    assert_eq!(cut.status, State::Successful);
    let res = cut.result.unwrap();
    assert_eq!(res["truncated"], true);
    let kept = res["lines"].as_array().unwrap();
    assert!(!kept.is_empty() && kept.len() < 100);
    assert!(kept.last().unwrap()["message"]
        .as_str()
        .unwrap()
        .starts_with("line 099"));
    let other = Reply::new(&target("status"), State::Successful, 1)
        .with_result(serde_json::json!({"big": "y".repeat(5000)}))
        .fit(1_000);
    assert_eq!(other.status, State::Failed);
    assert!(other
        .reason
        .clone()
        .unwrap()
        .contains("larger than a message may be"));
    assert!(other.to_json().len() <= 1_000);
}

/// Every op's name reads back as the op, and is an op word of the
/// contract (a topic level, a reply's `op`).
#[test]
fn op_names() {
    for op in Op::ALL {
        assert_eq!(Op::from_name(op.name()), Some(op));
        assert!(wardgate_contract::topic::valid_op(op.name()));
    }
}
