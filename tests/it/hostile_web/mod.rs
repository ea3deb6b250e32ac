//! The local page under attack from the LAN, against the real binary on
//! loopback: connections that hold the server (connections.rs), basic
//! auth (auth.rs), host names and security headers (headers.rs). Here:
//! the clients' addresses and the helpers they share.
//!
//! Loopback has a whole /8: the attacker speaks from 127.0.0.1 and the
//! honest clients from 127.0.0.2 and 127.0.0.3, so the gateway sees them as
//! different clients.

mod auth;
mod connections;
mod headers;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::common::*;

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const HONEST: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// The first wait of the page's basic-auth back-off (docs/api.md: after 5
/// wrong passwords, 5 s, doubling with each further one).
const FIRST_WAIT: Duration = Duration::from_secs(5);

/// Writes `dir/w.toml`: the broker at `broker_port` and one simulated
/// device, ups1, read every 200 ms. Returns its path.
fn ups1_config(dir: &Path, broker_port: u16) -> PathBuf {
    let cfg = dir.join("w.toml");
    std::fs::write(
        &cfg,
        config_text(
            broker_port,
            dir,
            "[[device]]\nid = \"ups1\"\ntype = \"sim\"\ninterval = \"200ms\"\n",
        ),
    )
    .unwrap();
    cfg
}

/// Writes the page password `password` to `dir/web.pw` with file mode
/// `mode`, and `dir/w.toml`: the page behind basic auth (user staff, that
/// password file) and no broker. Returns the config's path, the password
/// file's and the closed port the config names as the broker (keep it
/// while the gateway runs).
fn password_config(dir: &Path, password: &str, mode: u32) -> (PathBuf, PathBuf, ClosedPort) {
    use std::os::unix::fs::PermissionsExt;
    let pw = dir.join("web.pw");
    std::fs::write(&pw, password).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(mode)).unwrap();
    let cfg = dir.join("w.toml");
    let no_broker = closed_port();
    std::fs::write(
        &cfg,
        config_text(no_broker.port, dir, "").replace(
            "[web]\n",
            &format!(
                "[web]\nusername = \"staff\"\npassword_file = \"{}\"\n",
                pw.display()
            ),
        ),
    )
    .unwrap();
    (cfg, pw, no_broker)
}

/// A response: status code, headers (lower-case names) and body.
#[derive(Debug)]
struct Reply {
    code: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One GET from the loopback address `from`; `None` when the connection is
/// refused, closed without an answer or takes longer than `limit`.
async fn get_from(
    from: IpAddr,
    addr: SocketAddr,
    path: &str,
    extra: &str,
    limit: Duration,
) -> Option<Reply> {
    let exchange = async {
        let sock = TcpSocket::new_v4().ok()?;
        sock.bind(SocketAddr::new(from, 0)).ok()?;
        let mut s = sock.connect(addr).await.ok()?;
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let mut lines = head.lines();
        let code = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Some(Reply {
            code,
            headers,
            body: body.to_owned(),
        })
    };
    tokio::time::timeout(limit, exchange).await.ok().flatten()
}

fn basic(user: &str, pw: &str) -> String {
    use base64::Engine as _;
    format!(
        "Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}
