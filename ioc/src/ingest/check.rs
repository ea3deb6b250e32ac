//! `wardgate-ioc check`: the config, then one probe of each peer (the
//! broker, the store's path, the time-series database) and of the pages'
//! address (`web.listen`), each printed on a line of its own. Exit codes as the gateway's `wardgate check`
//! (sysexits.h): 0 all usable, 78 the config is not, 69 a peer is not.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use rumqttc::{Event, Packet};

use super::mqtt;
use crate::config::{self, Config};
use crate::store::{SqliteStore, Store};

/// Exit codes from sysexits.h.
pub mod exit {
    pub const OK: u8 = 0;
    /// A peer cannot be used (EX_UNAVAILABLE).
    pub const UNAVAILABLE: u8 = 69;
    /// The config cannot be used (EX_CONFIG).
    pub const CONFIG: u8 = 78;
}

/// Checks `path` and probes each peer; returns the exit code.
/// With `config_only`, nothing is probed.
pub async fn check(path: &Path, config_only: bool, out: &mut dyn Write) -> u8 {
    let cfg = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(out, "config: NOT USABLE: {e}");
            return exit::CONFIG;
        }
    };
    let _ = writeln!(out, "config: ok: {}", path.display());
    if config_only {
        return exit::OK;
    }
    let mut code = exit::OK;
    let mut report = |what: &str, r: Result<String, String>| match r {
        Ok(m) => {
            let _ = writeln!(out, "{what}: ok: {m}");
        }
        Err(m) => {
            let _ = writeln!(out, "{what}: NOT USABLE: {m}");
            code = exit::UNAVAILABLE;
        }
    };
    report("store", probe_store(&cfg));
    report("web", probe_web(&cfg).await);
    report("mqtt", probe_broker(&cfg).await);
    if let Some(t) = &cfg.tsdb {
        let r = crate::tsdb::post(t, String::new())
            .await
            .map(|s| format!("{}: a write of no points accepted ({s})", t.base))
            .map_err(|e| format!("{}: {e}", t.base));
        report("tsdb", r);
    } else {
        let _ = writeln!(
            out,
            "tsdb: not configured (no [tsdb]): readings are not written"
        );
    }
    code
}

fn probe_store(cfg: &Config) -> Result<String, String> {
    let p = &cfg.store_path;
    let mut s = SqliteStore::open(p).map_err(|e| e.to_string())?;
    let loaded = s.load().map_err(|e| e.to_string())?;
    let waiting = s.outbox_len().map_err(|e| e.to_string())?;
    Ok(format!(
        "{}: {} sites, {} messages committed, {} points waiting for the tsdb",
        p.display(),
        loaded.state.sites.len(),
        loaded.messages,
        waiting
    ))
}

/// Binds `web.listen` for a moment. Taken by a running wardgate-ioc (its
/// `/healthz` answers `ok`) is fine: that is the service's own address.
async fn probe_web(cfg: &Config) -> Result<String, String> {
    let addr = cfg.web_listen;
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => {
            drop(l);
            Ok(format!("{addr}: can listen (the fleet pages and /metrics)"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if healthz_ok(addr).await {
                Ok(format!(
                    "{addr}: in use by a running wardgate-ioc (its /healthz answers)"
                ))
            } else {
                Err(format!("{addr}: {e} (by another program)"))
            }
        }
        Err(e) => Err(format!("{addr}: {e}")),
    }
}

/// `GET /healthz` on `addr` (the loopback address for a wildcard one)
/// answers `ok` within 2 s.
async fn healthz_ok(addr: std::net::SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut to = addr;
    if to.ip().is_unspecified() {
        to.set_ip(match to {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let ask = async {
        let mut s = tokio::net::TcpStream::connect(to).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.0\r\nHost: wardgate-ioc\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.take(4096).read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        Some(
            text.starts_with("HTTP/1.") && text.contains(" 200 ") && text.ends_with("\r\n\r\nok\n"),
        )
    };
    tokio::time::timeout(Duration::from_secs(2), ask)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Connects once with a client id of its own and a clean session (the
/// service's session is not touched), and subscribes to the filters.
async fn probe_broker(cfg: &Config) -> Result<String, String> {
    let m = &cfg.mqtt;
    let id = format!("{}-check", m.client_id);
    let opts = mqtt::options(m, &id, true).map_err(|e| e.to_string())?;
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 8);
    let filters = mqtt::filters(m);
    let probe = async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    mqtt::subscribe(&client, &filters).map_err(|e| e.to_string())?;
                }
                Ok(Event::Incoming(Packet::SubAck(s))) => {
                    if s.return_codes
                        .contains(&rumqttc::SubscribeReasonCode::Failure)
                    {
                        return Err(format!("subscription refused: {:?} (ACL?)", s.return_codes));
                    }
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => return Err(format!("{}:{}: {e}", m.host, m.port)),
            }
        }
    };
    let r = tokio::time::timeout(Duration::from_secs(10), probe)
        .await
        .unwrap_or_else(|_| Err(format!("{}:{}: no answer in 10 s", m.host, m.port)));
    let _ = client.try_disconnect();
    r.map(|()| {
        format!(
            "{}:{}: connected, subscribed to {}",
            m.host,
            m.port,
            filters.join(" ")
        )
    })
}
