//! The remote-change policy against the attacks it is for, and the changes
//! it must let through.

use super::*;

const BASE: &str = r#"
site = "s"
[mqtt]
host = "broker.example"
port = 8883
prefix = "ioc"
[spool]
path = "/var/lib/wardgate/spool.db"
[gateway]
telemetry_interval = "60s"

[[device]]
id = "ups1"
type = "nut"
host = "127.0.0.1"
ups = "myups"
interval = "5s"

[[device]]
id = "room"
type = "modbus"
serial = "/dev/ttyUSB0"
profile = "xy-md02"
interval = "30s"

[[device]]
id = "router"
type = "snmp"
host = "192.168.1.1"
community = "public"
interval = "30s"
"#;

fn cfg(text: &str) -> Config {
    Config::from_toml(text).unwrap_or_else(|e| panic!("{}\n{text}", e.problems().join("\n")))
}

/// The keys `policy` refuses when BASE becomes `new`.
fn refused_by(policy: &Policy, new: &str) -> Vec<String> {
    policy
        .refusals(BASE, &cfg(BASE), new, &cfg(new))
        .into_iter()
        .map(|r| r.key)
        .collect()
}

fn refused(new: &str) -> Vec<String> {
    refused_by(&Policy::built_in(), new)
}

#[test]
fn intervals_thresholds_and_words_may_change() {
    let new = BASE
        .replace("interval = \"5s\"", "interval = \"10s\"")
        .replace(
            "telemetry_interval = \"60s\"",
            "telemetry_interval = \"30s\"",
        )
        .replace("community = \"public\"", "community = \"ward\"")
        + r#"
[[device.threshold]]
value = "ifwan.in_bps"
high = 1000.0
label = "đường truyền"
"#;
    assert_eq!(refused(&new), Vec::<String>::new());
    // The same file: nothing changed, nothing refused.
    assert_eq!(refused(BASE), Vec::<String>::new());
}

#[test]
fn a_nut_device_sending_a_secret_elsewhere_is_refused() {
    let new = BASE.to_owned()
        + r#"
[[device]]
id = "evil"
type = "nut"
host = "203.0.113.9"
ups = "x"
username = "u"
password_file = "/etc/wardgate/broker.pw"
"#;
    assert_eq!(
        refused(&new),
        [
            "device.evil.host",
            "device.evil.password_file",
            "device.evil.username"
        ]
    );
}

#[test]
fn the_influxdb_url_and_token_are_refused() {
    let new = BASE.to_owned()
        + "[influxdb]\nurl = \"https://203.0.113.9\"\ntoken_file = \"/etc/wardgate/token.pw\"\norg = \"o\"\nbucket = \"b\"\n";
    assert_eq!(
        refused(&new),
        ["influxdb.token_file", "influxdb.url"],
        "org and bucket alone are allowed"
    );
}

#[test]
fn power_commands_web_led_files_and_the_broker_are_refused() {
    let new = BASE.replace(
        "[spool]\npath = \"/var/lib/wardgate/spool.db\"",
        "[spool]\npath = \"/etc/wardgate/wardgate.toml\"",
    )
    .replace("host = \"broker.example\"", "host = \"broker.example\"\nca_file = \"/etc/wardgate/wardgate.toml\"\nclient_id = \"other\"")
        + "[commands]\nenabled = false\n[web]\nenabled = false\n[led]\nbackend = \"none\"\n[power]\nups = \"ups1\"\nshutdown_command = [\"/bin/sh\", \"-c\", \"id\"]\nups_off_delay = \"0s\"\n";
    assert_eq!(
        refused(&new),
        [
            "commands.enabled",
            "led.backend",
            "mqtt.ca_file",
            "mqtt.client_id",
            "power.shutdown_command",
            "power.ups",
            "power.ups_off_delay",
            "spool.path",
            "web.enabled",
        ]
    );
    let moved = BASE.replace("host = \"broker.example\"", "host = \"elsewhere.example\"");
    assert_eq!(refused(&moved), ["mqtt.host"]);
}

#[test]
fn devices_may_be_added_on_known_endpoints_and_removed() {
    // Another unit on the same RS-485 bus, another UPS on the same upsd,
    // a probe of the broker: allowed.
    let new = BASE.to_owned()
        + r#"
[[device]]
id = "meter"
type = "modbus"
serial = "/dev/ttyUSB0"
profile = "sdm120"
baud = 9600
unit = 2

[[device]]
id = "ups2"
type = "nut"
ups = "other"

[[device]]
id = "wan"
type = "probe"
[[device.targets]]
name = "broker"
address = "broker.example:8883"
method = "tcp"
"#;
    assert_eq!(refused(&new), Vec::<String>::new());
    // Removing one: allowed.
    let cut = BASE.split("[[device]]\nid = \"router\"").next().unwrap();
    assert_eq!(refused(cut), Vec::<String>::new());
    // Another serial port, another host, a probe of another host: refused.
    let new = BASE.to_owned()
        + r#"
[[device]]
id = "ups9"
type = "megatec"
serial = "/dev/ttyS9"

[[device]]
id = "tcp9"
type = "modbus"
transport = "tcp"
host = "198.51.100.7"
profile = "sdm120"

[[device]]
id = "wan"
type = "probe"
[[device.targets]]
name = "x"
address = "198.51.100.8"
method = "icmp"
"#;
    assert_eq!(
        refused(&new),
        [
            "device.tcp9.host",
            "device.ups9.serial",
            "device.wan.targets"
        ]
    );
}

#[test]
fn a_device_is_not_moved_off_its_endpoint_or_with_its_login() {
    let new = BASE.replace("serial = \"/dev/ttyUSB0\"", "serial = \"/dev/ttyUSB7\"");
    assert_eq!(refused(&new), ["device.room.serial"]);
    // Onto an endpoint the config has: allowed...
    let new = BASE.replace(
        "host = \"192.168.1.1\"\ncommunity",
        "host = \"127.0.0.1\"\ncommunity",
    );
    assert_eq!(refused(&new), Vec::<String>::new());
    // ...unless the device logs in (its password would follow it).
    let login = BASE.replace(
        "ups = \"myups\"",
        "ups = \"myups\"\nusername = \"u\"\npassword_file = \"/etc/wardgate/nut.password\"",
    );
    let moved = login.replace("host = \"127.0.0.1\"\nups", "host = \"192.168.1.1\"\nups");
    let p = Policy::built_in();
    let keys: Vec<String> = p
        .refusals(&login, &cfg(&login), &moved, &cfg(&moved))
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(keys, ["device.ups1.host"]);
    // Turning TLS off (or on) is not a remote change either.
    let tls = BASE.replace("ups = \"myups\"", "ups = \"myups\"\ntls = false");
    assert_eq!(refused(&tls), ["device.ups1.tls"]);
}

#[test]
fn a_device_of_another_kind_under_the_same_id_is_a_new_device() {
    let new = BASE.replace(
        "id = \"router\"\ntype = \"snmp\"\nhost = \"192.168.1.1\"\ncommunity = \"public\"",
        "id = \"router\"\ntype = \"system\"\nthermal_path = \"/etc/wardgate/mqtt.password\"",
    );
    assert_eq!(refused(&new), ["device.router.thermal_path"]);
}

fn policy_file(text: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("remote-change.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    (dir, path)
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn the_policy_file_widens_and_narrows() {
    assert_eq!(
        Policy::load(Path::new("/nonexistent/wardgate-policy.toml")).unwrap(),
        Policy::built_in()
    );
    if !root() {
        // Only root's files are trusted; the next test shows another's
        // file refused.
        eprintln!("not root: the policy file's widening is not tried here");
        return;
    }
    let (_d, path) = policy_file(
        "allow = [\"mqtt.host\", \"device.*.host\"]\ndeny = [\"gateway\"]\n",
        0o644,
    );
    let p = Policy::load(&path).unwrap();
    assert!(p
        .describe()
        .contains("allow [mqtt.host, device.*.host], deny [gateway]"));
    let new = BASE
        .replace("host = \"broker.example\"", "host = \"elsewhere.example\"")
        .replace("host = \"192.168.1.1\"", "host = \"192.168.9.9\"")
        .replace(
            "telemetry_interval = \"60s\"",
            "telemetry_interval = \"30s\"",
        );
    assert_eq!(refused_by(&p, &new), ["gateway.telemetry_interval"]);
    assert_eq!(
        refused(&new),
        ["device.router.host", "mqtt.host"],
        "built in"
    );
}

#[test]
fn a_policy_file_others_can_write_or_that_does_not_parse_allows_nothing() {
    let (_d, path) = policy_file("allow = [\"power\"]\n", 0o666);
    let e = Policy::load(&path).unwrap_err().to_string();
    assert!(e.contains("not trusted"), "{e}");
    if root() {
        let (_d, path) = policy_file("allow = [\"power..ups\"]\n", 0o644);
        let e = Policy::load(&path).unwrap_err().to_string();
        assert!(e.contains("not a key pattern"), "{e}");
        let (_d, path) = policy_file("permit = [\"power\"]\n", 0o644);
        let e = Policy::load(&path).unwrap_err().to_string();
        assert!(e.contains("unknown field"), "{e}");
        // A link to a trusted file is not the file.
        let (d, path) = policy_file("allow = [\"power\"]\n", 0o644);
        let link = d.path().join("link.toml");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let e = Policy::load(&link).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    } else {
        // Not root: the file is the caller's, never trusted.
        let (_d, path) = policy_file("allow = [\"power\"]\n", 0o644);
        let e = Policy::load(&path).unwrap_err().to_string();
        assert!(e.contains("not owned by root"), "{e}");
    }
}
