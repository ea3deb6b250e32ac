//! First-boot provisioning: a technician copies `wardgate.toml` (and
//! optionally the broker's CA, a client certificate and password files)
//! onto the SD card's boot partition from any laptop. Before the service
//! starts, `wardgate provision` (run by wardgate-provision.service)
//! validates the file; if it is valid it moves it and the extra files into
//! /etc/wardgate (mode 0640, group wardgate: secrets must not stay on the
//! FAT partition) and writes `wardgate-provisioning.txt` on the boot
//! partition saying what happened, in Vietnamese and English, so that the
//! technician can read the result by putting the card back in the laptop.
//!
//! The card is writable by anyone with a laptop, so everything on it is
//! treated as hostile: files are opened without following links, must be
//! regular files and are size-capped before a byte is read; a config for
//! another broker never inherits the installed password or client key;
//! password and key files leave the card at every boot, into a root-only
//! quarantine when the config is not installed; temp files are created
//! exclusively under random names.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
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
/// The extra files that are secrets: they leave the card at every boot,
/// installed or not. (Certificates are public and stay on the card when the
/// configuration is refused, ready for the next attempt.)
pub const SECRET_FILES: &[&str] = &[
    "wardgate-client.key",
    "wardgate-mqtt.password",
    "wardgate-web.password",
];
/// Where boot partitions are mounted: current Raspberry Pi OS, then older.
pub const BOOT_DIRS: &[&str] = &["/boot/firmware", "/boot"];
/// The largest `wardgate.toml` taken from the card.
pub const CONFIG_MAX: u64 = 1 << 20;
/// The largest certificate, key or password file taken from the card.
pub const EXTRA_MAX: u64 = 64 << 10;
/// Directory under /etc/wardgate (mode 0700) where the secrets of a card
/// whose configuration was not installed are kept, one subdirectory per
/// boot, for root to recover; never read by wardgate itself.
pub const QUARANTINE_DIR: &str = "quarantine";
/// Quarantine batches kept: a card refused at every boot cannot fill /etc.
const QUARANTINE_KEEP: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The file on the card is not a valid configuration, or is refused
    /// (another broker without its own credentials, a link, too big):
    /// nothing is installed, the reasons are in the result file.
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

/// What looking at one file on the card found.
#[derive(Debug, PartialEq, Eq)]
enum CardFile {
    Absent,
    Read(Vec<u8>),
    /// A symbolic link, directory, FIFO, device or socket: never read.
    NotAFile(&'static str),
    /// A regular file over the cap (given): refused from its size, not read.
    TooBig(u64),
}

/// Reads a file from the card, safely: the last path component is not
/// followed if it is a link (O_NOFOLLOW), a FIFO cannot block the open
/// (O_NONBLOCK), anything but a regular file is refused, and the size is
/// checked on the open file before reading, then enforced while reading (a
/// file growing meanwhile is cut at `max + 1` bytes and refused).
fn look(path: &Path, max: u64) -> std::io::Result<CardFile> {
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(CardFile::Absent),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(CardFile::NotAFile(
                "is a symbolic link (links are not followed)",
            ))
        }
        // A socket.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return Ok(CardFile::NotAFile("is not a regular file"))
        }
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    if meta.is_dir() {
        return Ok(CardFile::NotAFile("is a directory, not a regular file"));
    }
    if !meta.is_file() {
        return Ok(CardFile::NotAFile(
            "is not a regular file (a FIFO or a device)",
        ));
    }
    if meta.len() > max {
        return Ok(CardFile::TooBig(max));
    }
    // meta.len() <= max, a few MiB at most.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&f).take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Ok(CardFile::TooBig(max));
    }
    Ok(CardFile::Read(bytes))
}

fn size_text(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// Writes `bytes` to `path` so that a power cut leaves the old file or the
/// new one, never a torn one: temp file, fsync, rename, fsync the directory.
/// The temp file has a random name and is created exclusively (O_EXCL,
/// O_NOFOLLOW): nothing planted in the directory is followed or reused.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, gid: Option<u32>) -> std::io::Result<()> {
    write_atomic_with(path, bytes, mode, gid, true)
}

/// As [`write_atomic`]; with `strict_mode = false` a refused chmod is
/// ignored (FAT has no permission bits and may refuse the change).
fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    gid: Option<u32>,
    strict_mode: bool,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let mut attempts = 0;
    let (tmp, mut f) = loop {
        let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 8 => {
                attempts += 1
            }
            Err(e) => return Err(e),
        }
    };
    let written = (|| {
        f.write_all(bytes)?;
        match f.set_permissions(std::fs::Permissions::from_mode(mode)) {
            Err(e) if strict_mode => return Err(e),
            _ => {}
        }
        if let Some(g) = gid {
            std::os::unix::fs::fchown(&f, None, Some(g))?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
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

/// UTC now as (year, month, day, hour, minute, second).
fn utc_now() -> (i64, i64, i64, i64, i64, i64) {
    let secs = crate::model::now_ms() / 1000;
    let (y, m, d) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

fn now_text() -> String {
    // UTC, as the Pi's clock may not be synced yet at first boot.
    let (y, m, d, hh, mm, _) = utc_now();
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02} UTC")
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
/// into `etc` when valid, and leaves the result file beside it. When it is
/// not installed (or there is none, but password or key files are on a
/// card), the secrets are taken off the card into the quarantine.
pub fn provision(boot_dirs: &[PathBuf], etc: &Path) -> Result<Outcome, ProvisionError> {
    // symlink_metadata: a link named wardgate.toml is found (and refused).
    let present = |d: &&PathBuf, name: &str| std::fs::symlink_metadata(d.join(name)).is_ok();
    let with_config = boot_dirs.iter().find(|d| present(d, CONFIG_NAME));
    let Some(boot) = with_config.or_else(|| {
        boot_dirs
            .iter()
            .find(|d| SECRET_FILES.iter().any(|s| present(d, s)))
    }) else {
        return Ok(Outcome::Nothing);
    };
    let src = boot.join(CONFIG_NAME);
    let result_path = boot.join(RESULT_NAME);
    let res = if with_config.is_some() {
        install(boot, &src, etc)
    } else {
        Err(ProvisionError::Invalid {
            path: src.clone(),
            problems: vec![format!(
                "password or key files on the card, but no {CONFIG_NAME}: put them on the card \
                 together with {CONFIG_NAME}"
            )],
        })
    };
    let cleared = res.is_err().then(|| clear_secrets(boot, etc));
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
    let text = match &cleared {
        Some(c) => format!("{text}{}", c.text()),
        None => text,
    };
    if let Some(c) = &cleared {
        c.log();
    }
    // The result file is for people; failing to write it must not hide
    // the outcome (it is also in the journal).
    if let Err(e) = write_atomic_with(&result_path, text.as_bytes(), 0o644, None, false) {
        tracing::warn!(path = %result_path.display(), error = %e, "cannot write the provisioning result");
    }
    res.map(|(files, _)| Outcome::Installed { from: src, files })
}

/// What the installed credentials were given to: a config whose broker
/// differs in any of these must bring its own.
#[derive(Debug, PartialEq, Eq)]
struct Broker {
    host: String,
    port: u16,
    tls: bool,
    /// The CA certificate's bytes when `ca_file` is set (TLS only): a new
    /// CA is a new idea of who the broker is.
    ca: Option<Vec<u8>>,
}

impl Broker {
    /// `None` when the CA file cannot be read: unknown, so never the same.
    fn of(cfg: &Config, read_ca: impl Fn(&Path) -> Option<Vec<u8>>) -> Option<Broker> {
        let tls = cfg.mqtt_tls();
        let ca = match (&cfg.mqtt.ca_file, tls) {
            (Some(f), true) => Some(read_ca(f)?),
            _ => None,
        };
        Some(Broker {
            host: cfg
                .mqtt
                .host
                .trim()
                .trim_end_matches('.')
                .to_ascii_lowercase(),
            port: cfg.mqtt_port(),
            tls,
            ca,
        })
    }

    fn describe(b: Option<&Broker>, other: Option<&Broker>) -> String {
        match b {
            None => "none known (no valid configuration installed)".into(),
            Some(b) => format!(
                "{}:{}{}{}",
                b.host,
                b.port,
                if b.tls { " TLS" } else { " without TLS" },
                match other {
                    Some(o) if o.ca != b.ca && o.host == b.host => ", another CA",
                    _ => "",
                }
            ),
        }
    }
}

/// The broker of the configuration installed in `etc`, if it is there and
/// valid.
fn installed_broker(etc: &Path) -> Option<Broker> {
    let path = etc.join(CONFIG_NAME);
    let CardFile::Read(bytes) = look(&path, CONFIG_MAX).ok()? else {
        return None;
    };
    let cfg = Config::from_toml(std::str::from_utf8(&bytes).ok()?).ok()?;
    Broker::of(&cfg, |f| std::fs::read(in_etc(f, etc)).ok())
}

/// The config names installed paths; map /etc/wardgate/<x> to the
/// directory being provisioned.
fn in_etc(f: &Path, etc: &Path) -> PathBuf {
    f.strip_prefix("/etc/wardgate")
        .map(|rel| etc.join(rel))
        .unwrap_or_else(|_| f.to_owned())
}

fn install(boot: &Path, src: &Path, etc: &Path) -> Result<(Vec<PathBuf>, Config), ProvisionError> {
    let invalid = |problems| ProvisionError::Invalid {
        path: src.to_owned(),
        problems,
    };
    let bytes = match look(src, CONFIG_MAX).map_err(io(src))? {
        CardFile::Read(b) => b,
        CardFile::Absent => {
            return Err(io(src)(std::io::ErrorKind::NotFound.into()));
        }
        CardFile::NotAFile(what) => {
            return Err(invalid(vec![format!(
                "{CONFIG_NAME} {what}; copy the file itself onto the card"
            )]))
        }
        CardFile::TooBig(max) => {
            return Err(invalid(vec![format!(
                "{CONFIG_NAME} is larger than {}: not a wardgate configuration (nothing was read)",
                size_text(max)
            )]))
        }
    };
    // The extra files on the card, each read once, with the same care.
    let mut problems = Vec::new();
    let mut extras: Vec<(PathBuf, PathBuf, Vec<u8>)> = Vec::new();
    for (from, to) in EXTRA_FILES {
        let p = boot.join(from);
        match look(&p, EXTRA_MAX).map_err(io(&p))? {
            CardFile::Absent => {}
            CardFile::Read(b) => extras.push((p, etc.join(to), b)),
            CardFile::NotAFile(what) => {
                problems.push(format!("{from} {what}; copy the file itself onto the card"))
            }
            CardFile::TooBig(max) => problems.push(format!(
                "{from} is larger than {}: not a certificate, key or password file",
                size_text(max)
            )),
        }
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| invalid(vec!["the file is not UTF-8 text (save it as UTF-8)".into()]))?;
    let cfg = match Config::from_toml(&text) {
        Ok(cfg) => cfg,
        Err(e) => {
            let mut p = match e {
                crate::config::ConfigError::Invalid(p) => p,
                other => vec![other.to_string()],
            };
            p.append(&mut problems);
            return Err(invalid(p));
        }
    };
    let from_card = |installed: &Path| extras.iter().any(|(_, to, _)| to == installed);
    // Files the config names must exist once installed: on the card now
    // (as wardgate-*.crt etc.) or already in /etc/wardgate.
    for (key, f) in [
        ("mqtt.ca_file", cfg.mqtt.ca_file.as_deref()),
        ("mqtt.cert_file", cfg.mqtt.cert_file.as_deref()),
        ("mqtt.key_file", cfg.mqtt.key_file.as_deref()),
        ("mqtt.password_file", cfg.mqtt.password_file.as_deref()),
        ("web.password_file", cfg.web.password_file.as_deref()),
    ] {
        let Some(f) = f else { continue };
        let installed = in_etc(f, etc);
        if !installed.exists() && !from_card(&installed) {
            problems.push(format!(
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
    // A config for another broker (host, port, TLS or CA) never inherits
    // the credentials installed for the old one: it could send them
    // anywhere, in clear. It must bring its own in the same provisioning.
    let new = Broker::of(&cfg, |f| {
        let installed = in_etc(f, etc);
        match extras.iter().find(|(_, to, _)| *to == installed) {
            Some((_, _, b)) => Some(b.clone()),
            None => std::fs::read(&installed).ok(),
        }
    });
    let old = installed_broker(etc);
    if new.is_none() || old != new {
        for (key, card, f) in [
            (
                "mqtt.password_file",
                "wardgate-mqtt.password",
                &cfg.mqtt.password_file,
            ),
            ("mqtt.cert_file", "wardgate-client.crt", &cfg.mqtt.cert_file),
            ("mqtt.key_file", "wardgate-client.key", &cfg.mqtt.key_file),
        ] {
            let Some(f) = f else { continue };
            let installed = in_etc(f, etc);
            if from_card(&installed) || std::fs::symlink_metadata(&installed).is_err() {
                // Brought along, or missing (reported above).
                continue;
            }
            problems.push(format!(
                "{key}: this config is for another broker (installed: {old}; new: {new}), so the \
                 installed {path} is not given to it. Put that broker's own file on the card as \
                 {card}, next to wardgate.toml. / Cấu hình này dùng máy chủ MQTT khác, nên \
                 mật khẩu/khoá đã cài ({path}) không được gửi tới máy chủ đó. Hãy chép tệp {card} \
                 của máy chủ mới vào thẻ nhớ, cạnh wardgate.toml.",
                old = Broker::describe(old.as_ref(), new.as_ref()),
                new = Broker::describe(new.as_ref(), old.as_ref()),
                path = f.display(),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    std::fs::create_dir_all(etc).map_err(io(etc))?;
    let gid = wardgate_gid();
    let mut installed = Vec::new();
    // Extras first, the config last: the service never sees a config whose
    // files are not there yet.
    for (_, to, b) in &extras {
        write_atomic(to, b, 0o640, gid).map_err(io(to))?;
        installed.push(to.clone());
    }
    let dest = etc.join(CONFIG_NAME);
    if dest.exists() {
        let keep = etc.join("wardgate.toml.previous");
        let old = std::fs::read(&dest).map_err(io(&dest))?;
        write_atomic(&keep, &old, 0o640, gid).map_err(io(&keep))?;
    }
    write_atomic(&dest, text.as_bytes(), 0o640, gid).map_err(io(&dest))?;
    installed.push(dest);
    // Only now take the secrets off the card.
    for (from, _, _) in &extras {
        std::fs::remove_file(from).map_err(io(from))?;
    }
    std::fs::remove_file(src).map_err(io(src))?;
    if let Ok(d) = std::fs::File::open(boot) {
        let _ = d.sync_all();
    }
    Ok((installed, cfg))
}

/// What happened to the password and key files of a card whose
/// configuration was not installed.
#[derive(Debug, Default)]
struct Cleared {
    /// The quarantine batch directory they were moved to.
    quarantine: Option<PathBuf>,
    moved: Vec<&'static str>,
    /// Deleted from the card, with why (too big to be a secret, or the
    /// quarantine could not be written).
    deleted: Vec<(&'static str, String)>,
    /// Not regular files: nothing readable to take, left where they are.
    left: Vec<(&'static str, &'static str)>,
    /// Could not be removed from the card (read-only card?).
    stuck: Vec<(&'static str, String)>,
}

impl Cleared {
    fn text(&self) -> String {
        let mut t = String::new();
        if let Some(q) = &self.quarantine {
            if !self.moved.is_empty() {
                t.push_str(&format!(
                    "\nMật khẩu và khoá trên thẻ nhớ ({names}) đã được chuyển vào {q} trên máy \
                     (chỉ root đọc được) để không nằm lại trên thẻ. Khi sửa xong, hãy chép lại \
                     chúng vào thẻ cùng với wardgate.toml.\n\
                     The password and key files on this card ({names}) were moved to {q} on the \
                     Pi (readable by root only) so that they do not stay on the card. Copy them \
                     onto the card again together with the fixed wardgate.toml.\n",
                    names = self.moved.join(", "),
                    q = q.display()
                ));
            }
        }
        if !self.deleted.is_empty() || !self.left.is_empty() || !self.stuck.is_empty() {
            t.push_str("\nTệp khác / Other files:\n");
        }
        for (n, why) in &self.deleted {
            t.push_str(&format!(
                "- {n}: đã xoá khỏi thẻ / deleted from the card ({why})\n"
            ));
        }
        for (n, why) in &self.left {
            t.push_str(&format!("- {n}: {why}; not read, left as it is\n"));
        }
        for (n, why) in &self.stuck {
            t.push_str(&format!(
                "- {n}: KHÔNG xoá được khỏi thẻ / could NOT be removed from the card ({why}): delete it by hand\n"
            ));
        }
        t
    }

    fn log(&self) {
        if let Some(q) = &self.quarantine {
            tracing::warn!(files = %self.moved.join(", "), to = %q.display(), "secrets of a configuration that was not installed moved off the card");
        }
        for (n, why) in &self.deleted {
            tracing::warn!(file = n, reason = %why, "deleted from the card");
        }
        for (n, why) in &self.stuck {
            tracing::error!(file = n, error = %why, "secret file could not be removed from the card");
        }
    }
}

/// Takes the password and key files off the card: regular files up to
/// [`EXTRA_MAX`] are moved into a new quarantine batch in `etc`; bigger ones
/// are deleted (not a real secret, not worth keeping); when the quarantine
/// cannot be written they are deleted all the same: a secret never stays on
/// a card that any laptop can read.
///
/// Quarantine rather than delete: a technician's typo in wardgate.toml must
/// not destroy a key the operations centre issued once, and the card
/// (carried around, read on any laptop) is the place secrets must leave.
fn clear_secrets(boot: &Path, etc: &Path) -> Cleared {
    let mut c = Cleared::default();
    let mut take = Vec::new();
    let mut delete = Vec::new();
    for &name in SECRET_FILES {
        match look(&boot.join(name), EXTRA_MAX) {
            Ok(CardFile::Absent) => {}
            Ok(CardFile::Read(b)) => take.push((name, b)),
            Ok(CardFile::NotAFile(what)) => c.left.push((name, what)),
            Ok(CardFile::TooBig(max)) => {
                delete.push((name, format!("larger than {}", size_text(max))))
            }
            Err(e) => delete.push((name, format!("unreadable: {e}"))),
        }
    }
    if !take.is_empty() {
        match quarantine(etc, &take) {
            Ok(dir) => {
                for (name, _) in &take {
                    match std::fs::remove_file(boot.join(name)) {
                        Ok(()) => c.moved.push(name),
                        Err(e) => c.stuck.push((name, e.to_string())),
                    }
                }
                c.quarantine = Some(dir);
            }
            Err(e) => {
                let why = format!(
                    "could not be kept in {}: {e}",
                    etc.join(QUARANTINE_DIR).display()
                );
                delete.extend(take.iter().map(|(n, _)| (*n, why.clone())));
            }
        }
    }
    for (name, why) in delete {
        match std::fs::remove_file(boot.join(name)) {
            Ok(()) => c.deleted.push((name, why)),
            Err(e) => c.stuck.push((name, e.to_string())),
        }
    }
    if let Ok(d) = std::fs::File::open(boot) {
        let _ = d.sync_all();
    }
    c
}

/// Writes `files` into a new batch directory `etc/quarantine/<time>-<random>`
/// (directories 0700, files 0600, all created exclusively) and prunes the
/// oldest batches beyond [`QUARANTINE_KEEP`].
fn quarantine(etc: &Path, files: &[(&str, Vec<u8>)]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(etc)?;
    let q = etc.join(QUARANTINE_DIR);
    match std::fs::DirBuilder::new().mode(0o700).create(&q) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    // An existing entry must be a directory, not a link to elsewhere.
    if !std::fs::symlink_metadata(&q)?.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is not a directory",
            q.display()
        )));
    }
    std::fs::set_permissions(&q, std::fs::Permissions::from_mode(0o700))?;
    prune(&q, QUARANTINE_KEEP.saturating_sub(1));
    let (y, m, d, hh, mm, ss) = utc_now();
    let batch = q.join(format!(
        "{y:04}{m:02}{d:02}-{hh:02}{mm:02}{ss:02}-{:08x}",
        rand::random::<u32>()
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&batch)?;
    for (name, bytes) in files {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(batch.join(name))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::File::open(&batch)?.sync_all()?;
    std::fs::File::open(&q)?.sync_all()?;
    Ok(batch)
}

/// Removes the oldest batch directories (names start with the time) so that
/// at most `keep` remain.
fn prune(q: &Path, keep: usize) {
    let Ok(rd) = std::fs::read_dir(q) else { return };
    let mut batches: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    batches.sort();
    let excess = batches.len().saturating_sub(keep);
    for b in &batches[..excess] {
        if let Err(e) = std::fs::remove_dir_all(b) {
            tracing::warn!(dir = %b.display(), error = %e, "cannot prune an old quarantine batch");
        }
    }
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
}
