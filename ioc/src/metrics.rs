//! `/metrics`: the fleet view and the ledger in the Prometheus text format
//! (version 0.0.4), every series labelled `site`. A site that never said
//! a thing (no UPS, no gateway telemetry yet) has no series for it, rather
//! than a 0 that would read as "on mains" or "nothing waiting".
//! docs/ioc.md, "Metrics and alerts", lists them with the alert rules
//! (ioc/rules/wardgate.rules.yml) built on them. `wardgate-ioc run` adds
//! its own counts ([`ServiceCounts`], [`render_service`]).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use crate::fleet::{Fleet, Site};
use crate::ledger::{Ledger, SiteTotals};

/// One metric family: its name, type and help, and how a site gives it.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&Site, i64) -> Option<f64>,
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

const SITE_FAMILIES: &[Family] = &[
    Family {
        name: "wardgate_site_online",
        kind: "gauge",
        help: "1 when the site's gateway is online (its retained status), 0 when offline.",
        value: |s, _| s.online().map(flag),
    },
    Family {
        name: "wardgate_site_last_seen_seconds",
        kind: "gauge",
        help: "When the last message of the site arrived, Unix time in seconds.",
        value: |s, _| s.last_seen_ms.map(secs),
    },
    Family {
        name: "wardgate_site_on_battery",
        kind: "gauge",
        help: "1 when a UPS of the site is on battery (mains lost), 0 on mains.",
        value: |s, _| s.on_battery().map(flag),
    },
    Family {
        name: "wardgate_site_battery_runtime_seconds",
        kind: "gauge",
        help: "battery.runtime of the site's UPS (the one on battery first), seconds.",
        value: |s, _| s.ups().and_then(|u| u.runtime_s),
    },
    Family {
        name: "wardgate_site_backlog_depth",
        kind: "gauge",
        help: "Readings waiting on the gateway's card (spool.depth of its live telemetry).",
        value: |s, _| s.backlog.map(|b| b.depth as f64),
    },
    Family {
        name: "wardgate_site_backlog_age_seconds",
        kind: "gauge",
        help: "How long the backlog has been above 0, seconds (0 when empty).",
        value: |s, now| {
            s.backlog
                .map(|b| b.since_ms.map_or(0.0, |t| secs(now.saturating_sub(t).max(0))))
        },
    },
    Family {
        name: "wardgate_site_clock_synced",
        kind: "gauge",
        help: "1 when the gateway's clock is NTP-synchronised (its newest live record, its inventory), 0 when not.",
        value: |s, _| s.clock.as_ref().map(|c| flag(c.value)),
    },
    Family {
        name: "wardgate_site_uptime_seconds",
        kind: "gauge",
        help: "Seconds since the Pi booted (system.uptime), or since the service started (gateway.uptime) without it; counts on while online.",
        value: |s, now| s.uptime_at(now),
    },
    Family {
        name: "wardgate_site_wan_up",
        kind: "gauge",
        help: "1 when the site's internet link is up (wan.up, probes), 0 when down.",
        value: |s, _| s.wan.as_ref().map(|w| flag(w.value)),
    },
    Family {
        name: "wardgate_site_alarms",
        kind: "gauge",
        help: "Alarms raised now and not cleared (thresholds, contacts, UPS and Pi conditions).",
        value: |s, _| Some(s.alarms.len() as f64),
    },
];

/// Escapes a label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn ledger_families(out: &mut String, sites: &[(&str, Option<SiteTotals>)]) {
    head(
        out,
        "wardgate_ledger_holes",
        "gauge",
        "Missing readings by state: pending (backlog may still bring them), filled (arrived late), explained (the gateway said why), unexplained; and unused: numbers the gateway reserved and never used (no reading missing).",
    );
    for (site, t) in sites {
        let Some(t) = t else { continue };
        for (state, n) in [
            ("pending", t.pending),
            ("filled", t.filled_late),
            ("explained", t.explained),
            ("unexplained", t.unexplained),
            ("unused", t.unused),
        ] {
            let _ = writeln!(
                out,
                "wardgate_ledger_holes{{site=\"{site}\",state=\"{state}\"}} {n}"
            );
        }
    }
    head(
        out,
        "wardgate_contract_breaks_total",
        "counter",
        "Records received twice with different content, and gateway reports the contract's readers refuse.",
    );
    for (site, t) in sites {
        if let Some(t) = t {
            let _ = writeln!(
                out,
                "wardgate_contract_breaks_total{{site=\"{site}\"}} {}",
                t.contract_breaks
            );
        }
    }
    head(
        out,
        "wardgate_malformed_total",
        "counter",
        "Payloads on the site's topics that are not messages of the contract.",
    );
    for (site, t) in sites {
        if let Some(t) = t {
            let _ = writeln!(
                out,
                "wardgate_malformed_total{{site=\"{site}\"}} {}",
                t.malformed
            );
        }
    }
}

/// The metrics text at `now_ms` (the consumer's clock).
pub fn render(fleet: &Fleet, ledger: &Ledger, now_ms: i64) -> String {
    let ids: BTreeSet<&str> = fleet
        .sites()
        .map(|(id, _)| id)
        .chain(ledger.sites())
        .collect();
    let mut out = String::with_capacity(256 + ids.len() * 900);
    head(&mut out, "wardgate_fleet_sites", "gauge", "Sites heard of.");
    let _ = writeln!(out, "wardgate_fleet_sites {}", ids.len());
    for f in SITE_FAMILIES {
        head(&mut out, f.name, f.kind, f.help);
        for (id, s) in fleet.sites() {
            if let Some(v) = (f.value)(s, now_ms).filter(|v| v.is_finite()) {
                let _ = writeln!(out, "{}{{site=\"{id}\"}} {v}", f.name);
            }
        }
    }
    head(
        &mut out,
        "wardgate_site_info",
        "gauge",
        "1, labelled with the gateway's version and config hash (inventory, status).",
    );
    for (id, s) in fleet.sites() {
        let i = &s.identity;
        if i.version.is_none() && i.config_hash.is_none() {
            continue;
        }
        let _ = writeln!(
            out,
            "wardgate_site_info{{site=\"{id}\",version=\"{}\",config_hash=\"{}\"}} 1",
            label(i.version.as_deref().unwrap_or("")),
            label(i.config_hash.as_deref().unwrap_or(""))
        );
    }
    let totals: Vec<(&str, Option<SiteTotals>)> =
        ids.iter().map(|id| (*id, ledger.totals(id))).collect();
    ledger_families(&mut out, &totals);
    out
}

/// The running service's own counts (since the process started): written
/// by the ingest and the time-series writer, read by `/metrics` and the
/// logs. Plain atomics: nobody waits for anybody.
#[derive(Debug, Default)]
pub struct ServiceCounts {
    /// Messages received from the broker.
    pub received: AtomicU64,
    /// Messages in a batch the store committed.
    pub committed: AtomicU64,
    /// Messages acknowledged to the broker after their commit.
    pub acknowledged: AtomicU64,
    /// Committed but not acknowledged: the connection they came on is gone
    /// (the broker sends them again).
    pub not_acknowledged: AtomicU64,
    /// Copies the broker sent again of messages committed before.
    pub redelivered: AtomicU64,
    /// Payloads (inventories included) outside the contract.
    pub malformed: AtomicU64,
    /// Messages on topics outside the contract.
    pub foreign: AtomicU64,
    /// Store commits.
    pub commits: AtomicU64,
    /// Points of new readings put into the outbox.
    pub points_queued: AtomicU64,
    /// Points the time-series database accepted.
    pub points_written: AtomicU64,
    /// Points of failed writes kept for another try (one count a try).
    pub points_retried: AtomicU64,
    /// Points of batches the database refused (4xx), set aside.
    pub points_set_aside: AtomicU64,
    /// Points waiting in the outbox now.
    pub outbox: AtomicU64,
}

impl ServiceCounts {
    /// Adds `n` to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    /// Lowers the outbox gauge by `n`, never below 0.
    pub fn outbox_down(&self, n: u64) {
        let _ = self
            .outbox
            .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n)));
    }
}

type CountOf = fn(&ServiceCounts) -> &AtomicU64;

const SERVICE_FAMILIES: &[(&str, &str, &str, CountOf)] = &[
    ("wardgate_ioc_messages_received_total", "counter", "Messages received from the broker since the start.", |c| &c.received),
    ("wardgate_ioc_messages_committed_total", "counter", "Messages in batches the store committed.", |c| &c.committed),
    ("wardgate_ioc_messages_acknowledged_total", "counter", "Messages acknowledged to the broker (after their commit).", |c| &c.acknowledged),
    ("wardgate_ioc_messages_not_acknowledged_total", "counter", "Committed messages not acknowledged (their connection was gone): the broker sends them again.", |c| &c.not_acknowledged),
    ("wardgate_ioc_messages_redelivered_total", "counter", "Copies the broker sent again of messages committed before: acknowledged, not applied again.", |c| &c.redelivered),
    ("wardgate_ioc_messages_malformed_total", "counter", "Payloads outside the contract (inventories included), all sites.", |c| &c.malformed),
    ("wardgate_ioc_messages_foreign_total", "counter", "Messages on topics outside the contract.", |c| &c.foreign),
    ("wardgate_ioc_commits_total", "counter", "Store commits.", |c| &c.commits),
    ("wardgate_ioc_tsdb_points_queued_total", "counter", "Points of new readings put into the outbox.", |c| &c.points_queued),
    ("wardgate_ioc_tsdb_points_written_total", "counter", "Points the time-series database accepted.", |c| &c.points_written),
    ("wardgate_ioc_tsdb_points_retried_total", "counter", "Points of failed writes kept for another try (counted at each try).", |c| &c.points_retried),
    ("wardgate_ioc_tsdb_points_set_aside_total", "counter", "Points of batches the time-series database refused (4xx): set aside, not written.", |c| &c.points_set_aside),
    ("wardgate_ioc_tsdb_outbox_points", "gauge", "Points waiting in the outbox for the time-series database.", |c| &c.outbox),
];

/// Appends the service's own counts (no `site` label).
pub fn render_service(out: &mut String, c: &ServiceCounts) {
    for (name, kind, help, count) in SERVICE_FAMILIES {
        head(out, name, kind, help);
        let _ = writeln!(out, "{name} {}", count(c).load(Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Monitor;
    use crate::loadgen::{generate, LoadConfig};

    fn monitor(sites: usize) -> Monitor {
        let traffic = generate(&LoadConfig {
            sites,
            ..LoadConfig::default()
        })
        .unwrap();
        let mut m = Monitor::new("ioc", Ledger::default(), Fleet::default());
        for w in &traffic.messages {
            m.handle(&w.topic, &w.payload, w.at_ms).unwrap();
        }
        m
    }

    #[test]
    fn parses_as_prometheus_text_and_says_what_the_ledger_says() {
        let m = monitor(12);
        let text = render(&m.fleet, &m.ledger, 1_795_900_000_000);
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        let names: BTreeSet<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
        for want in [
            "wardgate_site_online",
            "wardgate_site_last_seen_seconds",
            "wardgate_site_on_battery",
            "wardgate_site_backlog_depth",
            "wardgate_site_backlog_age_seconds",
            "wardgate_site_clock_synced",
            "wardgate_site_uptime_seconds",
            "wardgate_ledger_holes",
            "wardgate_contract_breaks_total",
            "wardgate_site_info",
        ] {
            assert!(names.contains(want), "{want} missing");
        }
        for s in &scrape.samples {
            assert!(s.labels.get("site").is_some() || s.metric == "wardgate_fleet_sites");
        }
        let unexplained: f64 = scrape
            .samples
            .iter()
            .filter(|s| {
                s.metric == "wardgate_ledger_holes" && s.labels.get("state") == Some("unexplained")
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) => v,
                _ => f64::NAN,
            })
            .sum();
        assert_eq!(unexplained, m.ledger.fleet_totals().unexplained as f64);
        assert_eq!(
            scrape.docs.get("wardgate_site_online").map(String::as_str),
            Some("1 when the site's gateway is online (its retained status), 0 when offline.")
        );
    }

    #[test]
    fn service_counts_parse_without_a_site_label() {
        let c = ServiceCounts::default();
        ServiceCounts::add(&c.received, 7);
        ServiceCounts::add(&c.outbox, 2);
        c.outbox_down(5);
        let mut text = String::new();
        render_service(&mut text, &c);
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        let value = |name: &str| {
            scrape
                .samples
                .iter()
                .find(|s| s.metric == name)
                .map(|s| match s.value {
                    prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
                    _ => f64::NAN,
                })
        };
        assert_eq!(value("wardgate_ioc_messages_received_total"), Some(7.0));
        assert_eq!(value("wardgate_ioc_tsdb_outbox_points"), Some(0.0));
        assert_eq!(scrape.samples.len(), SERVICE_FAMILIES.len());
    }

    #[test]
    fn label_values_are_escaped() {
        let mut f = Fleet::default();
        let inv = br#"{"site":"xa-a","version":"0.1.0\"} 9\nx{a=\"\\","boot_id":"b","run_id":"r","started":1,"config_hash":"sha256:ab","clock":"synced","devices":[],"sinks":[],"commands":{"enabled":false,"allow":[]}}"#;
        f.inventory("xa-a", inv, 1).unwrap();
        let text = render(&f, &Ledger::default(), 2);
        let line = text
            .lines()
            .find(|l| l.starts_with("wardgate_site_info{"))
            .unwrap();
        assert_eq!(
            line,
            r#"wardgate_site_info{site="xa-a",version="0.1.0\"} 9\nx{a=\"\\",config_hash="sha256:ab"} 1"#
        );
        // prometheus-parse does not read escaped label values (it skips
        // the line); promtool does: tests/it/fleet_web.rs runs it on this.
    }
}
