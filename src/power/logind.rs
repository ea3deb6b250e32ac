//! Whether `shutdown_command` would be allowed to power the Pi off, for
//! `wardgate check`: for `systemctl poweroff` (and `poweroff`, `shutdown`)
//! logind decides, so ask it `CanPowerOff` over the system D-Bus with
//! whichever client this box has (`busctl`, `gdbus`, `dbus-send`), as the
//! `wardgate` user when `check` runs as root. Nothing is powered off.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The user the service runs as (systemd/wardgate.service).
pub(crate) const SERVICE_USER: &str = "wardgate";

/// How long one D-Bus call may take.
const CALL_WAIT: Duration = Duration::from_secs(5);

/// logind's answer, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// `yes`, `no`, `challenge` (a password would be asked: not for a
    /// service), `na` (not possible here), or `unknown`.
    pub answer: String,
    /// How it was asked, or why it could not be.
    pub how: String,
}

impl Verdict {
    /// The answer in words.
    pub(crate) fn words(&self) -> &'static str {
        match self.answer.as_str() {
            "yes" => "allowed",
            "challenge" => "NOT allowed (logind would ask for a password; a service has none)",
            "no" => "NOT allowed",
            "na" => "NOT possible on this machine",
            _ => "unknown",
        }
    }

    fn unknown(how: impl Into<String>) -> Verdict {
        Verdict {
            answer: "unknown".into(),
            how: how.into(),
        }
    }
}

/// Whether `cmd` powers off through logind (so `CanPowerOff` tells).
pub(crate) fn goes_through_logind(cmd: &[String]) -> bool {
    let Some((prog, args)) = cmd.split_first() else {
        return false;
    };
    let name = Path::new(prog)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.as_str() {
        "systemctl" => args.iter().any(|a| a == "poweroff"),
        "poweroff" | "shutdown" => true,
        _ => false,
    }
}

/// `prog` found as the system would run it: an absolute path as it is, a
/// bare name in `PATH`.
pub(crate) fn find_program(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The D-Bus clients, each with the arguments of a `CanPowerOff` call.
const CLIENTS: &[(&str, &[&str])] = &[
    (
        "busctl",
        &[
            "--system",
            "call",
            "org.freedesktop.login1",
            "/org/freedesktop/login1",
            "org.freedesktop.login1.Manager",
            "CanPowerOff",
        ],
    ),
    (
        "gdbus",
        &[
            "call",
            "--system",
            "--dest",
            "org.freedesktop.login1",
            "--object-path",
            "/org/freedesktop/login1",
            "--method",
            "org.freedesktop.login1.Manager.CanPowerOff",
        ],
    ),
    (
        "dbus-send",
        &[
            "--system",
            "--print-reply",
            "--dest=org.freedesktop.login1",
            "/org/freedesktop/login1",
            "org.freedesktop.login1.Manager.CanPowerOff",
        ],
    ),
];

/// The answer in a client's output: busctl `s "yes"`, gdbus `('yes',)`,
/// dbus-send `string "yes"`.
pub(crate) fn parse_answer(out: &str) -> Option<String> {
    for quote in ['"', '\''] {
        let mut parts = out.split(quote);
        parts.next();
        if let Some(word) = parts.next() {
            if ["yes", "no", "challenge", "na"].contains(&word) {
                return Some(word.to_owned());
            }
        }
    }
    None
}

/// Asks logind whether the service's user may power off.
pub(crate) async fn can_power_off() -> Verdict {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let me = whoami();
    let mut prefix: Vec<String> = Vec::new();
    let who = if root {
        if !user_exists(SERVICE_USER) {
            return Verdict::unknown(format!(
                "there is no user {SERVICE_USER} on this machine (the package creates it)"
            ));
        }
        match find_program("setpriv") {
            Some(p) => {
                prefix = vec![
                    p.display().to_string(),
                    format!("--reuid={SERVICE_USER}"),
                    format!("--regid={SERVICE_USER}"),
                    "--clear-groups".into(),
                ];
                format!("as user {SERVICE_USER}")
            }
            None => {
                return Verdict::unknown(
                    "setpriv (util-linux) is missing: cannot ask as user wardgate",
                )
            }
        }
    } else if me.as_deref() == Some(SERVICE_USER) {
        format!("as user {SERVICE_USER}")
    } else {
        format!(
            "as user {} (not {SERVICE_USER}: run `sudo wardgate check` to ask for the service's user)",
            me.unwrap_or_else(|| "?".into())
        )
    };
    let Some((tool, path, args)) = CLIENTS
        .iter()
        .find_map(|(t, a)| find_program(t).map(|p| (*t, p, *a)))
    else {
        return Verdict::unknown("no D-Bus client here (busctl, gdbus or dbus-send) to ask logind");
    };
    let mut argv: Vec<String> = prefix;
    argv.push(path.display().to_string());
    argv.extend(args.iter().map(|a| a.to_string()));
    let run = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(CALL_WAIT, run).await {
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stdout);
            match parse_answer(&text).filter(|_| out.status.success()) {
                Some(a) => Verdict {
                    answer: a,
                    how: format!("logind's CanPowerOff, asked {who} with {tool}"),
                },
                None => {
                    let err = String::from_utf8_lossy(&out.stderr);
                    Verdict::unknown(format!(
                        "{tool} could not ask logind: {}",
                        crate::source::cut(err.trim(), 200)
                    ))
                }
            }
        }
        Ok(Err(e)) => Verdict::unknown(format!("{tool} could not be run: {e}")),
        Err(_) => Verdict::unknown(format!("{tool} did not answer within {CALL_WAIT:?}")),
    }
}

fn user_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: getpwnam with a valid C string; only the null check is used.
    unsafe { !libc::getpwnam(c.as_ptr()).is_null() }
}

fn whoami() -> Option<String> {
    // SAFETY: getpwuid with our own uid; the name is copied out at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_of_each_client() {
        assert_eq!(parse_answer("s \"yes\"\n").as_deref(), Some("yes"));
        assert_eq!(
            parse_answer("('challenge',)\n").as_deref(),
            Some("challenge")
        );
        assert_eq!(
            parse_answer("method return time=1 sender=:1.2 -> destination=:1.9 serial=5 reply_serial=2\n   string \"na\"\n")
                .as_deref(),
            Some("na")
        );
        assert_eq!(parse_answer("s \"maybe\"\n"), None);
        assert_eq!(parse_answer(""), None);
    }

    #[test]
    fn which_commands_logind_decides() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(goes_through_logind(&v(&["systemctl", "poweroff"])));
        assert!(goes_through_logind(&v(&[
            "/usr/bin/systemctl",
            "--no-wall",
            "poweroff"
        ])));
        assert!(goes_through_logind(&v(&["/sbin/poweroff"])));
        assert!(!goes_through_logind(&v(&["systemctl", "reboot"])));
        assert!(!goes_through_logind(&v(&["/usr/local/bin/my-off"])));
        assert!(!goes_through_logind(&[]));
        assert_eq!(Verdict::unknown("x").words(), "unknown");
        assert!(find_program("sh").is_some());
        assert!(find_program("/nonexistent/x").is_none());
    }
}
