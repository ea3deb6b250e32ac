//! The spool's caps, for the commit round: `max_bytes` (events past their
//! share first, then the oldest telemetry, events only when no telemetry is
//! left) and `max_age`; and the free pages given back a little at a time.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::commit::Store;
use super::{DropReason, Spool, SpoolError};
use crate::model::Kind;

/// When the spool is full, events keep their place ahead of telemetry only
/// up to one record in this many (a quarter): past that share the oldest
/// events go first, so a device raising events without end (a flapping
/// link) cannot push the history out. The same share bounds events in
/// memory while the store cannot be written.
pub(super) const EVENT_SHARE: u64 = 4;

/// A step of the synchronised wall clock relative to `CLOCK_BOOTTIME` past
/// which the wall time is not trusted to age records: a day.
pub(super) const MAX_AGE_STEP_MS: i64 = 86_400_000;

/// What to drop first from a full store holding `rows` records of which
/// `events` are events, `want` records in all: the oldest events past
/// their share, else the oldest telemetry (events only when none is left).
pub(super) fn first_to_drop(rows: u64, events: u64, want: usize) -> (Kind, usize) {
    let over_share = events.saturating_sub(rows / EVENT_SHARE);
    if over_share > 0 {
        (Kind::Event, want.min(over_share as usize))
    } else {
        (Kind::Sample, want)
    }
}

impl Spool {
    /// Keeps the spool within `max_bytes` (events past their share
    /// ([`EVENT_SHARE`]) first, then the oldest telemetry, events only when
    /// no telemetry is left) and `max_age`.
    pub(super) fn enforce_caps(&self, store: &mut Store, now: Instant) -> Result<(), SpoolError> {
        let sql = |what: &str| {
            let what = what.to_owned();
            move |e| SpoolError::Sql { what, source: e }
        };
        let age_due = store
            .last_age_check
            .map(|t| now.duration_since(t) >= Duration::from_secs(60))
            .unwrap_or(true);
        let Some(db) = store.db.as_mut() else {
            return Ok(());
        };
        let max = self.cfg.max_bytes.as_u64();
        if age_due {
            store.last_age_check = Some(now);
            let now_c = self.clock.now();
            if now_c.synced {
                let age_ms = i64::try_from(self.cfg.max_age.as_millis()).unwrap_or(i64::MAX);
                // Records of this boot are aged by CLOCK_BOOTTIME, which no
                // step moves. Those of earlier boots only by the wall
                // clock, and not while it stands more than a day away from
                // where it stood against CLOCK_BOOTTIME at the first check
                // (a step by a wrong time source, a hand, a bad RTC): a
                // backlog is never purged on a clock nobody can vouch for.
                let offset = now_c.wall_ms - now_c.boottime_ms;
                let base = *store.age_base.get_or_insert(offset);
                let stepped = (offset - base).abs() > MAX_AGE_STEP_MS;
                if stepped && !store.age_step_seen {
                    tracing::warn!(
                        step_ms = offset - base,
                        "the wall clock was stepped by more than a day while synchronised: spool.max_age ages only this boot's records (by the monotonic clock) until it comes back"
                    );
                } else if !stepped && store.age_step_seen {
                    tracing::info!(
                        "the wall clock is back where it was: spool.max_age applies again"
                    );
                }
                store.age_step_seen = stepped;
                let wall_cutoff = (!stepped).then(|| now_c.wall_ms.saturating_sub(age_ms));
                let n = db
                    .drop_aged(
                        &self.clock.boot_id(),
                        now_c.boottime_ms.saturating_sub(age_ms),
                        wall_cutoff,
                    )
                    .map_err(sql("dropping old records"))?;
                if n > 0 {
                    self.counters
                        .disk_rows
                        .fetch_sub(n as i64, Ordering::Relaxed);
                    self.count_drop(DropReason::Age, n as u64);
                }
            }
        }
        let mut used = db.used_bytes().map_err(sql("measuring"))?;
        let mut rounds = 0;
        while used > max && rounds < 64 {
            rounds += 1;
            let rows = db.row_count().map_err(sql("counting"))?.max(1);
            let per_row = (used / rows).max(1);
            // Free a tenth of the cap at a time so a full spool does not
            // trim on every commit.
            let want = (((used - max) + max / 10) / per_row).max(1) as usize;
            let events = db.count_kind(Kind::Event).map_err(sql("counting"))?;
            let mut n = match first_to_drop(rows, events, want) {
                (Kind::Event, k) => {
                    tracing::warn!(
                        events,
                        rows,
                        "events are more than 1/{EVENT_SHARE} of the full spool: the oldest go first"
                    );
                    db.drop_oldest(Kind::Event, k)
                        .map_err(sql("dropping oldest events"))?
                }
                (Kind::Sample, k) => db
                    .drop_oldest(Kind::Sample, k)
                    .map_err(sql("dropping oldest telemetry"))?,
            };
            if n == 0 {
                n = db
                    .drop_oldest(Kind::Sample, want)
                    .map_err(sql("dropping oldest telemetry"))?;
            }
            if n == 0 {
                n = db
                    .drop_oldest(Kind::Event, want)
                    .map_err(sql("dropping oldest events"))?;
            }
            if n == 0 {
                break;
            }
            self.counters
                .disk_rows
                .fetch_sub(n as i64, Ordering::Relaxed);
            self.count_drop(DropReason::Full, n as u64);
            used = db.used_bytes().map_err(sql("measuring"))?;
        }
        // Give free pages back a little at a time (the file shrinks once a
        // backlog has drained).
        if let Err(e) = db.vacuum_some(256) {
            tracing::debug!(error = %e, "incremental vacuum failed");
        }
        used = db.used_bytes().map_err(sql("measuring"))?;
        self.counters.disk_bytes.store(used, Ordering::Relaxed);
        Ok(())
    }
}
