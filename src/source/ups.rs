//! What every UPS source shares: turning changes of NUT's `ups.status`
//! tokens into events, at once.

use super::DeviceHandle;
use crate::model::{Severity, Values};

/// One status change worth telling the operations centre about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusEvent {
    pub severity: Severity,
    pub code: &'static str,
    pub message: &'static str,
}

fn has(status: &str, token: &str) -> bool {
    status.split_whitespace().any(|t| t == token)
}

/// (token, raised, cleared): what appearing and disappearing mean.
const TABLE: &[(&str, StatusEvent, Option<StatusEvent>)] = &[
    (
        "OB",
        StatusEvent {
            severity: Severity::Critical,
            code: "ups.on_battery",
            message: "UPS on battery: mains power lost",
        },
        Some(StatusEvent {
            severity: Severity::Info,
            code: "ups.on_line",
            message: "UPS back on mains power",
        }),
    ),
    (
        "LB",
        StatusEvent {
            severity: Severity::Critical,
            code: "ups.low_battery",
            message: "UPS battery low: the UPS will shut down soon",
        },
        Some(StatusEvent {
            severity: Severity::Info,
            code: "ups.battery_ok",
            message: "UPS battery no longer low",
        }),
    ),
    (
        "RB",
        StatusEvent {
            severity: Severity::Warning,
            code: "ups.replace_battery",
            message: "UPS asks for its battery to be replaced",
        },
        None,
    ),
    (
        "OVER",
        StatusEvent {
            severity: Severity::Warning,
            code: "ups.overload",
            message: "UPS overloaded",
        },
        Some(StatusEvent {
            severity: Severity::Info,
            code: "ups.overload_cleared",
            message: "UPS no longer overloaded",
        }),
    ),
    (
        "BYPASS",
        StatusEvent {
            severity: Severity::Warning,
            code: "ups.bypass",
            message: "UPS on bypass: the load is not protected",
        },
        Some(StatusEvent {
            severity: Severity::Info,
            code: "ups.bypass_ended",
            message: "UPS no longer on bypass",
        }),
    ),
    (
        "FSD",
        StatusEvent {
            severity: Severity::Critical,
            code: "ups.shutdown_pending",
            message: "UPS shutdown pending",
        },
        None,
    ),
    (
        "CAL",
        StatusEvent {
            severity: Severity::Info,
            code: "ups.test_started",
            message: "UPS battery test in progress",
        },
        Some(StatusEvent {
            severity: Severity::Info,
            code: "ups.test_ended",
            message: "UPS battery test ended",
        }),
    ),
    (
        "OFF",
        StatusEvent {
            severity: Severity::Critical,
            code: "ups.off",
            message: "UPS output is off",
        },
        Some(StatusEvent {
            severity: Severity::Info,
            code: "ups.on",
            message: "UPS output is on again",
        }),
    ),
];

/// Events for a change from `prev` (None: first reading) to `now`. On the
/// first reading only alarming tokens are reported.
pub fn status_events(prev: Option<&str>, now: &str) -> Vec<StatusEvent> {
    let mut out = Vec::new();
    for (token, raised, cleared) in TABLE {
        let was = prev.is_some_and(|p| has(p, token));
        let is = has(now, token);
        if is && !was {
            out.push(raised.clone());
        } else if was && !is {
            if let Some(c) = cleared {
                out.push(c.clone());
            }
        }
    }
    out
}

/// Sends the sample, with an event first for each change of `ups.status`.
pub fn publish(h: &DeviceHandle, last: &mut Option<String>, values: Values) {
    if let Some(crate::model::Value::Str(status)) = values.get("ups.status") {
        let status = status.clone();
        for ev in status_events(last.as_deref(), &status) {
            let mut v = Values::new();
            v.set("ups.status", status.clone());
            if let Some(p) = last.as_deref() {
                v.set("ups.status.previous", p);
            }
            h.event(ev.severity, ev.code, ev.message, v);
        }
        *last = Some(status);
    }
    h.sample(values);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(prev: Option<&str>, now: &str) -> Vec<&'static str> {
        status_events(prev, now).iter().map(|e| e.code).collect()
    }

    #[test]
    fn transitions() {
        assert_eq!(codes(None, "OL"), Vec::<&str>::new());
        assert_eq!(
            codes(None, "OB LB"),
            vec!["ups.on_battery", "ups.low_battery"]
        );
        assert_eq!(codes(Some("OL"), "OL"), Vec::<&str>::new());
        assert_eq!(codes(Some("OL"), "OB"), vec!["ups.on_battery"]);
        assert_eq!(codes(Some("OB"), "OB LB"), vec!["ups.low_battery"]);
        assert_eq!(
            codes(Some("OB LB"), "OL"),
            vec!["ups.on_line", "ups.battery_ok"]
        );
        assert_eq!(codes(Some("OL"), "OL RB"), vec!["ups.replace_battery"]);
        assert_eq!(codes(Some("OL RB"), "OL"), Vec::<&str>::new());
        assert_eq!(codes(Some("OL"), "OL BOOST"), Vec::<&str>::new());
        assert_eq!(
            codes(Some("OL"), "OB FSD"),
            vec!["ups.on_battery", "ups.shutdown_pending"]
        );
        let e = &status_events(Some("OL"), "OB")[0];
        assert_eq!(e.severity, Severity::Critical);
    }
}
