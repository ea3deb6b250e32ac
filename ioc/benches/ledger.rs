//! Readings per second through the consumer's pure part: topic parse,
//! decode, de-duplication and the gap ledger, on the load generator's
//! traffic (duplicates, holes, backlog, resets and corrections included).
//! `cargo bench -p wardgate-ioc --bench ledger`. The goal for the whole
//! consumer with its store (SQLite) is 50,000 readings/s; this part must
//! leave the store most of that budget.

use std::time::Instant;

use wardgate_contract::{Message, Topic};
use wardgate_ioc::ledger::Ledger;
use wardgate_ioc::loadgen::{generate, LoadConfig};
use wardgate_ioc::pipeline::Consumer;

fn main() {
    let cfg = LoadConfig {
        sites: 2000,
        seed: 11,
        steps: 20,
        ..LoadConfig::default()
    };
    let traffic = match generate(&cfg) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("load generator: {e}");
            return;
        }
    };
    // Readings as they arrive: every record of every message, copies too.
    let arriving: usize = traffic
        .messages
        .iter()
        .map(|w| {
            let t = Topic::parse("ioc", &w.topic).ok();
            match t.and_then(|t| Message::decode(&t, &w.payload).ok()) {
                Some(Message::Telemetry(e)) => e.records.len(),
                Some(Message::Events(e)) => e.records.len(),
                _ => 0,
            }
        })
        .sum();
    println!(
        "{} sites, {} messages, {} readings arriving",
        cfg.sites,
        traffic.messages.len(),
        arriving
    );
    for round in 0..3 {
        let mut c = Consumer::new("ioc", Ledger::default());
        let t0 = Instant::now();
        for w in &traffic.messages {
            let _ = c.handle(&w.topic, &w.payload, w.at_ms);
        }
        let end_to_end = t0.elapsed();
        // The ledger alone, on messages decoded beforehand.
        let decoded: Vec<(String, Message)> = traffic
            .messages
            .iter()
            .filter_map(|w| {
                let t = Topic::parse("ioc", &w.topic).ok()?;
                let m = Message::decode(&t, &w.payload).ok()?;
                Some((t.site().to_owned(), m))
            })
            .collect();
        let mut l = Ledger::default();
        let t1 = Instant::now();
        for (site, m) in &decoded {
            l.apply(site, m, 0);
        }
        let ledger_only = t1.elapsed();
        println!(
            "round {round}: decode+dedup+ledger {:.0} readings/s ({:.2?}); dedup+ledger alone {:.0} readings/s ({:.2?}); unexplained holes {}",
            arriving as f64 / end_to_end.as_secs_f64(),
            end_to_end,
            arriving as f64 / ledger_only.as_secs_f64(),
            ledger_only,
            c.ledger.unexplained().len(),
        );
    }
}
