//! `config.set`: a config change that rolls back by itself.
//!
//! The new file is checked (the running config's hash must be `base_hash`,
//! it must validate as `wardgate check --config-only` does, and it may move
//! the gateway to another broker, site or prefix only with
//! `allow_broker_change`), then the old file is kept beside it
//! (`<config>.previous`), the new one written atomically in its place, and
//! a small state file (`.<config name>.change.json`, beside the config, so
//! `main` finds it even when the new config does not load) says a change
//! is being tried. The gateway restarts into it (exit 75, systemd starts it
//! again).
//!
//! The new run must connect to the broker and have a reading from every
//! device within `commands.confirm_within`; then the change is confirmed
//! (`successful`). Otherwise, or when the new config does not load or the
//! gateway does not start with it, the previous file is put back, the
//! state says why, and the gateway restarts into the old config, which
//! replies `failed` with the reason. The reply always comes from the
//! config that ended up running.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// Where the state of a change being tried is kept: beside the config.
pub fn state_path(config: &Path) -> PathBuf {
    let name = config
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "wardgate.toml".into());
    config.with_file_name(format!(".{name}.change.json"))
}

/// The previous config, kept beside it.
pub fn backup_path(config: &Path) -> PathBuf {
    let mut s = config.as_os_str().to_owned();
    s.push(".previous");
    PathBuf::from(s)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The new config is in place; the run with it must confirm it.
    Trying,
    /// The previous config was put back; the run with it replies `failed`.
    RolledBack,
}

/// A change in progress (the state file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub id: String,
    pub phase: Phase,
    pub new_hash: String,
    pub old_hash: String,
    /// Why it was rolled back.
    pub reason: Option<String>,
}

/// Write-then-rename: a temp file beside `path`, fsync, rename, fsync the
/// directory. The new file keeps the mode of the one it replaces (the
/// service's `UMask=0077` would make it 0600).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{:08x}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        rand::random::<u32>()
    ));
    let r = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        if let Ok(old) = std::fs::metadata(path) {
            f.set_permissions(old.permissions())?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

pub fn read_pending(config: &Path) -> Option<Pending> {
    let text = std::fs::read_to_string(state_path(config)).ok()?;
    match serde_json::from_str(&text) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(error = %e, "the config change state file cannot be read; ignored");
            let _ = std::fs::remove_file(state_path(config));
            None
        }
    }
}

pub fn write_pending(config: &Path, p: &Pending) -> std::io::Result<()> {
    let text = serde_json::to_vec(p).map_err(std::io::Error::other)?;
    write_atomic(&state_path(config), &text)
}

pub fn clear_pending(config: &Path) {
    let _ = std::fs::remove_file(state_path(config));
}

/// Puts the previous config back and records why. False when no change
/// was being tried (nothing done).
pub fn roll_back(config: &Path, why: &str) -> bool {
    let Some(mut p) = read_pending(config) else {
        return false;
    };
    if p.phase != Phase::Trying {
        return false;
    }
    let restored = std::fs::read(backup_path(config)).and_then(|old| write_atomic(config, &old));
    if let Err(e) = restored {
        tracing::error!(error = %e, "the previous config could not be put back");
        return false;
    }
    p.phase = Phase::RolledBack;
    p.reason = Some(why.to_owned());
    if let Err(e) = write_pending(config, &p) {
        tracing::error!(error = %e, "the config change state could not be written");
    }
    tracing::warn!(
        reason = why,
        "config change rolled back: restarting into the previous config"
    );
    true
}

/// `config.set`'s arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct SetArgs {
    pub toml: String,
    pub base_hash: String,
    pub allow_broker_change: bool,
}

/// Why a `config.set` was not tried; nothing was changed either way.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The remote-change policy refuses keys of the new file (the reply is
    /// `rejected`, naming each).
    #[error("{0}")]
    Refused(String),
    /// Anything else: a stale base hash, an invalid file, a broker change
    /// not confirmed, a write that failed (the reply is `failed`).
    #[error("{0}")]
    Failed(String),
}

/// Checks the change against the running config and, if it may be tried,
/// writes it and the state. Ok: restart now. Err: why not (nothing changed).
pub fn apply(
    running: &Config,
    running_hash: &str,
    id: &str,
    a: &SetArgs,
) -> Result<Pending, ChangeError> {
    use ChangeError::Failed;
    let Some(path) = running.file.as_deref() else {
        return Err(Failed(
            "the gateway runs without a config file: nothing to change".into(),
        ));
    };
    if a.base_hash != running_hash {
        return Err(Failed(format!(
            "base_hash {} is not the running config's hash {running_hash} (get it again with config.get)",
            a.base_hash
        )));
    }
    let new = Config::from_toml(&a.toml).map_err(|e| {
        Failed(format!(
            "the new config is not valid: {}",
            e.problems().join("; ")
        ))
    })?;
    let old_text = std::fs::read(path)
        .map_err(|e| Failed(format!("{}: {e}", path.display())))
        .and_then(|b| {
            String::from_utf8(b).map_err(|_| Failed(format!("{}: not UTF-8", path.display())))
        })?;
    if old_text != a.toml {
        let policy_path = running.remote_policy_path();
        let policy = super::policy::Policy::load(&policy_path)
            .map_err(|e| ChangeError::Refused(format!("remote change policy: {e}")))?;
        let refused = policy.refusals(&old_text, running, &a.toml, &new);
        if !refused.is_empty() {
            let keys: Vec<&str> = refused.iter().map(|r| r.key.as_str()).collect();
            let why: Vec<String> = refused
                .iter()
                .map(|r| format!("{}: {}", r.key, r.why))
                .collect();
            return Err(ChangeError::Refused(format!(
                "the remote change policy ({}) refuses {}: {}",
                policy_path.display(),
                keys.join(", "),
                why.join("; ")
            )));
        }
    }
    let moved = new.mqtt.host != running.mqtt.host
        || new.mqtt_port() != running.mqtt_port()
        || new.mqtt_tls() != running.mqtt_tls()
        || new.mqtt.prefix != running.mqtt.prefix
        || new.site != running.site;
    if moved && !a.allow_broker_change {
        return Err(Failed(
            "the new config changes the broker, site or prefix: set args.allow_broker_change = true to allow it"
                .into(),
        ));
    }
    let old = old_text.into_bytes();
    let new_hash = super::inventory::sha256_hex(a.toml.as_bytes());
    let pending = Pending {
        id: id.to_owned(),
        phase: Phase::Trying,
        new_hash,
        old_hash: running_hash.to_owned(),
        reason: None,
    };
    // A write refused by the sandbox or the directory's permissions: the
    // reason names the fix (docs/mqtt.md, "config.set on the packaged
    // service").
    let io = |what: &str, e: std::io::Error| {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let missing = super::access::after_failure(dir, &e);
        if missing.is_empty() {
            format!("{what}: {e}")
        } else {
            format!("{what}: {e}; {}", super::access::advice(dir, &missing))
        }
    };
    write_atomic(&backup_path(path), &old)
        .map_err(|e| Failed(io("keeping the previous config", e)))?;
    write_pending(path, &pending).map_err(|e| Failed(io("writing the change state", e)))?;
    if let Err(e) = write_atomic(path, a.toml.as_bytes()) {
        clear_pending(path);
        return Err(Failed(io("writing the new config", e)));
    }
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(text: &str) -> (tempfile::TempDir, Config, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wardgate.toml");
        std::fs::write(&path, text).unwrap();
        let cfg = Config::load(&path, true).unwrap();
        let hash = super::super::inventory::sha256_hex(text.as_bytes());
        (dir, cfg, hash)
    }

    fn args(toml: &str, base: &str, allow: bool) -> SetArgs {
        SetArgs {
            toml: toml.into(),
            base_hash: base.into(),
            allow_broker_change: allow,
        }
    }

    #[test]
    fn refusals_change_nothing() {
        let old = "site = \"s\"\n";
        let (dir, cfg, hash) = setup(old);
        let path = dir.path().join("wardgate.toml");
        let e = apply(
            &cfg,
            &hash,
            "a",
            &args("site = \"s\"\n", "sha256:00", false),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not the running config's hash"), "{e}");
        let e = apply(
            &cfg,
            &hash,
            "a",
            &args("site = \"s\"\ncolour = 1\n", &hash, false),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not valid") && e.contains("colour"), "{e}");
        let e = apply(
            &cfg,
            &hash,
            "a",
            &args(
                "site = \"s\"\n[mqtt]\nprefix = \"elsewhere\"\n",
                &hash,
                false,
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("allow_broker_change"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), old);
        assert!(read_pending(&path).is_none());
    }

    #[test]
    fn apply_then_roll_back() {
        let old = "site = \"s\"\n";
        let (dir, cfg, hash) = setup(old);
        let path = dir.path().join("wardgate.toml");
        let new = "site = \"s\"\n[mqtt]\nprefix = \"elsewhere\"\n";
        let p = apply(&cfg, &hash, "c1", &args(new, &hash, true)).unwrap();
        assert_eq!(p.phase, Phase::Trying);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), new);
        assert_eq!(std::fs::read_to_string(backup_path(&path)).unwrap(), old);
        assert_eq!(read_pending(&path), Some(p.clone()));
        assert!(roll_back(&path, "no broker"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), old);
        let r = read_pending(&path).unwrap();
        assert_eq!(r.phase, Phase::RolledBack);
        assert_eq!(r.reason.as_deref(), Some("no broker"));
        assert!(!roll_back(&path, "again"), "only a change being tried");
        // The replaced file's mode is kept (the unit's UMask=0077 would
        // make a new file 0600).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, b"site = \"t\"\n").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        clear_pending(&path);
        assert!(!roll_back(&path, "none"));
    }
}
