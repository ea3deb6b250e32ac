//! Simulated device (`type = "sim"`): UPS-like or sensor-like readings with
//! realistic drift, and an event every `event_every` samples. It powers the
//! demo, the tests and the benchmark.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use super::sim_config::{SimConfig, SimProfile};
use super::DeviceHandle;
use crate::events;
use crate::model::{Severity, Values};

/// The simulated device's state; `step` is pure apart from the random source.
#[derive(Debug, Clone)]
pub(crate) struct SimState {
    profile: SimProfile,
    load: f64,
    charge: f64,
    input_v: f64,
    temp: f64,
    humidity: f64,
    on_battery: bool,
}

impl SimState {
    pub(crate) fn new(profile: SimProfile) -> Self {
        SimState {
            profile,
            load: 23.0,
            charge: 100.0,
            input_v: 229.0,
            temp: 27.5,
            humidity: 62.0,
            on_battery: false,
        }
    }

    /// A random walk bounded to plausible values.
    fn drift(v: f64, rng: &mut impl Rng, step: f64, lo: f64, hi: f64) -> f64 {
        (v + rng.random_range(-step..=step)).clamp(lo, hi)
    }

    pub(crate) fn step(&mut self, rng: &mut impl Rng) -> Values {
        let mut v = Values::new();
        match self.profile {
            SimProfile::Ups => {
                self.load = Self::drift(self.load, rng, 0.8, 5.0, 90.0);
                if self.on_battery {
                    self.charge = (self.charge - 0.5).max(0.0);
                    self.input_v = 0.0;
                } else {
                    self.charge = (self.charge + 0.2).min(100.0);
                    self.input_v = Self::drift(self.input_v.max(200.0), rng, 1.5, 195.0, 250.0);
                }
                v.set("ups.status", self.ups_status());
                v.num("ups.load", round1(self.load));
                v.num("battery.charge", round1(self.charge));
                // Runtime falls with load and charge, as on a small line-interactive unit.
                v.num(
                    "battery.runtime",
                    (self.charge / 100.0 * 3600.0 * (25.0 / self.load.max(5.0))).round(),
                );
                v.num("battery.voltage", round1(12.0 + self.charge / 100.0 * 1.6));
                v.num("input.voltage", round1(self.input_v));
                v.num("input.frequency", if self.on_battery { 0.0 } else { 50.0 });
                v.num("output.voltage", 230.0);
            }
            SimProfile::Sensor => {
                self.temp = Self::drift(self.temp, rng, 0.1, 15.0, 45.0);
                self.humidity = Self::drift(self.humidity, rng, 0.3, 20.0, 95.0);
                v.num("ambient.temperature", round1(self.temp));
                v.num("ambient.humidity", round1(self.humidity));
            }
        }
        v
    }

    /// NUT's status words for the simulated UPS now.
    fn ups_status(&self) -> &'static str {
        match (self.on_battery, self.charge < 20.0) {
            (false, _) => "OL",
            (true, false) => "OB",
            (true, true) => "OB LB",
        }
    }

    /// One tick, the `n`th sample (from 1): on an event tick the event
    /// comes first and the sample of the same tick already agrees with it
    /// (a UPS gone on battery reads `OB`, not the `OL` of before).
    pub(crate) fn tick(
        &mut self,
        rng: &mut impl Rng,
        n: u64,
        every: u64,
    ) -> (
        Option<(Severity, &'static str, &'static str, Values)>,
        Values,
    ) {
        let ev = (every > 0 && n % every == 0).then(|| self.toggle());
        (ev, self.step(rng))
    }

    /// The configured event: toggles mains on/off for a UPS, a door for a
    /// sensor. Returns (severity, code, message, values).
    pub(crate) fn toggle(&mut self) -> (Severity, &'static str, &'static str, Values) {
        self.on_battery = !self.on_battery;
        let mut v = Values::new();
        let ev = match (self.profile, self.on_battery) {
            (SimProfile::Ups, true) => {
                v.set("ups.status", self.ups_status());
                events::UPS_ON_BATTERY
            }
            (SimProfile::Ups, false) => {
                v.set("ups.status", self.ups_status());
                events::UPS_ON_LINE
            }
            (SimProfile::Sensor, open) => {
                v.set("door.state", if open { "open" } else { "closed" });
                if open {
                    events::DOOR_OPEN
                } else {
                    events::DOOR_CLOSED
                }
            }
        };
        (ev.severity, ev.code, ev.message, v)
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub(crate) async fn run(cfg: SimConfig, h: DeviceHandle, cancel: CancellationToken) {
    let mut state = SimState::new(cfg.profile);
    let mut rng = StdRng::from_os_rng();
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let per_tick = cfg.samples_per_tick.get();
    let count = cfg.count.get();
    let every = cfg.event_every.get();
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
            _ = h.poll_requested() => {}
        }
        for _ in 0..per_tick {
            n += 1;
            let (ev, values) = state.tick(&mut rng, n, every);
            if let Some((sev, code, msg, ev_values)) = ev {
                h.event(sev, code, msg, ev_values);
            }
            h.sample(values);
            if count > 0 && n >= count {
                tracing::info!(device = h.id(), samples = n, "simulated device finished");
                return;
            }
        }
    }
}

/// One reading, for `wardgate check`.
pub(crate) fn probe(cfg: &SimConfig) -> Values {
    SimState::new(cfg.profile).step(&mut StdRng::seed_from_u64(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ups_values_stay_plausible() {
        let mut s = SimState::new(SimProfile::Ups);
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..10_000 {
            let v = s.step(&mut rng);
            let load = v.get("ups.load").and_then(|v| v.as_f64()).unwrap();
            assert!((5.0..=90.0).contains(&load));
            let vin = v.get("input.voltage").and_then(|v| v.as_f64()).unwrap();
            assert!((195.0..=250.0).contains(&vin));
            assert_eq!(v.get("ups.status"), Some(&"OL".into()));
        }
    }

    #[test]
    fn on_battery_drains_and_reports_low_battery() {
        let mut s = SimState::new(SimProfile::Ups);
        let mut rng = StdRng::seed_from_u64(3);
        let (sev, code, msg, _) = s.toggle();
        assert_eq!((sev, code), (Severity::Critical, "ups.on_battery"));
        assert_eq!(msg, "UPS on battery: mains power lost");
        let mut last = Values::new();
        for _ in 0..170 {
            last = s.step(&mut rng);
        }
        assert_eq!(last.get("ups.status"), Some(&"OB LB".into()));
        assert_eq!(
            last.get("input.voltage").and_then(|v| v.as_f64()),
            Some(0.0)
        );
        let (_, code, _, _) = s.toggle();
        assert_eq!(code, "ups.on_line");
    }

    #[test]
    fn the_event_and_the_sample_of_its_tick_agree() {
        let mut s = SimState::new(SimProfile::Ups);
        let mut rng = StdRng::seed_from_u64(3);
        for n in 1..=40 {
            let (ev, v) = s.tick(&mut rng, n, 12);
            let status = v.get("ups.status").cloned();
            match ev {
                Some((_, code, _, ev_values)) => {
                    assert_eq!(ev_values.get("ups.status").cloned(), status, "tick {n}");
                    let want = if code == "ups.on_battery" { "OB" } else { "OL" };
                    assert_eq!(status, Some(want.into()), "tick {n}: {code}");
                }
                None => {
                    let want = if (n / 12) % 2 == 1 { "OB" } else { "OL" };
                    assert_eq!(status, Some(want.into()), "tick {n}");
                }
            }
        }
    }

    #[test]
    fn sensor_door_events() {
        let mut s = SimState::new(SimProfile::Sensor);
        let (sev, code, msg, v) = s.toggle();
        assert_eq!(
            (sev, code, msg),
            (Severity::Warning, "door.open", "Equipment room door opened")
        );
        assert_eq!(v.get("door.state"), Some(&"open".into()));
        let (sev, code, msg, _) = s.toggle();
        assert_eq!(
            (sev, code, msg),
            (Severity::Info, "door.closed", "Equipment room door closed")
        );
    }

    #[test]
    fn sensor_profile() {
        let mut s = SimState::new(SimProfile::Sensor);
        let v = s.step(&mut StdRng::seed_from_u64(1));
        assert!(v.get("ambient.temperature").is_some());
        assert!(v.get("ambient.humidity").is_some());
        assert!(v.get("ups.status").is_none());
    }
}
