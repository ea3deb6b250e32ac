//! The gateway's own InfluxDB line protocol (docs/influxdb.md, "Mapping";
//! the gateway's `src/sink/influx/line.rs`), from the contract's decoded
//! records: pure functions, no I/O.
//!
//! - a sample: measurement `telemetry`, tags `device`, `site`, `type` (the
//!   device's kind from the site's inventory; `gateway` for the gateway),
//!   one field per value and the integer field `seq`;
//! - an event: measurement `event`, tags `code`, `device`, `severity`,
//!   `site`, fields `message` and `seq`;
//! - the timestamp is the record's `ts` in milliseconds (`precision=ms`).
//!
//! The gateway crate's encoder reads its spool rows and is private to it,
//! so it is written again here from the same rules; the tests below are
//! the gateway encoder's own cases, with the same expected lines, and the
//! end-to-end test (`ioc/tests/it/ingest_gateway.rs`) compares what both
//! wrote into VictoriaMetrics.

use std::fmt::Write as _;

use wardgate_contract::{Event, Sample, Severity, Value};

/// A sample as a line (no trailing newline); `ts` is the time to write
/// (the record's, or its corrected time).
pub fn sample(site: &str, device: &str, device_type: &str, s: &Sample, ts: i64) -> String {
    let mut out = String::with_capacity(64 + 32 * s.values.0.len());
    out.push_str("telemetry,");
    tag(&mut out, "device", device);
    out.push(',');
    tag(&mut out, "site", site);
    out.push(',');
    tag(&mut out, "type", device_type);
    out.push(' ');
    for (name, v) in &s.values.0 {
        // `seq` is written last and wins (docs/influxdb.md).
        if name == "seq" {
            continue;
        }
        key(&mut out, name);
        out.push('=');
        match v {
            Value::Num(n) if n.is_finite() => {
                let _ = write!(out, "{n:?}");
            }
            Value::Num(_) => out.push_str("0.0"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Str(st) => string(&mut out, st),
        }
        out.push(',');
    }
    let _ = write!(out, "seq={}i {}", s.seq, ts);
    out
}

/// An event as a line (no trailing newline).
pub fn event(site: &str, device: &str, e: &Event, ts: i64) -> String {
    let mut out = String::with_capacity(96 + e.message.len());
    out.push_str("event,");
    tag(&mut out, "code", &e.code);
    out.push(',');
    tag(&mut out, "device", device);
    out.push(',');
    let sev = match e.severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    };
    tag(&mut out, "severity", sev);
    out.push(',');
    tag(&mut out, "site", site);
    out.push_str(" message=");
    string(&mut out, &e.message);
    let _ = write!(out, ",seq={}i {}", e.seq, ts);
    out
}

/// `name=value` of a tag; an empty value is written `-`.
fn tag(out: &mut String, name: &str, value: &str) {
    key(out, name);
    out.push('=');
    if value.is_empty() {
        out.push('-');
    }
    key(out, value);
}

/// Tag keys, tag values and field keys escape comma, equals and space.
fn key(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            ',' | '=' | ' ' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' | '\t' => out.push(' '),
            '\\' => out.push_str("\\\\"),
            _ => out.push(c),
        }
    }
}

/// String field values are quoted and escape `"`, `\` and newlines.
fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    // The gateway encoder's cases (src/sink/influx/line.rs), the record
    // bodies as the gateway publishes them over MQTT, the same lines.
    fn s(json: &str) -> Sample {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn sample_line_as_the_gateway_writes_it() {
        let r = s(
            r#"{"seq":7,"ts":1700000000123,"clock":"synced","values":{"battery.charge":97.0,"door.open":false,"ups.status":"OL CHRG","input.voltage":230.5}}"#,
        );
        assert_eq!(
            sample("xa-a", "ups1", "megatec", &r, r.ts),
            r#"telemetry,device=ups1,site=xa-a,type=megatec battery.charge=97.0,door.open=false,input.voltage=230.5,ups.status="OL CHRG",seq=7i 1700000000123"#
        );
    }

    #[test]
    fn event_line_as_the_gateway_writes_it() {
        let e: Event = serde_json::from_str(r#"{"seq":3,"ts":5,"clock":"unsynced","severity":"critical","code":"ups.on_battery","message":"On \"battery\"\nnow, a=b","values":{}}"#).unwrap();
        assert_eq!(
            event("xa-a", "ups1", &e, e.ts),
            r#"event,code=ups.on_battery,device=ups1,severity=critical,site=xa-a message="On \"battery\"\nnow, a=b",seq=3i 5"#
        );
    }

    #[test]
    fn escapes_and_edge_cases_as_the_gateway_writes_them() {
        let r = s(
            r#"{"seq":0,"ts":1,"clock":"synced","values":{"a b,c=d":1e300,"seq":5.0,"w":"back\\slash"}}"#,
        );
        assert_eq!(
            sample("s", "d", "modbus", &r, r.ts),
            r#"telemetry,device=d,site=s,type=modbus a\ b\,c\=d=1e300,w="back\\slash",seq=0i 1"#
        );
        let r = s(r#"{"seq":1,"ts":2,"clock":"synced","values":{}}"#);
        assert_eq!(
            sample("s", "d", "", &r, r.ts),
            "telemetry,device=d,site=s,type=- seq=1i 2"
        );
        // A corrected time is the one written.
        assert!(sample("s", "d", "t", &r, 99).ends_with("seq=1i 99"));
    }
}
