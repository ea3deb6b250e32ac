//! Wiring, supervision and shutdown: the only place that spawns tasks.
//!
//! `run_with_clock` reads as the gateway's life: open the spool, register
//! the devices, start the page, the sinks, the sources, the power monitor,
//! the observers and the LED; wait for a reason to stop; stop in the order
//! `stop.rs` numbers. Each group of tasks has its own tracker and stop
//! token ([`Tasks`]), so the order of the stop is the order of the groups.

mod stop;
mod tasks;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{Clock, KernelClock};
use crate::config::Config;
use crate::ids::GATEWAY_DEVICE;
use crate::model::now_ms;
use crate::power::Shutdown;
use crate::sink::influx::{InfluxCounters, InfluxSink};
use crate::sink::mqtt::{EventReport, MqttSink, RunInfo, SinkCounters, StopReason};
use crate::source::config::DeviceConfig;
use crate::source::{self, DeviceHandle};
use crate::spool::{Lane, LaneHandle, Spool, StartReport};
use crate::status::history::History;
use crate::status::StatusHub;
use crate::telemetry;
use tasks::Supervisor;

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

/// How long after start the pages only start-up used are handed back.
const TRIM_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// The daemon's memory settings (src/host/memory.rs): one malloc arena
/// from now on, and, [`TRIM_AFTER`] start, the program file's pages that
/// only start-up used handed back to the system. `wardgate run` calls it;
/// gateways that tests run in their own process do not.
pub fn settle_memory() {
    crate::host::memory::bound_arenas();
    tokio::spawn(async {
        tokio::time::sleep(TRIM_AFTER).await;
        let advised = crate::host::memory::trim();
        tracing::debug!(
            mib = advised / (1024 * 1024),
            "start-up over: program pages handed back"
        );
    });
}

/// The groups of tasks, each stopped by its own token in the order of
/// [`stop::shut_down`]: sources first, then the sinks, the spool's
/// flusher, the UPS that powers the Pi, the LED last.
struct Tasks {
    supervisor: Supervisor,
    /// The name of a supervised task that ended before its stop token.
    died: tokio::sync::mpsc::UnboundedReceiver<&'static str>,
    /// Sources, the dispatcher, the page and the observers.
    sources: TaskTracker,
    sources_stop: CancellationToken,
    /// The sinks.
    uplink: TaskTracker,
    sink_stop: CancellationToken,
    /// The spool's flusher.
    infra: TaskTracker,
    flusher_stop: CancellationToken,
    /// The source of the UPS that powers the Pi: on a stop for power its
    /// link must outlive the sinks, for the UPS command.
    ups: TaskTracker,
    ups_stop: CancellationToken,
    /// The LED, dark last so that it shows a stop for power to the end.
    led: TaskTracker,
    led_stop: CancellationToken,
}

impl Tasks {
    fn new() -> Tasks {
        let (died_tx, died) = tokio::sync::mpsc::unbounded_channel();
        Tasks {
            supervisor: Supervisor { died: died_tx },
            died,
            sources: TaskTracker::new(),
            sources_stop: CancellationToken::new(),
            uplink: TaskTracker::new(),
            sink_stop: CancellationToken::new(),
            infra: TaskTracker::new(),
            flusher_stop: CancellationToken::new(),
            ups: TaskTracker::new(),
            ups_stop: CancellationToken::new(),
            led: TaskTracker::new(),
            led_stop: CancellationToken::new(),
        }
    }

    /// A task of the sources' group, supervised.
    fn spawn_source(
        &self,
        name: &'static str,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        self.supervisor
            .spawn(&self.sources, name, &self.sources_stop, task);
    }
}

/// What the uplink's wiring hands on: to the observers, the power monitor
/// and the stop.
struct Uplink {
    counters: Arc<SinkCounters>,
    /// The MQTT sink's lane, for the power monitor's last delivery.
    mqtt_lane: LaneHandle,
    influx: Option<(LaneHandle, Arc<InfluxCounters>)>,
    /// Cancelled by the `restart` command.
    restart: CancellationToken,
    /// The offline status's reason: `power` when the power monitor stops us.
    stop_reason: StopReason,
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
    let (spool, report) = open_spool(&cfg, clock).await?;
    probe_gpio(&cfg)?;
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
        telemetry::report_notice(&cfg.telemetry_setup(), &gateway, n);
    }
    let devices = register_devices(&cfg, &spool, &status);

    let mut tasks = Tasks::new();
    let history = Arc::new(History::default());
    let web_addr = start_page(&cfg, &status, &history, &tasks).await;
    ready(&Running {
        status: status.clone(),
        spool: spool.clone(),
        web_addr,
    });
    tasks::notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(
        site = %cfg.site,
        devices = cfg.all_devices().len(),
        spool = %cfg.spool.path.display(),
        policy = ?cfg.spool.policy,
        "wardgate started"
    );

    tasks.supervisor.spawn(
        &tasks.infra,
        "spool flusher",
        &tasks.flusher_stop,
        spool.clone().run_flusher(tasks.flusher_stop.clone()),
    );
    let uplink = start_uplink(&cfg, &spool, &status, &gateway, &devices, &tasks)?;
    let mut handles = vec![gateway.clone()];
    let ups = start_sources(&cfg, devices, &tasks, &mut handles);
    let power_rx = start_power_monitor(&cfg, &ups, &gateway, &spool, &status, &uplink, &tasks);
    start_observers(
        &cfg, handles, gateway, &spool, &status, &uplink, history, &tasks,
    );
    start_led(&cfg, &status, &tasks);
    tasks.sources.close();
    tasks.led.close();

    let (died, power) = wait_for_stop(&cancel, &mut tasks, &uplink.restart, power_rx).await;
    stop::shut_down(&cfg, &spool, &tasks, &uplink, ups.as_ref(), died, power).await
}

/// Opens the spool on a blocking thread, a lane per sink (InfluxDB's only
/// when it is configured).
async fn open_spool(
    cfg: &Arc<Config>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(Arc<Spool>, StartReport)> {
    let spool_cfg = cfg.spool.clone();
    let site = cfg.site.clone();
    let mut lanes = vec![Lane::Mqtt];
    if cfg.influxdb.enabled() {
        lanes.push(Lane::Influx);
    }
    tokio::task::spawn_blocking(move || Spool::open_with_clock(&spool_cfg, &site, &lanes, clock))
        .await
        .context("opening the spool")?
        .with_context(|| format!("opening the spool at {}", cfg.spool.path.display()))
}

/// GPIO needs the Pi's GPIO chip: without it, a config that uses GPIO
/// does not start (clear message, no restart loop of half a gateway).
fn probe_gpio(cfg: &Config) -> anyhow::Result<()> {
    for dev in &cfg.devices {
        if let DeviceConfig::Gpio(g) = dev {
            source::gpio::probe(g)
                .with_context(|| format!("device {}: GPIO inputs cannot be used here", g.id))?;
        }
    }
    Ok(())
}

/// Every configured device is in the status from the start, with the
/// words its configuration gives its values.
fn register_devices(
    cfg: &Config,
    spool: &Arc<Spool>,
    status: &StatusHub,
) -> Vec<(DeviceConfig, DeviceHandle)> {
    cfg.all_devices()
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
            let labels = source::config::configured_labels(dev);
            if !labels.is_empty() {
                status.set_labels(dev.id(), labels);
            }
            (dev.clone(), h)
        })
        .collect()
}

/// The local page, when enabled: where it listens, or None (a page that
/// cannot bind is logged; the gateway runs on without it).
async fn start_page(
    cfg: &Config,
    status: &StatusHub,
    history: &Arc<History>,
    tasks: &Tasks,
) -> Option<std::net::SocketAddr> {
    if !cfg.web.enabled {
        return None;
    }
    match crate::status::web::bind(
        &cfg.web,
        status.subscribe(),
        history.clone(),
        tasks.sources_stop.clone(),
    )
    .await
    {
        Ok((addr, server)) => {
            tracing::info!(%addr, "local status page");
            tasks.spawn_source("web page", server);
            Some(addr)
        }
        Err(e) => {
            tracing::error!(error = %e, "local status page not started");
            None
        }
    }
}

/// The MQTT sink with the command dispatcher attached, and the InfluxDB
/// sink on its own lane (it never waits for MQTT, nor MQTT for it).
fn start_uplink(
    cfg: &Arc<Config>,
    spool: &Arc<Spool>,
    status: &StatusHub,
    gateway: &DeviceHandle,
    devices: &[(DeviceConfig, DeviceHandle)],
    tasks: &Tasks,
) -> anyhow::Result<Uplink> {
    let counters = Arc::new(SinkCounters::default());
    let lane = spool
        .lane(Lane::Mqtt)
        .context("the spool has no lane for the MQTT sink")?;
    let run_info = RunInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        boot_id: tasks::boot_id(),
        run_id: format!("{:016x}", rand::random::<u64>()),
        started_ms: now_ms(),
    };
    let g = gateway.clone();
    let report: EventReport =
        Arc::new(move |severity, code, message, values| g.event(severity, code, message, values));
    let restart = CancellationToken::new();
    let stop_reason = StopReason::default();
    let mqtt_lane = lane.clone();
    let (sink, dispatcher) = crate::command::attach(
        MqttSink::new(
            Arc::new(cfg.mqtt_setup()),
            lane,
            status.clone(),
            run_info.clone(),
            counters.clone(),
            report.clone(),
        )
        .with_stop_reason(stop_reason.clone()),
        crate::command::Parts {
            cfg: cfg.command_setup(),
            changes: cfg.clone(),
            stored_stats: crate::cli::spool_stats_json,
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
    tasks.spawn_source(
        "command dispatcher",
        dispatcher.run(tasks.sources_stop.clone()),
    );
    tasks.supervisor.spawn(
        &tasks.uplink,
        "MQTT sink",
        &tasks.sink_stop,
        sink.run(tasks.sink_stop.clone()),
    );
    let influx = spool.lane(Lane::Influx).map(|lane| {
        let c = Arc::new(InfluxCounters::default());
        let sink = InfluxSink::new(
            Arc::new(cfg.influx_setup()),
            lane.clone(),
            status.clone(),
            c.clone(),
            report,
        );
        tasks.supervisor.spawn(
            &tasks.uplink,
            "InfluxDB sink",
            &tasks.sink_stop,
            sink.run(tasks.sink_stop.clone()),
        );
        (lane, c)
    });
    tasks.uplink.close();
    Ok(Uplink {
        counters,
        mqtt_lane,
        influx,
        restart,
        stop_reason,
    })
}

/// One task per device. The UPS that powers the Pi (`[power] ups`) runs
/// in its own group, so that on a stop for power its link is still there
/// for the UPS command after the sinks have stopped (its port has one
/// owner: its source); its handle is returned.
fn start_sources(
    cfg: &Config,
    devices: Vec<(DeviceConfig, DeviceHandle)>,
    tasks: &Tasks,
    handles: &mut Vec<DeviceHandle>,
) -> Option<DeviceHandle> {
    let shared = source::Shared {
        spool_dir: cfg
            .spool
            .path
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| "/".into()),
        buses: Default::default(),
    };
    let power_ups = cfg.power.as_ref().map(|p| p.ups.clone());
    let mut ups_handle = None;
    for (dev, h) in devices {
        handles.push(h.clone());
        if power_ups.as_deref() == Some(dev.id()) {
            ups_handle = Some(h.clone());
            let stop = tasks.ups_stop.clone();
            tasks.ups.spawn(source::run(dev, h, shared.clone(), stop));
        } else {
            let stop = tasks.sources_stop.clone();
            tasks
                .sources
                .spawn(source::run(dev, h, shared.clone(), stop));
        }
    }
    tasks.ups.close();
    ups_handle
}

/// The power monitor, with `[power]`: watches the UPS's polls, decides,
/// and hands a shutdown over on the returned channel.
fn start_power_monitor(
    cfg: &Config,
    ups: &Option<DeviceHandle>,
    gateway: &DeviceHandle,
    spool: &Arc<Spool>,
    status: &StatusHub,
    uplink: &Uplink,
    tasks: &Tasks,
) -> Option<tokio::sync::oneshot::Receiver<Shutdown>> {
    let (Some(pcfg), Some(ups)) = (cfg.power.clone(), ups.clone()) else {
        return None;
    };
    let (power_tx, power_decided) = tokio::sync::oneshot::channel();
    status.update(|s| s.power = Some(crate::power::Monitor::initial_status(&pcfg)));
    let monitor = crate::power::Monitor {
        cfg: pcfg,
        ups,
        gateway: gateway.clone(),
        spool: spool.clone(),
        status: status.clone(),
        delivery: crate::power::Delivery {
            lane: uplink.mqtt_lane.clone(),
            counters: uplink.counters.clone(),
        },
    };
    tasks.spawn_source(
        "power monitor",
        monitor.run(tasks.sources_stop.clone(), power_tx),
    );
    Some(power_decided)
}

/// The tasks that watch and report: staleness of every device, the
/// gateway's own telemetry, the status refresher, systemd's watchdog and
/// the spool's notices.
#[allow(clippy::too_many_arguments)]
fn start_observers(
    cfg: &Config,
    handles: Vec<DeviceHandle>,
    gateway: DeviceHandle,
    spool: &Arc<Spool>,
    status: &StatusHub,
    uplink: &Uplink,
    history: Arc<History>,
    tasks: &Tasks,
) {
    let stop = &tasks.sources_stop;
    let notices_gateway = gateway.clone();
    tasks.spawn_source(
        "health monitor",
        tasks::health_monitor(handles, stop.clone()),
    );
    tasks.spawn_source(
        "gateway telemetry",
        telemetry::run(
            cfg.telemetry_setup(),
            gateway,
            status.clone(),
            spool.clone(),
            uplink.counters.clone(),
            stop.clone(),
        ),
    );
    tasks.spawn_source(
        "status refresher",
        tasks::status_refresher(
            status.clone(),
            spool.clone(),
            uplink.counters.clone(),
            uplink.influx.clone(),
            history,
            stop.clone(),
        ),
    );
    if let Some(period) = tasks::watchdog_period() {
        tasks.spawn_source(
            "watchdog",
            tasks::watchdog(period, spool.clone(), uplink.counters.clone(), stop.clone()),
        );
    }
    tasks.spawn_source(
        "spool notices",
        telemetry::spool_notices(
            cfg.telemetry_setup(),
            spool.clone(),
            notices_gateway,
            stop.clone(),
        ),
    );
}

/// The status LED, when configured. Not supervised: the LED gives up on a
/// write error by design, and a dark LED is no reason to stop delivering.
fn start_led(cfg: &Config, status: &StatusHub, tasks: &Tasks) {
    match crate::status::led::open(&cfg.led) {
        Some(Ok(led)) => {
            tasks.led.spawn(crate::status::led::run(
                led,
                status.subscribe(),
                tasks.led_stop.clone(),
            ));
        }
        Some(Err(e)) => tracing::warn!(
            error = %e,
            "no status LED (set led.backend = \"none\" if this box has none)"
        ),
        None => {}
    }
}

/// Runs until asked to stop, until a task that should run until then ends
/// (named in the first value: the gateway then stops cleanly all the same
/// and exits non-zero, so systemd restarts it), until `restart`, or until
/// the power monitor decides (the second value).
async fn wait_for_stop(
    cancel: &CancellationToken,
    tasks: &mut Tasks,
    restart: &CancellationToken,
    power_rx: Option<tokio::sync::oneshot::Receiver<Shutdown>>,
) -> (Option<&'static str>, Option<Shutdown>) {
    let power_wait = async {
        match power_rx {
            Some(rx) => rx.await.ok(),
            None => std::future::pending().await,
        }
    };
    let mut power = None;
    let died = tokio::select! {
        _ = cancel.cancelled() => None,
        Some(task) = tasks.died.recv() => Some(task),
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
    tasks::notify(&[sd_notify::NotifyState::Stopping]);
    (died, power)
}
