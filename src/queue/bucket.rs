//! The global token bucket on reconcile starts. It only does arithmetic on instants handed to it;
//! it must not read the clock, sleep or spawn a refill task (an idle daemon must not tick).

use std::time::Duration;

use tokio::time::Instant;

/// Slower rates are raised to this interval, so that the bookkeeping below cannot push an
/// `Instant` past what the platform can represent.
const SLOWEST_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// A token bucket held as its "theoretical arrival time" (the GCRA form): `tat` is the instant at
/// which the bucket would be full again. A start is allowed when `tat - (burst - 1) * interval`
/// has passed, and each start pushes `tat` one interval further.
///
/// This admits exactly what a bucket of `burst` tokens refilled at `1 / interval` per second
/// admits, but with integer `Instant` arithmetic: a worker that sleeps until [`ready_at`] always
/// finds its token, whereas a floating-point token count can come up 1e-9 short and send it
/// back to sleep for a nanosecond, over and over.
///
/// [`ready_at`]: TokenBucket::ready_at
#[derive(Debug)]
pub(super) struct TokenBucket {
    /// `None` when the configured rate disables limiting.
    interval: Option<Duration>,
    tolerance: Duration,
    tat: Instant,
}

impl TokenBucket {
    /// A full bucket. A `rate_per_sec` that is not a positive finite number disables the limit; a
    /// `burst` of 0 is treated as 1, because a bucket that holds no token would never start work.
    pub(super) fn new(rate_per_sec: f64, burst: u32, now: Instant) -> Self {
        let interval = (rate_per_sec.is_finite() && rate_per_sec > 0.0)
            .then(|| Duration::try_from_secs_f64(rate_per_sec.recip()).unwrap_or(SLOWEST_INTERVAL))
            .map(|interval| interval.min(SLOWEST_INTERVAL))
            .filter(|interval| !interval.is_zero());
        let tolerance = interval.unwrap_or_default().saturating_mul(burst.max(1) - 1);
        Self {
            interval,
            tolerance,
            tat: now,
        }
    }

    /// The earliest instant at or after `now` at which a token is available.
    pub(super) fn ready_at(&self, now: Instant) -> Instant {
        let tat = self.tat.max(now);
        // An underflow means the allowance reaches back before the clock's origin: available now.
        tat.checked_sub(self.tolerance).map_or(now, |at| at.max(now))
    }

    /// Whether a token is available at `now`, without taking it.
    pub(super) fn has_token(&self, now: Instant) -> bool {
        self.interval.is_none() || self.ready_at(now) <= now
    }

    /// Takes a token if one is available at `now`.
    pub(super) fn try_take(&mut self, now: Instant) -> bool {
        let Some(interval) = self.interval else {
            return true;
        };
        if self.ready_at(now) > now {
            return false;
        }
        let tat = self.tat.max(now);
        // Cannot overflow in practice (interval is at most a day); if it did, keeping `tat` only
        // makes the bucket more generous, never stuck.
        self.tat = tat.checked_add(interval).unwrap_or(tat);
        true
    }
}

impl TokenBucket {
    /// Gives back a token taken for work that did not happen (a suspended server's pass
    /// opens no connection), never beyond a full bucket.
    pub(super) fn refund(&mut self, now: Instant) {
        if let Some(interval) = self.interval {
            self.tat = self.tat.checked_sub(interval).map_or(now, |tat| tat.max(now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refunded_token_can_be_taken_again_but_never_overfills_the_bucket() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 2, start);
        assert!(bucket.try_take(start) && bucket.try_take(start));
        assert!(!bucket.try_take(start));
        bucket.refund(start);
        assert!(bucket.try_take(start));
        assert!(!bucket.try_take(start));
        let mut full = TokenBucket::new(10.0, 2, start);
        full.refund(start);
        full.refund(start);
        assert_eq!((0..5).filter(|_| full.try_take(start)).count(), 2);
    }

    #[test]
    fn a_full_bucket_grants_the_burst_then_one_per_interval() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 100, start);
        assert_eq!((0..100).filter(|_| bucket.try_take(start)).count(), 100);
        assert!(!bucket.try_take(start));
        assert_eq!(bucket.ready_at(start), start + Duration::from_millis(100));
        let later = start + Duration::from_millis(100);
        assert!(bucket.try_take(later));
        assert!(!bucket.has_token(later));
    }

    #[test]
    fn an_idle_bucket_refills_only_up_to_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 3, start);
        let later = start + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| bucket.try_take(later)).count(), 3);
    }

    #[test]
    fn nonsense_rates_disable_the_limit_and_a_zero_burst_still_grants_one() {
        let now = Instant::now();
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let mut bucket = TokenBucket::new(rate, 1, now);
            assert!((0..1000).all(|_| bucket.try_take(now)), "rate {rate}");
        }
        let mut bucket = TokenBucket::new(1.0, 0, now);
        assert!(bucket.try_take(now));
        assert!(!bucket.try_take(now));
    }
}
