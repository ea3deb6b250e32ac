//! Secrets that leave the card: when a configuration is not installed,
//! password and key files are moved into a root-only quarantine under
//! /etc/wardgate (the newest few batches kept) or deleted, and the result
//! file says where they went. Never read back by wardgate.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use std::io::Write;

use super::card::*;
use super::files::*;

/// What happened to the password and key files of a card whose
/// configuration was not installed.
#[derive(Debug, Default)]
pub(super) struct Cleared {
    /// The quarantine batch directory they were moved to.
    pub(super) quarantine: Option<PathBuf>,
    pub(super) moved: Vec<&'static str>,
    /// Deleted from the card, with why (too big to be a secret, or the
    /// quarantine could not be written).
    pub(super) deleted: Vec<(&'static str, String)>,
    /// Not regular files: nothing readable to take, left where they are.
    pub(super) left: Vec<(&'static str, &'static str)>,
    /// Could not be removed from the card (read-only card?).
    pub(super) stuck: Vec<(&'static str, String)>,
}

impl Cleared {
    pub(super) fn text(&self) -> String {
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

    pub(super) fn log(&self) {
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
pub(super) fn clear_secrets(boot: &Path, etc: &Path) -> Cleared {
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
pub(super) fn quarantine(etc: &Path, files: &[(&str, Vec<u8>)]) -> std::io::Result<PathBuf> {
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
pub(super) fn prune(q: &Path, keep: usize) {
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
