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

/// The running configuration as `config.set` checks a change against it.
/// Implemented where configs are loaded and compared (`config/`), and
/// handed to the dispatcher by the app: the command room never reads a
/// config itself.
pub trait ChangeCheck: Send + Sync {
    /// The file the running config was read from, if any.
    fn file(&self) -> Option<&Path>;

    /// Reads `new_text` as a config and checks it against the running
    /// one (`path` holds its text): valid, allowed by the remote-change
    /// policy, a move to another broker, site or prefix only with
    /// `allow_broker_change`. Ok: the running file's text and the new
    /// config's `commands.confirm_within`.
    fn check(
        &self,
        path: &Path,
        new_text: &str,
        allow_broker_change: bool,
    ) -> Result<(String, std::time::Duration), ChangeError>;
}

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
    /// Starts of the gateway with the new config so far (each counted
    /// before the config is loaded, so a run that is killed, OOM-killed or
    /// stopped by the watchdog counts too).
    #[serde(default)]
    pub attempts: u32,
    /// The first of those starts: the confirmation window runs from here,
    /// not from each restart.
    #[serde(default)]
    pub first_start: Option<Start>,
    /// The new config's `commands.confirm_within`, for the start that
    /// cannot load it.
    #[serde(default)]
    pub confirm_within_ms: u64,
}

/// When a start happened, in a clock that does not jump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    /// The kernel's boot id: `boottime_ms` compares within one boot only.
    pub boot_id: String,
    /// `CLOCK_BOOTTIME`, ms.
    pub boottime_ms: i64,
}

/// Starts with a new config before it is rolled back unconfirmed.
pub const MAX_ATTEMPTS: u32 = 3;
/// Beyond `confirm_within` from the first start, the slack for restarts
/// (systemd's RestartSec, a slow start) before a start rolls back.
pub const START_MARGIN: std::time::Duration = std::time::Duration::from_secs(60);

impl Pending {
    /// How long ago the first start was, when it was in this boot.
    pub fn since_first_start(&self, now: &Start) -> Option<std::time::Duration> {
        let f = self.first_start.as_ref()?;
        (f.boot_id == now.boot_id && now.boottime_ms >= f.boottime_ms)
            .then(|| std::time::Duration::from_millis((now.boottime_ms - f.boottime_ms) as u64))
    }
}

impl Start {
    pub fn now() -> Start {
        Start {
            boot_id: crate::spool::used::boot_id(),
            boottime_ms: crate::clock::boottime_ms(),
        }
    }
}

/// Called by `wardgate run` before it loads the config: counts this start
/// of a change being tried, and rolls the change back (true) when it was
/// already tried [`MAX_ATTEMPTS`] times, or its first start in this boot
/// is longer ago than its `confirm_within` and [`START_MARGIN`]: a config
/// that gets the gateway killed before it can confirm or roll back must
/// not loop for ever with a fresh window at every start.
pub fn count_start(config: &Path, now: &Start) -> bool {
    let Some(mut p) = read_pending(config) else {
        return false;
    };
    if p.phase != Phase::Trying {
        return false;
    }
    let window = std::time::Duration::from_millis(p.confirm_within_ms) + START_MARGIN;
    let why = if p.attempts >= MAX_ATTEMPTS {
        Some(format!(
            "started {} times with it without being confirmed (the gateway stopped or was killed each time)",
            p.attempts
        ))
    } else {
        p.since_first_start(now)
            .filter(|d| p.confirm_within_ms > 0 && *d > window)
            .map(|d| {
                format!(
                    "not confirmed {} s after its first start (confirm_within {} s)",
                    d.as_secs(),
                    p.confirm_within_ms / 1000
                )
            })
    };
    if let Some(why) = why {
        return roll_back(config, &why);
    }
    p.attempts += 1;
    if p.first_start.is_none() {
        p.first_start = Some(now.clone());
    }
    if let Err(e) = write_pending(config, &p) {
        tracing::error!(error = %e, "the config change state could not be written");
    }
    false
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

pub use super::request::SetArgs;

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
    running: &dyn ChangeCheck,
    running_hash: &str,
    id: &str,
    a: &SetArgs,
) -> Result<Pending, ChangeError> {
    use ChangeError::Failed;
    let Some(path) = running.file() else {
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
    let (old_text, confirm_within) = running.check(path, &a.toml, a.allow_broker_change)?;
    let old = old_text.into_bytes();
    let new_hash = super::inventory::sha256_hex(a.toml.as_bytes());
    let pending = Pending {
        id: id.to_owned(),
        phase: Phase::Trying,
        new_hash,
        old_hash: running_hash.to_owned(),
        reason: None,
        attempts: 0,
        first_start: None,
        confirm_within_ms: confirm_within.as_millis() as u64,
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
    use crate::config::Config;

    fn setup(text: &str) -> (tempfile::TempDir, Config, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wardgate.toml");
        std::fs::write(&path, text).unwrap();
        let mut cfg = Config::load(&path, true).unwrap();
        // The built-in policy, whatever this machine has.
        cfg.remote_policy = Some(dir.path().join("no-policy.toml"));
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

    /// A new config that gets the gateway killed before
    /// it can confirm or roll back is counted at each start (before it is
    /// loaded) and rolled back at the fourth, or at a start later than
    /// confirm_within and the margin after the first.
    #[test]
    fn a_change_that_never_gets_to_confirm_is_rolled_back_at_start() {
        let old = "site = \"s\"\n[commands]\nconfirm_within = \"30s\"\n";
        let (dir, cfg, hash) = setup(old);
        let path = dir.path().join("wardgate.toml");
        let new = "site = \"s\"\n[commands]\nconfirm_within = \"30s\"\n[gateway]\nsystem_health = false\n";
        let at = |ms: i64| Start {
            boot_id: "b1".into(),
            boottime_ms: ms,
        };
        let p = apply(&cfg, &hash, "k1", &args(new, &hash, false)).unwrap();
        assert_eq!((p.attempts, p.confirm_within_ms), (0, 30_000));
        for n in 1..=MAX_ATTEMPTS {
            assert!(!count_start(&path, &at(1000 * n as i64)), "start {n}");
            let p = read_pending(&path).unwrap();
            assert_eq!(p.attempts, n);
            assert_eq!(p.first_start, Some(at(1000)), "the first start is kept");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), new);
        }
        assert!(count_start(&path, &at(5000)), "the fourth start rolls back");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), old);
        let p = read_pending(&path).unwrap();
        assert_eq!(p.phase, Phase::RolledBack);
        assert!(p.reason.unwrap().contains("started 3 times"));
        assert!(!count_start(&path, &at(6000)), "nothing more to roll back");
        clear_pending(&path);

        // Too late: the second start comes after confirm_within + margin.
        let (dir, cfg, hash) = setup(old);
        let path = dir.path().join("wardgate.toml");
        apply(&cfg, &hash, "k2", &args(new, &hash, false)).unwrap();
        assert!(!count_start(&path, &at(0)));
        let late = 30_000 + START_MARGIN.as_millis() as i64 + 1;
        let p = read_pending(&path).unwrap();
        assert_eq!(
            p.since_first_start(&at(late)).unwrap().as_millis() as i64,
            late
        );
        assert!(count_start(&path, &at(late)));
        assert!(read_pending(&path)
            .unwrap()
            .reason
            .unwrap()
            .contains("not confirmed"));
        // In another boot the time says nothing (the attempts still count).
        let (dir, cfg, hash) = setup(old);
        let path = dir.path().join("wardgate.toml");
        apply(&cfg, &hash, "k3", &args(new, &hash, false)).unwrap();
        assert!(!count_start(&path, &at(0)));
        let other = Start {
            boot_id: "b2".into(),
            boottime_ms: 10,
        };
        assert!(!count_start(&path, &other));
        assert_eq!(read_pending(&path).unwrap().attempts, 2);
    }
}
