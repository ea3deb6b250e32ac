//! Thresholds on any numeric value of any device: high/low limits with
//! hysteresis and a minimum duration, raising an event when crossed and a
//! clearing event when back. The state machine is pure; time is passed in.

use std::time::Duration;

use serde::Deserialize;

use crate::events;
use crate::model::Severity;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdConfig {
    /// The value to watch, e.g. `ambient.temperature`.
    pub value: String,
    #[serde(default)]
    pub high: Option<f64>,
    #[serde(default)]
    pub low: Option<f64>,
    /// How far back across the limit the value must come to clear.
    #[serde(default)]
    pub hysteresis: f64,
    /// How long the value must stay past the limit before the alarm.
    #[serde(default, rename = "for", with = "humantime_serde")]
    pub for_: Duration,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// What is measured, in Vietnamese (e.g. "phòng máy") and English.
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub label_en: Option<String>,
    /// Unit shown in messages (e.g. "°C").
    #[serde(default)]
    pub unit: String,
}

fn default_severity() -> Severity {
    Severity::Warning
}

impl ThresholdConfig {
    /// Problems with this threshold, for config validation.
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.high.is_none() && self.low.is_none() {
            p.push(format!("{key}: give high, low or both"));
        }
        if let (Some(h), Some(l)) = (self.high, self.low) {
            if l >= h {
                p.push(format!("{key}: low {l} must be below high {h}"));
            }
        }
        if !(self.hysteresis >= 0.0 && self.hysteresis.is_finite()) {
            p.push(format!(
                "{key}.hysteresis: {} must be 0 or more",
                self.hysteresis
            ));
        }
        if self.value.is_empty() {
            p.push(format!("{key}.value: must name a value"));
        }
        p
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    High,
    Low,
}

/// A change worth an event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Transition {
    Raised { side: Side, value: f64, limit: f64 },
    Cleared { side: Side, value: f64, limit: f64 },
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ThresholdState {
    /// Since when the value has been past a limit, and which.
    pending: Option<(Side, Duration)>,
    active: Option<Side>,
}

impl ThresholdState {
    /// Feeds one reading taken at `now` (any monotonic clock).
    pub(crate) fn update(
        &mut self,
        cfg: &ThresholdConfig,
        value: f64,
        now: Duration,
    ) -> Option<Transition> {
        if let Some(side) = self.active {
            let (limit, back) = match side {
                Side::High => {
                    let l = cfg.high.unwrap_or(f64::INFINITY);
                    (l, value <= l - cfg.hysteresis)
                }
                Side::Low => {
                    let l = cfg.low.unwrap_or(f64::NEG_INFINITY);
                    (l, value >= l + cfg.hysteresis)
                }
            };
            if back {
                self.active = None;
                self.pending = None;
                return Some(Transition::Cleared { side, value, limit });
            }
            return None;
        }
        let past = match (cfg.high, cfg.low) {
            (Some(h), _) if value > h => Some((Side::High, h)),
            (_, Some(l)) if value < l => Some((Side::Low, l)),
            _ => None,
        };
        match past {
            None => {
                self.pending = None;
                None
            }
            Some((side, limit)) => {
                let since = match self.pending {
                    Some((s, t)) if s == side => t,
                    _ => {
                        self.pending = Some((side, now));
                        now
                    }
                };
                if now.saturating_sub(since) >= cfg.for_ {
                    self.active = Some(side);
                    self.pending = None;
                    Some(Transition::Raised { side, value, limit })
                } else {
                    None
                }
            }
        }
    }
}

/// (code, English message, Vietnamese message) for a transition.
pub(crate) fn describe(cfg: &ThresholdConfig, t: &Transition) -> (&'static str, String, String) {
    let en = cfg
        .label_en
        .clone()
        .or_else(|| cfg.label.clone())
        .unwrap_or_else(|| cfg.value.clone());
    let vi = cfg.label.clone().unwrap_or_else(|| en.clone());
    let u = if cfg.unit.is_empty() {
        String::new()
    } else {
        format!(" {}", cfg.unit)
    };
    let (ev, value, limit) = match t {
        Transition::Raised { side, value, limit } => (
            if *side == Side::High {
                events::THRESHOLD_HIGH
            } else {
                events::THRESHOLD_LOW
            },
            value,
            limit,
        ),
        Transition::Cleared { value, limit, .. } => (events::THRESHOLD_CLEARED, value, limit),
    };
    let en = ev.render(&[
        ("label", &en),
        ("value", value),
        ("limit", limit),
        ("unit", &u),
    ]);
    let vi = ev
        .render_vi(&[
            ("label", &vi),
            ("value", value),
            ("limit", limit),
            ("unit", &u),
        ])
        .unwrap_or_default();
    (ev.code, en, vi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(high: Option<f64>, low: Option<f64>, hyst: f64, for_: u64) -> ThresholdConfig {
        ThresholdConfig {
            value: "ambient.temperature".into(),
            high,
            low,
            hysteresis: hyst,
            for_: Duration::from_secs(for_),
            severity: Severity::Warning,
            label: Some("phòng máy".into()),
            label_en: Some("equipment room".into()),
            unit: "°C".into(),
        }
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn minimum_duration_hysteresis_and_clearing() {
        let c = cfg(Some(35.0), None, 2.0, 60);
        let mut st = ThresholdState::default();
        assert_eq!(st.update(&c, 36.0, s(0)), None, "not yet: for = 60 s");
        assert_eq!(
            st.update(&c, 34.0, s(30)),
            None,
            "dipped back: timer restarts"
        );
        assert_eq!(st.update(&c, 38.5, s(40)), None);
        assert_eq!(st.update(&c, 38.0, s(99)), None);
        assert_eq!(
            st.update(&c, 38.5, s(100)),
            Some(Transition::Raised {
                side: Side::High,
                value: 38.5,
                limit: 35.0
            })
        );
        assert_eq!(st.update(&c, 40.0, s(110)), None, "raised once");
        assert_eq!(
            st.update(&c, 34.0, s(120)),
            None,
            "within hysteresis: still high"
        );
        assert_eq!(
            st.update(&c, 33.0, s(130)),
            Some(Transition::Cleared {
                side: Side::High,
                value: 33.0,
                limit: 35.0
            })
        );
        assert_eq!(st.update(&c, 33.0, s(140)), None);
    }

    #[test]
    fn low_limit() {
        let c = cfg(None, Some(20.0), 5.0, 0);
        let mut st = ThresholdState::default();
        assert!(matches!(
            st.update(&c, 19.0, s(0)),
            Some(Transition::Raised {
                side: Side::Low,
                ..
            })
        ));
        assert_eq!(st.update(&c, 24.0, s(1)), None);
        assert!(matches!(
            st.update(&c, 25.0, s(2)),
            Some(Transition::Cleared { .. })
        ));
    }

    #[test]
    fn messages_in_both_languages() {
        let c = cfg(Some(35.0), None, 0.0, 0);
        let (code, en, vi) = describe(
            &c,
            &Transition::Raised {
                side: Side::High,
                value: 38.5,
                limit: 35.0,
            },
        );
        assert_eq!(code, "threshold.high");
        assert_eq!(en, "equipment room 38.5 °C > 35 °C");
        assert_eq!(vi, "phòng máy 38.5 °C > 35 °C");
        let low = cfg(None, Some(18.0), 0.0, 0);
        let t = Transition::Raised {
            side: Side::Low,
            value: 17.25,
            limit: 18.0,
        };
        assert_eq!(
            describe(&low, &t),
            (
                "threshold.low",
                "equipment room 17.25 °C < 18 °C".to_owned(),
                "phòng máy 17.25 °C < 18 °C".to_owned()
            )
        );
        let bare = ThresholdConfig {
            label: None,
            label_en: None,
            unit: String::new(),
            ..low
        };
        let t = Transition::Cleared {
            side: Side::Low,
            value: 19.0,
            limit: 18.0,
        };
        assert_eq!(
            describe(&bare, &t),
            (
                "threshold.cleared",
                "ambient.temperature back to normal: 19".to_owned(),
                "ambient.temperature đã trở lại bình thường: 19".to_owned()
            )
        );
    }

    #[test]
    fn config_problems() {
        assert!(!cfg(None, None, 0.0, 0).problems("t").is_empty());
        assert!(!cfg(Some(1.0), Some(2.0), 0.0, 0).problems("t").is_empty());
        assert!(!cfg(Some(1.0), None, -1.0, 0).problems("t").is_empty());
        assert!(cfg(Some(2.0), Some(1.0), 0.5, 0).problems("t").is_empty());
    }
}
