use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use super::*;

/// Polls `cond` every millisecond until it holds or 5 s pass.
async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    cond()
}

#[tokio::test]
async fn tasks_that_stop_on_cancellation_leave_the_node_healthy() {
    let cancel = CancellationToken::new();
    let tasks = Tasks::new(cancel.clone());
    for name in ["a", "b"] {
        let c = cancel.clone();
        tasks.spawn(name, async move { c.cancelled().await });
    }
    assert_eq!(tasks.names(), ["a", "b"]);
    cancel.cancel();
    tasks.join().await;
    assert!(tasks.is_healthy(), "failed: {:?}", tasks.failed());
}

#[tokio::test]
async fn a_panicking_task_is_named_and_makes_the_node_unhealthy() {
    let cancel = CancellationToken::new();
    let tasks = Tasks::new(cancel.clone());
    let mut health = tasks.failures();
    assert!(health.borrow_and_update().is_empty());
    let c = cancel.clone();
    tasks.spawn("steady", async move { c.cancelled().await });
    tasks.spawn("follow", async {
        panic!("boom");
    });
    tokio::time::timeout(Duration::from_secs(5), health.changed())
        .await
        .expect("health changes")
        .unwrap();
    assert!(health.borrow().contains("follow"));
    assert!(!tasks.is_healthy());
    assert_eq!(tasks.failed().into_iter().collect::<Vec<_>>(), ["follow"]);
    cancel.cancel();
    tasks.join().await;
    // The healthy task stopping on cancellation is not a failure.
    assert_eq!(tasks.failed().len(), 1);
}

#[tokio::test]
async fn a_task_that_returns_before_shutdown_is_a_failure() {
    let cancel = CancellationToken::new();
    let tasks = Tasks::new(cancel.clone());
    tasks.spawn("ttl-refresh", async {});
    assert!(eventually(|| !tasks.is_healthy()).await);
    assert!(tasks.failed().contains("ttl-refresh"));
}

#[tokio::test]
async fn join_waits_for_every_task_to_finish_its_round() {
    let cancel = CancellationToken::new();
    let tasks = Tasks::new(cancel.clone());
    let done = Arc::new(AtomicU32::new(0));
    for name in ["x", "y", "z"] {
        let (c, done) = (cancel.clone(), done.clone());
        tasks.spawn(name, async move {
            c.cancelled().await;
            // Cleanup after cancellation (e.g. a last flush) is waited for.
            tokio::time::sleep(Duration::from_millis(20)).await;
            done.fetch_add(1, Ordering::SeqCst);
        });
    }
    cancel.cancel();
    tasks.join().await;
    assert_eq!(done.load(Ordering::SeqCst), 3);
    assert!(tasks.is_healthy());
}

#[tokio::test]
async fn a_ticker_ticks_at_once_then_every_period_and_stops_on_cancel() {
    let period = Duration::from_millis(50);
    let cancel = CancellationToken::new();
    let mut t = Ticker::new(period, &cancel);
    let start = Instant::now();
    assert!(t.tick().await);
    assert!(start.elapsed() < period, "the first tick is at once");
    assert!(t.tick().await);
    assert!(start.elapsed() >= period);
    let mut d = Ticker::delayed(period, &cancel);
    let start = Instant::now();
    assert!(d.tick().await);
    assert!(
        start.elapsed() >= period,
        "a delayed ticker waits one period first"
    );
    cancel.cancel();
    assert!(!t.tick().await);
    assert!(!d.tick().await);
}

#[tokio::test]
async fn a_cancelled_ticker_wakes_its_waiting_loop() {
    let cancel = CancellationToken::new();
    let mut t = Ticker::delayed(Duration::from_secs(3600), &cancel);
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.cancel();
    });
    let start = Instant::now();
    assert!(!t.tick().await);
    assert!(start.elapsed() < Duration::from_secs(60));
    assert!(!sleep_or_cancel(Duration::from_secs(3600), &cancel).await);
    assert!(sleep_or_cancel(Duration::from_millis(1), &CancellationToken::new()).await);
}
