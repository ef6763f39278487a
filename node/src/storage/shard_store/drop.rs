//! Dropping a view version's data on this replica: its offset streams and event-time
//! watermark go in one `WriteBatch` with a "dropping" marker, then its rows, tile sets and
//! history are deleted key by key (RocksDB refuses range deletions when a row cache is
//! configured), then the marker says "dropped". A crash mid-way resumes from the marker,
//! so it runs to the end once per version and nothing is left half dropped.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rocksdb::{ReadOptions, WriteBatch};

use super::{CF_HISTORY, CF_META, CF_ROWS, ShardStore};
use crate::storage::{StorageError, keys};

/// The marker's value while the version's keys are being deleted; a done drop's marker is
/// empty (as every marker written before deletions could be interrupted).
pub(super) const DROPPING: &[u8] = b"dropping";

/// Point deletions per write while a version's keys are deleted (bounds the batch's memory).
const DELETES_PER_WRITE: usize = 4096;

/// The smallest key greater than every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.last_mut() {
        if *last < 0xFF {
            *last += 1;
            return end;
        }
        end.pop();
    }
    // An all-0xFF prefix: nothing sorts after it within the tag, so end past the tag.
    vec![0xFF; prefix.len() + 1]
}

/// `[start, end)` of the keys of `(view, version)` under `tag`.
fn version_range(tag: u8, view: &str, version: u32) -> (Vec<u8>, Vec<u8>) {
    let mut start = keys::row_prefix(view, version);
    start[0] = tag;
    let end = prefix_end(&start);
    (start, end)
}

/// Every key range a view version owns: (column family, key tag).
const VERSION_RANGES: [(&str, u8); 4] = [
    (CF_ROWS, keys::ROW_TAG),
    (CF_ROWS, keys::TILE_TAG),
    (CF_ROWS, keys::TILE_BODY_TAG),
    (CF_HISTORY, keys::HISTORY_TAG),
];

impl ShardStore {
    /// Deletes everything this replica stores for `(view, version)`. Returns `false` when
    /// it was dropped before (nothing written); a drop that was interrupted (crash, error)
    /// is resumed and returns `true`.
    ///
    /// # Errors
    /// A RocksDB failure; the next call resumes where this one stopped.
    pub fn drop_view_version(&self, view: &str, version: u32) -> Result<bool, StorageError> {
        let meta = self.cf(CF_META);
        let marker = keys::dropped_version_key(view, version);
        match self
            .db
            .get_pinned_cf(meta, &marker)
            .map_err(|e| self.rocks(e))?
        {
            Some(v) if *v != *DROPPING => return Ok(false),
            Some(_) => {}
            None => self.stop_view_version(view, version, &marker)?,
        }
        for (cf, tag) in VERSION_RANGES {
            let (from, to) = version_range(tag, view, version);
            // Whole files first (no rewrite, no tombstones). Before the key deletions and
            // never after them: a removed file of tombstones would bring back the keys
            // they covered in files that straddle the range. Whatever such a removal
            // brought back from an interrupted earlier run is deleted just below.
            self.db
                .delete_file_in_range_cf(self.cf(cf), &from, &to)
                .map_err(|e| self.rocks(e))?;
            self.delete_keys(cf, &from, &to)?;
        }
        self.db
            .put_cf(meta, &marker, [])
            .map_err(|e| self.rocks(e))?;
        Ok(true)
    }

    /// The atomic first step of a drop: the version's offset streams (`topic#view@version`)
    /// and event-time watermark go, and the marker says "dropping" — under the offsets lock
    /// and the write sequence like any ingest write (readers pair a snapshot with the
    /// published watermark).
    fn stop_view_version(
        &self,
        view: &str,
        version: u32,
        marker: &[u8],
    ) -> Result<(), StorageError> {
        let meta = self.cf(CF_META);
        let mut wb = WriteBatch::default();
        wb.delete_cf(meta, keys::event_watermark_key(view, version));
        wb.put_cf(meta, marker, DROPPING);
        let suffix = format!("#{view}@{version}");
        let mut offsets = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
        let streams: Vec<String> = offsets
            .keys()
            .filter(|k| k.ends_with(&suffix))
            .cloned()
            .collect();
        for s in &streams {
            wb.delete_cf(meta, keys::offset_key(s));
        }
        self.write_seq.fetch_add(1, Ordering::AcqRel);
        let written = self.db.write(wb).map_err(|e| self.rocks(e));
        if written.is_ok() {
            // The version's rows are about to go (below, outside the sequence).
            self.forget_cached_rows();
            for s in &streams {
                offsets.remove(s);
            }
            let wm: crate::storage::Offsets = offsets
                .iter()
                .map(|(t, r)| (t.clone(), r.next_offset))
                .collect();
            self.watermark.send_replace(Arc::new(wm));
        }
        self.write_seq.fetch_add(1, Ordering::Release);
        drop(offsets);
        written
    }

    /// Deletes every key in `[from, to)` of `cf`, a bounded batch at a time. No reader
    /// reads a dropped version, so these writes stay outside the write sequence.
    fn delete_keys(&self, cf: &str, from: &[u8], to: &[u8]) -> Result<(), StorageError> {
        let handle = self.cf(cf);
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(to.to_vec());
        // A one-off scan of data about to go: keep it out of the block cache.
        ro.fill_cache(false);
        let mut it = self.db.raw_iterator_cf_opt(handle, ro);
        it.seek(from);
        let mut wb = WriteBatch::default();
        while it.valid() {
            if let Some(k) = it.key() {
                wb.delete_cf(handle, k);
            }
            if wb.len() >= DELETES_PER_WRITE {
                self.db
                    .write(std::mem::take(&mut wb))
                    .map_err(|e| self.rocks(e))?;
            }
            it.next();
        }
        it.status().map_err(|e| self.rocks(e))?;
        if !wb.is_empty() {
            self.db.write(wb).map_err(|e| self.rocks(e))?;
        }
        Ok(())
    }

    /// Returns the disk space of a dropped `(view, version)`: flushes its deletions and
    /// compacts its ranges, so they do not wait for background compaction to reach them
    /// (the files that held only its keys went in [`ShardStore::drop_view_version`]).
    /// Blocking: the shard's ingest thread runs it once per dropped version.
    ///
    /// # Errors
    /// A RocksDB failure (the space then comes back with later compactions).
    pub fn reclaim_view_version(&self, view: &str, version: u32) -> Result<(), StorageError> {
        // The memtables too (the deleted rows may not have reached an SST yet), which
        // also lets RocksDB recycle the write-ahead log that holds them.
        self.flush()?;
        for (cf, tag) in VERSION_RANGES {
            let (from, to) = version_range(tag, view, version);
            self.db
                .compact_range_cf(self.cf(cf), Some(&from), Some(&to));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_prefix() {
        assert_eq!(prefix_end(&[1, 2, 3]), vec![1, 2, 4]);
        assert_eq!(prefix_end(&[1, 2, 0xFF]), vec![1, 3]);
        assert_eq!(prefix_end(&[0xFF, 0xFF]), vec![0xFF, 0xFF, 0xFF]);
    }
}
