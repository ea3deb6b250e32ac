//! The tasks a running gateway keeps beside its sources and sinks: the
//! supervisor that names a task ending early, the health monitor, the
//! status refresher, systemd's watchdog and readiness.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ids::GATEWAY_DEVICE;
use crate::model::{now_ms, Health};
use crate::sink::influx::InfluxCounters;
use crate::sink::mqtt::SinkCounters;
use crate::source::DeviceHandle;
use crate::spool::{LaneHandle, Spool};
use crate::status::StatusHub;

/// Spawns tasks that must run until their stop token: one that ends
/// before (returns or panics) is logged and named on `died`.
pub(super) struct Supervisor {
    pub(super) died: tokio::sync::mpsc::UnboundedSender<&'static str>,
}

impl Supervisor {
    pub(super) fn spawn(
        &self,
        tracker: &TaskTracker,
        name: &'static str,
        stop: &CancellationToken,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let handle = tracker.spawn(task);
        let (died, stop) = (self.died.clone(), stop.clone());
        tracker.spawn(async move {
            let result = handle.await;
            if stop.is_cancelled() {
                return;
            }
            match result {
                Ok(()) => tracing::error!(task = name, "task ended before shutdown"),
                Err(e) => tracing::error!(task = name, error = %e, "task failed"),
            }
            let _ = died.send(name);
        });
    }
}

pub(super) fn notify(state: &[sd_notify::NotifyState<'_>]) {
    // Outside systemd NOTIFY_SOCKET is unset and this does nothing.
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// The kernel's boot id, so the operations centre can tell a reboot from a
/// restart of the service.
pub(super) fn boot_id() -> String {
    let id = crate::spool::used::boot_id();
    if id.is_empty() {
        "unknown".into()
    } else {
        id
    }
}

/// Marks devices stale (`device.lost`) when their readings stop. Sleeps
/// until the earliest moment one could become stale (a good reading since
/// moves that moment on, and the next look sees it), rather than looking
/// on a timer.
pub(super) async fn health_monitor(handles: Vec<DeviceHandle>, cancel: CancellationToken) {
    let watched: Vec<_> = handles
        .into_iter()
        .filter(|h| h.id() != GATEWAY_DEVICE)
        .collect();
    // With no device to watch (a gateway that only reports itself) the
    // monitor still runs until the stop: the supervisor takes a task that
    // ends early for a failure.
    let Some(fallback) = watched.iter().map(|h| h.stale_period()).min() else {
        cancel.cancelled().await;
        return;
    };
    loop {
        for h in &watched {
            h.check_stale();
        }
        let now = tokio::time::Instant::now();
        // A device that has not read yet, or is already stale or faulty,
        // has no deadline: looked at again within its stale limit.
        let next = watched
            .iter()
            .filter_map(|h| h.stale_at())
            .min()
            .unwrap_or(now + fallback)
            .max(now + Duration::from_millis(5));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
    }
}

/// Copies counters into the snapshot at once (`/healthz` reads its time),
/// then once a second on the housekeeping grid.
pub(super) async fn status_refresher(
    status: StatusHub,
    spool: Arc<Spool>,
    counters: Arc<SinkCounters>,
    influx: Option<(LaneHandle, Arc<InfluxCounters>)>,
    history: Arc<crate::status::history::History>,
    cancel: CancellationToken,
) {
    let refresh = || {
        let stats = spool.stats();
        let acked = counters.records_acked.load(Ordering::Relaxed);
        let last = counters.last_ack_ms.load(Ordering::Relaxed);
        let influx_depth = influx.as_ref().map(|(lane, _)| lane.pending());
        status.update(|s| {
            if let (Some(i), Some((_, c)), Some(depth)) =
                (s.influxdb.as_mut(), influx.as_ref(), influx_depth)
            {
                c.refresh(i, depth);
            }
            s.spool = stats;
            s.uplink.acked = acked;
            s.uplink.last_ack_ms = (last > 0).then_some(last);
            if let Some(g) = s.devices.get_mut(GATEWAY_DEVICE) {
                g.health = Health::Ok;
            }
            s.updated_ms = now_ms();
        });
        history.record(&status.get(), now_ms());
    };
    refresh();
    let mut tick = crate::tick::every(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => refresh(),
        }
    }
}

/// Half of systemd's watchdog interval, when it watches us.
pub(super) fn watchdog_period() -> Option<Duration> {
    let mut usec = 0u64;
    (sd_notify::watchdog_enabled(false, &mut usec) && usec > 0)
        .then(|| Duration::from_micros(usec / 2))
}

/// The MQTT sink's sign of life advances every second; this long without
/// it, the sink is wedged.
const SINK_SILENT: Duration = Duration::from_secs(5);

/// Pings systemd's watchdog only while delivery is alive: the spool's commit
/// loop makes progress, the MQTT sink's loop turns, and delivery is not
/// stalled (records pending with the link up and no PUBACK for
/// `mqtt.stall_timeout`). A broker that is simply down is not a stall.
pub(super) async fn watchdog(
    period: Duration,
    spool: Arc<Spool>,
    counters: Arc<SinkCounters>,
    cancel: CancellationToken,
) {
    let mut last = spool.progress();
    let mut sink_seen = (counters.alive.load(Ordering::Relaxed), Instant::now());
    // The first check one period after start (an interval's first tick is
    // at once, before the spool could have made progress: a false warning
    // at every start).
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let alive = counters.alive.load(Ordering::Relaxed);
        if alive != sink_seen.0 {
            sink_seen = (alive, Instant::now());
        }
        let now = spool.progress();
        if now == last {
            tracing::warn!("no spool progress since the last watchdog period; not pinging");
        } else if sink_seen.1.elapsed() > SINK_SILENT {
            tracing::warn!("the MQTT sink's loop is not turning; not pinging the watchdog");
        } else if counters.stalled.load(Ordering::Relaxed) {
            tracing::warn!("MQTT delivery stalled; not pinging the watchdog");
        } else {
            last = now;
            notify(&[sd_notify::NotifyState::Watchdog]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Values;

    fn device(dir: &tempfile::TempDir, id: &str, interval: Duration) -> DeviceHandle {
        let cfg = crate::config::Config::from_toml(&format!(
            "site = \"s\"\n[spool]\npath = \"{}\"\n",
            dir.path().join(format!("{id}.db")).display()
        ))
        .unwrap();
        let (spool, _) =
            crate::spool::Spool::open(&cfg.spool, "s", &[crate::spool::Lane::Mqtt]).unwrap();
        DeviceHandle::new(id, "fake", interval, spool, StatusHub::new("s"))
    }

    /// A gateway with no device but itself: the monitor has nothing to
    /// watch and still runs until the stop (the supervisor takes a task
    /// that ends early for a failure and stops the gateway).
    #[tokio::test(start_paused = true)]
    async fn health_monitor_with_nothing_to_watch_runs_until_the_stop() {
        let dir = tempfile::tempdir().unwrap();
        let gateway = device(&dir, GATEWAY_DEVICE, Duration::from_secs(60));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(health_monitor(vec![gateway], cancel.clone()));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!task.is_finished(), "the monitor ended before the stop");
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("it ends at the stop")
            .unwrap();
    }

    /// The monitor, sleeping until deadlines rather than looking on a
    /// timer, marks a device stale within half a second (the grace a
    /// source has to give its own verdict first) after three intervals
    /// without a good reading, and a reading in between moves the
    /// deadline on.
    #[tokio::test(start_paused = true)]
    async fn health_monitor_marks_a_device_stale_at_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let d = device(&dir, "d", Duration::from_secs(1));
        let cancel = CancellationToken::new();
        d.sample(Values::new());
        let task = tokio::spawn(health_monitor(vec![d.clone()], cancel.clone()));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        d.sample(Values::new());
        // 5.7 s after the first reading, 3.2 s after the second: still ok
        // (past the limit, within the grace).
        tokio::time::sleep(Duration::from_millis(3200)).await;
        assert_eq!(d.health(), Health::Ok);
        // Three intervals and the grace after the second: stale.
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(d.health(), Health::Stale);
        cancel.cancel();
        task.await.unwrap();
    }

    /// A supervised task that returns or panics before its stop token is
    /// named on `died`; one that ends after the token was cancelled is not.
    #[tokio::test]
    async fn supervisor_reports_tasks_that_end_early() {
        let (tx, mut died) = tokio::sync::mpsc::unbounded_channel();
        let sup = Supervisor { died: tx };
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        sup.spawn(&tracker, "returns", &stop, async {});
        sup.spawn(&tracker, "panics", &stop, async { panic!("boom") });
        let s = stop.clone();
        sup.spawn(&tracker, "runs until stop", &stop, async move {
            s.cancelled().await
        });
        let mut names = Vec::new();
        for _ in 0..2 {
            let n = tokio::time::timeout(Duration::from_secs(5), died.recv())
                .await
                .expect("reported within 5 s")
                .expect("a name");
            names.push(n);
        }
        names.sort_unstable();
        assert_eq!(names, vec!["panics", "returns"]);
        stop.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .expect("all stop");
        drop(sup);
        assert_eq!(
            died.recv().await,
            None,
            "a task stopped on request is not reported"
        );
    }
}
