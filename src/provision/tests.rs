//! Unit tests of provisioning: safe reading of card files, what counts as
//! the same broker, temp files, quarantine pruning. The real binary is
//! tested in tests/it/install.rs.

use super::*;
use std::os::unix::fs::PermissionsExt;

const GOOD: &str = "site = \"xa-test\"\n[mqtt]\nhost = \"ioc.example\"\nport = 8883\n\
                    ca_file = \"/etc/wardgate/ca.crt\"\n";

fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let boot = t.path().join("boot/firmware");
    let etc = t.path().join("etc/wardgate");
    std::fs::create_dir_all(&boot).unwrap();
    (t, boot, etc)
}

#[test]
fn valid_config_is_moved_with_its_files() {
    let (_t, boot, etc) = dirs();
    std::fs::write(boot.join(CONFIG_NAME), GOOD).unwrap();
    std::fs::write(boot.join("wardgate-ca.crt"), "CA").unwrap();
    let r = provision(&[boot.clone(), PathBuf::from("/nonexistent")], &etc).unwrap();
    assert!(matches!(r, Outcome::Installed { .. }), "{r:?}");
    assert_eq!(
        std::fs::read_to_string(etc.join(CONFIG_NAME)).unwrap(),
        GOOD
    );
    assert_eq!(std::fs::read_to_string(etc.join("ca.crt")).unwrap(), "CA");
    for f in [CONFIG_NAME, "ca.crt"] {
        let mode = std::fs::metadata(etc.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640, "{f}");
    }
    // Nothing secret left on the card; the result says OK in both languages.
    assert!(!boot.join(CONFIG_NAME).exists());
    assert!(!boot.join("wardgate-ca.crt").exists());
    let res = std::fs::read_to_string(boot.join(RESULT_NAME)).unwrap();
    assert!(res.starts_with("OK "), "{res}");
    assert!(
        res.contains("Đã cài") && res.contains("installed (site xa-test"),
        "{res}"
    );
    // Again: nothing on the card, nothing to do; the install stays.
    assert_eq!(
        provision(std::slice::from_ref(&boot), &etc).unwrap(),
        Outcome::Nothing
    );
    assert!(etc.join(CONFIG_NAME).exists());
}

#[test]
fn invalid_config_stays_on_the_card_with_the_errors() {
    let (_t, boot, etc) = dirs();
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join(CONFIG_NAME), "old").unwrap();
    let bad = "site = \"Xa Test\"\n[mqtt]\nhost = \"ioc.example\"\nport = 70000\n";
    std::fs::write(boot.join(CONFIG_NAME), bad).unwrap();
    let e = provision(std::slice::from_ref(&boot), &etc).unwrap_err();
    assert!(matches!(e, ProvisionError::Invalid { .. }));
    // The old config is untouched, the bad one still on the card.
    assert_eq!(
        std::fs::read_to_string(etc.join(CONFIG_NAME)).unwrap(),
        "old"
    );
    assert_eq!(
        std::fs::read_to_string(boot.join(CONFIG_NAME)).unwrap(),
        bad
    );
    let res = std::fs::read_to_string(boot.join(RESULT_NAME)).unwrap();
    assert!(res.starts_with("LỖI / ERROR"), "{res}");
    assert!(
        res.contains("- site: \"Xa Test\" is not a valid id"),
        "{res}"
    );
    assert!(res.contains("- mqtt.port: 70000 is not a port"), "{res}");
}

#[test]
fn a_named_file_that_is_nowhere_is_an_error() {
    let (_t, boot, etc) = dirs();
    std::fs::write(boot.join(CONFIG_NAME), GOOD).unwrap();
    let e = provision(std::slice::from_ref(&boot), &etc)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mqtt.ca_file") && e.contains("wardgate-ca.crt"),
        "{e}"
    );
    assert!(!etc.join(CONFIG_NAME).exists());
    // Garbage bytes: a clear error, no panic.
    std::fs::write(boot.join(CONFIG_NAME), [0xff, 0xfe, 0x00, 0x41]).unwrap();
    let e = provision(std::slice::from_ref(&boot), &etc)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not UTF-8"), "{e}");
}

#[test]
fn older_pi_os_boot_dir_and_previous_config_kept() {
    let (t, _boot, etc) = dirs();
    let old_boot = t.path().join("boot");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join(CONFIG_NAME), "old").unwrap();
    std::fs::write(etc.join("ca.crt"), "CA").unwrap();
    std::fs::write(old_boot.join(CONFIG_NAME), GOOD).unwrap();
    let r = provision(&[t.path().join("boot/firmware"), old_boot.clone()], &etc).unwrap();
    assert!(matches!(r, Outcome::Installed { .. }));
    assert_eq!(
        std::fs::read_to_string(etc.join("wardgate.toml.previous")).unwrap(),
        "old"
    );
    assert!(old_boot.join(RESULT_NAME).exists());
}

#[test]
fn look_reads_only_small_regular_files() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n);
    assert_eq!(look(&p("none"), 10).unwrap(), CardFile::Absent);
    std::fs::write(p("ok"), "0123456789").unwrap();
    assert_eq!(
        look(&p("ok"), 10).unwrap(),
        CardFile::Read(b"0123456789".to_vec())
    );
    assert_eq!(look(&p("ok"), 9).unwrap(), CardFile::TooBig(9));
    // Sparse and huge: refused from fstat, nothing read.
    let f = std::fs::File::create(p("huge")).unwrap();
    f.set_len(1 << 40).unwrap();
    assert_eq!(
        look(&p("huge"), CONFIG_MAX).unwrap(),
        CardFile::TooBig(CONFIG_MAX)
    );
    std::os::unix::fs::symlink(p("ok"), p("link")).unwrap();
    assert!(
        matches!(look(&p("link"), 10).unwrap(), CardFile::NotAFile(w) if w.contains("symbolic link"))
    );
    std::fs::create_dir(p("dir")).unwrap();
    assert!(
        matches!(look(&p("dir"), 10).unwrap(), CardFile::NotAFile(w) if w.contains("directory"))
    );
    let fifo = std::ffi::CString::new(p("fifo").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    assert!(
        matches!(look(&p("fifo"), 10).unwrap(), CardFile::NotAFile(w) if w.contains("not a regular file"))
    );
    assert_eq!(size_text(CONFIG_MAX), "1 MiB");
    assert_eq!(size_text(EXTRA_MAX), "64 KiB");
}

#[test]
fn the_broker_is_host_port_tls_and_ca() {
    let b = |toml: &str, ca: Option<&[u8]>| {
        let cfg = Config::from_toml(&format!("site = \"a\"\n[mqtt]\n{toml}")).unwrap();
        Broker::of(&cfg, |_| ca.map(|c| c.to_vec()))
    };
    let base = b("host = \"ioc.example\"", None);
    assert!(base.is_some());
    // Case and a trailing dot do not make another broker.
    assert_eq!(base, b("host = \"IOC.example.\"\nport = 8883", None));
    assert_ne!(base, b("host = \"ioc2.example\"", None));
    assert_ne!(base, b("host = \"ioc.example\"\nport = 1883", None));
    assert_ne!(
        base,
        b("host = \"ioc.example\"\nport = 8883\ntls = false", None)
    );
    let ca = "host = \"ioc.example\"\nca_file = \"/etc/wardgate/ca.crt\"";
    assert_ne!(base, b(ca, Some(b"CA")));
    assert_ne!(b(ca, Some(b"CA")), b(ca, Some(b"OTHER CA")));
    assert_eq!(b(ca, Some(b"CA")), b(ca, Some(b"CA")));
    // An unreadable CA: unknown, never the same broker.
    assert_eq!(b(ca, None), None);
}

#[test]
fn write_atomic_does_not_follow_or_reuse_a_planted_temp_file() {
    let t = tempfile::tempdir().unwrap();
    let victim = t.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    std::os::unix::fs::symlink(&victim, t.path().join(".f.tmp")).unwrap();
    let f = t.path().join("f");
    write_atomic(&f, b"new", 0o640, None).unwrap();
    write_atomic(&f, b"newer", 0o640, None).unwrap();
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "newer");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    let mode = std::fs::metadata(&f).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
    // Only the file, the victim and the planted link: no temp left.
    assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 3);
}

#[test]
fn quarantine_keeps_the_newest_batches() {
    let (_t, boot, etc) = dirs();
    for i in 0..QUARANTINE_KEEP + 3 {
        std::fs::write(boot.join("wardgate-mqtt.password"), format!("pw{i}")).unwrap();
        let c = clear_secrets(&boot, &etc);
        assert_eq!(c.moved, vec!["wardgate-mqtt.password"]);
        assert!(!boot.join("wardgate-mqtt.password").exists());
    }
    let q = etc.join(QUARANTINE_DIR);
    assert_eq!(std::fs::read_dir(&q).unwrap().count(), QUARANTINE_KEEP);
    // Too big to be a password: deleted, not kept.
    std::fs::write(
        boot.join("wardgate-web.password"),
        vec![b'x'; EXTRA_MAX as usize + 1],
    )
    .unwrap();
    let c = clear_secrets(&boot, &etc);
    assert!(c.quarantine.is_none() && c.deleted.len() == 1, "{c:?}");
    assert!(!boot.join("wardgate-web.password").exists());
    assert!(
        c.text()
            .contains("deleted from the card (larger than 64 KiB)"),
        "{}",
        c.text()
    );
    // No quarantine possible (etc is a file): deleted from the card all the same.
    let (_t2, boot2, _) = dirs();
    let not_a_dir = boot2.join("etc-file");
    std::fs::write(&not_a_dir, "").unwrap();
    std::fs::write(boot2.join("wardgate-client.key"), "KEY").unwrap();
    let c = clear_secrets(&boot2, &not_a_dir);
    assert!(!boot2.join("wardgate-client.key").exists(), "{c:?}");
    assert!(c.deleted[0].1.contains("could not be kept"), "{c:?}");
}

#[test]
fn dates() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(20_785), (2026, 11, 28));
    assert_eq!(civil_from_days(11_016), (2000, 2, 29));
}

/// Provisioning runs as root and /etc/wardgate may be group-writable
/// (config.set): a link planted at the installed config or at an installed
/// secret is never followed, so its target (/etc/shadow, say) is never
/// copied to wardgate.toml.previous (mode 0640, group wardgate).
#[test]
fn installed_files_are_never_read_through_a_link() {
    let (t, boot, etc) = dirs();
    std::fs::create_dir_all(&etc).unwrap();
    let secret = t.path().join("shadow");
    std::fs::write(&secret, "root:$6$secret").unwrap();
    std::os::unix::fs::symlink(&secret, etc.join(CONFIG_NAME)).unwrap();
    std::os::unix::fs::symlink(&secret, etc.join("ca.crt")).unwrap();
    std::fs::write(boot.join(CONFIG_NAME), GOOD).unwrap();
    std::fs::write(boot.join("wardgate-ca.crt"), "CA").unwrap();
    let r = provision(std::slice::from_ref(&boot), &etc).unwrap();
    assert!(matches!(r, Outcome::Installed { .. }), "{r:?}");
    assert!(
        !etc.join("wardgate.toml.previous").exists(),
        "the link's target was copied"
    );
    // The link itself was replaced; its target is untouched.
    assert_eq!(
        std::fs::read_to_string(etc.join(CONFIG_NAME)).unwrap(),
        GOOD
    );
    assert!(!std::fs::symlink_metadata(etc.join(CONFIG_NAME))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root:$6$secret");
    assert_eq!(read_installed(&etc.join("nothing"), EXTRA_MAX), None);
    std::os::unix::fs::symlink(&secret, etc.join("mqtt.password")).unwrap();
    assert_eq!(read_installed(&etc.join("mqtt.password"), EXTRA_MAX), None);
}

/// The broker rule holds for every secret. A card that keeps the broker
/// cannot hand an installed secret, under any name, to a NUT device on
/// another host; the same device on the same upsd keeps its password.
#[test]
fn an_installed_secret_goes_only_where_it_went_before() {
    let (_t, boot, etc) = dirs();
    std::fs::create_dir_all(&etc).unwrap();
    let nut = |host: &str, pw: &str| {
        format!(
            "[[device]]\nid = \"ups1\"\ntype = \"nut\"\nhost = \"{host}\"\nups = \"u\"\nusername = \"w\"\npassword_file = \"{pw}\"\n"
        )
    };
    let broker = "site = \"xa-test\"\n[mqtt]\nhost = \"ioc.example\"\nport = 8883\n";
    let old = format!(
        "{broker}username = \"u\"\npassword_file = \"/etc/wardgate/broker.pw\"\n{}",
        nut("127.0.0.1", "/etc/wardgate/nut.password")
    );
    std::fs::write(etc.join(CONFIG_NAME), &old).unwrap();
    std::fs::write(etc.join("broker.pw"), "mqtt-secret\n").unwrap();
    std::fs::write(etc.join("nut.password"), "nut-secret\n").unwrap();
    // The same broker, no MQTT login, and the MQTT password to a upsd
    // elsewhere: refused, nothing installed.
    let evil = format!("{broker}{}", nut("203.0.113.9", "/etc/wardgate/broker.pw"));
    std::fs::write(boot.join(CONFIG_NAME), &evil).unwrap();
    let e = provision(std::slice::from_ref(&boot), &etc)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("device[0].password_file: the installed /etc/wardgate/broker.pw was given to mqtt.password_file (mqtt ioc.example:8883); this config would send it to nut 203.0.113.9:3493"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(etc.join(CONFIG_NAME)).unwrap(), old);
    // The upsd password to another upsd: refused too.
    let moved = format!(
        "{broker}{}",
        nut("192.168.1.9", "/etc/wardgate/nut.password")
    );
    std::fs::write(boot.join(CONFIG_NAME), &moved).unwrap();
    let e = provision(std::slice::from_ref(&boot), &etc)
        .unwrap_err()
        .to_string();
    assert!(e.contains("wardgate-nut.password"), "{e}");
    // ...unless the card brings that upsd's own password.
    std::fs::write(boot.join("wardgate-nut.password"), "other\n").unwrap();
    provision(std::slice::from_ref(&boot), &etc).unwrap();
    assert_eq!(
        std::fs::read_to_string(etc.join("nut.password")).unwrap(),
        "other\n"
    );
    assert!(
        !boot.join("wardgate-nut.password").exists(),
        "a secret leaves the card"
    );
    // The same device on the same upsd keeps the installed password.
    let same = format!(
        "{broker}{}\n[gateway]\ntelemetry_interval = \"30s\"\n",
        nut("192.168.1.9", "/etc/wardgate/nut.password")
    );
    std::fs::write(boot.join(CONFIG_NAME), &same).unwrap();
    provision(std::slice::from_ref(&boot), &etc).unwrap();
    assert_eq!(
        std::fs::read_to_string(etc.join(CONFIG_NAME)).unwrap(),
        same
    );
}
