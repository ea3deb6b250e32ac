//! Days, months and spans of time for the monthly report: local days at a
//! fixed UTC offset (Vietnam has no daylight saving), a month's bounds,
//! its office hours, and sets of half-open spans `[from, to)` in ms.

use super::ReportError;

const DAY_MS: i64 = 86_400_000;

/// A calendar month (`YYYY-MM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Month {
    pub year: i32,
    /// 1-12.
    pub month: u32,
}

impl std::str::FromStr for Month {
    type Err = ReportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ReportError::Month(s.chars().take(32).collect());
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 || !(y.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u32 = m.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) || year < 1970 {
            return Err(bad());
        }
        Ok(Month { year, month })
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl Month {
    /// The month after this one.
    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// The month before this one.
    pub fn prev(self) -> Month {
        if self.month == 1 {
            Month {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Month {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    /// Its first local day (days since 1970-01-01).
    pub fn first_day(self) -> i64 {
        days_from_civil(i64::from(self.year), self.month, 1)
    }

    /// Its local days, first to last.
    pub fn days(self) -> std::ops::Range<i64> {
        self.first_day()..self.next().first_day()
    }

    /// `[start, end)` in UTC ms, for local time at `offset_s` east of UTC.
    pub fn bounds_ms(self, offset_s: i32) -> (i64, i64) {
        let off = i64::from(offset_s) * 1000;
        (
            self.first_day() * DAY_MS - off,
            self.next().first_day() * DAY_MS - off,
        )
    }

    /// The month holding `ms` at `offset_s`.
    pub fn of_ms(ms: i64, offset_s: i32) -> Month {
        let (y, m, _) = civil(local_day(ms, offset_s));
        Month {
            year: i32::try_from(y).unwrap_or(1970),
            month: m,
        }
    }
}

pub use crate::history::local_day;

/// Monday 0 … Sunday 6 (1970-01-01 was a Thursday).
pub fn weekday(day: i64) -> usize {
    usize::try_from((day + 3).rem_euclid(7)).unwrap_or(0)
}

/// Days since 1970-01-01 of a date (Howard Hinnant's days-from-civil).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (days-to-civil).
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYY-MM-DD` of a day number.
pub fn date(day: i64) -> String {
    let (y, m, d) = civil(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Spans `[from, to)`, sorted, not overlapping, not touching.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spans(Vec<(i64, i64)>);

impl Spans {
    /// The union of any spans (empty ones dropped).
    pub fn of(mut v: Vec<(i64, i64)>) -> Spans {
        v.retain(|(a, b)| a < b);
        v.sort_unstable();
        let mut out: Vec<(i64, i64)> = Vec::with_capacity(v.len());
        for (a, b) in v {
            match out.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        Spans(out)
    }

    pub fn one(from: i64, to: i64) -> Spans {
        Spans::of(vec![(from, to)])
    }

    pub fn spans(&self) -> &[(i64, i64)] {
        &self.0
    }

    /// Total length (ms).
    pub fn total(&self) -> i64 {
        self.0.iter().map(|(a, b)| b - a).sum()
    }

    pub fn intersect(&self, other: &Spans) -> Spans {
        let (mut i, mut j) = (0, 0);
        let mut out = Vec::new();
        while i < self.0.len() && j < other.0.len() {
            let (a, b) = self.0[i];
            let (c, d) = other.0[j];
            let (lo, hi) = (a.max(c), b.min(d));
            if lo < hi {
                out.push((lo, hi));
            }
            if b < d {
                i += 1;
            } else {
                j += 1;
            }
        }
        Spans(out)
    }

    pub fn minus(&self, other: &Spans) -> Spans {
        let mut out = Vec::new();
        for &(a, b) in &self.0 {
            let mut from = a;
            for &(c, d) in other.0.iter().filter(|(c, d)| *d > a && *c < b) {
                if c > from {
                    out.push((from, c));
                }
                from = from.max(d);
            }
            if from < b {
                out.push((from, b));
            }
        }
        Spans(out)
    }

    /// How many spans touch `window` at all.
    pub fn count_within(&self, window: &Spans) -> usize {
        self.0
            .iter()
            .filter(|(a, b)| window.0.iter().any(|(c, d)| a < d && c < b))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_months() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(date(days_from_civil(2026, 12, 7)), "2026-12-07");
        assert_eq!(date(days_from_civil(2024, 2, 29)), "2024-02-29");
        // 2026-12-07 is a Monday.
        assert_eq!(weekday(days_from_civil(2026, 12, 7)), 0);
        let feb: Month = "2024-02".parse().unwrap();
        assert_eq!(feb.days().count(), 29);
        assert_eq!(
            "2026-12".parse::<Month>().unwrap().next().to_string(),
            "2027-01"
        );
        for bad in [
            "2026-13",
            "2026-1",
            "26-01",
            "2026-00",
            "x",
            "2026-01-01",
            "١٢٣٤-01",
        ] {
            assert!(bad.parse::<Month>().is_err(), "{bad}");
        }
        // December 2026 in Vietnam starts at 17:00 UTC on 30 November.
        let (a, b) = "2026-12".parse::<Month>().unwrap().bounds_ms(7 * 3600);
        assert_eq!(a, days_from_civil(2026, 11, 30) * DAY_MS + 17 * 3_600_000);
        assert_eq!(b - a, 31 * DAY_MS);
        assert_eq!(Month::of_ms(a, 7 * 3600).to_string(), "2026-12");
        assert_eq!(Month::of_ms(a - 1, 7 * 3600).to_string(), "2026-11");
    }

    #[test]
    fn span_sets() {
        let s = Spans::of(vec![(5, 10), (0, 3), (3, 4), (9, 12), (20, 20)]);
        assert_eq!(s.spans(), &[(0, 4), (5, 12)]);
        assert_eq!(s.total(), 11);
        let w = Spans::of(vec![(2, 6), (11, 30)]);
        assert_eq!(s.intersect(&w).spans(), &[(2, 4), (5, 6), (11, 12)]);
        assert_eq!(s.minus(&w).spans(), &[(0, 2), (6, 11)]);
        assert_eq!(s.count_within(&Spans::one(4, 5)), 0);
        assert_eq!(s.count_within(&Spans::one(3, 6)), 2);
    }
}
