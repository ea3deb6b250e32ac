//! How long the fleet page and `/metrics` take for a thousand sites:
//! `cargo bench -p wardgate-ioc --bench fleet`. The fleet is the demo's
//! (the load generator's traffic for 1,000 sites, then each site's
//! inventory, live readings and telemetry, a few in trouble). Each is
//! requested in-process through the router (axum, as a browser's request
//! would go, minus the socket) and rendered alone; p50 and p95 of each.
//! Goal: `/` at most 100 ms at p95.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;
use wardgate_ioc::fleet::demo::demo;
use wardgate_ioc::metrics;
use wardgate_ioc::web::{fleet_page, router, words, SharedView};

const SITES: usize = 1000;
const RUNS: usize = 60;

static NOW: OnceLock<i64> = OnceLock::new();

fn now() -> i64 {
    NOW.get().copied().unwrap_or(0)
}

fn percentiles(mut d: Vec<Duration>) -> (f64, f64) {
    d.sort();
    let at = |p: f64| {
        let i = ((d.len() as f64 - 1.0) * p).round() as usize;
        d.get(i).map_or(f64::NAN, |x| x.as_secs_f64() * 1000.0)
    };
    (at(0.50), at(0.95))
}

fn time<F: FnMut() -> usize>(name: &str, mut f: F) {
    let mut runs = Vec::with_capacity(RUNS);
    let mut bytes = 0;
    for _ in 0..RUNS {
        let t = Instant::now();
        bytes = f();
        runs.push(t.elapsed());
    }
    let (p50, p95) = percentiles(runs);
    println!("{name:<34} p50 {p50:7.2} ms   p95 {p95:7.2} ms   ({bytes} bytes)");
}

fn main() {
    let t0 = Instant::now();
    let (m, t) = match demo(SITES, 7) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("demo fleet: {e}");
            return;
        }
    };
    let _ = NOW.set(t);
    println!(
        "{} sites, {} streams' ledger, built in {:.1} s; {RUNS} runs each",
        m.fleet.len(),
        m.ledger
            .sites()
            .map(|s| m.ledger.streams(s).len())
            .sum::<usize>(),
        t0.elapsed().as_secs_f64()
    );
    time("render / (vi)", || {
        fleet_page(words::strings(None), &m.fleet, &m.ledger, t).len()
    });
    time("render /metrics", || {
        metrics::render(&m.fleet, &m.ledger, t).len()
    });
    let view = Arc::new(SharedView::with_clock(m, now));
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return;
        }
    };
    for uri in ["/", "/?lang=en", "/metrics", "/site/site-00003"] {
        time(&format!("GET {uri} (router, in-process)"), || {
            rt.block_on(async {
                let req = Request::builder().uri(uri).body(Body::empty());
                let Ok(req) = req else { return 0 };
                // The router's error type is Infallible.
                let Ok(res) = router(view.clone()).oneshot(req).await;
                axum::body::to_bytes(res.into_body(), 64 << 20)
                    .await
                    .map_or(0, |b| b.len())
            })
        });
    }
}
