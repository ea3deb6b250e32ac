//! Storage faults and bad records, each against a real mosquitto and the
//! spawned binary: the spool file and its sequence numbers (file.rs),
//! bad records in it (records.rs), a card that cannot be written
//! (card.rs). Here: the helpers they share (a damaged backlog, the
//! gateway's own events about its spool).

mod card;
mod file;
mod records;

use std::time::Duration;

use serde_json::Value;

use crate::common::storage::*;
use crate::common::*;

/// A backlog of a few hundred records drains in well under a second; the
/// deadline is the generous one all waits use.
const BACKLOG: Duration = WAIT;

/// The usual load: a UPS with events and a sensor with events.
fn two_devices() -> String {
    format!(
        "{}{}",
        sim("ups1", "10ms", "event_every = 25"),
        sim("env1", "20ms", "profile = \"sensor\"\nevent_every = 20")
    )
}

/// Waits until every backlog row except `except` has arrived and both
/// devices delivered live samples past the backlog; then the caller asserts
/// details. Returns quietly on timeout so the caller's assertions say what
/// is missing.
async fn wait_backlog_and_live(
    gw: &mut Process,
    sub: &Subscriber,
    rows: &[SpoolRow],
    except: &[i64],
    limit: Duration,
) {
    let ups_top = max_sample_seq(rows, "ups1");
    let env_top = max_sample_seq(rows, "env1");
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline && gw.exited().is_none() {
        let live = sub.seqs("ups1").iter().any(|s| *s > ups_top + 20)
            && sub.seqs("env1").iter().any(|s| *s > env_top + 10);
        if live && missing_backlog(sub, rows, except).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts every backlog row but `except` arrived, and live samples of
/// both devices past the backlog.
fn assert_backlog_and_live(gw: &Process, sub: &Subscriber, rows: &[SpoolRow], except: &[i64]) {
    let missing = missing_backlog(sub, rows, except);
    assert!(
        missing.is_empty(),
        "{} of {} backlog records never arrived (first 10: {:?}); gateway events: {:?}; log tail:\n{}",
        missing.len(),
        rows.len() - except.len(),
        &missing[..missing.len().min(10)],
        gateway_codes(sub),
        gw.log_tail()
    );
    for (dev, top) in [
        ("ups1", max_sample_seq(rows, "ups1")),
        ("env1", max_sample_seq(rows, "env1")),
    ] {
        let live_after = sub.seqs(dev).iter().filter(|s| **s > top).count();
        assert!(
            live_after >= 5,
            "{dev}: only {live_after} samples after the backlog (seq > {top}) arrived; log tail:\n{}",
            gw.log_tail()
        );
    }
}

fn spool_event_values(sub: &Subscriber, code: &str) -> Vec<Value> {
    gateway_events(sub, code)
        .into_iter()
        .map(|e| e["values"].clone())
        .collect()
}

/// The shape of the damaged-row tests: a backlog of [`two_devices`] on
/// the card, damaged by `damage` (which returns the ids of the rows it
/// damaged), then the broker back and the gateway started. Waits until the
/// rest of the backlog and live readings arrived and `spool.dropped.corrupt`
/// reached `dropped`, then asserts the gateway runs, every message is
/// valid, everything but the damaged rows arrived, `spool.corrupt_record`
/// was raised and `spool.dropped.corrupt` counts at least `dropped`. The
/// caller asserts what is particular to its damage.
async fn damaged_backlog(
    what: &str,
    dropped: f64,
    damage: impl FnOnce(&rusqlite::Connection, &[SpoolRow]) -> Vec<i64>,
) -> (Rig, Process, Vec<SpoolRow>, Vec<i64>) {
    let devices = two_devices();
    let mut rig = Rig::with_devices(&devices).await;
    rig.make_backlog(Duration::from_secs(3)).await;
    let conn = open_spool(&rig.spool);
    let rows = spool_rows(&conn);
    let victims = damage(&conn, &rows);
    drop(conn);

    rig.broker.restart();
    let mut gw = rig.start();
    let sub = &rig.sub;
    wait_backlog_and_live(&mut gw, sub, &rows, &victims, BACKLOG).await;
    // The event comes first; the counter rides on the next gateway
    // telemetry (every second here).
    let _ = wait_for(WAIT, || {
        !gateway_events(sub, "spool.corrupt_record").is_empty()
            && gateway_max(sub, "spool.dropped.corrupt", 0) >= Some(dropped)
    })
    .await;
    gw.assert_running(&format!("after the {what}"));
    sub.assert_all_valid();
    assert_backlog_and_live(&gw, sub, &rows, &victims);
    assert!(
        !spool_event_values(sub, "spool.corrupt_record").is_empty(),
        "no spool.corrupt_record event after the {what}; gateway events: {:?}",
        gateway_codes(sub)
    );
    assert!(
        gateway_max(sub, "spool.dropped.corrupt", 0) >= Some(dropped),
        "the {what} counted in spool.dropped.corrupt (>= {dropped}); last: {}",
        last_spool_values(sub)
    );
    (rig, gw, rows, victims)
}
