use super::*;
use crate::model::{Severity, Value, Values};

/// The telemetry example of docs/mqtt.md.
pub(crate) const TELEMETRY_DOC: &str = r#"{
  "site": "phuong-tan-phong",
  "device": "ups1",
  "epoch": "5f3a9c0e12d4b7a1",
  "samples": [
    {
      "historical": false,
      "seq": 4711,
      "ts": 1795832190039,
      "clock": "synced",
      "values": {
        "battery.charge": 100.0,
        "battery.runtime": 3983.0,
        "input.voltage": 228.1,
        "ups.load": 22.6,
        "ups.status": "OL"
      }
    }
  ]
}"#;

/// The event example of docs/mqtt.md.
pub(crate) const EVENT_DOC: &str = r#"{
  "site": "phuong-tan-phong",
  "device": "ups1",
  "epoch": "5f3a9c0e12d4b7a1",
  "events": [
    {
      "historical": false,
      "seq": 12,
      "ts": 1795832201040,
      "clock": "synced",
      "severity": "critical",
      "code": "ups.on_battery",
      "message": "UPS on battery: mains power lost",
      "values": { "ups.status": "OB" }
    }
  ]
}"#;

/// A backlog batch as the gateway's encoder writes it (no spaces, the
/// flag first, integers as the spool keeps them), with a door flag.
pub(crate) const BACKLOG: &str = r#"{"site":"xa-a","device":"env1","epoch":"00000000000000ab","samples":[{"historical":true,"seq":0,"ts":1795832100000,"clock":"unsynced","values":{"ambient.temperature":31,"door.open":false}},{"historical":true,"seq":1,"ts":1795832105000,"clock":"corrected","values":{}}]}"#;

#[test]
fn the_docs_examples_decode() {
    let t = Telemetry::from_slice(TELEMETRY_DOC.as_bytes()).unwrap();
    assert_eq!(t.site, "phuong-tan-phong");
    assert_eq!(t.device, "ups1");
    assert_eq!(t.epoch, Epoch(0x5f3a_9c0e_12d4_b7a1));
    assert_eq!(t.records.len(), 1);
    let d = &t.records[0];
    assert!(!d.historical);
    assert_eq!(d.record.seq, 4711);
    assert_eq!(d.record.ts, 1_795_832_190_039);
    assert_eq!(d.record.clock, ClockState::Synced);
    assert_eq!(d.record.values.get("ups.status"), Some(&"OL".into()));
    assert_eq!(
        d.record
            .values
            .get("input.voltage")
            .and_then(|v| v.as_f64()),
        Some(228.1)
    );

    let e = Events::from_slice(EVENT_DOC.as_bytes()).unwrap();
    let ev = &e.records[0].record;
    assert_eq!(ev.seq, 12);
    assert_eq!(ev.severity, Severity::Critical);
    assert_eq!(ev.code, "ups.on_battery");
    assert_eq!(ev.message, "UPS on battery: mains power lost");

    let b = Telemetry::from_slice(BACKLOG.as_bytes()).unwrap();
    assert_eq!(b.epoch, Epoch(0xab));
    assert!(b.records.iter().all(|d| d.historical));
    assert_eq!(
        b.records.iter().map(|d| d.record.clock).collect::<Vec<_>>(),
        [ClockState::Unsynced, ClockState::Corrected]
    );
    // Integers on the wire are numbers like any other.
    assert_eq!(
        b.records[0].record.values.get("ambient.temperature"),
        Some(&Value::Num(31.0))
    );
}

#[test]
fn encoding_goes_round_and_matches_the_wire_order() {
    let t = Telemetry::from_slice(BACKLOG.as_bytes()).unwrap();
    let out = String::from_utf8(t.to_vec()).unwrap();
    // Field order as the gateway writes it: site, device, epoch, the array;
    // in each record the flag first.
    assert!(
        out.starts_with(r#"{"site":"xa-a","device":"env1","epoch":"00000000000000ab","samples":[{"historical":true,"seq":0,"ts":1795832100000,"clock":"unsynced","values":{"#),
        "{out}"
    );
    assert_eq!(Telemetry::from_slice(out.as_bytes()).unwrap(), t);
    let e = Events::from_slice(EVENT_DOC.as_bytes()).unwrap();
    assert_eq!(Events::from_slice(&e.to_vec()).unwrap(), e);
}

/// Edits the docs' telemetry example's JSON, to make a broken one.
fn telemetry(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_str(TELEMETRY_DOC).unwrap();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

fn event(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_str(EVENT_DOC).unwrap();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

fn sample0(v: &mut serde_json::Value) -> &mut serde_json::Map<String, serde_json::Value> {
    v["samples"][0].as_object_mut().unwrap()
}

fn event0(v: &mut serde_json::Value) -> &mut serde_json::Map<String, serde_json::Value> {
    v["events"][0].as_object_mut().unwrap()
}

/// Telemetry payloads: `None` decodes, `Some(text)` fails with an error
/// whose words include `text`. Shared with the schema tests, which check
/// that the schema says the same.
pub(crate) fn telemetry_cases() -> Vec<(&'static str, Vec<u8>, Option<&'static str>)> {
    use serde_json::json;
    vec![
        ("docs example", TELEMETRY_DOC.into(), None),
        ("backlog", BACKLOG.into(), None),
        // Epochs.
        (
            "epoch upper case",
            telemetry(|v| v["epoch"] = json!("5F3A9C0E12D4B7A1")),
            Some("epoch \"5F3A9C0E12D4B7A1\" is not 16 lowercase hex digits"),
        ),
        (
            "epoch short",
            telemetry(|v| v["epoch"] = json!("5f3a9c0e")),
            Some("is not 16 lowercase hex digits"),
        ),
        (
            "epoch long",
            telemetry(|v| v["epoch"] = json!("5f3a9c0e12d4b7a10")),
            Some("is not 16 lowercase hex digits"),
        ),
        (
            "epoch with a sign",
            telemetry(|v| v["epoch"] = json!("+f3a9c0e12d4b7a1")),
            Some("is not 16 lowercase hex digits"),
        ),
        (
            "epoch a number",
            telemetry(|v| v["epoch"] = json!(1234)),
            Some("expected an epoch of 16 lowercase hex digits"),
        ),
        (
            "epoch missing",
            telemetry(|v| drop(v.as_object_mut().unwrap().remove("epoch"))),
            Some("missing field `epoch`"),
        ),
        // Ids.
        (
            "site upper case",
            telemetry(|v| v["site"] = json!("Phuong")),
            Some("site \"Phuong\" is not an id"),
        ),
        (
            "device with a slash",
            telemetry(|v| v["device"] = json!("ups/1")),
            Some("device \"ups/1\" is not an id"),
        ),
        (
            "device too long",
            telemetry(|v| v["device"] = json!("a".repeat(65))),
            Some("is not an id"),
        ),
        (
            "site a number",
            telemetry(|v| v["site"] = json!(7)),
            Some("invalid type: integer `7`, expected a string"),
        ),
        // The records' array.
        (
            "no samples",
            telemetry(|v| v["samples"] = json!([])),
            Some("the message has no samples"),
        ),
        (
            "samples missing",
            telemetry(|v| drop(v.as_object_mut().unwrap().remove("samples"))),
            Some("missing field `samples`"),
        ),
        (
            "samples an object",
            telemetry(|v| v["samples"] = json!({"seq": 1})),
            Some("invalid type: map, expected a sequence"),
        ),
        (
            "events instead of samples",
            event(|_| {}),
            Some("missing field `samples`"),
        ),
        // A record's fields.
        (
            "seq missing",
            telemetry(|v| drop(sample0(v).remove("seq"))),
            Some("missing field `seq`"),
        ),
        (
            "seq a string",
            telemetry(|v| sample0(v)["seq"] = json!("4711")),
            Some("invalid type: string \"4711\", expected u64"),
        ),
        (
            "seq negative",
            telemetry(|v| sample0(v)["seq"] = json!(-1)),
            Some("expected u64"),
        ),
        (
            "seq a fraction",
            telemetry(|v| sample0(v)["seq"] = json!(1.5)),
            Some("expected u64"),
        ),
        (
            "ts missing",
            telemetry(|v| drop(sample0(v).remove("ts"))),
            Some("missing field `ts`"),
        ),
        (
            "ts before 1970",
            telemetry(|v| sample0(v)["ts"] = json!(-5)),
            Some("record seq 4711: ts -5 is before 1970"),
        ),
        (
            "historical missing",
            telemetry(|v| drop(sample0(v).remove("historical"))),
            Some("missing field `historical`"),
        ),
        (
            "historical a string",
            telemetry(|v| sample0(v)["historical"] = json!("no")),
            Some("expected a boolean"),
        ),
        (
            "clock unknown",
            telemetry(|v| sample0(v)["clock"] = json!("maybe")),
            Some("unknown variant `maybe`"),
        ),
        (
            "values missing",
            telemetry(|v| drop(sample0(v).remove("values"))),
            Some("missing field `values`"),
        ),
        (
            "a value an array",
            telemetry(|v| sample0(v)["values"]["ups.load"] = json!([1, 2])),
            Some("expected a number, a boolean or a string"),
        ),
        (
            "a value null",
            telemetry(|v| sample0(v)["values"]["ups.load"] = json!(null)),
            Some("expected a number, a boolean or a string"),
        ),
        (
            "a bad value name",
            telemetry(|v| sample0(v)["values"]["x.<img src=x>"] = json!(1)),
            Some("record seq 4711: value name \"x.<img src=x>\""),
        ),
        // Not an envelope at all.
        ("empty payload", Vec::new(), Some("EOF while parsing")),
        ("not JSON", b"OL 228.1".to_vec(), Some("expected value")),
        (
            "cut short",
            TELEMETRY_DOC.as_bytes()[..80].to_vec(),
            Some("EOF while parsing"),
        ),
        (
            "an array",
            b"[1,2]".to_vec(),
            Some("invalid type: sequence, expected an object"),
        ),
        (
            "a duplicate key",
            br#"{"site":"a","site":"b","device":"d","epoch":"0000000000000000","samples":[]}"#
                .to_vec(),
            Some("duplicate field `site`"),
        ),
        (
            "not UTF-8",
            b"{\"site\":\"\xff\"}".to_vec(),
            Some("invalid unicode"),
        ),
        // Deep nesting: an error, never a stack overflow.
        (
            "nested deep in a field skipped",
            format!(
                r#"{{"site":"s","device":"d","epoch":"0000000000000000","x":{}{}}}"#,
                "[".repeat(100_000),
                "]".repeat(100_000)
            )
            .into_bytes(),
            Some("missing field `samples`"),
        ),
        (
            "nested deep in a value",
            TELEMETRY_DOC
                .replace(
                    r#""ups.load": 22.6"#,
                    &format!(
                        r#""ups.load": {}{}"#,
                        "[".repeat(100_000),
                        "]".repeat(100_000)
                    ),
                )
                .into_bytes(),
            Some("recursion limit exceeded"),
        ),
    ]
}

/// Event payloads, as [`telemetry_cases`].
pub(crate) fn event_cases() -> Vec<(&'static str, Vec<u8>, Option<&'static str>)> {
    use serde_json::json;
    vec![
        ("docs example", EVENT_DOC.into(), None),
        (
            "severity unknown",
            event(|v| event0(v)["severity"] = json!("fatal")),
            Some("unknown variant `fatal`"),
        ),
        (
            "code with capitals",
            event(|v| event0(v)["code"] = json!("UPS.OnBattery")),
            Some("event seq 12: code \"UPS.OnBattery\""),
        ),
        (
            "code empty",
            event(|v| event0(v)["code"] = json!("")),
            Some("code \"\""),
        ),
        (
            "code missing",
            event(|v| drop(event0(v).remove("code"))),
            Some("missing field `code`"),
        ),
        (
            "message a number",
            event(|v| event0(v)["message"] = json!(3)),
            Some("expected a string"),
        ),
        (
            "seq missing",
            event(|v| drop(event0(v).remove("seq"))),
            Some("missing field `seq`"),
        ),
        (
            "epoch bad",
            event(|v| v["epoch"] = json!("zzzzzzzzzzzzzzzz")),
            Some("is not 16 lowercase hex digits"),
        ),
        (
            "samples instead of events",
            TELEMETRY_DOC.into(),
            Some("missing field `events`"),
        ),
    ]
}

#[test]
fn telemetry_table() {
    for (name, payload, want) in telemetry_cases() {
        let got = Telemetry::from_slice(&payload);
        match (want, got) {
            (None, Ok(_)) => {}
            (None, Err(e)) => panic!("{name}: {e}"),
            (Some(text), Ok(t)) => panic!("{name}: decoded {t:?}, wanted an error with {text:?}"),
            (Some(text), Err(e)) => {
                let e = e.to_string();
                assert!(e.contains(text), "{name}: {e:?} lacks {text:?}");
            }
        }
    }
}

#[test]
fn event_table() {
    for (name, payload, want) in event_cases() {
        let got = Events::from_slice(&payload);
        match (want, got) {
            (None, Ok(_)) => {}
            (None, Err(e)) => panic!("{name}: {e}"),
            (Some(text), Ok(t)) => panic!("{name}: decoded {t:?}, wanted an error with {text:?}"),
            (Some(text), Err(e)) => {
                let e = e.to_string();
                assert!(e.contains(text), "{name}: {e:?} lacks {text:?}");
            }
        }
    }
}

#[test]
fn errors_say_which_message() {
    let e = Telemetry::from_slice(b"{}").unwrap_err().to_string();
    assert!(e.starts_with("not a valid telemetry message: "), "{e}");
    let e = Events::from_slice(b"{}").unwrap_err().to_string();
    assert!(e.starts_with("not a valid event message: "), "{e}");
}

#[test]
fn fields_a_newer_gateway_adds_are_ignored() {
    use serde_json::json;
    let payload = telemetry(|v| {
        v["compression"] = json!("none");
        sample0(v).insert("boot".into(), json!("abc"));
    });
    let t = Telemetry::from_slice(&payload).unwrap();
    assert_eq!(t.records[0].record.seq, 4711);
    // An event without values (optional in the gateway's records).
    let e = Events::from_slice(&event(|v| drop(event0(v).remove("values")))).unwrap();
    assert!(e.records[0].record.values.is_empty());
}

#[test]
fn epochs() {
    for (s, n) in [
        ("0000000000000000", 0),
        ("00000000000000ab", 0xab),
        ("ffffffffffffffff", u64::MAX),
        ("5f3a9c0e12d4b7a1", 0x5f3a_9c0e_12d4_b7a1),
    ] {
        assert_eq!(s.parse::<Epoch>(), Ok(Epoch(n)));
        assert_eq!(Epoch(n).to_string(), s);
    }
    for bad in [
        "",
        "ab",
        "000000000000000g",
        "-000000000000001",
        " 000000000000001",
        "ÿÿÿÿÿÿÿÿ",
    ] {
        assert_eq!(bad.parse::<Epoch>(), Err(BadEpoch(bad.into())), "{bad}");
    }
}

#[test]
fn topics_and_payloads_must_agree() {
    let topic = Topic::parse("ioc", "ioc/phuong-tan-phong/ups1/telemetry").unwrap();
    let m = Message::decode(&topic, TELEMETRY_DOC.as_bytes()).unwrap();
    assert!(matches!(m, Message::Telemetry(ref t) if t.records[0].record.seq == 4711));

    let topic = Topic::parse("ioc", "ioc/phuong-tan-phong/ups1/event").unwrap();
    assert!(matches!(
        Message::decode(&topic, EVENT_DOC.as_bytes()),
        Ok(Message::Events(_))
    ));
    // Telemetry on an event topic: the array is not there.
    let e = Message::decode(&topic, TELEMETRY_DOC.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("missing field `events`"), "{e}");

    let topic = Topic::parse("ioc", "ioc/xa-b/ups1/telemetry").unwrap();
    let e = Message::decode(&topic, TELEMETRY_DOC.as_bytes()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the topic's site is \"xa-b\", the payload's \"phuong-tan-phong\""
    );
    let topic = Topic::parse("ioc", "ioc/phuong-tan-phong/ups2/telemetry").unwrap();
    assert!(matches!(
        Message::decode(&topic, TELEMETRY_DOC.as_bytes()),
        Err(DecodeError::TopicMismatch {
            field: "device",
            ..
        })
    ));
    let t = Telemetry::from_slice(TELEMETRY_DOC.as_bytes()).unwrap();
    let status = Topic::parse("ioc", "ioc/phuong-tan-phong/status").unwrap();
    assert!(matches!(
        t.check_topic(&status),
        Err(DecodeError::WrongTopic { want: "telemetry" })
    ));
    for (topic, what) in [
        ("ioc/s/inventory", "inventory"),
        ("ioc/s/cmd/poll/c1", "command request"),
        ("ioc/s/cmd/poll/c1/reply", "command reply"),
    ] {
        let t = Topic::parse("ioc", topic).unwrap();
        assert!(
            matches!(Message::decode(&t, b"{}"), Err(DecodeError::Untyped(w)) if w == what),
            "{topic}"
        );
    }
}

/// Status payloads: `Ok(status)` or `Err(text in the error)`.
pub(crate) fn status_cases() -> Vec<(&'static str, &'static [u8], Result<Status, &'static str>)> {
    let online = Status::Online {
        version: "0.1.0".into(),
        boot_id: "b".into(),
        run_id: "r".into(),
        started: 1_795_832_190_037,
    };
    vec![
        (
            "online",
            br#"{"state":"online","version":"0.1.0","boot_id":"b","run_id":"r","started":1795832190037}"#,
            Ok(online),
        ),
        (
            "last will",
            br#"{"state":"offline","reason":"lost"}"#,
            Ok(Status::Offline {
                reason: OfflineReason::Lost,
            }),
        ),
        (
            "clean stop",
            br#"{"state":"offline","reason":"shutdown"}"#,
            Ok(Status::Offline {
                reason: OfflineReason::Shutdown,
            }),
        ),
        (
            "power",
            br#"{"state":"offline","reason":"power"}"#,
            Ok(Status::Offline {
                reason: OfflineReason::Power,
            }),
        ),
        (
            "an unknown state",
            br#"{"state":"sleeping"}"#,
            Err("unknown variant `sleeping`"),
        ),
        (
            "no state",
            br#"{"reason":"lost"}"#,
            Err("missing field `state`"),
        ),
        (
            "online without run_id",
            br#"{"state":"online","version":"0.1.0","boot_id":"b","started":1}"#,
            Err("missing field `run_id`"),
        ),
        (
            "started a string",
            br#"{"state":"online","version":"0.1.0","boot_id":"b","run_id":"r","started":"1"}"#,
            Err("expected i64"),
        ),
        (
            "offline without reason",
            br#"{"state":"offline"}"#,
            Err("missing field `reason`"),
        ),
        ("empty", b"", Err("EOF while parsing")),
    ]
}

#[test]
fn status_table() {
    for (name, payload, want) in status_cases() {
        match (Status::from_slice(payload), want) {
            (Ok(got), Ok(want)) => {
                assert_eq!(got, want, "{name}");
                // And back to the same bytes.
                assert_eq!(got.to_vec(), payload, "{name}");
            }
            (Err(e), Err(text)) => {
                let e = e.to_string();
                assert!(e.starts_with("not a valid status message: "), "{name}: {e}");
                assert!(e.contains(text), "{name}: {e:?} lacks {text:?}");
            }
            (got, want) => panic!("{name}: {got:?}, wanted {want:?}"),
        }
    }
}

#[test]
fn an_unknown_offline_reason_is_offline_all_the_same() {
    let s = Status::from_slice(br#"{"state":"offline","reason":"flood"}"#).unwrap();
    assert_eq!(
        s,
        Status::Offline {
            reason: OfflineReason::Other("flood".into())
        }
    );
    assert_eq!(s.to_vec(), br#"{"state":"offline","reason":"flood"}"#);
    for r in ["lost", "shutdown", "power", "flood"] {
        assert_eq!(OfflineReason::from(r).as_str(), r);
    }
}

#[test]
fn record_accessors() {
    let mut s = Sample {
        seq: 3,
        ts: 10,
        clock: ClockState::Unsynced,
        values: Values::new(),
    };
    assert_eq!((s.seq(), s.ts(), s.clock()), (3, 10, ClockState::Unsynced));
    s.retime(20, ClockState::Corrected);
    assert_eq!((s.ts, s.clock), (20, ClockState::Corrected));
    assert_eq!(<Sample as Record>::KIND, Kind::Sample);
    assert_eq!(<Event as Record>::KIND, Kind::Event);
}
