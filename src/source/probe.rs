//! Reachability (`type = "probe"`): TCP connect time to configured hosts
//! (the IOC broker, DNS, a public host), loss over a window, and WAN
//! down/up events when every target fails / one answers again.
//!
//! ICMP echo is not implemented yet: TCP connect time is measured for every
//! target (it needs no privilege and is what the MQTT link itself uses).

use std::collections::VecDeque;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::DeviceHandle;
use crate::config::ProbeConfig;
use crate::model::{Severity, Values};

/// Loss in percent over a window of results (true = answered).
pub fn loss_percent(window: &VecDeque<bool>) -> f64 {
    if window.is_empty() {
        return 0.0;
    }
    let lost = window.iter().filter(|ok| !**ok).count();
    (lost as f64 / window.len() as f64 * 1000.0).round() / 10.0
}

/// One TCP connect attempt: latency in ms, or the error in words.
pub async fn tcp_ping(address: &str, timeout: Duration) -> Result<f64, String> {
    let t = tokio::time::Instant::now();
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => Ok((t.elapsed().as_secs_f64() * 10_000.0).round() / 10.0),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

pub async fn run(cfg: ProbeConfig, h: DeviceHandle, cancel: CancellationToken) {
    let mut windows: Vec<VecDeque<bool>> = vec![VecDeque::new(); cfg.targets.len()];
    let mut wan_up: Option<bool> = None;
    let mut tick = tokio::time::interval(cfg.interval);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let results = futures_join(&cfg).await;
        let mut v = Values::new();
        let mut any_up = false;
        for ((t, r), w) in cfg.targets.iter().zip(results).zip(windows.iter_mut()) {
            let ok = r.is_ok();
            any_up |= ok;
            w.push_back(ok);
            while w.len() > cfg.window.max(1) as usize {
                w.pop_front();
            }
            if let Ok(ms) = r {
                v.num(&format!("{}.latency", t.name), ms);
            } else if let Err(e) = &r {
                tracing::debug!(device = h.id(), target = %t.name, error = %e, "probe failed");
            }
            v.set(&format!("{}.up", t.name), ok);
            v.num(&format!("{}.loss", t.name), loss_percent(w));
        }
        if wan_up != Some(any_up) {
            if any_up && wan_up == Some(false) {
                let _ = h.event(
                    Severity::Info,
                    "wan.up",
                    "The internet link is back",
                    Values::new(),
                );
            } else if !any_up {
                let _ = h.event(
                    Severity::Critical,
                    "wan.down",
                    "No probe target answers: the internet link is down",
                    Values::new(),
                );
            }
            wan_up = Some(any_up);
        }
        let _ = h.sample(v);
    }
}

async fn futures_join(cfg: &ProbeConfig) -> Vec<Result<f64, String>> {
    let mut set = tokio::task::JoinSet::new();
    for (i, t) in cfg.targets.iter().enumerate() {
        let (addr, timeout) = (t.address.clone(), cfg.timeout);
        set.spawn(async move { (i, tcp_ping(&addr, timeout).await) });
    }
    let mut out: Vec<Result<f64, String>> = vec![Err("not run".into()); cfg.targets.len()];
    while let Some(r) = set.join_next().await {
        if let Ok((i, r)) = r {
            out[i] = r;
        }
    }
    out
}

/// One round, for `wardgate check`.
pub async fn probe_once(cfg: &ProbeConfig) -> Values {
    let mut v = Values::new();
    for (t, r) in cfg.targets.iter().zip(futures_join(cfg).await) {
        match r {
            Ok(ms) => {
                v.num(&format!("{}.latency", t.name), ms);
                v.set(&format!("{}.up", t.name), true);
            }
            Err(e) => {
                v.set(&format!("{}.up", t.name), false);
                v.set(&format!("{}.error", t.name), e);
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss() {
        let w: VecDeque<bool> = [true, false, true, true].into_iter().collect();
        assert_eq!(loss_percent(&w), 25.0);
        assert_eq!(loss_percent(&VecDeque::new()), 0.0);
    }

    #[tokio::test]
    async fn open_and_closed_ports() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = l.local_addr().unwrap().to_string();
        assert!(tcp_ping(&open, Duration::from_secs(2)).await.is_ok());
        let closed = {
            let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            t.local_addr().unwrap().to_string()
        };
        let e = tcp_ping(&closed, Duration::from_secs(2)).await.unwrap_err();
        assert!(e.to_lowercase().contains("refused"), "{e}");
    }
}
