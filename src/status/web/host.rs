//! The `Host` check that keeps DNS rebinding off the page.
//!
//! A web page on another site cannot read the gateway's page: the browser's
//! same-origin rule keeps them apart. DNS rebinding gets around that rule:
//! a page at `attacker.example` has its name re-pointed at the gateway's LAN
//! address, and the browser, believing it still talks to the attacker's
//! own origin, lets its script read the answers. The only trace is the name
//! in the request's `Host` header, so the page answers only to names that
//! are its own.
//!
//! Always taken, whatever the config says:
//!
//! - any IP address (`10.0.0.5`, `[fe80::1]`): rebinding needs a name the
//!   attacker controls, and a page opened by an address has that address
//!   as its origin, which no other site shares. This also keeps the page
//!   reachable by whatever address the Pi has today (DHCP may change it)
//!   and through a port forward.
//! - `localhost`, the box's host name and `<host name>.local` (mDNS, which
//!   Raspberry Pi OS answers): how staff and technicians open the page. An
//!   outside site cannot make these names point anywhere in a staff
//!   browser.
//!
//! Anything else must be listed in `[web] allowed_hosts` (a name the office's
//! DNS gives the Pi, say). There is no "any": a wildcard would turn the
//! defence off for every site, while listing a name costs one line.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the `Host` header names, port aside.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// An IPv4 address, or an IPv6 address written in brackets.
    Ip(IpAddr),
    /// A name, in lower case and without a trailing dot.
    Name(String),
}

/// Why a `Host` value is not a host: the request is refused with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HostError {
    /// The request has no `Host` header (HTTP/1.1 requires one).
    #[error("no Host header")]
    Missing,
    /// More than one `Host` header: which one the browser meant is unknown.
    #[error("more than one Host header")]
    Repeated,
    /// The value is empty.
    #[error("empty Host")]
    Empty,
    /// The port after the colon is not a number up to 65535.
    #[error("bad port")]
    Port,
    /// An IPv6 address in brackets that does not parse (or has a zone).
    #[error("bad IPv6 address")]
    Ipv6,
    /// A name with a character, label or length a host name cannot have
    /// (a user part `user@`, a path, a bare IPv6 address, ...).
    #[error("bad host name")]
    Name,
}

/// The longest host name taken (the DNS limit).
const MAX_NAME: usize = 253;
/// The longest label taken (the DNS limit).
const MAX_LABEL: usize = 63;

/// Parses a `Host` header value (or a request target's authority):
/// `name`, `name:port`, `a.b.c.d[:port]` or `[v6][:port]`. Pure; never
/// panics on any bytes.
fn parse(value: &[u8]) -> Result<Host, HostError> {
    let v = value.trim_ascii();
    if v.is_empty() {
        return Err(HostError::Empty);
    }
    if let Some(rest) = v.strip_prefix(b"[") {
        let end = rest
            .iter()
            .position(|&b| b == b']')
            .ok_or(HostError::Ipv6)?;
        check_port(&rest[end + 1..])?;
        // A zone (`%25eth0`) is not taken: no browser sends one, and the
        // address alone is what the check needs.
        let ip = std::str::from_utf8(&rest[..end])
            .ok()
            .and_then(|s| s.parse::<Ipv6Addr>().ok())
            .ok_or(HostError::Ipv6)?;
        return Ok(Host::Ip(IpAddr::V6(ip)));
    }
    let (name, port) = match v.iter().position(|&b| b == b':') {
        Some(i) => (&v[..i], &v[i..]),
        None => (v, &b""[..]),
    };
    check_port(port)?;
    if name.is_empty() {
        return Err(HostError::Empty);
    }
    let name = std::str::from_utf8(name).map_err(|_| HostError::Name)?;
    if let Ok(v4) = name.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(v4)));
    }
    parse_name(name).map(Host::Name)
}

/// `""` or `":"` followed by up to five digits, at most 65535. An empty
/// port after the colon is allowed by the URI grammar.
fn check_port(p: &[u8]) -> Result<(), HostError> {
    let Some(digits) = p.strip_prefix(b":") else {
        return if p.is_empty() {
            Ok(())
        } else {
            Err(HostError::Port)
        };
    };
    if digits.is_empty() {
        return Ok(());
    }
    if digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HostError::Port);
    }
    let n = digits
        .iter()
        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    if n > 65535 {
        return Err(HostError::Port);
    }
    Ok(())
}

/// A host name in the form it is compared in: lower case, one trailing dot
/// dropped (`Localhost.` is `localhost`), labels of letters, digits, `-`
/// and `_`, none empty.
pub(crate) fn parse_name(name: &str) -> Result<String, HostError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(HostError::Name);
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= MAX_LABEL
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(HostError::Name);
        }
    }
    Ok(name.to_ascii_lowercase())
}

/// The names the page answers to besides IP addresses.
#[derive(Debug, Clone)]
pub(super) struct AllowedHosts {
    names: BTreeSet<String>,
}

impl AllowedHosts {
    /// `localhost`, `hostname` and `hostname.local` (when the box has a
    /// name), and the configured names. Names that do not parse are left
    /// out here; [`crate::status::config::WebConfig::problems`] reports them.
    pub(super) fn new(hostname: Option<&str>, configured: &[String]) -> AllowedHosts {
        let mut names = BTreeSet::from(["localhost".to_owned()]);
        if let Some(h) = hostname.and_then(|h| parse_name(h).ok()) {
            names.insert(format!("{h}.local"));
            names.insert(h);
        }
        names.extend(configured.iter().filter_map(|n| parse_name(n).ok()));
        AllowedHosts { names }
    }

    /// Whether the page answers to `host`.
    fn allows(&self, host: &Host) -> bool {
        match host {
            Host::Ip(_) => true,
            Host::Name(n) => self.names.contains(n),
        }
    }

    /// The names, for the log line at start.
    pub(super) fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
}

/// The box's host name, from the kernel (`None` if it cannot be read).
/// Read once at start: a renamed Pi is picked up by the restart that
/// renaming needs anyway for mDNS to follow.
pub(super) fn own_hostname() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let h = h.trim();
    (!h.is_empty()).then(|| h.to_owned())
}

/// How a request's host came out: allowed, or refused with why.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Allowed,
    /// Not a host at all: 400.
    Malformed(HostError),
    /// A host the page does not answer to: 421.
    Foreign(String),
}

/// Checks a request's `Host` headers and, when the request target is in
/// absolute form (`GET http://name/ HTTP/1.1`), its authority too: a
/// server must take the target's authority over `Host`, so both must be
/// ours.
pub(super) fn check<'a>(
    allowed: &AllowedHosts,
    host_headers: impl Iterator<Item = &'a [u8]>,
    target_authority: Option<&str>,
    http10: bool,
) -> Verdict {
    let mut hosts = host_headers;
    let first = hosts.next();
    if hosts.next().is_some() {
        return Verdict::Malformed(HostError::Repeated);
    }
    let mut seen = Vec::with_capacity(2);
    match first {
        Some(v) => seen.push(v),
        // HTTP/1.0 predates Host; no browser sends a request without it,
        // so a request without it cannot be a rebinding.
        None if http10 || target_authority.is_some() => {}
        None => return Verdict::Malformed(HostError::Missing),
    }
    if let Some(a) = target_authority {
        seen.push(a.as_bytes());
    }
    for v in seen {
        match parse(v) {
            Ok(h) if allowed.allows(&h) => {}
            Ok(Host::Name(n)) => return Verdict::Foreign(n),
            Ok(Host::Ip(ip)) => return Verdict::Foreign(ip.to_string()),
            Err(e) => return Verdict::Malformed(e),
        }
    }
    Verdict::Allowed
}

/// Refused requests, counted since start and logged at most once a minute
/// (a scan is one log line a minute, not one per request).
#[derive(Default)]
pub(super) struct Refusals {
    count: AtomicU64,
    logged: Mutex<Option<Instant>>,
}

impl Refusals {
    /// Refusals since start (for /metrics).
    pub(super) fn total(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Counts one; returns the count so far when it is time to log.
    pub(super) fn count(&self, now: Instant) -> Option<u64> {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60));
        if due {
            *last = Some(now);
        }
        due.then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Result<Host, HostError> {
        Ok(Host::Name(s.into()))
    }
    fn ip(s: &str) -> Result<Host, HostError> {
        Ok(Host::Ip(s.parse().unwrap()))
    }

    #[test]
    fn host_values_parse() {
        use HostError::*;
        let table: &[(&[u8], Result<Host, HostError>)] = &[
            (b"localhost", name("localhost")),
            (b"localhost:8080", name("localhost")),
            (b"LocalHost", name("localhost")),
            (b"localhost.", name("localhost")),
            (b"LOCALHOST.:8080", name("localhost")),
            (b"  raspberrypi.local  ", name("raspberrypi.local")),
            (b"ward-3_gw.lan", name("ward-3_gw.lan")),
            (b"host:", name("host")),
            (b"10.0.0.5", ip("10.0.0.5")),
            (b"10.0.0.5:8080", ip("10.0.0.5")),
            (b"[::1]", ip("::1")),
            (b"[::1]:8080", ip("::1")),
            (b"[2001:DB8::5]:80", ip("2001:db8::5")),
            (b"[::ffff:10.0.0.5]", ip("::ffff:10.0.0.5")),
            (b"", Err(Empty)),
            (b"   ", Err(Empty)),
            (b":8080", Err(Empty)),
            (b"host:port", Err(Port)),
            (b"host:65536", Err(Port)),
            (b"host:123456", Err(Port)),
            (b"host:-1", Err(Port)),
            (b"host:80:80", Err(Port)),
            (b"[::1", Err(Ipv6)),
            (b"[::1]x", Err(Port)),
            (b"[::1]:x", Err(Port)),
            (b"[fe80::1%25eth0]", Err(Ipv6)),
            (b"[10.0.0.5]", Err(Ipv6)),
            (b"[]", Err(Ipv6)),
            // A bare IPv6 address: its first colon reads as a port.
            (b"::1", Err(Port)),
            (b"2001:db8::1", Err(Port)),
            (b"user@localhost", Err(Name)),
            (b"localhost/x", Err(Name)),
            (b"a..b", Err(Name)),
            (b".", Err(Name)),
            (b"localhost..", Err(Name)),
            (b".localhost", Err(Name)),
            (b"h\xc3\xa0.vn", Err(Name)),
            (b"\xff\xfe", Err(Name)),
            (b"a b", Err(Name)),
            (&[b'a'; 64], Err(Name)),
        ];
        for (v, want) in table {
            assert_eq!(&parse(v), want, "{:?}", String::from_utf8_lossy(v));
        }
        let long = format!("{}.b", vec!["a".repeat(63); 4].join("."));
        assert_eq!(parse(long.as_bytes()), Err(Name), "over 253");
        // Numbers that are not dotted quads are names (browsers turn
        // `127.1` into `127.0.0.1` before they send it).
        assert_eq!(parse(b"127.1"), name("127.1"));
    }

    #[test]
    fn what_is_allowed() {
        let a = AllowedHosts::new(Some("WardGate-3"), &["gw.ward3.lan.".into(), "*".into()]);
        let names: Vec<&str> = a.names().collect();
        assert_eq!(
            names,
            [
                "gw.ward3.lan",
                "localhost",
                "wardgate-3",
                "wardgate-3.local"
            ]
        );
        for ok in [
            "localhost",
            "wardgate-3:8080",
            "WARDGATE-3.local.",
            "gw.ward3.lan",
            "10.9.8.7",
            "[2001:db8::1]:8080",
        ] {
            assert!(a.allows(&parse(ok.as_bytes()).unwrap()), "{ok}");
        }
        for no in ["attacker.example", "wardgate-3.example", "x", "*"] {
            let h = parse(no.as_bytes());
            assert!(h.is_err() || !a.allows(&h.unwrap()), "{no}");
        }
        let bare = AllowedHosts::new(None, &[]);
        assert_eq!(bare.names().collect::<Vec<_>>(), ["localhost"]);
    }

    #[test]
    fn requests_are_checked() {
        let a = AllowedHosts::new(Some("pi"), &[]);
        let one = |h: &'static str| std::iter::once(h.as_bytes());
        assert_eq!(check(&a, one("pi:8080"), None, false), Verdict::Allowed);
        assert_eq!(
            check(&a, one("attacker.example:8080"), None, false),
            Verdict::Foreign("attacker.example".into())
        );
        assert_eq!(
            check(&a, one("x y"), None, false),
            Verdict::Malformed(HostError::Name)
        );
        assert_eq!(
            check(&a, std::iter::empty(), None, false),
            Verdict::Malformed(HostError::Missing)
        );
        assert_eq!(check(&a, std::iter::empty(), None, true), Verdict::Allowed);
        let two = [&b"pi"[..], &b"pi"[..]];
        assert_eq!(
            check(&a, two.into_iter(), None, false),
            Verdict::Malformed(HostError::Repeated)
        );
        // The target's authority is checked as well as Host.
        assert_eq!(
            check(&a, one("pi"), Some("attacker.example"), false),
            Verdict::Foreign("attacker.example".into())
        );
        assert_eq!(
            check(&a, std::iter::empty(), Some("10.0.0.5:8080"), false),
            Verdict::Allowed
        );
    }

    #[test]
    fn refusals_are_logged_once_a_minute() {
        let r = Refusals::default();
        let t = Instant::now();
        assert_eq!(r.count(t), Some(1));
        assert_eq!(r.count(t + Duration::from_secs(1)), None);
        assert_eq!(r.count(t + Duration::from_secs(59)), None);
        assert_eq!(r.count(t + Duration::from_secs(61)), Some(4));
    }
}
