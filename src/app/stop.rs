//! The clean stop, in numbered steps: nothing read is lost, the broker
//! hears why, the spool is at rest before the UPS is told anything, and on
//! a stop for power the Pi is powered off last.

use std::sync::Arc;

use crate::config::Config;
use crate::power::Shutdown;
use crate::source::DeviceHandle;
use crate::spool::Spool;

use super::{Tasks, Uplink, STOP_SINK, STOP_SOURCES};

/// Stops every group in order; the result is the gateway's exit: an error
/// when a task died, when `restart` was asked (`RestartRequested`), or
/// when a stop for power could neither power off nor tell the UPS.
pub(super) async fn shut_down(
    cfg: &Config,
    spool: &Arc<Spool>,
    tasks: &Tasks,
    uplink: &Uplink,
    ups: Option<&DeviceHandle>,
    died: Option<&'static str>,
    power: Option<Shutdown>,
) -> anyhow::Result<()> {
    stop_sources(tasks, power.is_some()).await;
    flush(spool).await;
    stop_sinks(tasks, uplink, power.is_some()).await;
    close(spool).await;
    let ups_told = tell_ups(cfg, ups, power.is_some()).await;
    tasks.ups_stop.cancel();
    if tokio::time::timeout(STOP_SOURCES, tasks.ups.wait())
        .await
        .is_err()
    {
        tracing::warn!("the UPS source did not stop in time");
    }
    tracing::info!("stopped");
    tasks.led_stop.cancel();
    tasks.led.wait().await;
    // Step 5: on a stop for power, the Pi is powered off (the outcome is logged).
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
    if uplink.restart.is_cancelled() && died.is_none() {
        return Err(crate::command::RestartRequested.into());
    }
    match died {
        Some(task) => Err(anyhow::anyhow!(
            "{task} ended unexpectedly; stopped so that the service manager restarts wardgate"
        )),
        None => Ok(()),
    }
}

/// Step 1: no new readings. On a stop for power the UPS that powers the Pi
/// keeps its link for step 4b (its last readings are kept at step 4).
async fn stop_sources(tasks: &Tasks, for_power: bool) {
    tasks.sources_stop.cancel();
    if !for_power {
        tasks.ups_stop.cancel();
    }
    let stopped = async {
        tasks.sources.wait().await;
        if !for_power {
            tasks.ups.wait().await;
        }
    };
    if tokio::time::timeout(STOP_SOURCES, stopped).await.is_err() {
        tracing::warn!("sources did not stop in time");
    }
}

/// Step 2: everything unacknowledged goes to disk before anything else.
async fn flush(spool: &Arc<Spool>) {
    let s = spool.clone();
    match tokio::task::spawn_blocking(move || s.flush(true)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "final spool write failed"),
        Err(e) => tracing::error!(error = %e, "final spool write task failed"),
    }
}

/// Step 3: offline status (`reason` power on a stop for power) and disconnect;
/// then the spool's flusher stops.
async fn stop_sinks(tasks: &Tasks, uplink: &Uplink, for_power: bool) {
    if for_power {
        uplink.stop_reason.set("power");
    }
    tasks.sink_stop.cancel();
    if tokio::time::timeout(STOP_SINK, tasks.uplink.wait())
        .await
        .is_err()
    {
        tracing::warn!("a sink did not stop in time");
    }
    tasks.flusher_stop.cancel();
    tasks.infra.close();
    tasks.infra.wait().await;
}

/// Step 4: acknowledged rows deleted, sequence positions recorded, marked clean.
/// A store that cannot be written is not a failed stop: what could not be
/// kept was counted and reported while running. On a stop for power this
/// comes before the UPS is told anything: once told, it may cut the power
/// after `ups_off_delay`, and the card must be at rest by then.
async fn close(spool: &Arc<Spool>) {
    let s = spool.clone();
    match tokio::task::spawn_blocking(move || s.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "the spool could not keep everything at stop"),
        Err(e) => tracing::error!(error = %e, "closing the spool failed"),
    }
}

/// Step 4b: on a stop for power: the UPS is told, over its own link (its
/// source still runs; what it reads now is not kept), to switch off after
/// `ups_off_delay` and on again with the mains. True when it took the
/// command.
async fn tell_ups(cfg: &Config, ups: Option<&DeviceHandle>, for_power: bool) -> bool {
    let (true, Some(pcfg), Some(ups)) = (for_power, &cfg.power, ups) else {
        return false;
    };
    let wait = cfg
        .devices
        .iter()
        .find(|d| d.id() == pcfg.ups)
        .map(crate::power::command_wait)
        .unwrap_or(crate::power::UPS_COMMAND_WAIT);
    crate::power::ups_command(pcfg, ups, wait).await.is_ok()
}
