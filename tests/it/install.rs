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
