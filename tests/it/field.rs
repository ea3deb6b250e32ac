//! Field devices against real peers: Modbus RTU and TCP against pymodbus,
//! the router against Debian's snmpd.

use serde_json::Value;

use crate::common::peers::{ModbusPeer, Snmpd};
use crate::common::*;

fn last_values(sub: &Subscriber, device: &str) -> Option<Value> {
    sub.samples(device).last().map(|(_, s)| s["values"].clone())
}

fn fault_reason(sub: &Subscriber, device: &str) -> Option<String> {
    sub.events(device)
        .iter()
        .find(|(_, e)| e["code"] == "device.fault")
        .and_then(|(_, e)| e["message"].as_str().map(str::to_owned))
}

/// Two slaves and a silent one on one RS-485 bus (a socat pty pair), plus a
/// register map that the slave refuses: values arrive at mosquitto, the
/// frames on the wire are the ones in the datasheets, the absent slave
/// times out without stalling the others, the exception is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_rtu_bus_to_the_broker() {
    let peer = ModbusPeer::rtu();
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    let bus = peer.serial.display().to_string();
    // The room sensor polls fast; the others once a second, so the bus
    // (9600 baud) has room for the room sensor's pace to be measured.
    let line = format!(
        "type = \"modbus\"\nserial = \"{bus}\"\nbaud = 9600\ntimeout = \"250ms\"\ngap = \"5ms\"\n"
    );
    let common = format!("{line}interval = \"1s\"\n");
    let devs = format!(
        "[[device]]\nid = \"room\"\n{line}interval = \"300ms\"\nprofile = \"xy-md02\"\n\
         [[device]]\nid = \"meter\"\n{common}profile = \"sdm120\"\nunit = 2\n\
         [[device]]\nid = \"absent\"\n{common}profile = \"xy-md02\"\nunit = 9\n\
         [[device]]\nid = \"refused\"\n{common}unit = 1\n\
         registers = [{{ name = \"x\", function = \"holding\", address = 512 }}]\n\
         [[device]]\nid = \"mixed\"\n{common}unit = 3\n\
         registers = [\n\
           {{ name = \"a\", function = \"holding\", address = 10, type = \"u16\", scale = 0.1, unit = \"V\" }},\n\
           {{ name = \"b\", function = \"holding\", address = 11, type = \"i16\" }},\n\
           {{ name = \"c\", function = \"holding\", address = 12, type = \"u32\", word_order = \"low_first\" }},\n\
           {{ name = \"d\", function = \"holding\", address = 14, type = \"i32\" }},\n\
           {{ name = \"relay1\", function = \"coil\", address = 0 }},\n\
           {{ name = \"relay2\", function = \"coil\", address = 1 }},\n\
           {{ name = \"in2\", function = \"discrete\", address = 1 }},\n\
         ]\n"
    );
    let gw = Gateway::start(config(broker.port, dir.path(), &devs)).await;
    eventually(WAIT, "room, meter and mixed samples", || {
        ["room", "meter", "mixed"]
            .iter()
            .all(|d| !sub.samples(d).is_empty())
    })
    .await;
    let room = last_values(&sub, "room").unwrap();
    assert_eq!(room["ambient.temperature"], 23.5);
    assert_eq!(room["ambient.humidity"], 45.1);
    let meter = last_values(&sub, "meter").unwrap();
    assert_eq!(meter["voltage"], 231.2);
    assert_eq!(meter["current"], 1.25);
    assert_eq!(meter["power"], 280.0);
    assert_eq!(meter["power.factor"], 0.97);
    assert_eq!(meter["frequency"], 50.0);
    assert_eq!(meter["energy.import"], 1234.5);
    assert_eq!(meter["energy.total"], 1235.0);
    let mixed = last_values(&sub, "mixed").unwrap();
    assert_eq!(mixed["a"], 50.0);
    assert_eq!(mixed["b"], -25.0);
    assert_eq!(mixed["c"], 70000.0);
    assert_eq!(mixed["d"], -2.0);
    assert_eq!(mixed["relay1"], true);
    assert_eq!(mixed["relay2"], false);
    assert_eq!(mixed["in2"], true);
    // The local page shows the meter's values, in words.
    let (_, page) = http_get(gw.web.unwrap(), "/body?lang=vi", "").await;
    assert!(page.contains("<dt>Điện áp</dt><dd>231,2 V</dd>"), "{page}");

    // The exception is reported at once, with the code and the address.
    eventually(WAIT, "refused device fault", || {
        fault_reason(&sub, "refused").is_some()
    })
    .await;
    let r = fault_reason(&sub, "refused").unwrap();
    assert!(
        r.contains("exception 0x02") && r.contains("address 512"),
        "{r}"
    );
    // The absent slave: faulted after its timeouts, with the reason.
    eventually(WAIT, "absent device fault", || {
        fault_reason(&sub, "absent").is_some()
    })
    .await;
    let r = fault_reason(&sub, "absent").unwrap();
    assert!(r.contains("no reply from unit 9 within 250 ms"), "{r}");
    let st = gw.status.get();
    assert!(st.devices["absent"].errors["timeout"] >= 3);
    assert!(st.devices["refused"].errors["exception"] >= 1);
    // ...and does not stall the others: the room sensor keeps its pace.
    // Measured on the readings' own timestamps (not on when they reached
    // the test, which adds MQTT's and pymodbus's time on a loaded
    // machine): the median gap between 10 consecutive room readings taken
    // while unit 9 is absent. At its pace that is 300 ms (550 ms when the
    // absent slave's 250 ms turn falls between two); a bus that waited for
    // unit 9 before every room request would make every gap 1 s or more.
    let n = *sub.seqs("room").iter().last().unwrap();
    eventually(WAIT, "11 more room samples", || {
        let seqs = sub.seqs("room");
        (n + 1..=n + 11).all(|s| seqs.contains(&s))
    })
    .await;
    let room = dedupe(&sub.samples("room"));
    let ts: Vec<i64> = (n + 1..=n + 11)
        .map(|s| room[&s]["ts"].as_i64().unwrap())
        .collect();
    let mut gaps: Vec<i64> = ts.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    eprintln!("room: gaps between readings with unit 9 absent (ms): {gaps:?}");
    assert!(
        gaps[gaps.len() / 2] < 800,
        "room: median gap {} ms between readings while unit 9 is absent: {gaps:?}",
        gaps[gaps.len() / 2]
    );
    assert_eq!(
        st.devices["room"].health,
        wardgate::model::Health::Ok,
        "room healthy"
    );

    // The frames on the wire, as the issue and the datasheets give them.
    let trace = peer.trace();
    for f in [
        "rx 01 04 00 01 00 02 20 0b",
        "tx 01 04 04 00 eb 01 c3 ca 71",
        "rx 02 04 00 00 00 02 71 f8",
        "tx 02 04 04 43 67 33 33 38 3a",
    ] {
        assert!(trace.iter().any(|l| l == f), "{f} not on the wire");
    }
    // One request at a time: every request is followed by its reply (or,
    // for unit 9, nothing) before the next.
    let mut last_rx: Option<&str> = None;
    for l in &trace {
        if l.starts_with("rx ") {
            if let Some(prev) = last_rx {
                assert!(
                    prev.starts_with("rx 09"),
                    "two requests in a row: {prev} / {l}"
                );
            }
            last_rx = Some(l);
        } else {
            last_rx = None;
        }
    }
    gw.stop().await;
    sub.assert_all_valid();
}

/// Two devices on one bus with different speeds are a config error, and
/// `wardgate check` reads a Modbus device once and prints what it read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_check_and_bus_settings() {
    let peer = ModbusPeer::rtu();
    let dir = tempfile::tempdir().unwrap();
    let bus = peer.serial.display().to_string();
    let bad = config_text(
        1883,
        dir.path(),
        &format!(
            "[[device]]\nid = \"room\"\ntype = \"modbus\"\nserial = \"{bus}\"\nprofile = \"xy-md02\"\n\
             [[device]]\nid = \"meter\"\ntype = \"modbus\"\nserial = \"{bus}\"\nprofile = \"sdm120\"\nunit = 2\n"
        ),
    );
    let e = wardgate::config::Config::from_toml(&bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("shares the bus") && e.contains("2400"), "{e}");

    let path = dir.path().join("wardgate.toml");
    std::fs::write(
        &path,
        config_text(
            1883,
            dir.path(),
            &format!(
                "[[device]]\nid = \"meter\"\ntype = \"modbus\"\nserial = \"{bus}\"\nbaud = 9600\nprofile = \"sdm120\"\nunit = 2\ntimeout = \"300ms\"\n\
                 [[device]]\nid = \"ghost\"\ntype = \"modbus\"\nserial = \"{bus}\"\nbaud = 9600\nprofile = \"xy-md02\"\nunit = 7\ntimeout = \"300ms\"\n"
            ),
        ),
    )
    .unwrap();
    let (code, text) = wardgate_check(&path).await;
    assert_eq!(code, Some(69), "{text}");
    assert!(text.contains("device meter (modbus): ok"), "{text}");
    assert!(text.contains("voltage = 231.2"), "{text}");
    assert!(
        text.contains("device ghost (modbus): NOT REACHABLE: no reply from unit 7"),
        "{text}"
    );
}

/// Modbus TCP against pymodbus's TCP server, same register maps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_tcp_to_the_broker() {
    let peer = ModbusPeer::tcp();
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    let common = format!(
        "type = \"modbus\"\ntransport = \"tcp\"\nhost = \"127.0.0.1\"\nport = {}\ninterval = \"300ms\"\ntimeout = \"500ms\"\n",
        peer.port
    );
    let devs = format!(
        "[[device]]\nid = \"room\"\n{common}profile = \"xy-md02\"\n\
         [[device]]\nid = \"meter\"\n{common}profile = \"sdm120\"\nunit = 2\n"
    );
    let gw = Gateway::start(config(broker.port, dir.path(), &devs)).await;
    eventually(WAIT, "room and meter samples", || {
        !sub.samples("room").is_empty() && !sub.samples("meter").is_empty()
    })
    .await;
    assert_eq!(
        last_values(&sub, "room").unwrap()["ambient.temperature"],
        23.5
    );
    assert_eq!(last_values(&sub, "meter").unwrap()["voltage"], 231.2);
    // The peer goes away: the devices fault with the reason, and come back
    // when it returns on the same port.
    drop(peer);
    eventually(WAIT, "fault when the TCP peer is gone", || {
        fault_reason(&sub, "room").is_some()
    })
    .await;
    gw.stop().await;
    sub.assert_all_valid();
}

/// A slave that vanishes from the bus (the peer stops answering for its
/// id while the others keep answering): no good reading for three
/// intervals makes it stale with one `device.lost` event (docs/mqtt.md);
/// after 3 polls without an answer it is faulted (docs/sensors.md); when it
/// answers again, `device.restored`. The other slave keeps its readings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_vanished_slave_is_lost_then_restored() {
    use crate::common::devices::*;
    let peer = ModbusPeer::rtu();
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    let bus = peer.serial.display().to_string();
    // A timeout longer than the interval: the third interval without a
    // reading ends while the second unanswered request is waiting, so the
    // device is stale before it is faulted.
    let (interval, timeout) = (300i64, 500i64);
    let line = format!(
        "type = \"modbus\"\nserial = \"{bus}\"\nbaud = 9600\ntimeout = \"{timeout}ms\"\ngap = \"5ms\"\n"
    );
    let devs = format!(
        "[[device]]\nid = \"room\"\n{line}interval = \"{interval}ms\"\nprofile = \"xy-md02\"\n\
         [[device]]\nid = \"meter\"\n{line}interval = \"1s\"\nprofile = \"sdm120\"\nunit = 2\n"
    );
    let gw = Gateway::start(config(broker.port, dir.path(), &devs)).await;
    eventually(WAIT, "room and meter samples", || {
        sub.seqs("room").len() >= 3 && !sub.samples("meter").is_empty()
    })
    .await;
    peer.silence(&[1]);
    eventually(WAIT, "device.lost", || {
        first_event(&sub, "room", "device.lost").is_some()
    })
    .await;
    let lost = first_event(&sub, "room", "device.lost").unwrap();
    assert_eq!(lost["severity"], "warning");
    let last = last_sample_before(&sub, "room", ts(&lost)).unwrap();
    let after = ts(&lost) - ts(&last);
    // Not before three intervals; by the end of the first request that
    // times out after them (at most interval + timeout later); 2 s for a
    // loaded 2-core machine and the shared bus.
    assert!(
        (3 * interval..=3 * interval + interval + timeout + 2000).contains(&after),
        "lost {after} ms after the last sample (interval {interval} ms, timeout {timeout} ms)"
    );
    eventually(WAIT, "device.fault after 3 polls", || {
        first_event(&sub, "room", "device.fault").is_some()
    })
    .await;
    let fault = first_event(&sub, "room", "device.fault").unwrap();
    assert!(ts(&fault) >= ts(&lost), "fault before lost");
    let r = fault["message"].as_str().unwrap();
    assert!(r.contains("no reply from unit 1 within 500 ms"), "{r}");
    // The meter keeps answering meanwhile.
    let m = sub.seqs("meter").len();
    eventually(WAIT, "meter samples while unit 1 is silent", || {
        sub.seqs("meter").len() >= m + 2
    })
    .await;
    assert_eq!(
        gw.status.get().devices["meter"].health,
        wardgate::model::Health::Ok
    );

    let resumed = now_ms();
    peer.silence(&[]);
    eventually(WAIT, "device.restored", || {
        first_event(&sub, "room", "device.restored").is_some()
    })
    .await;
    let restored = first_event(&sub, "room", "device.restored").unwrap();
    assert!(
        ts(&restored) >= resumed,
        "restored before the slave answered"
    );
    eventually(WAIT, "room healthy", || {
        gw.status.get().devices["room"].health == wardgate::model::Health::Ok
    })
    .await;
    assert_eq!(count_distinct_events(&sub, "room", "device.lost"), 1);
    assert_eq!(count_distinct_events(&sub, "room", "device.fault"), 1);
    assert_eq!(count_distinct_events(&sub, "room", "device.restored"), 1);
    assert!(
        !sub.samples("room")
            .iter()
            .any(|(_, s)| ts(s) > ts(&lost) && ts(s) < resumed),
        "a room sample while unit 1 was silent"
    );
    assert!(
        peer.trace().iter().any(|l| l.starts_with("silent 01 04")),
        "the peer never held back a reply"
    );
    gw.stop().await;
    sub.assert_all_valid();
}

/// The router: sysName, uptime, lo's status and traffic from a real snmpd;
/// lo (as the WAN) going down and up is a pair of events; a wrong
/// community faults the device after the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snmp_router_to_the_broker() {
    let started = std::time::Instant::now();
    let snmpd = Snmpd::start();
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    let devs = format!(
        "[[device]]\nid = \"router\"\ntype = \"snmp\"\nhost = \"127.0.0.1\"\nport = {p}\ncommunity = \"wardtest\"\n\
         interfaces = [\"lo\"]\nwan = \"lo\"\ninterval = \"500ms\"\ntimeout = \"300ms\"\nretries = 0\n\
         [[device]]\nid = \"wrong\"\ntype = \"snmp\"\nhost = \"127.0.0.1\"\nport = {p}\ncommunity = \"guess\"\n\
         interval = \"500ms\"\ntimeout = \"300ms\"\nretries = 0\n",
        p = snmpd.port
    );
    let gw = Gateway::start(config(broker.port, dir.path(), &devs)).await;
    // Rates need two readings.
    eventually(WAIT, "router samples with rates", || {
        last_values(&sub, "router").is_some_and(|v| v.get("if.lo.in_bps").is_some())
    })
    .await;
    let v = last_values(&sub, "router").unwrap();
    assert_eq!(v["sys.name"], "ward-router");
    // sysUpTime is the agent's: this snmpd started with the test.
    let uptime = v["sys.uptime"].as_f64().unwrap();
    let bound = started.elapsed().as_secs_f64() + 1.0;
    assert!(
        (0.0..=bound).contains(&uptime),
        "sys.uptime {uptime} s, snmpd started {bound} s ago"
    );
    assert_eq!(v["if.lo.oper"], "up");
    assert_eq!(v["if.lo.up"], true);
    assert!(v["if.lo.in_errors"].as_f64().is_some());
    // The SNMP requests themselves cross lo, so its traffic is not zero
    // once the agent's counters move (net-snmp caches them a few seconds,
    // so two readings may be equal: poll). Every rate is within what lo
    // can carry (well under 1 Tbit/s).
    eventually(WAIT, "lo traffic seen", || {
        sub.samples("router").iter().any(|(_, s)| {
            s["values"]["if.lo.in_bps"]
                .as_f64()
                .is_some_and(|x| x > 0.0)
                && s["values"]["if.lo.out_bps"]
                    .as_f64()
                    .is_some_and(|x| x > 0.0)
        })
    })
    .await;
    for (_, s) in sub.samples("router") {
        for k in ["if.lo.in_bps", "if.lo.out_bps"] {
            if let Some(x) = s["values"][k].as_f64() {
                assert!((0.0..1e12).contains(&x), "{k} = {x}");
            }
        }
    }

    snmpd.set_lo_oper(2);
    eventually(WAIT, "wan.down event", || {
        sub.events("router")
            .iter()
            .any(|(_, e)| e["code"] == "wan.down")
    })
    .await;
    let (_, e) = sub
        .events("router")
        .into_iter()
        .find(|(_, e)| e["code"] == "wan.down")
        .unwrap();
    assert_eq!(e["severity"], "critical");
    assert_eq!(e["values"]["interface"], "lo");
    snmpd.set_lo_oper(1);
    eventually(WAIT, "wan.up event", || {
        sub.events("router")
            .iter()
            .any(|(_, e)| e["code"] == "wan.up")
    })
    .await;
    // Raised once each, not on every poll: three more polls after wan.up
    // (counted, not slept: a loaded machine may poll less often).
    let n = sub.seqs("router").len();
    eventually(WAIT, "three more router polls", || {
        sub.seqs("router").len() >= n + 3
    })
    .await;
    assert_eq!(count_distinct_events(&sub, "router", "wan.down"), 1);

    eventually(WAIT, "wrong community fault", || {
        fault_reason(&sub, "wrong").is_some()
    })
    .await;
    let r = fault_reason(&sub, "wrong").unwrap();
    assert!(r.contains("wrong community"), "{r}");
    assert!(sub.samples("wrong").is_empty());
    gw.stop().await;

    // `wardgate check` reads the router once.
    let no_broker = closed_port();
    let path = dir.path().join("check.toml");
    std::fs::write(
        &path,
        config_text(
            // No broker (check needs none): a port where nothing listens.
            no_broker.port,
            dir.path(),
            &format!(
                "[[device]]\nid = \"router\"\ntype = \"snmp\"\nhost = \"127.0.0.1\"\nport = {}\ncommunity = \"wardtest\"\ninterfaces = [1]\ntimeout = \"500ms\"\n",
                snmpd.port
            ),
        ),
    )
    .unwrap();
    let (code, text) = wardgate_check(&path).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("sys.name = \"ward-router\""), "{text}");
    assert!(text.contains("if.lo.oper = \"up\""), "{text}");
    sub.assert_all_valid();
}
