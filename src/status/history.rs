//! The last 24 hours of a few key values per device, at 1-minute
//! resolution, kept in memory for the local page's charts.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use super::Snapshot;

/// Values worth a chart.
pub const CHARTED: &[&str] = &[
    "ups.load",
    "battery.charge",
    "ambient.temperature",
    "ambient.humidity",
];

/// Points kept per series: 24 h of minutes.
pub const POINTS: usize = 24 * 60;

/// (minute, value) points of one (device, value name).
type Series = BTreeMap<(String, String), VecDeque<(i64, f64)>>;

#[derive(Default)]
pub struct History {
    series: Mutex<Series>,
}

impl History {
    /// Records the snapshot's current values in the minute of `now_ms`
    /// (the last value in a minute wins).
    pub fn record(&self, snap: &Snapshot, now_ms: i64) {
        let minute = now_ms / 60_000 * 60_000;
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        for (id, d) in &snap.devices {
            for key in CHARTED {
                let Some(v) = d.last_values.get(key).and_then(|v| v.as_f64()) else {
                    continue;
                };
                let s = series.entry((id.clone(), (*key).to_owned())).or_default();
                match s.back_mut() {
                    Some((m, x)) if *m == minute => *x = v,
                    _ => s.push_back((minute, v)),
                }
                while s.len() > POINTS {
                    s.pop_front();
                }
            }
        }
    }

    /// The points of one series, oldest first.
    pub fn get(&self, device: &str, key: &str) -> Vec<(i64, f64)> {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        series
            .get(&(device.to_owned(), key.to_owned()))
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// An inline SVG line chart of `points` (no script, no external assets).
pub fn svg_chart(points: &[(i64, f64)], now_ms: i64, unit: &str) -> String {
    let (w, h) = (300.0, 80.0);
    if points.is_empty() {
        return String::new();
    }
    let t0 = (now_ms - 24 * 3_600_000) as f64;
    let mut lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let mut hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    if (hi - lo).abs() < 1e-9 {
        lo -= 1.0;
        hi += 1.0;
    }
    let xy = |t: i64, v: f64| {
        let x = ((t as f64 - t0) / (24.0 * 3_600_000.0) * w).clamp(0.0, w);
        let y = h - (v - lo) / (hi - lo) * (h - 10.0) - 5.0;
        format!("{x:.1},{y:.1}")
    };
    let path: Vec<String> = points.iter().map(|(t, v)| xy(*t, *v)).collect();
    format!(
        "<svg viewBox=\"0 0 {w} {h}\" class=\"chart\" role=\"img\"><polyline fill=\"none\" stroke=\"currentColor\" stroke-width=\"2\" points=\"{}\"/><text x=\"2\" y=\"10\">{hi:.1}{unit}</text><text x=\"2\" y=\"{}\">{lo:.1}{unit}</text></svg>",
        path.join(" "),
        h - 2.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::StatusHub;

    #[test]
    fn one_point_per_minute_and_a_day_at_most() {
        let hub = StatusHub::new("s");
        hub.add_device("ups1", "sim");
        let h = History::default();
        for i in 0..(POINTS as i64 + 100) {
            hub.update(|s| {
                s.devices
                    .get_mut("ups1")
                    .unwrap()
                    .last_values
                    .num("ups.load", i as f64);
            });
            // Two records in the same minute: the last wins.
            h.record(&hub.get(), i * 60_000);
            h.record(&hub.get(), i * 60_000 + 30_000);
        }
        let s = h.get("ups1", "ups.load");
        assert_eq!(s.len(), POINTS);
        assert_eq!(s.last().unwrap().1, (POINTS as i64 + 99) as f64);
        assert!(h.get("ups1", "ambient.humidity").is_empty());
        let svg = svg_chart(&s, (POINTS as i64 + 100) * 60_000, "%");
        assert!(svg.starts_with("<svg") && svg.contains("polyline"));
        assert!(!svg.contains("http"), "no external references");
    }
}
