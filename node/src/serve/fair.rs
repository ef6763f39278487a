//! Lookup execution slots shared fairly between principals under overload.
//!
//! `limits.max_concurrent_lookups` slots; while one is free a lookup takes it at once (no
//! principal key, no allocation). When all are busy, lookups wait in one queue per
//! principal and a freed slot goes to the principals in turn (round robin), not to the
//! oldest waiter: a principal flooding the node with a thousand lookups delays another's
//! next lookup by at most one lookup per waiting principal, not by its whole backlog.
//! Waiting is bounded by `limits.max_queued_lookups` in all. A principal alone may fill
//! it; when it is full, a lookup of another principal takes the place of the newest waiter
//! of the principal with the most waiting (longest-queue drop), which is shed with
//! RESOURCE_EXHAUSTED — so a flood cannot keep others out of the queue, and a lookup is
//! refused outright only when its own principal holds about as many places as any.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// Why a lookup was not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shed {
    /// `max_queued_lookups` lookups are waiting already.
    QueueFull,
    /// The lookup waited, and its place went to another principal's lookup (its own
    /// principal had the most waiting).
    Evicted,
    /// The node is shutting down (the queue was closed).
    Closed,
}

#[derive(Default)]
struct Inner {
    free: usize,
    waiting: usize,
    queues: HashMap<String, VecDeque<Waiter>>,
    /// Principals with waiters, in the order they are served.
    turn: VecDeque<String>,
}

type Waiter = oneshot::Sender<Result<FairPermit, Shed>>;

/// The execution slots of one node.
pub struct FairPermits {
    inner: Arc<Mutex<Inner>>,
    max_waiting: usize,
}

/// An execution slot; freed (to the next principal in turn) on drop.
pub struct FairPermit {
    owner: Option<Arc<Mutex<Inner>>>,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FairPermits {
    /// `slots` lookups at once, up to `max_waiting` waiting.
    pub fn new(slots: usize, max_waiting: usize) -> Self {
        FairPermits {
            inner: Arc::new(Mutex::new(Inner {
                free: slots,
                ..Inner::default()
            })),
            max_waiting,
        }
    }

    /// Lookups waiting now.
    pub fn waiting(&self) -> usize {
        lock(&self.inner).waiting
    }

    /// A slot for a lookup of the principal `key()` names (called only if it must wait).
    ///
    /// # Errors
    /// [`Shed`] when the lookup may not wait.
    pub async fn acquire(&self, key: impl FnOnce() -> String) -> Result<FairPermit, Shed> {
        let rx = {
            let mut g = lock(&self.inner);
            if g.free > 0 && g.waiting == 0 {
                g.free -= 1;
                return Ok(FairPermit {
                    owner: Some(self.inner.clone()),
                });
            }
            if self.max_waiting == 0 {
                return Err(Shed::QueueFull);
            }
            let key = key();
            let g = &mut *g;
            if g.waiting >= self.max_waiting {
                g.purge_cancelled();
            }
            if g.waiting >= self.max_waiting && !g.evict_for(&key) {
                return Err(Shed::QueueFull);
            }
            let (tx, rx) = oneshot::channel();
            let queue = g.queues.entry(key.clone()).or_default();
            if queue.is_empty() && !g.turn.contains(&key) {
                g.turn.push_back(key);
            }
            queue.push_back(tx);
            g.waiting += 1;
            rx
        };
        rx.await.unwrap_or(Err(Shed::Closed))
    }
}

impl Inner {
    /// Drops the places of lookups that stopped waiting (their callers went away).
    fn purge_cancelled(&mut self) {
        let mut freed = 0;
        for q in self.queues.values_mut() {
            let before = q.len();
            q.retain(|w| !w.is_closed());
            freed += before - q.len();
        }
        self.waiting -= freed;
        self.queues.retain(|_, q| !q.is_empty());
        let queues = &self.queues;
        self.turn.retain(|k| queues.contains_key(k));
    }

    /// Makes room for a lookup of `key` by shedding the newest waiter of the principal
    /// with the most waiting, if it has more than one place beyond `key`'s own.
    fn evict_for(&mut self, key: &str) -> bool {
        let own = self.queues.get(key).map_or(0, VecDeque::len);
        let Some(victim) = self
            .queues
            .iter()
            .filter(|(k, q)| k.as_str() != key && q.len() > own + 1)
            .max_by_key(|(_, q)| q.len())
            .map(|(k, _)| k.clone())
        else {
            return false;
        };
        let Some(queue) = self.queues.get_mut(&victim) else {
            return false;
        };
        if let Some(w) = queue.pop_back() {
            self.waiting -= 1;
            // Its caller may have gone already: nothing to tell then.
            let _ = w.send(Err(Shed::Evicted));
        }
        if queue.is_empty() {
            self.queues.remove(&victim);
            self.turn.retain(|k| *k != victim);
        }
        true
    }
}

/// Hands the slot to the next principal in turn, or frees it.
fn release(owner: &Arc<Mutex<Inner>>) {
    loop {
        let next = {
            let mut g = lock(owner);
            let g = &mut *g;
            let Some(key) = g.turn.pop_front() else {
                g.free += 1;
                return;
            };
            let Some(queue) = g.queues.get_mut(&key) else {
                continue;
            };
            let waiter = queue.pop_front();
            if queue.is_empty() {
                g.queues.remove(&key);
            } else {
                g.turn.push_back(key);
            }
            match waiter {
                Some(w) => {
                    g.waiting -= 1;
                    w
                }
                None => continue,
            }
        };
        // Outside the lock: a waiter that gave up returns the permit here, disarmed, and
        // the slot goes to the next one.
        match next.send(Ok(FairPermit {
            owner: Some(owner.clone()),
        })) {
            Ok(()) => return,
            Err(unsent) => {
                if let Ok(mut p) = unsent {
                    p.owner = None;
                }
            }
        }
    }
}

impl Drop for FairPermit {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.take() {
            release(&owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits until `n` lookups are queued (each `acquire` below runs on its own task).
    async fn queued(p: &FairPermits, n: usize) {
        while p.waiting() < n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn freed_slots_go_to_principals_in_turn_not_to_the_oldest_waiter() {
        let permits = Arc::new(FairPermits::new(1, 100));
        let busy = permits.acquire(|| "x".into()).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // The flood: a's six lookups queue first, then b's two.
        for (who, n) in [("a", 6), ("b", 2)] {
            for i in 0..n {
                let (p, order) = (permits.clone(), order.clone());
                let before = permits.waiting();
                tasks.push(tokio::spawn(async move {
                    let _p = p.acquire(|| who.to_owned()).await.unwrap();
                    order.lock().unwrap().push(format!("{who}{i}"));
                }));
                queued(&permits, before + 1).await;
            }
        }
        drop(busy);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        // b is served second, not seventh.
        assert_eq!(order, ["a0", "b0", "a1", "b1", "a2", "a3", "a4", "a5"]);
    }

    #[tokio::test]
    async fn a_flood_may_fill_the_queue_but_not_keep_others_out() {
        let permits = Arc::new(FairPermits::new(1, 3));
        let busy = permits.acquire(|| "x".into()).await.unwrap();
        let mut flood = Vec::new();
        for _ in 0..3 {
            let p = permits.clone();
            let before = p.waiting();
            flood.push(tokio::spawn(async move {
                p.acquire(|| "a".into()).await.map(drop)
            }));
            queued(&permits, before + 1).await;
        }
        // Alone, a fills the queue; its next lookup is shed (no one holds more).
        assert_eq!(
            permits.acquire(|| "a".into()).await.err(),
            Some(Shed::QueueFull)
        );
        // b takes the place of a's newest waiter, which is told.
        let b = {
            let p = permits.clone();
            tokio::spawn(async move { p.acquire(|| "b".into()).await.map(drop) })
        };
        let newest = flood.pop().unwrap();
        assert_eq!(newest.await.unwrap(), Err(Shed::Evicted));
        queued(&permits, 3).await;
        // a's others give up; their places and turns pass on.
        for f in &flood {
            f.abort();
        }
        for f in flood {
            assert!(f.await.is_err());
        }
        drop(busy);
        b.await.unwrap().unwrap();
        // Every slot came back.
        drop(permits.acquire(|| "c".into()).await.unwrap());
        assert_eq!(permits.waiting(), 0);
        assert_eq!(lock(&permits.inner).free, 1);
    }

    #[tokio::test]
    async fn a_full_queue_sheds() {
        let permits = FairPermits::new(1, 0);
        let _busy = permits.acquire(|| "x".into()).await.unwrap();
        assert_eq!(
            permits.acquire(|| "y".into()).await.err(),
            Some(Shed::QueueFull)
        );
    }
}
