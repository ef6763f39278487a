//! The node's long-lived tasks: each spawned through one [`Tasks`] that names it, keeps
//! its handle and supervises it, plus [`Ticker`], the tick-or-cancel loop every
//! background loop is built on.
//!
//! A background loop is meant to run until the node's cancellation token fires. One that
//! ends before that — it panicked, or returned — is a failure: it is logged with its
//! name, counted (`quiver_node_task_failures_total{task}`), and the node reports itself
//! unhealthy from then on (readiness and liveness NOT_SERVING, `quiver_node_healthy` 0),
//! so an orchestrator restarts it instead of leaving a node that silently stopped
//! following its cluster or refreshing its TTLs.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{counter, gauge};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::metrics as m;

struct Inner {
    cancel: CancellationToken,
    /// Supervisors of every spawned task, by name, in spawn order.
    handles: Mutex<Vec<(&'static str, JoinHandle<()>)>>,
    /// Names of the tasks that ended before cancellation.
    failed: watch::Sender<BTreeSet<&'static str>>,
}

/// The supervised long-lived tasks of a node (cheap to clone; clones share the set).
#[derive(Clone)]
pub struct Tasks {
    inner: Arc<Inner>,
}

impl Tasks {
    /// An empty set whose tasks stop when `cancel` fires.
    pub fn new(cancel: CancellationToken) -> Tasks {
        gauge!(m::NODE_HEALTHY).set(1.0);
        Tasks {
            inner: Arc::new(Inner {
                cancel,
                handles: Mutex::new(Vec::new()),
                failed: watch::channel(BTreeSet::new()).0,
            }),
        }
    }

    /// The token every task of the set must stop on.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.inner.cancel
    }

    /// Spawns `task` as `name` (a fixed name: it is a metric label). The task must run
    /// until the set's token is cancelled; ending earlier, by panic or by returning, is
    /// recorded as a failure of `name`.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.supervise(name, task, true);
    }

    /// Spawns `task` as `name`, a task that may finish on its own (a one-time step such
    /// as forming the cluster); only a panic is a failure.
    pub fn spawn_once<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.supervise(name, task, false);
    }

    fn supervise<F>(&self, name: &'static str, task: F, long_lived: bool)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // Every task has its series from the start (at 0), so a failure is an increase.
        counter!(m::NODE_TASK_FAILURES, "task" => name).increment(0);
        let running = tokio::spawn(task);
        let inner = self.inner.clone();
        let supervisor = tokio::spawn(async move {
            let outcome = running.await;
            let cancelled = inner.cancel.is_cancelled();
            let why = match outcome {
                Ok(()) if cancelled || !long_lived => return,
                Ok(()) => "ended before shutdown".to_string(),
                Err(e) if e.is_panic() => {
                    let payload = e.into_panic();
                    let msg = payload
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a non-text panic".into());
                    format!("panicked: {msg}")
                }
                Err(_) if cancelled => return,
                Err(e) => format!("was aborted: {e}"),
            };
            error!(task = name, %why, "a node task failed: the node reports itself unhealthy");
            counter!(m::NODE_TASK_FAILURES, "task" => name).increment(1);
            gauge!(m::NODE_HEALTHY).set(0.0);
            inner.failed.send_modify(|f| {
                f.insert(name);
            });
        });
        self.inner
            .handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((name, supervisor));
    }

    /// Whether no task has failed.
    pub fn is_healthy(&self) -> bool {
        self.inner.failed.borrow().is_empty()
    }

    /// The tasks that failed, by name.
    pub fn failed(&self) -> BTreeSet<&'static str> {
        self.inner.failed.borrow().clone()
    }

    /// Follows the set of failed tasks ([`Tasks::failed`]): the node is healthy while it
    /// is empty.
    pub fn failures(&self) -> watch::Receiver<BTreeSet<&'static str>> {
        self.inner.failed.subscribe()
    }

    /// Names of the tasks spawned so far, in spawn order.
    pub fn names(&self) -> Vec<&'static str> {
        self.inner
            .handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(n, _)| *n)
            .collect()
    }

    /// Waits for every task spawned so far to end (call after cancelling the token; a
    /// task that does not stop is waited for, and named in the log, every 10 s).
    pub async fn join(&self) {
        let handles = std::mem::take(
            &mut *self
                .inner
                .handles
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for (name, mut handle) in handles {
            loop {
                match tokio::time::timeout(Duration::from_secs(10), &mut handle).await {
                    Ok(_) => break,
                    Err(_) => info!(task = name, "still waiting for a node task to stop"),
                }
            }
        }
    }
}

/// A fixed-period tick that ends on cancellation: the loop of every periodic task.
///
/// ```ignore
/// let mut ticker = Ticker::new(Duration::from_secs(5), &cancel);
/// while ticker.tick().await {
///     // one round of work
/// }
/// ```
pub struct Ticker {
    interval: Interval,
    cancel: CancellationToken,
}

impl Ticker {
    /// Ticks every `period`, the first at once. A round that overruns delays the next
    /// tick instead of bunching the missed ones.
    pub fn new(period: Duration, cancel: &CancellationToken) -> Ticker {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ticker {
            interval,
            cancel: cancel.clone(),
        }
    }

    /// Like [`Ticker::new`], the first tick one `period` from now.
    pub fn delayed(period: Duration, cancel: &CancellationToken) -> Ticker {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ticker {
            interval,
            cancel: cancel.clone(),
        }
    }

    /// Waits for the next tick: `true` to run a round, `false` once cancelled.
    pub async fn tick(&mut self) -> bool {
        if self.cancel.is_cancelled() {
            return false;
        }
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => false,
            _ = self.interval.tick() => true,
        }
    }
}

/// Sleeps `d`: `true` when it elapsed, `false` if `cancel` fired first.
pub async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

#[cfg(test)]
mod tests;
