//! The local page: a plain HTTP GET or any exchange on loopback, the
//! spawned gateway's page address, a gateway with only its page, and
//! headless chromium.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{closed_port, config_text, eventually, within, ClosedPort, Process, WAIT};

/// A plain HTTP/1.1 GET on loopback: (status code, headers+body text).
pub async fn http_get(addr: std::net::SocketAddr, path: &str, extra: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n");
    http_exchange(addr, &req, Duration::from_secs(10), "the page").await
}

/// One HTTP exchange on loopback: connects (within 5 s), sends `request`
/// as it is, and reads until the server closes (within `answer_within`);
/// `peer` names the server in the failure messages. Returns the status
/// code (0 when there is none) and the whole response text.
pub async fn http_exchange(
    addr: std::net::SocketAddr,
    request: &str,
    answer_within: Duration,
    peer: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connect = format!("connect to {peer}");
    let mut s = within(
        Duration::from_secs(5),
        &connect,
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .expect(&connect);
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    within(
        answer_within,
        &format!("{peer}'s answer"),
        s.read_to_end(&mut buf),
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

/// The address of the spawned gateway's page, from its log line
/// "local status page addr=..." (the page binds port 0); waits for it.
pub async fn page_addr(gw: &Process) -> std::net::SocketAddr {
    let mut addr = None;
    eventually(WAIT, "the page's address in the log", || {
        addr = gw.log_text().lines().find_map(|l| {
            l.split("local status page addr=")
                .nth(1)
                .and_then(|a| a.split_whitespace().next())
                .and_then(|a| a.parse().ok())
        });
        addr.is_some()
    })
    .await;
    addr.expect("found above")
}

/// The real binary with the default config, its page on port 0 and no
/// broker (a [`closed_port`]: none is needed), its log in `dir/log`, once
/// its page is up. Returns the process, the page's address and the closed
/// port (keep it while the gateway runs).
pub async fn start_without_broker(dir: &Path) -> (Process, std::net::SocketAddr, ClosedPort) {
    let cfg = dir.join("w.toml");
    let no_broker = closed_port();
    std::fs::write(&cfg, config_text(no_broker.port, dir, "")).unwrap();
    let gw = Process::start(&cfg, &dir.join("log"));
    let addr = page_addr(&gw).await;
    (gw, addr, no_broker)
}

/// Runs headless chromium (blocking: call it from `spawn_blocking`) with
/// its own profile directory `profile` (kept between calls, so cookies
/// persist) and a 4 s virtual-time budget for the page's script; `args`
/// are the caller's own flags and the URL. Returns what chromium printed.
pub fn chromium<S: AsRef<std::ffi::OsStr>>(
    profile: &Path,
    args: impl IntoIterator<Item = S>,
) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium must be installed (apt-get install chromium)")
}
