//! The last 24 hours of a few key values per device, at 1-minute
//! resolution, kept in memory for the local page's charts.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use super::words::{number, Catchup, Zone};
use super::Snapshot;

/// Values worth a chart.
pub const CHARTED: &[&str] = &[
    "ups.load",
    "battery.charge",
    "ambient.temperature",
    "ambient.humidity",
    "cpu.temperature",
];

/// How long a window the drain rate of the backlog is measured over.
const RATE_WINDOW_MS: i64 = 60_000;

/// Points kept per series: 24 h of minutes.
pub const POINTS: usize = 24 * 60;

/// (minute, value) points of one (device, value name).
type Series = BTreeMap<(String, String), VecDeque<(i64, f64)>>;

#[derive(Default)]
pub struct History {
    series: Mutex<Series>,
    backlog: Mutex<Backlog>,
}

/// The spool's depth over the last minute, and its peak since it was last
/// empty: what the catch-up after an outage is measured from.
#[derive(Default)]
struct Backlog {
    peak: u64,
    /// (ms, depth) while the link has been in its current state.
    points: VecDeque<(i64, u64)>,
    connected: bool,
}

/// Records waiting to be sent: on disk, plus those in memory while the
/// link is down (with the link up, a few are always in flight).
pub fn depth(snap: &Snapshot) -> u64 {
    if snap.uplink.connected {
        snap.spool.disk_rows
    } else {
        snap.spool.disk_rows + snap.spool.memory
    }
}

impl History {
    /// Records the snapshot's current values in the minute of `now_ms`
    /// (the last value in a minute wins).
    pub fn record(&self, snap: &Snapshot, now_ms: i64) {
        {
            let mut b = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
            let d = depth(snap);
            if b.connected != snap.uplink.connected {
                // The rate is measured while the link stays up (or down).
                b.connected = snap.uplink.connected;
                b.points.clear();
            }
            if d == 0 {
                b.peak = 0;
                b.points.clear();
            } else {
                b.peak = b.peak.max(d);
                b.points.push_back((now_ms, d));
                while b
                    .points
                    .front()
                    .is_some_and(|(t, _)| now_ms - t > RATE_WINDOW_MS)
                {
                    b.points.pop_front();
                }
            }
        }
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

    /// The catch-up after an outage, while the link is up and records are
    /// still waiting: how many of the peak were sent again, and the drain
    /// rate measured over the last minute.
    pub fn catchup(&self, snap: &Snapshot) -> Option<Catchup> {
        let left = depth(snap);
        if !snap.uplink.connected || left == 0 {
            return None;
        }
        let b = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
        let total = b.peak.max(left);
        let rate = match (b.points.front(), b.points.back()) {
            (Some((t0, d0)), Some((t1, d1))) if t1 - t0 >= 2_000 && d0 > d1 => {
                Some((d0 - d1) as f64 / ((t1 - t0) as f64 / 1000.0))
            }
            _ => None,
        };
        Some(Catchup {
            sent: Some(total - left),
            total: Some(total),
            left,
            rate,
        })
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

/// An inline SVG line chart of `points` over the last 24 hours (no
/// script, no external assets): local-time labels on the time axis at
/// whole hours 6 hours apart, the lowest and highest value with `unit` on the value axis,
/// and the latest value marked with a dot and its number.
pub fn svg_chart(points: &[(i64, f64)], now_ms: i64, unit: &str, zone: Zone, lang: &str) -> String {
    // Plot area inside the box: room on the left for the value labels,
    // below for the time labels, on the right for the latest value.
    let (w, h) = (340.0, 110.0);
    let (x0, x1, y0, y1) = (44.0, 290.0, 8.0, 90.0);
    let Some(&(last_t, last_v)) = points.last() else {
        return String::new();
    };
    let day = 24.0 * 3_600_000.0;
    let t0 = now_ms as f64 - day;
    let mut lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let mut hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    if (hi - lo).abs() < 1e-9 {
        lo -= 1.0;
        hi += 1.0;
    }
    let decimals = if hi - lo < 10.0 { 1 } else { 0 };
    let x_of = |t: i64| x0 + ((t as f64 - t0) / day).clamp(0.0, 1.0) * (x1 - x0);
    let y_of = |v: f64| y1 - (v - lo) / (hi - lo) * (y1 - y0);
    let path: Vec<String> = points
        .iter()
        .map(|(t, v)| format!("{:.1},{:.1}", x_of(*t), y_of(*v)))
        .collect();
    let with_unit = |v: f64| {
        let n = number(v, decimals, lang);
        if unit.is_empty() {
            n
        } else {
            format!("{n} {unit}")
        }
    };
    let mut svg = format!(
        "<svg viewBox=\"0 0 {w} {h}\" class=\"chart\" role=\"img\">\
         <path class=\"axis\" d=\"M{x0} {y0}V{y1}H{x1}\" fill=\"none\" stroke=\"#999\" stroke-width=\"1\"/>\
         <polyline fill=\"none\" stroke=\"currentColor\" stroke-width=\"2\" points=\"{}\"/>\
         <text class=\"axis-value\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
         <text class=\"axis-value\" x=\"{}\" y=\"{y1}\" text-anchor=\"end\">{}</text>",
        path.join(" "),
        x0 - 3.0,
        y0 + 4.0,
        with_unit(hi),
        x0 - 3.0,
        with_unit(lo),
    );
    // Time labels every 6 hours, at local whole hours, the last one at the
    // latest whole hour.
    let last_hour = now_ms - zone.second_of_day(now_ms) % 3600 * 1000 - now_ms.rem_euclid(1000);
    for k in (0..4).rev() {
        let t = last_hour - k * 6 * 3_600_000;
        let x = x_of(t);
        let anchor = if x < x0 + 15.0 {
            "start"
        } else if x > x1 - 15.0 {
            "end"
        } else {
            "middle"
        };
        svg.push_str(&format!(
            "<text class=\"axis-time\" x=\"{x:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
            h - 6.0,
            zone.hhmm(t)
        ));
    }
    let (lx, ly) = (x_of(last_t), y_of(last_v));
    svg.push_str(&format!(
        "<circle class=\"latest\" cx=\"{lx:.1}\" cy=\"{ly:.1}\" r=\"3.5\" fill=\"currentColor\"/>\
         <text class=\"latest\" x=\"{:.1}\" y=\"{:.1}\">{}</text></svg>",
        lx + 5.0,
        (ly + 4.0).clamp(y0 + 4.0, y1),
        with_unit(last_v)
    ));
    svg
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
        let svg = svg_chart(&s, (POINTS as i64 + 100) * 60_000, "%", Zone::VIETNAM, "vi");
        assert!(svg.starts_with("<svg") && svg.contains("polyline"));
        // Axes: time labels in local time, the unit on the value axis,
        // the latest value marked.
        assert_eq!(svg.matches("class=\"axis-time\"").count(), 4, "{svg}");
        // Whole local hours: 2026-01-01 00:30 UTC is 07:30 in Vietnam.
        let day = svg_chart(&s, 1_767_227_400_000, "%", Zone::VIETNAM, "vi");
        for l in ["07:00", "01:00", "19:00", "13:00"] {
            assert!(day.contains(&format!(">{l}</text>")), "{l}: {day}");
        }
        assert!(
            svg.contains(&format!(
                ">{} %</text>",
                number((POINTS as i64 + 99) as f64, 0, "vi")
            )),
            "{svg}"
        );
        assert!(svg.contains("<circle class=\"latest\""), "{svg}");
        assert!(!svg.contains("http"), "no external references");
    }
}

#[cfg(test)]
mod catchup_tests {
    use super::*;
    use crate::status::StatusHub;

    #[test]
    fn catchup_from_depth_and_drain_rate() {
        let hub = StatusHub::new("s");
        let h = History::default();
        // Outage: 40 000 records pile up.
        hub.update(|s| {
            s.uplink.connected = false;
            s.spool.disk_rows = 39_990;
            s.spool.memory = 10;
        });
        h.record(&hub.get(), 0);
        assert_eq!(h.catchup(&hub.get()), None, "not while the link is down");
        // Link back: 100 records a second go.
        for i in 0..=10 {
            hub.update(|s| {
                s.uplink.connected = true;
                s.spool.memory = 0;
                s.spool.disk_rows = 40_000 - 100 * i;
            });
            h.record(&hub.get(), 1000 + i as i64 * 1000);
        }
        let c = h.catchup(&hub.get()).unwrap();
        assert_eq!(
            (c.sent, c.total, c.left),
            (Some(1000), Some(40_000), 39_000)
        );
        assert!((c.rate.unwrap() - 100.0).abs() < 1e-6, "{c:?}");
        assert_eq!(
            c.line("vi"),
            "Đang gửi lại dữ liệu đã lưu: 1.000 / 40.000 bản ghi, còn khoảng 7 phút"
        );
        // Empty: no catch-up, and the next outage starts from zero.
        hub.update(|s| s.spool.disk_rows = 0);
        h.record(&hub.get(), 20_000);
        assert_eq!(h.catchup(&hub.get()), None);
    }
}
