//! The spool's caps, kept by the commit round: `max_bytes` (events past
//! their share first, then the oldest telemetry, events only when no
//! telemetry is left) and `max_age`; and the free pages given back a little
//! at a time.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::model::Kind;
use crate::spool::config::SpoolConfig;
use crate::spool::db::Db;
use crate::spool::error::SpoolError;
use crate::spool::report::{DropReason, Reporter, EVENT_SHARE};
use crate::spool::retime::ClockCache;

/// A step of the synchronised wall clock relative to `CLOCK_BOOTTIME` past
/// which the wall time is not trusted to age records: a day.
const MAX_AGE_STEP_MS: i64 = 86_400_000;

/// How often records are aged.
const AGE_EVERY: Duration = Duration::from_secs(60);

/// What the caps remember between rounds: when records were last aged, and
/// whether the wall clock may be trusted to age them.
#[derive(Default)]
pub(crate) struct Caps {
    pub(crate) last_age_check: Option<Instant>,
    /// The wall clock's offset from `CLOCK_BOOTTIME` (ms) at the first age
    /// check with a synchronised clock: a later offset more than
    /// [`MAX_AGE_STEP_MS`] away is a step, and the wall time is then not
    /// trusted to age records.
    age_base: Option<i64>,
    /// A step was seen and logged (once until the offset comes back).
    age_step_seen: bool,
}

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

fn sql(what: &str) -> impl FnOnce(rusqlite::Error) -> SpoolError {
    let what = what.to_owned();
    move |e| SpoolError::Sql { what, source: e }
}

impl Caps {
    /// Keeps the store within `max_bytes` (events past their share
    /// ([`EVENT_SHARE`]) first, then the oldest telemetry, events only when
    /// no telemetry is left) and `max_age` (checked once a minute, by
    /// `clock`).
    pub(super) fn enforce(
        &mut self,
        db: &mut Db,
        cfg: &SpoolConfig,
        (now, clock): (Instant, &ClockCache),
        report: &Reporter,
    ) -> Result<(), SpoolError> {
        let age_due = self
            .last_age_check
            .map(|t| now.duration_since(t) >= AGE_EVERY)
            .unwrap_or(true);
        if age_due {
            self.last_age_check = Some(now);
            self.drop_aged(db, cfg.max_age, clock, report)?;
        }
        keep_within(db, cfg.max_bytes.as_u64(), report)?;
        // Give free pages back a little at a time (the file shrinks once a
        // backlog has drained).
        if let Err(e) = db.vacuum_some(256) {
            tracing::debug!(error = %e, "incremental vacuum failed");
        }
        let used = db.used_bytes().map_err(sql("measuring"))?;
        report.counters.disk_bytes.store(used, Ordering::Relaxed);
        Ok(())
    }

    /// Drops the records older than `max_age`, while the clock is
    /// synchronised. Records of this boot are
    /// aged by CLOCK_BOOTTIME, which no step moves. Those of earlier boots
    /// only by the wall clock, and not while it stands more than a day away
    /// from where it stood against CLOCK_BOOTTIME at the first check (a
    /// step by a wrong time source, a hand, a bad RTC): a backlog is never
    /// purged on a clock nobody can vouch for.
    fn drop_aged(
        &mut self,
        db: &mut Db,
        max_age: Duration,
        clock: &ClockCache,
        report: &Reporter,
    ) -> Result<(), SpoolError> {
        let clock_now = clock.now();
        if !clock_now.synced {
            return Ok(());
        }
        let age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        let offset = clock_now.wall_ms - clock_now.boottime_ms;
        let base = *self.age_base.get_or_insert(offset);
        let stepped = (offset - base).abs() > MAX_AGE_STEP_MS;
        if stepped && !self.age_step_seen {
            tracing::warn!(
                step_ms = offset - base,
                "the wall clock was stepped by more than a day while synchronised: spool.max_age ages only this boot's records (by the monotonic clock) until it comes back"
            );
        } else if !stepped && self.age_step_seen {
            tracing::info!("the wall clock is back where it was: spool.max_age applies again");
        }
        self.age_step_seen = stepped;
        let wall_cutoff = (!stepped).then(|| clock_now.wall_ms.saturating_sub(age_ms));
        let n = db
            .drop_aged(
                &clock.boot_id(),
                clock_now.boottime_ms.saturating_sub(age_ms),
                wall_cutoff,
            )
            .map_err(sql("dropping old records"))?;
        if n > 0 {
            report
                .counters
                .disk_rows
                .fetch_sub(n as i64, Ordering::Relaxed);
            report.count_drop(DropReason::Age, n as u64);
        }
        Ok(())
    }
}

/// Drops records until the store is within `max` bytes, a tenth of the
/// cap more at a time so a full spool does not trim on every commit.
fn keep_within(db: &mut Db, max: u64, report: &Reporter) -> Result<(), SpoolError> {
    let mut used = db.used_bytes().map_err(sql("measuring"))?;
    let mut rounds = 0;
    while used > max && rounds < 64 {
        rounds += 1;
        let rows = db.row_count().map_err(sql("counting"))?.max(1);
        let per_row = (used / rows).max(1);
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
        report
            .counters
            .disk_rows
            .fetch_sub(n as i64, Ordering::Relaxed);
        report.count_drop(DropReason::Full, n as u64);
        used = db.used_bytes().map_err(sql("measuring"))?;
    }
    Ok(())
}
