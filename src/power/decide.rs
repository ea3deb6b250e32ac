//! When to shut the Pi down: a pure function of the UPS's poll outcomes
//! and the time, fed one poll at a time ([`Decider::poll`]).
//!
//! - The first good poll with `OB` in `ups.status`: on battery (the app
//!   turns write-through on).
//! - A good poll with `OL` and without `OB` after that: mains back (write-
//!   through off, `power.restored`, a pending shutdown cancelled).
//! - On battery, a condition (the UPS's `LB` flag, `battery.runtime` or
//!   `battery.charge` below its limit, on battery for longer than the
//!   limit) must hold on two consecutive good polls: then shut down.
//! - A failed poll, a stale or faulted UPS, a reading without `ups.status`
//!   or with neither `OB` nor `OL`, and a poll the watcher did not see (the
//!   tap's numbers jumped) never count, and start the two polls again. They
//!   change nothing else: no news is not mains back.

use std::time::Duration;

use tokio::time::Instant;

use crate::model::{Value, Values};

use super::config::PowerConfig;

/// What the decision needs of a UPS reading.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UpsReading {
    /// `ups.status` as the UPS gave it (`OB LB`).
    pub status: String,
    pub on_battery: bool,
    pub on_line: bool,
    pub low_battery: bool,
    /// `battery.runtime`, seconds.
    pub runtime: Option<f64>,
    /// `battery.charge`, percent.
    pub charge: Option<f64>,
}

impl UpsReading {
    /// None when the values have no `ups.status`.
    pub(crate) fn of(values: &Values) -> Option<UpsReading> {
        let Some(Value::Str(status)) = values.get("ups.status") else {
            return None;
        };
        let has = |t: &str| status.split_whitespace().any(|x| x == t);
        let num = |k: &str| {
            values
                .get(k)
                .and_then(Value::as_f64)
                .filter(|v| v.is_finite())
        };
        Some(UpsReading {
            on_battery: has("OB"),
            on_line: has("OL"),
            low_battery: has("LB"),
            runtime: num("battery.runtime"),
            charge: num("battery.charge"),
            status: status.clone(),
        })
    }
}

/// Why the Pi is shut down.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reason {
    /// The UPS's own low-battery flag.
    LowBattery,
    /// `battery.runtime` (seconds) below the limit.
    Runtime { secs: f64, below: Duration },
    /// `battery.charge` (percent) below the limit.
    Charge { percent: f64, below: f64 },
    /// On battery for longer than the limit.
    OnBatteryFor { limit: Duration },
}

impl Reason {
    /// The reason's name in the event (`power.reason`).
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Reason::LowBattery => "low_battery",
            Reason::Runtime { .. } => "runtime",
            Reason::Charge { .. } => "charge",
            Reason::OnBatteryFor { .. } => "on_battery_time",
        }
    }

    /// In English.
    pub(crate) fn words(&self) -> String {
        let f = |d: Duration| humantime::format_duration(d).to_string();
        match self {
            Reason::LowBattery => "the UPS says its battery is low".into(),
            Reason::Runtime { secs, below } => format!(
                "{} of battery left, below {}",
                f(Duration::from_secs(secs.max(0.0) as u64)),
                f(*below)
            ),
            Reason::Charge { percent, below } => {
                format!("battery at {percent} %, below {below} %")
            }
            Reason::OnBatteryFor { limit } => format!("on battery for {}", f(*limit)),
        }
    }

    /// In Vietnamese.
    pub(crate) fn words_vi(&self) -> String {
        let min = |s: f64| (s / 60.0).round() as u64;
        match self {
            Reason::LowBattery => "UPS báo pin yếu".into(),
            Reason::Runtime { secs, below } => format!(
                "pin chỉ còn khoảng {} phút (ngưỡng {} phút)",
                min(*secs),
                min(below.as_secs_f64())
            ),
            Reason::Charge { percent, below } => {
                format!("pin còn {percent} % (ngưỡng {below} %)")
            }
            Reason::OnBatteryFor { limit } => {
                format!("đã chạy bằng pin {} phút", min(limit.as_secs_f64()))
            }
        }
    }
}

/// What one poll leads to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    Nothing,
    /// The UPS went on battery.
    OnBattery,
    /// The mains are back after `on_battery_for` on battery.
    Restored {
        on_battery_for: Duration,
    },
    /// Shut down: a condition held on two consecutive good polls.
    Shutdown {
        reason: Reason,
        reading: UpsReading,
        on_battery_for: Duration,
    },
}

/// The limits a decision uses (from `[power]`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Limits {
    pub runtime_below: Option<Duration>,
    pub charge_below: Option<f64>,
    pub after_on_battery: Option<Duration>,
}

impl Limits {
    pub(crate) fn of(cfg: &PowerConfig) -> Limits {
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        Limits {
            runtime_below: nonzero(cfg.shutdown_when_runtime_below),
            charge_below: cfg.shutdown_when_charge_below,
            after_on_battery: nonzero(cfg.shutdown_after_on_battery),
        }
    }

    /// The first condition that holds for `r`, on battery for `for_`.
    pub(crate) fn check(&self, r: &UpsReading, for_: Duration) -> Option<Reason> {
        if r.low_battery {
            return Some(Reason::LowBattery);
        }
        if let (Some(below), Some(secs)) = (self.runtime_below, r.runtime) {
            if secs < below.as_secs_f64() {
                return Some(Reason::Runtime { secs, below });
            }
        }
        if let (Some(below), Some(percent)) = (self.charge_below, r.charge) {
            if percent < below {
                return Some(Reason::Charge { percent, below });
            }
        }
        match self.after_on_battery {
            Some(limit) if for_ >= limit => Some(Reason::OnBatteryFor { limit }),
            _ => None,
        }
    }
}

/// Good polls in a row a condition must hold on.
pub(crate) const POLLS_TO_TRIGGER: u32 = 2;

/// No good reading for this long: the time on battery starts again at the
/// next one (the mains may have come and gone meanwhile), so a long gap in
/// readings never makes `shutdown_after_on_battery` fire at once.
pub(crate) const GAP_RESTARTS_TIMER: Duration = Duration::from_secs(120);

/// The decision's state between polls.
#[derive(Debug)]
pub(crate) struct Decider {
    limits: Limits,
    /// The number of the last poll seen (the tap's `n`).
    last_n: u64,
    /// Since when the UPS is on battery, as first seen.
    on_battery_since: Option<Instant>,
    /// Consecutive good polls on which a condition held.
    held: u32,
    /// When the last good reading came.
    last_good: Option<Instant>,
}

impl Decider {
    pub(crate) fn new(limits: Limits) -> Decider {
        Decider {
            limits,
            last_n: 0,
            on_battery_since: None,
            held: 0,
            last_good: None,
        }
    }

    /// Whether the UPS is on battery, as last seen.
    #[cfg_attr(not(test), allow(dead_code))] // used by the tests
    pub(crate) fn on_battery(&self) -> bool {
        self.on_battery_since.is_some()
    }

    /// Poll number `n` ended with `values` (None: failed, or the device
    /// went stale or faulted).
    pub(crate) fn poll(&mut self, n: u64, values: Option<&Values>, now: Instant) -> Step {
        // A poll not seen (two came before the watcher looked) may have
        // been a failed one: the chain starts again.
        if n != self.last_n.wrapping_add(1) {
            self.held = 0;
        }
        self.last_n = n;
        let Some(r) = values.and_then(UpsReading::of) else {
            self.held = 0;
            return Step::Nothing;
        };
        let gap = self
            .last_good
            .replace(now)
            .is_some_and(|t| now.saturating_duration_since(t) > GAP_RESTARTS_TIMER);
        if gap && r.on_battery {
            if let Some(since) = self.on_battery_since.as_mut() {
                *since = now;
            }
        }
        if !r.on_battery {
            self.held = 0;
            if !r.on_line {
                return Step::Nothing;
            }
            return match self.on_battery_since.take() {
                Some(since) => Step::Restored {
                    on_battery_for: now.saturating_duration_since(since),
                },
                None => Step::Nothing,
            };
        }
        let first = self.on_battery_since.is_none();
        let since = *self.on_battery_since.get_or_insert(now);
        let for_ = now.saturating_duration_since(since);
        match self.limits.check(&r, for_) {
            Some(reason) => {
                self.held = self.held.saturating_add(1);
                if self.held >= POLLS_TO_TRIGGER {
                    return Step::Shutdown {
                        reason,
                        reading: r,
                        on_battery_for: for_,
                    };
                }
            }
            None => self.held = 0,
        }
        if first {
            Step::OnBattery
        } else {
            Step::Nothing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ups(status: &str, runtime: Option<f64>, charge: Option<f64>) -> Values {
        let mut v = Values::new();
        v.set("ups.status", status);
        if let Some(r) = runtime {
            v.num("battery.runtime", r);
        }
        if let Some(c) = charge {
            v.num("battery.charge", c);
        }
        v
    }

    fn limits() -> Limits {
        Limits {
            runtime_below: Some(Duration::from_secs(300)),
            charge_below: Some(20.0),
            after_on_battery: None,
        }
    }

    /// Feeds polls 1, 2, ... one second apart (paused time): the steps.
    struct Feed {
        d: Decider,
        n: u64,
    }

    impl Feed {
        fn new(l: Limits) -> Feed {
            Feed {
                d: Decider::new(l),
                n: 0,
            }
        }
        async fn poll(&mut self, v: Option<Values>) -> Step {
            tokio::time::advance(Duration::from_secs(1)).await;
            self.n += 1;
            self.d.poll(self.n, v.as_ref(), Instant::now())
        }
        fn reason(s: &Step) -> Option<&'static str> {
            match s {
                Step::Shutdown { reason, .. } => Some(reason.code()),
                _ => None,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn low_battery_on_two_good_polls() {
        let mut f = Feed::new(limits());
        assert_eq!(f.poll(Some(ups("OL", None, None))).await, Step::Nothing);
        assert_eq!(f.poll(Some(ups("OB", None, None))).await, Step::OnBattery);
        assert!(f.d.on_battery());
        assert_eq!(f.poll(Some(ups("OB LB", None, None))).await, Step::Nothing);
        let s = f.poll(Some(ups("OB LB", None, None))).await;
        assert_eq!(Feed::reason(&s), Some("low_battery"), "{s:?}");
        match s {
            Step::Shutdown {
                reading,
                on_battery_for,
                ..
            } => {
                assert_eq!(reading.status, "OB LB");
                assert_eq!(on_battery_for, Duration::from_secs(2));
            }
            s => panic!("{s:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_reading_on_battery_and_low_counts_once() {
        let mut f = Feed::new(limits());
        assert_eq!(
            f.poll(Some(ups("OB LB", None, None))).await,
            Step::OnBattery
        );
        let s = f.poll(Some(ups("OB LB", None, None))).await;
        assert_eq!(Feed::reason(&s), Some("low_battery"));
    }

    #[tokio::test(start_paused = true)]
    async fn one_glitchy_poll_never_triggers() {
        let mut f = Feed::new(limits());
        f.poll(Some(ups("OB", Some(1200.0), Some(80.0)))).await;
        for glitch in [
            ups("OB LB", None, None),
            ups("OB", Some(10.0), None),
            ups("OB", None, Some(3.0)),
        ] {
            assert_eq!(f.poll(Some(glitch)).await, Step::Nothing);
            assert_eq!(
                f.poll(Some(ups("OB", Some(1200.0), Some(80.0)))).await,
                Step::Nothing
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failed_stale_or_unseen_polls_break_the_chain() {
        let mut f = Feed::new(limits());
        f.poll(Some(ups("OB", None, None))).await;
        for _ in 0..5 {
            assert_eq!(f.poll(Some(ups("OB LB", None, None))).await, Step::Nothing);
            // Failed, stale or faulted: None.
            assert_eq!(f.poll(None).await, Step::Nothing);
        }
        // Values without a status, or with neither OB nor OL.
        for odd in [Values::new(), ups("OFF", None, None)] {
            assert_eq!(f.poll(Some(ups("OB LB", None, None))).await, Step::Nothing);
            assert_eq!(f.poll(Some(odd)).await, Step::Nothing);
        }
        assert!(f.d.on_battery(), "no news is not mains back");
        // A poll the watcher never saw between two low readings.
        assert_eq!(f.poll(Some(ups("OB LB", None, None))).await, Step::Nothing);
        f.n += 1;
        assert_eq!(f.poll(Some(ups("OB LB", None, None))).await, Step::Nothing);
        let s = f.poll(Some(ups("OB LB", None, None))).await;
        assert_eq!(Feed::reason(&s), Some("low_battery"));
    }

    #[tokio::test(start_paused = true)]
    async fn runtime_and_charge_below_their_limits() {
        let mut f = Feed::new(limits());
        f.poll(Some(ups("OB", Some(600.0), Some(90.0)))).await;
        assert_eq!(
            f.poll(Some(ups("OB", Some(299.0), Some(90.0)))).await,
            Step::Nothing
        );
        let s = f.poll(Some(ups("OB", Some(250.0), Some(90.0)))).await;
        assert_eq!(Feed::reason(&s), Some("runtime"));
        match &s {
            Step::Shutdown { reason, .. } => {
                assert_eq!(reason.words(), "4m 10s of battery left, below 5m");
                assert_eq!(
                    reason.words_vi(),
                    "pin chỉ còn khoảng 4 phút (ngưỡng 5 phút)"
                );
            }
            s => panic!("{s:?}"),
        }
        let mut f = Feed::new(limits());
        f.poll(Some(ups("OB", None, Some(25.0)))).await;
        f.poll(Some(ups("OB", None, Some(19.5)))).await;
        let s = f.poll(Some(ups("OB", None, Some(19.0)))).await;
        assert_eq!(Feed::reason(&s), Some("charge"));
        // Exactly at the limit is not below it; unset limits never count.
        let mut f = Feed::new(Limits {
            runtime_below: None,
            charge_below: None,
            after_on_battery: None,
        });
        for _ in 0..5 {
            let s = f.poll(Some(ups("OB", Some(1.0), Some(1.0)))).await;
            assert!(Feed::reason(&s).is_none(), "{s:?}");
        }
        let mut f = Feed::new(limits());
        for _ in 0..5 {
            let s = f.poll(Some(ups("OB", Some(300.0), Some(20.0)))).await;
            assert!(Feed::reason(&s).is_none(), "{s:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn on_battery_longer_than_the_limit() {
        let mut f = Feed::new(Limits {
            after_on_battery: Some(Duration::from_secs(30)),
            ..limits()
        });
        f.poll(Some(ups("OL", None, None))).await;
        f.poll(Some(ups("OB", None, None))).await; // t = 0 on battery
        tokio::time::advance(Duration::from_secs(27)).await;
        assert_eq!(f.poll(Some(ups("OB", None, None))).await, Step::Nothing); // 28 s
        assert_eq!(f.poll(Some(ups("OB", None, None))).await, Step::Nothing); // 29 s
        assert_eq!(f.poll(Some(ups("OB", None, None))).await, Step::Nothing); // 30 s: 1
        let s = f.poll(Some(ups("OB", None, None))).await; // 31 s: 2
        assert_eq!(Feed::reason(&s), Some("on_battery_time"));
    }

    /// A long gap in readings (the UPS's link down for minutes, the mains
    /// perhaps back and gone again meanwhile): the time on battery starts
    /// again at the next good reading, it is not the whole gap.
    #[tokio::test(start_paused = true)]
    async fn a_long_gap_in_readings_restarts_the_time_on_battery() {
        let mut f = Feed::new(Limits {
            after_on_battery: Some(Duration::from_secs(30)),
            ..limits()
        });
        f.poll(Some(ups("OB", None, None))).await; // on battery at t = 0
        for _ in 0..3 {
            assert_eq!(f.poll(None).await, Step::Nothing); // failed polls
        }
        tokio::time::advance(GAP_RESTARTS_TIMER).await;
        assert_eq!(f.poll(Some(ups("OB", None, None))).await, Step::Nothing);
        assert_eq!(
            f.poll(Some(ups("OB", None, None))).await,
            Step::Nothing,
            "two good polls after the gap, but only a second on battery since"
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        f.poll(Some(ups("OB", None, None))).await;
        let s = f.poll(Some(ups("OB", None, None))).await;
        assert_eq!(Feed::reason(&s), Some("on_battery_time"), "{s:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn mains_back_restores_and_starts_again() {
        let mut f = Feed::new(limits());
        f.poll(Some(ups("OB", None, None))).await;
        f.poll(Some(ups("OB LB", None, None))).await;
        let s = f.poll(Some(ups("OL", None, None))).await;
        assert_eq!(
            s,
            Step::Restored {
                on_battery_for: Duration::from_secs(2)
            }
        );
        assert!(!f.d.on_battery());
        assert_eq!(f.poll(Some(ups("OL", None, None))).await, Step::Nothing);
        // The low reading before the mains came back does not count.
        assert_eq!(
            f.poll(Some(ups("OB LB", None, None))).await,
            Step::OnBattery
        );
        let s = f.poll(Some(ups("OB LB", None, None))).await;
        assert_eq!(Feed::reason(&s), Some("low_battery"));
        // LB while on mains (charging after a cut) is no reason.
        let mut f = Feed::new(limits());
        for _ in 0..5 {
            assert_eq!(
                f.poll(Some(ups("OL LB", Some(1.0), Some(1.0)))).await,
                Step::Nothing
            );
        }
    }
}
