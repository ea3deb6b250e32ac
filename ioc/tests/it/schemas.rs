//! Every payload the load generator makes is valid per the contract's JSON
//! Schemas (docs/schema/, read through the contract crate).

use serde_json::Value as Json;
use wardgate_contract::{schema, Topic};
use wardgate_ioc::loadgen::{generate, LoadConfig};

fn validator(text: &str) -> jsonschema::Validator {
    let json: Json = serde_json::from_str(text).expect("schema is JSON");
    jsonschema::validator_for(&json).expect("schema compiles")
}

#[test]
fn generated_payloads_match_the_schemas() {
    let telemetry = validator(schema::TELEMETRY);
    let event = validator(schema::EVENT);
    let status = validator(schema::STATUS);
    let traffic = generate(&LoadConfig {
        sites: 40,
        seed: 3,
        ..LoadConfig::default()
    })
    .expect("a valid config");
    for w in &traffic.messages {
        let v: Json = serde_json::from_slice(&w.payload).expect("JSON");
        let s = match Topic::parse("ioc", &w.topic).expect("a contract topic") {
            Topic::Data { kind, .. } if kind.topic_leaf() == "telemetry" => &telemetry,
            Topic::Data { .. } => &event,
            Topic::Status { .. } => &status,
            other => panic!("unexpected topic {other:?}"),
        };
        let first_error = s.iter_errors(&v).next().map(|e| e.to_string());
        if let Some(e) = first_error {
            panic!("{}: {e}: {}", w.topic, String::from_utf8_lossy(&w.payload));
        }
    }
}
