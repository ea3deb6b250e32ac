//! The supervisor driven through a fake device on paused tokio time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::model::{Health, Values};
use crate::source::tap;
use crate::status::StatusHub;

/// What the fake device does, changed by the test while it runs.
#[derive(Debug, Default)]
struct Script {
    open_ok: bool,
    answering: bool,
    /// A poll that never returns (a hung link).
    hang: bool,
    opens: Vec<Instant>,
    polls: u32,
}

struct Fake(Arc<Mutex<Script>>);

impl Device for Fake {
    type Conn = ();

    async fn open(&mut self, _h: &DeviceHandle) -> Result<(), Fail> {
        let mut s = self.0.lock().unwrap();
        s.opens.push(Instant::now());
        if s.open_ok {
            Ok(())
        } else {
            Err(Fail::new(Action::Reopen, None, "no such port"))
        }
    }

    async fn poll(&mut self, _: &mut (), h: &DeviceHandle) -> Result<(), Fail> {
        let (answering, hang) = {
            let mut s = self.0.lock().unwrap();
            s.polls += 1;
            (s.answering, s.hang)
        };
        if hang {
            std::future::pending::<()>().await;
        }
        if answering {
            let mut v = Values::new();
            v.num("x", 1.0);
            h.sample(v);
            Ok(())
        } else {
            Err(Fail::new(Action::Streak, Some("timeout"), "not answering"))
        }
    }
}

struct Rig {
    script: Arc<Mutex<Script>>,
    hub: StatusHub,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

const I: Duration = Duration::from_secs(1);

/// A handle for device `d` on a spool in a temporary directory.
fn handle(interval: Duration) -> (DeviceHandle, StatusHub, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::config::Config::from_toml(&format!(
        "site = \"s\"\n[spool]\npath = \"{}\"\n",
        dir.path().join("s.db").display()
    ))
    .unwrap();
    let (spool, _) =
        crate::spool::Spool::open(&cfg.spool, "s", &[crate::spool::Lane::Mqtt]).unwrap();
    let hub = StatusHub::new("s");
    let h = DeviceHandle::new("d", "fake", interval, spool, hub.clone());
    (h, hub, dir)
}

fn start(policy: Policy, script: Script) -> Rig {
    let (h, hub, dir) = handle(policy.interval);
    let script = Arc::new(Mutex::new(script));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(Fake(script.clone()), policy, h, cancel.clone()));
    Rig {
        script,
        hub,
        cancel,
        task,
        _dir: dir,
    }
}

impl Rig {
    fn codes(&self) -> Vec<String> {
        let mut c: Vec<String> = self
            .hub
            .get()
            .events
            .iter()
            .map(|e| e.code.clone())
            .collect();
        c.reverse();
        c
    }

    fn health(&self) -> Health {
        self.hub.get().devices["d"].health.clone()
    }

    fn set(&self, f: impl FnOnce(&mut Script)) {
        f(&mut self.script.lock().unwrap())
    }

    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_millis(1), self.task)
            .await
            .expect("the supervisor stops at once on cancel")
            .unwrap();
    }
}

/// Sleeps until `secs` after `t0` (paused time: instant).
async fn at(t0: Instant, secs: f64) {
    tokio::time::sleep_until(t0 + Duration::from_secs_f64(secs)).await;
}

fn serial_like() -> Policy {
    Policy {
        after_streak: AfterStreak::StaleAndReopen,
        reopen_pause: Duration::from_millis(500),
        ..Policy::new(I)
    }
}

/// ok -> failures -> stale (`device.lost`) after three intervals, not
/// before -> reopen after the pause -> failed opens retried every interval
/// (fault) -> restored with the next good reading.
#[tokio::test(start_paused = true)]
async fn lost_then_reopened_with_backoff_then_restored() {
    let t0 = Instant::now();
    let rig = start(
        serial_like(),
        Script {
            open_ok: true,
            answering: true,
            ..Default::default()
        },
    );
    // Good polls at 0, 1 and 2 s; silent from 2.5 s.
    at(t0, 2.5).await;
    assert_eq!(rig.health(), Health::Ok);
    assert_eq!(rig.script.lock().unwrap().polls, 3);
    rig.set(|s| s.answering = false);
    // Failed polls at 3 and 4 s: counted, not yet stale.
    at(t0, 4.9).await;
    assert_eq!(rig.health(), Health::Ok);
    assert_eq!(rig.hub.get().devices["d"].errors["timeout"], 2);
    assert!(rig.codes().is_empty(), "{:?}", rig.codes());
    // The third, at 5 s: three intervals after the last good reading.
    at(t0, 5.1).await;
    assert_eq!(rig.health(), Health::Stale);
    assert_eq!(rig.codes(), vec!["device.lost"]);
    let lost = rig.hub.get().events[0].message.clone();
    assert!(lost.contains("not answering"), "{lost}");
    // The port is gone too: the reopen after 500 ms fails, and it is tried
    // again every interval, no faster.
    rig.set(|s| s.open_ok = false);
    at(t0, 9.6).await;
    let opens: Vec<f64> = rig
        .script
        .lock()
        .unwrap()
        .opens
        .iter()
        .map(|t| (*t - t0).as_secs_f64())
        .collect();
    assert_eq!(opens, vec![0.0, 5.5, 6.5, 7.5, 8.5, 9.5]);
    assert!(matches!(rig.health(), Health::Fault(r) if r == "no such port"));
    assert_eq!(rig.codes(), vec!["device.lost", "device.fault"]);
    // Plugged back: opened at the next try, and the first good reading
    // restores it.
    rig.set(|s| {
        s.open_ok = true;
        s.answering = true;
    });
    at(t0, 10.6).await;
    assert_eq!(rig.health(), Health::Ok);
    assert_eq!(
        rig.codes(),
        vec!["device.lost", "device.fault", "device.restored"]
    );
    rig.stop().await;
}

/// A kind that faults after a streak (Modbus) with failures that come at
/// once: `device.lost` still comes, before `device.fault`, never instead.
#[tokio::test(start_paused = true)]
async fn fault_after_a_streak_comes_after_lost() {
    let t0 = Instant::now();
    let rig = start(
        Policy::new(I),
        Script {
            open_ok: true,
            answering: true,
            ..Default::default()
        },
    );
    at(t0, 0.5).await;
    rig.set(|s| s.answering = false);
    at(t0, 2.9).await;
    assert_eq!(rig.health(), Health::Ok);
    at(t0, 3.1).await;
    assert!(matches!(rig.health(), Health::Fault(_)));
    assert_eq!(rig.codes(), vec!["device.lost", "device.fault"]);
    // More failures change nothing: one event per change; the link is kept.
    at(t0, 6.1).await;
    assert_eq!(rig.codes(), vec!["device.lost", "device.fault"]);
    assert_eq!(rig.script.lock().unwrap().opens.len(), 1);
    assert_eq!(rig.hub.get().devices["d"].errors["timeout"], 6);
    rig.stop().await;
}

/// Cancel ends the supervisor at once: during the pause after a failed
/// open (an hour here), and during a poll that hangs.
#[tokio::test(start_paused = true)]
async fn cancel_is_prompt_in_backoff_and_in_a_hung_poll() {
    let policy = Policy {
        open_retry: Duration::from_secs(3600),
        ..Policy::new(I)
    };
    let rig = start(policy, Script::default());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(rig.script.lock().unwrap().opens.len(), 1);
    let t = Instant::now();
    rig.stop().await;
    assert_eq!(t.elapsed(), Duration::ZERO);

    let rig = start(
        Policy::new(I),
        Script {
            open_ok: true,
            hang: true,
            ..Default::default()
        },
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(rig.script.lock().unwrap().polls, 1);
    let t = Instant::now();
    rig.stop().await;
    assert_eq!(t.elapsed(), Duration::ZERO);
}

/// The handle's staleness runs on tokio time: three intervals after the
/// last good reading it is still ok, just after them it is lost, once.
#[tokio::test(start_paused = true)]
async fn staleness_on_paused_time() {
    let (h, hub, _dir) = handle(I);
    h.check_stale();
    assert_eq!(h.health(), Health::Stale, "stale until the first reading");
    h.sample(Values::new());
    assert_eq!(h.health(), Health::Ok);
    tokio::time::sleep(3 * I).await;
    h.check_stale();
    assert_eq!(h.health(), Health::Ok);
    tokio::time::sleep(Duration::from_millis(1)).await;
    h.check_stale();
    h.check_stale();
    assert_eq!(h.health(), Health::Stale);
    let ev = hub.get().events;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].code, "device.lost");
    assert!(
        ev[0].message.contains("has not answered for 3s"),
        "{}",
        ev[0].message
    );
}

/// A UPS command reaches the device's loop between polls and is answered;
/// the poll tap numbers every poll, good (with values) or failed.
#[tokio::test(start_paused = true)]
async fn commands_and_the_poll_tap() {
    let (h, _hub, _dir) = handle(I);
    let script = Arc::new(Mutex::new(Script {
        open_ok: true,
        answering: true,
        ..Script::default()
    }));
    let mut polls = h.polls();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(
        Fake(script.clone()),
        Policy::new(I),
        h.clone(),
        cancel.clone(),
    ));
    let t0 = Instant::now();
    at(t0, 0.5).await;
    let first = polls.borrow_and_update().clone();
    assert_eq!(first.n, 1);
    assert!(first.values.is_some_and(|v| v.get("x").is_some()));
    // The fake keeps the default: no commands for this kind.
    let cmd = tap::UpsCommand::ShutdownReturn {
        off_after: Duration::from_secs(120),
    };
    let r = tokio::time::timeout(Duration::from_millis(10), h.ups_command(cmd))
        .await
        .expect("answered between polls, at once");
    assert!(r.unwrap_err().contains("takes no UPS commands"));
    script.lock().unwrap().answering = false;
    at(t0, 1.5).await;
    let second = polls.borrow_and_update().clone();
    assert_eq!(second.n, 2, "the failed poll is numbered too");
    assert!(second.values.is_none());
    cancel.cancel();
    task.await.unwrap();
}
