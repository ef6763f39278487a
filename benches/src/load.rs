//! Open-loop load: requests are issued on a fixed schedule (the arrival rate), not when the
//! previous one returns, and each latency is measured from the request's *intended* send
//! time. A stalled server therefore shows up as every request that should have been sent
//! during the stall being late — coordinated omission cannot hide queueing, as it does in
//! a closed loop that simply stops sending while it waits.
//!
//! Requests in flight are capped (`max_in_flight`); when the cap is reached the next
//! request waits for a slot, and its wait counts in its latency (its intended time does
//! not move).
//!
//! A system that cannot keep up would make such a run last far longer than planned (every
//! late request is still sent); with `give_up` set, the run stops issuing once a request
//! could not even be sent within that time of its intended send time, and reports itself
//! overloaded: its percentiles are then lower bounds.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use std::sync::Mutex;

use tokio::sync::Semaphore;
use tokio::time::Instant;

/// The shape of a run.
#[derive(Debug, Clone, Copy)]
pub struct OpenLoop {
    /// Arrival rate, requests per second.
    pub rate: f64,
    /// How long requests are issued for.
    pub duration: Duration,
    /// Most requests outstanding at once.
    pub max_in_flight: usize,
    /// Stop issuing when a request is this late before it could be sent.
    pub give_up: Option<Duration>,
    /// How send times are kept.
    pub pacing: Pacing,
    /// Keep every request's latency in the summary ([`LoadSummary::latencies`]), to see
    /// when in the run the slow ones were.
    pub keep_latencies: bool,
}

/// How the schedule is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// A dedicated thread sleeping with the OS timer's precision (tens of µs) hands each
    /// request to the runtime when it is due: for real runs, where the runtime timer's
    /// 1 ms granularity would add up to 1 ms to every latency.
    Thread,
    /// The async runtime's timer: follows tokio's paused time (tests).
    Runtime,
}

/// Yields `(i, intended send time)` when request `i` is due.
enum Schedule {
    Runtime {
        next: u64,
        total: u64,
        start: Instant,
        interval: Duration,
    },
    Thread {
        rx: tokio::sync::mpsc::Receiver<(u64, Instant)>,
        stop: Arc<std::sync::atomic::AtomicBool>,
    },
}

impl Schedule {
    fn new(pacing: Pacing, total: u64, start: Instant, interval: Duration) -> Schedule {
        match pacing {
            Pacing::Runtime => Schedule::Runtime {
                next: 0,
                total,
                start,
                interval,
            },
            Pacing::Thread => {
                // Bounded: when the issuer waits for in-flight slots the pacer waits too;
                // intended times come from the index, so nothing drifts.
                let (tx, rx) = tokio::sync::mpsc::channel(1024);
                let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let (stop2, start) = (stop.clone(), start.into_std());
                std::thread::spawn(move || {
                    for i in 0..total {
                        let due = start + interval.mul_f64(i as f64);
                        let now = std::time::Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        if stop2.load(std::sync::atomic::Ordering::Relaxed)
                            || tx.blocking_send((i, Instant::from_std(due))).is_err()
                        {
                            return;
                        }
                    }
                });
                Schedule::Thread { rx, stop }
            }
        }
    }

    async fn next(&mut self) -> Option<(u64, Instant)> {
        match self {
            Schedule::Runtime {
                next,
                total,
                start,
                interval,
            } => {
                if *next >= *total {
                    return None;
                }
                let i = *next;
                *next += 1;
                let intended = *start + interval.mul_f64(i as f64);
                tokio::time::sleep_until(intended).await;
                Some((i, intended))
            }
            Schedule::Thread { rx, .. } => rx.recv().await,
        }
    }
}

impl Drop for Schedule {
    fn drop(&mut self) {
        if let Schedule::Thread { stop, .. } = self {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// What a run measured; latencies in microseconds from each request's intended send time.
#[derive(Debug, Clone)]
pub struct LoadSummary {
    /// Requests issued (fewer than planned when the run gave up).
    pub requests: u64,
    /// The run stopped early: the system could not keep up with the rate.
    pub overloaded: bool,
    /// Requests that returned an error (their latency is recorded too).
    pub errors: u64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Largest latency, µs.
    pub max_us: u64,
    /// Completed requests per second over the run (from the first intended send to the
    /// last completion).
    pub achieved_rate: f64,
    /// With [`OpenLoop::keep_latencies`]: `(request index, latency µs)` of every request
    /// issued, by index (request `i` was due `i / rate` s after the start); else empty.
    pub latencies: Vec<(u64, u64)>,
}

/// Largest latency the histogram records (longer ones are clamped to it): 10 minutes.
const MAX_LATENCY_US: u64 = 600_000_000;

impl OpenLoop {
    /// Runs `request` on the schedule; `request(i)` is the i-th request (0-based).
    ///
    /// # Panics
    /// If `rate` is not positive or `max_in_flight` is 0.
    pub async fn run<F, Fut, E>(&self, request: F) -> LoadSummary
    where
        F: Fn(u64) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        self.run_while(request, || true).await
    }

    /// [`OpenLoop::run`], ending early (with the requests issued so far) once
    /// `keep_going()` answers false; it is asked before each request.
    ///
    /// # Panics
    /// If `rate` is not positive or `max_in_flight` is 0.
    pub async fn run_while<F, Fut, E>(
        &self,
        request: F,
        keep_going: impl Fn() -> bool,
    ) -> LoadSummary
    where
        F: Fn(u64) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        assert!(
            self.rate > 0.0 && self.max_in_flight > 0,
            "bad load shape {self:?}"
        );
        let hist = Arc::new(Mutex::new(Recorded {
            hist: Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds"),
            latencies: self.keep_latencies.then(Vec::new),
        }));
        let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let slots = Arc::new(Semaphore::new(self.max_in_flight));
        let interval = Duration::from_secs_f64(1.0 / self.rate);
        let start = Instant::now();
        let total = (self.duration.as_secs_f64() * self.rate).floor() as u64;
        let mut tasks = tokio::task::JoinSet::new();
        let mut sent = 0;
        let mut overloaded = false;
        let mut schedule = Schedule::new(self.pacing, total, start, interval);
        while let Some((i, intended)) = schedule.next().await {
            if !keep_going() {
                break;
            }
            // Waiting for a slot delays the send, never the intended time.
            let permit = slots.clone().acquire_owned().await.expect("never closed");
            if let Some(limit) = self.give_up
                && Instant::now().saturating_duration_since(intended) > limit
            {
                overloaded = true;
                break;
            }
            sent += 1;
            let fut = request(i);
            let (hist, errors) = (hist.clone(), errors.clone());
            tasks.spawn(async move {
                let ok = fut.await.is_ok();
                let latency = Instant::now().saturating_duration_since(intended);
                drop(permit);
                if !ok {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
                let mut r = hist
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                r.hist.record(us).expect("clamped into bounds");
                if let Some(l) = &mut r.latencies {
                    l.push((i, us));
                }
            });
        }
        drop(schedule);
        while tasks.join_next().await.is_some() {}
        let elapsed = start.elapsed().as_secs_f64();
        let mut r = hist
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut latencies = r.latencies.take().unwrap_or_default();
        latencies.sort_unstable();
        let h = &r.hist;
        LoadSummary {
            requests: sent,
            overloaded,
            errors: errors.load(std::sync::atomic::Ordering::Relaxed),
            p50_us: h.value_at_quantile(0.50),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            achieved_rate: if elapsed > 0.0 {
                sent as f64 / elapsed
            } else {
                0.0
            },
            latencies,
        }
    }
}

/// What the request tasks record into, under one lock.
struct Recorded {
    hist: Histogram<u64>,
    latencies: Option<Vec<(u64, u64)>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic server: each request takes `delay`; between `stall_from` and
    /// `stall_until` (offsets from `t0`) it answers nothing, and requests that arrive
    /// then, or are in service, finish only after the stall.
    #[derive(Clone, Copy)]
    struct Synthetic {
        t0: Instant,
        delay: Duration,
        stall_from: Duration,
        stall_until: Duration,
    }

    impl Synthetic {
        async fn serve(self) -> Result<(), ()> {
            let arrived = Instant::now();
            let mut done = arrived + self.delay;
            let (a, b) = (self.t0 + self.stall_from, self.t0 + self.stall_until);
            if done > a && arrived < b {
                done = done.max(b + self.delay);
            }
            tokio::time::sleep_until(done).await;
            Ok(())
        }
    }

    // Paused time: the schedule and the server are exact and the test takes no wall time.
    #[tokio::test(start_paused = true)]
    async fn a_stall_shows_in_the_percentiles_of_every_request_it_delayed() {
        // 1,000 requests/s for 2 s; 1 ms service; a 200 ms stall from 1.0 s: about 200
        // requests (10 %) wait for it, up to 201 ms.
        let load = OpenLoop {
            rate: 1000.0,
            duration: Duration::from_secs(2),
            max_in_flight: 10_000,
            give_up: None,
            pacing: Pacing::Runtime,
            keep_latencies: true,
        };
        let server = Synthetic {
            t0: Instant::now(),
            delay: Duration::from_millis(1),
            stall_from: Duration::from_millis(1000),
            stall_until: Duration::from_millis(1200),
        };
        let s = load.run(move |_| server.serve()).await;
        assert_eq!(s.requests, 2000);
        assert_eq!(s.errors, 0);
        // Most requests see the plain service time.
        assert!((900..=1_100).contains(&s.p50_us), "p50 {}", s.p50_us);
        // 10 % of requests waited on the stall (1 to 200 ms): p99 is deep inside it. A
        // closed loop would have sent one request during the stall and reported p99 ≈ 1 ms.
        assert!(s.p99_us >= 150_000, "p99 {} µs hides the stall", s.p99_us);
        assert!((195_000..=205_000).contains(&s.max_us), "max {}", s.max_us);
        // Kept latencies say when: every request once, by index, and the slow ones are
        // exactly those due during the stall.
        assert_eq!(s.latencies.len(), 2000);
        assert!(
            s.latencies
                .iter()
                .enumerate()
                .all(|(n, (i, _))| *i == n as u64)
        );
        let slow: Vec<u64> = s
            .latencies
            .iter()
            .filter(|(_, us)| *us > 1_500)
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(slow.first(), Some(&1000), "{slow:?}");
        assert_eq!(slow.last(), Some(&1199), "{slow:?}");
        assert_eq!(slow.len(), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn the_in_flight_cap_delays_sends_and_the_delay_counts() {
        // 100 requests/s, 50 ms service, at most 1 in flight: each request waits for the
        // previous one, the backlog grows, and latency from the intended time shows it.
        let load = OpenLoop {
            rate: 100.0,
            duration: Duration::from_secs(1),
            max_in_flight: 1,
            give_up: None,
            pacing: Pacing::Runtime,
            keep_latencies: false,
        };
        let s = load
            .run(|_| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok::<(), ()>(())
            })
            .await;
        assert_eq!(s.requests, 100);
        // The last of 100 requests was due at 0.99 s and finished at 5.0 s.
        assert!(
            (3_900_000..=4_200_000).contains(&s.max_us),
            "max {}",
            s.max_us
        );
        assert!(s.achieved_rate < 25.0, "rate {}", s.achieved_rate);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_are_counted_and_timed() {
        let load = OpenLoop {
            rate: 10.0,
            duration: Duration::from_secs(1),
            max_in_flight: 100,
            give_up: None,
            pacing: Pacing::Runtime,
            keep_latencies: false,
        };
        let s = load
            .run(|i| async move { if i % 2 == 0 { Ok(()) } else { Err("no") } })
            .await;
        assert_eq!((s.requests, s.errors), (10, 5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_system_that_cannot_keep_up_ends_the_run_early_as_overloaded() {
        // 1,000 requests/s planned for 10 s against 100 ms service with 10 in flight
        // (100 requests/s at most): the backlog passes 1 s within about a second.
        let load = OpenLoop {
            rate: 1000.0,
            duration: Duration::from_secs(10),
            max_in_flight: 10,
            give_up: Some(Duration::from_secs(1)),
            pacing: Pacing::Runtime,
            keep_latencies: false,
        };
        let s = load
            .run(|_| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok::<(), ()>(())
            })
            .await;
        assert!(s.overloaded);
        assert!(s.requests < 500, "sent {}", s.requests);
        assert!(s.p99_us >= 900_000, "p99 {}", s.p99_us);
    }

    // Real time, the pacing real runs use: a 2 ms server with a 150 ms stall in a 1 s run
    // at 500 requests/s. Bounds are loose (a loaded CI machine), the stall's mark is not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn thread_pacing_keeps_the_schedule_and_shows_a_stall() {
        let load = OpenLoop {
            rate: 500.0,
            duration: Duration::from_secs(1),
            max_in_flight: 10_000,
            give_up: None,
            pacing: Pacing::Thread,
            keep_latencies: false,
        };
        let server = Synthetic {
            t0: Instant::now(),
            delay: Duration::from_millis(2),
            stall_from: Duration::from_millis(400),
            stall_until: Duration::from_millis(550),
        };
        let s = load.run(move |_| server.serve()).await;
        assert_eq!(s.requests, 500);
        assert!((2_000..=20_000).contains(&s.p50_us), "p50 {}", s.p50_us);
        // 75 of 500 requests (15 %) waited on the stall: p99 is deep in it.
        assert!(s.p99_us >= 100_000, "p99 {} µs hides the stall", s.p99_us);
        assert!((140_000..=400_000).contains(&s.max_us), "max {}", s.max_us);
    }
}
