//! NUT over TLS against the real upsd (Debian's nut-server 2.8, built with
//! NSS): `tls = true` makes the gateway say `STARTTLS` and check upsd's
//! certificate before anything else, so a relay between the two never
//! sees the login; a certificate from another CA, or a upsd without one,
//! is a device fault in plain words, and the gateway never falls back to
//! clear text. And `wardgate check` warns about a login sent in clear
//! text to another box.

use std::path::Path;

use crate::common::devices::Relay;
use crate::common::nut::{make_ca, NutServer, UpsdCert, CMD_PASSWORD, CMD_USER};
use crate::common::*;
use wardgate::model::Health;

const DUMMY: &str =
    "ups.status: OL\nbattery.charge: 100\nbattery.runtime: 1800\nups.serial: 0123\n";

/// A NUT device with upsd's login, `extra` lines after (tls, ca_file).
fn device(host: &str, port: u16, password_file: &Path, extra: &str) -> String {
    format!(
        "[[device]]\nid = \"ups2\"\ntype = \"nut\"\nhost = \"{host}\"\nport = {port}\nups = \"dummy\"\n\
         interval = \"300ms\"\ntimeout = \"2s\"\nusername = \"{CMD_USER}\"\npassword_file = \"{}\"\n{extra}\n",
        password_file.display()
    )
}

fn password_file(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let p = dir.join("nut.password");
    std::fs::write(&p, format!("{CMD_PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn tls_on(ca: &Path) -> String {
    format!("tls = true\nca_file = \"{}\"", ca.display())
}

/// `wardgate check` (the real binary) on `text`: exit code and output.
async fn check(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.toml");
    std::fs::write(&p, text).unwrap();
    let out = within(
        WAIT,
        "wardgate check",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_wardgate"))
            .args(["check", "--config"])
            .arg(&p)
            .output(),
    )
    .await
    .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// What went through the relay in clear text, STARTTLS aside: none of
/// NUT's words and not the password may be in it.
fn assert_no_clear_text(said: &str, what: &str) {
    for secret in [
        "USERNAME",
        "PASSWORD",
        CMD_USER,
        CMD_PASSWORD,
        "LIST VAR",
        "LOGIN",
        "SET VAR",
        "GET VAR",
        "INSTCMD",
    ] {
        assert!(
            !said.contains(secret),
            "{what}: {secret:?} crossed the relay in clear text: {said:?}"
        );
    }
    assert!(said.starts_with("STARTTLS\n"), "{what}: {said:?}");
}

/// (a) upsd with a certificate, the gateway with its CA: readings reach
/// MQTT, `wardgate check` reads the UPS and upsd accepts the login (so the
/// password arrived whole, inside TLS), and the relay in between saw
/// STARTTLS, then only TLS: never the user, the password, nor a command.
/// (Run against a build whose connect skipped STARTTLS, it fails at the
/// relay check: "USERNAME" crossed the relay in clear text.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nut_over_tls_keeps_the_login_secret() {
    let cert = UpsdCert::make();
    let nut = NutServer::start_with(DUMMY, &cert.upsd_conf(), "");
    let relay = Relay::start(nut.port).await;
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "ioc").await;
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path());
    let dev = device("127.0.0.1", relay.port, &pw, &tls_on(&cert.ca));
    let gw = Gateway::start(config(broker.port, dir.path(), &dev)).await;
    if !wait_for(WAIT, || sub.seqs("ups2").len() >= 2).await {
        panic!(
            "no ups2 samples over TLS within {WAIT:?}; the device: {:?}",
            gw.status.get().devices.get("ups2").map(|d| &d.health)
        );
    }
    let (_, s) = sub.samples("ups2").last().cloned().unwrap();
    assert_eq!(s["values"]["ups.status"], "OL");
    assert_eq!(s["values"]["battery.charge"], 100.0);
    assert_eq!(gw.status.get().devices["ups2"].health, Health::Ok);
    gw.stop().await;
    sub.assert_all_valid();

    let text = config_text(closed_port().port, dir.path(), &dev);
    let (code, out) = check(&text).await;
    assert!(out.contains("device ups2 (nut): ok"), "{out}");
    assert!(out.contains("ups.status = \"OL\""), "{out}");
    assert!(
        out.contains(&format!("login: ok: upsd accepts user \"{CMD_USER}\"")),
        "{out}"
    );
    assert!(!out.contains("clear text"), "no warning with TLS: {out}");
    assert_eq!(code, Some(0), "{out}");

    assert_no_clear_text(&relay.sent(), "tls on");
}

/// (b) upsd's certificate is from another CA than the gateway's
/// `ca_file`: a device fault naming the certificate problem; nothing but
/// STARTTLS and the TLS handshake crossed the relay (no login, no
/// command), however often the gateway tries again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_a_fault() {
    let cert = UpsdCert::make();
    let other = tempfile::tempdir().unwrap();
    let other_ca = make_ca(other.path(), "other", "some other CA");
    let nut = NutServer::start_with(DUMMY, &cert.upsd_conf(), "");
    let relay = Relay::start(nut.port).await;
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path());
    let dev = device("127.0.0.1", relay.port, &pw, &tls_on(&other_ca));
    let no_broker = closed_port();
    let gw = Gateway::start(config(no_broker.port, dir.path(), &dev)).await;
    eventually(WAIT, "a fault naming the certificate", || {
        matches!(&gw.status.get().devices["ups2"].health,
            Health::Fault(r) if r.contains("certificate was refused")
                && r.contains("not signed by a CA the gateway trusts")
                && r.contains("nothing more was sent (no login)"))
    })
    .await;
    // It tries again at each interval, and fails the same way.
    eventually(WAIT, "a second attempt", || {
        relay.sent().matches("STARTTLS\n").count() >= 2
    })
    .await;
    assert_eq!(gw.status.get().devices["ups2"].samples, 0);
    gw.stop().await;
    assert_no_clear_text(&relay.sent(), "wrong CA");
}

/// (c) upsd without a certificate answers STARTTLS with ERR
/// FEATURE-NOT-CONFIGURED: a device fault saying upsd does not offer TLS,
/// and STARTTLS is all the relay ever sees (no login, no fall back to
/// clear text); `wardgate check` says the same and exits 69. (Run against
/// a build that went on in clear text after the ERR, it fails: "USERNAME"
/// crossed the relay.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_upsd_without_tls_is_a_fault_and_never_gets_the_login() {
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = make_ca(ca_dir.path(), "ca", "wardgate NUT test CA");
    let nut = NutServer::start(DUMMY);
    let relay = Relay::start(nut.port).await;
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path());
    let dev = device("127.0.0.1", relay.port, &pw, &tls_on(&ca));
    let no_broker = closed_port();
    let gw = Gateway::start(config(no_broker.port, dir.path(), &dev)).await;
    eventually(WAIT, "a fault: upsd does not offer TLS", || {
        matches!(&gw.status.get().devices["ups2"].health,
            Health::Fault(r) if r.contains("upsd does not offer TLS")
                && r.contains("ERR FEATURE-NOT-CONFIGURED")
                && r.contains("CERTPATH"))
    })
    .await;
    eventually(WAIT, "a second attempt", || {
        relay.sent().matches("STARTTLS\n").count() >= 2
    })
    .await;
    gw.stop().await;

    let (code, out) = check(&config_text(no_broker.port, dir.path(), &dev)).await;
    assert!(
        out.contains("device ups2 (nut): NOT REACHABLE: upsd does not offer TLS"),
        "{out}"
    );
    assert_eq!(code, Some(69), "{out}");

    let said = relay.sent();
    assert_no_clear_text(&said, "upsd without TLS");
    assert!(
        said.split("STARTTLS\n").all(str::is_empty),
        "only STARTTLS, ever: {said:?}"
    );
}

/// (d) A login that would go without TLS to upsd on another address than
/// loopback: `wardgate check` warns from the config alone (even
/// `--config-only`, and whether upsd answers or not), saying how to fix
/// it, without failing; with upsd on 127.0.0.1, or with tls on, it does
/// not warn. 192.0.2.1 is a documentation address nothing answers on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_about_a_login_in_clear_text() {
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path());
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "").unwrap();
    let no_broker = closed_port();
    let check_only = |text: String| async move {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("w.toml");
        std::fs::write(&p, text).unwrap();
        let out = within(
            WAIT,
            "wardgate check --config-only",
            tokio::process::Command::new(env!("CARGO_BIN_EXE_wardgate"))
                .args(["check", "--config-only", "--config"])
                .arg(&p)
                .output(),
        )
        .await
        .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let lan = device("192.0.2.1", 3493, &pw, "");
    let (code, out) = check_only(config_text(no_broker.port, dir.path(), &lan)).await;
    assert!(
        out.contains(
            "warning: device ups2: the upsd login (username and password) goes to 192.0.2.1 in clear text; set tls = true"
        ),
        "{out}"
    );
    assert_eq!(code, Some(0), "a warning, not an error: {out}");
    let local = device("127.0.0.1", 3493, &pw, "");
    let (code, out) = check_only(config_text(no_broker.port, dir.path(), &local)).await;
    assert!(!out.contains("clear text"), "{out}");
    assert_eq!(code, Some(0), "{out}");
    let with_tls = device("192.0.2.1", 3493, &pw, &tls_on(&ca));
    let (code, out) = check_only(config_text(no_broker.port, dir.path(), &with_tls)).await;
    assert!(!out.contains("clear text"), "{out}");
    assert_eq!(code, Some(0), "{out}");
    // No login, but readings from another box in clear text can
    // be forged: warned too.
    let no_login =
        "[[device]]\nid = \"ups3\"\ntype = \"nut\"\nhost = \"192.0.2.1\"\nups = \"dummy\"\n";
    let (code, out) = check_only(config_text(no_broker.port, dir.path(), no_login)).await;
    assert!(
        out.contains("warning: device ups3: upsd on 192.0.2.1 is read in clear text")
            && out.contains("forge"),
        "{out}"
    );
    assert_eq!(code, Some(0), "a warning, not an error: {out}");
}

/// A password file with a line break (a PEM key named as the
/// password, or a file with a second line) went out whole, line by line,
/// each line a command to upsd. Now the device faults naming the password
/// (not its content) and nothing of it crosses: the relay sees the
/// USERNAME and no PASSWORD. (Run against the old build, it fails: the
/// key's lines crossed the relay.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_with_a_line_break_is_refused_not_sent() {
    let nut = NutServer::start(DUMMY);
    let relay = Relay::start(nut.port).await;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("key.pem");
    std::fs::write(
        &pw,
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let dev = device("127.0.0.1", relay.port, &pw, "");
    let no_broker = closed_port();
    let gw = Gateway::start(config(no_broker.port, dir.path(), &dev)).await;
    eventually(WAIT, "a fault naming the password", || {
        matches!(&gw.status.get().devices["ups2"].health,
            Health::Fault(r) if r.contains("the password holds a line break"))
    })
    .await;
    eventually(WAIT, "a second attempt", || {
        relay.sent().matches("USERNAME").count() >= 2
    })
    .await;
    gw.stop().await;
    let said = relay.sent();
    assert!(
        !said.contains("PASSWORD"),
        "a password line crossed: {said:?}"
    );
    assert!(
        !said.contains("MIIE") && !said.contains("PRIVATE KEY"),
        "{said:?}"
    );
}
