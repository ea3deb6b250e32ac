//! The broker restarting under a running gateway: how soon it reconnects.

use std::time::{Duration, Instant};

use rand::Rng;

use crate::rig::{Load, Outcome, Rig};
use crate::util::{pct, sleep_ms};
use crate::Opts;

/// N broker restarts, each down ≤ 3 s: time until the gateway's birth
/// message arrives again, p95 ≤ 5 s (short mode, 5 restarts: 4 of 5 within
/// 5 s and none over 7 s; see [`reconnect_verdict`]).
pub async fn broker_restarts(o: &Opts) -> Outcome {
    let mut rig = Rig::new("broker_restarts", o, None).await;
    let from = rig.rec.len();
    rig.start(Load::Normal);
    if rig
        .live_after(from, Duration::from_secs(20))
        .await
        .is_none()
    {
        rig.fail("no live reading after start".into());
    }
    let mut times = Vec::new();
    let mut missed = 0;
    for _ in 0..o.pick(5, 20) {
        let (gap, down) = {
            let mut r = rand::rng();
            (
                // The short run keeps the link up past the 10 s after which
                // the gateway counts it healthy (as the long run's 20-40 s
                // do), so both measure the same regime, only fewer times.
                if o.short {
                    r.random_range(11000..14000u64)
                } else {
                    r.random_range(20000..40000u64)
                },
                r.random_range(500..3000u64),
            )
        };
        sleep_ms(gap).await;
        rig.broker.stop();
        sleep_ms(down).await;
        let idx = rig.rec.len();
        rig.broker.spawn();
        let up = Instant::now();
        match rig
            .rec
            .wait_for(idx, Duration::from_secs(90), &|r| r.is_status_online())
            .await
        {
            Some(i) => {
                let at = rig.rec.lock()[i].at;
                times.push(at.duration_since(up).as_secs_f64());
            }
            None => {
                missed += 1;
                times.push(90.0);
            }
        }
        rig.cycles += 1;
    }
    let p95 = pct(&times, 95.0).unwrap_or(0.0);
    let list: Vec<String> = times.iter().map(|t| format!("{t:.1}")).collect();
    rig.note(format!(
        "reconnect times (s): {} ; p95 {p95:.1} s (target ≤ 5 s){}",
        list.join(" "),
        if missed > 0 {
            format!("; {missed} never came back within 90 s")
        } else {
            String::new()
        }
    ));
    if let Some(why) = reconnect_verdict(&times, o.short) {
        rig.fail(why);
    }
    rig.finish().await
}

/// The reconnect promise (README: p95 ≤ 5 s) on the measured times, or why
/// it is broken. The long run's 20 samples are judged on p95 itself. The
/// short run's 5 cannot be: their p95 is the maximum, so one slow restart
/// on a loaded machine would fail it; there 4 of 5 must be within 5 s and
/// none over 7 s. That still fails a gateway that is slow every time, and
/// most often one whose backoff has grown when the broker returns (steps of
/// 4-8 s, then 8-16 s: two such restarts, or one over 7 s, fail).
pub fn reconnect_verdict(times: &[f64], short: bool) -> Option<String> {
    if !short {
        let p95 = pct(times, 95.0)?;
        return (p95 > 5.0).then(|| format!("reconnect p95 {p95:.1} s > 5 s"));
    }
    let slow = times.iter().filter(|&&t| t > 5.0).count();
    let worst = times.iter().copied().fold(0.0, f64::max);
    if slow > 1 {
        Some(format!(
            "{slow} of {} reconnects took > 5 s (at most 1 may)",
            times.len()
        ))
    } else if worst > 7.0 {
        Some(format!("a reconnect took {worst:.1} s > 7 s"))
    } else {
        None
    }
}
