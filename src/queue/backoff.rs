//! Delay arithmetic for the queue: per-key exponential backoff and jitter. Pure functions and a
//! seeded `fastrand` generator; it must not hold queue state or read the clock.

use std::time::Duration;

/// The nominal (unjittered) delay before retry number `failures`, where `1` is the first failure:
/// `base * 2^(failures - 1)`, never more than `max`.
pub(super) fn backoff_delay(base: Duration, max: Duration, failures: u32) -> Duration {
    // `checked_shl` turns an exponent past 31 into "as large as possible" instead of wrapping
    // around to a tiny factor, which would make a server that failed 33 times retry in 5 s.
    let factor = 1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

/// Clamps a jitter fraction into `[0, 1]`, treating NaN and negatives as "no jitter", so that a
/// misconfigured fraction can never produce a negative or non-finite duration.
pub(super) fn clamp_fraction(fraction: f64) -> f64 {
    if fraction.is_finite() && fraction > 0.0 {
        fraction.min(1.0)
    } else {
        0.0
    }
}

/// The jitter source. It only has to spread servers apart, not resist prediction, so
/// `fastrand`'s wyrand is enough.
#[derive(Debug, Clone)]
pub(super) struct Jitter {
    rng: fastrand::Rng,
}

impl Jitter {
    /// Seeds from fastrand's per-thread generator, which std's random hash keys seed, so two
    /// daemons started in the same second (sharded over one checkout) do not jitter in lockstep.
    pub(super) fn seeded() -> Self {
        Self {
            rng: fastrand::Rng::new(),
        }
    }

    /// A generator with a fixed seed, for tests that need the same samples every run.
    #[cfg(test)]
    pub(super) fn from_seed(seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Scales `delay` by a uniform factor in `[1 - fraction, 1 + fraction]`.
    pub(super) fn spread(&mut self, delay: Duration, fraction: f64) -> Duration {
        let fraction = clamp_fraction(fraction);
        if fraction == 0.0 || delay.is_zero() {
            return delay;
        }
        let factor = 1.0 + fraction * (2.0 * self.rng.f64() - 1.0);
        // `try_from_secs_f64` instead of `mul_f64`: the latter panics on overflow, and a
        // `backoff_max` of `Duration::MAX` is a legal (if odd) configuration.
        Duration::try_from_secs_f64(delay.as_secs_f64() * factor).unwrap_or(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(5);
    const MAX: Duration = Duration::from_secs(600);

    #[test]
    fn backoff_doubles_from_the_base_and_stops_at_the_cap() {
        let delays: Vec<u64> = (1..=9).map(|n| backoff_delay(BASE, MAX, n).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 320, 600, 600]);
    }

    #[test]
    fn backoff_survives_absurd_failure_counts() {
        assert_eq!(backoff_delay(BASE, MAX, u32::MAX), MAX);
        assert_eq!(backoff_delay(BASE, Duration::MAX, 40), BASE.saturating_mul(u32::MAX));
    }

    #[test]
    fn spread_stays_within_the_fraction_and_covers_both_sides() {
        let mut jitter = Jitter::from_seed(7);
        let samples: Vec<Duration> = (0..1000)
            .map(|_| jitter.spread(Duration::from_secs(100), 0.1))
            .collect();
        assert!(samples.iter().all(|d| (90.0..=110.0).contains(&d.as_secs_f64())));
        assert!(samples.iter().any(|d| d.as_secs_f64() < 95.0));
        assert!(samples.iter().any(|d| d.as_secs_f64() > 105.0));
    }

    #[test]
    fn spread_ignores_nonsense_fractions_and_huge_delays() {
        let mut jitter = Jitter::from_seed(1);
        let delay = Duration::from_secs(10);
        assert_eq!(jitter.spread(delay, f64::NAN), delay);
        assert_eq!(jitter.spread(delay, -0.5), delay);
        assert!(jitter.spread(delay, 7.0) <= Duration::from_secs(20));
        let _ = jitter.spread(Duration::MAX, 1.0);
    }
}
