//! Payload encoders and the MQTT sink's size arithmetic: pure functions, no
//! I/O.
//!
//! The contract is written up in `docs/mqtt.md`, with JSON Schemas in
//! `docs/schema/`; its types, topics and decoders are the contract crate's
//! (`wardgate_contract`), which the operations centre's consumer builds
//! from. What is here is the gateway's own side: [`encode_batch`] splices
//! the spool's stored record bodies into an envelope without re-encoding
//! them, and its tests decode what it makes with the contract's decoder.

use wardgate_contract::{Epoch, OfflineReason, Status};

use crate::spool::Batch;

pub(crate) use wardgate_contract::topic::{data_topic, status_topic};

/// Whether `device` may be a topic level: `^[a-z0-9][a-z0-9_-]{0,63}$`, so
/// never `#`, `+` or `/` (a record whose device is not is set aside, never
/// published: rumqttc refuses such a topic). The one pattern the spool
/// also checks rows read back against ([`crate::spool::valid_device_id`]).
pub(crate) fn valid_device(device: &str) -> bool {
    crate::spool::valid_device_id(device)
}

/// The size on the wire of a QoS 1 PUBLISH of `payload_len` bytes on `topic`
/// (fixed header, topic, packet id, payload), as rumqttc counts it against
/// its outgoing packet limit.
pub(crate) fn publish_packet_size(topic: &str, payload_len: usize) -> usize {
    let remaining = 2 + topic.len() + 2 + payload_len;
    let len_len = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + len_len + remaining
}

/// `{"site":…,"device":…,"epoch":…,"samples":[…]}` (or `"events"`), each
/// record with its `historical` flag; `epoch` is the sequence epoch as 16
/// lowercase hex digits. The stored bodies are JSON objects; the flag is
/// spliced in front of their first key rather than re-encoding each record.
pub(crate) fn encode_batch(site: &str, batch: &Batch, epoch: u64) -> Vec<u8> {
    let body_len: usize = batch.bodies.iter().map(|b| b.len() + 20).sum();
    let mut out = Vec::with_capacity(body_len + 96 + site.len() + batch.device.len());
    out.extend_from_slice(b"{\"site\":");
    push_json_str(&mut out, site);
    out.extend_from_slice(b",\"device\":");
    push_json_str(&mut out, &batch.device);
    out.extend_from_slice(format!(",\"epoch\":\"{}\"", Epoch(epoch)).as_bytes());
    out.extend_from_slice(b",\"");
    out.extend_from_slice(batch.kind.array_name().as_bytes());
    out.extend_from_slice(b"\":[");
    let flag: &[u8] = if batch.historical {
        b"{\"historical\":true"
    } else {
        b"{\"historical\":false"
    };
    for (i, body) in batch.bodies.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(flag);
        // `body` is `{…}` with at least one key (seq), so `,` + the rest.
        let rest = body.strip_prefix('{').unwrap_or(body);
        out.push(b',');
        out.extend_from_slice(rest.as_bytes());
    }
    out.extend_from_slice(b"]}");
    out
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json cannot fail on a &str.
    if let Ok(v) = serde_json::to_vec(s) {
        out.extend_from_slice(&v);
    }
}

/// The retained birth message.
pub(crate) fn status_online(
    version: &str,
    boot_id: &str,
    run_id: &str,
    started_ms: i64,
) -> Vec<u8> {
    Status::Online {
        version: version.to_owned(),
        boot_id: boot_id.to_owned(),
        run_id: run_id.to_owned(),
        started: started_ms,
    }
    .to_vec()
}

/// The retained offline message: `lost` (the last will), `shutdown` or
/// `power`.
pub(crate) fn status_offline(reason: &str) -> Vec<u8> {
    Status::Offline {
        reason: OfflineReason::from(reason),
    }
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::model::{ClockState, Event, Kind, Sample, Severity, Values};
    use wardgate_contract::{schema, Delivered, Envelope, Events, Record, Telemetry};

    fn batch(kind: Kind, historical: bool, bodies: &[&str]) -> Batch {
        Batch {
            id: 1,
            kind,
            device: Arc::from("ups1"),
            epoch: 0,
            first_seq: 0,
            historical,
            bodies: bodies.iter().map(|b| Arc::from(*b)).collect(),
        }
    }

    #[test]
    fn telemetry_batch() {
        let b = batch(
            Kind::Sample,
            true,
            &[
                r#"{"seq":1,"ts":5,"clock":"synced","values":{"a":1.0}}"#,
                r#"{"seq":2,"ts":6,"clock":"synced","values":{}}"#,
            ],
        );
        let out = String::from_utf8(encode_batch("xa-a", &b, 0)).unwrap();
        assert_eq!(
            out,
            r#"{"site":"xa-a","device":"ups1","epoch":"0000000000000000","samples":[{"historical":true,"seq":1,"ts":5,"clock":"synced","values":{"a":1.0}},{"historical":true,"seq":2,"ts":6,"clock":"synced","values":{}}]}"#
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["samples"][1]["seq"], 2);
    }

    #[test]
    fn live_event() {
        let b = batch(Kind::Event, false, &[r#"{"seq":0,"code":"x"}"#]);
        let v: serde_json::Value = serde_json::from_slice(&encode_batch("s", &b, 0)).unwrap();
        assert_eq!(v["events"][0]["historical"], false);
        assert_eq!(v["events"][0]["code"], "x");
    }

    #[test]
    fn epoch_is_16_hex_digits_after_device() {
        let b = batch(Kind::Event, false, &[r#"{"seq":0,"code":"x"}"#]);
        let out = String::from_utf8(encode_batch("s", &b, 0x1f2e_3d4c_5b6a_7988)).unwrap();
        assert!(
            out.starts_with(r#"{"site":"s","device":"ups1","epoch":"1f2e3d4c5b6a7988","events":["#),
            "{out}"
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["epoch"], "1f2e3d4c5b6a7988");
        let small = String::from_utf8(encode_batch("s", &b, 0xab)).unwrap();
        assert!(small.contains(r#""epoch":"00000000000000ab""#), "{small}");
        let max = String::from_utf8(encode_batch("s", &b, u64::MAX)).unwrap();
        assert!(max.contains(r#""epoch":"ffffffffffffffff""#), "{max}");
    }

    #[test]
    fn device_ids_that_may_be_topic_levels() {
        for ok in ["ups1", "0", "env-1_a", &"a".repeat(64)] {
            assert!(valid_device(ok), "{ok}");
        }
        for bad in [
            "",
            "ups#1",
            "ups+",
            "a/b",
            "Ups1",
            "-a",
            "_a",
            "ưps",
            &"a".repeat(65),
            "a b",
        ] {
            assert!(!valid_device(bad), "{bad}");
        }
    }

    #[test]
    fn packet_size_matches_rumqttc() {
        use rumqttc::mqttbytes::v4::Publish;
        for n in [0usize, 10, 120, 127, 200, 16_000, 16_400, 2_100_000] {
            let topic = "ioc/site/ups1/telemetry";
            let mut p = Publish::new(topic, rumqttc::QoS::AtLeastOnce, vec![b'x'; n]);
            p.pkid = 1;
            assert_eq!(publish_packet_size(topic, n), p.size(), "payload {n}");
        }
    }

    #[test]
    fn topics_and_status() {
        assert_eq!(
            data_topic("ioc", "s", "ups1", Kind::Sample),
            "ioc/s/ups1/telemetry"
        );
        assert_eq!(
            data_topic("ioc", "s", "ups1", Kind::Event),
            "ioc/s/ups1/event"
        );
        assert_eq!(status_topic("ioc", "s"), "ioc/s/status");
        assert_eq!(
            status_offline("lost"),
            br#"{"state":"offline","reason":"lost"}"#.to_vec()
        );
        let v: serde_json::Value =
            serde_json::from_slice(&status_online("0.1.0", "b", "r", 9)).unwrap();
        assert_eq!(v["state"], "online");
        assert_eq!(v["started"], 9);
    }
    /// Records as the spool stores them: each body is the record's JSON
    /// (src/spool/queue/seq.rs), with the clock states, value types and strings
    /// that need escaping.
    fn samples() -> Vec<Sample> {
        let mut v = Values::new();
        v.num("battery.charge", 100.0);
        v.num("input.voltage", 228.1);
        v.num("ups.load", -0.5e-3);
        v.set("ups.status", "OL CHRG");
        v.set("door.open", false);
        v.set("note", "\"quoted\"\n\\ Điện áp vào \u{1}");
        vec![
            Sample {
                seq: 0,
                ts: 1_795_832_190_039,
                clock: ClockState::Synced,
                values: v.clone(),
            },
            Sample {
                seq: 1,
                ts: 0,
                clock: ClockState::Unsynced,
                values: Values::new(),
            },
            Sample {
                seq: u64::MAX,
                ts: i64::MAX,
                clock: ClockState::Corrected,
                values: v,
            },
        ]
    }

    fn events() -> Vec<Event> {
        let mut v = Values::new();
        v.set("ups.status", "OB");
        v.set("message.vi", "Mất điện lưới");
        vec![
            Event {
                seq: 12,
                ts: 1_795_832_201_040,
                clock: ClockState::Synced,
                severity: Severity::Critical,
                code: "ups.on_battery".into(),
                message: "UPS on battery: mains power lost".into(),
                values: v,
            },
            Event {
                seq: 13,
                ts: 1_795_832_201_041,
                clock: ClockState::Unsynced,
                severity: Severity::Info,
                code: "device.restored".into(),
                message: "ups1: readings again (\"ok\")".into(),
                values: Values::new(),
            },
        ]
    }

    fn stored<R: serde::Serialize>(kind: Kind, historical: bool, records: &[R]) -> Batch {
        let bodies: Vec<String> = records
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
        batch(kind, historical, &refs)
    }

    /// What the gateway encodes, the contract decodes into the same records,
    /// byte for byte what the contract's own encoder writes, and valid per
    /// the JSON Schema.
    fn round_trip<R: Record + std::fmt::Debug>(records: Vec<R>, kind: Kind) {
        let validator = {
            let v: serde_json::Value = serde_json::from_str(schema::for_kind(kind)).unwrap();
            jsonschema::validator_for(&v).unwrap()
        };
        for historical in [false, true] {
            for epoch in [0, 0xab, 0x5f3a_9c0e_12d4_b7a1, u64::MAX] {
                for n in 1..=records.len() {
                    let b = stored(kind, historical, &records[..n]);
                    let out = encode_batch("phuong-tan-phong", &b, epoch);
                    let env = Envelope::<R>::from_slice(&out)
                        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
                    let want = Envelope {
                        site: "phuong-tan-phong".to_owned(),
                        device: "ups1".to_owned(),
                        epoch: wardgate_contract::Epoch(epoch),
                        records: records[..n]
                            .iter()
                            .map(|r| Delivered {
                                historical,
                                record: r.clone(),
                            })
                            .collect(),
                    };
                    assert_eq!(env, want);
                    assert_eq!(
                        String::from_utf8(out.clone()).unwrap(),
                        String::from_utf8(want.to_vec()).unwrap()
                    );
                    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
                    let errors: Vec<String> = validator
                        .iter_errors(&json)
                        .map(|e| e.to_string())
                        .collect();
                    assert!(errors.is_empty(), "{errors:?}");
                }
            }
        }
    }

    #[test]
    fn encoded_telemetry_decodes_with_the_contract() {
        round_trip::<Sample>(samples(), Kind::Sample);
        // The docs' telemetry example, type for type.
        let t = Telemetry::from_slice(&encode_batch(
            "xa-a",
            &stored(Kind::Sample, false, &samples()[..1]),
            7,
        ))
        .unwrap();
        assert_eq!(t.stream_key().epoch, wardgate_contract::Epoch(7));
    }

    #[test]
    fn encoded_events_decode_with_the_contract() {
        round_trip::<Event>(events(), Kind::Event);
        let e = Events::from_slice(&encode_batch(
            "xa-a",
            &stored(Kind::Event, true, &events()),
            1,
        ))
        .unwrap();
        assert!(e.records.iter().all(|d| d.historical));
    }

    #[test]
    fn status_messages_decode_with_the_contract() {
        use wardgate_contract::{OfflineReason, Status};
        let validator = {
            let v: serde_json::Value = serde_json::from_str(schema::STATUS).unwrap();
            jsonschema::validator_for(&v).unwrap()
        };
        let online = status_online("0.1.0", "boot", "run", 1_795_832_190_037);
        assert_eq!(
            Status::from_slice(&online).unwrap(),
            Status::Online {
                version: "0.1.0".into(),
                boot_id: "boot".into(),
                run_id: "run".into(),
                started: 1_795_832_190_037,
            }
        );
        assert!(validator.is_valid(&serde_json::from_slice(&online).unwrap()));
        for (reason, want) in [
            ("lost", OfflineReason::Lost),
            ("shutdown", OfflineReason::Shutdown),
            ("power", OfflineReason::Power),
        ] {
            let off = status_offline(reason);
            assert_eq!(
                Status::from_slice(&off).unwrap(),
                Status::Offline { reason: want }
            );
            assert!(validator.is_valid(&serde_json::from_slice(&off).unwrap()));
        }
    }
}
