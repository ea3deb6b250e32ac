//! Reachability (`type = "probe"`): TCP connect time or ICMP echo to
//! configured hosts (the IOC broker, DNS, a public host), loss over a
//! window, and WAN down/up events when every target fails / one answers
//! again.
//!
//! ICMP uses the `surge-ping` crate: an unprivileged ICMP datagram socket
//! where `net.ipv4.ping_group_range` allows it (systemd's default sysctl
//! does), else a raw socket, which needs CAP_NET_RAW. When neither is
//! permitted, the target is measured over TCP instead (to its port, 443 by
//! default), with one warning in the log saying so and how to fix it, and
//! `<name>.method` in telemetry says which was used.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use surge_ping::{Client, PingIdentifier, PingSequence, ICMP};
use tokio_util::sync::CancellationToken;

use super::probe_config::{ProbeConfig, ProbeMethod, ProbeTarget};
use super::supervisor::{self, Device, Fail, Policy};
use super::DeviceHandle;
use crate::model::Values;

/// Loss in percent over a window of results (true = answered).
pub(crate) fn loss_percent(window: &VecDeque<bool>) -> f64 {
    if window.is_empty() {
        return 0.0;
    }
    let lost = window.iter().filter(|ok| !**ok).count();
    (lost as f64 / window.len() as f64 * 1000.0).round() / 10.0
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// One TCP connect attempt: latency in ms, or the error in words.
pub(crate) async fn tcp_ping(address: &str, timeout: Duration) -> Result<f64, String> {
    let t = tokio::time::Instant::now();
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => Ok(ms(t.elapsed())),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// ICMP sockets, one per address family, opened once.
#[derive(Clone, Default)]
pub(crate) struct Icmp {
    v4: Option<Arc<Client>>,
    v6: Option<Arc<Client>>,
}

impl Icmp {
    /// Opens the sockets; the error says why ICMP cannot be used.
    pub(crate) fn open() -> Result<Icmp, String> {
        let v4 = Client::new(&surge_ping::Config::default()).map_err(|e| e.to_string())?;
        let v6 = Client::new(&surge_ping::Config::builder().kind(ICMP::V6).build()).ok();
        Ok(Icmp {
            v4: Some(Arc::new(v4)),
            v6: v6.map(Arc::new),
        })
    }

    async fn ping(&self, host: &str, seq: u16, timeout: Duration) -> Result<f64, String> {
        let ip: IpAddr = match host.parse() {
            Ok(ip) => ip,
            Err(_) => tokio::net::lookup_host((host, 0))
                .await
                .map_err(|e| format!("{host}: {e}"))?
                .next()
                .map(|a| a.ip())
                .ok_or_else(|| format!("{host}: no address"))?,
        };
        let client = match ip {
            IpAddr::V4(_) => self.v4.as_ref(),
            IpAddr::V6(_) => self.v6.as_ref(),
        }
        .ok_or_else(|| format!("{ip}: no ICMP socket for this address family"))?;
        let mut pinger = client.pinger(ip, PingIdentifier(rand::random())).await;
        pinger.timeout(timeout);
        match pinger.ping(PingSequence(seq), &[0u8; 16]).await {
            Ok((_, rtt)) => Ok(ms(rtt)),
            Err(surge_ping::SurgeError::Timeout { .. }) => {
                Err(format!("no echo reply within {timeout:?}"))
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// How targets are measured in this process.
#[derive(Clone)]
struct Prober {
    icmp: Option<Icmp>,
    seq: u16,
}

impl Prober {
    fn new(cfg: &ProbeConfig, device: &str) -> Prober {
        let wants_icmp = cfg.targets.iter().any(|t| t.method == ProbeMethod::Icmp);
        let icmp = if wants_icmp {
            match Icmp::open() {
                Ok(i) => Some(i),
                Err(e) => {
                    tracing::warn!(
                        device,
                        error = %e,
                        "ICMP echo is not permitted for this process: measuring TCP connect time \
                         to the ICMP targets instead. To ping, give the service CAP_NET_RAW \
                         (AmbientCapabilities=CAP_NET_RAW) or allow its group in \
                         net.ipv4.ping_group_range"
                    );
                    None
                }
            }
        } else {
            None
        };
        Prober { icmp, seq: 0 }
    }

    fn method(&self, t: &ProbeTarget) -> &'static str {
        match (t.method, &self.icmp) {
            (ProbeMethod::Icmp, Some(_)) => "icmp",
            _ => "tcp",
        }
    }

    async fn round(&mut self, cfg: &ProbeConfig) -> Vec<Result<f64, String>> {
        self.seq = self.seq.wrapping_add(1);
        let mut set = tokio::task::JoinSet::new();
        for (i, t) in cfg.targets.iter().enumerate() {
            let timeout = cfg.timeout;
            let Some((host, port)) = t.host_port() else {
                continue;
            };
            let icmp = match t.method {
                ProbeMethod::Icmp => self.icmp.clone(),
                ProbeMethod::Tcp => None,
            };
            let seq = self.seq;
            set.spawn(async move {
                let r = match icmp {
                    Some(icmp) => icmp.ping(&host, seq, timeout).await,
                    None => {
                        let addr = if host.contains(':') {
                            format!("[{host}]:{port}")
                        } else {
                            format!("{host}:{port}")
                        };
                        tcp_ping(&addr, timeout).await
                    }
                };
                (i, r)
            });
        }
        let mut out: Vec<Result<f64, String>> = vec![Err("not run".into()); cfg.targets.len()];
        while let Some(r) = set.join_next().await {
            if let Ok((i, r)) = r {
                out[i] = r;
            }
        }
        out
    }
}

/// What the supervisor keeps of the reachability probes: the prober, each
/// target's recent results and whether the link was up.
struct Targets {
    cfg: ProbeConfig,
    prober: Prober,
    windows: Vec<VecDeque<bool>>,
    wan_up: Option<bool>,
}

impl Device for Targets {
    type Conn = ();

    async fn open(&mut self, _h: &DeviceHandle) -> Result<(), Fail> {
        Ok(())
    }

    async fn poll(&mut self, _: &mut (), h: &DeviceHandle) -> Result<(), Fail> {
        let cfg = &self.cfg;
        let results = self.prober.round(cfg).await;
        let mut v = Values::new();
        let mut any_up = false;
        for ((t, r), w) in cfg.targets.iter().zip(results).zip(self.windows.iter_mut()) {
            let ok = r.is_ok();
            any_up |= ok;
            w.push_back(ok);
            while w.len() > cfg.window.as_usize() {
                w.pop_front();
            }
            if let Ok(ms) = r {
                v.num(&format!("{}.latency", t.name), ms);
            } else if let Err(e) = &r {
                tracing::debug!(device = h.id(), target = %t.name, error = %e, "probe failed");
            }
            v.set(&format!("{}.up", t.name), ok);
            v.num(&format!("{}.loss", t.name), loss_percent(w));
            v.set(&format!("{}.method", t.name), self.prober.method(t));
        }
        if self.wan_up != Some(any_up) {
            if any_up && self.wan_up == Some(false) {
                h.report(crate::events::PROBE_WAN_UP, &[], Values::new());
            } else if !any_up {
                h.report(crate::events::PROBE_WAN_DOWN, &[], Values::new());
            }
            self.wan_up = Some(any_up);
        }
        h.sample(v);
        Ok(())
    }
}

pub(crate) async fn run(cfg: ProbeConfig, h: DeviceHandle, cancel: CancellationToken) {
    let policy = Policy {
        missed: tokio::time::MissedTickBehavior::Burst,
        ..Policy::new(cfg.interval)
    };
    let targets = Targets {
        prober: Prober::new(&cfg, h.id()),
        windows: vec![VecDeque::new(); cfg.targets.len()],
        wan_up: None,
        cfg,
    };
    supervisor::run(targets, policy, h, cancel).await
}

/// One round, for `wardgate check`.
pub(crate) async fn probe_once(cfg: &ProbeConfig) -> Values {
    let mut prober = Prober::new(cfg, &cfg.id);
    let mut v = Values::new();
    for (t, r) in cfg.targets.iter().zip(prober.round(cfg).await) {
        v.set(&format!("{}.method", t.name), prober.method(t));
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

    /// Whether this process may open an ICMP socket, decided without
    /// trying: root, CAP_NET_RAW in the effective set, or the effective
    /// group inside `net.ipv4.ping_group_range`.
    fn icmp_permitted() -> bool {
        // SAFETY: geteuid/getegid cannot fail.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let cap_eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
            .unwrap();
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap();
        let mut it = range.split_whitespace().map(|x| x.parse::<u64>().unwrap());
        let (lo, hi) = (it.next().unwrap(), it.next().unwrap());
        euid == 0 || cap_eff & (1 << 13) != 0 || (lo..=hi).contains(&u64::from(egid))
    }

    /// Where ICMP is permitted it works against loopback; where it is not,
    /// opening fails and an ICMP target is measured over TCP instead. Both
    /// branches assert: neither counts as a pass by returning early.
    #[tokio::test]
    async fn icmp_echo_or_the_tcp_fallback() {
        let permitted = icmp_permitted();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let cfg = ProbeConfig {
            id: "wan".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            window: crate::types::Bounded::of(4),
            targets: vec![ProbeTarget {
                name: "local".into(),
                address: format!("127.0.0.1:{port}"),
                method: ProbeMethod::Icmp,
            }],
            threshold: Vec::new(),
        };
        let v = probe_once(&cfg).await;
        assert_eq!(v.get("local.up"), Some(&crate::model::Value::Bool(true)));
        let method = v.get("local.method").cloned();
        match Icmp::open() {
            Ok(icmp) => {
                assert!(
                    permitted,
                    "ICMP opened though this process is not permitted"
                );
                let ms = icmp
                    .ping("127.0.0.1", 1, Duration::from_secs(2))
                    .await
                    .unwrap();
                assert!((0.0..1000.0).contains(&ms), "{ms}");
                let e = icmp
                    .ping("no-such-host.invalid", 2, Duration::from_millis(200))
                    .await
                    .unwrap_err();
                assert!(e.contains("no-such-host.invalid"), "{e}");
                assert_eq!(method, Some(crate::model::Value::Str("icmp".into())));
            }
            Err(e) => {
                assert!(!permitted, "ICMP is permitted here but did not open: {e}");
                // The fallback: TCP connect time to the target's port.
                assert_eq!(method, Some(crate::model::Value::Str("tcp".into())));
                assert!(
                    matches!(v.get("local.latency"), Some(crate::model::Value::Num(ms)) if (0.0..2000.0).contains(ms)),
                    "{v:?}"
                );
                let p = Prober::new(&cfg, "wan");
                assert!(p.icmp.is_none());
            }
        }
    }

    #[test]
    fn target_addresses() {
        let t = |a: &str, m| ProbeTarget {
            name: "x".into(),
            address: a.into(),
            method: m,
        };
        use ProbeMethod::*;
        assert_eq!(
            t("1.1.1.1:53", Tcp).host_port(),
            Some(("1.1.1.1".into(), 53))
        );
        assert_eq!(t("1.1.1.1", Tcp).host_port(), None);
        assert_eq!(
            t("1.1.1.1", Icmp).host_port(),
            Some(("1.1.1.1".into(), 443))
        );
        assert_eq!(
            t("ioc.example.vn:8883", Icmp).host_port(),
            Some(("ioc.example.vn".into(), 8883))
        );
        assert_eq!(
            t("[2001:db8::1]:443", Tcp).host_port(),
            Some(("2001:db8::1".into(), 443))
        );
        assert_eq!(
            t("[2001:db8::1]", Icmp).host_port(),
            Some(("2001:db8::1".into(), 443))
        );
        assert_eq!(
            t("2001:db8::1", Icmp).host_port(),
            Some(("2001:db8::1".into(), 443))
        );
        assert_eq!(t("host:notaport", Tcp).host_port(), None);
        assert_eq!(t("", Icmp).host_port(), None);
    }
}
