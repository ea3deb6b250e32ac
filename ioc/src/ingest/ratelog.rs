//! At most one log line per key (a site) per period: a broken gateway
//! sending thousands of bad payloads is logged once a minute with the
//! count of what was not logged; every one of them is still counted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLog {
    period: Duration,
    last: HashMap<String, (Instant, u64)>,
}

impl RateLog {
    pub fn new(period: Duration) -> Self {
        RateLog {
            period,
            last: HashMap::new(),
        }
    }

    /// `Some(n)`: log now, `n` lines were held back since the last one.
    pub fn allow(&mut self, key: &str, now: Instant) -> Option<u64> {
        match self.last.get_mut(key) {
            Some((at, held)) if now.duration_since(*at) < self.period => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let n = *held;
                *at = now;
                *held = 0;
                Some(n)
            }
            None => {
                if self.last.len() > 100_000 {
                    self.last.clear();
                }
                self.last.insert(key.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_key_per_period() {
        let mut r = RateLog::new(Duration::from_secs(60));
        let t = Instant::now();
        assert_eq!(r.allow("a", t), Some(0));
        assert_eq!(r.allow("a", t + Duration::from_secs(1)), None);
        assert_eq!(r.allow("b", t), Some(0));
        assert_eq!(r.allow("a", t + Duration::from_secs(2)), None);
        assert_eq!(r.allow("a", t + Duration::from_secs(61)), Some(2));
    }
}
