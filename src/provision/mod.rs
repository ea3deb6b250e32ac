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

use std::path::{Path, PathBuf};

use crate::config::secrets::{Role, SecretUse};
use crate::config::Config;

mod card;
mod files;
mod secrets;

pub use self::card::BOOT_DIRS;
use self::card::*;
use self::files::*;
use self::secrets::*;

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

/// The configuration installed in `etc`, if it is there and valid.
fn installed_config(etc: &Path) -> Option<Config> {
    let path = etc.join(CONFIG_NAME);
    let CardFile::Read(bytes) = look(&path, CONFIG_MAX).ok()? else {
        return None;
    };
    Config::from_toml(std::str::from_utf8(&bytes).ok()?).ok()
}

/// The broker of the configuration installed in `etc`, if it is there and
/// valid.
fn installed_broker(etc: &Path) -> Option<Broker> {
    let cfg = installed_config(etc)?;
    Broker::of(&cfg, |f| read_installed(&in_etc(f, etc), EXTRA_MAX))
}

/// An installed file, read as a card file is ([`look`]): provisioning runs
/// as root, and /etc/wardgate may be group-writable for `config.set`, so a
/// link planted there (to /etc/shadow, say) is never followed; a link, a
/// device, a FIFO or an oversized file reads as absent.
fn read_installed(path: &Path, max: u64) -> Option<Vec<u8>> {
    match look(path, max) {
        Ok(CardFile::Read(b)) => Some(b),
        _ => None,
    }
}

/// The config names installed paths; map /etc/wardgate/<x> to the
/// directory being provisioned.
fn in_etc(f: &Path, etc: &Path) -> PathBuf {
    f.strip_prefix("/etc/wardgate")
        .map(|rel| etc.join(rel))
        .unwrap_or_else(|_| f.to_owned())
}

/// A file taken off the card: where it is on the card, where it is
/// installed, and its bytes (read once).
struct Extra {
    card: PathBuf,
    to: PathBuf,
    bytes: Vec<u8>,
}

/// Whether `installed` is one of the files brought on the card.
fn from_card(extras: &[Extra], installed: &Path) -> bool {
    extras.iter().any(|e| e.to == installed)
}

/// The card's config refused for `problems`: nothing is installed.
fn invalid(src: &Path, problems: Vec<String>) -> ProvisionError {
    ProvisionError::Invalid {
        path: src.to_owned(),
        problems,
    }
}

/// Reads the card's config and extra files, checks them against what is
/// installed, and only when nothing is wrong puts them in place.
fn install(boot: &Path, src: &Path, etc: &Path) -> Result<(Vec<PathBuf>, Config), ProvisionError> {
    let bytes = read_card_config(src)?;
    let (extras, mut problems) = read_card_extras(boot, etc)?;
    let (text, cfg) = parse_card_config(src, bytes, &mut problems)?;
    let secrets = cfg.secret_uses();
    problems.extend(missing_files(&cfg, &secrets, etc, &extras));
    problems.extend(credentials_for_another_broker(&cfg, etc, &extras));
    problems.extend(secrets_sent_elsewhere(&secrets, etc, &extras));
    if !problems.is_empty() {
        return Err(invalid(src, problems));
    }
    let installed = put_in_place(boot, src, etc, &extras, &text)?;
    Ok((installed, cfg))
}

/// The config file's bytes, read with the care every card file gets
/// ([`look`]).
fn read_card_config(src: &Path) -> Result<Vec<u8>, ProvisionError> {
    match look(src, CONFIG_MAX).map_err(io(src))? {
        CardFile::Read(b) => Ok(b),
        CardFile::Absent => Err(io(src)(std::io::ErrorKind::NotFound.into())),
        CardFile::NotAFile(what) => Err(invalid(
            src,
            vec![format!(
                "{CONFIG_NAME} {what}; copy the file itself onto the card"
            )],
        )),
        CardFile::TooBig(max) => Err(invalid(
            src,
            vec![format!(
                "{CONFIG_NAME} is larger than {}: not a wardgate configuration (nothing was read)",
                size_text(max)
            )],
        )),
    }
}

/// The extra files on the card, each read once, with the same care; and
/// the problems with those that cannot be taken.
fn read_card_extras(boot: &Path, etc: &Path) -> Result<(Vec<Extra>, Vec<String>), ProvisionError> {
    let mut problems = Vec::new();
    let mut extras = Vec::new();
    for (from, to) in EXTRA_FILES {
        let p = boot.join(from);
        match look(&p, EXTRA_MAX).map_err(io(&p))? {
            CardFile::Absent => {}
            CardFile::Read(bytes) => extras.push(Extra {
                card: p,
                to: etc.join(to),
                bytes,
            }),
            CardFile::NotAFile(what) => {
                problems.push(format!("{from} {what}; copy the file itself onto the card"))
            }
            CardFile::TooBig(max) => problems.push(format!(
                "{from} is larger than {}: not a certificate, key or password file",
                size_text(max)
            )),
        }
    }
    Ok((extras, problems))
}

/// The config as text and parsed. When it does not parse, its problems
/// come first, then the card's (`card_problems`).
fn parse_card_config(
    src: &Path,
    bytes: Vec<u8>,
    card_problems: &mut Vec<String>,
) -> Result<(String, Config), ProvisionError> {
    let text = String::from_utf8(bytes).map_err(|_| {
        invalid(
            src,
            vec!["the file is not UTF-8 text (save it as UTF-8)".into()],
        )
    })?;
    match Config::from_toml(&text) {
        Ok(cfg) => Ok((text, cfg)),
        Err(e) => {
            let mut p = match e {
                crate::config::ConfigError::Invalid(p) => p,
                other => vec![other.to_string()],
            };
            p.append(card_problems);
            Err(invalid(src, p))
        }
    }
}

/// Files the config names must exist once installed: on the card now
/// (as wardgate-*.crt etc.) or already in /etc/wardgate.
fn missing_files(cfg: &Config, secrets: &[SecretUse], etc: &Path, extras: &[Extra]) -> Vec<String> {
    let named = [
        ("mqtt.ca_file", cfg.mqtt.ca_file.as_deref()),
        ("mqtt.cert_file", cfg.mqtt.cert_file.as_deref()),
    ]
    .into_iter()
    .filter_map(|(k, f)| Some((k.to_owned(), f?)))
    .chain(secrets.iter().map(|u| (u.key.clone(), u.path.as_path())));
    let mut problems = Vec::new();
    for (key, f) in named {
        let installed = in_etc(f, etc);
        if !installed.exists() && !from_card(extras, &installed) {
            problems.push(format!(
                "{key}: {} does not exist; put the file on the card as {} or fix the path",
                f.display(),
                EXTRA_FILES
                    .iter()
                    .find(|(_, to)| Some(*to) == f.file_name().and_then(|n| n.to_str()))
                    .map(|(from, _)| *from)
                    .unwrap_or("one of wardgate-ca.crt, wardgate-client.crt, wardgate-client.key, wardgate-mqtt.password, wardgate-web.password, wardgate-nut.password, wardgate-influx.token")
            ));
        }
    }
    problems
}

/// A config for another broker (host, port, TLS or CA) never inherits
/// the credentials installed for the old one: it could send them
/// anywhere, in clear. It must bring its own in the same provisioning.
fn credentials_for_another_broker(cfg: &Config, etc: &Path, extras: &[Extra]) -> Vec<String> {
    let new = Broker::of(cfg, |f| {
        let installed = in_etc(f, etc);
        match extras.iter().find(|e| e.to == installed) {
            Some(e) => Some(e.bytes.clone()),
            None => read_installed(&installed, EXTRA_MAX),
        }
    });
    let old = installed_broker(etc);
    let mut problems = Vec::new();
    if new.is_some() && old == new {
        return problems;
    }
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
        if from_card(extras, &installed) || std::fs::symlink_metadata(&installed).is_err() {
            // Brought along, or missing (reported by missing_files).
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
    problems
}

/// Every secret but the broker's ([`credentials_for_another_broker`]):
/// an installed secret goes only where it went before, under the same key
/// (a card that keeps the broker could otherwise hand the installed MQTT
/// password, under any name, to a NUT device on any host, or to a
/// database).
fn secrets_sent_elsewhere(secrets: &[SecretUse], etc: &Path, extras: &[Extra]) -> Vec<String> {
    let before = installed_config(etc)
        .map(|c| c.secret_uses())
        .unwrap_or_default();
    let mut problems = Vec::new();
    for u in secrets {
        if matches!(u.role, Role::MqttPassword | Role::MqttKey) {
            continue; // the broker rule
        }
        let installed = in_etc(&u.path, etc);
        if from_card(extras, &installed) || std::fs::symlink_metadata(&installed).is_err() {
            continue;
        }
        let same = |b: &&SecretUse| in_etc(&b.path, etc).components().eq(installed.components());
        let card = EXTRA_FILES
            .iter()
            .find(|(_, to)| Some(*to) == u.path.file_name().and_then(|n| n.to_str()))
            .map(|(from, _)| *from)
            .unwrap_or("a file of its own");
        match before.iter().find(same) {
            Some(b) if b.role == u.role && b.to == u.to => {}
            was => problems.push(format!(
                "{key}: the installed {path} was given to {was}; this config would send it to {to}, so it \
                 is not given to it. Put that one's own file on the card ({card}). / Tệp bí mật đã cài \
                 ({path}) không được gửi tới nơi khác; hãy chép tệp riêng vào thẻ nhớ ({card}).",
                key = u.key,
                path = u.path.display(),
                was = match was {
                    Some(b) => format!("{} ({})", b.key, b.to),
                    None => "nothing in the installed configuration".into(),
                },
                to = u.to,
            )),
        }
    }
    problems
}

/// Writes the extra files, then the config (keeping the previous one),
/// then takes them off the card. Returns the files installed.
fn put_in_place(
    boot: &Path,
    src: &Path,
    etc: &Path,
    extras: &[Extra],
    text: &str,
) -> Result<Vec<PathBuf>, ProvisionError> {
    std::fs::create_dir_all(etc).map_err(io(etc))?;
    let gid = wardgate_gid();
    let mut installed = Vec::new();
    // Extras first, the config last: the service never sees a config whose
    // files are not there yet.
    for e in extras {
        write_atomic(&e.to, &e.bytes, 0o640, gid).map_err(io(&e.to))?;
        installed.push(e.to.clone());
    }
    let dest = etc.join(CONFIG_NAME);
    // The previous config is kept only when it is a regular file: a link
    // there is replaced (the rename below), never read and copied.
    match look(&dest, CONFIG_MAX).map_err(io(&dest))? {
        CardFile::Read(old) => {
            let keep = etc.join("wardgate.toml.previous");
            write_atomic(&keep, &old, 0o640, gid).map_err(io(&keep))?;
        }
        CardFile::Absent => {}
        CardFile::NotAFile(why) => {
            tracing::warn!(path = %dest.display(), why, "the installed config is not kept as wardgate.toml.previous");
        }
        CardFile::TooBig(max) => {
            tracing::warn!(path = %dest.display(), max, "the installed config is too big to keep as wardgate.toml.previous");
        }
    }
    write_atomic(&dest, text.as_bytes(), 0o640, gid).map_err(io(&dest))?;
    installed.push(dest);
    // Only now take the secrets off the card.
    for e in extras {
        std::fs::remove_file(&e.card).map_err(io(&e.card))?;
    }
    std::fs::remove_file(src).map_err(io(src))?;
    if let Ok(d) = std::fs::File::open(boot) {
        let _ = d.sync_all();
    }
    Ok(installed)
}

#[cfg(test)]
mod tests;
