//! Housekeeping ticks on one grid. The gateway's periodic chores (the
//! status snapshot, the sinks' signs of life, the spool's commit round, the
//! inventory) each keep their own period, but every tick falls on a
//! multiple of its period counted from one process-wide instant, so chores
//! due at the same moment share one wake-up of the runtime's thread
//! instead of each waking it at its own phase (docs/packaging.md, "Idle
//! cost").

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

/// The grid's origin: the first time any tick was asked for.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// The first grid point for `period` strictly after `now`. The grid runs
/// both ways from `origin`: a runtime whose clock stands before the origin
/// (tests run runtimes side by side, some on paused clocks that jumped
/// ahead) still gets a point within one period, never one far ahead.
pub(crate) fn next_on_grid(origin: Instant, now: Instant, period: Duration) -> Instant {
    let p = period.as_nanos().max(1);
    let nanos = |n: u128| Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX));
    if now >= origin {
        let since = (now - origin).as_nanos();
        origin + nanos((since / p + 1) * p)
    } else {
        // origin - k*p, the last point at or before the origin that is
        // still after now: now + (distance mod p), or a period on.
        let ahead = (origin - now).as_nanos() % p;
        now + nanos(if ahead == 0 { p } else { ahead })
    }
}

/// An interval of `period` whose ticks fall on the grid. Unlike
/// `tokio::time::interval`, the first tick is not at once but at the next
/// grid point (at most one period away): a caller that needs a first pass
/// at once does it before its loop. A late tick is skipped rather than
/// bunched, so the ticks stay on the grid.
pub(crate) fn every(period: Duration) -> Interval {
    let period = period.max(Duration::from_millis(1));
    let start = next_on_grid(origin(), Instant::now(), period);
    let mut i = tokio::time::interval_at(start, period);
    i.set_missed_tick_behavior(MissedTickBehavior::Skip);
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_points_are_multiples_of_the_period_from_the_origin() {
        let o = Instant::now();
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        assert_eq!(next_on_grid(o, o, s(1)), o + s(1));
        assert_eq!(next_on_grid(o, o + ms(1), s(1)), o + s(1));
        assert_eq!(next_on_grid(o, o + ms(999), s(1)), o + s(1));
        assert_eq!(next_on_grid(o, o + s(1), s(1)), o + s(2));
        assert_eq!(next_on_grid(o, o + ms(2500), s(5)), o + s(5));
        // A second and a five-second chore meet every fifth second.
        assert_eq!(next_on_grid(o, o + ms(4200), s(1)), o + s(5));
        assert_eq!(next_on_grid(o, o + ms(4200), s(5)), o + s(5));
        // Before the origin (another runtime's paused clock had jumped
        // ahead when it set it): the grid runs back from it, within a
        // period of now.
        assert_eq!(next_on_grid(o + s(3), o, s(1)), o + s(1));
        assert_eq!(next_on_grid(o + ms(3500), o, s(1)), o + ms(500));
        assert_eq!(next_on_grid(o + s(3600), o + ms(10), s(5)), o + s(5));
    }

    /// Two chores with periods of 1 s and 5 s, started at different
    /// moments, tick at the same instants where their periods meet.
    #[tokio::test(start_paused = true)]
    async fn chores_started_apart_share_their_ticks() {
        let mut a = every(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let mut b = every(Duration::from_secs(5));
        let (mut ta, mut tb) = (Vec::new(), Vec::new());
        let end = Instant::now() + Duration::from_secs(12);
        while Instant::now() < end {
            tokio::select! {
                t = a.tick() => ta.push(t),
                t = b.tick() => tb.push(t),
            }
        }
        assert_eq!(tb.len(), 2, "{tb:?}");
        assert!(ta.len() >= 11, "{ta:?}");
        for t in &tb {
            assert!(ta.contains(t), "{t:?} not among {ta:?}");
        }
    }
}
