//! Topic names and payload encoders: pure functions, no I/O.
//!
//! The contract is written up in `docs/mqtt.md`, with JSON Schemas in
//! `docs/schema/`.

use serde::Serialize;

use crate::model::Kind;
use crate::spool::Batch;

/// `{prefix}/{site}/{device}/telemetry` or `.../event`.
pub fn data_topic(prefix: &str, site: &str, device: &str, kind: Kind) -> String {
    format!("{prefix}/{site}/{device}/{}", kind.topic_leaf())
}

/// `{prefix}/{site}/status`: retained birth and last will.
pub fn status_topic(prefix: &str, site: &str) -> String {
    format!("{prefix}/{site}/status")
}

/// Whether `device` may be a topic level: `^[a-z0-9][a-z0-9_-]{0,63}$`, so
/// never `#`, `+` or `/` (a record whose device is not is set aside, never
/// published: rumqttc refuses such a topic). The one pattern the spool
/// also checks rows read back against ([`crate::spool::valid_device_id`]).
pub fn valid_device(device: &str) -> bool {
    crate::spool::valid_device_id(device)
}

/// The size on the wire of a QoS 1 PUBLISH of `payload_len` bytes on `topic`
/// (fixed header, topic, packet id, payload), as rumqttc counts it against
/// its outgoing packet limit.
pub fn publish_packet_size(topic: &str, payload_len: usize) -> usize {
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
pub fn encode_batch(site: &str, batch: &Batch, epoch: u64) -> Vec<u8> {
    let body_len: usize = batch.bodies.iter().map(|b| b.len() + 20).sum();
    let mut out = Vec::with_capacity(body_len + 96 + site.len() + batch.device.len());
    out.extend_from_slice(b"{\"site\":");
    push_json_str(&mut out, site);
    out.extend_from_slice(b",\"device\":");
    push_json_str(&mut out, &batch.device);
    out.extend_from_slice(format!(",\"epoch\":\"{epoch:016x}\"").as_bytes());
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

#[derive(Debug, Serialize)]
struct Online<'a> {
    state: &'static str,
    version: &'a str,
    boot_id: &'a str,
    run_id: &'a str,
    started: i64,
}

#[derive(Debug, Serialize)]
struct Offline<'a> {
    state: &'static str,
    reason: &'a str,
}

/// The retained birth message.
pub fn status_online(version: &str, boot_id: &str, run_id: &str, started_ms: i64) -> Vec<u8> {
    serde_json::to_vec(&Online {
        state: "online",
        version,
        boot_id,
        run_id,
        started: started_ms,
    })
    .unwrap_or_default()
}

/// The retained offline message: `lost` (the last will) or `shutdown`.
pub fn status_offline(reason: &str) -> Vec<u8> {
    serde_json::to_vec(&Offline {
        state: "offline",
        reason,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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
}
