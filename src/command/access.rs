//! Whether the service may write its config directory, which `config.set`
//! needs (a temp file beside the config, then a rename), and what to run
//! when it may not.
//!
//! The packaged unit runs with `ProtectSystem=strict`, so `/etc/wardgate`
//! is read-only for it, and the directory is `0750 root:wardgate`. The
//! package ships an inactive drop-in ([`DROP_IN_SHIPPED`],
//! `ReadWritePaths=/etc/wardgate`); a technician who wants `config.set`
//! installs it and gives the directory its group write bit
//! (docs/mqtt.md, "config.set on the packaged service").
//!
//! Two sides use this: `wardgate check` (as root, judging for the
//! `wardgate` user and the unit as systemd has it) and the daemon (its own
//! credentials, when a write failed or at start).

use std::path::{Path, PathBuf};

/// The drop-in the package ships, inactive.
pub(crate) const DROP_IN_SHIPPED: &str = "/usr/share/wardgate/config-set.conf";
/// Where a technician puts it to make it active.
pub(crate) const DROP_IN: &str = "/etc/systemd/system/wardgate.service.d/config-set.conf";
/// The config directory the shipped drop-in opens.
pub(crate) const PACKAGED_DIR: &str = "/etc/wardgate";
/// The service's user and group.
pub(crate) const SERVICE_USER: &str = "wardgate";

/// What stands between the service and a write in its config directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Missing {
    /// The directory is read-only for the service (`ProtectSystem=strict`
    /// without the drop-in). `drop_in_present`: the drop-in file is there
    /// but not in effect yet (no daemon-reload or restart since).
    ReadOnly { drop_in_present: bool },
    /// Its permission bits let neither the service's user nor its group
    /// write it. `group_is_service`: the directory's group is the
    /// service's (only the write bit is missing).
    Permission {
        mode: u32,
        owner: String,
        group: String,
        group_is_service: bool,
    },
}

impl Missing {
    /// In words, for a technician.
    pub(crate) fn words(&self, dir: &Path) -> String {
        match self {
            Missing::ReadOnly {
                drop_in_present: false,
            } => format!(
                "{} is read-only for the service (ProtectSystem=strict): the config.set drop-in is not installed",
                dir.display()
            ),
            Missing::ReadOnly {
                drop_in_present: true,
            } => format!(
                "{} is read-only for the service: the drop-in {DROP_IN} is there but not in effect (no daemon-reload and restart since)",
                dir.display()
            ),
            Missing::Permission {
                mode, owner, group, ..
            } => format!(
                "{} is {mode:04o} {owner}:{group}: the service's user and group may not create files in it",
                dir.display()
            ),
        }
    }
}

/// The commands that remove what is missing, in order.
pub(crate) fn fix(dir: &Path, missing: &[Missing]) -> Vec<String> {
    let mut out = Vec::new();
    let mut reload = false;
    for m in missing {
        match m {
            Missing::ReadOnly {
                drop_in_present: false,
            } => {
                reload = true;
                if dir == Path::new(PACKAGED_DIR) {
                    out.push(format!(
                        "sudo install -D -m 0644 {DROP_IN_SHIPPED} {DROP_IN}"
                    ));
                } else {
                    out.push(format!(
                        "printf '[Service]\\nReadWritePaths={}\\n' | sudo install -D -m 0644 /dev/stdin {DROP_IN}",
                        dir.display()
                    ));
                }
            }
            Missing::ReadOnly {
                drop_in_present: true,
            } => reload = true,
            Missing::Permission {
                group_is_service, ..
            } => {
                if *group_is_service {
                    out.push(format!("sudo chmod g+w {}", dir.display()));
                } else {
                    out.push(format!(
                        "sudo chgrp {SERVICE_USER} {0} && sudo chmod g+w {0}",
                        dir.display()
                    ));
                }
            }
        }
    }
    if reload {
        out.push("sudo systemctl daemon-reload && sudo systemctl restart wardgate".into());
    }
    out
}

/// The reason a `config.set` that could not write gives: what is missing
/// and the commands, in one line.
pub(crate) fn advice(dir: &Path, missing: &[Missing]) -> String {
    let what: Vec<String> = missing.iter().map(|m| m.words(dir)).collect();
    format!(
        "config.set cannot write {}: {}; to allow it, run on the gateway: {} (docs/mqtt.md, \"config.set on the packaged service\"; `wardgate check` says what is missing)",
        dir.display(),
        what.join("; "),
        fix(dir, missing).join("; ")
    )
}

/// A user and the groups it is in.
#[derive(Debug, Clone)]
pub(crate) struct Who {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Who {
    /// The service's user, when the package created it.
    pub(crate) fn service() -> Option<Who> {
        let name = std::ffi::CString::new(SERVICE_USER).ok()?;
        // SAFETY: getpwnam returns static storage or null; the fields are
        // copied before any other call could overwrite them.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if pw.is_null() {
            return None;
        }
        let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        let mut n: libc::c_int = 64;
        let mut groups = vec![0 as libc::gid_t; n as usize];
        // SAFETY: `groups` has room for `n` entries; getgrouplist writes at
        // most that many and sets `n` to the count (or the size needed).
        let r = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        groups.truncate(if r < 0 { 0 } else { n.max(0) as usize });
        groups.push(gid);
        Some(Who {
            name: SERVICE_USER.into(),
            uid,
            gid,
            groups,
        })
    }

    /// This process.
    pub(crate) fn me() -> Who {
        // SAFETY: plain getters without arguments.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let mut groups = vec![0 as libc::gid_t; 256];
        // SAFETY: `groups` has room for 256 entries.
        let n = unsafe { libc::getgroups(256, groups.as_mut_ptr()) };
        groups.truncate(n.max(0) as usize);
        groups.push(gid);
        Who {
            name: format!("this user, uid {uid}"),
            uid,
            gid,
            groups,
        }
    }
}

fn name_of_group(gid: u32) -> String {
    // SAFETY: getgrgid returns static storage or null; the name is copied
    // at once.
    let g = unsafe { libc::getgrgid(gid) };
    if g.is_null() {
        return gid.to_string();
    }
    unsafe { std::ffi::CStr::from_ptr((*g).gr_name) }
        .to_string_lossy()
        .into_owned()
}

fn name_of_user(uid: u32) -> String {
    // SAFETY: as in name_of_group.
    let p = unsafe { libc::getpwuid(uid) };
    if p.is_null() {
        return uid.to_string();
    }
    unsafe { std::ffi::CStr::from_ptr((*p).pw_name) }
        .to_string_lossy()
        .into_owned()
}

/// Whether the permission bits of a directory (mode, owner, group) let
/// `who` create files in it (write and search).
pub(crate) fn bits_allow(mode: u32, owner: u32, group: u32, who: &Who) -> bool {
    let need = |w: u32, x: u32| mode & w != 0 && mode & x != 0;
    if who.uid == 0 {
        return true;
    }
    if who.uid == owner {
        return need(0o200, 0o100);
    }
    if who.groups.contains(&group) {
        return need(0o020, 0o010);
    }
    need(0o002, 0o001)
}

/// The permission part: None when `who` may create files in `dir`.
pub(crate) fn permission(dir: &Path, who: &Who) -> Option<Missing> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir).ok()?;
    if bits_allow(m.mode(), m.uid(), m.gid(), who) {
        return None;
    }
    Some(Missing::Permission {
        mode: m.mode() & 0o7777,
        owner: name_of_user(m.uid()),
        group: name_of_group(m.gid()),
        group_is_service: m.gid() == who.gid,
    })
}

/// The daemon's side: what is missing after a write in `dir` failed with
/// `e` (empty when the error is of another kind).
pub(crate) fn after_failure(dir: &Path, e: &std::io::Error) -> Vec<Missing> {
    let me = Who::me();
    match e.raw_os_error() {
        Some(libc::EROFS) => {
            let mut v = vec![Missing::ReadOnly {
                drop_in_present: Path::new(DROP_IN).exists(),
            }];
            v.extend(permission(dir, &me));
            v
        }
        Some(libc::EACCES) | Some(libc::EPERM) => {
            permission(dir, &me).map(|m| vec![m]).unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// The daemon's side, before any write: what is missing for this process
/// to create files in `dir` (`access(2)`, which sees read-only mounts).
pub(crate) fn for_this_process(dir: &Path) -> Vec<Missing> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return Vec::new();
    };
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0 {
        return Vec::new();
    }
    let e = std::io::Error::last_os_error();
    after_failure(dir, &e)
}

/// The mount point of `dir` in a mountinfo text and whether it is mounted
/// read-write (the longest mount point that contains `dir`).
pub(crate) fn mount_rw(mountinfo: &str, dir: &Path) -> Option<(PathBuf, bool)> {
    let mut best: Option<(PathBuf, bool)> = None;
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (Some(point), Some(opts)) = (f.get(4), f.get(5)) else {
            continue;
        };
        let point = PathBuf::from(point.replace("\\040", " "));
        if !dir.starts_with(&point) {
            continue;
        }
        if best
            .as_ref()
            .is_some_and(|(b, _)| b.as_os_str().len() > point.as_os_str().len())
        {
            continue;
        }
        let rw = opts.split(',').any(|o| o == "rw");
        best = Some((point, rw));
    }
    best
}

/// Whether a `ReadWritePaths=` list (as `systemctl show` prints it, or as
/// written in a unit) opens `dir`.
pub(crate) fn paths_open(list: &str, dir: &Path) -> bool {
    list.split_whitespace()
        .map(|p| p.trim_start_matches(['-', '+', ':']))
        .any(|p| !p.is_empty() && dir.starts_with(p))
}

/// Whether a drop-in file under /etc/systemd/system/wardgate.service.d/
/// opens `dir` (for a machine where systemd is not running).
fn drop_in_files_open(dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(Path::new(DROP_IN).parent().unwrap_or(Path::new("/"))) else {
        return false;
    };
    rd.flatten().any(|e| {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("ReadWritePaths="))
            .any(|l| paths_open(l, dir))
    })
}

/// `systemctl show wardgate -p …`, as key → value.
fn systemctl_show(props: &[&str]) -> Option<std::collections::HashMap<String, String>> {
    let mut cmd = std::process::Command::new("systemctl");
    cmd.args(["show", "wardgate"]);
    for p in props {
        cmd.args(["-p", p]);
    }
    let out = cmd.output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

/// `wardgate check`'s lines about `config.set` for the config at `path`:
/// whether the service could write it, and what to run if not.
pub(crate) fn check_lines(path: &Path) -> Vec<String> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut notes = Vec::new();
    let mut missing = Vec::new();
    let who = match Who::service() {
        Some(w) => w,
        None => {
            notes.push(format!(
                "no user {SERVICE_USER} here (not the package): judged for this user"
            ));
            Who::me()
        }
    };
    missing.extend(permission(dir, &who));
    // The read-only part: what systemd has for the unit, and what the
    // running process sees, when systemd runs here.
    if Path::new("/run/systemd/system").is_dir() {
        match systemctl_show(&[
            "MainPID",
            "ProtectSystem",
            "ReadWritePaths",
            "ConfigurationDirectory",
        ]) {
            Some(p) => {
                let protect = p.get("ProtectSystem").map(String::as_str).unwrap_or("");
                // ConfigurationDirectory= is made writable under
                // ProtectSystem=strict as well (the packaged unit has none
                // for this reason).
                let conf_dirs: String = p
                    .get("ConfigurationDirectory")
                    .map(|l| l.split_whitespace().map(|d| format!("/etc/{d} ")).collect())
                    .unwrap_or_default();
                let opened = p.get("ReadWritePaths").is_some_and(|l| paths_open(l, dir))
                    || paths_open(&conf_dirs, dir);
                let hides = matches!(protect, "strict" | "full") && dir.starts_with("/etc")
                    || protect == "strict";
                let pid = p.get("MainPID").map(String::as_str).unwrap_or("0");
                let running = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
                    .ok()
                    .filter(|_| pid != "0")
                    .and_then(|m| mount_rw(&m, dir));
                match running {
                    Some((point, rw)) => {
                        notes.push(format!(
                            "the running service (pid {pid}) has {} mounted {} (at {})",
                            dir.display(),
                            if rw { "read-write" } else { "read-only" },
                            point.display()
                        ));
                        if !rw {
                            missing.insert(
                                0,
                                Missing::ReadOnly {
                                    drop_in_present: opened || Path::new(DROP_IN).exists(),
                                },
                            );
                        }
                    }
                    None => {
                        notes.push(format!(
                            "wardgate.service: ProtectSystem={protect}, ReadWritePaths={} (systemctl show; the service is not running)",
                            p.get("ReadWritePaths").map(String::as_str).unwrap_or("")
                        ));
                        if hides && !opened {
                            missing.insert(
                                0,
                                Missing::ReadOnly {
                                    drop_in_present: Path::new(DROP_IN).exists(),
                                },
                            );
                        }
                    }
                }
            }
            None => notes.push("systemctl show wardgate failed: the unit was not judged".into()),
        }
    } else if Path::new("/lib/systemd/system/wardgate.service").exists() && dir.starts_with("/etc")
    {
        notes.push("systemd is not running here: judged from the drop-in files".into());
        if !drop_in_files_open(dir) {
            missing.insert(
                0,
                Missing::ReadOnly {
                    drop_in_present: false,
                },
            );
        }
    }
    let mut out = Vec::new();
    if missing.is_empty() {
        out.push(format!(
            "config.set: allowed, and the service ({}) can write {}",
            who.name,
            dir.display()
        ));
    } else {
        out.push(format!(
            "config.set: allowed, but the service ({}) CANNOT write {}: config.set will reply failed (nothing changed)",
            who.name,
            dir.display()
        ));
        for m in &missing {
            out.push(format!("  - {}", m.words(dir)));
        }
        out.push("  to allow it, run:".into());
        for c in fix(dir, &missing) {
            out.push(format!("    {c}"));
        }
    }
    for n in notes {
        out.push(format!("  ({n})"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(uid: u32, groups: &[u32]) -> Who {
        Who {
            name: "w".into(),
            uid,
            gid: groups[0],
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn permission_bits() {
        let w = who(998, &[997, 20]);
        // The package's 0750 root:wardgate: no.
        assert!(!bits_allow(0o750, 0, 997, &w));
        // With the group write bit: yes.
        assert!(bits_allow(0o770, 0, 997, &w));
        // The owner's bits count for the owner, not the group's.
        assert!(!bits_allow(0o570, 998, 997, &w));
        assert!(bits_allow(0o700, 998, 0, &w));
        // Another group: the others' bits.
        assert!(!bits_allow(0o775, 0, 5, &w));
        assert!(bits_allow(0o777, 0, 5, &w));
        assert!(bits_allow(0o500, 1, 1, &who(0, &[0])));
    }

    #[test]
    fn the_fix_names_the_shipped_drop_in() {
        let dir = Path::new(PACKAGED_DIR);
        let both = [
            Missing::ReadOnly {
                drop_in_present: false,
            },
            Missing::Permission {
                mode: 0o750,
                owner: "root".into(),
                group: "wardgate".into(),
                group_is_service: true,
            },
        ];
        assert_eq!(
            fix(dir, &both),
            vec![
                format!("sudo install -D -m 0644 {DROP_IN_SHIPPED} {DROP_IN}"),
                "sudo chmod g+w /etc/wardgate".to_owned(),
                "sudo systemctl daemon-reload && sudo systemctl restart wardgate".to_owned(),
            ]
        );
        let a = advice(dir, &both);
        assert!(a.contains("read-only for the service") && a.contains("0750 root:wardgate"));
        assert!(
            a.contains(DROP_IN_SHIPPED) && a.contains("chmod g+w"),
            "{a}"
        );
        // Installed but not reloaded: only the reload and restart.
        assert_eq!(
            fix(
                dir,
                &[Missing::ReadOnly {
                    drop_in_present: true
                }]
            ),
            vec!["sudo systemctl daemon-reload && sudo systemctl restart wardgate"]
        );
        // Another directory: a drop-in naming it.
        let f = fix(
            Path::new("/srv/wg"),
            &[Missing::ReadOnly {
                drop_in_present: false,
            }],
        );
        assert!(f[0].contains("ReadWritePaths=/srv/wg"), "{f:?}");
    }

    #[test]
    fn mounts_and_paths() {
        let mi = "\
22 1 254:1 / / ro,relatime shared:1 - ext4 /dev/vda2 rw
30 22 254:1 /etc/wardgate /etc/wardgate rw,relatime shared:1 - ext4 /dev/vda2 rw
31 22 0:5 / /etc/wardgate-other rw - tmpfs tmpfs rw
";
        assert_eq!(
            mount_rw(mi, Path::new("/etc/wardgate")),
            Some(("/etc/wardgate".into(), true))
        );
        assert_eq!(
            mount_rw(mi, Path::new("/etc/ssh")),
            Some(("/".into(), false))
        );
        assert!(paths_open(
            "/sys/class/leds -/etc/wardgate",
            Path::new("/etc/wardgate")
        ));
        assert!(paths_open("/etc", Path::new("/etc/wardgate")));
        assert!(!paths_open(
            "/sys/class/leds /etc/wardgate-x",
            Path::new("/etc/wardgate")
        ));
        assert!(!paths_open("", Path::new("/etc/wardgate")));
    }

    /// A directory this (root) test cannot make read-only gives no
    /// read-only part; a plain error of another kind gives nothing.
    #[test]
    fn after_failure_kinds() {
        let d = tempfile::tempdir().unwrap();
        let other = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(after_failure(d.path(), &other).is_empty());
        let rofs = std::io::Error::from_raw_os_error(libc::EROFS);
        let m = after_failure(d.path(), &rofs);
        assert!(matches!(m[0], Missing::ReadOnly { .. }), "{m:?}");
        assert!(for_this_process(d.path()).is_empty());
    }
}
