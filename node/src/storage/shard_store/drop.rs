//! Dropping a view version's data on this replica: range deletions of its rows, tile sets
//! and history, and its offset streams and event-time watermark — in one `WriteBatch`
//! with a marker, so it runs once per version and a crash mid-way leaves nothing half
//! dropped.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rocksdb::WriteBatch;

use super::{CF_HISTORY, CF_META, CF_ROWS, ShardStore};
use crate::storage::{StorageError, keys};

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

impl ShardStore {
    /// Deletes everything this replica stores for `(view, version)`. Returns `false` when
    /// it was dropped before (nothing written).
    ///
    /// # Errors
    /// A RocksDB failure; nothing is deleted then, and the next call tries again.
    pub fn drop_view_version(&self, view: &str, version: u32) -> Result<bool, StorageError> {
        let meta = self.cf(CF_META);
        let marker = keys::dropped_version_key(view, version);
        if self
            .db
            .get_pinned_cf(meta, &marker)
            .map_err(|e| self.rocks(e))?
            .is_some()
        {
            return Ok(false);
        }
        let mut wb = WriteBatch::default();
        let rows = self.cf(CF_ROWS);
        for tag in [keys::ROW_TAG, keys::TILE_TAG, keys::TILE_BODY_TAG] {
            let (from, to) = version_range(tag, view, version);
            wb.delete_range_cf(rows, from, to);
        }
        let (from, to) = version_range(keys::HISTORY_TAG, view, version);
        wb.delete_range_cf(self.cf(CF_HISTORY), from, to);
        wb.delete_cf(meta, keys::event_watermark_key(view, version));
        wb.put_cf(meta, &marker, []);
        // The version's own offset streams (`topic#view@version`), under the offsets lock
        // and the write sequence like any ingest write (readers pair a snapshot with the
        // published watermark).
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
            for s in &streams {
                offsets.remove(s);
            }
            let wm = offsets
                .iter()
                .map(|(t, r)| (t.clone(), r.next_offset))
                .collect();
            self.watermark.send_replace(Arc::new(wm));
        }
        self.write_seq.fetch_add(1, Ordering::Release);
        drop(offsets);
        written.map(|()| true)
    }

    /// Returns the disk space of a dropped `(view, version)`: deletes the SST files that
    /// hold only its keys and compacts the rest of its ranges, so the range deletions do
    /// not wait for background compaction to reach them. Blocking: the shard's ingest
    /// thread runs it once per dropped version, after [`ShardStore::drop_view_version`].
    ///
    /// # Errors
    /// A RocksDB failure (the space then comes back with later compactions).
    pub fn reclaim_view_version(&self, view: &str, version: u32) -> Result<(), StorageError> {
        let ranges = [
            (CF_ROWS, keys::ROW_TAG),
            (CF_ROWS, keys::TILE_TAG),
            (CF_ROWS, keys::TILE_BODY_TAG),
            (CF_HISTORY, keys::HISTORY_TAG),
        ];
        // The memtables too (the deleted rows may not have reached an SST yet), which
        // also lets RocksDB recycle the write-ahead log that holds them.
        self.flush()?;
        for (cf, tag) in ranges {
            let (from, to) = version_range(tag, view, version);
            let cf = self.cf(cf);
            // Whole files first (no rewrite), then the files the range shares with others.
            self.db
                .delete_file_in_range_cf(cf, &from, &to)
                .map_err(|e| self.rocks(e))?;
            self.db.compact_range_cf(cf, Some(&from), Some(&to));
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
