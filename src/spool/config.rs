//! The `[spool]` section: where and how the durable buffer keeps records,
//! and its checks.

use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::types::{defaults_of, duration_problem, AbsPath, Bounded};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpoolPolicy {
    /// Send from memory; write to disk only what is not acknowledged in time.
    Spill,
    /// Commit every record to disk before sending it.
    Wal,
}

// The durations stay plain `Duration`s, bounded in `problems` with the
// same helper (and so the same words) as the validated types: the spool's
// commit loop reads them and nothing there clamps them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    #[serde(default = "default_spool_path")]
    pub path: AbsPath,
    #[serde(default = "default_policy")]
    pub policy: SpoolPolicy,
    #[serde(default = "default_spill_after", with = "humantime_serde")]
    pub spill_after: Duration,
    #[serde(default = "default_commit_interval", with = "humantime_serde")]
    pub commit_interval: Duration,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// Records held in memory per sink before the oldest are written to disk
    /// even though the link is up (1-10000000).
    #[serde(default = "default_memory_max")]
    pub memory_max: Bounded<1, 10_000_000>,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        defaults_of("spool")
    }
}

fn default_spool_path() -> AbsPath {
    AbsPath::known("/var/lib/wardgate/spool.db")
}
fn default_policy() -> SpoolPolicy {
    SpoolPolicy::Spill
}
fn default_spill_after() -> Duration {
    Duration::from_secs(2)
}
fn default_commit_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_max_bytes() -> ByteSize {
    ByteSize::mib(256)
}
fn default_max_age() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_memory_max() -> Bounded<1, 10_000_000> {
    Bounded::of(10_000)
}

/// The longest `spool.max_age`: 10 years of 365.25 days.
pub(crate) const MAX_AGE_MS: u64 = 10 * 31_557_600_000;

impl SpoolConfig {
    /// Problems, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let (s, mut p) = (self, Vec::new());
        let ms = Duration::from_millis;
        if let Some(why) = duration_problem(s.commit_interval, ms(10), Some(ms(60_000))) {
            p.push(format!("spool.commit_interval: {why}"));
        }
        if let Some(why) = duration_problem(s.spill_after, ms(0), Some(ms(3_600_000))) {
            p.push(format!("spool.spill_after: {why}"));
        }
        // Below 64 KiB not even a page of records fits; above 1 TiB is
        // beyond any card or disk a Pi spools to (and far from u64/i64
        // byte counts wrapping).
        if !(64 << 10..=1 << 40).contains(&s.max_bytes.as_u64()) {
            p.push(format!(
                "spool.max_bytes: {} must be between 64 KiB and 1 TiB",
                s.max_bytes
            ));
        }
        // Ten years (of 365.25 days, humantime's "10years") is more than a
        // card lives; a longer age wrapped when turned into a cut-off time
        // and would have deleted every record once the clock synced.
        if let Some(why) = duration_problem(s.max_age, ms(60_000), Some(ms(MAX_AGE_MS))) {
            p.push(format!("spool.max_age: {why}"));
        }
        p
    }
}
