//! The scenarios, one kind of fault each, in the order the suite runs
//! them; each one's expectation is in the doc comment of its function.

mod broker;
mod card;
mod slow_fsync;
mod spool_file;
mod stops;

pub use broker::reconnect_verdict;
pub use slow_fsync::figures;

use crate::rig::Outcome;
use crate::Opts;

pub type ScenarioFn =
    for<'a> fn(&'a Opts) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + 'a>>;

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name), (|o| Box::pin($name(o))) as ScenarioFn)),*]
    };
}

/// Every scenario by name (`--list`, `--only`).
pub fn all() -> Vec<(&'static str, ScenarioFn)> {
    use broker::*;
    use card::*;
    use slow_fsync::*;
    use spool_file::*;
    use stops::*;
    scenarios![
        kill9_spill,
        kill9_wal,
        sigterm_outage,
        sigterm_hung_broker,
        broker_restarts,
        disk_full,
        readonly_start,
        readonly_running,
        corrupt_file,
        damaged_row,
        oversized_reading,
        slow_fsync,
    ]
}
