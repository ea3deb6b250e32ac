//! The seam between a sink and its lane of the spool: what the MQTT sink
//! needs from the spool, and nothing else, so a fake lane can drive the
//! sink in unit tests; and the sign of life both sinks give while they wait.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::spool::{Batch, LaneHandle, SpoolError};

/// One sink's position in the spool.
pub trait Lane: Send + Sync + Clone + 'static {
    /// The next batch: events first, then live telemetry, then the backlog;
    /// at most `max_records` records whose bodies total at most the lane's
    /// `max_bytes` (a single bigger record comes alone). Never waits on the
    /// disk.
    fn next_batch(
        &self,
        max_records: usize,
    ) -> impl Future<Output = Result<Batch, SpoolError>> + Send;
    /// The bytes of bodies a batch holds at most: said once, when the sink
    /// takes its lane.
    fn set_max_bytes(&self, max_bytes: usize);
    /// The broker acknowledged the batch; returns how many records it held.
    fn ack(&self, batch_id: u64) -> usize;
    /// The link went down: nothing in flight will be acknowledged; it is all
    /// sent again, in order.
    fn nack_all(&self);
    /// Whether the sink can deliver (while it cannot, records go to disk).
    fn set_link(&self, up: bool);
    /// The batch can never be sent (too large, a device id that cannot be a
    /// topic): its records are quarantined, counted and reported, never
    /// sent again.
    fn set_aside(&self, batch_id: u64, reason: &str);
    /// Records of this lane not yet acknowledged (memory and disk).
    fn pending(&self) -> u64;
}

impl Lane for LaneHandle {
    fn next_batch(
        &self,
        max_records: usize,
    ) -> impl Future<Output = Result<Batch, SpoolError>> + Send {
        LaneHandle::next_batch(self, max_records)
    }

    fn set_max_bytes(&self, max_bytes: usize) {
        LaneHandle::set_max_bytes(self, max_bytes)
    }

    fn ack(&self, batch_id: u64) -> usize {
        LaneHandle::ack(self, batch_id)
    }

    fn nack_all(&self) {
        LaneHandle::nack_all(self)
    }

    fn set_link(&self, up: bool) {
        LaneHandle::set_link(self, up)
    }

    fn set_aside(&self, batch_id: u64, reason: &str) {
        LaneHandle::set_aside(self, batch_id, reason)
    }

    fn pending(&self) -> u64 {
        LaneHandle::pending(self)
    }
}

/// Runs `f`, advancing a sink's sign of life (`alive`) every second
/// meanwhile, so the watchdog tells a sink that waits (on the broker, the
/// database, a back-off) from one that is stuck. Both sinks use it.
pub(crate) async fn beating<T>(alive: &AtomicU64, f: impl Future<Output = T>) -> T {
    tokio::pin!(f);
    let mut tick = crate::tick::every(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = &mut f => return r,
            _ = tick.tick() => {
                alive.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
