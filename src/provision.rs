//! First-boot provisioning: a technician copies `wardgate.toml` (and
//! optionally the broker's CA, a client certificate and password files)
//! onto the SD card's boot partition from any laptop. Before the service
//! starts, `wardgate provision` (run by wardgate-provision.service)
//! validates the file; if it is valid it moves it and the extra files into
//! /etc/wardgate (mode 0640, group wardgate: secrets must not stay on the
//! FAT partition) and writes `wardgate-provisioning.txt` on the boot
//! partition saying what happened, in Vietnamese and English, so that the
//! technician can read the result by putting the card back in the laptop.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// The configuration's name on the boot partition.
pub const CONFIG_NAME: &str = "wardgate.toml";
/// The result file left on the boot partition.
pub const RESULT_NAME: &str = "wardgate-provisioning.txt";
/// Extra files taken along: name on the boot partition -> name in /etc/wardgate.
pub const EXTRA_FILES: &[(&str, &str)] = &[
    ("wardgate-ca.crt", "ca.crt"),
    ("wardgate-client.crt", "client.crt"),
    ("wardgate-client.key", "client.key"),
    ("wardgate-mqtt.password", "mqtt.password"),
    ("wardgate-web.password", "web.password"),
];
/// Where boot partitions are mounted: current Raspberry Pi OS, then older.
pub const BOOT_DIRS: &[&str] = &["/boot/firmware", "/boot"];

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The file on the card is not a valid configuration: nothing is
    /// installed, the errors are in the result file.
    #[error("{} is not valid:\n{}", .path.display(), .problems.join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
    /// Reading or writing failed (card or disk trouble): reported, nothing
    /// half-installed is left in /etc/wardgate.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProvisionError + '_ {
    move |source| ProvisionError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No configuration on any boot partition: nothing to do.
    Nothing,
    /// Installed: the files now in /etc/wardgate.
    Installed { from: PathBuf, files: Vec<PathBuf> },
}

/// Writes `bytes` to `path` so that a power cut leaves the old file or the
/// new one, never a torn one: temp file, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, gid: Option<u32>) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some(g) = gid {
            std::os::unix::fs::chown(&tmp, None, Some(g))?;
        }
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The `wardgate` group's id, if the package created it.
pub fn wardgate_gid() -> Option<u32> {
    let name = std::ffi::CString::new("wardgate").ok()?;
    // SAFETY: getgrnam returns a pointer to static storage or null; we only
    // read gr_gid before any other call could overwrite it.
    let g = unsafe { libc::getgrnam(name.as_ptr()) };
    if g.is_null() {
        None
    } else {
        Some(unsafe { (*g).gr_gid })
    }
}

fn now_text() -> String {
    let ms = crate::model::now_ms();
    let secs = ms / 1000;
    // UTC, as the Pi's clock may not be synced yet at first boot.
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Days since 1970-01-01 to a date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Looks for a configuration in `boot_dirs` (first found wins), installs it
/// into `etc` when valid, and leaves the result file beside it.
pub fn provision(boot_dirs: &[PathBuf], etc: &Path) -> Result<Outcome, ProvisionError> {
    let Some(boot) = boot_dirs.iter().find(|d| d.join(CONFIG_NAME).is_file()) else {
        return Ok(Outcome::Nothing);
    };
    let src = boot.join(CONFIG_NAME);
    let result_path = boot.join(RESULT_NAME);
    let res = install(boot, &src, etc);
    let text = match &res {
        Ok((files, cfg)) => format!(
            "OK {time}\n\
             Đã cài cấu hình wardgate (trạm {site}, {n} thiết bị, máy chủ {host}:{port}).\n\
             Tệp wardgate.toml đã được chuyển vào {etc} và xoá khỏi thẻ nhớ.\n\
             wardgate configuration installed (site {site}, {n} device(s), broker {host}:{port}).\n\
             wardgate.toml was moved to {etc} and removed from the card.\n\
             Files: {files}\n",
            time = now_text(),
            site = cfg.site,
            n = cfg.devices.len(),
            host = cfg.mqtt.host,
            port = cfg.mqtt_port(),
            etc = etc.display(),
            files = files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        Err(ProvisionError::Invalid { problems, .. }) => format!(
            "LỖI / ERROR {time}\n\
             Cấu hình wardgate.toml trên thẻ nhớ chưa đúng; chưa cài gì. Sửa các lỗi dưới đây rồi khởi động lại.\n\
             wardgate.toml on this card is not valid; nothing was installed. Fix these and boot again:\n\
             {list}\n",
            time = now_text(),
            list = problems
                .iter()
                .map(|p| format!("- {p}"))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        Err(e) => format!(
            "LỖI / ERROR {time}\n\
             Không cài được cấu hình (lỗi đọc/ghi). / Could not install the configuration:\n- {e}\n",
            time = now_text()
        ),
    };
    // The result file is for people; failing to write it must not hide
    // the outcome (it is also in the journal).
    if let Err(e) = write_atomic(&result_path, text.as_bytes(), 0o644, None) {
        tracing::warn!(path = %result_path.display(), error = %e, "cannot write the provisioning result");
    }
    res.map(|(files, _)| Outcome::Installed { from: src, files })
}

fn install(boot: &Path, src: &Path, etc: &Path) -> Result<(Vec<PathBuf>, Config), ProvisionError> {
    let bytes = std::fs::read(src).map_err(io(src))?;
    let text = String::from_utf8(bytes.clone()).map_err(|_| ProvisionError::Invalid {
        path: src.to_owned(),
        problems: vec!["the file is not UTF-8 text (save it as UTF-8)".into()],
    })?;
    let cfg = Config::from_toml(&text).map_err(|e| ProvisionError::Invalid {
        path: src.to_owned(),
        problems: match e {
            crate::config::ConfigError::Invalid(p) => p,
            other => vec![other.to_string()],
        },
    })?;
    // Files the config names must exist once installed: on the card now
    // (as wardgate-*.crt etc.) or already in /etc/wardgate.
    let extras: Vec<(PathBuf, PathBuf)> = EXTRA_FILES
        .iter()
        .map(|(from, to)| (boot.join(from), etc.join(to)))
        .filter(|(from, _)| from.is_file())
        .collect();
    let mut missing = Vec::new();
    for (key, f) in [
        ("mqtt.ca_file", cfg.mqtt.ca_file.as_deref()),
        ("mqtt.cert_file", cfg.mqtt.cert_file.as_deref()),
        ("mqtt.key_file", cfg.mqtt.key_file.as_deref()),
        ("mqtt.password_file", cfg.mqtt.password_file.as_deref()),
        ("web.password_file", cfg.web.password_file.as_deref()),
    ] {
        let Some(f) = f else { continue };
        // The config names installed paths; map /etc/wardgate/<x> to the
        // directory being provisioned.
        let installed = f
            .strip_prefix("/etc/wardgate")
            .map(|rel| etc.join(rel))
            .unwrap_or_else(|_| f.to_path_buf());
        if !installed.exists() && !extras.iter().any(|(_, to)| *to == installed) {
            missing.push(format!(
                "{key}: {} does not exist; put the file on the card as {} or fix the path",
                f.display(),
                EXTRA_FILES
                    .iter()
                    .find(|(_, to)| Some(*to) == f.file_name().and_then(|n| n.to_str()))
                    .map(|(from, _)| *from)
                    .unwrap_or("one of wardgate-ca.crt, wardgate-client.crt, wardgate-client.key, wardgate-mqtt.password, wardgate-web.password")
            ));
        }
    }
    if !missing.is_empty() {
        return Err(ProvisionError::Invalid {
            path: src.to_owned(),
            problems: missing,
        });
    }
    std::fs::create_dir_all(etc).map_err(io(etc))?;
    let gid = wardgate_gid();
    let mut installed = Vec::new();
    // Extras first, the config last: the service never sees a config whose
    // files are not there yet.
    for (from, to) in &extras {
        let b = std::fs::read(from).map_err(io(from))?;
        write_atomic(to, &b, 0o640, gid).map_err(io(to))?;
        installed.push(to.clone());
    }
    let dest = etc.join(CONFIG_NAME);
    if dest.exists() {
        let keep = etc.join("wardgate.toml.previous");
        std::fs::copy(&dest, &keep).map_err(io(&keep))?;
    }
    write_atomic(&dest, &bytes, 0o640, gid).map_err(io(&dest))?;
    installed.push(dest);
    // Only now take the secrets off the card.
    for (from, _) in &extras {
        std::fs::remove_file(from).map_err(io(from))?;
    }
    std::fs::remove_file(src).map_err(io(src))?;
    if let Ok(d) = std::fs::File::open(boot) {
        let _ = d.sync_all();
    }
    Ok((installed, cfg))
}

#[cfg(test)]
mod tests {
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
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_785), (2026, 11, 28));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
