//! Wiring, supervision and shutdown: the only place that spawns tasks.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, GATEWAY_DEVICE};
use crate::model::{now_ms, Health, Severity, Values};
use crate::sink::mqtt::{EventReport, MqttSink, RunInfo, SinkCounters, SINK_NAME};
use crate::source::{self, DeviceHandle};
use crate::spool::{Notice, Spool, StartReport};
use crate::status::StatusHub;

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
    let cfg = Arc::new(cfg);
    let spool_cfg = cfg.spool.clone();
    let site = cfg.site.clone();
    let (spool, report) =
        tokio::task::spawn_blocking(move || Spool::open(&spool_cfg, &site, &[SINK_NAME]))
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
        cfg.gateway.telemetry_interval,
        spool.clone(),
        status.clone(),
    );
    report_start(&gateway, &report);
    // What the spool found while opening (degraded store, new epoch).
    for n in spool.take_notices() {
        report_notice(&cfg, &gateway, n);
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
        .lane(SINK_NAME)
        .context("the spool has no lane for the MQTT sink")?;
    let run_info = RunInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        boot_id: boot_id(),
        run_id: format!("{:016x}", rand::random::<u64>()),
        started_ms: now_ms(),
    };
    let g = gateway.clone();
    let report: EventReport = Arc::new(move |severity, code, message, values| {
        if let Err(e) = g.event(severity, code, message, values) {
            tracing::error!(code, error = %e, "could not record the event");
        }
    });
    let sink = MqttSink::new(
        cfg.clone(),
        lane,
        status.clone(),
        run_info,
        counters.clone(),
        report,
    );
    supervisor.spawn(
        &uplink,
        "MQTT sink",
        &sink_stop,
        sink.run(sink_stop.clone()),
    );
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
    for (dev, h) in devices {
        handles.push(h.clone());
        sources.spawn(source::run(dev, h, shared.clone(), sources_stop.clone()));
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
        gateway_telemetry(
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
        spool_notices(
            cfg.clone(),
            spool.clone(),
            notices_gateway,
            sources_stop.clone(),
        ),
    );
    let led: Option<Result<Box<dyn crate::status::led::Led>, _>> = match cfg.led.backend {
        crate::config::LedBackend::None => None,
        crate::config::LedBackend::Sysfs => Some(
            crate::status::led::SysfsLed::open(&cfg.led.path, cfg.led.active_low)
                .map(|l| Box::new(l) as Box<dyn crate::status::led::Led>),
        ),
        crate::config::LedBackend::Gpio => Some(
            crate::status::led::GpioLed::open(
                cfg.led.pin.map(|p| p.get()).unwrap_or_default(),
                cfg.led.active_low,
            )
            .map(|l| Box::new(l) as Box<dyn crate::status::led::Led>),
        ),
    };
    match led {
        Some(Ok(led)) => {
            // Not supervised: the LED gives up on a write error by design,
            // and a dark LED is no reason to stop delivering.
            sources.spawn(crate::status::led::run(
                led,
                status.subscribe(),
                sources_stop.clone(),
            ));
        }
        Some(Err(e)) => tracing::warn!(
            error = %e,
            "no status LED (set led.backend = \"none\" if this box has none)"
        ),
        None => {}
    }
    sources.close();

    // Runs until asked to stop, or until a task that should run until then
    // ends: then stops cleanly all the same and exits non-zero, so systemd
    // restarts the gateway.
    let died = tokio::select! {
        _ = cancel.cancelled() => None,
        Some(task) = died.recv() => Some(task),
    };
    tracing::info!("stopping");
    notify(&[sd_notify::NotifyState::Stopping]);

    // 1. No new readings.
    sources_stop.cancel();
    if tokio::time::timeout(STOP_SOURCES, sources.wait())
        .await
        .is_err()
    {
        tracing::warn!("sources did not stop in time");
    }
    // 2. Everything unacknowledged goes to disk before anything else.
    let s = spool.clone();
    match tokio::task::spawn_blocking(move || s.flush(true)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "final spool write failed"),
        Err(e) => tracing::error!(error = %e, "final spool write task failed"),
    }
    // 3. Offline status and disconnect.
    sink_stop.cancel();
    if tokio::time::timeout(STOP_SINK, uplink.wait())
        .await
        .is_err()
    {
        tracing::warn!("MQTT sink did not stop in time");
    }
    flusher_stop.cancel();
    infra.close();
    infra.wait().await;
    // 4. Acknowledged rows deleted, sequence positions recorded, marked clean.
    // A store that cannot be written is not a failed stop: what could not be
    // kept was counted and reported while running.
    let s = spool.clone();
    match tokio::task::spawn_blocking(move || s.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "the spool could not keep everything at stop"),
        Err(e) => tracing::error!(error = %e, "closing the spool failed"),
    }
    tracing::info!("stopped");
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

/// Tells the operations centre what opening the spool found.
fn report_start(gateway: &DeviceHandle, report: &StartReport) {
    if let Some((aside, reason)) = &report.moved_aside {
        let mut v = Values::new();
        v.set("spool.moved_to", aside.display().to_string());
        v.set("spool.reason", reason.clone());
        let msg = format!(
            "The spool was unreadable ({reason}) and was moved to {}; a new one was started. Readings in it were not sent.",
            aside.display()
        );
        if let Err(e) = gateway.event(Severity::Critical, "spool.corrupt", &msg, v) {
            tracing::error!(error = %e, "could not record the spool event");
        }
    }
    if !report.resumed_unclean.is_empty() {
        let mut v = Values::new();
        let mut parts = Vec::new();
        for r in &report.resumed_unclean {
            let leaf = match r.kind {
                crate::model::Kind::Sample => "samples",
                crate::model::Kind::Event => "events",
            };
            v.num(&format!("seq_resumed.{}.{leaf}", r.device), r.at as f64);
            match r.last_used {
                Some(u) => {
                    v.num(&format!("seq_last_used.{}.{leaf}", r.device), u as f64);
                    parts.push(format!(
                        "{} {leaf}: last known used {u}, resumes at {}",
                        r.device, r.at
                    ));
                }
                None => parts.push(format!("{} {leaf}: resumes at {}", r.device, r.at)),
            }
        }
        let msg = format!(
            "wardgate did not stop cleanly last time (power cut or crash). {}. Numbers after the last known used one and before the resume point that never arrive were either never used or were readings lost in the stop (at most those of the last spool.spill_after + spool.commit_interval).",
            parts.join("; ")
        );
        if let Err(e) = gateway.event(Severity::Warning, "gateway.unclean_stop", &msg, v) {
            tracing::error!(error = %e, "could not record the restart event");
        }
    }
}

/// Turns what the spool reports into gateway events (shown on the page and
/// sent to the operations centre like any event).
async fn spool_notices(
    cfg: Arc<Config>,
    spool: Arc<Spool>,
    gateway: DeviceHandle,
    cancel: CancellationToken,
) {
    loop {
        let notices = tokio::select! {
            _ = cancel.cancelled() => return,
            n = spool.next_notices() => n,
        };
        for n in notices {
            report_notice(&cfg, &gateway, n);
        }
    }
}

fn report_notice(cfg: &Config, gateway: &DeviceHandle, n: Notice) {
    let mut v = Values::new();
    let (severity, code, msg, vi) = match n {
        Notice::CorruptRecords { count, reason } => {
            v.num("spool.records", count as f64);
            v.set("spool.reason", reason.clone());
            (
                Severity::Warning,
                "spool.corrupt_record",
                format!(
                    "{count} damaged record(s) in the spool were dropped, not sent ({reason})."
                ),
                format!("{count} bản ghi bị hỏng trong bộ nhớ đệm đã bị bỏ, không gửi."),
            )
        }
        Notice::Degraded { reason, detail } => {
            v.set("spool.reason", reason);
            v.set("spool.detail", detail.clone());
            let vi = match reason {
                "read_only" => "thẻ nhớ chỉ đọc",
                "permission_denied" => "không có quyền ghi thư mục lưu trữ",
                "disk_full" => "đĩa đầy",
                _ => "lỗi ghi đĩa",
            };
            (
                Severity::Critical,
                "spool.degraded",
                format!(
                    "Readings cannot be kept on the card: {} ({detail}). They are sent from memory; if the link drops they are lost. Tried again every few seconds.",
                    crate::spool::degraded_words(reason)
                ),
                format!("Không lưu được dữ liệu vào thẻ nhớ: {vi}. Dữ liệu vẫn được gửi từ bộ nhớ."),
            )
        }
        Notice::Restored { degraded_for, lost } => {
            v.num("spool.degraded_for", degraded_for.as_secs() as f64);
            v.num("spool.lost", lost as f64);
            (
                Severity::Info,
                "spool.restored",
                format!(
                    "The spool can be written again after {}; {lost} reading(s) could not be kept meanwhile.",
                    humantime::format_duration(Duration::from_secs(degraded_for.as_secs()))
                ),
                "Đã lưu được dữ liệu vào thẻ nhớ trở lại.".to_owned(),
            )
        }
        Notice::Quarantined {
            device,
            kind,
            seq,
            bytes,
            reason,
        } => {
            v.set("record.device", device.clone());
            v.set(
                "record.kind",
                match kind {
                    crate::model::Kind::Sample => "samples",
                    crate::model::Kind::Event => "events",
                },
            );
            v.num("record.seq", seq as f64);
            v.num("record.bytes", bytes as f64);
            v.num(
                "mqtt.max_packet_size",
                cfg.mqtt.max_packet_size.as_u64() as f64,
            );
            (
                Severity::Warning,
                "spool.quarantined",
                format!("A record of {device} (seq {seq}, {bytes} bytes) was set aside and will not be sent: {reason}."),
                format!("Một bản ghi của {device} đã bị để riêng, không gửi được."),
            )
        }
        Notice::SequenceReset {
            epoch,
            previous,
            reason,
            first_start,
        } => {
            v.set("epoch", crate::spool::positions::epoch_hex(epoch));
            if let Some(p) = previous {
                v.set("previous_epoch", crate::spool::positions::epoch_hex(p));
            }
            v.set("reason", reason.clone());
            (
                if first_start {
                    Severity::Info
                } else {
                    Severity::Critical
                },
                "gateway.sequence_reset",
                format!(
                    "Sequence numbers start again at 0 in epoch {}: {reason}.",
                    crate::spool::positions::epoch_hex(epoch)
                ),
                "Số thứ tự dữ liệu bắt đầu lại từ 0.".to_owned(),
            )
        }
    };
    v.set("message.vi", vi);
    if let Err(e) = gateway.event(severity, code, &msg, v) {
        tracing::error!(error = %e, code, "could not record the spool event");
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
            if let Err(e) = h.check_stale() {
                tracing::error!(device = h.id(), error = %e, "health event not kept");
            }
        }
    }
}

/// The gateway's own health on `{prefix}/{site}/gateway/telemetry`.
async fn gateway_telemetry(
    cfg: Arc<Config>,
    gateway: DeviceHandle,
    status: StatusHub,
    spool: Arc<Spool>,
    counters: Arc<SinkCounters>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(cfg.gateway.telemetry_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_msgs = 0u64;
    let mut last_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let snap = status.get();
        let st = spool.stats();
        let c = spool.counters();
        let mut v = Values::new();
        v.num("spool.depth", st.disk_rows as f64);
        v.num("spool.bytes", st.disk_bytes as f64);
        v.num("spool.memory", st.memory as f64);
        v.num("spool.dropped", st.dropped as f64);
        v.num("spool.write_errors", st.write_errors as f64);
        v.num("spool.spilled", c.spilled.load(Ordering::Relaxed) as f64);
        v.set("spool.degraded", st.degraded.is_some());
        for r in crate::spool::DropReason::ALL {
            v.num(
                &format!("spool.dropped.{}", r.as_str()),
                c.dropped(r) as f64,
            );
        }
        v.set("mqtt.connected", snap.uplink.connected);
        let up = if snap.uplink.connected {
            ((now_ms() - snap.uplink.since_ms).max(0) / 1000) as f64
        } else {
            0.0
        };
        v.num("mqtt.link_uptime", up);
        v.num("mqtt.reconnects", snap.uplink.reconnects as f64);
        v.num(
            "mqtt.stalls",
            counters.stalls.load(Ordering::Relaxed) as f64,
        );
        let msgs = counters.messages_acked.load(Ordering::Relaxed);
        let dt = last_at.elapsed().as_secs_f64().max(0.001);
        v.num(
            "mqtt.publish_rate",
            ((msgs - last_msgs) as f64 / dt * 10.0).round() / 10.0,
        );
        last_msgs = msgs;
        last_at = tokio::time::Instant::now();
        v.num(
            "mqtt.records_acked",
            counters.records_acked.load(Ordering::Relaxed) as f64,
        );
        v.num(
            "gateway.uptime",
            ((now_ms() - snap.started_ms).max(0) / 1000) as f64,
        );
        for (id, d) in &snap.devices {
            if id != GATEWAY_DEVICE {
                v.set(&format!("device.{id}.health"), d.health.word());
                v.num(
                    &format!("device.{id}.errors"),
                    d.errors.values().sum::<u64>() as f64,
                );
            }
        }
        if let Err(e) = gateway.sample(v) {
            tracing::error!(error = %e, "gateway telemetry not kept");
        }
    }
}

/// Copies counters into the snapshot once a second.
async fn status_refresher(
    status: StatusHub,
    spool: Arc<Spool>,
    counters: Arc<SinkCounters>,
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
        status.update(|s| {
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
    let mut tick = tokio::time::interval(period);
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
