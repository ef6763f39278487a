//! A gate: readers enter it while they use a resource; closing it refuses new readers and
//! waits until the ones inside have left. A shard replica is closed this way — its
//! database is flushed and dropped only once no lookup reads it — instead of polling a
//! reference count.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The high bit of the state: closed; the rest counts the readers inside.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// See the module documentation. Embedded in what it guards (`T: AsRef<Gate>`), so a
/// [`GateGuard`] is one `Arc` clone and one atomic add.
#[derive(Debug, Default)]
pub struct Gate {
    state: AtomicUsize,
    drained: Notify,
}

impl Gate {
    /// Enters the gate of `owner`: a guard that keeps it open and derefs to `owner`, or
    /// `None` once the gate is closing.
    pub fn enter<T: AsRef<Gate>>(owner: &Arc<T>) -> Option<GateGuard<T>> {
        let gate = owner.as_ref().as_ref();
        let prev = gate.state.fetch_add(1, Ordering::Acquire);
        if prev & CLOSED != 0 {
            gate.leave();
            return None;
        }
        Some(GateGuard(owner.clone()))
    }

    /// Refuses new readers, then waits until every reader inside has left.
    pub async fn close(&self) {
        self.state.fetch_or(CLOSED, Ordering::AcqRel);
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            // Registered before the check, so a leave between the two is not missed.
            drained.as_mut().enable();
            if self.readers() == 0 {
                return;
            }
            drained.await;
        }
    }

    /// Whether [`Gate::close`] has been called.
    pub fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLOSED != 0
    }

    /// Readers inside now.
    pub fn readers(&self) -> usize {
        self.state.load(Ordering::Acquire) & !CLOSED
    }

    fn leave(&self) {
        let prev = self.state.fetch_sub(1, Ordering::AcqRel);
        if prev == CLOSED | 1 {
            self.drained.notify_waiters();
        }
    }
}

/// A reader inside the gate of a `T`; leaves it when dropped.
#[derive(Debug)]
pub struct GateGuard<T: AsRef<Gate>>(Arc<T>);

impl<T: AsRef<Gate>> Deref for GateGuard<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: AsRef<Gate>> Drop for GateGuard<T> {
    fn drop(&mut self) {
        self.0.as_ref().as_ref().leave();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[derive(Default)]
    struct Guarded(Gate);

    impl AsRef<Gate> for Guarded {
        fn as_ref(&self) -> &Gate {
            &self.0
        }
    }

    #[tokio::test]
    async fn close_waits_for_every_reader_and_refuses_new_ones() {
        let owner = Arc::new(Guarded::default());
        let a = Gate::enter(&owner).unwrap();
        let b = Gate::enter(&owner).unwrap();
        assert_eq!(owner.0.readers(), 2);
        let closing = {
            let owner = owner.clone();
            tokio::spawn(async move { owner.0.close().await })
        };
        // Closing has begun: no new reader gets in, the ones inside stay.
        while !owner.0.is_closed() {
            tokio::task::yield_now().await;
        }
        assert!(Gate::enter(&owner).is_none());
        assert_eq!(
            owner.0.readers(),
            2,
            "a refused entry leaves no count behind"
        );
        drop(a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!closing.is_finished(), "one reader is still inside");
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), closing)
            .await
            .expect("close returns once the last reader left")
            .unwrap();
        assert_eq!(owner.0.readers(), 0);
    }

    #[tokio::test]
    async fn closing_an_empty_gate_returns_at_once() {
        let owner = Arc::new(Guarded::default());
        drop(Gate::enter(&owner).unwrap());
        tokio::time::timeout(Duration::from_secs(1), owner.0.close())
            .await
            .unwrap();
        assert!(Gate::enter(&owner).is_none());
    }

    #[test]
    fn readers_on_many_threads_all_leave() {
        let owner = Arc::new(Guarded::default());
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        let g = Gate::enter(&owner).unwrap();
                        std::hint::black_box(&*g);
                    }
                });
            }
        });
        assert_eq!(owner.0.readers(), 0);
    }
}
