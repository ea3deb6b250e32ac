//! The status LED: which pattern the gateway's state calls for, and whether
//! the LED is lit at a given moment of that pattern. Both are pure functions;
//! a small task drives a [`Led`] from them, and [`open`] picks the LED the
//! config names (a sysfs LED, a GPIO pin, or none).
//!
//! Patterns, worst first (the worst that applies wins):
//! 1. rapid flicker (10 Hz) for 60 s: "identify", asked for by a technician
//!    or the operations centre, overrides everything while it lasts;
//! 2. one short flash every 2 s (mostly dark): shutting down for power
//!    (`[power]`: the UPS is running flat, the Pi is being powered off);
//! 3. two short flashes every 2 s: starting (until the first connection
//!    attempt to the broker has ended: connected, or failed);
//! 4. three short flashes every 2 s: on battery (`[power]`: the mains are
//!    out, readings are written to the card before they are sent);
//! 5. fast blink (4 Hz): at least one device is stale or faulty (readings
//!    are being missed);
//! 6. slow blink (1 Hz): no link to the operations centre, readings are
//!    being kept on the device;
//! 7. steady on: all good.
//!
//! With no valid configuration wardgate does not run at all (systemd's
//! `ExecCondition=wardgate check --config-only` fails, and `wardgate run`
//! exits 78 before it opens the LED), so it cannot drive the LED: the LED
//! is off, or shows the Pi's default trigger (SD card activity).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Snapshot;
use crate::ids::GATEWAY_DEVICE;
use crate::model::{now_ms, Health};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Pattern {
    /// All good.
    Steady,
    /// Uplink down, readings kept on the device.
    SlowBlink,
    /// A device is stale or faulty, or the SD card cannot be written.
    FastBlink,
    /// On battery (`[power]`).
    TripleFlash,
    /// Starting (with a bad configuration wardgate does not run: LED off).
    DoubleFlash,
    /// Shutting down for power (`[power]`).
    SingleFlash,
    /// Identify.
    Flicker,
}

/// What the LED reflects, taken from the status snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct LedInputs {
    pub starting: bool,
    pub uplink_up: bool,
    pub device_bad: bool,
    /// The spool cannot be written (read-only or full card, permissions).
    pub storage_bad: bool,
    pub identify: bool,
    /// `[power]`: the UPS that powers the Pi is on battery.
    pub on_battery: bool,
    /// `[power]`: shutting down for power.
    pub power_shutdown: bool,
}

impl LedInputs {
    /// Starting lasts until the first connection attempt to the broker.
    pub(crate) fn from_snapshot(s: &Snapshot) -> LedInputs {
        LedInputs {
            starting: s.uplink.starting(),
            // A stalled link delivers nothing: shown as a link that is down.
            uplink_up: s.uplink.connected && !s.uplink.stalled,
            device_bad: s
                .devices
                .iter()
                .any(|(id, d)| id != GATEWAY_DEVICE && d.health != Health::Ok),
            storage_bad: s.spool.degraded.is_some(),
            identify: s.identify_until_ms.is_some_and(|t| t > now_ms()),
            on_battery: s
                .power
                .as_ref()
                .is_some_and(|p| p.state == super::PowerState::OnBattery),
            power_shutdown: s
                .power
                .as_ref()
                .is_some_and(|p| p.state == super::PowerState::ShuttingDown),
        }
    }
}

/// The pattern for the gateway's state: the worst that applies.
pub(crate) fn pattern(i: LedInputs) -> Pattern {
    if i.identify {
        Pattern::Flicker
    } else if i.power_shutdown {
        Pattern::SingleFlash
    } else if i.starting {
        Pattern::DoubleFlash
    } else if i.on_battery {
        Pattern::TripleFlash
    } else if i.device_bad || i.storage_bad {
        Pattern::FastBlink
    } else if !i.uplink_up {
        Pattern::SlowBlink
    } else {
        Pattern::Steady
    }
}

/// Whether the LED is lit `t` into a pattern.
pub(crate) fn lit(p: Pattern, t: Duration) -> bool {
    let ms = t.as_millis() as u64;
    match p {
        Pattern::Steady => true,
        Pattern::SlowBlink => ms % 1000 < 500,
        Pattern::FastBlink => ms % 250 < 125,
        Pattern::Flicker => ms % 100 < 50,
        Pattern::DoubleFlash => {
            let m = ms % 2000;
            m < 100 || (300..400).contains(&m)
        }
        Pattern::TripleFlash => {
            let m = ms % 2000;
            m < 100 || (300..400).contains(&m) || (600..700).contains(&m)
        }
        Pattern::SingleFlash => ms % 2000 < 100,
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LedError {
    /// The LED could not be driven: logged once, the LED is given up on;
    /// the gateway goes on without it.
    #[error("LED {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// One LED, named after embedded-hal's output pin methods.
pub(crate) trait Led: Send {
    fn set_high(&mut self) -> Result<(), LedError>;
    fn set_low(&mut self) -> Result<(), LedError>;
}

/// An LED of the kernel's LED class (`/sys/class/leds/ACT` on current
/// Raspberry Pi OS, `led0` on older): takes it over from its trigger, and
/// gives it back on drop.
pub(crate) struct SysfsLed {
    dir: PathBuf,
    old_trigger: Option<String>,
    active_low: bool,
}

impl SysfsLed {
    pub(crate) fn open(dir: &Path, active_low: bool) -> Result<SysfsLed, LedError> {
        let io = |p: &Path| {
            let path = p.display().to_string();
            move |e| LedError::Io { path, source: e }
        };
        let trig = dir.join("trigger");
        let text = std::fs::read_to_string(&trig).map_err(io(&trig))?;
        // The kernel lists every trigger with the active one in brackets.
        let old = text
            .split_whitespace()
            .find(|w| w.starts_with('[') && w.ends_with(']'))
            .map(|w| w.trim_matches(['[', ']']).to_owned());
        std::fs::write(&trig, "none").map_err(io(&trig))?;
        Ok(SysfsLed {
            dir: dir.to_path_buf(),
            old_trigger: old,
            active_low,
        })
    }

    fn write(&self, on: bool) -> Result<(), LedError> {
        let p = self.dir.join("brightness");
        let v = if on != self.active_low { "1" } else { "0" };
        std::fs::write(&p, v).map_err(|e| LedError::Io {
            path: p.display().to_string(),
            source: e,
        })
    }
}

impl Led for SysfsLed {
    fn set_high(&mut self) -> Result<(), LedError> {
        self.write(true)
    }
    fn set_low(&mut self) -> Result<(), LedError> {
        self.write(false)
    }
}

impl Drop for SysfsLed {
    fn drop(&mut self) {
        if let Some(t) = &self.old_trigger {
            let _ = std::fs::write(self.dir.join("trigger"), t);
        }
    }
}

/// An external LED on a GPIO pin (BCM numbering), through rppal.
pub(crate) struct GpioLed {
    pin: rppal::gpio::OutputPin,
    active_low: bool,
}

impl GpioLed {
    pub(crate) fn open(bcm: u8, active_low: bool) -> Result<GpioLed, LedError> {
        let gpio = rppal::gpio::Gpio::new().map_err(|e| LedError::Io {
            path: format!("GPIO {bcm}"),
            source: std::io::Error::other(format!(
                "{e} (no Raspberry Pi GPIO chip on this machine?)"
            )),
        })?;
        let pin = gpio.get(bcm).map_err(|e| LedError::Io {
            path: format!("GPIO {bcm}"),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(GpioLed {
            pin: pin.into_output_low(),
            active_low,
        })
    }
}

impl Led for GpioLed {
    fn set_high(&mut self) -> Result<(), LedError> {
        if self.active_low {
            self.pin.set_low()
        } else {
            self.pin.set_high()
        }
        Ok(())
    }
    fn set_low(&mut self) -> Result<(), LedError> {
        if self.active_low {
            self.pin.set_high()
        } else {
            self.pin.set_low()
        }
        Ok(())
    }
}

/// Records what it was told, for tests.
#[derive(Clone, Default)]
#[cfg_attr(not(test), allow(dead_code))] // used by the tests
pub(crate) struct FakeLed {
    pub log: std::sync::Arc<std::sync::Mutex<Vec<(tokio::time::Instant, bool)>>>,
}

impl Led for FakeLed {
    fn set_high(&mut self) -> Result<(), LedError> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((tokio::time::Instant::now(), true));
        Ok(())
    }
    fn set_low(&mut self) -> Result<(), LedError> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((tokio::time::Instant::now(), false));
        Ok(())
    }
}

/// The LED the config asks for: `None` when `led.backend = "none"`, else
/// the opened LED or why it cannot be used.
pub(crate) fn open(cfg: &super::config::LedConfig) -> Option<Result<Box<dyn Led>, LedError>> {
    match cfg.backend {
        super::config::LedBackend::None => None,
        super::config::LedBackend::Sysfs => {
            Some(SysfsLed::open(&cfg.path, cfg.active_low).map(|l| Box::new(l) as Box<dyn Led>))
        }
        super::config::LedBackend::Gpio => Some(
            GpioLed::open(cfg.pin.map(|p| p.get()).unwrap_or_default(), cfg.active_low)
                .map(|l| Box::new(l) as Box<dyn Led>),
        ),
    }
}

/// Every edge of every pattern falls on this grid (the shortest phase is
/// the flicker's 50 ms, the fast blink's 125 ms is five steps).
const GRID_MS: u64 = 25;

/// How long after `t` into pattern `p` the LED next changes: None for a
/// steady pattern (nothing to do until the state changes).
pub(crate) fn next_edge(p: Pattern, t: Duration) -> Option<Duration> {
    let ms = t.as_millis() as u64;
    let now = lit(p, t);
    // The patterns repeat within 2 s: one period of grid steps is enough.
    (1..=2000 / GRID_MS)
        .map(|k| (ms / GRID_MS + k) * GRID_MS)
        .find(|&m| lit(p, Duration::from_millis(m)) != now)
        .map(|m| Duration::from_millis(m - ms))
}

/// Drives `led` from the snapshot until `cancel`, then switches it off.
/// Wakes only when the snapshot changes or the pattern has an edge: with
/// the LED steady, not at all.
pub(crate) async fn run(
    mut led: Box<dyn Led>,
    mut status: watch::Receiver<Snapshot>,
    cancel: CancellationToken,
) {
    let mut current = None;
    let mut since = tokio::time::Instant::now();
    let mut level = None;
    let mut watching = true;
    loop {
        let now = tokio::time::Instant::now();
        let inputs = LedInputs::from_snapshot(&status.borrow_and_update());
        let p = pattern(inputs);
        if current != Some(p) {
            current = Some(p);
            since = now;
        }
        let on = lit(p, now - since);
        if level != Some(on) {
            let r = if on { led.set_high() } else { led.set_low() };
            if let Err(e) = r {
                tracing::warn!(error = %e, "status LED given up");
                return;
            }
            level = Some(on);
        }
        // Identify ends by the wall clock: its flicker's edges come every
        // 50 ms, so its end is seen within one.
        let edge = next_edge(p, now - since).map(|d| now + d);
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = status.changed(), if watching => watching = r.is_ok(),
            _ = sleep_until_some(edge) => {}
        }
    }
    let _ = led.set_low();
}

/// Sleeps until `at`, or for ever.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(starting: bool, up: bool, bad: bool, identify: bool) -> LedInputs {
        LedInputs {
            starting,
            uplink_up: up,
            device_bad: bad,
            storage_bad: false,
            identify,
            on_battery: false,
            power_shutdown: false,
        }
    }

    /// On battery shows over a bad device or a down link, but not over
    /// starting or identify; shutting down for power over all but
    /// identify.
    #[test]
    fn power_patterns() {
        let mut i = inputs(false, false, true, false);
        i.on_battery = true;
        assert_eq!(pattern(i), Pattern::TripleFlash);
        i.starting = true;
        assert_eq!(pattern(i), Pattern::DoubleFlash);
        i.power_shutdown = true;
        assert_eq!(pattern(i), Pattern::SingleFlash);
        i.identify = true;
        assert_eq!(pattern(i), Pattern::Flicker);
        let ms = Duration::from_millis;
        let count = |p| (0..20).filter(|k| lit(p, ms(k * 100))).count();
        assert_eq!(count(Pattern::TripleFlash), 3, "three flashes per 2 s");
        assert_eq!(count(Pattern::SingleFlash), 1, "one flash per 2 s");
        let hub = crate::status::StatusHub::new("s");
        hub.update(|s| {
            s.power = Some(crate::status::PowerStatus {
                ups: "ups1".into(),
                state: crate::status::PowerState::OnBattery,
                since_ms: 0,
                write_through: true,
                reason: None,
                reason_vi: None,
            })
        });
        let i = LedInputs::from_snapshot(&hub.get());
        assert!(i.on_battery && !i.power_shutdown);
    }

    #[test]
    fn a_card_that_cannot_be_written_blinks_fast() {
        let mut i = inputs(false, true, false, false);
        i.storage_bad = true;
        assert_eq!(pattern(i), Pattern::FastBlink);
        let hub = crate::status::StatusHub::new("s");
        hub.update(|s| s.spool.degraded = Some("read_only".into()));
        assert!(LedInputs::from_snapshot(&hub.get()).storage_bad);
    }

    #[test]
    fn each_state_has_its_pattern_and_the_worst_wins() {
        assert_eq!(pattern(inputs(false, true, false, false)), Pattern::Steady);
        assert_eq!(
            pattern(inputs(false, false, false, false)),
            Pattern::SlowBlink
        );
        assert_eq!(
            pattern(inputs(false, true, true, false)),
            Pattern::FastBlink
        );
        assert_eq!(
            pattern(inputs(false, false, true, false)),
            Pattern::FastBlink
        );
        assert_eq!(
            pattern(inputs(true, false, true, false)),
            Pattern::DoubleFlash
        );
        assert_eq!(pattern(inputs(true, false, true, true)), Pattern::Flicker);
    }

    /// The next edge agrees with `lit` sampled every millisecond, for every
    /// pattern and every moment of its cycle.
    #[test]
    fn next_edge_is_the_first_change_of_lit() {
        let ms = Duration::from_millis;
        for p in [
            Pattern::SlowBlink,
            Pattern::FastBlink,
            Pattern::TripleFlash,
            Pattern::DoubleFlash,
            Pattern::SingleFlash,
            Pattern::Flicker,
        ] {
            for t in (0..4000).step_by(7) {
                let now = lit(p, ms(t));
                let want = (t + 1..t + 2001).find(|&u| lit(p, ms(u)) != now).unwrap();
                assert_eq!(next_edge(p, ms(t)), Some(ms(want - t)), "{p:?} at {t} ms");
            }
        }
        assert_eq!(next_edge(Pattern::Steady, ms(1234)), None);
    }

    #[test]
    fn timings() {
        let ms = Duration::from_millis;
        assert!(lit(Pattern::Steady, ms(123_456)));
        assert!(lit(Pattern::SlowBlink, ms(0)) && !lit(Pattern::SlowBlink, ms(500)));
        assert!(lit(Pattern::SlowBlink, ms(1000)));
        assert!(lit(Pattern::FastBlink, ms(0)) && !lit(Pattern::FastBlink, ms(125)));
        assert!(lit(Pattern::FastBlink, ms(250)));
        let on: Vec<bool> = (0..20)
            .map(|i| lit(Pattern::DoubleFlash, ms(i * 100)))
            .collect();
        assert_eq!(on.iter().filter(|x| **x).count(), 2, "two flashes per 2 s");
        assert!(on[0] && !on[1] && !on[2] && on[3]);
        assert!(lit(Pattern::Flicker, ms(0)) && !lit(Pattern::Flicker, ms(50)));
    }

    #[tokio::test(start_paused = true)]
    async fn driver_blinks_slowly_with_the_uplink_down_and_identify_expires() {
        let hub = super::super::StatusHub::new("s");
        let led = FakeLed::default();
        let log = led.log.clone();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(Box::new(led), hub.subscribe(), cancel.clone()));
        // Starting: two short flashes every 2 s (at 0, 0.3, 2.0, 2.3 s).
        tokio::time::sleep(Duration::from_millis(3990)).await;
        let edges: Vec<bool> = log.lock().unwrap().iter().map(|(_, on)| *on).collect();
        assert_eq!(edges.iter().filter(|on| **on).count(), 4, "{edges:?}");
        log.lock().unwrap().clear();
        // The first attempt is under way: still starting.
        hub.update(|s| s.uplink.attempts = 1);
        tokio::time::sleep(Duration::from_millis(1990)).await;
        let edges: Vec<bool> = log.lock().unwrap().iter().map(|(_, on)| *on).collect();
        assert_eq!(edges.iter().filter(|on| **on).count(), 2, "{edges:?}");
        log.lock().unwrap().clear();
        // It failed: the link is down.
        hub.update(|s| {
            s.uplink.since_ms = now_ms();
            s.uplink.last_error = Some("refused".into());
        });
        tokio::time::sleep(Duration::from_millis(4010)).await;
        let edges: Vec<bool> = log.lock().unwrap().iter().map(|(_, on)| *on).collect();
        // Uplink down: on/off each 500 ms, 4 s -> 8 edges (+1 for the start).
        assert!((8..=9).contains(&edges.len()), "{edges:?}");
        // Into the dark half of a blink (4.51 s into it), so that steady
        // has an edge to make.
        tokio::time::sleep(Duration::from_millis(500)).await;
        log.lock().unwrap().clear();
        hub.update(|s| s.uplink.connected = true);
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert_eq!(
            log.lock().unwrap().iter().filter(|(_, on)| *on).count(),
            1,
            "steady: one switch on, then nothing"
        );
        log.lock().unwrap().clear();
        // Identify for 60 s (wall clock, as the snapshot stores it): flicker.
        hub.update(|s| s.identify_until_ms = Some(now_ms() + 60_000));
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(log.lock().unwrap().len() >= 18, "10 Hz flicker");
        // Expired: back to steady.
        hub.update(|s| s.identify_until_ms = Some(now_ms() - 1));
        tokio::time::sleep(Duration::from_millis(100)).await;
        log.lock().unwrap().clear();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(log.lock().unwrap().is_empty(), "steady again");
        cancel.cancel();
        task.await.unwrap();
    }

    #[test]
    fn sysfs_led_takes_over_and_gives_back_the_trigger() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("trigger"), "none [mmc0] timer heartbeat\n").unwrap();
        std::fs::write(dir.path().join("brightness"), "0\n").unwrap();
        {
            let mut led = SysfsLed::open(dir.path(), false).unwrap();
            assert_eq!(
                std::fs::read_to_string(dir.path().join("trigger")).unwrap(),
                "none"
            );
            led.set_high().unwrap();
            assert_eq!(
                std::fs::read_to_string(dir.path().join("brightness")).unwrap(),
                "1"
            );
            led.set_low().unwrap();
            assert_eq!(
                std::fs::read_to_string(dir.path().join("brightness")).unwrap(),
                "0"
            );
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join("trigger")).unwrap(),
            "mmc0"
        );
        let mut inv = SysfsLed::open(dir.path(), true).unwrap();
        inv.set_high().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("brightness")).unwrap(),
            "0"
        );
        assert!(SysfsLed::open(&dir.path().join("missing"), false).is_err());
    }
}
