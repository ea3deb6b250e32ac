//! MQTT over TLS with a test CA and password auth, a wrong password and a
//! broker certificate from another CA (issue test 6).

use crate::common::*;

fn openssl(args: &[&str], dir: &std::path::Path) {
    let st = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl must be installed");
    assert!(st.success(), "openssl {args:?}");
}

/// 6. TLS with a test CA and password auth; a wrong password is logged,
/// retried with backoff, and the gateway stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_password_and_wrong_password_retries() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    crate::common::nut::make_ca(d, "ca", "wardgate test CA");
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
        d,
    );
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
        d,
    );
    let pw = d.join("passwd");
    let st = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&pw)
        .args(["ward", "s3cret-pass"])
        .status()
        .unwrap();
    assert!(st.success());
    // The broker runs as whoever runs the tests; let it read the files.
    for f in ["server.key", "passwd"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    // The broker's main listener is plain text, for the subscriber (with
    // the password); the gateway talks TLS to a second listener.
    let broker = Broker::start_with_second_listener(
        &format!("allow_anonymous false\npassword_file {}\n", pw.display()),
        &format!(
            "cafile {}\ncertfile {}\nkeyfile {}\n",
            d.join("ca.pem").display(),
            d.join("server.pem").display(),
            d.join("server.key").display()
        ),
    );
    let tls_port = broker.second_port.expect("the TLS listener");
    let sub = Subscriber::start_login(
        broker.port,
        "ioc",
        &test_site(),
        Some(("ward", "s3cret-pass")),
    )
    .await;
    std::fs::write(d.join("good"), "s3cret-pass\n").unwrap();
    std::fs::write(d.join("bad"), "wrong\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tls = |pwfile: &str| {
        config_text(tls_port, dir.path(), &sim("ups1", "50ms", ""))
                .replace(
                    "[mqtt]\n",
                    &format!(
                        "[mqtt]\ntls = true\nca_file = \"{}\"\nusername = \"ward\"\npassword_file = \"{}\"\n",
                        d.join("ca.pem").display(),
                        d.join(pwfile).display()
                    ),
                )
            .replace("host = \"127.0.0.1\"", "host = \"localhost\"")
    };
    let cfg = wardgate::config::Config::from_toml(&tls("good")).unwrap();
    let gw = Gateway::start(cfg).await;
    eventually(WAIT, "acknowledged over TLS", || {
        gw.status.get().uplink.acked >= 20
    })
    .await;
    assert!(gw.status.get().uplink.connected);
    eventually(WAIT, "received through the broker", || {
        sub.seqs("ups1").len() >= 20
    })
    .await;
    gw.stop().await;
    eventually(WAIT, "offline status after the stop", || {
        sub.statuses().iter().any(|m| m.body["state"] == "offline")
    })
    .await;
    sub.assert_all_valid();
    assert_contiguous(&sub.seqs("ups1"), 0, "ups1 over TLS");

    let dir2 = tempfile::tempdir().unwrap();
    let text = tls("bad").replace(
        &dir.path().join("spool.db").display().to_string(),
        &dir2.path().join("spool.db").display().to_string(),
    );
    let gw = Gateway::start(wardgate::config::Config::from_toml(&text).unwrap()).await;
    eventually(WAIT, "login refused, reported", || {
        gw.status
            .get()
            .uplink
            .last_error
            .is_some_and(|e| e.contains("refused the login"))
    })
    .await;
    eventually(WAIT, "retried", || gw.status.get().uplink.attempts >= 3).await;
    assert!(
        gw.is_running(),
        "a wrong password does not stop the gateway"
    );
    assert!(!gw.status.get().uplink.connected);
    assert_eq!(gw.status.get().uplink.acked, 0);
    // Readings are kept meanwhile.
    eventually(WAIT, "readings kept on disk", || {
        gw.spool.stats().disk_rows > 0
    })
    .await;
    gw.stop().await;

    // A broker certificate from another CA: a TLS error in plain words,
    // retried, the gateway stays up.
    crate::common::nut::make_ca(d, "other", "some other CA");
    let dir3 = tempfile::tempdir().unwrap();
    let text = tls("good")
        .replace(
            &dir.path().join("spool.db").display().to_string(),
            &dir3.path().join("spool.db").display().to_string(),
        )
        .replace(
            &d.join("ca.pem").display().to_string(),
            &d.join("other.pem").display().to_string(),
        );
    let gw = Gateway::start(wardgate::config::Config::from_toml(&text).unwrap()).await;
    eventually(WAIT, "certificate rejected, reported", || {
        gw.status
            .get()
            .uplink
            .last_error
            .is_some_and(|e| e.contains("TLS") && e.contains("certificate"))
    })
    .await;
    eventually(WAIT, "retried", || gw.status.get().uplink.attempts >= 2).await;
    assert!(gw.is_running());
    assert_eq!(gw.status.get().uplink.acked, 0);
    gw.stop().await;
}
