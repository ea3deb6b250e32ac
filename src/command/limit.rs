//! The rate at which command requests reach the dispatcher: a token
//! bucket, pure (the caller passes the time), checked by the MQTT task as
//! it hands a request over.
//!
//! Every request that runs or is rejected costs the gateway: a reply (or
//! three) in the spool, a SQLite write when its reply is remembered, a log
//! line. Anyone who can publish on the command topics could otherwise make
//! it spend without end. Requests past the rate are dropped before they
//! are copied or queued: no reply (which would cost a spool record, the
//! very thing a flood must not take), one more in `commands.limited`, and
//! a warning now and then (not one per request: a flood must not flood the
//! journal either).

use std::time::{Duration, Instant};

/// Requests per second the dispatcher takes, on average. The operations
/// centre sends a command now and then, a fleet-wide sweep a few per
/// gateway; ten a second is far above that, and at three reply records a
/// request still little for the card and the link to carry.
pub(crate) const RATE_PER_SEC: u32 = 10;

/// Requests taken at once before the rate applies: a reconnect delivers
/// every retained request together, and the IOC may send a handful at
/// once (config.get, then config.set, then status).
pub(crate) const BURST: u32 = 50;

/// At most one warning about refused requests in this long.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);

/// A token bucket of `burst` tokens, refilled at `rate` a second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// Full at `now`.
    pub fn new(rate_per_sec: u32, burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            rate: f64::from(rate_per_sec),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// Takes a token if there is one at `now`. A `now` before the last one
    /// (it cannot happen with `Instant`, but a caller might mix sources)
    /// adds nothing.
    pub fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The bucket with the bookkeeping of its warnings.
#[derive(Debug, Clone)]
pub struct Limiter {
    bucket: TokenBucket,
    /// When the last warning was logged.
    warned: Option<Instant>,
    /// Refused since the last warning.
    unreported: u64,
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the dispatcher.
    Take,
    /// Drop it and count it; nothing to log.
    Refuse,
    /// Drop it, count it, and warn: `n` refused since the last warning
    /// (this one included).
    RefuseAndWarn(u64),
}

impl Limiter {
    /// The gateway's limiter ([`RATE_PER_SEC`], [`BURST`]).
    pub fn new(now: Instant) -> Limiter {
        Limiter::with(TokenBucket::new(RATE_PER_SEC, BURST, now))
    }

    pub fn with(bucket: TokenBucket) -> Limiter {
        Limiter {
            bucket,
            warned: None,
            unreported: 0,
        }
    }

    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.bucket.take(now) {
            return Verdict::Take;
        }
        self.unreported += 1;
        let due = self
            .warned
            .is_none_or(|t| now.saturating_duration_since(t) >= WARN_EVERY);
        if due {
            self.warned = Some(now);
            let n = std::mem::take(&mut self.unreported);
            Verdict::RefuseAndWarn(n)
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 50, t0);
        assert_eq!((0..60).filter(|_| b.take(t0)).count(), 50, "the burst");
        assert!(!b.take(t0));
        // A tenth of a second gives one more.
        assert!(b.take(t0 + Duration::from_millis(100)));
        assert!(!b.take(t0 + Duration::from_millis(100)));
        // Over ten seconds, a hundred: the rate, never more than the
        // burst at once.
        let mut taken = 0;
        for ms in (200..=10_100).step_by(10) {
            if b.take(t0 + Duration::from_millis(ms)) {
                taken += 1;
            }
        }
        assert!((99..=100).contains(&taken), "{taken}");
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..60).filter(|_| b.take(later)).count(), 50);
        // Time going backwards adds nothing.
        assert!(!b.take(t0));
    }

    #[test]
    fn refusals_are_warned_about_now_and_then_with_their_number() {
        let t0 = Instant::now();
        let mut l = Limiter::with(TokenBucket::new(1, 2, t0));
        assert_eq!(l.check(t0), Verdict::Take);
        assert_eq!(l.check(t0), Verdict::Take);
        assert_eq!(l.check(t0), Verdict::RefuseAndWarn(1));
        assert_eq!(l.check(t0), Verdict::Refuse);
        assert_eq!(l.check(t0 + Duration::from_millis(500)), Verdict::Refuse);
        let t1 = t0 + WARN_EVERY;
        // Ten seconds refilled the bucket: taken, nothing to report yet.
        assert_eq!(l.check(t1), Verdict::Take);
        assert_eq!(l.check(t1), Verdict::Take);
        assert_eq!(l.check(t1), Verdict::RefuseAndWarn(3));
    }
}
