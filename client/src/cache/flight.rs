//! Single flight: concurrent lookups missing the same cached row send one sub-request for
//! it. The first lookup to miss a key leads its flight; later ones follow — they wait for
//! the leader to finish (its rows are then in the cache), re-probe, and fetch themselves
//! only what is still missing (the leader failed, or its row does not satisfy their
//! floor). A leader that returns, fails or is cancelled ends its flights by dropping them.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

/// The flights in progress, by cache key.
#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<Box<[u8]>, watch::Sender<()>>>,
}

/// The flights one lookup leads; dropping it ends them and wakes their followers.
pub(crate) struct Led<'a> {
    flights: &'a Flights,
    keys: Vec<Box<[u8]>>,
}

impl Drop for Led<'_> {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let mut map = self.flights.map.lock().unwrap_or_else(|p| p.into_inner());
        for k in &self.keys {
            // Dropping the sender is the signal: every follower's `changed()` returns.
            map.remove(k);
        }
    }
}

/// A flight another lookup leads.
pub(crate) struct Follow(watch::Receiver<()>);

impl Follow {
    /// Waits until the leader is done (successfully or not).
    pub(crate) async fn done(mut self) {
        while self.0.changed().await.is_ok() {}
    }
}

impl Flights {
    /// For each `(index, key)`: lead a new flight, or follow the one in progress. Returns
    /// the indexes led, the flights followed (with their indexes) and the guard of the led
    /// flights.
    pub(crate) fn claim<'k>(
        &self,
        keys: impl Iterator<Item = (usize, &'k [u8])>,
    ) -> (Vec<usize>, Vec<(usize, Follow)>, Led<'_>) {
        let mut lead = Vec::new();
        let mut follow = Vec::new();
        let mut led = Led {
            flights: self,
            keys: Vec::new(),
        };
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        for (i, k) in keys {
            match map.get(k) {
                Some(tx) => follow.push((i, Follow(tx.subscribe()))),
                None => {
                    let (tx, _) = watch::channel(());
                    map.insert(k.into(), tx);
                    led.keys.push(k.into());
                    lead.push(i);
                }
            }
        }
        (lead, follow, led)
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_second_claim_follows_and_wakes_when_the_leader_ends() {
        let f = Flights::default();
        let (lead, follow, led) = f.claim([(0, &b"a"[..]), (1, &b"b"[..])].into_iter());
        assert_eq!((lead, follow.len()), (vec![0, 1], 0));
        let (lead2, follow2, led2) = f.claim([(5, &b"b"[..]), (6, &b"c"[..])].into_iter());
        assert_eq!(lead2, vec![6]);
        assert_eq!(follow2.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![5]);
        let waiter = tokio::spawn(async move {
            for (_, fl) in follow2 {
                fl.done().await;
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(led);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the follower wakes")
            .unwrap();
        assert_eq!(f.in_flight(), 1, "c is still led by the second claim");
        drop(led2);
        assert_eq!(f.in_flight(), 0);
        // A follower that subscribes after the leader ended does not wait.
        let (_, _, led3) = f.claim([(0, &b"z"[..])].into_iter());
        let (_, follow3, _) = f.claim([(0, &b"z"[..])].into_iter());
        drop(led3);
        for (_, fl) in follow3 {
            tokio::time::timeout(std::time::Duration::from_secs(5), fl.done())
                .await
                .expect("already done");
        }
    }
}
