//! The page's basic auth: the expected credentials, compared in constant
//! time; a per-client back-off after failed attempts (bounded memory); and
//! the warning when the password file is readable by other users.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq as _;

use crate::config::WebConfig;

/// Failed attempts a client may make before it has to wait.
pub const FREE_FAILURES: u32 = 5;
/// The first wait, after the fifth failure; it doubles with each further one.
pub const FIRST_WAIT: Duration = Duration::from_secs(5);
/// The longest wait.
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// Clients remembered at most; the table never grows past this.
pub const TABLE_CAP: usize = 1024;
/// A client not heard from for this long may be forgotten when the table
/// is full.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// Who a request comes from, for counting failures and connections: the
/// address for IPv4, the /64 for IPv6 (one LAN host can take any number of
/// addresses within its /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client(IpAddr);

impl Client {
    pub fn of(ip: IpAddr) -> Client {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                Client(IpAddr::V6(bits.into()))
            }
            v4 => Client(v4),
        }
    }
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V6(_) => write!(f, "{}/64", self.0),
            IpAddr::V4(_) => self.0.fmt(f),
        }
    }
}

/// The expected `Authorization` header, kept as its SHA-256 so that the
/// comparison takes the same time whatever the length or content of what a
/// client sends.
pub struct Credentials {
    digest: [u8; 32],
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, b);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Credentials {
    pub fn new(user: &str, password: &str) -> Credentials {
        use base64::Engine as _;
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        Credentials {
            digest: sha256(header.as_bytes()),
        }
    }

    /// Whether `header` (the whole `Authorization` value) is the expected
    /// one; constant time in its content and length.
    pub fn matches(&self, header: &[u8]) -> bool {
        bool::from(sha256(header).ct_eq(&self.digest))
    }
}

struct Strikes {
    failures: u32,
    /// Refused until then (after [`FREE_FAILURES`]).
    until: Option<Instant>,
    last: Instant,
}

/// Failed attempts per client, and the waits they earn.
pub struct Backoff {
    table: Mutex<HashMap<Client, Strikes>>,
    cap: usize,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::with_cap(TABLE_CAP)
    }
}

impl Backoff {
    pub fn with_cap(cap: usize) -> Backoff {
        Backoff {
            table: Mutex::new(HashMap::new()),
            cap: cap.max(1),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Client, Strikes>> {
        // A panic elsewhere while holding the lock leaves counts that are
        // still counts: go on with them.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long `who` must still wait, if it must.
    pub fn waiting(&self, who: Client, now: Instant) -> Option<Duration> {
        let t = self.table();
        let until = t.get(&who)?.until?;
        (until > now).then(|| until - now)
    }

    /// Records a failed attempt; returns the wait it earned, if any.
    pub fn failed(&self, who: Client, now: Instant) -> Option<Duration> {
        let mut t = self.table();
        if !t.contains_key(&who) && t.len() >= self.cap {
            // Full: forget clients not heard from for an hour, else the one
            // heard from least recently. Memory stays bounded; an attacker
            // with more than `cap` addresses gains nothing it could not get
            // from them anyway.
            t.retain(|_, s| now.saturating_duration_since(s.last) < FORGET_AFTER);
            if t.len() >= self.cap {
                if let Some(oldest) = t.iter().min_by_key(|(_, s)| s.last).map(|(k, _)| *k) {
                    t.remove(&oldest);
                }
            }
        }
        let s = t.entry(who).or_insert(Strikes {
            failures: 0,
            until: None,
            last: now,
        });
        s.failures = s.failures.saturating_add(1);
        s.last = now;
        let wait = wait_after(s.failures)?;
        s.until = Some(now + wait);
        Some(wait)
    }

    /// A client that got in starts again from zero.
    pub fn succeeded(&self, who: Client) {
        self.table().remove(&who);
    }

    pub fn len(&self) -> usize {
        self.table().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The wait after `failures` failed attempts: none for the first four, then
/// [`FIRST_WAIT`], doubling, at most [`MAX_WAIT`].
pub fn wait_after(failures: u32) -> Option<Duration> {
    let over = failures.checked_sub(FREE_FAILURES)?;
    let factor = 1u32.checked_shl(over.min(20)).unwrap_or(u32::MAX);
    Some(FIRST_WAIT.saturating_mul(factor).min(MAX_WAIT))
}

/// The warning for a password file that other users of the box can read
/// (mode `o+r`), naming the key; `None` when it is private, absent or
/// cannot be read (reading it reports that).
pub fn password_file_warning(cfg: &WebConfig) -> Option<String> {
    let path = cfg.password_file.as_deref()?;
    crate::host::file::readable_by_others(path).then(|| {
        format!(
            "web.password_file {}: readable by other users of this box; make it private (chmod o-r)",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_match_only_the_exact_header() {
        let c = Credentials::new("staff", "pw");
        assert!(c.matches(b"Basic c3RhZmY6cHc="));
        assert!(!c.matches(b"Basic c3RhZmY6cHc"));
        assert!(!c.matches(b"Basic c3RhZmY6cHc=="));
        assert!(!c.matches(b""));
        assert!(!c.matches(&[0xff; 5000]));
    }

    #[test]
    fn waits_start_after_five_failures_and_double_to_a_bound() {
        assert_eq!(wait_after(4), None);
        assert_eq!(wait_after(5), Some(FIRST_WAIT));
        assert_eq!(wait_after(6), Some(FIRST_WAIT * 2));
        assert_eq!(wait_after(7), Some(FIRST_WAIT * 4));
        assert_eq!(wait_after(30), Some(MAX_WAIT));
        assert_eq!(wait_after(u32::MAX), Some(MAX_WAIT));
    }

    #[test]
    fn backoff_per_client_and_reset_on_success() {
        let b = Backoff::default();
        let (a, o) = (
            Client::of("10.0.0.5".parse().unwrap()),
            Client::of("10.0.0.6".parse().unwrap()),
        );
        let now = Instant::now();
        for _ in 0..4 {
            assert_eq!(b.failed(a, now), None);
        }
        assert_eq!(b.waiting(a, now), None);
        assert_eq!(b.failed(a, now), Some(FIRST_WAIT));
        assert_eq!(b.waiting(a, now), Some(FIRST_WAIT));
        assert_eq!(b.waiting(o, now), None, "another client is not affected");
        assert_eq!(b.waiting(a, now + FIRST_WAIT), None, "over after the wait");
        assert_eq!(b.failed(a, now + FIRST_WAIT), Some(FIRST_WAIT * 2));
        b.succeeded(a);
        assert_eq!(b.waiting(a, now), None);
        assert_eq!(b.failed(a, now), None, "counting starts again");
    }

    #[test]
    fn the_table_stays_bounded() {
        let b = Backoff::with_cap(16);
        let now = Instant::now();
        for i in 0..1000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            b.failed(Client::of(ip), now + Duration::from_millis(i.into()));
            assert!(b.len() <= 16);
        }
        // The most recent clients are the ones kept.
        let last = Client::of(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + 999)));
        for _ in 0..4 {
            b.failed(last, now + Duration::from_secs(2));
        }
        assert!(b.waiting(last, now + Duration::from_secs(2)).is_some());
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let a = Client::of("2001:db8:1:2::5".parse().unwrap());
        let b = Client::of("2001:db8:1:2:ffff::9".parse().unwrap());
        let c = Client::of("2001:db8:1:3::5".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mapped = Client::of("::ffff:10.0.0.5".parse().unwrap());
        assert_eq!(mapped, Client::of("10.0.0.5".parse().unwrap()));
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn a_password_file_others_can_read_is_reported() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "x").unwrap();
        let cfg = WebConfig {
            password_file: Some(p.clone()),
            ..Default::default()
        };
        for (mode, open) in [(0o600, false), (0o640, false), (0o604, true), (0o644, true)] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(password_file_warning(&cfg).is_some(), open, "{mode:o}");
        }
        let w = password_file_warning(&cfg).unwrap();
        assert!(w.starts_with("web.password_file "), "{w}");
        assert!(w.contains("readable by other users"), "{w}");
    }
}
