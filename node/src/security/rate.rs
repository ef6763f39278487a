//! Per-principal rate limits (token buckets): pushed rows per second per token or identity.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Token buckets by principal key; capacity = one second's worth.
pub struct RateLimiter {
    per_second: u32,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_second` calls per second per key; 0: unlimited.
    pub fn new(per_second: u32) -> Self {
        RateLimiter {
            per_second,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The configured rate.
    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Takes `n` units from `key`'s bucket at `now`, all or none. When the bucket holds
    /// fewer, nothing is taken and the error is how long until it holds `n` (never, for
    /// `n` above the capacity of one second: `Duration::MAX`).
    pub fn try_acquire_n(&self, key: &str, n: u32, now: Instant) -> Result<(), Duration> {
        if self.per_second == 0 {
            return Ok(());
        }
        let rate = f64::from(self.per_second);
        self.try_take(key, f64::from(n), rate, rate, now)
    }

    /// Takes `n` units from `key`'s bucket, which refills at `rate` per second up to
    /// `capacity` (the limiter's own rate is not used: callers with a rate per key, such
    /// as lookup quotas, pass theirs). All or none; the error is the wait until `n` fit
    /// (`Duration::MAX` if `n` exceeds `capacity`).
    pub fn try_take(
        &self,
        key: &str,
        n: f64,
        rate: f64,
        capacity: f64,
        now: Instant,
    ) -> Result<(), Duration> {
        if n > capacity || rate <= 0.0 {
            return Err(Duration::MAX);
        }
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        // Keys are tokens and configured identities: bounded by the cluster's state. A
        // key is allocated only the first time it is seen.
        if !b.contains_key(key) {
            b.insert(key.to_owned(), (capacity, now));
        }
        let Some((level, at)) = b.get_mut(key) else {
            return Ok(());
        };
        let refill = now.saturating_duration_since(*at).as_secs_f64() * rate;
        *level = (*level + refill).min(capacity);
        *at = now;
        if *level >= n {
            *level -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((n - *level) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_taken_all_or_none_with_a_wait_hint() {
        let r = RateLimiter::new(100);
        let t0 = Instant::now();
        assert_eq!(r.try_acquire_n("a", 60, t0), Ok(()));
        // 40 left: 60 more are refused whole (nothing taken) with the time to refill 20.
        let wait = r.try_acquire_n("a", 60, t0).unwrap_err();
        assert!(
            wait >= Duration::from_millis(199) && wait <= Duration::from_millis(201),
            "{wait:?}"
        );
        assert_eq!(r.try_acquire_n("a", 40, t0), Ok(()));
        assert_eq!(
            r.try_acquire_n("a", 20, t0 + Duration::from_millis(200)),
            Ok(())
        );
        // More than a second's worth can never be admitted.
        assert_eq!(r.try_acquire_n("b", 101, t0), Err(Duration::MAX));
        assert_eq!(
            RateLimiter::new(0).try_acquire_n("a", 1_000_000, t0),
            Ok(())
        );
    }

    #[test]
    fn bucket_allows_a_second_of_burst_then_refills() {
        let r = RateLimiter::new(5);
        let t0 = Instant::now();
        let take = |key: &str, at: Instant| r.try_acquire_n(key, 1, at).is_ok();
        assert_eq!((0..10).filter(|_| take("a", t0)).count(), 5);
        assert!(take("b", t0), "keys are independent");
        assert!(!take("a", t0 + Duration::from_millis(100)));
        assert!(take("a", t0 + Duration::from_millis(250)));
        assert!(RateLimiter::new(0).try_acquire_n("a", 1, t0).is_ok());
    }
}
