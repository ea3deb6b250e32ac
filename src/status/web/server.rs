//! The page's HTTP server: an accept loop that caps connections (in all and
//! per client), and hyper's HTTP/1 connection with a header-read timeout,
//! small request heads, a stalled-write timeout and a lifetime, so that
//! nothing a LAN client does can hold file descriptors the data path needs.
//!
//! Why not `axum::serve`: it has no header-read timeout, no idle timeout
//! and no connection cap, so 1,100 half-sent requests would use up the
//! process's 1,024 descriptors and the MQTT link could not reconnect.
//! Why hyper's builder rather than tower's limit layers: a tower layer sees
//! a request only once its head has been read, so it can neither time out a
//! slow head nor refuse a connection; hyper's `http1::Builder` has the
//! header-read timeout built in (it also starts again as soon as a response
//! is sent, so it is the idle keep-alive timeout too), and a cap belongs in
//! the accept loop, where a refused connection can be closed at once
//! instead of waiting in the listener's backlog.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::auth::Client;

/// File descriptors kept for everything but the page: the spool's SQLite
/// files, the MQTT (and other) sinks, serial ports, GPIO, 1-Wire, SNMP and
/// Modbus sockets, the journal. The page's cap is lowered so that its
/// connections never eat into these.
pub(super) const FD_RESERVE: u64 = 256;
/// The soft descriptor limit the gateway raises itself to, when the hard
/// limit allows (as `LimitNOFILE=4096` in the unit does).
const FD_TARGET: u64 = 4096;
/// The largest request head (request line and headers) taken.
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// The most header lines taken.
const MAX_HEADERS: usize = 32;
/// A client that reads none of its response for this long is dropped.
const WRITE_STALL: Duration = Duration::from_secs(10);
/// A connection is asked to close after this long (its request in flight
/// is finished first), so that a slow reader cannot keep one for ever.
const MAX_AGE: Duration = Duration::from_secs(300);
/// How long a connection asked to close may take to finish its request.
const GRACE: Duration = Duration::from_secs(5);

/// The limits one server runs with.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Connections at once.
    pub(super) total: usize,
    /// Connections at once from one client.
    pub(super) per_client: usize,
    /// Header-read and idle keep-alive timeout.
    pub(super) header_timeout: Duration,
}

impl Limits {
    /// The limits for `wanted` connections, lowered to fit the process's
    /// descriptor limit `soft` (with [`FD_RESERVE`] kept for the data path
    /// and at least as many descriptors again as the page may use).
    pub(super) fn fitting(wanted: usize, soft: Option<u64>, header_timeout: Duration) -> Limits {
        let room = soft.map_or(u64::MAX, |s| s.saturating_sub(FD_RESERVE) / 2);
        // Never below 2 (the page stays reachable), never above `wanted`.
        let room = usize::try_from(room).unwrap_or(usize::MAX).max(2);
        let total = wanted.min(room).max(1);
        Limits {
            total,
            per_client: (total / 4).max(1),
            header_timeout,
        }
    }
}

/// Raises the soft descriptor limit towards [`FD_TARGET`] when the hard
/// limit allows, and returns the soft limit now in force (`None` if it
/// cannot be read). The page is where this is kept because it is the one
/// part whose descriptor count is driven from outside.
pub(super) fn descriptor_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    let (soft, hard) = (widen(lim.rlim_cur), widen(lim.rlim_max));
    if soft < FD_TARGET && hard > soft {
        let raised = libc::rlimit {
            rlim_cur: FD_TARGET.min(hard) as libc::rlim_t,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given; raising the soft
        // limit up to the hard limit needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::info!(
                from = soft,
                to = widen(raised.rlim_cur),
                "file descriptor limit raised"
            );
            return Some(widen(raised.rlim_cur));
        }
    }
    Some(soft)
}

/// `rlim_t` is `u64` on 64-bit Linux and `u32` on 32-bit (armhf Pi OS).
#[allow(clippy::useless_conversion)]
fn widen(v: libc::rlim_t) -> u64 {
    u64::from(v)
}

/// Connections open now, in all and per client.
#[derive(Default)]
struct Slots {
    open: Mutex<(usize, HashMap<Client, usize>)>,
}

/// One connection's place; given back when dropped.
struct Slot {
    slots: Arc<Slots>,
    client: Client,
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, HashMap<Client, usize>)> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(self: &Arc<Self>, client: Client, lim: &Limits) -> Option<Slot> {
        let mut g = self.lock();
        let (total, per) = &mut *g;
        let mine = per.get(&client).copied().unwrap_or(0);
        if *total >= lim.total || mine >= lim.per_client {
            return None;
        }
        *total += 1;
        per.insert(client, mine + 1);
        Some(Slot {
            slots: self.clone(),
            client,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = self.slots.lock();
        let (total, per) = &mut *g;
        *total = total.saturating_sub(1);
        if let Some(n) = per.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.client);
            }
        }
    }
}

/// Something that may happen many times a second, counted and logged at
/// most once a minute (a flood is one log line a minute, not one per
/// connection).
#[derive(Default)]
struct Quiet {
    count: u64,
    logged: Option<Instant>,
}

impl Quiet {
    /// Counts one; true when it is time to log.
    fn count(&mut self) -> bool {
        self.count += 1;
        let now = Instant::now();
        let due = self
            .logged
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60));
        if due {
            self.logged = Some(now);
        }
        due
    }
}

/// Serves `app` on `listener` until `cancel`, within `lim`.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    lim: Limits,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Slots::default());
    let conns = TaskTracker::new();
    let mut refused = Quiet::default();
    let mut failed = Quiet::default();
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors (EMFILE/ENFILE) or an aborted
                    // handshake: pause so a full table does not spin.
                    if failed.count() {
                        tracing::warn!(error = %e, failures = failed.count, "web page: accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // The address the connection came in on tells the office LAN's
        // IPv6 /64 from a routed one (see `Client`).
        let local = stream.local_addr().map_or(peer.ip(), |a| a.ip());
        let client = Client::of(peer.ip(), local);
        let Some(slot) = slots.take(client, &lim) else {
            // Closed at once: its descriptor is free again now, and the
            // client learns at once that it must come back later.
            drop(stream);
            if refused.count() {
                tracing::warn!(
                    %client,
                    refused = refused.count,
                    max = lim.total,
                    per_client = lim.per_client,
                    "web page: too many connections, refusing"
                );
            }
            continue;
        };
        conns.spawn(connection(
            stream,
            peer,
            client,
            app.clone(),
            lim,
            slot,
            cancel.clone(),
        ));
    }
    conns.close();
    conns.wait().await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    client: Client,
    app: Router,
    lim: Limits,
    _slot: Slot,
    cancel: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let io = Watched::new(stream);
    let stall = io.blocked_since.clone();
    let born = io.born;
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        use tower::Service as _;
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(client);
        app.clone().call(req)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(lim.header_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .max_buf_size(16 * 1024);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let age = tokio::time::sleep(MAX_AGE);
    tokio::pin!(age);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut closing: Option<Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "web page connection ended");
                }
                break;
            }
            _ = cancel.cancelled(), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(Box::pin(tokio::time::sleep(GRACE)));
            }
            _ = &mut age, if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(Box::pin(tokio::time::sleep(GRACE)));
            }
            _ = async { if let Some(c) = closing.as_mut() { c.await } }, if closing.is_some() => break,
            _ = tick.tick() => {
                let since = stall.load(Ordering::Relaxed);
                let now = born.elapsed().as_millis() as u64;
                if since != 0 && now.saturating_sub(since) >= WRITE_STALL.as_millis() as u64 {
                    tracing::debug!(%peer, "web page: client stopped reading, dropped");
                    break;
                }
            }
        }
    }
}

/// The socket, noting since when a write has been waiting for the client
/// to read (ms since the connection began, 0 when none is waiting).
struct Watched {
    inner: TcpStream,
    born: Instant,
    blocked_since: Arc<AtomicU64>,
}

impl Watched {
    fn new(inner: TcpStream) -> Watched {
        Watched {
            inner,
            born: Instant::now(),
            blocked_since: Arc::new(AtomicU64::new(0)),
        }
    }

    fn note<T>(&self, r: &Poll<T>) {
        match r {
            Poll::Pending => {
                let now = (self.born.elapsed().as_millis() as u64).max(1);
                let _ = self.blocked_since.compare_exchange(
                    0,
                    now,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            Poll::Ready(_) => self.blocked_since.store(0, Ordering::Relaxed),
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_fits_the_descriptor_limit() {
        let t = Duration::from_secs(10);
        // The field: 1,024 (systemd's default) or 4,096 (our unit).
        let l = Limits::fitting(32, Some(1024), t);
        assert_eq!((l.total, l.per_client), (32, 8));
        assert_eq!(Limits::fitting(32, Some(4096), t).total, 32);
        // A tiny limit lowers the cap so the reserve stays whole.
        let l = Limits::fitting(32, Some(300), t);
        assert_eq!((l.total, l.per_client), (22, 5));
        assert!(l.total as u64 + FD_RESERVE < 300);
        // Never below 2 (the page is still reachable), never above what
        // was asked for.
        assert_eq!(Limits::fitting(32, Some(100), t).total, 2);
        let l = Limits::fitting(1, None, t);
        assert_eq!((l.total, l.per_client), (1, 1));
    }

    #[test]
    fn slots_cap_in_all_and_per_client() {
        let lim = Limits::fitting(8, None, Duration::from_secs(1));
        let s = Arc::new(Slots::default());
        let here: std::net::IpAddr = "10.0.0.254".parse().unwrap();
        let a = Client::of("10.0.0.1".parse().unwrap(), here);
        let mut held: Vec<Slot> = (0..2).map(|_| s.take(a, &lim).unwrap()).collect();
        assert!(s.take(a, &lim).is_none(), "per client");
        for i in 2..8u8 {
            let c = Client::of(std::net::IpAddr::from([10, 0, 0, i]), here);
            held.push(s.take(c, &lim).unwrap());
        }
        let late = Client::of("10.0.0.99".parse().unwrap(), here);
        assert!(s.take(late, &lim).is_none(), "in all");
        held.remove(0);
        assert!(s.take(late, &lim).is_some(), "a slot given back is free");
        drop(held);
        assert_eq!(s.lock().0, 0);
        assert!(s.lock().1.is_empty());
    }

    #[test]
    fn office_ipv6_devices_each_get_their_own_share() {
        // Staff devices in the gateway's own /64 (SLAAC), each with a
        // browser's usual handful of connections.
        let lim = Limits::fitting(32, None, Duration::from_secs(1));
        let s = Arc::new(Slots::default());
        let here: std::net::IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let mut held = Vec::new();
        for dev in 2..6u16 {
            let ip = std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, dev);
            let c = Client::of(ip.into(), here);
            for n in 0..6 {
                held.push(
                    s.take(c, &lim)
                        .unwrap_or_else(|| panic!("device {dev}, {n}")),
                );
            }
        }
        // One routed /64 is still one client, whatever address it uses.
        let far = |last: u16| {
            let ip = std::net::Ipv6Addr::new(0x2001, 0xdb8, 9, 3, 0, 0, 0, last);
            Client::of(ip.into(), here)
        };
        for n in 0..lim.per_client as u16 {
            held.push(s.take(far(n), &lim).unwrap());
        }
        assert!(s.take(far(999), &lim).is_none(), "the routed /64's share");
    }
}
