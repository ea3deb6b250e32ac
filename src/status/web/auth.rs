//! The page's basic auth: the expected credentials, compared in constant
//! time; a per-client back-off after failed attempts (bounded memory); and
//! the warning when the password file is readable by other users.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq as _;

use crate::status::config::WebConfig;

/// Failed attempts a client may make before it has to wait.
pub(super) const FREE_FAILURES: u32 = 5;
/// Failed attempts all the neighbours in the gateway's own IPv6 /64 may
/// make together before all of them have to wait (each also has its own
/// [`FREE_FAILURES`]). Enough for a busy office's typos within an hour;
/// a LAN host that rotates addresses to guess gets this many, not five per
/// address. The cost: such a host can make the office's IPv6 devices wait
/// too, as it could already keep them off the page by holding connections.
const SHARED_FREE_FAILURES: u32 = 20;
/// The first wait, after the fifth failure; it doubles with each further one.
const FIRST_WAIT: Duration = Duration::from_secs(5);
/// The longest wait.
const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// Clients remembered at most; the table never grows past this.
const TABLE_CAP: usize = 1024;
/// A client not heard from for this long may be forgotten when the table
/// is full.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// Who a request comes from, for the per-client connection share and the
/// wrong-password back-off.
///
/// IPv6 needs care because one host may take any number of addresses in
/// its /64 (privacy addresses, or simply made up), so counting each address
/// alone lets one host dodge every per-client limit. But counting each /64
/// as one client is wrong on the office LAN itself: the router hands the
/// whole office one /64 by SLAAC, so every staff PC and phone would share
/// one client's quarter of the connections, and one person's five
/// mistyped passwords would lock every colleague out. So:
///
/// - IPv4 (and IPv4-mapped IPv6): the address, as a DHCP lease is one host.
/// - IPv6 in the /64 of the gateway's own address that the connection came
///   in on (the office LAN; link-local `fe80::/64` too): the address. Their
///   wrong passwords are also counted together for the /64 (see
///   [`SHARED_FREE_FAILURES`]), so rotating addresses does not buy a LAN
///   host more guesses than the office as a whole gets.
/// - IPv6 from any other /64 (a routed network): the /64, one site's worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Client {
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 address in the gateway's own /64.
    Neighbour(Ipv6Addr),
    /// An IPv6 /64 other than the gateway's (its first address).
    Net(Ipv6Addr),
}

/// The /64 of an IPv6 address (its first address).
fn net64(a: Ipv6Addr) -> Ipv6Addr {
    (u128::from(a) & !((1u128 << 64) - 1)).into()
}

impl Client {
    /// The client `peer` is, for a connection that came in on the gateway's
    /// own address `local`.
    pub(super) fn of(peer: IpAddr, local: IpAddr) -> Client {
        match (peer.to_canonical(), local.to_canonical()) {
            (IpAddr::V4(v4), _) => Client::V4(v4),
            (IpAddr::V6(p), IpAddr::V6(l)) if net64(p) == net64(l) => Client::Neighbour(p),
            (IpAddr::V6(p), _) => Client::Net(net64(p)),
        }
    }

    /// The /64 a neighbour shares with the rest of the office, whose wrong
    /// passwords are counted together as well.
    fn shared(self) -> Option<Ipv6Addr> {
        match self {
            Client::Neighbour(a) => Some(net64(a)),
            _ => None,
        }
    }
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Client::V4(a) => a.fmt(f),
            Client::Neighbour(a) => a.fmt(f),
            Client::Net(a) => write!(f, "{a}/64"),
        }
    }
}

/// The expected `Authorization` header, kept as its SHA-256 so that the
/// comparison takes the same time whatever the length or content of what a
/// client sends.
pub(super) struct Credentials {
    digest: [u8; 32],
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, b);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Credentials {
    pub(super) fn new(user: &str, password: &str) -> Credentials {
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
    pub(super) fn matches(&self, header: &[u8]) -> bool {
        bool::from(sha256(header).ct_eq(&self.digest))
    }
}

struct Strikes {
    failures: u32,
    /// Refused until then (after [`FREE_FAILURES`]).
    until: Option<Instant>,
    last: Instant,
}

/// What the back-off counts under: a client, or the /64 that the gateway's
/// IPv6 neighbours share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Client(Client),
    Shared(Ipv6Addr),
}

impl Key {
    /// Failed attempts free of a wait.
    fn free(self) -> u32 {
        match self {
            Key::Client(_) => FREE_FAILURES,
            Key::Shared(_) => SHARED_FREE_FAILURES,
        }
    }

    /// The keys a client's attempt counts under.
    fn of(who: Client) -> impl Iterator<Item = Key> {
        std::iter::once(Key::Client(who)).chain(who.shared().map(Key::Shared))
    }
}

/// Failed attempts per client, and the waits they earn.
pub(super) struct Backoff {
    table: Mutex<HashMap<Key, Strikes>>,
    cap: usize,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::with_cap(TABLE_CAP)
    }
}

impl Backoff {
    fn with_cap(cap: usize) -> Backoff {
        Backoff {
            table: Mutex::new(HashMap::new()),
            cap: cap.max(1),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Strikes>> {
        // A panic elsewhere while holding the lock leaves counts that are
        // still counts: go on with them.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long `who` must still wait, if it must (its own wait, or its
    /// /64's when it is a neighbour).
    pub(super) fn waiting(&self, who: Client, now: Instant) -> Option<Duration> {
        let t = self.table();
        let until = Key::of(who).filter_map(|k| t.get(&k)?.until).max()?;
        (until > now).then(|| until - now)
    }

    /// Records a failed attempt; returns the wait it earned, if any.
    pub(super) fn failed(&self, who: Client, now: Instant) -> Option<Duration> {
        let mut t = self.table();
        Key::of(who)
            .filter_map(|k| self.strike(&mut t, k, now))
            .max()
    }

    fn strike(&self, t: &mut HashMap<Key, Strikes>, key: Key, now: Instant) -> Option<Duration> {
        if !t.contains_key(&key) && t.len() >= self.cap {
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
        let s = t.entry(key).or_insert(Strikes {
            failures: 0,
            until: None,
            last: now,
        });
        // No one success clears the shared count (it would let a guesser
        // start again whenever a colleague logs in), so it lapses instead:
        // an office's typos spread over days never add up to a wait.
        if matches!(key, Key::Shared(_)) && now.saturating_duration_since(s.last) >= FORGET_AFTER {
            s.failures = 0;
            s.until = None;
        }
        s.failures = s.failures.saturating_add(1);
        s.last = now;
        let wait = wait_after(s.failures, key.free())?;
        s.until = Some(now + wait);
        Some(wait)
    }

    /// A client that got in starts again from zero (its /64's shared count
    /// stays).
    pub(super) fn succeeded(&self, who: Client) {
        self.table().remove(&Key::Client(who));
    }

    /// Keys in the table (clients and shared /64s).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table().len()
    }
}

/// The wait after `failures` failed attempts when `free` - 1 of them are
/// free: none before, then [`FIRST_WAIT`], doubling, at most [`MAX_WAIT`].
fn wait_after(failures: u32, free: u32) -> Option<Duration> {
    let over = failures.checked_sub(free)?;
    let factor = 1u32.checked_shl(over.min(20)).unwrap_or(u32::MAX);
    Some(FIRST_WAIT.saturating_mul(factor).min(MAX_WAIT))
}

/// The warning for a password file that other users of the box can read
/// (mode `o+r`), naming the key; `None` when it is private, absent or
/// cannot be read (reading it reports that).
pub(crate) fn password_file_warning(cfg: &WebConfig) -> Option<String> {
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

    /// The gateway's own addresses in the tests: 10.0.0.1 on IPv4 and
    /// 2001:db8:1:2::1 in the office's /64 on IPv6.
    fn client(peer: &str) -> Client {
        let ip: IpAddr = peer.parse().unwrap();
        let local: IpAddr = match ip.to_canonical() {
            IpAddr::V4(_) => "10.0.0.1".parse().unwrap(),
            IpAddr::V6(p) if p.is_unicast_link_local() => "fe80::1".parse().unwrap(),
            IpAddr::V6(_) => "2001:db8:1:2::1".parse().unwrap(),
        };
        Client::of(ip, local)
    }

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
        assert_eq!(wait_after(4, FREE_FAILURES), None);
        assert_eq!(wait_after(5, FREE_FAILURES), Some(FIRST_WAIT));
        assert_eq!(wait_after(6, FREE_FAILURES), Some(FIRST_WAIT * 2));
        assert_eq!(wait_after(7, FREE_FAILURES), Some(FIRST_WAIT * 4));
        assert_eq!(wait_after(30, FREE_FAILURES), Some(MAX_WAIT));
        assert_eq!(wait_after(u32::MAX, FREE_FAILURES), Some(MAX_WAIT));
    }

    #[test]
    fn backoff_per_client_and_reset_on_success() {
        let b = Backoff::default();
        let (a, o) = (client("10.0.0.5"), client("10.0.0.6"));
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
            b.failed(
                client(&ip.to_string()),
                now + Duration::from_millis(i.into()),
            );
            assert!(b.len() <= 16);
        }
        // The most recent clients are the ones kept.
        let last = client(&std::net::Ipv4Addr::from(0x0a00_0000 + 999).to_string());
        for _ in 0..4 {
            b.failed(last, now + Duration::from_secs(2));
        }
        assert!(b.waiting(last, now + Duration::from_secs(2)).is_some());
    }

    #[test]
    fn ipv6_neighbours_are_counted_apart_and_other_nets_per_64() {
        // Two staff devices in the office's /64 (SLAAC) are two clients.
        let a = client("2001:db8:1:2::5");
        let b = client("2001:db8:1:2:ffff::9");
        assert_ne!(a, b);
        assert_eq!(a, Client::Neighbour("2001:db8:1:2::5".parse().unwrap()));
        assert_eq!(a.to_string(), "2001:db8:1:2::5");
        // So are two devices by their link-local addresses.
        assert_ne!(client("fe80::5"), client("fe80::6"));
        // A routed network's /64 is one client.
        let c = client("2001:db8:9:3::5");
        assert_eq!(c, client("2001:db8:9:3:abcd::1"));
        assert_ne!(c, client("2001:db8:9:4::5"));
        assert_eq!(c.to_string(), "2001:db8:9:3::/64");
        // An IPv4-mapped address is its IPv4 (a dual-stack listener), and
        // so is the gateway's own address it came in on.
        let mapped = Client::of(
            "::ffff:10.0.0.5".parse().unwrap(),
            "::ffff:10.0.0.1".parse().unwrap(),
        );
        assert_eq!(mapped, client("10.0.0.5"));
        assert_eq!(mapped.to_string(), "10.0.0.5");
        // IPv4 addresses are each their own client.
        assert_ne!(client("10.0.0.5"), client("10.0.0.6"));
    }

    #[test]
    fn one_neighbours_wrong_passwords_do_not_lock_out_the_office() {
        let b = Backoff::default();
        let now = Instant::now();
        let (typist, colleague) = (client("2001:db8:1:2::5"), client("2001:db8:1:2::6"));
        for _ in 0..FREE_FAILURES {
            b.failed(typist, now);
        }
        assert_eq!(b.waiting(typist, now), Some(FIRST_WAIT));
        assert_eq!(b.waiting(colleague, now), None);
    }

    #[test]
    fn rotating_ipv6_addresses_buys_no_more_guesses_than_the_office_gets() {
        let b = Backoff::default();
        let now = Instant::now();
        // A new address for every guess, four guesses each (never its own
        // fifth): the /64's shared count stops it at the twentieth.
        let addr = |i: u32| client(&format!("2001:db8:1:2::{:x}", 0x100 + i));
        for i in 0..SHARED_FREE_FAILURES - 1 {
            assert_eq!(b.failed(addr(i), now), None, "guess {i}");
        }
        assert_eq!(b.failed(addr(999), now), Some(FIRST_WAIT));
        for who in [addr(1000), addr(0), client("fe80::7")] {
            let w = b.waiting(who, now);
            assert_eq!(w.is_some(), who != client("fe80::7"), "{who}");
        }
        // A colleague's success does not clear the shared count...
        b.succeeded(addr(1000));
        assert!(b.waiting(addr(1000), now).is_some());
        assert_eq!(
            b.failed(addr(1001), now + FIRST_WAIT),
            Some(FIRST_WAIT * 2),
            "the next guess doubles it"
        );
        // ...it lapses after an hour without a wrong password.
        let later = now + FORGET_AFTER + FIRST_WAIT * 2;
        assert_eq!(b.waiting(addr(1002), later), None);
        assert_eq!(b.failed(addr(1002), later), None, "counting starts again");
        // Other networks' /64s are not touched by this one's count.
        assert_eq!(b.waiting(client("2001:db8:9:3::5"), now), None);
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
