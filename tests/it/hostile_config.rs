//! Config values that passed `wardgate check` and
//! broke at run time, and credentials that went out in clear without a
//! word. Each bad value is given to the real binary's `wardgate check`,
//! which must refuse it (exit 78) with a line naming the key and what is
//! allowed. The allowed edges still run against a real mosquitto.

use std::path::Path;
use std::time::Duration;

use crate::common::*;

/// Runs `wardgate check --config <file with text>`: the exit code and
/// everything it printed (stdout and stderr).
async fn check(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wardgate.toml");
    std::fs::write(&path, text).unwrap();
    let out = within(
        Duration::from_secs(60),
        "wardgate check",
        wardgate_check_output(&path),
    )
    .await;
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A config a test can check: loopback broker (nothing listens there:
/// `check` does not connect to it), spool in `dir`, `extra` appended.
fn base(dir: &Path, mqtt: &str, extra: &str) -> String {
    format!(
        "site = \"xa-hostile\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\n{mqtt}\n\
         [spool]\npath = \"{}\"\n[web]\nenabled = false\n[led]\nbackend = \"none\"\n\
         [gateway]\nsystem_health = false\n{extra}\n",
        free_port(),
        dir.join("spool.db").display()
    )
}

/// `check` refuses `text` as a bad config (exit 78) with one problem line
/// that holds every string of `want` (the key and the allowed range).
async fn refused(what: &str, text: &str, want: &[&str]) {
    let (code, out) = check(text).await;
    assert_eq!(code, Some(78), "{what}: exit code; output:\n{out}");
    assert!(
        out.lines().any(|l| want.iter().all(|w| l.contains(w))),
        "{what}: no line with all of {want:?}; output:\n{out}"
    );
}

/// Item 4: `backlog_rate = 1e-300` killed the publisher while the link
/// showed connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_a_backlog_rate_near_zero() {
    let dir = tempfile::tempdir().unwrap();
    for (what, rate) in [
        ("1e-300", "1e-300"),
        ("zero", "0.0"),
        ("below 1", "0.5"),
        ("nan", "nan"),
        ("inf", "inf"),
        ("huge", "1e300"),
    ] {
        refused(
            what,
            &base(dir.path(), &format!("backlog_rate = {rate}"), ""),
            &[
                "mqtt.backlog_rate",
                "between 1 and 10000 messages per second",
            ],
        )
        .await;
    }
}

/// Item 4: a keep-alive of 65,536 s or more does not fit MQTT's 16-bit
/// field and wrapped to 0, which turns keep-alive off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_a_keep_alive_mqtt_cannot_carry() {
    let dir = tempfile::tempdir().unwrap();
    for ka in ["65536s", "65537s", "100000s", "1year"] {
        refused(
            ka,
            &base(dir.path(), &format!("keep_alive = \"{ka}\""), ""),
            &["mqtt.keep_alive", "between 5s and 18h 12m 15s"],
        )
        .await;
    }
}

/// Item 4: a huge `max_age` wrapped and would have deleted every record
/// once the clock synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_a_huge_spool_max_age() {
    let dir = tempfile::tempdir().unwrap();
    for age in ["300000000years", "11years", "18446744073709551615s"] {
        refused(
            age,
            &base(dir.path(), "", "")
                .replace("[spool]\n", &format!("[spool]\nmax_age = \"{age}\"\n")),
            &["spool.max_age", "between 1m and 10years"],
        )
        .await;
    }
}

/// Item 4, the same hole elsewhere: a device interval so long that the
/// timers built from it overflow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_a_huge_device_interval() {
    let dir = tempfile::tempdir().unwrap();
    refused(
        "interval",
        &base(
            dir.path(),
            "",
            "[[device]]\nid = \"ups1\"\ntype = \"sim\"\ninterval = \"300000000years\"\n",
        ),
        &["device[0].interval", "between 1ms and 1day"],
    )
    .await;
}

/// Item 7: a password to a remote broker without TLS went out in clear
/// and `check` said nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_plaintext_credentials_to_a_remote_broker() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("mqtt.password");
    std::fs::write(&pw, "secret\n").unwrap();
    let login = format!(
        "tls = false\nusername = \"ward\"\npassword_file = \"{}\"",
        pw.display()
    );
    let remote = |extra: &str| {
        base(dir.path(), &format!("{login}\n{extra}"), "")
            .replace("host = \"127.0.0.1\"", "host = \"192.0.2.10\"")
    };
    refused(
        "tls = false, remote, password",
        &remote(""),
        &[
            "mqtt.password_file",
            "TLS is off",
            "mqtt.allow_plaintext_credentials = true",
        ],
    )
    .await;
    // Said out loud: accepted.
    let (code, out) = check(&remote("allow_plaintext_credentials = true")).await;
    assert_eq!(code, Some(0), "{out}");
    // On loopback the password never leaves the box: accepted as before.
    let (code, out) = check(&base(dir.path(), &login, "")).await;
    assert_eq!(code, Some(0), "{out}");
}

/// Item 7: a `ca_file` with a loopback broker (where TLS is off unless
/// asked for) silently meant no TLS at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_tls_files_when_tls_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not read by check").unwrap();
    for (what, mqtt, key) in [
        (
            "loopback, tls unset, ca_file",
            format!("ca_file = \"{}\"", ca.display()),
            "mqtt.ca_file",
        ),
        (
            "tls = false, ca_file",
            format!("tls = false\nca_file = \"{}\"", ca.display()),
            "mqtt.ca_file",
        ),
        (
            "loopback, client certificate",
            format!("cert_file = \"{0}\"\nkey_file = \"{0}\"", ca.display()),
            "mqtt.cert_file",
        ),
    ] {
        refused(
            what,
            &base(dir.path(), &mqtt, ""),
            &[key, "TLS is off", "mqtt.tls = true"],
        )
        .await;
    }
    // Asked for: accepted (check does not connect).
    let (code, out) = check(&base(
        dir.path(),
        &format!("tls = true\nca_file = \"{}\"", ca.display()),
        "",
    ))
    .await;
    assert_eq!(code, Some(0), "{out}");
}

/// Item 7: the SNMP community defaulted to `public`; now it must be given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_an_snmp_device_without_a_community() {
    let dir = tempfile::tempdir().unwrap();
    refused(
        "no community",
        &base(
            dir.path(),
            "",
            &format!(
                "[[device]]\nid = \"router\"\ntype = \"snmp\"\nhost = \"127.0.0.1\"\nport = {}\n\
                 timeout = \"100ms\"\nretries = 0\n",
                free_port()
            ),
        ),
        &["device[0].community", "missing"],
    )
    .await;
}

/// The allowed edges run: a gateway with keep_alive = 65535 s (the most
/// MQTT can carry), the longest max_age and the fastest backlog_rate
/// connects to a real mosquitto, which sees the keep-alive unwrapped, and
/// publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_values_run_against_a_real_broker() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        broker.port,
        dir.path(),
        "[[device]]\nid = \"ups1\"\ntype = \"sim\"\ninterval = \"100ms\"\n",
    )
    .replace(
        "[mqtt]\n",
        "[mqtt]\nkeep_alive = \"65535s\"\nbacklog_rate = 10000.0\n",
    )
    .replace("[spool]\n", "[spool]\nmax_age = \"10years\"\n");
    let cfg = wardgate::config::Config::from_toml(&text).expect("edge values are valid");
    let gw = Gateway::start(cfg).await;
    eventually(WAIT, "samples from ups1", || sub.samples("ups1").len() >= 3).await;
    eventually(WAIT, "the broker saw keep-alive 65535", || {
        broker.log().contains("k65535)")
    })
    .await;
    gw.stop().await;
    sub.assert_all_valid();
}

/// Every file a config names goes through one reader (src/host/file.rs):
/// a device such as /dev/zero, a FIFO, a directory, or a secret reached
/// through a link is a config error naming the key, from `check` and from
/// `run` alike, before anything is read (before, /dev/zero as a password
/// was read to the end of memory by the first connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_files_that_are_not_regular_files_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let real = dir.path().join("real.password");
    std::fs::write(&real, "pw\n").unwrap();
    let link = dir.path().join("link.password");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let cases = [
        (
            "mqtt.password_file = /dev/zero",
            base(dir.path(), "username = \"u\"\npassword_file = \"/dev/zero\"", ""),
            vec!["mqtt.password_file", "/dev/zero", "character device"],
        ),
        (
            "mqtt.ca_file = a FIFO",
            base(dir.path(), &format!("ca_file = \"{}\"", fifo.display()), ""),
            vec!["mqtt.ca_file", "FIFO"],
        ),
        (
            "mqtt.password_file through a link",
            base(
                dir.path(),
                &format!("username = \"u\"\npassword_file = \"{}\"", link.display()),
                "",
            ),
            vec!["mqtt.password_file", "symbolic link"],
        ),
        (
            "web.password_file = a directory",
            base(dir.path(), "", "")
                .replace("[web]\nenabled = false", "[web]\nenabled = false\nusername = \"u\"\npassword_file = \"/etc\""),
            vec!["web.password_file", "directory"],
        ),
        (
            "influxdb.token_file = /dev/zero",
            base(
                dir.path(),
                "",
                "[influxdb]\nurl = \"http://127.0.0.1:8086\"\norg = \"o\"\nbucket = \"b\"\ntoken_file = \"/dev/zero\"",
            ),
            vec!["influxdb.token_file", "/dev/zero"],
        ),
        (
            "a NUT password_file = /dev/zero",
            base(
                dir.path(),
                "",
                "[[device]]\nid = \"ups1\"\ntype = \"nut\"\nhost = \"127.0.0.1\"\nups = \"u\"\n\
                 username = \"w\"\npassword_file = \"/dev/zero\"",
            ),
            vec!["device[0].password_file", "/dev/zero"],
        ),
        (
            "the Pi health thermal_path = /dev/zero",
            base(
                dir.path(),
                "",
                "[[device]]\nid = \"pi\"\ntype = \"system\"\nthermal_path = \"/dev/zero\"",
            ),
            vec!["device[0].thermal_path", "/dev/zero"],
        ),
    ];
    for (what, text, want) in &cases {
        refused(what, text, want).await;
    }
    // `run` refuses the same config (exit 78) before it reads the file.
    let (what, text, want) = &cases[0];
    let path = dir.path().join("run.toml");
    std::fs::write(&path, text).unwrap();
    let out = within(
        Duration::from_secs(60),
        "wardgate run",
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_wardgate"))
                .args(["run", "--config"])
                .arg(&path)
                .output()
                .unwrap()
        }),
    )
    .await
    .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(78),
        "{what}: run's exit code; output:\n{text}"
    );
    assert!(
        text.lines().any(|l| want.iter().all(|w| l.contains(w))),
        "{what}: run said:\n{text}"
    );
}
