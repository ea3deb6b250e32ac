//! The config loader's tests: defaults, layers, and that every problem
//! names its key.

use super::*;
use std::time::Duration;

use bytesize::ByteSize;

mod bounds;

fn problems(text: &str) -> Vec<String> {
    match Config::from_toml(text) {
        Ok(_) => vec![],
        Err(e) => e.problems(),
    }
}

const MIN: &str = "site = \"xa-a\"\n";

#[test]
fn minimal_config_gets_defaults() {
    let c = Config::from_toml(MIN).unwrap();
    assert_eq!(c.mqtt.prefix, "ioc");
    assert_eq!(c.mqtt.max_batch.get(), 100);
    assert_eq!(c.spool.policy, SpoolPolicy::Spill);
    assert_eq!(c.spool.spill_after, Duration::from_secs(2));
    assert_eq!(c.spool.max_bytes, ByteSize::mib(256));
    assert_eq!(c.spool.max_age, Duration::from_secs(30 * 86400));
    assert_eq!(&*c.spool.path, Path::new("/var/lib/wardgate/spool.db"));
    // localhost: no TLS by default, so port 1883.
    assert!(!c.mqtt_tls());
    assert_eq!(c.mqtt_port(), 1883);
}

#[test]
fn remote_broker_needs_tls_by_default() {
    let c = Config::from_toml("site = \"a\"\n[mqtt]\nhost = \"ioc.example\"\n").unwrap();
    assert!(c.mqtt_tls());
    assert_eq!(c.mqtt_port(), 8883);
    let c = Config::from_toml("site = \"a\"\n[mqtt]\nhost = \"127.0.0.2\"\n").unwrap();
    assert!(!c.mqtt_tls());
}

#[test]
fn mqtt_sizes_and_timeouts() {
    let c = Config::from_toml(MIN).unwrap();
    assert_eq!(c.mqtt.max_batch_bytes, ByteSize::kib(256));
    assert_eq!(c.mqtt.max_packet_size, ByteSize::mib(1));
    assert_eq!(c.mqtt.stall_timeout.get(), Duration::from_secs(60));
    let c = Config::from_toml(
        "site = \"a\"\n[mqtt]\nmax_batch_bytes = \"64 KiB\"\nmax_packet_size = 131072\nstall_timeout = \"2s\"\n",
    )
    .unwrap();
    assert_eq!(c.mqtt.max_batch_bytes, ByteSize::kib(64));
    assert_eq!(c.mqtt.max_packet_size, ByteSize::kib(128));
    let cases: &[(&str, &str)] = &[
        (
            "max_batch_bytes = \"2 MiB\"",
            "mqtt.max_batch_bytes: 2.0 MiB must be",
        ),
        (
            "max_batch_bytes = 100",
            "mqtt.max_batch_bytes: 100 B must be",
        ),
        (
            "max_packet_size = \"1 KiB\"",
            "mqtt.max_packet_size: 1.0 KiB must be",
        ),
        (
            "max_packet_size = \"300 MiB\"",
            "mqtt.max_packet_size: 300.0 MiB must be",
        ),
        (
            "stall_timeout = \"100ms\"",
            "mqtt.stall_timeout: 100ms must be",
        ),
        (
            "connect_timeout = \"0s\"",
            "mqtt.connect_timeout: 0s must be",
        ),
        (
            "backlog_rate = 0.01",
            "mqtt.backlog_rate: 0.01 must be between 1 and 10000 messages per second",
        ),
        (
            "backlog_rate = 1.0\nstall_timeout = \"1s\"",
            "mqtt.backlog_rate: 1 messages per second is slower than one per mqtt.stall_timeout (1s)",
        ),
    ];
    for (line, want) in cases {
        let p = problems(&format!("site = \"a\"\n[mqtt]\n{line}\n"));
        assert!(p.iter().any(|m| m.contains(want)), "{line}: {p:?}");
    }
}

#[test]
fn one_wire_names_must_be_value_names() {
    // Found by the config fuzz target: a name the contract cannot carry
    // passed validation and would have been published as a value name.
    for bad in ["\u{e0}rack.temperature", "rack temperature", ""] {
        let text = format!(
            "site = \"s1\"\n[[device]]\nid = \"rack\"\ntype = \"onewire\"\n[device.names]\n\"28-0316a2795aff\" = {bad:?}\n"
        );
        let e = Config::from_toml(&text).unwrap_err().to_string();
        assert!(e.contains("names"), "{bad:?}: {e}");
    }
    let ok = "site = \"s1\"\n[[device]]\nid = \"rack\"\ntype = \"onewire\"\n[device.names]\n\"28-0316a2795aff\" = \"rack.temperature\"\n";
    Config::from_toml(ok).unwrap();
}

#[test]
fn each_problem_names_its_key() {
    let cases: &[(&str, &str)] = &[
        ("site = \"a\"\n[mqtt]\nport = 70000\n", "mqtt.port: 70000 is not a port"),
        ("site = \"a\"\n[mqtt]\nprot = 1\n", "mqtt.prot"),
        ("site = \"a\"\nbogus = 1\n", "bogus"),
        ("", "site: missing"),
        ("site = \"Phuong Tan\"\n", "site: \"Phuong Tan\" is not a valid id"),
        (
            "site = \"a\"\n[[device]]\nid = \"UPS 1\"\ntype = \"sim\"\n",
            "device[0].id: \"UPS 1\"",
        ),
        (
            "site = \"a\"\n[[device]]\nid = \"u\"\ntype = \"sim\"\nspeed = 3\n",
            "speed",
        ),
        ("site = \"a\"\n[[device]]\nid = \"u\"\ntype = \"warp\"\n", "warp"),
        ("site = \"a\"\n[spool]\npolicy = \"fast\"\n", "spool.policy"),
        ("site = \"a\"\n[led]\nbackend = \"gpio\"\n", "led.pin: needed"),
        ("site = \"a\"\n[led]\nbackend = \"gpio\"\npin = 40\n", "led.pin: 40"),
        ("site = \"a\"\n[led]\nbackend = \"blink\"\n", "led.backend"),
        ("site = \"a\"\n[web]\nlisten = \"8080\"\n", "web.listen"),
        ("site = \"a\"\n[web]\nlanguage = \"fr\"\n", "web.language"),
        ("site = \"a\"\n[web]\nusername = \"x\"\n", "web.username / web.password_file"),
        (
            "site = \"a\"\n[[device]]\nid = \"u\"\ntype = \"megatec\"\nserial = \"/dev/ttyUSB0\"\nbaud = 1234\n",
            "device[0].baud: 1234 is not a standard rate",
        ),
        (
            "site = \"a\"\n[[device]]\nid = \"u\"\ntype = \"megatec\"\n",
            "serial",
        ),
        (
            "site = \"a\"\n[[device]]\nid = \"u\"\ntype = \"megatec\"\nserial = \"ttyUSB0\"\n",
            "device[0].serial: \"ttyUSB0\" must be an absolute path",
        ),
        (
            "site = \"a\"\n[[device]]\nid = \"u\"\ntype = \"megatec\"\nserial = \"/dev/x\"\nbattery_voltage_low = 10.0\n",
            "give both or neither",
        ),
        (
            "site = \"a\"\n[[device]]\nid = \"u\"\ntype = \"nut\"\nups = \"x\"\nport = 0\n",
            "device[0].port: 0 is not a port",
        ),
        (
            "site = \"a\"\n[[device]]\nid = \"u\"\ntype = \"nut\"\n",
            "ups",
        ),
        (
            "site = \"a\"\n[[device]]\nid = \"u\"\ntype = \"apc-smart\"\nserial = \"/dev/x\"\ntimeout = \"1ms\"\n",
            "device[0].timeout",
        ),
        ("site = \"a\"\n[spool]\nspill_after = \"soon\"\n", "spool.spill_after"),
        ("site = \"a\"\n[spool]\npath = \"spool.db\"\n", "spool.path"),
        (
            "site = \"a\"\n[[device]]\nid = \"gateway\"\ntype = \"sim\"\n",
            "reserved",
        ),
        (
            "site = \"a\"\n[[device]]\nid = \"u\"\ntype = \"sim\"\n[[device]]\nid = \"u\"\ntype = \"sim\"\n",
            "device[1].id: \"u\" is used by another device",
        ),
    ];
    for (text, want) in cases {
        let p = problems(text);
        assert!(
            p.iter().any(|m| m.contains(want)),
            "config {text:?}: wanted a problem containing {want:?}, got {p:?}"
        );
    }
}

#[test]
fn several_problems_reported_together() {
    let p = problems("site = \"A\"\n[mqtt]\nport = 0\nmax_batch = 0\n");
    assert_eq!(p.len(), 3, "{p:?}");
}

#[test]
fn environment_overrides_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.toml");
    std::fs::write(
        &path,
        "site = \"a\"\n[mqtt]\nhost = \"file-host\"\nport = 1883\n",
    )
    .unwrap();
    let env = vec![
        ("WARDGATE__MQTT__HOST".to_string(), "env-host".to_string()),
        ("WARDGATE__MQTT__PORT".to_string(), "1999".to_string()),
        ("OTHER".to_string(), "x".to_string()),
    ];
    let c = Config::load_with_env(&path, true, env).unwrap();
    assert_eq!(c.mqtt.host, "env-host");
    assert_eq!(c.mqtt_port(), 1999);
}

#[test]
fn named_file_must_exist() {
    let e = Config::load_with_env(Path::new("/nonexistent/w.toml"), true, vec![]).unwrap_err();
    assert!(e.to_string().contains("no such file"), "{e}");
}

/// Bytes that are not UTF-8 are an error naming the line, not U+FFFD
/// accepted in a label or a path; a file over 1 MiB is not read.
#[test]
fn config_file_must_be_utf8_and_small() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.toml");
    std::fs::write(
        &path,
        b"site = \"xa-test\"\n[mqtt]\nhost = \"127.0.0.1\"\n[web]\nusername = \"t\xffi\"\n",
    )
    .unwrap();
    let e = Config::load_with_env(&path, true, vec![]).unwrap_err();
    assert!(
        e.to_string().contains("not UTF-8") && e.to_string().contains("line 5"),
        "{e}"
    );
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(MAX_CONFIG_BYTES + 1).unwrap();
    let e = Config::load_with_env(&path, true, vec![]).unwrap_err();
    assert!(e.to_string().contains("larger than 1024 KiB"), "{e}");
}

#[test]
fn example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/wardgate.example.toml");
    let c = Config::load_with_env(&path, true, vec![]).unwrap();
    assert_eq!(c.site, "phuong-tan-phong");
    assert!(!c.devices.is_empty());
}

/// Every `[[device]]` example in the docs, and every commented-out
/// device in the example config, is a valid device.
#[test]
fn documented_device_examples_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let header = "site = \"t\"\n[mqtt]\nhost = \"localhost\"\n";
    let mut n = 0;
    for doc in ["docs/sensors.md", "docs/ups.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for block in text.split("```toml").skip(1) {
            let body = block.split("```").next().unwrap();
            if !body.contains("[[device]]") {
                continue;
            }
            let cfg = format!("{header}{body}");
            Config::from_toml(&cfg)
                .unwrap_or_else(|e| panic!("{doc}: example does not load: {e}\n{body}"));
            n += 1;
        }
    }
    // The example config: each commented block starting at "# [[device]]".
    let text = std::fs::read_to_string(root.join("config/wardgate.example.toml")).unwrap();
    let mut blocks: Vec<String> = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        if line == "# [[device]]" {
            if let Some(b) = cur.take() {
                blocks.push(b);
            }
            cur = Some(String::new());
        }
        match (&mut cur, line.strip_prefix("# ")) {
            (Some(b), Some(l)) => {
                b.push_str(l);
                b.push('\n');
            }
            (Some(_), None) => blocks.extend(cur.take()),
            _ => {}
        }
    }
    blocks.extend(cur);
    assert!(
        blocks.len() >= 8,
        "found {} commented devices",
        blocks.len()
    );
    for b in &blocks {
        let b = b.replace(
            "/etc/wardgate/nut.password",
            "/nonexistent/wardgate-test/nut.password",
        );
        Config::from_toml(&format!("{header}{b}"))
            .unwrap_or_else(|e| panic!("example config block does not load: {e}\n{b}"));
    }
    assert!(n >= 6, "only {n} doc examples");
}

/// A value a type rejects is reported and the rest is still read and
/// checked: every section and every device has its say, and a rejected
/// required key is not reported a second time as missing.
#[test]
fn rejected_values_do_not_hide_other_problems() {
    let p = problems(
        "site = \"A\"\n[mqtt]\nport = 70000\n[led]\nbackend = \"gpio\"\npin = 40\n\
         [[device]]\nid = \"u\"\ntype = \"megatec\"\nserial = \"ttyUSB0\"\n\
         [[device]]\nid = \"n\"\ntype = \"nut\"\nups = \"x\"\nport = 0\n\
         [[device]]\nid = \"g\"\ntype = \"gpio\"\n[[device.inputs]]\npin = 28\nname = \"door\"\n",
    );
    for want in [
        "site: \"A\" is not a valid id",
        "mqtt.port: 70000 is not a port (1-65535)",
        "led.pin: 40 is not a BCM GPIO number (0-27)",
        "device[0].serial: \"ttyUSB0\" must be an absolute path",
        "device[1].port: 0 is not a port (1-65535)",
        "device[2].inputs[0].pin: 28 is not a BCM GPIO number (0-27)",
    ] {
        assert!(p.iter().any(|m| m.starts_with(want)), "{want}: {p:?}");
    }
    assert!(!p.iter().any(|m| m.contains("missing")), "{p:?}");
    assert!(!p.iter().any(|m| m.contains("for key")), "{p:?}");
    assert_eq!(p.len(), 6, "{p:?}");
}

/// TLS is decided by `mqtt.tls` or the broker's place
/// alone; a TLS file with TLS off, or a password that would cross the
/// network in clear, is an error that says so.
#[test]
fn plaintext_credentials_and_tls_files_without_tls() {
    let mqtt = |lines: &str| format!("{MIN}[mqtt]\n{lines}\n");
    let login = "username = \"u\"\npassword_file = \"/etc/wardgate/mqtt.password\"\n";
    // A remote broker with TLS off and a password: refused...
    let p = problems(&mqtt(&format!(
        "host = \"ioc.example\"\ntls = false\n{login}"
    )));
    assert!(
        p.iter().any(
            |m| m.starts_with("mqtt.password_file: TLS is off (mqtt.tls = false)")
                && m.contains("ioc.example in clear")
                && m.contains("mqtt.allow_plaintext_credentials = true")
        ),
        "{p:?}"
    );
    // ...unless allowed out loud.
    let c = Config::from_toml(&mqtt(&format!(
        "host = \"ioc.example\"\ntls = false\nallow_plaintext_credentials = true\n{login}"
    )))
    .unwrap();
    assert!(!c.mqtt_tls() && c.mqtt.allow_plaintext_credentials);
    assert!(
        !Config::from_toml(MIN)
            .unwrap()
            .mqtt
            .allow_plaintext_credentials
    );
    // Loopback (by name or address) never leaves the box; TLS on is fine;
    // a user name alone is no secret.
    for ok in [
        format!("host = \"localhost\"\n{login}"),
        format!("host = \"127.0.0.1\"\ntls = false\n{login}"),
        format!("host = \"::1\"\n{login}"),
        format!("host = \"ioc.example\"\n{login}"),
        "host = \"ioc.example\"\ntls = false\nusername = \"u\"\n".to_owned(),
    ] {
        Config::from_toml(&mqtt(&ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    // TLS files with TLS off: each named, with why TLS is off.
    let files = "ca_file = \"/etc/wardgate/ca.crt\"\ncert_file = \"/etc/wardgate/c.crt\"\nkey_file = \"/etc/wardgate/c.key\"\n";
    for (host_tls, why) in [
        (
            "host = \"127.0.0.1\"\n",
            "the broker 127.0.0.1 is on loopback, where TLS is off unless mqtt.tls = true",
        ),
        ("host = \"ioc.example\"\ntls = false\n", "mqtt.tls = false"),
    ] {
        let p = problems(&mqtt(&format!("{host_tls}{files}")));
        for key in ["mqtt.ca_file", "mqtt.cert_file", "mqtt.key_file"] {
            let want = format!("{key}: set, but TLS is off ({why})");
            assert!(p.iter().any(|m| m.starts_with(&want)), "{want}: {p:?}");
        }
    }
    // Asked for on loopback: the files are used.
    let c =
        Config::from_toml(&mqtt(&format!("host = \"127.0.0.1\"\ntls = true\n{files}"))).unwrap();
    assert!(c.mqtt_tls());
}

/// No default SNMP community; a missing required key is
/// named as such.
#[test]
fn snmp_community_must_be_given() {
    let dev = "[[device]]\nid = \"r\"\ntype = \"snmp\"\nhost = \"192.168.1.1\"\n";
    let p = problems(&format!("{MIN}{dev}"));
    assert_eq!(
        p,
        vec!["device[0].community: missing (it has no default)".to_owned()]
    );
    let c = Config::from_toml(&format!("{MIN}{dev}community = \"ward-ro\"\n")).unwrap();
    match &c.devices[0] {
        DeviceConfig::Snmp(s) => assert_eq!(s.community, "ward-ro"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn web_password_file_must_be_absolute() {
    let p = problems(&format!(
        "{MIN}[web]\nusername = \"staff\"\npassword_file = \"web.pw\"\n"
    ));
    assert!(
        p.iter()
            .any(|m| m.starts_with("web.password_file: \"web.pw\" must be an absolute path")),
        "{p:?}"
    );
}

/// A prefix starting with `$` (a broker topic, or `$share/` that
/// makes the command subscription shared), with a NUL or another control
/// character, or with an empty level is refused; ordinary ones pass.
#[test]
fn mqtt_prefix_is_a_plain_topic_prefix() {
    let with = |prefix: &str| {
        problems(&format!(
            "site = \"s\"\n[mqtt]\nhost = \"127.0.0.1\"\nprefix = \"{prefix}\"\n"
        ))
    };
    for bad in [
        "$SYS",
        "$share/g/ioc",
        "io\\u0000c",
        "ioc\\u0007",
        "a//b",
        "ioc/",
        "/ioc",
        "a+b",
        "",
    ] {
        let p = with(bad);
        assert!(
            p.iter().any(|l| l.starts_with("mqtt.prefix:")),
            "{bad:?}: {p:?}"
        );
    }
    for good in ["ioc", "tinh/ioc", "province-1/ioc"] {
        let p = with(good);
        assert!(
            !p.iter().any(|l| l.starts_with("mqtt.prefix:")),
            "{good:?}: {p:?}"
        );
    }
}

/// Every secret gets the warning the web and NUT password files
/// had: the MQTT password and key and the InfluxDB token, when other users
/// of the box can read them.
#[test]
fn secrets_readable_by_others_are_warned_about() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let f = |name: &str, mode: u32| {
        let p = dir.path().join(name);
        std::fs::write(&p, "secret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p.display().to_string()
    };
    let (pw, key, cert, token) = (
        f("pw", 0o644),
        f("key", 0o604),
        f("cert", 0o644),
        f("tok", 0o640),
    );
    let cfg = Config::from_toml(&format!(
        "site = \"s\"\n[mqtt]\nhost = \"127.0.0.1\"\ntls = true\nusername = \"u\"\npassword_file = \"{pw}\"\n\
         cert_file = \"{cert}\"\nkey_file = \"{key}\"\n\
         [influxdb]\nurl = \"http://127.0.0.1:8086\"\norg = \"o\"\nbucket = \"b\"\ntoken_file = \"{token}\"\n"
    ))
    .unwrap();
    let w = cfg.secret_warnings();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].starts_with("mqtt.password_file ") && w[0].contains("chmod o-r"),
        "{w:?}"
    );
    assert!(w[1].starts_with("mqtt.key_file "), "{w:?}");
}

/// A secret file is read only by the key it was installed for,
/// whatever wrote the config. The MQTT password named by a NUT device (in
/// clear to whatever host it names) or as the InfluxDB token; one file as
/// two kinds of secret; one upsd password sent to two upsd; a `..`.
#[test]
fn secret_files_are_bound_to_their_keys() {
    let base = "site = \"s\"\n[mqtt]\nhost = \"b.example\"\nusername = \"u\"\npassword_file = \"/etc/wardgate/mqtt.password\"\n";
    let nut = |id: &str, host: &str, pw: &str| {
        format!(
            "[[device]]\nid = \"{id}\"\ntype = \"nut\"\nhost = \"{host}\"\nups = \"u\"\nusername = \"w\"\npassword_file = \"{pw}\"\n"
        )
    };
    // The docs' own layout is fine: each secret under its own name.
    let ok = format!(
        "{base}{}{}",
        nut("ups1", "127.0.0.1", "/etc/wardgate/nut.password"),
        nut("ups2", "127.0.0.1", "/etc/wardgate/nut.password")
    );
    assert_eq!(problems(&ok), Vec::<String>::new());
    let p = problems(&format!(
        "{base}{}",
        nut("evil", "203.0.113.9", "/etc/wardgate/mqtt.password")
    ));
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p[0].starts_with("device[0].password_file: /etc/wardgate/mqtt.password is the name the MQTT password is installed under"),
        "{p:?}"
    );
    assert!(p[1].contains("one file serves one kind of secret"), "{p:?}");
    // Under another name, anywhere: still one file for two kinds.
    let p = problems(
        "site = \"s\"\n[mqtt]\nhost = \"b.example\"\nusername = \"u\"\npassword_file = \"/srv/pw\"\n\
         [influxdb]\nurl = \"https://db.example\"\norg = \"o\"\nbucket = \"b\"\ntoken_file = \"/srv//./pw\"\n",
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with(
            "influxdb.token_file: /srv//./pw is also the MQTT password (mqtt.password_file)"
        ),
        "{p:?}"
    );
    // One upsd password for another upsd.
    let p = problems(&format!(
        "{base}{}{}",
        nut("ups1", "127.0.0.1", "/etc/wardgate/nut.password"),
        nut("ups2", "192.168.1.9", "/etc/wardgate/nut.password")
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("serves one upsd"), "{p:?}");
    let p = problems(&format!(
        "{base}{}",
        nut("ups1", "127.0.0.1", "/etc/wardgate/x/../mqtt.pass")
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("\"..\""), "{p:?}");
    // The web password as the MQTT key.
    let p = problems(
        "site = \"s\"\n[mqtt]\nhost = \"b.example\"\ncert_file = \"/etc/wardgate/client.crt\"\nkey_file = \"/etc/wardgate/web.password\"\n",
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("the local page's password"), "{p:?}");
}
