//! Installation paths: first-boot provisioning through the real binary,
//! with directories standing in for the boot partition and /etc/wardgate.

use std::process::Command;

fn provision(boot: &std::path::Path, etc: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .args(["provision", "--boot"])
        .arg(boot)
        .arg("--etc")
        .arg(etc)
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn provisioning_from_the_boot_partition() {
    let t = tempfile::tempdir().unwrap();
    let boot = t.path().join("boot-firmware");
    let etc = t.path().join("etc-wardgate");
    std::fs::create_dir_all(&boot).unwrap();
    // Nothing on the card: nothing to do, exit 0.
    let (code, text) = provision(&boot, &etc);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("nothing to do"), "{text}");
    // A bad file: exit 78, the errors on the card, nothing installed.
    std::fs::write(
        boot.join("wardgate.toml"),
        "site = \"\"\n[mqtt]\nhost = \"x\"\n",
    )
    .unwrap();
    let (code, text) = provision(&boot, &etc);
    assert_eq!(code, Some(78), "{text}");
    let res = std::fs::read_to_string(boot.join("wardgate-provisioning.txt")).unwrap();
    assert!(res.contains("site: missing"), "{res}");
    assert!(!etc.join("wardgate.toml").exists());
    // Fixed on the laptop: installed, the card cleaned, the daemon accepts it.
    std::fs::write(
        boot.join("wardgate.toml"),
        "site = \"xa-test\"\n[mqtt]\nhost = \"ioc.example\"\npassword_file = \"/etc/wardgate/mqtt.password\"\nusername = \"xa-test\"\n",
    )
    .unwrap();
    std::fs::write(boot.join("wardgate-mqtt.password"), "s3cret\n").unwrap();
    let (code, text) = provision(&boot, &etc);
    assert_eq!(code, Some(0), "{text}");
    assert!(etc.join("mqtt.password").exists());
    assert!(!boot.join("wardgate-mqtt.password").exists());
    assert!(!boot.join("wardgate.toml").exists());
    let res = std::fs::read_to_string(boot.join("wardgate-provisioning.txt")).unwrap();
    assert!(res.starts_with("OK"), "{res}");
    let out = Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .args(["check", "--config-only", "--config"])
        .arg(etc.join("wardgate.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

/// One run of `wardgate provision` with what the kernel says it cost: the
/// child is reaped with wait4 so that its own peak RSS is known, and killed
/// if it hangs (a FIFO on the card, a file that never ends).
struct Run {
    code: Option<i32>,
    text: String,
    elapsed: std::time::Duration,
}

/// The data-segment cap of every provisioning run in these tests.
const JOB_MEMORY: libc::rlim_t = 48 << 20;

// The child is reaped by wait4 (below), not Child::wait, so a hung job can
// be killed and reaped in one place.
#[allow(clippy::zombie_processes)]
fn provision_run(boot: &std::path::Path, etc: &std::path::Path) -> Run {
    use std::io::Read;
    let started = std::time::Instant::now();
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wardgate"));
    cmd.args(["provision", "--boot"])
        .arg(boot)
        .arg("--etc")
        .arg(etc)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // The job's memory is capped like the unit caps it (MemoryMax): a job
    // that read a big card file whole would fail to allocate, not exit 78.
    // (Its peak RSS cannot be read from wait4: a child spawned from this
    // big test process inherits the parent's high-water mark.)
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between
    // fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: JOB_MEMORY,
                rlim_max: JOB_MEMORY,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain old data, all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our own child, not reaped by anyone else.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(r >= 0, "wait4: {}", std::io::Error::last_os_error());
        if r == pid {
            break;
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            // SAFETY: as above; reaps the killed child.
            unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            panic!("wardgate provision hung for 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let elapsed = started.elapsed();
    let mut text = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    Run {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        text,
        elapsed,
    }
}

fn card_and_etc() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let boot = t.path().join("boot-firmware");
    let etc = t.path().join("etc-wardgate");
    std::fs::create_dir_all(&boot).unwrap();
    (t, boot, etc)
}

fn result_on(boot: &std::path::Path) -> String {
    std::fs::read_to_string(boot.join("wardgate-provisioning.txt")).unwrap()
}

const LEGIT: &str = "site = \"xa-test\"\n[mqtt]\nhost = \"ioc.example\"\nusername = \"xa-test\"\n\
                     password_file = \"/etc/wardgate/mqtt.password\"\n";

/// A config for another broker must not be handed the
/// installed password. The installed password stays where it is, the new
/// config is not installed, the card says why; with a password of its own
/// it is accepted. The same broker keeps using the installed password.
#[test]
fn a_config_for_another_broker_does_not_get_the_installed_password() {
    let (_t, boot, etc) = card_and_etc();
    std::fs::write(boot.join("wardgate.toml"), LEGIT).unwrap();
    std::fs::write(boot.join("wardgate-mqtt.password"), "the-real-one\n").unwrap();
    let r = provision_run(&boot, &etc);
    assert_eq!(r.code, Some(0), "{}", r.text);
    assert_eq!(
        std::fs::read_to_string(etc.join("mqtt.password")).unwrap(),
        "the-real-one\n"
    );

    // Another host, another port, TLS turned off: each is another broker.
    for (what, attack) in [
        ("host", "site = \"xa-test\"\n[mqtt]\nhost = \"evil.example\"\ntls = false\nallow_plaintext_credentials = true\nusername = \"xa-test\"\npassword_file = \"/etc/wardgate/mqtt.password\"\n"),
        ("port", "site = \"xa-test\"\n[mqtt]\nhost = \"ioc.example\"\nport = 9999\nusername = \"xa-test\"\npassword_file = \"/etc/wardgate/mqtt.password\"\n"),
        ("tls", "site = \"xa-test\"\n[mqtt]\nhost = \"ioc.example\"\nport = 8883\ntls = false\nallow_plaintext_credentials = true\nusername = \"xa-test\"\npassword_file = \"/etc/wardgate/mqtt.password\"\n"),
    ] {
        std::fs::write(boot.join("wardgate.toml"), attack).unwrap();
        let r = provision_run(&boot, &etc);
        assert_eq!(r.code, Some(78), "{what}: {}", r.text);
        assert_eq!(std::fs::read_to_string(etc.join("wardgate.toml")).unwrap(), LEGIT, "{what}");
        assert_eq!(
            std::fs::read_to_string(etc.join("mqtt.password")).unwrap(),
            "the-real-one\n",
            "{what}"
        );
        let res = result_on(&boot);
        assert!(res.starts_with("LỖI / ERROR"), "{what}: {res}");
        assert!(res.contains("mqtt.password_file") && res.contains("wardgate-mqtt.password"), "{what}: {res}");
        assert!(res.contains("another broker") && res.contains("máy chủ MQTT khác"), "{what}: {res}");
        // Left on the card to be fixed.
        assert_eq!(std::fs::read_to_string(boot.join("wardgate.toml")).unwrap(), attack);
    }

    // The same broker, other settings: the installed password is kept.
    let same = format!("{LEGIT}max_batch = 50\n");
    std::fs::write(boot.join("wardgate.toml"), &same).unwrap();
    let r = provision_run(&boot, &etc);
    assert_eq!(r.code, Some(0), "{}", r.text);
    assert_eq!(
        std::fs::read_to_string(etc.join("wardgate.toml")).unwrap(),
        same
    );
    assert_eq!(
        std::fs::read_to_string(etc.join("mqtt.password")).unwrap(),
        "the-real-one\n"
    );

    // Another broker with its own password on the card: accepted.
    let moved = "site = \"xa-test\"\n[mqtt]\nhost = \"ioc2.example\"\nusername = \"xa-test\"\npassword_file = \"/etc/wardgate/mqtt.password\"\n";
    std::fs::write(boot.join("wardgate.toml"), moved).unwrap();
    std::fs::write(boot.join("wardgate-mqtt.password"), "for-ioc2\n").unwrap();
    let r = provision_run(&boot, &etc);
    assert_eq!(r.code, Some(0), "{}", r.text);
    assert_eq!(
        std::fs::read_to_string(etc.join("wardgate.toml")).unwrap(),
        moved
    );
    assert_eq!(
        std::fs::read_to_string(etc.join("mqtt.password")).unwrap(),
        "for-ioc2\n"
    );
    assert!(!boot.join("wardgate-mqtt.password").exists());
}

/// A client key is a credential like the password: another broker must
/// bring both halves of the client certificate.
#[test]
fn a_config_for_another_broker_does_not_get_the_installed_client_key() {
    let (_t, boot, etc) = card_and_etc();
    let with_cert = |host: &str| {
        format!(
            "site = \"xa-test\"\n[mqtt]\nhost = \"{host}\"\ncert_file = \"/etc/wardgate/client.crt\"\n\
             key_file = \"/etc/wardgate/client.key\"\n"
        )
    };
    std::fs::write(boot.join("wardgate.toml"), with_cert("ioc.example")).unwrap();
    std::fs::write(boot.join("wardgate-client.crt"), "CERT").unwrap();
    std::fs::write(boot.join("wardgate-client.key"), "KEY").unwrap();
    assert_eq!(provision_run(&boot, &etc).code, Some(0));
    // Only the certificate on the card: the installed key is not reused.
    std::fs::write(boot.join("wardgate.toml"), with_cert("evil.example")).unwrap();
    std::fs::write(boot.join("wardgate-client.crt"), "EVIL CERT").unwrap();
    let r = provision_run(&boot, &etc);
    assert_eq!(r.code, Some(78), "{}", r.text);
    let res = result_on(&boot);
    assert!(
        res.contains("mqtt.key_file") && res.contains("wardgate-client.key"),
        "{res}"
    );
    assert_eq!(
        std::fs::read_to_string(etc.join("client.crt")).unwrap(),
        "CERT"
    );
    assert_eq!(
        std::fs::read_to_string(etc.join("client.key")).unwrap(),
        "KEY"
    );
}

/// The card is written on any laptop: a symbolic link there must not make
/// the job (root) read or install a file from elsewhere on the Pi, and a
/// FIFO must not hang the boot.
#[test]
fn links_and_odd_files_on_the_card_are_refused() {
    use std::os::unix::fs::symlink;
    let (t, boot, etc) = card_and_etc();
    // The config itself a link to a valid config elsewhere.
    let elsewhere = t.path().join("elsewhere.toml");
    std::fs::write(
        &elsewhere,
        LEGIT
            .replace("password_file = \"/etc/wardgate/mqtt.password\"\n", "")
            .replace("username = \"xa-test\"\n", ""),
    )
    .unwrap();
    symlink(&elsewhere, boot.join("wardgate.toml")).unwrap();
    let r = provision_run(&boot, &etc);
    assert_eq!(r.code, Some(78), "{}", r.text);
    assert!(!etc.join("wardgate.toml").exists());
    assert!(
        result_on(&boot).contains("symbolic link"),
        "{}",
        result_on(&boot)
    );
    std::fs::remove_file(boot.join("wardgate.toml")).unwrap();

    // A secret that is a link to a file of the Pi (think /etc/shadow).
    let shadow = t.path().join("shadow");
    std::fs::write(&shadow, "root:secret-hash").unwrap();
    std::fs::write(boot.join("wardgate.toml"), LEGIT).unwrap();
    symlink(&shadow, boot.join("wardgate-mqtt.password")).unwrap();
    let r = provision_run(&boot, &etc);
    assert_eq!(r.code, Some(78), "{}", r.text);
    assert!(!etc.join("mqtt.password").exists());
    assert!(!etc.join("wardgate.toml").exists());
    let res = result_on(&boot);
    assert!(
        res.contains("wardgate-mqtt.password") && res.contains("symbolic link"),
        "{res}"
    );
    assert_eq!(
        std::fs::read_to_string(&shadow).unwrap(),
        "root:secret-hash"
    );
    std::fs::remove_file(boot.join("wardgate-mqtt.password")).unwrap();
    std::fs::remove_file(boot.join("wardgate.toml")).unwrap();

    // A FIFO as the config: refused at once (opening it for reading would
    // wait for a writer forever).
    let fifo = std::ffi::CString::new(boot.join("wardgate.toml").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let r = provision_run(&boot, &etc);
    assert_eq!(r.code, Some(78), "{}", r.text);
    assert!(
        result_on(&boot).contains("not a regular file"),
        "{}",
        result_on(&boot)
    );
}

/// A config bigger than 1 MiB is refused from its size alone: the job does
/// not read it (before: a 307 MB config peaked at 1.23 GB). The file is
/// sparse, so it costs no disk; the job runs with 48 MiB of data segment
/// (JOB_MEMORY), so reading the 64 MiB file whole would fail.
#[test]
fn an_oversized_config_is_refused_without_reading_it() {
    let (_t, boot, etc) = card_and_etc();
    let f = std::fs::File::create(boot.join("wardgate.toml")).unwrap();
    f.set_len(64 << 20).unwrap();
    drop(f);
    let r = provision_run(&boot, &etc);
    assert_eq!(r.code, Some(78), "{}", r.text);
    let res = result_on(&boot);
    assert!(res.contains("larger than 1 MiB"), "{res}");
    assert!(!etc.join("wardgate.toml").exists());
    assert!(
        r.elapsed < std::time::Duration::from_secs(10),
        "{:?}",
        r.elapsed
    );

    // A secret over 64 KiB: refused, nothing installed.
    std::fs::write(boot.join("wardgate.toml"), LEGIT).unwrap();
    std::fs::write(
        boot.join("wardgate-mqtt.password"),
        vec![b'x'; 64 * 1024 + 1],
    )
    .unwrap();
    let r = provision_run(&boot, &etc);
    assert_eq!(r.code, Some(78), "{}", r.text);
    assert!(
        result_on(&boot).contains("larger than 64 KiB"),
        "{}",
        result_on(&boot)
    );
    assert!(!etc.join("mqtt.password").exists());
}

/// Passwords and keys leave the card at every boot, whether or not the
/// config is valid: into a root-only quarantine under /etc/wardgate, named
/// in the result file. Certificates (public) stay for the next attempt.
#[test]
fn secrets_leave_the_card_even_when_the_config_is_invalid() {
    use std::os::unix::fs::PermissionsExt;
    let (_t, boot, etc) = card_and_etc();
    std::fs::write(
        boot.join("wardgate.toml"),
        "site = \"Xa Test\"\n[mqtt]\nhost = \"ioc.example\"\n",
    )
    .unwrap();
    std::fs::write(boot.join("wardgate-mqtt.password"), "pw\n").unwrap();
    std::fs::write(boot.join("wardgate-client.key"), "KEY").unwrap();
    std::fs::write(boot.join("wardgate-web.password"), "web\n").unwrap();
    std::fs::write(boot.join("wardgate-ca.crt"), "CA").unwrap();
    let r = provision_run(&boot, &etc);
    assert_eq!(r.code, Some(78), "{}", r.text);
    for s in [
        "wardgate-mqtt.password",
        "wardgate-client.key",
        "wardgate-web.password",
    ] {
        assert!(!boot.join(s).exists(), "{s} is still on the card");
    }
    assert!(boot.join("wardgate-ca.crt").exists());
    assert!(boot.join("wardgate.toml").exists());
    assert!(!etc.join("mqtt.password").exists());
    let q = etc.join("quarantine");
    assert_eq!(
        std::fs::metadata(&q).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let batches: Vec<_> = std::fs::read_dir(&q)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(batches.len(), 1, "{batches:?}");
    let batch = &batches[0];
    assert_eq!(
        std::fs::metadata(batch).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::read_to_string(batch.join("wardgate-mqtt.password")).unwrap(),
        "pw\n"
    );
    assert_eq!(
        std::fs::read_to_string(batch.join("wardgate-client.key")).unwrap(),
        "KEY"
    );
    for s in [
        "wardgate-mqtt.password",
        "wardgate-client.key",
        "wardgate-web.password",
    ] {
        let mode = std::fs::metadata(batch.join(s))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{s}");
    }
    let res = result_on(&boot);
    assert!(res.contains(&batch.display().to_string()), "{res}");
    assert!(res.contains("wardgate-mqtt.password"), "{res}");

    // Secrets on a card without any wardgate.toml are taken off too.
    std::fs::remove_file(boot.join("wardgate.toml")).unwrap();
    std::fs::write(boot.join("wardgate-mqtt.password"), "pw2\n").unwrap();
    let r = provision_run(&boot, &etc);
    assert_eq!(r.code, Some(78), "{}", r.text);
    assert!(!boot.join("wardgate-mqtt.password").exists());
    assert!(
        result_on(&boot).contains("wardgate-mqtt.password"),
        "{}",
        result_on(&boot)
    );
}

/// Temp files are created exclusively under unpredictable names: a link
/// planted at the old predictable name (`.<name>.tmp`) is not followed.
#[test]
fn temp_files_are_created_exclusively() {
    use std::os::unix::fs::symlink;
    let (t, boot, etc) = card_and_etc();
    std::fs::create_dir_all(&etc).unwrap();
    let mut victims = Vec::new();
    for (dir, name) in [
        (&etc, ".wardgate.toml.tmp"),
        (&etc, ".mqtt.password.tmp"),
        (&boot, ".wardgate-provisioning.txt.tmp"),
    ] {
        let victim = t.path().join(format!("victim{}", victims.len()));
        std::fs::write(&victim, "untouched").unwrap();
        symlink(&victim, dir.join(name)).unwrap();
        victims.push(victim);
    }
    std::fs::write(boot.join("wardgate.toml"), LEGIT).unwrap();
    std::fs::write(boot.join("wardgate-mqtt.password"), "pw\n").unwrap();
    let r = provision_run(&boot, &etc);
    assert_eq!(r.code, Some(0), "{}", r.text);
    for v in &victims {
        assert_eq!(
            std::fs::read_to_string(v).unwrap(),
            "untouched",
            "{}",
            v.display()
        );
    }
    for f in [
        etc.join("wardgate.toml"),
        etc.join("mqtt.password"),
        boot.join("wardgate-provisioning.txt"),
    ] {
        let m = std::fs::symlink_metadata(&f).unwrap();
        assert!(
            m.file_type().is_file(),
            "{} is not a regular file",
            f.display()
        );
    }
    assert_eq!(
        std::fs::read_to_string(etc.join("wardgate.toml")).unwrap(),
        LEGIT
    );
    // No temp file of ours left behind.
    for dir in [&etc, &boot] {
        for e in std::fs::read_dir(dir).unwrap() {
            let n = e.unwrap().file_name().into_string().unwrap();
            assert!(
                !n.starts_with('.')
                    || [
                        ".wardgate.toml.tmp",
                        ".mqtt.password.tmp",
                        ".wardgate-provisioning.txt.tmp"
                    ]
                    .contains(&n.as_str()),
                "left behind: {n}"
            );
        }
    }
}

/// `systemd-analyze security --offline` for both units: the gateway at
/// most 2.5 (as scripts/verify-units), the provisioning job (root, writes
/// /etc/wardgate) at most 3.0.
#[test]
fn both_units_are_sandboxed() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        crate::common::skip(
            "install::both_units_are_sandboxed",
            "systemd-analyze not found (package systemd)",
        );
        return;
    }
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    for (unit, max) in [
        ("wardgate.service", 2.5),
        ("wardgate-provision.service", 3.0),
    ] {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true"])
            .arg(units.join(unit))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| {
                panic!(
                    "{unit}: no exposure in {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        let level: f64 = line
            .split(": ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{unit}: cannot read {line:?}"));
        println!("{line}");
        assert!(
            level <= max,
            "{unit}: exposure {level} is above {max}: {text}"
        );
    }
}

/// A broker stand-in that records the bytes of every connection (the MQTT
/// CONNECT carries the password in clear without TLS) and hangs up.
fn recording_broker() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    use std::io::Read;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            if let Ok(n) = c.read(&mut buf) {
                s.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        }
    });
    (port, seen)
}

/// The card attack end to end, with the real daemon: a card config
/// pointing at another broker (plaintext, the installed password_file) is
/// refused, and the gateway started afterwards still sends the password
/// only to the broker it was issued for.
#[test]
fn the_installed_password_never_reaches_another_broker() {
    let (t, boot, etc) = card_and_etc();
    let (real, real_seen) = recording_broker();
    let (fake, fake_seen) = recording_broker();
    let config = |port: u16| {
        format!(
            "site = \"xa-test\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\ntls = false\n\
             username = \"xa-test\"\npassword_file = \"{pw}\"\n[spool]\npath = \"{spool}\"\n\
             [web]\nenabled = false\n",
            pw = etc.join("mqtt.password").display(),
            spool = t.path().join("spool.db").display(),
        )
    };
    std::fs::write(boot.join("wardgate.toml"), config(real)).unwrap();
    std::fs::write(boot.join("wardgate-mqtt.password"), "the-real-one").unwrap();
    assert_eq!(provision_run(&boot, &etc).code, Some(0));
    std::fs::write(boot.join("wardgate.toml"), config(fake)).unwrap();
    let r = provision_run(&boot, &etc);
    assert_eq!(r.code, Some(78), "{}", r.text);

    let mut gw = Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .args(["run", "--config"])
        .arg(etc.join("wardgate.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let contains = |seen: &std::sync::Mutex<Vec<u8>>, what: &[u8]| {
        seen.lock().unwrap().windows(what.len()).any(|w| w == what)
    };
    while !contains(&real_seen, b"the-real-one") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = gw.kill();
    let _ = gw.wait();
    assert!(
        contains(&real_seen, b"the-real-one"),
        "the gateway never reached its broker"
    );
    assert!(
        fake_seen.lock().unwrap().is_empty(),
        "the other broker was contacted"
    );
}
