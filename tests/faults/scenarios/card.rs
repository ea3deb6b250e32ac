//! The SD card failing under the spool: full during an outage, read-only
//! at start, turning read-only while the gateway runs.

use std::time::{Duration, Instant};

use crate::accounting::{account, CRASH_WINDOW_SPILL_MS};
use crate::disk::{fill_up, free_bytes, Mount};
use crate::rig::{with_expectation, Load, Outcome, Rig};
use crate::util::{now_ms, sleep_ms};
use crate::Opts;

/// A spool on an 8 MiB tmpfs that fills up during an outage: after 6 s of
/// outage with room on the card (its first readings are then older than
/// the loss bound and had to be written: they must arrive), a filler file
/// leaves 256 KiB, then takes whatever is freed again. Expectations: live
/// readings flow while the disk is full once the broker is back; SIGTERM
/// exits 0; a restart with the disk still full delivers live readings; no
/// re-send storm: acknowledged rows that could not be deleted are never sent
/// again in the run that could not delete them, only once more by each later
/// run. The scenario has three runs with the disk full (the outage run, the
/// restart, and the drain run that starts after a kill -9), and a record in
/// flight when a link drops is sent again: so no record may arrive more than
/// 3 + 1 = 4 times (a spool that re-sends the backlog on every reconnect
/// goes far past it; the broker's own redeliveries to the recorder after its restart are not
/// the gateway's copies and are not counted, see [`crate::recorder::Recorder`]);
/// a `spool.degraded` event with reason `disk_full`; drops declared.
pub async fn disk_full(o: &Opts) -> Outcome {
    let base = tempfile::tempdir().expect("temp dir");
    let mnt_dir = base.path().join("spool");
    let mnt = match Mount::tmpfs(&mnt_dir, "8m") {
        Ok(m) => m,
        Err(e) => return Outcome::skip("disk_full", format!("cannot mount tmpfs: {e}")),
    };
    let mut rig = Rig::new("disk_full", o, Some(&mnt.dir)).await;
    let from = rig.rec.len();
    rig.start(Load::Heavy);
    if rig
        .live_after(from, Duration::from_secs(20))
        .await
        .is_none()
    {
        rig.fail("no live reading after start".into());
    }
    // An outage with room on the card first.
    rig.broker.stop();
    let outage = Instant::now();
    sleep_ms(o.pick(6000, 10000)).await;
    let before = free_bytes(&mnt.dir);
    if before < 512 << 10 {
        rig.fail(format!(
            "the card filled up by itself ({} KiB free after {:.1} s of outage) before the harness filled it: when it became unwritable is unknown",
            before >> 10,
            outage.elapsed().as_secs_f64()
        ));
    }
    // Leave ~256 KiB for the spool to fill.
    let fill_began = now_ms();
    let filled_from = Instant::now();
    let filler = mnt.dir.join("filler");
    let _ = std::fs::write(
        &filler,
        vec![0u8; before.saturating_sub(256 << 10) as usize],
    );
    let deadline = filled_from + Duration::from_secs(o.pick(30, 90));
    while free_bytes(&mnt.dir) > 16 << 10 && Instant::now() < deadline {
        sleep_ms(100).await;
    }
    let full = free_bytes(&mnt.dir) <= 16 << 10;
    rig.note(format!(
        "disk {} {:.1} s after the filler ({:.1} s into the outage; {} KiB free before it)",
        if full { "filled up" } else { "did NOT fill up" },
        filled_from.elapsed().as_secs_f64(),
        outage.elapsed().as_secs_f64(),
        before >> 10
    ));
    sleep_ms(o.pick(2000, 10000)).await;
    // The broker returns, the disk stays full: live readings must flow.
    let idx = rig.rec.len();
    rig.broker.spawn();
    let back = Instant::now();
    match rig
        .live_after_reconnect(idx, back, Duration::from_secs(15))
        .await
    {
        Ok(secs) => rig.note(format!("reconnected {secs:.1} s after the broker's return")),
        Err(e) => rig.fail(format!("disk full: {e}")),
    }
    sleep_ms(3000).await;
    let live = {
        let recs = rig.rec.lock();
        recs[idx..]
            .iter()
            .filter(|r| r.is_live("ups1") && r.at >= back)
            .count()
    };
    rig.note(format!(
        "{live} live ups1 messages in {:.0} s with the disk full",
        back.elapsed().as_secs_f64()
    ));
    // Whatever the gateway freed meanwhile is taken again.
    fill_up(&mnt.dir, "filler2");
    rig.term_expect_0(Duration::from_secs(10), "SIGTERM with the disk full")
        .await;
    // What the stop that could not be recorded may lose: what was only in
    // memory, readings taken from the loss bound before the fill began
    // (the youngest were not due on the card yet) to the stop.
    let stop = rig.gw.stops.last().copied().unwrap_or_else(now_ms);
    rig.degraded
        .push((fill_began - CRASH_WINDOW_SPILL_MS, stop));
    // Start again, disk still full.
    fill_up(&mnt.dir, "filler3");
    let idx = rig.rec.len();
    rig.start(Load::Heavy);
    if rig.live_after(idx, Duration::from_secs(15)).await.is_none() {
        let code = rig.gw.exit_code();
        let tail = rig.gw.log_tail(2);
        rig.fail(format!(
            "restart with the disk full: no live reading within 15 s (exit {code:?}; log: {tail})"
        ));
    }
    rig.cycles = rig.gw.runs;
    let dups_before_free = {
        let recs = rig.rec.lock();
        account(&recs, &rig.known()).duplicates
    };
    rig.note(format!(
        "{dups_before_free} duplicates while the disk was full"
    ));
    // Run 2's own event: at start when its positions cannot be written,
    // else at its first failed commit, about a second after start, later
    // on a loaded machine: the same 15 s as the waits above.
    let degraded = rig
        .event_seen(idx, "spool.degraded", Duration::from_secs(15))
        .await;
    match &degraded {
        Some(v) => rig.note(format!(
            "spool.degraded event: reason {}",
            v["spool.reason"]
        )),
        None => rig.fail("no spool.degraded event while the disk was full".into()),
    }
    for f in ["filler", "filler2", "filler3"] {
        let _ = std::fs::remove_file(mnt.dir.join(f));
    }
    // The restart run ends with a kill -9 (the drain would stop it
    // cleanly): the run after it is the third that finds the rows it could
    // not delete. It ran with the card full from its start: all it read was
    // only in memory.
    let restarted = rig.gw.starts_wall.last().copied().unwrap_or(0);
    rig.gw.kill9();
    rig.degraded.push((restarted, now_ms()));
    rig.drain().await;
    let starts = rig.gw.starts.clone();
    let out = rig.outcome();
    drop(mnt);
    with_expectation(out, |a| {
        (a.max_copies > 4).then(|| {
            format!(
                "re-send storm: a record arrived {} times ({}; {} duplicates in all; copies {})",
                a.max_copies,
                a.max_copies_example,
                a.duplicates,
                copies_by_run(&a.max_copies_at, &starts)
            )
        })
    })
}

/// Says which gateway run each copy arrived in, and when: "run 1 +12.3 s
/// historical, ...".
pub fn copies_by_run(copies: &[(Instant, bool)], starts: &[Instant]) -> String {
    copies
        .iter()
        .map(|(at, hist)| {
            let run = starts.iter().rposition(|s| s <= at).unwrap_or(0);
            let since = starts
                .get(run)
                .map(|s| at.duration_since(*s).as_secs_f64())
                .unwrap_or(0.0);
            let what = if *hist { "historical" } else { "live" };
            format!("run {} +{since:.1} s {what}", run + 1)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The spool's file system (a tmpfs holding a backlog) is remounted
/// read-only before the gateway starts. Expectations: live readings flow, a
/// `spool.degraded` event with reason `read_only`, SIGTERM exits 0, the
/// backlog arrives once the file system is writable again.
///
/// The tails: the run that leaves the backlog is killed 6 s into its
/// outage, longer than the loss bound, so the next run's unclean stop
/// declares its last numbers (in the envelope of the read-only run's own
/// epoch: see the accounting) and every reading older than the bound must
/// arrive. A run that starts read-only counts in an epoch of its own that
/// no later run resumes: its newest readings can be checked only if the
/// card comes back while it runs. So the first read-only run is stopped
/// with the card still read-only (SIGTERM exits 0; what it had only in
/// memory is the loss the README allows, and nothing can show which
/// numbers it was), and the second gets the card back, puts its epoch on
/// disk (`spool.restored`), sends the backlog, is stopped in an outage
/// (its newest readings must reach the card) and ends like every scenario
/// ([`Rig::drain`]): the closing run resumes that epoch after a clean
/// stop, so its first numbers check the second run's tail.
pub async fn readonly_start(o: &Opts) -> Outcome {
    let base = tempfile::tempdir().expect("temp dir");
    let mnt = match Mount::tmpfs(&base.path().join("spool"), "32m") {
        Ok(m) => m,
        Err(e) => return Outcome::skip("readonly_start", format!("cannot mount tmpfs: {e}")),
    };
    let mut rig = Rig::new("readonly_start", o, Some(&mnt.dir)).await;
    // A first run leaves a backlog (an outage), killed after the bound.
    let idx = rig.rec.len();
    rig.start(Load::Normal);
    if rig.live_after(idx, Duration::from_secs(20)).await.is_none() {
        rig.fail("no live reading after start".into());
    }
    rig.broker.stop();
    sleep_ms(6000).await;
    if let Some(code) = rig.gw.exited() {
        let tail = rig.gw.log_tail(3);
        rig.fail(format!("first run exited by itself ({code:?}): {tail}"));
    }
    rig.gw.kill9();
    if let Err(e) = mnt.remount("ro") {
        return Outcome::skip("readonly_start", format!("cannot remount read-only: {e}"));
    }
    rig.broker.spawn();
    // Read-only from its start to its stop.
    let idx = rig.rec.len();
    rig.start(Load::Normal);
    if rig.live_after(idx, Duration::from_secs(15)).await.is_none() {
        let code = rig.gw.exit_code();
        let tail = rig.gw.log_tail(2);
        rig.fail(format!(
            "read-only spool at start: no live reading within 15 s (exit {code:?}; log: {tail})"
        ));
    }
    rig.expect_degraded(idx, "read_only").await;
    // A moment of readings kept only in memory.
    sleep_ms(1000).await;
    if rig.gw.running() {
        rig.term_expect_0(Duration::from_secs(10), "SIGTERM, read-only spool")
            .await;
    }
    // Read-only at start, the card back while it runs.
    let idx = rig.rec.len();
    rig.start(Load::Normal);
    if rig.live_after(idx, Duration::from_secs(15)).await.is_none() {
        rig.fail("second read-only start: no live reading within 15 s".into());
    }
    rig.expect_degraded(idx, "read_only").await;
    if let Err(e) = mnt.remount("rw") {
        rig.fail(format!("remount rw: {e}"));
    }
    // The store is tried again every 5 s.
    if rig
        .event_seen(idx, "spool.restored", Duration::from_secs(20))
        .await
        .is_none()
    {
        rig.fail("the card writable again: no spool.restored within 20 s".into());
    }
    // Its newest readings have to reach the card: a clean stop in an
    // outage loses nothing.
    rig.broker.stop();
    sleep_ms(1500).await;
    rig.term_expect_0(
        Duration::from_secs(10),
        "SIGTERM in an outage, the card writable again",
    )
    .await;
    rig.cycles = rig.gw.runs;
    let out = rig.finish().await;
    drop(mnt);
    out
}

/// The spool's file system turns read-only under the running gateway (ext4
/// `errors=remount-ro` after an I/O error, as a worn SD card does), during
/// an outage. Expectations as for `readonly_start`; readings not kept
/// meanwhile must be declared.
pub async fn readonly_running(o: &Opts) -> Outcome {
    let base = tempfile::tempdir().expect("temp dir");
    let mnt = match Mount::ext4(
        &base.path().join("spool"),
        &base.path().join("card.img"),
        32,
    ) {
        Ok(m) => m,
        Err(e) => {
            return Outcome::skip(
                "readonly_running",
                format!("cannot mount an ext4 loop image: {e}"),
            )
        }
    };
    let mut rig = Rig::new("readonly_running", o, Some(&mnt.dir)).await;
    let idx = rig.rec.len();
    rig.start(Load::Normal);
    if rig.live_after(idx, Duration::from_secs(20)).await.is_none() {
        rig.fail("no live reading after start".into());
    }
    // An outage so that readings must go to disk, then the card fails.
    rig.broker.stop();
    sleep_ms(1500).await;
    if let Err(e) = mnt.fail_to_read_only() {
        return Outcome::skip("readonly_running", e);
    }
    sleep_ms(o.pick(3000, 10000)).await;
    let idx = rig.rec.len();
    rig.broker.spawn();
    let back = Instant::now();
    if let Err(e) = rig
        .live_after_reconnect(idx, back, Duration::from_secs(15))
        .await
    {
        let code = rig.gw.exit_code();
        let tail = rig.gw.log_tail(2);
        rig.fail(format!(
            "read-only spool while running: {e} (exit {code:?}; log: {tail})"
        ));
    }
    rig.expect_degraded(0, "read_only").await;
    if rig.gw.running() {
        rig.term_expect_0(Duration::from_secs(10), "SIGTERM, read-only spool")
            .await;
    } else {
        let code = rig.gw.exit_code();
        rig.fail(format!("gateway ended by itself ({code:?})"));
    }
    rig.gw.kill9();
    if let Err(e) = mnt.repair() {
        rig.fail(format!("repairing the card image: {e}"));
    }
    let out = rig.finish().await;
    drop(mnt);
    out
}
