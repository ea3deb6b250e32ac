//! The MQTT contract as the tests check it: the JSON Schemas in
//! docs/schema/, and the envelope (the topic's shape, `site` and `device`
//! in the payload, the retain flag).

use std::path::Path;

use serde_json::Value;

fn schema(name: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/schema")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("schema file");
    let v: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::validator_for(&v).expect("schema compiles")
}

pub struct Schemas {
    telemetry: jsonschema::Validator,
    event: jsonschema::Validator,
    status: jsonschema::Validator,
    inventory: jsonschema::Validator,
    reply: jsonschema::Validator,
}

/// A command request topic, `{prefix}/{site}/cmd/{op}/{id}`: published by
/// the operations centre (tests send malformed ones on purpose), so not
/// checked as the gateway's output.
pub fn is_request_topic(topic: &str) -> bool {
    let parts: Vec<&str> = topic.split('/').collect();
    parts.len() == 5 && parts[2] == "cmd"
}

impl Schemas {
    pub fn load() -> Schemas {
        Schemas {
            telemetry: schema("telemetry.schema.json"),
            event: schema("event.schema.json"),
            status: schema("status.schema.json"),
            inventory: schema("inventory.schema.json"),
            reply: schema("command-reply.schema.json"),
        }
    }

    /// Problems with one message, if any.
    pub fn check(&self, topic: &str, body: &Value) -> Option<String> {
        let v = if topic.ends_with("/telemetry") {
            &self.telemetry
        } else if topic.ends_with("/event") {
            &self.event
        } else if topic.ends_with("/status") {
            &self.status
        } else if topic.ends_with("/inventory") {
            &self.inventory
        } else if topic.ends_with("/reply") {
            &self.reply
        } else {
            return Some(format!("{topic}: not a topic of the contract"));
        };
        let errs: Vec<String> = v.iter_errors(body).map(|e| e.to_string()).collect();
        (!errs.is_empty()).then(|| format!("{topic}: {body}: {}", errs.join("; ")))
    }
}

/// What is wrong with a message received on `topic` for `site`, beyond its
/// schema: the topic's shape, the payload's `site` and `device` against the
/// topic, and, when `retain` (the flag as published) is given, the retain
/// flag.
pub fn check_envelope(
    prefix: &str,
    site: &str,
    topic: &str,
    retain: Option<bool>,
    body: &Value,
) -> Vec<String> {
    let mut bad = Vec::new();
    let id_ok = |s: &str| {
        s.chars()
            .next()
            .is_some_and(|f| f.is_ascii_lowercase() || f.is_ascii_digit())
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    };
    let parts: Vec<&str> = topic.split('/').collect();
    match parts.as_slice() {
        [p, s, "status"] if *p == prefix => {
            if *s != site {
                bad.push(format!("{topic}: site {s}, expected {site}"));
            }
            if retain == Some(false) {
                bad.push(format!("{topic}: status not retained"));
            }
        }
        [p, s, "inventory"] if *p == prefix => {
            if *s != site || body["site"] != *s {
                bad.push(format!(
                    "{topic}: site {s} / payload site {}, expected {site}",
                    body["site"]
                ));
            }
            if retain == Some(false) {
                bad.push(format!("{topic}: inventory not retained"));
            }
        }
        [p, s, "cmd", _, _] if *p == prefix && *s == site => {}
        [p, s, "cmd", op, id, "reply"] if *p == prefix => {
            if *s != site {
                bad.push(format!("{topic}: site {s}, expected {site}"));
            }
            if body["op"] != *op || body["id"] != *id {
                bad.push(format!(
                    "{topic}: payload op/id {}/{} differ",
                    body["op"], body["id"]
                ));
            }
            if retain == Some(true) {
                bad.push(format!("{topic}: a reply was retained"));
            }
        }
        [p, s, device, kind] if *p == prefix && (*kind == "telemetry" || *kind == "event") => {
            if *s != site {
                bad.push(format!("{topic}: site {s}, expected {site}"));
            }
            if !id_ok(s) || !id_ok(device) {
                bad.push(format!("{topic}: site or device is not an id"));
            }
            if body["site"] != *s {
                bad.push(format!("{topic}: payload site {} differs", body["site"]));
            }
            if body["device"] != *device {
                bad.push(format!(
                    "{topic}: payload device {} differs",
                    body["device"]
                ));
            }
            if retain == Some(true) {
                bad.push(format!("{topic}: a data message was retained"));
            }
        }
        _ => bad.push(format!("{topic}: not a topic of the contract")),
    }
    bad
}
