//! What every UPS source shares: turning changes of NUT's `ups.status`
//! tokens into events, at once.

use super::DeviceHandle;
use crate::events::{self, EventDef};
use crate::model::Values;

fn has(status: &str, token: &str) -> bool {
    status.split_whitespace().any(|t| t == token)
}

/// (token, raised, cleared): what appearing and disappearing mean.
const TABLE: &[(&str, EventDef, Option<EventDef>)] = &[
    ("OB", events::UPS_ON_BATTERY, Some(events::UPS_ON_LINE)),
    ("LB", events::UPS_LOW_BATTERY, Some(events::UPS_BATTERY_OK)),
    ("RB", events::UPS_REPLACE_BATTERY, None),
    (
        "OVER",
        events::UPS_OVERLOAD,
        Some(events::UPS_OVERLOAD_CLEARED),
    ),
    ("BYPASS", events::UPS_BYPASS, Some(events::UPS_BYPASS_ENDED)),
    ("FSD", events::UPS_SHUTDOWN_PENDING, None),
    (
        "CAL",
        events::UPS_TEST_STARTED,
        Some(events::UPS_TEST_ENDED),
    ),
    ("OFF", events::UPS_OFF, Some(events::UPS_ON)),
];

/// Events for a change from `prev` (None: first reading) to `now`. On the
/// first reading only alarming tokens are reported.
pub(crate) fn status_events(prev: Option<&str>, now: &str) -> Vec<EventDef> {
    let mut out = Vec::new();
    for (token, raised, cleared) in TABLE {
        let was = prev.is_some_and(|p| has(p, token));
        let is = has(now, token);
        if is && !was {
            out.push(*raised);
        } else if was && !is {
            if let Some(c) = cleared {
                out.push(*c);
            }
        }
    }
    out
}

/// Sends the sample, with an event first for each change of `ups.status`.
pub(crate) fn publish(h: &DeviceHandle, last: &mut Option<String>, values: Values) {
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
        assert_eq!(e.severity, crate::model::Severity::Critical);
        assert_eq!(e.message, "UPS on battery: mains power lost");
    }
}
