//! Warming the lookup cache with a replica's stored rows when it opens.
//!
//! A replica opens with a fresh lookup-cache generation, so nothing cached is read and
//! every row of it is in SST files the block cache does not hold: each first lookup of a
//! row would run on the blocking pool. Warming reads the rows column family in key order
//! (without filling RocksDB's block cache) and caches each row, unreferenced, until the
//! cache is nine tenths full, the rows end, or the caller stops it.

use std::sync::atomic::Ordering;

use super::{CF_ROWS, ShardStore};
use crate::storage::StorageError;

/// Rows cached per snapshot: a write landing between two chunks costs at most one
/// chunk's work again.
const CHUNK: usize = 512;

/// What warming cached.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Warmed {
    /// Rows cached (or found cached already). RocksDB's compaction filter drops expired
    /// rows and old tombstones even under a snapshot, so a compaction between two chunks
    /// leaves the later ones fewer rows: the count is of what each chunk found.
    pub rows: u64,
    /// Their keys' and values' bytes.
    pub bytes: u64,
    /// Whether every stored row was visited (not stopped by the budget or the caller).
    pub complete: bool,
}

impl ShardStore {
    /// Caches this replica's stored rows in the lookup cache (see the module
    /// documentation), checking `stop` between chunks. Blocking: run it on a blocking
    /// thread. Keeps the cache's consistency: each chunk is read from a snapshot taken
    /// between writes, and a row is cached only if no write has begun since
    /// ([`super::lookup_cache::LookupCache::insert_if_unchanged`]); a chunk a write
    /// interrupted is read again from a new snapshot.
    ///
    /// # Errors
    /// [`StorageError`] if RocksDB fails to read the rows.
    pub fn warm_lookup_cache(&self, stop: impl Fn() -> bool) -> Result<Warmed, StorageError> {
        let mut warmed = Warmed::default();
        let Some(cache) = self.lookup_cache.clone() else {
            return Ok(warmed);
        };
        // Where the next chunk starts (inclusive); `None`: the first row.
        let mut from: Option<Vec<u8>> = None;
        while !stop() && cache.has_room_to_warm() {
            let read = self.consistent_read();
            let Some(seq) = read.seq else {
                // A write is in flight (it takes about a millisecond): take the next
                // snapshot after it rather than spin beside it.
                drop(read);
                std::thread::sleep(std::time::Duration::from_millis(1));
                continue;
            };
            let generation = self.generation.load(Ordering::Acquire);
            let mut opts = rocksdb::ReadOptions::default();
            opts.set_snapshot(&read.snapshot);
            // A scan of the whole family must not evict the blocks lookups use.
            opts.fill_cache(false);
            let mut it = self.db.raw_iterator_cf_opt(self.cf(CF_ROWS), opts);
            match &from {
                Some(key) => it.seek(key),
                None => it.seek_to_first(),
            }
            for _ in 0..CHUNK {
                let (Some(key), Some(value)) = (it.key(), it.value()) else {
                    break;
                };
                if !cache.insert_if_unchanged(generation, key, value, &self.write_seq, seq) {
                    // A write began: this row and the rest come from the next snapshot.
                    break;
                }
                warmed.rows += 1;
                warmed.bytes += (key.len() + value.len()) as u64;
                it.next();
            }
            it.status().map_err(|e| self.rocks(e))?;
            match it.key() {
                Some(next) => from = Some(next.to_vec()),
                None => {
                    warmed.complete = true;
                    break;
                }
            }
        }
        Ok(warmed)
    }
}
