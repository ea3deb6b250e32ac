//! The gateway's drop counters over its runs. `spool.dropped.<reason>`
//! counts since the service started, so what a site dropped in all is the
//! sum over runs of each run's last reading. Readings arrive in any order
//! (backlog), so they are kept sorted by (epoch in first-seen order, seq),
//! and a run is a stretch of readings in which `gateway.uptime` and every
//! counter only grow; a reading that goes back starts another run. Only the
//! first and last reading of each run are kept, so a site holds a few
//! readings per restart, not one per minute.

use serde::{Deserialize, Serialize};
use wardgate_contract::{DropReason, GatewayHealth};

/// The drop reasons a count explains. `too_large` is left out: each such
/// record is named, with its number, by a `spool.quarantined` event.
pub const COUNTED: [DropReason; 4] = [
    DropReason::Full,
    DropReason::Age,
    DropReason::WriteFailed,
    DropReason::Corrupt,
];

/// One gateway telemetry reading's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterReading {
    /// The epoch's position in the site's first-seen order.
    pub order: u32,
    pub seq: u64,
    pub uptime_s: u64,
    /// [`COUNTED`]'s counters, in its order.
    pub dropped: [u64; 4],
}

impl CounterReading {
    pub fn new(order: u32, seq: u64, health: &GatewayHealth) -> Self {
        CounterReading {
            order,
            seq,
            uptime_s: health.uptime_s,
            dropped: COUNTED.map(|r| health.dropped(r)),
        }
    }

    fn key(&self) -> (u32, u64) {
        (self.order, self.seq)
    }

    /// Whether `next` can be a later reading of the same run.
    fn continued_by(&self, next: &CounterReading) -> bool {
        next.uptime_s >= self.uptime_s
            && self.dropped.iter().zip(next.dropped).all(|(a, b)| b >= *a)
    }
}

/// Adds a reading (a copy of one already there changes nothing) and drops
/// the readings it made redundant.
pub fn insert(readings: &mut Vec<CounterReading>, r: CounterReading) {
    let i = match readings.binary_search_by_key(&r.key(), CounterReading::key) {
        Ok(_) => return,
        Err(i) => i,
    };
    readings.insert(i, r);
    // A reading inside a run (its neighbours on both sides continue it)
    // says nothing the run's ends do not.
    let lo = i.saturating_sub(1);
    let hi = (i + 1).min(readings.len().saturating_sub(1));
    for j in (lo..=hi).rev() {
        let inner = j > 0
            && j + 1 < readings.len()
            && readings[j - 1].continued_by(&readings[j])
            && readings[j].continued_by(&readings[j + 1]);
        if inner {
            readings.remove(j);
        }
    }
}

/// What the site dropped in all, per reason of [`COUNTED`]: the sum over
/// runs of each run's last reading.
pub fn totals(readings: &[CounterReading]) -> [u64; 4] {
    let mut sum = [0u64; 4];
    for (i, r) in readings.iter().enumerate() {
        let last_of_run = readings.get(i + 1).is_none_or(|next| !r.continued_by(next));
        if last_of_run {
            for (s, n) in sum.iter_mut().zip(r.dropped) {
                *s = s.saturating_add(n);
            }
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(seq: u64, uptime_s: u64, full: u64) -> CounterReading {
        CounterReading {
            order: 0,
            seq,
            uptime_s,
            dropped: [full, 0, 0, 0],
        }
    }

    #[test]
    fn runs_add_up_in_any_order() {
        // Two runs: dropped 5 then 3 (the counter starts again at 0).
        let run = [
            r(0, 60, 0),
            r(1, 120, 2),
            r(2, 180, 5),
            r(3, 60, 0),
            r(4, 120, 3),
        ];
        let orders: [[usize; 5]; 4] = [
            [0, 1, 2, 3, 4],
            [4, 3, 2, 1, 0],
            [3, 4, 0, 1, 2],
            [2, 0, 4, 1, 3],
        ];
        for order in orders {
            let mut v = Vec::new();
            for i in order {
                insert(&mut v, run[i]);
                insert(&mut v, run[i]);
            }
            assert_eq!(totals(&v), [8, 0, 0, 0], "{order:?}");
            assert!(v.len() <= 4, "{v:?}");
        }
        // A long run keeps its ends only.
        let mut v = Vec::new();
        for s in 0..1000 {
            insert(&mut v, r(s, 60 * (s + 1), s / 10));
        }
        assert_eq!(v.len(), 2);
        assert_eq!(totals(&v), [99, 0, 0, 0]);
        // Another epoch is another stretch, after the first.
        insert(
            &mut v,
            CounterReading {
                order: 1,
                ..r(0, 30, 4)
            },
        );
        assert_eq!(totals(&v), [103, 0, 0, 0]);
    }
}
