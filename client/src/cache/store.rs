//! The bounded store of cached rows: segments (each under its own mutex) of CLOCK slots,
//! bounded in entries and bytes. A hit sets the slot's reference bit; an insert into a
//! full segment sweeps the hand, clearing bits until it finds an unreferenced slot to
//! evict (second chance: recently read rows stay, one-off keys go first).
//!
//! Keys are `shape id (4 bytes LE) ++ entity key bytes`; a probe builds the key in a
//! caller's scratch buffer, so a lookup allocates nothing per key to probe.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};

use metrics::{counter, gauge};

use super::CachedRow;
use crate::metrics as m;

/// What a cached row costs beyond its bytes: the slot, the map entry, the row's header.
const ENTRY_OVERHEAD: usize = 128;

struct Slot {
    key: Box<[u8]>,
    row: Arc<CachedRow>,
    referenced: bool,
    bytes: usize,
}

#[derive(Default)]
struct Segment {
    map: HashMap<Box<[u8]>, usize>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    hand: usize,
    bytes: usize,
}

impl Segment {
    fn remove_slot(&mut self, i: usize) -> Option<Slot> {
        let slot = self.slots[i].take()?;
        self.map.remove(&slot.key);
        self.bytes -= slot.bytes;
        self.free.push(i);
        Some(slot)
    }

    /// Evicts one unreferenced slot (clearing reference bits on the way); `false` if the
    /// segment is empty.
    fn evict_one(&mut self) -> bool {
        let n = self.slots.len();
        // Two sweeps clear every bit, so one of them finds a victim if any slot is used.
        for _ in 0..2 * n {
            let i = self.hand % n.max(1);
            self.hand = (i + 1) % n.max(1);
            match &mut self.slots[i] {
                Some(s) if s.referenced => s.referenced = false,
                Some(_) => {
                    self.remove_slot(i);
                    return true;
                }
                None => {}
            }
        }
        false
    }
}

/// Rows and bytes of a cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Rows held.
    pub entries: usize,
    /// Bytes held (row bytes plus a fixed overhead per row).
    pub bytes: usize,
}

pub(crate) struct Store {
    segments: Box<[Mutex<Segment>]>,
    max_entries: usize,
    max_bytes: usize,
    hasher: std::collections::hash_map::RandomState,
}

impl Store {
    /// A store of at most `max_entries` rows and `max_bytes` bytes (both ≥ 1), in
    /// segments of at least 64 entries each.
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Store {
        let n = (max_entries / 64).clamp(1, 16);
        Store {
            segments: (0..n).map(|_| Mutex::new(Segment::default())).collect(),
            max_entries: (max_entries / n).max(1),
            max_bytes: (max_bytes / n).max(1),
            hasher: Default::default(),
        }
    }

    fn segment(&self, key: &[u8]) -> std::sync::MutexGuard<'_, Segment> {
        let mut h = self.hasher.build_hasher();
        h.write(key);
        let i = (h.finish() % self.segments.len() as u64) as usize;
        self.segments[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The row under `key`, marked recently used.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<CachedRow>> {
        let mut seg = self.segment(key);
        let i = *seg.map.get(key)?;
        let slot = seg.slots[i].as_mut()?;
        slot.referenced = true;
        Some(slot.row.clone())
    }

    /// Stores `row` under `key` (replacing what was there), evicting as needed. A row
    /// larger than a whole segment's byte budget is not stored.
    pub(crate) fn insert(&self, key: &[u8], row: Arc<CachedRow>) {
        let bytes = row.size() + key.len() + ENTRY_OVERHEAD;
        if bytes > self.max_bytes {
            return;
        }
        let mut seg = self.segment(key);
        let (mut evicted, mut freed) = (0u64, 0usize);
        if let Some(&i) = seg.map.get(key)
            && let Some(old) = seg.remove_slot(i)
        {
            freed += old.bytes;
            gauge!(m::CACHE_ENTRIES).decrement(1.0);
        }
        while seg.map.len() >= self.max_entries || seg.bytes + bytes > self.max_bytes {
            let before = seg.bytes;
            if !seg.evict_one() {
                break;
            }
            evicted += 1;
            freed += before - seg.bytes;
        }
        let slot = Slot {
            key: key.into(),
            row,
            referenced: false,
            bytes,
        };
        let i = match seg.free.pop() {
            Some(i) => i,
            None => {
                seg.slots.push(None);
                seg.slots.len() - 1
            }
        };
        seg.map.insert(slot.key.clone(), i);
        seg.slots[i] = Some(slot);
        seg.bytes += bytes;
        drop(seg);
        if evicted > 0 {
            counter!(m::CACHE_EVICTIONS).increment(evicted);
            gauge!(m::CACHE_ENTRIES).decrement(evicted as f64);
        }
        gauge!(m::CACHE_ENTRIES).increment(1.0);
        gauge!(m::CACHE_BYTES).increment(bytes as f64 - freed as f64);
    }

    /// Drops the row under `key`, if any.
    pub(crate) fn remove(&self, key: &[u8]) {
        let mut seg = self.segment(key);
        let Some(&i) = seg.map.get(key) else { return };
        if let Some(old) = seg.remove_slot(i) {
            drop(seg);
            gauge!(m::CACHE_ENTRIES).decrement(1.0);
            gauge!(m::CACHE_BYTES).decrement(old.bytes as f64);
        }
    }

    /// Current entries and bytes, over every segment.
    pub(crate) fn usage(&self) -> Usage {
        self.segments.iter().fold(Usage::default(), |u, s| {
            let s = s.lock().unwrap_or_else(|p| p.into_inner());
            Usage {
                entries: u.entries + s.map.len(),
                bytes: u.bytes + s.bytes,
            }
        })
    }

    /// The bounds, over every segment.
    pub(crate) fn capacity(&self) -> Usage {
        Usage {
            entries: self.max_entries * self.segments.len(),
            bytes: self.max_bytes * self.segments.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: usize) -> Arc<CachedRow> {
        Arc::new(CachedRow::for_test(vec![7u8; n]))
    }

    fn key(i: u32) -> Vec<u8> {
        i.to_le_bytes().to_vec()
    }

    #[test]
    fn entries_and_bytes_stay_within_bounds() {
        let s = Store::new(100, 1 << 20);
        for i in 0..1000 {
            s.insert(&key(i), row(10));
            let u = s.usage();
            assert!(u.entries <= s.capacity().entries, "{u:?}");
        }
        assert_eq!(s.usage().entries, s.capacity().entries);
        let s = Store::new(1_000_000, 20_000);
        for i in 0..1000 {
            s.insert(&key(i), row(500));
            assert!(s.usage().bytes <= 20_000, "{:?}", s.usage());
        }
        assert!(s.usage().entries > 0);
        // A row bigger than the budget is not stored (and evicts nothing).
        let before = s.usage();
        s.insert(&key(5000), row(30_000));
        assert!(s.get(&key(5000)).is_none());
        assert_eq!(s.usage(), before);
    }

    #[test]
    fn referenced_rows_survive_a_sweep_that_evicts_others() {
        let s = Store::new(64, 1 << 20);
        for i in 0..64 {
            s.insert(&key(i), row(1));
        }
        // Keep reading the first 32; insert 32 newcomers, one at a time.
        for j in 0..32 {
            for i in 0..32 {
                assert!(s.get(&key(i)).is_some(), "hot key {i} evicted at {j}");
            }
            s.insert(&key(1000 + j), row(1));
        }
        assert_eq!(s.usage().entries, 64);
    }

    #[test]
    fn replace_and_remove_keep_the_accounting_exact() {
        let s = Store::new(64, 1 << 20);
        s.insert(&key(1), row(10));
        s.insert(&key(1), row(20));
        assert_eq!(s.usage().entries, 1);
        assert_eq!(s.usage().bytes, 20 + 4 + ENTRY_OVERHEAD);
        assert_eq!(s.get(&key(1)).unwrap().size(), 20);
        s.remove(&key(1));
        s.remove(&key(2));
        assert_eq!(s.usage(), Usage::default());
        assert!(s.get(&key(1)).is_none());
    }
}
