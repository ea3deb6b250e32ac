//! The gateway stopped: kill -9 at random moments (spill and wal),
//! SIGTERM during an outage, SIGTERM with a hung broker.

use std::time::Duration;

use rand::Rng;

use crate::accounting::{num, order_violations, CRASH_WINDOW_SPILL_MS, CRASH_WINDOW_WAL_MS};
use crate::rig::{with_expectation, Load, Outcome, Rig};
use crate::util::sleep_ms;
use crate::Opts;

/// kill -9 at random moments (0.2–2.5 s after start; 1.6 s in short mode),
/// N times, with broker outages mixed in (the broker is stopped or started
/// again in 30 % of the cycles). Every fifth cycle is long instead: the
/// broker is down from before the start and the kill comes 6–7 s after
/// it, longer than the loss bound, so that the
/// readings of the first seconds must have reached the card: a gateway
/// that does not spill them loses readings older than the bound, which no
/// kill excuses. Expectation: readings lost in crashes within the README's
/// bound per kill (see the accounting rule).
pub async fn kill9(o: &Opts, name: &'static str, policy: &str) -> Outcome {
    let mut rig = Rig::new(name, o, None).await;
    let n = o.pick(10, 200);
    let every = 5;
    let mut outages = 0;
    let mut long = 0;
    for i in 0..n {
        let c = rig.config(Load::Normal, policy);
        if i % every == every - 1 {
            if rig.broker.running() {
                rig.broker.stop();
                outages += 1;
            }
            rig.gw.start(&c);
            let life = rand::rng().random_range(6000..7000u64);
            sleep_ms(life).await;
            if let Some(code) = rig.gw.exited() {
                let tail = rig.gw.log_tail(3);
                rig.fail(format!("gateway exited by itself ({code:?}): {tail}"));
                break;
            }
            rig.gw.kill9();
            rig.cycles += 1;
            long += 1;
            continue;
        }
        rig.gw.start(&c);
        // A random moment: anywhere from start-up to a few seconds in.
        let (life, toggle) = {
            let mut r = rand::rng();
            (
                r.random_range(200..o.pick(1600, 2500u64)),
                r.random_bool(0.3),
            )
        };
        sleep_ms(life / 2).await;
        if toggle {
            if rig.broker.running() {
                rig.broker.stop();
                outages += 1;
            } else {
                rig.broker.spawn();
            }
        }
        sleep_ms(life / 2).await;
        if let Some(code) = rig.gw.exited() {
            let tail = rig.gw.log_tail(3);
            rig.fail(format!("gateway exited by itself ({code:?}): {tail}"));
            break;
        }
        rig.gw.kill9();
        rig.cycles += 1;
    }
    rig.note(format!(
        "{outages} broker outages during the kills; {long} long cycles (broker down, kill after 6-7 s)"
    ));
    // The cycles' kills and the closing run's.
    let kills = rig.cycles as f64 + 1.0;
    // Readings per second of the Normal load: ups1 50 + env1 20 + their
    // events + the gateway's telemetry, rounded up.
    let rate = 75.0;
    let window = if policy == "wal" {
        CRASH_WINDOW_WAL_MS
    } else {
        CRASH_WINDOW_SPILL_MS
    } as f64
        / 1000.0;
    let out = rig.finish().await;
    with_expectation(out, |a| {
        let bound = (kills * window * rate) as u64;
        (a.crash > bound).then(|| {
            format!(
                "{} readings lost in crashes, more than {window} s worth per kill ({bound})",
                a.crash
            )
        })
    })
}

pub async fn kill9_spill(o: &Opts) -> Outcome {
    kill9(o, "kill9_spill", "spill").await
}

pub async fn kill9_wal(o: &Opts) -> Outcome {
    kill9(o, "kill9_wal", "wal").await
}

/// SIGTERM while the broker is down: exit 0, and nothing lost at all.
pub async fn sigterm_outage(o: &Opts) -> Outcome {
    let mut rig = Rig::new("sigterm_outage", o, None).await;
    for _ in 0..o.pick(2, 10) {
        rig.broker.spawn();
        let from = rig.rec.len();
        rig.start(Load::Normal);
        if rig
            .live_after(from, Duration::from_secs(20))
            .await
            .is_none()
        {
            rig.fail("no live reading after start".into());
        }
        rig.broker.stop();
        sleep_ms(o.pick(3000, 8000)).await;
        rig.term_expect_0(Duration::from_secs(10), "SIGTERM during the outage")
            .await;
        rig.cycles += 1;
    }
    let out = rig.finish().await;
    with_expectation(out, |a| {
        (a.missing > 0).then(|| {
            format!(
                "{} readings missing (a clean stop must lose nothing, declared or not)",
                a.missing
            )
        })
    })
}

/// A broker that accepts but never reads (SIGSTOP): SIGTERM exits 0 within
/// 10 s; after a restart the backlog arrives in seq order.
pub async fn sigterm_hung_broker(o: &Opts) -> Outcome {
    let mut rig = Rig::new("sigterm_hung_broker", o, None).await;
    let mut order_from = usize::MAX;
    for _ in 0..o.pick(2, 5) {
        rig.broker.resume();
        rig.broker.spawn();
        let from = rig.rec.len();
        rig.start(Load::Normal);
        if rig
            .live_after(from, Duration::from_secs(20))
            .await
            .is_none()
        {
            rig.fail("no live reading after start".into());
        }
        // The previous stop's backlog is sent first, so that what is in
        // flight when the broker hangs is only the newest readings.
        let sent = rig
            .wait_while_up(from, Duration::from_secs(20), &|r| {
                r.topic.ends_with("/gateway/telemetry")
                    && r.json().is_some_and(|v| {
                        v["samples"]
                            .as_array()
                            .and_then(|a| a.last())
                            .is_some_and(|s| num(&s["values"]["spool.depth"]) == Some(0.0))
                    })
            })
            .await;
        if sent.is_none() {
            rig.note("the previous backlog was not sent within 20 s before the broker hung".into());
        }
        rig.broker.pause();
        sleep_ms(o.pick(2000, 6000)).await;
        if let Some(took) = rig
            .term_expect_0(Duration::from_secs(10), "SIGTERM with a hung broker")
            .await
        {
            rig.note(format!("stop took {:.1} s", took.as_secs_f64()));
        }
        rig.broker.stop();
        rig.cycles += 1;
        order_from = order_from.min(rig.rec.len());
    }
    // The backlog left by the stops drains now; its order is checked on
    // what arrived after the first hung stop.
    rig.drain().await;
    let (n, ex) = {
        let recs = rig.rec.lock();
        order_violations(&recs[order_from.min(recs.len())..])
    };
    if n > 0 {
        rig.fail(format!(
            "{n} historical records out of seq order, e.g. {}",
            ex.join("; ")
        ));
    }
    rig.outcome()
}
