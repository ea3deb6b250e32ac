use super::*;
use crate::model::Values;
use crate::source;
use crate::source::config::configured_labels;

fn names_of(v: &Values, out: &mut Vec<String>) {
    out.extend(v.0.keys().cloned());
}

/// Every value name every source can produce, collected from the codecs
/// and sources themselves where they are pure, from their name formats
/// otherwise (probe targets, GPIO inputs).
fn every_value_name() -> Vec<String> {
    let mut n = Vec::new();
    // The simulator, both profiles, and its events' values.
    {
        use rand::SeedableRng;
        use source::sim::SimState;
        use source::sim_config::SimProfile;
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for p in [SimProfile::Ups, SimProfile::Sensor] {
            let mut s = SimState::new(p);
            names_of(&s.step(&mut rng), &mut n);
            names_of(&s.toggle().3, &mut n);
        }
    }
    // The Pi (every file present, and the spool's filesystem).
    {
        let v = source::system::to_values(&source::system::Files {
            thermal: Some("48312\n".into()),
            throttled: Some("0x50005\n".into()),
            loadavg: Some("0.52 0.40 0.31 1/123 4567\n".into()),
            meminfo: Some("MemTotal: 1000000 kB\nMemAvailable: 250000 kB\n".into()),
            uptime: Some("3600.42 7000.00\n".into()),
        });
        names_of(&v, &mut n);
        n.extend(["disk.free".into(), "disk.total".into()]);
    }
    // Megatec: a Q1 reply, rated values, identity, a charge estimate.
    {
        use source::megatec::codec::*;
        let q = parse_q1(b"(230.4 140.0 229.8 023 50.0 13.6 30.5 10011001\r").unwrap();
        let f = parse_f(b"#230.0 004 012.0 50.0\r").unwrap();
        let i = parse_i(b"#SANTAK          BLAZER-PRO VT12046Q  \r").ok();
        let v = to_values(
            &q,
            Some(&f),
            i.as_ref(),
            ChargeEstimate::from_rated(Some(12.0)),
        );
        names_of(&v, &mut n);
        n.extend([
            "ups.alarm".into(),
            "device.mfr".into(),
            "device.model".into(),
            "ups.firmware".into(),
        ]);
    }
    // APC Smart: what is polled.
    for c in source::apc::codec::Command::POLL {
        n.push(c.variable().to_owned());
    }
    // NUT: what a usbhid-ups or blazer driver lists (driver.* is left out).
    {
        let vars: Vec<(String, String)> = [
            "battery.charge",
            "battery.charge.low",
            "battery.charge.warning",
            "battery.runtime",
            "battery.runtime.low",
            "battery.type",
            "battery.voltage",
            "battery.voltage.nominal",
            "battery.date",
            "battery.mfr.date",
            "battery.temperature",
            "device.mfr",
            "device.model",
            "device.serial",
            "device.type",
            "driver.name",
            "input.voltage",
            "input.voltage.nominal",
            "input.frequency",
            "input.transfer.low",
            "input.transfer.high",
            "input.sensitivity",
            "input.current",
            "output.voltage",
            "output.voltage.nominal",
            "output.frequency",
            "output.frequency.nominal",
            "output.current",
            "ups.beeper.status",
            "ups.delay.shutdown",
            "ups.delay.start",
            "ups.firmware",
            "ups.firmware.aux",
            "ups.load",
            "ups.mfr",
            "ups.mfr.date",
            "ups.model",
            "ups.productid",
            "ups.realpower.nominal",
            "ups.power.nominal",
            "ups.realpower",
            "ups.power",
            "ups.serial",
            "ups.status",
            "ups.test.result",
            "ups.timer.shutdown",
            "ups.timer.start",
            "ups.vendorid",
            "ups.type",
            "ups.temperature",
            "ups.id",
        ]
        .iter()
        .map(|k| (k.to_string(), "1".to_string()))
        .collect();
        names_of(&source::nut::codec::to_values(&vars), &mut n);
    }
    // The router: system values and one interface over two polls.
    {
        use source::snmp::*;
        let mut v = Values::new();
        map_system(12_300, Some(&ObjectValue::String(b"rtr".to_vec())), &mut v);
        let mut st = IfState {
            key: "wan".into(),
            index: 1,
            is_wan: true,
            oper: None,
            last: None,
        };
        let r = |o: u64| IfReading {
            oper: Some(ObjectValue::Integer(1)),
            in_errors: Some(ObjectValue::Counter32(3)),
            out_errors: Some(ObjectValue::Counter32(0)),
            counters: Some((
                64,
                Some(ObjectValue::Counter64(o)),
                Some(ObjectValue::Counter64(o * 2)),
            )),
        };
        let mut changes = Vec::new();
        map_interface(&mut st, &r(1000), 10.0, false, &mut v, &mut changes);
        map_interface(&mut st, &r(5000), 10.0, false, &mut v, &mut changes);
        names_of(&v, &mut n);
    }
    // 1-Wire: one probe is the ambient temperature, more are per id.
    n.extend([
        "ambient.temperature".into(),
        "temperature.28-0316a2795aff".into(),
    ]);
    // Reachability probes (`{target}.latency` ... in probe.rs).
    for s in ["latency", "up", "loss", "method", "error"] {
        n.push(format!("gateway.{s}"));
    }
    // GPIO inputs (`{input}`, `{input}.active`, `{input}.count` in gpio.rs);
    // the input's own name is a configured word, not a dotted name.
    n.extend(["door.active".into(), "meter.count".into()]);
    // Modbus: the built-in profiles, and a failed read in `wardgate check`.
    for p in source::modbus::profile::NAMES {
        for r in source::modbus::profile::get(p).unwrap().registers {
            n.push(r.name);
        }
    }
    n.push("error.timeout".into());
    n.sort();
    n.dedup();
    n
}

#[test]
fn every_value_every_source_produces_has_words() {
    let names = every_value_name();
    assert!(names.len() > 60, "too few names collected: {names:?}");
    let missing: Vec<&String> = names.iter().filter(|n| lookup(n).is_none()).collect();
    assert!(missing.is_empty(), "value names without words: {missing:?}");
    for n in &names {
        let (vi, en) = labels(n);
        assert!(!vi.contains('{') && !en.contains('{'), "{n}: {vi} / {en}");
        assert_ne!(vi, *n, "{n} has no Vietnamese words");
    }
}

#[test]
fn numbers_the_local_way() {
    assert_eq!(number(23.5, 1, "vi"), "23,5");
    assert_eq!(number(23.5, 1, "en"), "23.5");
    assert_eq!(number(12345.0, 0, "vi"), "12.345");
    assert_eq!(number(12345.0, 0, "en"), "12,345");
    assert_eq!(number(1234567.891, 2, "vi"), "1.234.567,89");
    assert_eq!(number(-0.04, 1, "vi"), "0,0");
    assert_eq!(number(-1500.0, 0, "vi"), "-1.500");
    assert_eq!(number(999.0, 0, "vi"), "999");
    assert_eq!(number(f64::NAN, 1, "vi"), "—");
}

#[test]
fn durations_in_words() {
    assert_eq!(
        duration(3.0 * 86_400.0 + 4.0 * 3600.0 + 59.0, "vi"),
        "3 ngày 4 giờ"
    );
    assert_eq!(
        duration(3.0 * 86_400.0 + 4.0 * 3600.0, "en"),
        "3 days 4 hours"
    );
    assert_eq!(duration(86_400.0 + 3600.0, "en"), "1 day 1 hour");
    assert_eq!(duration(3.0 * 86_400.0, "en"), "3 days");
    assert_eq!(duration(2.0 * 3600.0 + 30.0, "vi"), "2 giờ");
    assert_eq!(duration(1362.0, "vi"), "22 phút");
    assert_eq!(duration(7500.0, "vi"), "2 giờ 5 phút");
    assert_eq!(duration(1200.0, "en"), "20 min");
    assert_eq!(duration(30.0, "vi"), "dưới 1 phút");
}

#[test]
fn the_pi_in_words() {
    let mut v = Values::new();
    v.num("disk.free", 80_267_124_736.0);
    v.num("disk.total", 120_000_000_000.0);
    v.num("memory.available", 2_470_729_728.0);
    v.num("memory.total", 4_000_000_000.0);
    v.num("system.uptime", 3.0 * 86_400.0 + 4.0 * 3600.0 + 12.0);
    v.num("cpu.temperature", 48.312);
    v.num("pi.throttled", 327_680.0);
    v.set("pi.under_voltage", false);
    v.set("pi.throttled_now", true);
    let s = |k: &str, lang: &str| show(k, v.get(k).unwrap(), &v, lang);
    assert_eq!(
        s("disk.free", "vi"),
        Some(("Thẻ nhớ còn trống".into(), "80,3 GB (67 %)".into()))
    );
    assert_eq!(s("disk.free", "en").unwrap().1, "80.3 GB (67 %)");
    assert_eq!(s("memory.available", "vi").unwrap().1, "2,5 GB (62 %)");
    assert_eq!(s("system.uptime", "vi").unwrap().1, "3 ngày 4 giờ");
    assert_eq!(s("system.uptime", "en").unwrap().1, "3 days 4 hours");
    assert_eq!(s("cpu.temperature", "vi").unwrap().1, "48,3 °C");
    assert_eq!(s("pi.throttled", "vi"), None, "raw bits are not shown");
    assert_eq!(s("disk.total", "vi"), None);
    assert_eq!(s("pi.under_voltage", "vi").unwrap().1, "bình thường");
    assert_eq!(
        s("pi.throttled_now", "en").unwrap().0,
        "CPU slowed down (heat or power)"
    );
}

#[test]
fn patterns_name_their_part() {
    assert_eq!(label("if.wan.in_bps", "vi"), "Lưu lượng vào cổng wan");
    assert_eq!(label("if.wan.up", "en"), "Port wan");
    assert_eq!(label("gateway.up", "en"), "gateway answers");
    assert_eq!(label("temperature.28-01", "vi"), "Nhiệt độ đầu dò 28-01");
    assert_eq!(label("no.such.thing", "vi"), "no.such.thing");
    let mut v = Values::new();
    v.num("if.wan.in_bps", 12_345_678.0);
    v.num("if.wan.in_errors", 1_234_567.0);
    let s = |k: &str| show(k, v.get(k).unwrap(), &v, "vi").unwrap().1;
    assert_eq!(s("if.wan.in_bps"), "12,3 Mbit/s");
    assert_eq!(s("if.wan.in_errors"), "1.234.567 lỗi");
    assert_eq!(unit("if.wan.in_bps"), Some("bit/s"));
    assert_eq!(unit("disk.free"), Some("B"));
    assert_eq!(unit("ups.status"), Some(""));
    assert_eq!(unit("no.such.thing"), None);
    // Unknown values still show, with their name.
    let mut u = Values::new();
    u.num("custom.reg", 1234.5);
    assert_eq!(
        show("custom.reg", u.get("custom.reg").unwrap(), &u, "vi"),
        Some(("custom.reg".into(), "1.234,5".into()))
    );
}

#[test]
fn lines_in_table_order() {
    assert!(rank("ups.status") < rank("ups.load"));
    assert!(rank("ups.load") < rank("battery.voltage"));
    assert!(rank("cpu.temperature") < rank("system.load1"));
    assert!(rank("if.wan.up") < rank("if.wan.in_bps"));
    assert_eq!(rank("no.such.thing"), WORDS.len());
}

#[test]
fn ups_status_in_words() {
    assert_eq!(ups_status("OL", "vi"), "đang dùng điện lưới");
    assert_eq!(ups_status("OB LB", "vi"), "đang chạy bằng pin, pin yếu");
    assert_eq!(ups_status("OL CHRG", "en"), "on mains power, charging");
    assert_eq!(ups_status("WEIRD", "en"), "WEIRD");
}

#[test]
fn zones() {
    assert_eq!(Zone::parse("Asia/Ho_Chi_Minh"), Some(Zone::VIETNAM));
    assert_eq!(Zone::parse("UTC+7"), Some(Zone::VIETNAM));
    assert_eq!(Zone::parse("UTC+05:30").unwrap().offset_s, 19_800);
    assert_eq!(Zone::parse("UTC-3").unwrap().offset_s, -10_800);
    assert_eq!(Zone::parse("UTC").unwrap().offset_s, 0);
    assert_eq!(
        Zone::parse("Europe/Paris"),
        None,
        "has DST: not in the table"
    );
    assert_eq!(Zone::parse("UTC+99"), None);
    // 2026-01-01 00:30 UTC is 07:30 in Hanoi.
    assert_eq!(Zone::VIETNAM.hhmm(1_767_227_400_000), "07:30");
    assert_eq!(Zone::parse("UTC").unwrap().hhmm(1_767_227_400_000), "00:30");
}

#[test]
fn catchup_line() {
    let c = Catchup {
        sent: Some(12_345),
        total: Some(40_000),
        left: 27_655,
        rate: Some(27_655.0 / 170.0),
    };
    assert_eq!(
        c.line("vi"),
        "Đang gửi lại dữ liệu đã lưu: 12.345 / 40.000 bản ghi, còn khoảng 3 phút"
    );
    assert_eq!(
        c.line("en"),
        "Sending kept readings again: 12,345 / 40,000 readings, about 3 min left"
    );
    let c = Catchup {
        sent: None,
        total: None,
        left: 500,
        rate: None,
    };
    assert_eq!(
        c.line("vi"),
        "Đang gửi lại dữ liệu đã lưu: 500 bản ghi đang chờ, đang đo tốc độ gửi…"
    );
    let c = Catchup {
        sent: None,
        total: None,
        left: 12_345,
        rate: Some(0.0),
    };
    assert_eq!(
        c.line("vi"),
        "Đang gửi lại dữ liệu đã lưu: 12.345 bản ghi đang chờ, chưa gửi được (mất kết nối, hoặc wardgate không chạy)"
    );
}

#[test]
fn configured_labels_come_first() {
    let mut v = Values::new();
    v.num("tank.level", 1234.5);
    v.num("voltage", 231.2);
    let l = Label {
        vi: Some("Mức nước bể".into()),
        en: Some("Tank level".into()),
        unit: Some("cm".into()),
    };
    let s = |k: &str, lang: &str, l: Option<&Label>| {
        show_labelled(k, v.get(k).unwrap(), &v, lang, l).unwrap()
    };
    assert_eq!(
        s("tank.level", "vi", Some(&l)),
        ("Mức nước bể".into(), "1.234,5 cm".into())
    );
    // As many decimals as the value needs, at most two.
    for (x, want) in [
        (23.5, "23,5 cm"),
        (23.0, "23 cm"),
        (0.07, "0,07 cm"),
        (23.456, "23,46 cm"),
        (23.4999, "23,5 cm"),
        (22.999, "23 cm"),
        (-1.25, "-1,25 cm"),
        (-0.5, "-0,5 cm"),
    ] {
        let mut w = Values::new();
        w.num("tank.level", x);
        assert_eq!(
            show_labelled(
                "tank.level",
                w.get("tank.level").unwrap(),
                &w,
                "vi",
                Some(&l)
            )
            .unwrap()
            .1,
            want,
            "{x}"
        );
    }
    assert_eq!(s("tank.level", "en", Some(&l)).0, "Tank level");
    // Only a Vietnamese label: the English page uses it too.
    let vi_only = Label {
        vi: Some("Điện áp tủ".into()),
        ..Label::default()
    };
    assert_eq!(
        s("voltage", "en", Some(&vi_only)),
        ("Điện áp tủ".into(), "231.2 V".into())
    );
    // No label: the table.
    assert_eq!(
        s("voltage", "vi", None),
        ("Điện áp".into(), "231,2 V".into())
    );
}

/// The words a config gives: a Modbus register's label, label_en and unit,
/// a GPIO input's label for its state, `.active` and `.count`.
#[test]
fn configured_labels_come_from_the_config() {
    let cfg = crate::config::Config::from_toml(
        r#"site = "t"
[mqtt]
host = "localhost"
[[device]]
id = "tank"
type = "modbus"
serial = "/dev/ttyUSB0"
unit = 3
[[device.registers]]
name = "tank.level"
function = "holding"
address = 0
unit = "cm"
label = "Mức nước bể"
label_en = "Tank level"
[[device.registers]]
name = "tank.raw"
function = "holding"
address = 1
[[device]]
id = "contacts"
type = "gpio"
[[device.inputs]]
name = "door"
pin = 17
label = "Cửa phòng máy"
"#,
    )
    .unwrap();
    let tank = configured_labels(&cfg.devices[0]);
    assert_eq!(
        tank.get("tank.level"),
        Some(&Label {
            vi: Some("Mức nước bể".into()),
            en: Some("Tank level".into()),
            unit: Some("cm".into()),
        })
    );
    assert!(!tank.contains_key("tank.raw"), "{tank:?}");
    let gpio = configured_labels(&cfg.devices[1]);
    assert_eq!(gpio["door"].vi.as_deref(), Some("Cửa phòng máy"));
    assert_eq!(
        gpio["door.active"].en.as_deref(),
        Some("Cửa phòng máy (active)")
    );
    // Words too long or blank are config errors naming the key.
    let e = crate::config::Config::from_toml(
        "site = \"t\"\n[mqtt]\nhost = \"localhost\"\n[[device]]\nid = \"m\"\ntype = \"modbus\"\n\
         serial = \"/dev/ttyUSB0\"\nunit = 1\n[[device.registers]]\nname = \"x\"\nfunction = \"holding\"\n\
         address = 0\nlabel = \" \"\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("registers[0].label"), "{e}");
}
