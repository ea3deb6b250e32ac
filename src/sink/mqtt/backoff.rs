//! Reconnect pacing: jittered exponential backoff that starts over only
//! after a healthy link (thin-edge's bridge backoff; rumqtt #703, #918 are
//! the reconnect storms it prevents). Pure arithmetic: it never sleeps and
//! never touches the connection; the caller waits the delay it returns.

use std::time::Duration;

use rand::Rng;

/// Reconnect backoff: the first step, and the cap (a broker that refuses
/// for hours is tried about once a minute, never more often).
pub(super) const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Failed attempts retried at the first step before the delay grows: a
/// broker restart (down a few seconds) is caught within a second of its
/// return.
pub(super) const BACKOFF_FAST_TRIES: u32 = 8;
/// A link that stayed up this long was healthy: its loss starts the
/// backoff again from the first step.
pub(super) const BACKOFF_HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// Jittered exponential backoff that starts over after a healthy link.
///
/// The first `BACKOFF_FAST_TRIES` failed attempts wait about `min` each
/// (half to all of it); after that the step doubles per failure up to
/// `max`, and at the cap the delay is between `max` and 1.25 x `max`. A
/// connection that stayed up `healthy_after` resets it; a shorter one does
/// not (a broker that accepts and then drops us keeps backing off).
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    fast_tries: u32,
    healthy_after: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(
        min: Duration,
        max: Duration,
        fast_tries: u32,
        healthy_after: Duration,
    ) -> Self {
        Backoff {
            min,
            max,
            fast_tries,
            healthy_after,
            failures: 0,
        }
    }

    /// The delay before the next attempt, after one more failure.
    pub(crate) fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let doublings = self
            .failures
            .saturating_add(1)
            .saturating_sub(self.fast_tries)
            .min(20);
        self.failures = self.failures.saturating_add(1);
        let min = self.min.as_millis() as u64;
        let max = self.max.as_millis() as u64;
        let step = min.saturating_mul(1 << doublings);
        let ms = if step >= max {
            rng.random_range(max..=max + max / 4)
        } else {
            rng.random_range(step / 2..=step)
        };
        Duration::from_millis(ms)
    }

    /// A connection ended after being up for `up` (zero: it never came up).
    pub(crate) fn connection_ended(&mut self, up: Duration) {
        if up >= self.healthy_after {
            self.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn backoff() -> Backoff {
        Backoff::new(
            BACKOFF_MIN,
            BACKOFF_MAX,
            BACKOFF_FAST_TRIES,
            BACKOFF_HEALTHY_AFTER,
        )
    }

    fn secs(d: Duration) -> f64 {
        d.as_secs_f64()
    }

    #[test]
    fn backoff_fast_first_then_grows_with_jitter_and_caps() {
        for seed in 0..50 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut b = backoff();
            let d: Vec<f64> = (0..30).map(|_| secs(b.next_delay(&mut rng))).collect();
            // The fast tries: half a second to a second each.
            for x in &d[..8] {
                assert!((0.5..=1.0).contains(x), "seed {seed}: {d:?}");
            }
            // Then doubling: 1-2 s, 2-4 s, 4-8 s...
            assert!((1.0..=2.0).contains(&d[8]), "seed {seed}: {d:?}");
            assert!((2.0..=4.0).contains(&d[9]), "seed {seed}: {d:?}");
            assert!((16.0..=32.0).contains(&d[12]), "seed {seed}: {d:?}");
            // At the cap: never more often than once a minute.
            for x in &d[13..] {
                assert!((60.0..=75.0).contains(x), "seed {seed}: {d:?}");
            }
            // Jitter: not all the same.
            assert!(
                d[..8].windows(2).any(|w| w[0] != w[1]),
                "seed {seed}: {d:?}"
            );
        }
    }

    #[test]
    fn backoff_resets_only_after_a_healthy_link() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut b = backoff();
        for _ in 0..20 {
            b.next_delay(&mut rng);
        }
        // A connection that came up and dropped at once keeps the step...
        b.connection_ended(Duration::from_secs(3));
        assert!(b.next_delay(&mut rng) >= Duration::from_secs(60));
        // ...so does a failed attempt...
        b.connection_ended(Duration::ZERO);
        assert!(b.next_delay(&mut rng) >= Duration::from_secs(60));
        // ...a link up for ten seconds starts over.
        b.connection_ended(Duration::from_secs(10));
        assert!(b.next_delay(&mut rng) <= Duration::from_secs(1));
    }

    /// Twenty broker restarts, each down for up to 3 s, 20-40 s apart: the
    /// first attempt after the broker is back comes within 5 s of the drop
    /// in every case (the issue asks for 95 %), checked over many seeds.
    #[test]
    fn backoff_catches_a_broker_restart_within_five_seconds() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut b = backoff();
        let mut late = 0;
        let mut total = 0;
        for _ in 0..200 {
            for restart in 0..20u32 {
                let down = 0.5 + f64::from(restart % 6) * 0.5; // 0.5..3 s
                let mut t = 0.0;
                loop {
                    t += secs(b.next_delay(&mut rng));
                    if t >= down {
                        break;
                    }
                    b.connection_ended(Duration::ZERO);
                }
                total += 1;
                if t > 5.0 {
                    late += 1;
                }
                // Up for 20-40 s before the next restart.
                b.connection_ended(Duration::from_secs(u64::from(20 + restart % 20)));
            }
        }
        assert_eq!(late, 0, "{late} of {total} reconnects took more than 5 s");
    }
}
