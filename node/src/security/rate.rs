//! Per-principal rate limits (token buckets): pushes per second per token or identity.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

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

    /// Takes one call from `key`'s bucket at `now`; false if it is empty.
    pub fn try_acquire(&self, key: &str, now: Instant) -> bool {
        if self.per_second == 0 {
            return true;
        }
        let rate = f64::from(self.per_second);
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        // Keys are tokens and configured identities: bounded by the cluster's state.
        let (level, at) = b.entry(key.to_owned()).or_insert((rate, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * rate;
        *level = (*level + refill).min(rate);
        *at = now;
        if *level >= 1.0 {
            *level -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_a_second_of_burst_then_refills() {
        let r = RateLimiter::new(5);
        let t0 = Instant::now();
        assert_eq!((0..10).filter(|_| r.try_acquire("a", t0)).count(), 5);
        assert!(r.try_acquire("b", t0), "keys are independent");
        assert!(!r.try_acquire("a", t0 + Duration::from_millis(100)));
        assert!(r.try_acquire("a", t0 + Duration::from_millis(250)));
        assert!(RateLimiter::new(0).try_acquire("a", t0));
    }
}
