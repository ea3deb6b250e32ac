//! Every number and duration of the config has bounds: each edge loads,
//! each value just past it is refused naming the key and the range.

use super::*;

/// One bound: `key` written after `before` (and followed by `after`), the
/// values at its edges that load, the values just past them that do not,
/// and the words every refusal has (the allowed range).
struct Edge {
    before: &'static str,
    key: &'static str,
    /// The key as problem lines name it.
    named: &'static str,
    after: &'static str,
    good: &'static [&'static str],
    bad: &'static [&'static str],
    range: &'static str,
}

const SIM: &str = "[[device]]\nid = \"u\"\ntype = \"sim\"\n";
const NUT: &str = "[[device]]\nid = \"u\"\ntype = \"nut\"\nups = \"x\"\n";
const PROBE_AFTER: &str = "[[device.targets]]\nname = \"b\"\naddress = \"127.0.0.1:1\"\n";
const SNMP: &str =
    "[[device]]\nid = \"u\"\ntype = \"snmp\"\nhost = \"127.0.0.1\"\ncommunity = \"c\"\n";
const MEGATEC: &str = "[[device]]\nid = \"u\"\ntype = \"megatec\"\nserial = \"/dev/x\"\n";
const APC: &str = "[[device]]\nid = \"u\"\ntype = \"apc-smart\"\nserial = \"/dev/x\"\n";
const MODBUS: &str =
    "[[device]]\nid = \"u\"\ntype = \"modbus\"\nserial = \"/dev/x\"\nprofile = \"xy-md02\"\n";
const GPIO_INPUT: &str =
    "[[device]]\nid = \"u\"\ntype = \"gpio\"\n[[device.inputs]]\nname = \"door\"\n";
const THRESHOLD: &str =
    "[[device]]\nid = \"u\"\ntype = \"sim\"\n[[device.threshold]]\nvalue = \"x\"\n";

fn edges() -> Vec<Edge> {
    let e = |before, key, named, good, bad, range| Edge {
        before,
        key,
        named,
        after: "",
        good,
        bad,
        range,
    };
    vec![
        e("[mqtt]\n", "port", "mqtt.port", &["1", "65535"], &["0", "65536"], "(1-65535)"),
        e(
            "[mqtt]\n",
            "backlog_rate",
            "mqtt.backlog_rate",
            &["1", "1.0", "10000.0"],
            &["0.999", "10000.5", "1e-300", "0.0", "-1.0", "nan", "inf", "1e300"],
            "must be between 1 and 10000 messages per second",
        ),
        e(
            "[mqtt]\n",
            "keep_alive",
            "mqtt.keep_alive",
            &["\"5s\"", "\"65535s\""],
            &["\"4s 999ms\"", "\"65535s 1ms\"", "\"65536s\"", "\"100years\""],
            "must be between 5s and 18h 12m 15s",
        ),
        e(
            "[mqtt]\n",
            "connect_timeout",
            "mqtt.connect_timeout",
            &["\"1s\"", "\"10m\""],
            &["\"999ms\"", "\"10m 1ms\""],
            "must be between 1s and 10m",
        ),
        e(
            "[mqtt]\n",
            "stall_timeout",
            "mqtt.stall_timeout",
            &["\"1s\"", "\"1h\""],
            &["\"999ms\"", "\"1h 1ms\""],
            "must be between 1s and 1h",
        ),
        e(
            "[mqtt]\n",
            "max_batch",
            "mqtt.max_batch",
            &["1", "10000"],
            &["0", "10001"],
            "must be between 1 and 10000",
        ),
        e(
            "[mqtt]\n",
            "inflight",
            "mqtt.inflight",
            &["1", "65535"],
            &["0", "65536"],
            "must be between 1 and 65535",
        ),
        e(
            "[mqtt]\nmax_batch_bytes = \"1 KiB\"\n",
            "max_packet_size",
            "mqtt.max_packet_size",
            &["\"4 KiB\"", "268435455"],
            &["4095", "\"256 MiB\""],
            "must be at least 4 KiB and less than 256 MiB",
        ),
        e(
            "[mqtt]\n",
            "max_batch_bytes",
            "mqtt.max_batch_bytes",
            &["\"1 KiB\"", "1048575"],
            &["1023", "\"1 MiB\""],
            "must be at least 1 KiB and less than mqtt.max_packet_size",
        ),
        e(
            "[spool]\n",
            "spill_after",
            "spool.spill_after",
            &["\"0s\"", "\"1h\""],
            &["\"1h 1ms\""],
            "must be between 0s and 1h",
        ),
        e(
            "[spool]\n",
            "commit_interval",
            "spool.commit_interval",
            &["\"10ms\"", "\"60s\""],
            &["\"9ms\"", "\"60s 1ms\""],
            "must be between 10ms and 1m",
        ),
        e(
            "[spool]\n",
            "max_bytes",
            "spool.max_bytes",
            &["\"64 KiB\"", "\"1 TiB\""],
            &["65535", "1099511627777", "\"16 EiB\""],
            "must be between 64 KiB and 1 TiB",
        ),
        e(
            "[spool]\n",
            "max_age",
            "spool.max_age",
            &["\"1m\"", "\"10years\""],
            &["\"59s 999ms\"", "\"10years 1ms\"", "\"300000000years\""],
            "must be between 1m and 10years",
        ),
        e(
            "[spool]\n",
            "memory_max",
            "spool.memory_max",
            &["1", "10000000"],
            &["0", "10000001"],
            "must be between 1 and 10000000",
        ),
        e(
            "[gateway]\n",
            "telemetry_interval",
            "gateway.telemetry_interval",
            &["\"100ms\"", "\"1day\""],
            &["\"99ms\"", "\"1day 1ms\""],
            "must be between 100ms and 1day",
        ),
        e(
            "[led]\nbackend = \"gpio\"\n",
            "pin",
            "led.pin",
            &["0", "27"],
            &["-1", "28"],
            "(0-27)",
        ),
        e(
            SIM,
            "interval",
            "device[0].interval",
            &["\"1ms\"", "\"1day\""],
            &["\"0s\"", "\"1day 1ms\"", "\"300000000years\""],
            "must be between 1ms and 1day",
        ),
        e(
            SIM,
            "samples_per_tick",
            "device[0].samples_per_tick",
            &["1", "100000"],
            &["0", "100001"],
            "must be between 1 and 100000",
        ),
        e(
            "[[device]]\nid = \"u\"\ntype = \"sim\"\n[[device.threshold]]\nvalue = \"x\"\nhigh = 1.0\n",
            "for",
            "device[0].threshold[0].for",
            &["\"0s\"", "\"1day\""],
            &["\"1day 1ms\""],
            "must be between 0s and 1day",
        ),
        e(
            THRESHOLD,
            "high",
            "device[0].threshold[0].high",
            &["-1e300", "1e300"],
            &["nan", "inf", "-inf"],
            "must be a finite number",
        ),
        e(
            THRESHOLD,
            "low",
            "device[0].threshold[0].low",
            &["-1e300", "0.0"],
            &["nan", "-inf"],
            "must be a finite number",
        ),
        e(
            NUT,
            "timeout",
            "device[0].timeout",
            &["\"100ms\"", "\"30s\""],
            &["\"99ms\"", "\"30s 1ms\""],
            "must be between 100ms and 30s",
        ),
        e(
            NUT,
            "port",
            "device[0].port",
            &["1", "65535"],
            &["0", "65536"],
            "(1-65535)",
        ),
        Edge {
            after: PROBE_AFTER,
            ..e(
                "[[device]]\nid = \"u\"\ntype = \"probe\"\n",
                "timeout",
                "device[0].timeout",
                &["\"100ms\"", "\"30s\""],
                &["\"99ms\"", "\"30s 1ms\""],
                "must be between 100ms and 30s",
            )
        },
        Edge {
            after: PROBE_AFTER,
            ..e(
                "[[device]]\nid = \"u\"\ntype = \"probe\"\n",
                "window",
                "device[0].window",
                &["1", "1000"],
                &["0", "1001"],
                "must be between 1 and 1000",
            )
        },
        e(
            SNMP,
            "timeout",
            "device[0].timeout",
            &["\"100ms\"", "\"30s\""],
            &["\"99ms\"", "\"30s 1ms\""],
            "must be between 100ms and 30s",
        ),
        e(
            SNMP,
            "retries",
            "device[0].retries",
            &["0", "5"],
            &["-1", "6"],
            "must be between 0 and 5",
        ),
        e(
            MEGATEC,
            "timeout",
            "device[0].timeout",
            &["\"100ms\"", "\"30s\""],
            &["\"99ms\"", "\"30s 1ms\""],
            "must be between 100ms and 30s",
        ),
        e(
            APC,
            "timeout",
            "device[0].timeout",
            &["\"100ms\"", "\"30s\""],
            &["\"99ms\"", "\"30s 1ms\""],
            "must be between 100ms and 30s",
        ),
        e(
            MODBUS,
            "timeout",
            "device[0].timeout",
            &["\"20ms\"", "\"30s\""],
            &["\"19ms\"", "\"30s 1ms\""],
            "must be between 20ms and 30s",
        ),
        e(
            MODBUS,
            "gap",
            "device[0].gap",
            &["\"0s\"", "\"5s\""],
            &["\"5s 1ms\""],
            "must be between 0s and 5s",
        ),
        e(
            MODBUS,
            "unit",
            "device[0].unit",
            &["1", "247"],
            &["0", "248"],
            "is not a slave id (1-247)",
        ),
        e(
            MODBUS,
            "stop_bits",
            "device[0].stop_bits",
            &["1", "2"],
            &["0", "3"],
            "must be 1 or 2",
        ),
        Edge {
            after: "pin = 17\n",
            ..e(
                GPIO_INPUT,
                "debounce",
                "device[0].inputs[0].debounce",
                &["\"0s\"", "\"10s\""],
                &["\"10s 1ms\""],
                "must be between 0s and 10s",
            )
        },
        e(
            GPIO_INPUT,
            "pin",
            "device[0].inputs[0].pin",
            &["0", "27"],
            &["-1", "28"],
            "(0-27)",
        ),
    ]
}

/// Every number and duration has bounds. At each edge
/// the value loads; just past it the value is refused by a line that names
/// the key and the allowed range.
#[test]
fn every_bound_good_edge_and_bad_edge() {
    for b in edges() {
        let text = |v: &str| format!("{MIN}{}{} = {v}\n{}", b.before, b.key, b.after);
        for v in b.good {
            if let Err(e) = Config::from_toml(&text(v)) {
                panic!("{} = {v} must load: {e}\n{}", b.named, text(v));
            }
        }
        for v in b.bad {
            let p = problems(&text(v));
            assert!(
                p.iter()
                    .any(|m| m.starts_with(&format!("{}: ", b.named)) && m.contains(b.range)),
                "{} = {v}: wanted a problem naming the key and {:?}, got {p:?}",
                b.named,
                b.range
            );
        }
    }
}
