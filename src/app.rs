//! Wiring, supervision and shutdown: the only place that spawns tasks.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{Clock, KernelClock};
use crate::config::{Config, GATEWAY_DEVICE};
use crate::model::{now_ms, Health};
use crate::sink::influx::{InfluxCounters, InfluxSink};
use crate::sink::mqtt::{EventReport, MqttSink, RunInfo, SinkCounters, StopReason};
use crate::source::{self, DeviceHandle};
use crate::spool::{Lane, LaneHandle, Spool};
use crate::status::StatusHub;
use crate::telemetry;

/// Budget for a clean stop after SIGTERM (systemd's default is 90 s; the
/// promise is 10 s).
const STOP_SOURCES: Duration = Duration::from_secs(2);
const STOP_SINK: Duration = Duration::from_secs(5);

/// What a running gateway exposes to its caller (tests, main).
pub struct Running {
    pub status: StatusHub,
    pub spool: Arc<Spool>,
    /// Where the local page listens, when enabled.
    pub web_addr: Option<std::net::SocketAddr>,
}

/// Runs the gateway until `cancel`, then stops cleanly. `ready` is called
/// once the config is valid and the spool is open.
pub async fn run(
    cfg: Config,
    cancel: CancellationToken,
    ready: impl FnOnce(&Running),
) -> anyhow::Result<()> {
    run_with_clock(cfg, cancel, ready, Arc::new(KernelClock::new())).await
}

/// [`run`] with the clock readings are stamped by: the kernel's in the
/// daemon, a [`crate::clock::FakeClock`] in tests that drive time (an
/// unsynchronised clock that syncs with a step of days).
pub async fn run_with_clock(
    cfg: Config,
    cancel: CancellationToken,
    ready: impl FnOnce(&Running),
    clock: Arc<dyn Clock>,
) -> anyhow::Result<()> {
    let cfg = Arc::new(cfg);
    for w in cfg.secret_warnings() {
        tracing::warn!("{w}");
    }
    let spool_cfg = cfg.spool.clone();
    let site = cfg.site.clone();
    // A lane per sink: InfluxDB's only when it is configured.
    let mut lanes = vec![Lane::Mqtt];
    if cfg.influxdb.enabled() {
        lanes.push(Lane::Influx);
    }
    let (spool, report) = tokio::task::spawn_blocking(move || {
        Spool::open_with_clock(&spool_cfg, &site, &lanes, clock)
    })
    .await
    .context("opening the spool")?
    .with_context(|| format!("opening the spool at {}", cfg.spool.path.display()))?;
    // GPIO needs the Pi's GPIO chip: without it, a config that uses GPIO
    // does not start (clear message, no restart loop of half a gateway).
    for dev in &cfg.devices {
        if let crate::config::DeviceConfig::Gpio(g) = dev {
            crate::source::gpio::probe(g)
                .with_context(|| format!("device {}: GPIO inputs cannot be used here", g.id))?;
        }
    }
    let status = StatusHub::new(&cfg.site);
    let gateway = DeviceHandle::new(
        GATEWAY_DEVICE,
        "gateway",
        cfg.gateway.telemetry_interval.get(),
        spool.clone(),
        status.clone(),
    );
    telemetry::report_start(&gateway, &report);
    // What the spool found while opening (degraded store, new epoch).
    for n in spool.take_notices() {
        telemetry::report_notice(&cfg, &gateway, n);
    }
    let notices_gateway = gateway.clone();
    // Every configured device is in the status from the start.
    let devices: Vec<(crate::config::DeviceConfig, DeviceHandle)> = cfg
        .all_devices()
        .iter()
        .map(|dev| {
            let h = DeviceHandle::new(
                dev.id(),
                dev.kind(),
                dev.interval(),
                spool.clone(),
                status.clone(),
            )
            .with_thresholds(dev.thresholds());
            let labels = crate::status::words::configured_labels(dev);
            if !labels.is_empty() {
                status.set_labels(dev.id(), labels);
            }
            (dev.clone(), h)
        })
        .collect();

    let sources = TaskTracker::new();
    let sources_stop = CancellationToken::new();
    let (died_tx, mut died) = tokio::sync::mpsc::unbounded_channel();
    let supervisor = Supervisor { died: died_tx };
    let history = Arc::new(crate::status::history::History::default());
    let mut web_addr = None;
    if cfg.web.enabled {
        match crate::status::web::bind(
            &cfg.web,
            status.subscribe(),
            history.clone(),
            sources_stop.clone(),
        )
        .await
        {
            Ok((addr, server)) => {
                tracing::info!(%addr, "local status page");
                web_addr = Some(addr);
                supervisor.spawn(&sources, "web page", &sources_stop, server);
            }
            Err(e) => tracing::error!(error = %e, "local status page not started"),
        }
    }

    let running = Running {
        status: status.clone(),
        spool: spool.clone(),
        web_addr,
    };
    ready(&running);
    notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(
        site = %cfg.site,
        devices = cfg.all_devices().len(),
        spool = %cfg.spool.path.display(),
        policy = ?cfg.spool.policy,
        "wardgate started"
    );

    let sink_stop = CancellationToken::new();
    let flusher_stop = CancellationToken::new();
    let infra = TaskTracker::new();
    let uplink = TaskTracker::new();

    supervisor.spawn(
        &infra,
        "spool flusher",
        &flusher_stop,
        spool.clone().run_flusher(flusher_stop.clone()),
    );

    let counters = Arc::new(SinkCounters::default());
    let lane = spool
        .lane(Lane::Mqtt)
        .context("the spool has no lane for the MQTT sink")?;
    let run_info = RunInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        boot_id: boot_id(),
        run_id: format!("{:016x}", rand::random::<u64>()),
        started_ms: now_ms(),
    };
    let g = gateway.clone();
    let report: EventReport =
        Arc::new(move |severity, code, message, values| g.event(severity, code, message, values));
    let restart = CancellationToken::new();
    // The offline status's reason: `power` when the power monitor stops us.
    let stop_reason = StopReason::default();
    let mqtt_lane = lane.clone();
    let (sink, dispatcher) = crate::command::attach(
        MqttSink::new(
            cfg.clone(),
            lane,
            status.clone(),
            run_info.clone(),
            counters.clone(),
            report.clone(),
        )
        .with_stop_reason(stop_reason.clone()),
        crate::command::Parts {
            cfg: cfg.clone(),
            spool: spool.clone(),
            status: status.clone(),
            devices: devices
                .iter()
                .map(|(d, h)| (d.id().to_owned(), h.clone()))
                .collect(),
            run: run_info,
            restart: restart.clone(),
        },
    );
    supervisor.spawn(
        &sources,
        "command dispatcher",
        &sources_stop,
        dispatcher.run(sources_stop.clone()),
    );
    supervisor.spawn(
        &uplink,
        "MQTT sink",
        &sink_stop,
        sink.run(sink_stop.clone()),
    );
    // The InfluxDB sink on its own lane: it never waits for MQTT, nor
    // MQTT for it.
    let influx = match spool.lane(Lane::Influx) {
        Some(lane) => {
            let c = Arc::new(InfluxCounters::default());
            let sink =
                InfluxSink::new(cfg.clone(), lane.clone(), status.clone(), c.clone(), report);
            supervisor.spawn(
                &uplink,
                "InfluxDB sink",
                &sink_stop,
                sink.run(sink_stop.clone()),
            );
            Some((lane, c))
        }
        None => None,
    };
    uplink.close();

    let mut handles = vec![gateway.clone()];
    let shared = source::Shared {
        spool_dir: cfg
            .spool
            .path
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| "/".into()),
        buses: Default::default(),
    };
    // [power]: the UPS that powers the Pi runs on its own token, so that on
    // a power stop its link is still there for the UPS command after the
    // sinks have stopped (its port has one owner: its source).
    let power_ups = cfg.power.as_ref().map(|p| p.ups.clone());
    let ups_tasks = TaskTracker::new();
    let ups_stop = CancellationToken::new();
    let mut ups_handle = None;
    for (dev, h) in devices {
        handles.push(h.clone());
        if power_ups.as_deref() == Some(dev.id()) {
            ups_handle = Some(h.clone());
            ups_tasks.spawn(source::run(dev, h, shared.clone(), ups_stop.clone()));
        } else {
            sources.spawn(source::run(dev, h, shared.clone(), sources_stop.clone()));
        }
    }
    ups_tasks.close();
    // The power monitor: watches that UPS's polls, decides, and hands a
    // shutdown over on `power_decided`.
    let (power_tx, power_decided) = tokio::sync::oneshot::channel();
    let mut power_rx = None;
    if let (Some(pcfg), Some(ups)) = (cfg.power.clone(), ups_handle.clone()) {
        status.update(|s| s.power = Some(crate::power::Monitor::initial_status(&pcfg)));
        let monitor = crate::power::Monitor {
            cfg: pcfg,
            ups,
            gateway: gateway.clone(),
            spool: spool.clone(),
            status: status.clone(),
            delivery: crate::power::Delivery {
                lane: mqtt_lane,
                counters: counters.clone(),
            },
        };
        supervisor.spawn(
            &sources,
            "power monitor",
            &sources_stop,
            monitor.run(sources_stop.clone(), power_tx),
        );
        power_rx = Some(power_decided);
    }
    supervisor.spawn(
        &sources,
        "health monitor",
        &sources_stop,
        health_monitor(handles, sources_stop.clone()),
    );
    supervisor.spawn(
        &sources,
        "gateway telemetry",
        &sources_stop,
        telemetry::run(
            cfg.clone(),
            gateway,
            status.clone(),
            spool.clone(),
            counters.clone(),
            sources_stop.clone(),
        ),
    );
    supervisor.spawn(
        &sources,
        "status refresher",
        &sources_stop,
        status_refresher(
            status.clone(),
            spool.clone(),
            counters.clone(),
            influx,
            history,
            sources_stop.clone(),
        ),
    );
    if let Some(period) = watchdog_period() {
        supervisor.spawn(
            &sources,
            "watchdog",
            &sources_stop,
            watchdog(
                period,
                spool.clone(),
                counters.clone(),
                sources_stop.clone(),
            ),
        );
    }
    supervisor.spawn(
        &sources,
        "spool notices",
        &sources_stop,
        telemetry::spool_notices(
            cfg.clone(),
            spool.clone(),
            notices_gateway,
            sources_stop.clone(),
        ),
    );
    // The LED goes dark last, so it shows a stop for power to the end.
    let led_stop = CancellationToken::new();
    let led_task = TaskTracker::new();
    match crate::status::led::open(&cfg.led) {
        Some(Ok(led)) => {
            // Not supervised: the LED gives up on a write error by design,
            // and a dark LED is no reason to stop delivering.
            led_task.spawn(crate::status::led::run(
                led,
                status.subscribe(),
                led_stop.clone(),
            ));
        }
        Some(Err(e)) => tracing::warn!(
            error = %e,
            "no status LED (set led.backend = \"none\" if this box has none)"
        ),
        None => {}
    }
    sources.close();
    led_task.close();

    // Runs until asked to stop, or until a task that should run until then
    // ends: then stops cleanly all the same and exits non-zero, so systemd
    // restarts the gateway.
    let power_wait = async {
        match power_rx {
            Some(rx) => rx.await.ok(),
            None => std::future::pending().await,
        }
    };
    let mut power = None;
    let died = tokio::select! {
        _ = cancel.cancelled() => None,
        Some(task) = died.recv() => Some(task),
        _ = restart.cancelled() => None,
        Some(p) = power_wait => {
            power = Some(p);
            None
        }
    };
    match &power {
        Some(p) => {
            tracing::warn!(reason = %p.reason.words(), "stopping for power: the Pi will be powered off")
        }
        None => tracing::info!("stopping"),
    }
    notify(&[sd_notify::NotifyState::Stopping]);

    // 1. No new readings. On a stop for power the UPS that powers the Pi
    // keeps its link for step 3b (its last readings are kept at step 4).
    sources_stop.cancel();
    if power.is_none() {
        ups_stop.cancel();
    }
    let stopped = async {
        sources.wait().await;
        if power.is_none() {
            ups_tasks.wait().await;
        }
    };
    if tokio::time::timeout(STOP_SOURCES, stopped).await.is_err() {
        tracing::warn!("sources did not stop in time");
    }
    // 2. Everything unacknowledged goes to disk before anything else.
    let s = spool.clone();
    match tokio::task::spawn_blocking(move || s.flush(true)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "final spool write failed"),
        Err(e) => tracing::error!(error = %e, "final spool write task failed"),
    }
    // 3. Offline status (`reason` power on a stop for power) and disconnect.
    if power.is_some() {
        stop_reason.set("power");
    }
    sink_stop.cancel();
    if tokio::time::timeout(STOP_SINK, uplink.wait())
        .await
        .is_err()
    {
        tracing::warn!("a sink did not stop in time");
    }
    flusher_stop.cancel();
    infra.close();
    infra.wait().await;
    // 4. Acknowledged rows deleted, sequence positions recorded, marked clean.
    // A store that cannot be written is not a failed stop: what could not be
    // kept was counted and reported while running. On a stop for power this
    // comes before the UPS is told anything: once told, it may cut the power
    // after `ups_off_delay`, and the card must be at rest by then.
    let s = spool.clone();
    match tokio::task::spawn_blocking(move || s.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "the spool could not keep everything at stop"),
        Err(e) => tracing::error!(error = %e, "closing the spool failed"),
    }
    // 4b. On a stop for power: the UPS is told, over its own link (its
    // source still runs; what it reads now is not kept), to switch off
    // after `ups_off_delay` and on again with the mains; then its source
    // stops.
    let mut ups_told = false;
    if let (Some(_), Some(pcfg), Some(ups)) = (&power, &cfg.power, &ups_handle) {
        let wait = cfg
            .devices
            .iter()
            .find(|d| d.id() == pcfg.ups)
            .map(crate::power::command_wait)
            .unwrap_or(crate::power::UPS_COMMAND_WAIT);
        ups_told = crate::power::ups_command(pcfg, ups, wait).await.is_ok();
    }
    ups_stop.cancel();
    if tokio::time::timeout(STOP_SOURCES, ups_tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("the UPS source did not stop in time");
    }
    tracing::info!("stopped");
    led_stop.cancel();
    led_task.wait().await;
    // 5. On a stop for power: the Pi is powered off (the outcome is logged).
    // When the power-off failed but the UPS will cut the power after
    // `ups_off_delay`, the gateway stays stopped (a restart would send the
    // UPS command again and put the cut off). When neither worked, nothing
    // will end this state but a flat battery: the gateway ends with an
    // error so that systemd starts it again and the ward stays watched.
    if let (Some(_), Some(pcfg)) = (&power, &cfg.power) {
        let off = crate::power::run_shutdown_command(pcfg).await;
        if !off && !ups_told {
            return Err(anyhow::anyhow!(
                "power: the shutdown command failed and the UPS was not told to switch off; stopped with an error so that the service manager starts wardgate again"
            ));
        }
        return Ok(());
    }
    if restart.is_cancelled() && died.is_none() {
        return Err(crate::command::RestartRequested.into());
    }
    match died {
        Some(task) => Err(anyhow::anyhow!(
            "{task} ended unexpectedly; stopped so that the service manager restarts wardgate"
        )),
        None => Ok(()),
    }
}

/// Spawns tasks that must run until their stop token: one that ends
/// before (returns or panics) is logged and named on `died`.
struct Supervisor {
    died: tokio::sync::mpsc::UnboundedSender<&'static str>,
}

impl Supervisor {
    fn spawn(
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

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    // Outside systemd NOTIFY_SOCKET is unset and this does nothing.
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// The kernel's boot id, so the operations centre can tell a reboot from a
/// restart of the service.
fn boot_id() -> String {
    let id = crate::spool::used::boot_id();
    if id.is_empty() {
        "unknown".into()
    } else {
        id
    }
}

async fn health_monitor(handles: Vec<DeviceHandle>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        for h in handles.iter().filter(|h| h.id() != GATEWAY_DEVICE) {
            h.check_stale();
        }
    }
}

/// Copies counters into the snapshot once a second.
async fn status_refresher(
    status: StatusHub,
    spool: Arc<Spool>,
    counters: Arc<SinkCounters>,
    influx: Option<(LaneHandle, Arc<InfluxCounters>)>,
    history: Arc<crate::status::history::History>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let stats = spool.stats();
        let acked = counters.records_acked.load(Ordering::Relaxed);
        let last = counters.last_ack_ms.load(Ordering::Relaxed);
        let influx_depth = influx.as_ref().map(|(lane, _)| lane.pending());
        status.update(|s| {
            if let (Some(i), Some((_, c)), Some(depth)) =
                (s.influxdb.as_mut(), influx.as_ref(), influx_depth)
            {
                i.refresh(c, depth);
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
    }
}

/// Half of systemd's watchdog interval, when it watches us.
fn watchdog_period() -> Option<Duration> {
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
async fn watchdog(
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
