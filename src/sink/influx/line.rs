//! InfluxDB line protocol from spool records: pure functions, no I/O.
//! The mapping is written up in `docs/influxdb.md`.
//!
//! - a sample: measurement `telemetry`, tags `site`, `device`, `type` (the
//!   device's kind), one field per value (numbers as floats, booleans as
//!   booleans, strings as strings) and the integer field `seq`;
//! - an event: measurement `event`, tags `site`, `device`, `code`,
//!   `severity`, fields `message` and `seq`;
//! - the timestamp is the record's `ts` in milliseconds (`precision=ms`).
//!
//! A record whose body cannot be read back (the spool checked its checksum,
//! so only a bug gets here) gives no line and is reported as rejected.

use std::fmt::Write as _;

use serde::Deserialize;

use crate::model::{Kind, Severity, Value, Values};

#[derive(Deserialize)]
struct SampleBody {
    seq: u64,
    ts: i64,
    #[serde(default)]
    values: Values,
}

#[derive(Deserialize)]
struct EventBody {
    seq: u64,
    ts: i64,
    severity: Severity,
    code: String,
    #[serde(default)]
    message: String,
}

/// One record as a line (no trailing newline), or `None` when its body is
/// not a record.
pub(crate) fn encode(
    site: &str,
    device: &str,
    device_type: &str,
    kind: Kind,
    body: &str,
) -> Option<String> {
    let mut out = String::with_capacity(body.len() + 64);
    match kind {
        Kind::Sample => {
            let s: SampleBody = serde_json::from_str(body).ok()?;
            out.push_str("telemetry,");
            tag(&mut out, "device", device);
            out.push(',');
            tag(&mut out, "site", site);
            out.push(',');
            tag(&mut out, "type", device_type);
            out.push(' ');
            for (name, v) in &s.values.0 {
                // `seq` is written last and wins; a value of that name
                // cannot be told apart from it (docs/influxdb.md).
                if name == "seq" {
                    continue;
                }
                key(&mut out, name);
                out.push('=');
                match v {
                    Value::Num(n) if n.is_finite() => {
                        let _ = write!(out, "{n:?}");
                    }
                    // Values are finite by the DeviceHandle's checks; never
                    // write a token InfluxDB refuses.
                    Value::Num(_) => out.push_str("0.0"),
                    Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                    Value::Str(st) => string(&mut out, st),
                }
                out.push(',');
            }
            let _ = write!(out, "seq={}i {}", s.seq, s.ts);
        }
        Kind::Event => {
            let e: EventBody = serde_json::from_str(body).ok()?;
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
            let _ = write!(out, ",seq={}i {}", e.seq, e.ts);
        }
    }
    Some(out)
}

/// `name=value` of a tag (tags in key order, as InfluxDB advises).
fn tag(out: &mut String, name: &str, value: &str) {
    key(out, name);
    out.push('=');
    // An empty tag value is not allowed: write a placeholder.
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

/// String field values are quoted and escape `"` and `\`.
fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            // A newline would end the line.
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_line() {
        let l = encode(
            "xa-a",
            "ups1",
            "megatec",
            Kind::Sample,
            r#"{"seq":7,"ts":1700000000123,"clock":"synced","values":{"battery.charge":97.0,"door.open":false,"ups.status":"OL CHRG","input.voltage":230.5}}"#,
        )
        .unwrap();
        assert_eq!(
            l,
            r#"telemetry,device=ups1,site=xa-a,type=megatec battery.charge=97.0,door.open=false,input.voltage=230.5,ups.status="OL CHRG",seq=7i 1700000000123"#
        );
    }

    #[test]
    fn event_line() {
        let l = encode(
            "xa-a",
            "ups1",
            "megatec",
            Kind::Event,
            r#"{"seq":3,"ts":5,"clock":"unsynced","severity":"critical","code":"ups.on_battery","message":"On \"battery\"\nnow, a=b","values":{}}"#,
        )
        .unwrap();
        assert_eq!(
            l,
            r#"event,code=ups.on_battery,device=ups1,severity=critical,site=xa-a message="On \"battery\"\nnow, a=b",seq=3i 5"#
        );
    }

    #[test]
    fn escapes_and_edge_cases() {
        let l = encode(
            "s",
            "d",
            "modbus",
            Kind::Sample,
            r#"{"seq":0,"ts":1,"values":{"a b,c=d":1e300,"seq":5.0,"w":"back\\slash"}}"#,
        )
        .unwrap();
        assert_eq!(
            l,
            r#"telemetry,device=d,site=s,type=modbus a\ b\,c\=d=1e300,w="back\\slash",seq=0i 1"#
        );
        // No values: the seq field alone.
        assert_eq!(
            encode(
                "s",
                "d",
                "",
                Kind::Sample,
                r#"{"seq":1,"ts":2,"values":{}}"#
            )
            .unwrap(),
            "telemetry,device=d,site=s,type=- seq=1i 2"
        );
        assert!(encode("s", "d", "t", Kind::Sample, "not json").is_none());
        assert!(encode("s", "d", "t", Kind::Event, r#"{"seq":1,"ts":2}"#).is_none());
    }
}
