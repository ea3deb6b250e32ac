//! The load generator's traffic through decode, de-duplication and the
//! ledger: the ledger reports exactly the undeclared holes planted.

use std::time::Instant;

use wardgate_contract::{SeqRange, StreamKey};
use wardgate_ioc::ledger::Ledger;
use wardgate_ioc::loadgen::{generate, LoadConfig, Traffic};
use wardgate_ioc::pipeline::Consumer;

fn feed(traffic: &Traffic) -> Consumer {
    let mut c = Consumer::new("ioc", Ledger::default());
    for w in &traffic.messages {
        if let Err(e) = c.handle(&w.topic, &w.payload, w.at_ms) {
            panic!("{}: {e}", w.topic);
        }
    }
    c
}

fn sorted(mut v: Vec<(StreamKey, SeqRange)>) -> Vec<(StreamKey, SeqRange)> {
    v.sort();
    v
}

fn check(cfg: &LoadConfig) -> Traffic {
    let t0 = Instant::now();
    let traffic = generate(cfg).expect("a valid config");
    let generated = t0.elapsed();
    let c = feed(&traffic);
    let p = &traffic.planted;
    let got = sorted(c.ledger.unexplained());
    let want = sorted(p.undeclared.clone());
    if got != want {
        let extra: Vec<_> = got.iter().filter(|g| !want.contains(g)).take(5).collect();
        let missed: Vec<_> = want.iter().filter(|w| !got.contains(w)).take(5).collect();
        panic!(
            "seed {}: {} unexplained, {} planted; reported but not planted: {extra:?}; planted but not reported: {missed:?}",
            cfg.seed,
            got.len(),
            want.len()
        );
    }
    let t = c.ledger.fleet_totals();
    assert_eq!(t.pending, 0, "seed {}: the backlog was drained", cfg.seed);
    // Declared: lost with a reason, or reserved and never used.
    assert_eq!(
        t.explained + t.unused,
        p.declared,
        "seed {}: declared numbers",
        cfg.seed
    );
    assert_eq!(t.received, p.records, "seed {}: distinct records", cfg.seed);
    assert_eq!(t.duplicates, p.duplicates, "seed {}: duplicates", cfg.seed);
    assert_eq!(t.corrected_copies, p.corrected_copies, "seed {}", cfg.seed);
    assert_eq!(
        t.contract_breaks, p.conflicts,
        "seed {}: contract breaks",
        cfg.seed
    );
    assert_eq!((t.malformed, t.before_start), (0, 0), "seed {}", cfg.seed);
    eprintln!(
        "seed {}: {} sites, {} messages, {} records, {} undeclared holes, {} declared numbers, scenarios {:?}; generated in {:.2?}, all in {:.2?}",
        cfg.seed,
        cfg.sites,
        traffic.messages.len(),
        p.records,
        p.undeclared.len(),
        p.declared,
        p.scenarios,
        generated,
        t0.elapsed()
    );
    traffic
}

#[test]
fn a_thousand_sites_report_exactly_the_undeclared_holes() {
    let cfg = LoadConfig {
        sites: 1000,
        seed: 7,
        ..LoadConfig::default()
    };
    let traffic = check(&cfg);
    // Every scenario is in the mix, and undeclared holes, big ones too.
    assert!(traffic.planted.scenarios.iter().all(|n| *n > 0));
    assert!(traffic.planted.undeclared.len() > 100);
    assert!(traffic
        .planted
        .undeclared
        .iter()
        .any(|(_, r)| r.len() == 1_000_000));
}

#[test]
fn other_seeds_too() {
    for seed in [1, 2, 3] {
        check(&LoadConfig {
            sites: 150,
            seed,
            ..LoadConfig::default()
        });
    }
}
