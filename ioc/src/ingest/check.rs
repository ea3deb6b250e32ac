//! `wardgate-ioc check`: the config, then one probe of each peer (the
//! broker, the store's path, the time-series database), each printed on a
//! line of its own. Exit codes as the gateway's `wardgate check`
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
