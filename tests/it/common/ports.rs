//! Loopback ports for peers: one that was free a moment ago, and one held
//! where nothing listens (a broker or database that is not there).

use std::net::TcpListener;

/// A loopback port that was free a moment ago. Bind-and-release: another
/// process may take it before it is used, so use it only for "nothing
/// listens here" (a gateway pointed at a broker that is not there; each
/// such use says so in a comment) and for peers that cannot bind port 0
/// themselves and are recognised by a marker of their own and started
/// again on another port when theirs was taken (mosquitto in [`Broker`],
/// upsd in [`nut::NutServer`]). Every other peer binds port 0 and reports
/// its port (the MQTT proxy, the Modbus TCP peer, the page).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A loopback port where nothing listens, for as long as the value lives:
/// a socket bound to it (with `SO_REUSEADDR`) that never calls `listen`.
/// A connect there is refused, and no other test can be handed the port
/// (the kernel's port 0 never picks a port in use, and [`free_port`] binds
/// port 0). A test may still start its own peer on it (mosquitto,
/// VictoriaMetrics and std's listeners bind with `SO_REUSEADDR`, which
/// Linux allows beside a bound socket that does not listen): the port is
/// then this test's alone, before, during and after that peer.
pub struct ClosedPort {
    pub port: u16,
    _fd: std::os::fd::OwnedFd,
}

pub fn closed_port() -> ClosedPort {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor this function owns; every
    // pointer is to a local of the right size.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let one: libc::c_int = 1;
        let rc = libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            std::ptr::addr_of!(one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "SO_REUSEADDR: {}", std::io::Error::last_os_error());
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let rc = libc::bind(raw, std::ptr::addr_of!(addr).cast(), len);
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let mut got: libc::sockaddr_in = std::mem::zeroed();
        let mut got_len = len;
        let rc = libc::getsockname(raw, std::ptr::addr_of_mut!(got).cast(), &mut got_len);
        assert_eq!(rc, 0, "getsockname: {}", std::io::Error::last_os_error());
        ClosedPort {
            port: u16::from_be(got.sin_port),
            _fd: fd,
        }
    }
}
