use std::collections::BTreeSet;

use serde_json::Value as Json;

use super::*;
use crate::envelope::tests::{
    event_cases, status_cases, telemetry_cases, EVENT_DOC, TELEMETRY_DOC,
};
use crate::{
    ClockState, Delivered, Envelope, Epoch, Event, Events, Sample, Severity, Status, Telemetry,
    Values,
};

fn json(text: &str) -> Json {
    serde_json::from_str(text).expect("schema is JSON")
}

fn validator(text: &str) -> jsonschema::Validator {
    jsonschema::validator_for(&json(text)).expect("schema compiles")
}

/// Whether `payload` is valid per `schema`: bytes that are not JSON are not.
fn valid(schema: &jsonschema::Validator, payload: &[u8]) -> bool {
    serde_json::from_slice::<Json>(payload).is_ok_and(|v| schema.is_valid(&v))
}

fn keys(v: &Json) -> BTreeSet<String> {
    v.as_object().expect("an object").keys().cloned().collect()
}

fn strings(v: &Json) -> BTreeSet<String> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

#[test]
fn every_file_in_docs_schema_is_here_and_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schema");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("docs/schema")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    let here: BTreeSet<String> = ALL.iter().map(|(n, _)| (*n).to_owned()).collect();
    assert_eq!(
        here, on_disk,
        "schema::ALL must list every file of docs/schema/"
    );
    for (name, text) in ALL {
        let v = json(text);
        assert_eq!(
            v["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{name}"
        );
        assert_eq!(v["$id"], format!("wardgate/{name}"), "{name}");
        assert_eq!(
            std::fs::read_to_string(dir.join(name)).expect("schema file"),
            text,
            "{name}"
        );
        validator(text);
    }
    assert_eq!(for_kind(crate::Kind::Sample), TELEMETRY);
    assert_eq!(for_kind(crate::Kind::Event), EVENT);
}

fn sample(seq: u64) -> Sample {
    let mut values = Values::new();
    values.num("battery.charge", 97.0);
    values.set("ups.status", "OL");
    values.set("door.open", false);
    Sample {
        seq,
        ts: 1_795_832_190_039,
        clock: ClockState::Synced,
        values,
    }
}

fn event(seq: u64) -> Event {
    let mut values = Values::new();
    values.set("ups.status", "OB");
    Event {
        seq,
        ts: 1_795_832_201_040,
        clock: ClockState::Unsynced,
        severity: Severity::Critical,
        code: "ups.on_battery".into(),
        message: "UPS on battery: mains power lost".into(),
        values,
    }
}

fn envelope<R>(records: Vec<R>) -> Envelope<R> {
    Envelope {
        site: "phuong-tan-phong".into(),
        device: "ups1".into(),
        epoch: Epoch(0x5f3a_9c0e_12d4_b7a1),
        records: records
            .into_iter()
            .map(|record| Delivered {
                historical: true,
                record,
            })
            .collect(),
    }
}

/// The schemas name exactly the fields the typed envelope writes, all of
/// them required.
#[test]
fn schemas_name_the_typed_fields() {
    for (schema, payload, array, def) in [
        (
            TELEMETRY,
            envelope(vec![sample(1)]).to_vec(),
            "samples",
            "sample",
        ),
        (EVENT, envelope(vec![event(1)]).to_vec(), "events", "event"),
    ] {
        let s = json(schema);
        let p: Json = serde_json::from_slice(&payload).unwrap();
        assert_eq!(keys(&s["properties"]), keys(&p), "{array}");
        assert_eq!(strings(&s["required"]), keys(&p), "{array}");
        assert_eq!(s["additionalProperties"], false);
        let rec = &s["$defs"][def];
        assert_eq!(keys(&rec["properties"]), keys(&p[array][0]), "{def}");
        assert_eq!(strings(&rec["required"]), keys(&p[array][0]), "{def}");
    }
    // Status: one branch per state, each naming the typed fields.
    let s = json(STATUS);
    let online = Status::Online {
        version: "0.1.0".into(),
        boot_id: "b".into(),
        run_id: "r".into(),
        started: 1,
    };
    let offline = Status::Offline {
        reason: crate::OfflineReason::Lost,
    };
    for (i, st) in [online, offline].iter().enumerate() {
        let p: Json = serde_json::from_slice(&st.to_vec()).unwrap();
        let branch = &s["oneOf"][i];
        assert_eq!(keys(&branch["properties"]), keys(&p), "{st:?}");
        assert_eq!(strings(&branch["required"]), keys(&p), "{st:?}");
    }
}

/// What the typed envelope writes is valid per the schema.
#[test]
fn typed_messages_validate() {
    let t = validator(TELEMETRY);
    let e = validator(EVENT);
    let s = validator(STATUS);
    let many: Telemetry = envelope((0..100).map(sample).collect());
    assert!(t.is_valid(&serde_json::from_slice(&many.to_vec()).unwrap()));
    let mut live = envelope(vec![sample(4711)]);
    live.records[0].historical = false;
    live.records[0].record.clock = ClockState::Corrected;
    live.records[0].record.values = Values::new();
    assert!(t.is_valid(&serde_json::from_slice(&live.to_vec()).unwrap()));
    let ev: Events = envelope(vec![event(0), event(1)]);
    assert!(e.is_valid(&serde_json::from_slice(&ev.to_vec()).unwrap()));
    // And what they decode from the docs' examples writes back valid.
    let doc = Telemetry::from_slice(TELEMETRY_DOC.as_bytes()).unwrap();
    assert!(t.is_valid(&serde_json::from_slice(&doc.to_vec()).unwrap()));
    let doc = Events::from_slice(EVENT_DOC.as_bytes()).unwrap();
    assert!(e.is_valid(&serde_json::from_slice(&doc.to_vec()).unwrap()));
    for reason in ["lost", "shutdown", "power"] {
        let st = Status::Offline {
            reason: reason.into(),
        };
        assert!(s.is_valid(&serde_json::from_slice(&st.to_vec()).unwrap()));
    }
}

/// The decoder and the schema agree on every payload of the decoder's
/// tables. (They differ, on purpose, only where the contract lets a newer
/// gateway add: the decoder ignores fields it does not know and keeps an
/// unknown offline reason, which the schemas of this version refuse.)
#[test]
fn decoder_and_schema_agree() {
    let t = validator(TELEMETRY);
    for (name, payload, want) in telemetry_cases() {
        assert_eq!(valid(&t, &payload), want.is_none(), "telemetry: {name}");
        assert_eq!(
            Telemetry::from_slice(&payload).is_ok(),
            want.is_none(),
            "telemetry: {name}"
        );
    }
    let e = validator(EVENT);
    for (name, payload, want) in event_cases() {
        assert_eq!(valid(&e, &payload), want.is_none(), "event: {name}");
        assert_eq!(
            Events::from_slice(&payload).is_ok(),
            want.is_none(),
            "event: {name}"
        );
    }
    let s = validator(STATUS);
    for (name, payload, want) in status_cases() {
        assert_eq!(valid(&s, payload), want.is_ok(), "status: {name}");
    }
    assert!(!valid(&s, br#"{"state":"offline","reason":"flood"}"#));
    assert!(Status::from_slice(br#"{"state":"offline","reason":"flood"}"#).is_ok());
}
