//! The lookup cache: the latest stored row of hot and freshly written keys, in front of
//! RocksDB.
//!
//! A lookup of a plain view reads one row per key. Through RocksDB that is a memtable
//! probe, then per SST file a probe of RocksDB's row cache (a mutex, a hash chain, its LRU
//! list) or the file's filter, index and data block: ~1.5–2 µs per key even when every
//! byte is in memory. This cache answers a hot key with one hash probe under a shared
//! lock and a reference count.
//!
//! It is node-wide, bounded in bytes, and split into segments by key hash, each a hash
//! table with CLOCK eviction (a hit sets the entry's reference bit under the shared lock;
//! the insert that needs room clears bits until it finds an entry not used since the
//! hand last passed). Lookups fill it (a row read from RocksDB) and, by default, so does
//! ingest: a row just written is cached unreferenced, so a replica's fresh rows need not
//! first be read from SST files the block cache has never held (a compaction's output is
//! not in it), while a row nobody reads is the first to be evicted.
//!
//! A lookup probes its keys as a batch ([`LookupCache::get_many`]): each segment's lock
//! once per chunk of keys, every key's probe before any reference count is touched, then
//! one read of every cache line of the rows found, so the CPU overlaps the cache misses
//! of many keys instead of paying them one after another (a probe is a chain of
//! dependent misses, ~400 ns per key when the rows are not in the CPU's caches).
//!
//! Entries are keyed by a store *generation* and the row's storage key: a replica gets a
//! fresh generation when it opens and whenever its rows change outside the ingest path
//! (a version dropped, a sweep), so older entries are never read again and age out.
//!
//! **Consistency** (see [`super::ConsistentRead`]): a store's write sequence is odd while
//! a write is in flight. An ingest write replaces (or adds) the entries of the keys it
//! wrote while its sequence is odd, under the segment's lock; a reader that filled its
//! answer from disk inserts it only if the sequence is still the even one its snapshot
//! was taken at, checked under that same lock ([`LookupCache::insert_if_unchanged`]). So
//! an entry is always the row as of the last completed write, and a reader that saw the
//! same even sequence before and after its probes read exactly the state its watermark
//! names.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use hashbrown::HashTable;

/// Segments (a power of two): enough that the ingest and lookup threads of a node rarely
/// meet on one lock.
const SEGMENTS: usize = 16;
const _: () = assert!(
    SEGMENTS <= 32,
    "get_many keeps the segments it needs in a u32"
);

/// Bytes charged per entry beyond its key and value: the slot, the table's index entry,
/// the allocations' headers.
const ENTRY_OVERHEAD: usize = 96;

/// A fresh store generation (never reused within the process).
pub fn fresh_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The node's lookup cache (see the module documentation).
pub struct LookupCache {
    segments: Box<[RwLock<Segment>]>,
    /// Bytes each segment may hold.
    segment_budget: usize,
    hasher: foldhash::fast::FixedState,
    hits: metrics::Counter,
    misses: metrics::Counter,
    evictions: metrics::Counter,
    bytes: AtomicUsize,
    /// Whether ingest caches the rows it writes, not only replaces cached ones.
    fill_on_ingest: bool,
}

#[derive(Default)]
struct Segment {
    /// Indices into `slots`.
    table: HashTable<u32>,
    slots: Vec<Slot>,
    /// Slots whose entry was removed, for reuse.
    free: Vec<u32>,
    /// The CLOCK hand: the next slot eviction looks at.
    hand: usize,
    bytes: usize,
}

struct Slot {
    hash: u64,
    generation: u64,
    /// The key's length: `entry` is the key then the row, one allocation, so comparing
    /// the key touches the memory the reader of the row reads next.
    key_len: usize,
    /// `None`: a free slot.
    entry: Option<Arc<[u8]>>,
    referenced: AtomicBool,
}

impl Slot {
    fn charge(&self) -> usize {
        self.entry
            .as_ref()
            .map_or(0, |e| charge(self.key_len, e.len() - self.key_len))
    }

    /// A lookup's hit: marks the slot referenced (a store only when the bit was clear,
    /// so a hot slot's cache line is not written on every hit) and shares its row.
    fn hit(&self) -> CachedRow {
        if !self.referenced.load(Ordering::Relaxed) {
            self.referenced.store(true, Ordering::Relaxed);
        }
        let entry = self.entry.as_ref().expect("a found slot holds an entry");
        CachedRow {
            entry: entry.clone(),
            start: self.key_len,
        }
    }
}

/// A cached row, shared with the cache.
#[derive(Clone)]
pub struct CachedRow {
    entry: Arc<[u8]>,
    start: usize,
}

impl std::ops::Deref for CachedRow {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.entry[self.start..]
    }
}

fn entry(key: &[u8], value: &[u8]) -> Arc<[u8]> {
    // One allocation per cached row (the cache must own its bytes): zeroed, then two
    // copies. (Collecting the chained slices copied byte by byte: 5 % of an ingest write
    // that fills the cache.)
    let mut e: Arc<[u8]> = std::iter::repeat_n(0, key.len() + value.len()).collect();
    let bytes = Arc::get_mut(&mut e).expect("not shared yet");
    bytes[..key.len()].copy_from_slice(key);
    bytes[key.len()..].copy_from_slice(value);
    e
}

/// Bytes of a found entry [`touch`] reads: a row of 100 float64 features.
const TOUCH_BYTES: usize = 1024;

/// Reads one byte of every cache line of the found entries (up to [`TOUCH_BYTES`] each),
/// with nothing depending on one read before the next: the CPU fetches their lines
/// together, rather than one miss after another as the caller decodes row after row (a
/// software prefetch, in safe code). The probe brought in each entry's first line.
fn touch<'s>(found: impl Iterator<Item = &'s Slot>) {
    let mut x = 0u8;
    for slot in found {
        if let Some(e) = &slot.entry {
            for line in e.chunks(64).take(TOUCH_BYTES / 64).skip(1) {
                x ^= line[0];
            }
        }
    }
    std::hint::black_box(x);
}

/// The segment of a key's hash. hashbrown indexes buckets by the low bits and tags them
/// with the top seven; the segment takes bits from the middle, so neither loses entropy
/// within one.
fn segment_index(hash: u64) -> usize {
    (hash >> 40) as usize % SEGMENTS
}

fn charge(key: usize, value: usize) -> usize {
    key + value + ENTRY_OVERHEAD
}

impl LookupCache {
    /// A cache holding at most about `budget_bytes`. With `fill_on_ingest`, every row
    /// ingest writes is cached ([`LookupCache::written`]); without, only rows lookups
    /// read from RocksDB are.
    pub fn new(budget_bytes: usize, fill_on_ingest: bool) -> Self {
        LookupCache {
            fill_on_ingest,
            segments: (0..SEGMENTS).map(|_| RwLock::default()).collect(),
            segment_budget: budget_bytes / SEGMENTS,
            hasher: foldhash::fast::FixedState::with_seed(0x5157_4956_4552),
            hits: metrics::counter!(crate::metrics::STORAGE_LOOKUP_CACHE_HITS),
            misses: metrics::counter!(crate::metrics::STORAGE_LOOKUP_CACHE_MISSES),
            evictions: metrics::counter!(crate::metrics::STORAGE_LOOKUP_CACHE_EVICTIONS),
            bytes: AtomicUsize::new(0),
        }
    }

    /// Bytes charged to entries now.
    pub fn usage(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Counts one read's hits and misses (once per read, not per key).
    pub fn record(&self, hits: usize, misses: usize) {
        self.hits.increment(hits as u64);
        self.misses.increment(misses as u64);
    }

    fn hash(&self, generation: u64, key: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one((generation, key))
    }

    fn segment(&self, hash: u64) -> &RwLock<Segment> {
        &self.segments[segment_index(hash)]
    }

    /// The cached row of `key` in store generation `generation`.
    pub fn get(&self, generation: u64, key: &[u8]) -> Option<CachedRow> {
        let hash = self.hash(generation, key);
        let seg = self.segment(hash).read().unwrap_or_else(|p| p.into_inner());
        let slot = seg.find(hash, generation, key)?;
        Some(seg.slots[slot as usize].hit())
    }

    /// The cached rows of `keys` in store generation `generation`, in order (`None`: not
    /// cached), appended to `out`: what [`LookupCache::get`] answers for each, probed
    /// as a batch.
    ///
    /// A probe is a chain of dependent cache misses (the table's control bytes, its
    /// slot index, the slot, the entry's key); what one key costs is their latency. Per
    /// chunk of keys, this takes each segment's lock once and probes every key before
    /// touching any reference count or lock word, so no atomic read-modify-write (a full
    /// barrier on x86) stands between two keys' probes and the CPU overlaps their misses.
    pub fn get_many(&self, generation: u64, keys: &[&[u8]], out: &mut Vec<Option<CachedRow>>) {
        /// Keys per chunk: the probes' state lives on the stack.
        const CHUNK: usize = 16;
        if let [key] = keys {
            out.push(self.get(generation, key));
            return;
        }
        out.reserve(keys.len());
        for chunk in keys.chunks(CHUNK) {
            let mut hashes = [0u64; CHUNK];
            let mut needed = 0u32;
            for (h, key) in hashes.iter_mut().zip(chunk) {
                *h = self.hash(generation, key);
                needed |= 1 << segment_index(*h);
            }
            // Each needed segment's lock once, in index order: a writer holds one
            // segment's lock at a time, so readers taking several in order cannot
            // deadlock with writers or with each other.
            let guards: [Option<RwLockReadGuard<'_, Segment>>; SEGMENTS] =
                std::array::from_fn(|s| {
                    (needed & (1 << s) != 0)
                        .then(|| self.segments[s].read().unwrap_or_else(|p| p.into_inner()))
                });
            let mut found: [Option<&Slot>; CHUNK] = [None; CHUNK];
            for ((f, &h), key) in found.iter_mut().zip(&hashes).zip(chunk) {
                let seg = guards[segment_index(h)].as_ref().expect("locked above");
                *f = seg.find(h, generation, key).map(|i| &seg.slots[i as usize]);
            }
            touch(found.iter().flatten().copied());
            out.extend(found[..chunk.len()].iter().map(|f| f.map(Slot::hit)));
        }
    }

    /// Caches `value` for `key` if `seq` still reads `expect`: the row was read from a
    /// snapshot taken at write sequence `expect`, and no write has begun since (checked
    /// under the segment's lock, which ingest writes take to replace entries). Returns
    /// whether the sequence still read `expect` (`false`: nothing cached, and no later
    /// row of that snapshot will be either).
    pub fn insert_if_unchanged(
        &self,
        generation: u64,
        key: &[u8],
        value: &[u8],
        seq: &AtomicU64,
        expect: u64,
    ) -> bool {
        let need = charge(key.len(), value.len());
        if need > self.segment_budget {
            return seq.load(Ordering::Acquire) == expect;
        }
        let hash = self.hash(generation, key);
        let mut seg = self
            .segment(hash)
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if seq.load(Ordering::Acquire) != expect {
            return false;
        }
        if let Some(i) = seg.find(hash, generation, key) {
            // Another reader filled it first, from the same state.
            seg.slots[i as usize]
                .referenced
                .store(true, Ordering::Relaxed);
            return true;
        }
        self.add(&mut seg, hash, generation, key, value);
        true
    }

    /// Adds an entry not in `seg`, evicting (CLOCK) to make room; the caller checked that
    /// it fits a segment.
    fn add(&self, seg: &mut Segment, hash: u64, generation: u64, key: &[u8], value: &[u8]) {
        let need = charge(key.len(), value.len());
        let evicted = seg.make_room(need, self.segment_budget);
        self.evictions.increment(evicted.count as u64);
        seg.insert(hash, generation, key.len(), entry(key, value));
        self.bytes.fetch_add(need, Ordering::Relaxed);
        self.bytes.fetch_sub(evicted.bytes, Ordering::Relaxed);
    }

    /// Whether warming a replica ([`super::ShardStore::warm_lookup_cache`]) may add
    /// rows: the cache is under nine tenths of its budget, so warming never evicts what
    /// lookups and ingest put there.
    pub fn has_room_to_warm(&self) -> bool {
        self.usage() < self.segment_budget * SEGMENTS / 10 * 9
    }

    /// A write of `key` in generation `generation` (called while the store's write
    /// sequence is odd, after the write landed): replaces the cached row with `value`, or
    /// forgets it (`None`: a tombstone). A key not cached is cached too when the cache
    /// fills on ingest ([`LookupCache::new`]), unreferenced: it is the first to go
    /// unless a lookup reads it before the hand comes round.
    pub fn written(&self, generation: u64, key: &[u8], value: Option<&[u8]>) {
        let value = value.filter(|v| charge(key.len(), v.len()) <= self.segment_budget);
        let hash = self.hash(generation, key);
        let mut seg = self
            .segment(hash)
            .write()
            .unwrap_or_else(|p| p.into_inner());
        match (seg.find(hash, generation, key), value) {
            (Some(i), Some(v)) => {
                let old = seg.slots[i as usize].charge();
                seg.slots[i as usize].entry = Some(entry(key, v));
                let new = seg.slots[i as usize].charge();
                seg.bytes = seg.bytes + new - old;
                self.bytes.fetch_add(new, Ordering::Relaxed);
                self.bytes.fetch_sub(old, Ordering::Relaxed);
            }
            (Some(i), None) => {
                self.bytes
                    .fetch_sub(seg.slots[i as usize].charge(), Ordering::Relaxed);
                seg.remove(i);
            }
            (None, Some(v)) if self.fill_on_ingest => self.add(&mut seg, hash, generation, key, v),
            (None, _) => {}
        }
    }
}

/// What making room evicted.
struct Evicted {
    count: usize,
    bytes: usize,
}

impl Segment {
    fn find(&self, hash: u64, generation: u64, key: &[u8]) -> Option<u32> {
        let slots = &self.slots;
        self.table
            .find(hash, |&i| {
                let s = &slots[i as usize];
                s.generation == generation
                    && s.key_len == key.len()
                    && s.entry.as_ref().is_some_and(|e| e[..s.key_len] == *key)
            })
            .copied()
    }

    fn insert(&mut self, hash: u64, generation: u64, key_len: usize, entry: Arc<[u8]>) {
        let slot = Slot {
            hash,
            generation,
            key_len,
            entry: Some(entry),
            // New entries start unreferenced: one hit keeps them past the next sweep.
            referenced: AtomicBool::new(false),
        };
        self.bytes += slot.charge();
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        self.table
            .insert_unique(hash, i, |&j| slots[j as usize].hash);
    }

    /// Removes slot `i`'s entry (it must hold one).
    fn remove(&mut self, i: u32) {
        let hash = self.slots[i as usize].hash;
        if let Ok(entry) = self.table.find_entry(hash, |&j| j == i) {
            entry.remove();
        }
        let slot = &mut self.slots[i as usize];
        self.bytes -= slot.charge();
        slot.entry = None;
        self.free.push(i);
    }

    /// Evicts entries (CLOCK) until `need` more bytes fit in `budget`.
    fn make_room(&mut self, need: usize, budget: usize) -> Evicted {
        let mut evicted = Evicted { count: 0, bytes: 0 };
        // Two full turns: the first may only clear reference bits.
        let mut steps = 2 * self.slots.len();
        while self.bytes + need > budget && steps > 0 {
            steps -= 1;
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let i = self.hand;
            self.hand += 1;
            let slot = &self.slots[i];
            if slot.entry.is_none() {
                continue;
            }
            if slot.referenced.swap(false, Ordering::Relaxed) {
                continue;
            }
            evicted.count += 1;
            evicted.bytes += slot.charge();
            self.remove(i as u32);
        }
        evicted
    }
}

#[cfg(test)]
mod tests;
