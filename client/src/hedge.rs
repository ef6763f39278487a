//! When to hedge: a fixed delay, or a running percentile of recent sub-request latency
//! per batch-size class.

use std::sync::Mutex;
use std::time::Duration;

use crate::config::Hedging;

/// Batch-size classes: 1, 2–10, 11–100, 101–500, more.
const CLASS_BOUNDS: [usize; 4] = [1, 10, 100, 500];
const CLASSES: usize = CLASS_BOUNDS.len() + 1;
/// Log-spaced buckets: 50 µs × 1.25^i.
const BUCKETS: usize = 64;
const FIRST_BUCKET_MICROS: f64 = 50.0;
const GROWTH: f64 = 1.25;
/// Samples before a class's percentile is trusted.
const MIN_SAMPLES: u64 = 50;
/// Counts are halved every this many samples, so the percentile follows recent latency.
const DECAY_EVERY: u64 = 2000;

fn class_of(keys: usize) -> usize {
    CLASS_BOUNDS
        .iter()
        .position(|b| keys <= *b)
        .unwrap_or(CLASSES - 1)
}

fn bucket_of(d: Duration) -> usize {
    let us = d.as_secs_f64() * 1e6;
    if us <= FIRST_BUCKET_MICROS {
        return 0;
    }
    (((us / FIRST_BUCKET_MICROS).ln() / GROWTH.ln()).ceil() as usize).min(BUCKETS - 1)
}

fn bucket_upper(i: usize) -> Duration {
    Duration::from_secs_f64(FIRST_BUCKET_MICROS * GROWTH.powi(i as i32) / 1e6)
}

#[derive(Debug, Clone)]
struct Histogram {
    counts: [u64; BUCKETS],
    total: u64,
    since_decay: u64,
}

impl Histogram {
    fn record(&mut self, d: Duration) {
        self.counts[bucket_of(d)] += 1;
        self.total += 1;
        self.since_decay += 1;
        if self.since_decay >= DECAY_EVERY {
            self.since_decay = 0;
            self.total = 0;
            for c in &mut self.counts {
                *c /= 2;
                self.total += *c;
            }
        }
    }

    fn percentile(&self, p: f64) -> Option<Duration> {
        if self.total < MIN_SAMPLES {
            return None;
        }
        let rank = ((p / 100.0) * self.total as f64).ceil() as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_upper(i));
            }
        }
        Some(bucket_upper(BUCKETS - 1))
    }
}

/// Decides when to hedge a sub-request.
#[derive(Debug)]
pub(crate) struct HedgePolicy {
    hedging: Hedging,
    classes: Mutex<Vec<Histogram>>,
}

impl HedgePolicy {
    pub(crate) fn new(hedging: Hedging) -> Self {
        HedgePolicy {
            hedging,
            classes: Mutex::new(vec![
                Histogram {
                    counts: [0; BUCKETS],
                    total: 0,
                    since_decay: 0,
                };
                CLASSES
            ]),
        }
    }

    /// Records a completed sub-request of `keys` keys.
    pub(crate) fn record(&self, keys: usize, latency: Duration) {
        if matches!(self.hedging, Hedging::Percentile { .. }) {
            self.classes.lock().unwrap_or_else(|p| p.into_inner())[class_of(keys)].record(latency);
        }
    }

    /// How long to wait before hedging a sub-request of `keys` keys; `None`: never.
    pub(crate) fn delay(&self, keys: usize) -> Option<Duration> {
        match &self.hedging {
            Hedging::Off => None,
            Hedging::Fixed(d) => Some(*d),
            Hedging::Percentile {
                percentile,
                min_delay,
            } => {
                let p = self.classes.lock().unwrap_or_else(|p| p.into_inner())[class_of(keys)]
                    .percentile(*percentile);
                Some(p.map_or(*min_delay, |p| p.max(*min_delay)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_tracks_each_batch_class_separately() {
        let p = HedgePolicy::new(Hedging::Percentile {
            percentile: 90.0,
            min_delay: Duration::from_micros(100),
        });
        // Too few samples: the floor.
        assert_eq!(p.delay(1), Some(Duration::from_micros(100)));
        for i in 0..100u64 {
            // 90 fast (1 ms), 10 slow (50 ms) single-key requests.
            let d = if i % 10 == 0 { 50 } else { 1 };
            p.record(1, Duration::from_millis(d));
            p.record(100, Duration::from_millis(20));
        }
        let d1 = p.delay(1).unwrap();
        assert!(
            d1 >= Duration::from_millis(1) && d1 < Duration::from_micros(1300),
            "{d1:?}"
        );
        let d100 = p.delay(100).unwrap();
        assert!(
            d100 >= Duration::from_millis(20) && d100 < Duration::from_millis(26),
            "{d100:?}"
        );
        assert_eq!(
            HedgePolicy::new(Hedging::Fixed(Duration::from_millis(7))).delay(5),
            Some(Duration::from_millis(7))
        );
        assert_eq!(HedgePolicy::new(Hedging::Off).delay(5), None);
    }

    #[test]
    fn classes_and_buckets() {
        assert_eq!(class_of(1), 0);
        assert_eq!(class_of(2), 1);
        assert_eq!(class_of(100), 2);
        assert_eq!(class_of(1000), 4);
        for ms in [1u64, 3, 10, 100] {
            let d = Duration::from_millis(ms);
            assert!(bucket_upper(bucket_of(d)) >= d);
            assert!(bucket_upper(bucket_of(d)) < d.mul_f64(GROWTH + 0.01));
        }
    }
}
