//! The dispatcher's tests: request digests, the inbox and the rate limit,
//! reply records as reply messages.

use super::*;
use crate::model::Kind;
use wardgate_contract::command::ReplyStatus as State;

/// The same op and args are the same request whatever `expires` and
/// the keys' order; other args or another op are another request.
#[test]
fn a_request_is_its_op_and_args() {
    let d = |op: &str, p: &str| request_digest(op, p.as_bytes());
    let a = d("identify", r#"{"expires":1,"args":{"seconds":5,"x":1}}"#);
    assert_eq!(
        a,
        d("identify", r#"{"args":{"x":1,"seconds":5},"expires":2}"#)
    );
    assert_ne!(
        a,
        d("identify", r#"{"expires":1,"args":{"seconds":6,"x":1}}"#)
    );
    assert_ne!(a, d("poll", r#"{"expires":1,"args":{"seconds":5,"x":1}}"#));
    assert_eq!(a.len(), 32);
    assert_ne!(d("identify", "not json"), d("identify", "not json either"));
}

/// A full inbox drops the request, says so and counts it; the count
/// is the sink's, which the gateway telemetry publishes.
#[test]
fn a_full_inbox_counts_each_dropped_request() {
    let (link, mut rx) = link_with(2, limit::Limiter::new(std::time::Instant::now()));
    let c = SinkCounters::default();
    let dropped = &c.commands_dropped;
    assert!(link.hand_over("ioc/s/cmd/status/a", b"{}", &c));
    assert!(link.hand_over("ioc/s/cmd/status/b", b"{}", &c));
    assert_eq!(dropped.load(Ordering::Relaxed), 0);
    assert!(!link.hand_over("ioc/s/cmd/status/c", b"{}", &c));
    assert!(!link.hand_over("ioc/s/cmd/status/d", b"{}", &c));
    assert_eq!(dropped.load(Ordering::Relaxed), 2);
    // Room again: taken, not counted.
    assert_eq!(
        rx.try_recv().map(|m| m.topic).ok().as_deref(),
        Some("ioc/s/cmd/status/a")
    );
    assert!(link.hand_over("ioc/s/cmd/status/e", b"{}", &c));
    assert_eq!(dropped.load(Ordering::Relaxed), 2);
    // The dispatcher gone: dropped and counted too.
    drop(rx);
    assert!(!link.hand_over("ioc/s/cmd/status/f", b"{}", &c));
    assert_eq!(dropped.load(Ordering::Relaxed), 3);
    assert_eq!(c.commands_limited.load(Ordering::Relaxed), 0);
}

fn link_with(inbox: usize, l: limit::Limiter) -> (CommandLink, mpsc::Receiver<Inbound>) {
    let (tx, rx) = mpsc::channel(inbox);
    let (_inv_tx, inv_rx) = watch::channel(Vec::new());
    let link = CommandLink {
        inbox: tx,
        filter: None,
        inventory_topic: "ioc/s/inventory".into(),
        inventory: inv_rx,
        limiter: Arc::new(Mutex::new(l)),
        prefix: "ioc".into(),
        site: "s".into(),
    };
    (link, rx)
}

/// Past the burst, requests are refused before the inbox and counted
/// as limited, not dropped; an empty payload (a retained request
/// cleared) takes no token.
#[test]
fn the_rate_limit_refuses_and_counts_before_the_inbox() {
    let now = std::time::Instant::now();
    let l = limit::Limiter::with(limit::TokenBucket::new(1, 3, now));
    let (link, mut rx) = link_with(100, l);
    let c = SinkCounters::default();
    let taken = (0..10)
        .filter(|i| link.hand_over(&format!("ioc/s/cmd/status/x{i}"), b"{}", &c))
        .count();
    assert_eq!(taken, 3);
    assert_eq!(c.commands_limited.load(Ordering::Relaxed), 7);
    assert_eq!(c.commands_dropped.load(Ordering::Relaxed), 0);
    assert!(link.hand_over("ioc/s/cmd/status/x0", b"", &c));
    assert_eq!(c.commands_limited.load(Ordering::Relaxed), 7);
    let mut got = 0;
    while rx.try_recv().is_ok() {
        got += 1;
    }
    assert_eq!(got, 4);
}

#[test]
fn reply_records_become_reply_messages() {
    let t = Target {
        op: "status".into(),
        id: "a1".into(),
    };
    let reply = Reply::new(&t, State::Successful, 7);
    let body = |op: &str, id: &str, code: &str| {
        let mut v = Values::new();
        v.set("op", op);
        v.set("id", id);
        serde_json::to_string(&Event {
            seq: 0,
            ts: 1,
            clock: ClockState::Synced,
            severity: Severity::Info,
            code: code.into(),
            message: reply.to_json(),
            values: v,
        })
        .unwrap()
    };
    let batch = |bodies: Vec<String>| Batch {
        id: 1,
        kind: Kind::Event,
        device: Arc::from(REPLY_DEVICE),
        epoch: 0,
        first_seq: 0,
        historical: false,
        bodies: bodies.into_iter().map(Arc::from).collect(),
    };
    let msgs = reply_messages(
        "ioc",
        "s",
        &batch(vec![
            body("status", "a1", REPLY_CODE),
            body("poll", "b", REPLY_CODE),
        ]),
    )
    .unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].0, "ioc/s/cmd/status/a1/reply");
    assert_eq!(msgs[1].0, "ioc/s/cmd/poll/b/reply");
    let back: Reply = serde_json::from_slice(&msgs[0].1).unwrap();
    assert_eq!(back, reply);
    for bad in [
        body("status", "a/b", REPLY_CODE),
        body("status", "a", "other"),
        "{}".into(),
    ] {
        assert!(reply_messages("ioc", "s", &batch(vec![bad])).is_err());
    }
}
