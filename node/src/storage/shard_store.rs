//! One shard replica's database: atomic ingest batches with event-time last-write-wins,
//! batched point reads, and the watermark (applied offsets) readers can wait on.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use quiver_proto::ShardId;
use rocksdb::statistics::Ticker;
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, DBPinnableSlice, Direction, IteratorMode, Options,
    ReadOptions, WriteBatch,
};
use tokio::sync::watch;

use super::engine::StorageEngine;
use super::lookup_cache::{self, LookupCache};
use super::{OffsetRecord, ShardIdentity, StorageError, keys, row_codec};

const CF_ROWS: &str = "rows";
const CF_META: &str = "meta";
const CF_HISTORY: &str = "history";

use super::watermark::Watermark;

/// One row change decoded from a record.
#[derive(Debug, Clone)]
pub struct RowWrite {
    /// Index into [`IngestBatch::progress`] of the topic the record came from.
    pub topic: usize,
    /// Storage key ([`keys::row_key`]).
    pub key: Vec<u8>,
    /// Event time; decides last-write-wins.
    pub event_time_micros: i64,
    /// Encoded row, or `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// For a view that keeps history: where the record came from (the version is also
    /// written to the history, [`super::history`]).
    pub history: Option<super::history::HistoryMeta>,
}

/// Consumption progress of one topic within a batch.
#[derive(Debug, Clone, Default)]
pub struct TopicProgress {
    /// Topic name.
    pub topic: String,
    /// Next offset to consume after this batch.
    pub next_offset: i64,
    /// Records consumed in this batch.
    pub consumed: u64,
    /// Records skipped as malformed in this batch.
    pub malformed: u64,
}

/// One raw event of an aggregation view, decoded from a record.
#[derive(Debug, Clone)]
pub struct AggEvent {
    /// Index into [`IngestBatch::progress`] of the topic the record came from.
    pub topic: usize,
    /// The aggregation view (version) it counts in.
    pub view: Arc<crate::registry::FeatureView>,
    /// Storage key ([`keys::tile_key`]).
    pub key: Vec<u8>,
    /// Event time, µs.
    pub event_time_micros: i64,
    /// Input values in the aggregation's input order, or `None` for a tombstone (which
    /// erases the entity's aggregates).
    pub values: Option<Vec<Option<quiver_proto::v1::value::Kind>>>,
    /// For a view that keeps history: where the record came from (an accepted event or a
    /// tombstone is also written to the history, [`super::history`]).
    pub history: Option<super::history::HistoryMeta>,
}

/// Everything one ingest step writes, atomically.
#[derive(Debug, Clone, Default)]
pub struct IngestBatch {
    /// Row changes in consumption order.
    pub writes: Vec<RowWrite>,
    /// Aggregation events in consumption order.
    pub events: Vec<AggEvent>,
    /// Per-topic progress; `RowWrite::topic` indexes this.
    pub progress: Vec<TopicProgress>,
}

/// What [`ShardStore::apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Writes that changed a row.
    pub applied: u64,
    /// Writes older than the stored row, ignored.
    pub superseded: u64,
    /// Aggregation events dropped as later than `allowed_lateness`, per view.
    pub late: Vec<(String, u64)>,
    /// Aggregation tiles updated.
    pub tiles_written: u64,
    /// Day summary states rolled up from finer tiles (aggregation bodies rewritten).
    pub rollups: u64,
    /// Row versions written to the history.
    pub history_written: u64,
}

/// A shard replica's RocksDB database.
pub struct ShardStore {
    shard: ShardId,
    db: DB,
    /// Kept for its statistics object.
    db_options: Options,
    offsets: Mutex<BTreeMap<String, OffsetRecord>>,
    watermark: watch::Sender<Watermark>,
    /// Newest event time applied since open (freshness), µs; 0 if none.
    newest_event_micros: std::sync::atomic::AtomicI64,
    /// Odd while a write is in flight (see [`ShardStore::consistent_read`]).
    write_seq: AtomicU64,
    /// The node's lookup cache, if configured ([`super::lookup_cache`]).
    lookup_cache: Option<Arc<LookupCache>>,
    /// This replica's generation in the lookup cache: fresh at open and after any change
    /// of its rows outside [`ShardStore::apply`], so no older entry is read again.
    generation: AtomicU64,
    /// Lookups and background reads enter it; closing the replica waits for them.
    gate: crate::gate::Gate,
}

impl AsRef<crate::gate::Gate> for ShardStore {
    fn as_ref(&self) -> &crate::gate::Gate {
        &self.gate
    }
}

impl ShardStore {
    /// The gate its readers enter ([`crate::gate::Gate::enter`]) and closing waits on.
    pub fn gate(&self) -> &crate::gate::Gate {
        &self.gate
    }
}

impl ShardStore {
    pub(super) fn open(
        engine: &StorageEngine,
        shard: ShardId,
        identity: ShardIdentity,
    ) -> Result<Self, StorageError> {
        let path = engine.shard_dir(shard);
        let db_options = engine.db_options();
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_ROWS, engine.rows_options()),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
            ColumnFamilyDescriptor::new(CF_HISTORY, engine.history_options()),
        ];
        let rocks = |source| StorageError::Rocks { shard, source };
        let db = DB::open_cf_descriptors(&db_options, &path, cfs).map_err(rocks)?;
        let store = ShardStore {
            shard,
            db,
            db_options,
            offsets: Mutex::new(BTreeMap::new()),
            watermark: watch::channel(Watermark::default()).0,
            newest_event_micros: std::sync::atomic::AtomicI64::new(0),
            write_seq: AtomicU64::new(0),
            lookup_cache: engine.lookup_cache(),
            generation: AtomicU64::new(lookup_cache::fresh_generation()),
            gate: crate::gate::Gate::default(),
        };
        store.check_identity(&identity)?;
        let offsets = store.load_offsets()?;
        store.watermark.send_replace(Arc::new(
            offsets
                .iter()
                .map(|(t, r)| (t.clone(), r.next_offset))
                .collect(),
        ));
        *store.offsets.lock().unwrap_or_else(|p| p.into_inner()) = offsets;
        Ok(store)
    }

    fn rocks(&self, source: rocksdb::Error) -> StorageError {
        StorageError::Rocks {
            shard: self.shard,
            source,
        }
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created at open")
    }

    fn check_identity(&self, identity: &ShardIdentity) -> Result<(), StorageError> {
        let meta = self.cf(CF_META);
        let configured = serde_json::to_string(identity).expect("identity serialises");
        match self
            .db
            .get_cf(meta, keys::SHARD_IDENTITY_KEY)
            .map_err(|e| self.rocks(e))?
        {
            Some(stored) if stored == configured.as_bytes() => Ok(()),
            Some(stored) => Err(StorageError::IdentityMismatch {
                shard: self.shard,
                stored: String::from_utf8_lossy(&stored).into_owned(),
                configured,
            }),
            None => self
                .db
                .put_cf(meta, keys::SHARD_IDENTITY_KEY, configured)
                .map_err(|e| self.rocks(e)),
        }
    }

    fn load_offsets(&self) -> Result<BTreeMap<String, OffsetRecord>, StorageError> {
        self.read_offsets(ReadOptions::default())
    }

    /// Offset records as of `readopts` (which may pin a snapshot).
    fn read_offsets(
        &self,
        readopts: ReadOptions,
    ) -> Result<BTreeMap<String, OffsetRecord>, StorageError> {
        let mut out = BTreeMap::new();
        let iter = self.db.iterator_cf_opt(
            self.cf(CF_META),
            readopts,
            IteratorMode::From(keys::OFFSET_PREFIX, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item.map_err(|e| self.rocks(e))?;
            let Some(topic) = k.strip_prefix(keys::OFFSET_PREFIX) else {
                break;
            };
            let topic = String::from_utf8_lossy(topic).into_owned();
            let rec = OffsetRecord::decode(&v).ok_or_else(|| StorageError::Corrupt {
                shard: self.shard,
                what: "offset record",
                detail: format!("topic {topic}: {} bytes", v.len()),
            })?;
            out.insert(topic, rec);
        }
        Ok(out)
    }

    /// The shard this database holds.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// Stored offset records by topic.
    pub fn offsets(&self) -> BTreeMap<String, OffsetRecord> {
        self.offsets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The current watermark.
    pub fn watermark(&self) -> Watermark {
        self.watermark.borrow().clone()
    }

    /// Event time (µs) of the newest row applied since the store opened; 0 if none.
    pub fn newest_event_time_micros(&self) -> i64 {
        self.newest_event_micros
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(0)
    }

    /// Subscribes to watermark changes (after every applied batch).
    pub fn subscribe_watermark(&self) -> watch::Receiver<Watermark> {
        self.watermark.subscribe()
    }

    /// Applies one ingest batch atomically: rows by event-time last-write-wins (ties go to
    /// the later record) plus the new offsets and counters.
    ///
    /// # Errors
    /// [`StorageError::Rocks`] if the read or the write fails; nothing is written then.
    pub fn apply(&self, batch: &IngestBatch) -> Result<ApplyOutcome, StorageError> {
        let rows = self.cf(CF_ROWS);
        // Event time of the current row per key, seeded from the database once per key.
        let mut current: HashMap<&[u8], Option<i64>> = HashMap::with_capacity(batch.writes.len());
        let mut missing: Vec<&[u8]> = Vec::new();
        for w in &batch.writes {
            if current.insert(&w.key, None).is_none() {
                missing.push(&w.key);
            }
        }
        let stored = self
            .db
            .batched_multi_get_cf(rows, missing.iter().copied(), false);
        for (key, res) in missing.iter().zip(stored) {
            let et = match res.map_err(|e| self.rocks(e))? {
                // A corrupt stored row is overwritten by the next write rather than
                // blocking the partition forever.
                Some(v) => row_codec::decode_header(&v)
                    .ok()
                    .map(|h| h.event_time_micros),
                None => None,
            };
            current.insert(key, et);
        }

        let mut wb = WriteBatch::default();
        let mut outcome = ApplyOutcome::default();
        let mut per_topic = vec![ApplyOutcome::default(); batch.progress.len()];
        let mut tombstone = Vec::new();
        let mut newest = i64::MIN;
        let mut history = HistoryWriter::default();
        // Rows written, for the lookup cache (only when there is one).
        let mut won: Vec<&RowWrite> = Vec::new();
        for w in &batch.writes {
            if let Some(meta) = w.history {
                // Every version, won or not: an older event arriving late is still the
                // answer as of its time.
                history.put(self.cf(CF_HISTORY), &mut wb, w, meta);
                outcome.history_written += 1;
            }
            let slot = current.get_mut(w.key.as_slice()).expect("seeded above");
            let wins = slot.is_none_or(|cur| w.event_time_micros >= cur);
            let counter = &mut per_topic[w.topic];
            if wins {
                *slot = Some(w.event_time_micros);
                if self.lookup_cache.is_some() {
                    won.push(w);
                }
                match &w.value {
                    Some(v) => wb.put_cf(rows, &w.key, v),
                    None => {
                        row_codec::encode_tombstone(w.event_time_micros, &mut tombstone);
                        wb.put_cf(rows, &w.key, &tombstone);
                    }
                }
                counter.applied += 1;
                outcome.applied += 1;
                newest = newest.max(w.event_time_micros);
            } else {
                counter.superseded += 1;
                outcome.superseded += 1;
            }
        }

        if !batch.events.is_empty() {
            self.apply_events(
                &batch.events,
                &mut wb,
                &mut history,
                &mut per_topic,
                &mut outcome,
            )?;
        }

        let meta = self.cf(CF_META);
        let mut offsets = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = offsets.clone();
        for (p, counts) in batch.progress.iter().zip(&per_topic) {
            let rec = next.entry(p.topic.clone()).or_default();
            rec.next_offset = p.next_offset;
            rec.consumed += p.consumed;
            rec.malformed += p.malformed;
            rec.applied += counts.applied;
            rec.superseded += counts.superseded;
            wb.put_cf(meta, keys::offset_key(&p.topic), rec.encode());
        }
        // Readers pair a snapshot with the published watermark without reading the
        // offsets back (see `consistent_read`): the sequence is odd from before the write
        // until the watermark of that write is published. Writers are serialised by the
        // `offsets` lock held here.
        self.write_seq.fetch_add(1, Ordering::AcqRel);
        let written = self.db.write(wb).map_err(|e| self.rocks(e));
        if written.is_ok() {
            // Still odd: cached rows change before readers can pair them with this
            // write's watermark (see `lookup_cache`).
            if let Some(cache) = &self.lookup_cache {
                let generation = self.generation.load(Ordering::Acquire);
                for w in won {
                    cache.written(generation, &w.key, w.value.as_deref());
                }
            }
            let wm: super::Offsets = next
                .iter()
                .map(|(t, r)| (t.clone(), r.next_offset))
                .collect();
            *offsets = next;
            self.watermark.send_replace(Arc::new(wm));
        }
        self.write_seq.fetch_add(1, Ordering::Release);
        drop(offsets);
        written?;
        self.newest_event_micros
            .fetch_max(newest, std::sync::atomic::Ordering::Relaxed);
        Ok(outcome)
    }

    /// Reads rows by storage key in one batched multi-get; results are in `keys` order.
    pub fn get_rows<'a, K: AsRef<[u8]> + 'a>(
        &self,
        keys: impl IntoIterator<Item = &'a K>,
    ) -> Vec<Result<Option<DBPinnableSlice<'_>>, rocksdb::Error>> {
        self.db.batched_multi_get_cf(self.cf(CF_ROWS), keys, false)
    }

    /// A point-in-time view of the shard: rows and the watermark read through it are
    /// mutually consistent, so a reader that reports this watermark never reports less
    /// than what the rows it returned reflect (monotonic reads rely on it).
    ///
    /// The watermark normally comes from memory: if no write began or ended while the
    /// snapshot was taken (the write sequence was the same even number before and after),
    /// the snapshot holds exactly the state whose watermark was last published. Otherwise
    /// it is read from the snapshot's offset records.
    pub fn consistent_read(&self) -> ConsistentRead<'_> {
        let before = self.write_seq.load(Ordering::Acquire);
        let snapshot = self.db.snapshot();
        let published = self.watermark.borrow().clone();
        let after = self.write_seq.load(Ordering::Acquire);
        let between_writes = before == after && before.is_multiple_of(2);
        ConsistentRead {
            store: self,
            snapshot,
            known: between_writes.then_some(published),
            seq: between_writes.then_some(before),
        }
    }

    /// Runs a full compaction of the rows and the history, which drops expired rows, old
    /// tombstones and versions past the history retention through the compaction filters
    /// (a "sweep"; RocksDB also compacts on its own schedule).
    pub fn compact_rows(&self) {
        for cf in [CF_ROWS, CF_HISTORY] {
            self.db
                .compact_range_cf(self.cf(cf), None::<&[u8]>, None::<&[u8]>);
        }
        // The sweep removed rows without a write: cached copies of them must go too.
        let offsets = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
        self.write_seq.fetch_add(1, Ordering::AcqRel);
        self.forget_cached_rows();
        self.write_seq.fetch_add(1, Ordering::Release);
        drop(offsets);
    }

    /// Makes every lookup-cache entry of this replica unreachable (a fresh generation).
    /// Call with the write sequence odd, so no reader pairs an old entry with a newer
    /// watermark and no fill from an older snapshot lands.
    pub(super) fn forget_cached_rows(&self) {
        self.generation
            .store(lookup_cache::fresh_generation(), Ordering::Release);
    }

    /// Counts stored history entries (every kept row version). For tests and tools; it
    /// reads the whole key space.
    ///
    /// # Errors
    /// [`StorageError::Rocks`] if the scan fails.
    pub fn count_history_entries(&self) -> Result<u64, StorageError> {
        let mut n = 0;
        for item in self
            .db
            .iterator_cf(self.cf(CF_HISTORY), IteratorMode::Start)
        {
            item.map_err(|e| self.rocks(e))?;
            n += 1;
        }
        Ok(n)
    }

    /// Counts stored rows (including tombstone markers) with a prefix scan. For tests and
    /// tools; it reads the whole key space.
    pub fn count_raw_rows(&self) -> Result<u64, StorageError> {
        let mut n = 0;
        for item in self.db.iterator_cf(self.cf(CF_ROWS), IteratorMode::Start) {
            item.map_err(|e| self.rocks(e))?;
            n += 1;
        }
        Ok(n)
    }

    /// RocksDB's estimate of the number of stored rows.
    pub fn estimate_rows(&self) -> u64 {
        self.db
            .property_int_value_cf(self.cf(CF_ROWS), "rocksdb.estimate-num-keys")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// An integer RocksDB property summed over the shard's column families (e.g.
    /// `rocksdb.cur-size-all-mem-tables`); 0 when RocksDB does not know it.
    pub fn int_property(&self, name: &str) -> u64 {
        [CF_ROWS, CF_META, CF_HISTORY]
            .iter()
            .map(|cf| {
                self.db
                    .property_int_value_cf(self.cf(cf), name)
                    .ok()
                    .flatten()
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Microseconds writes to this database were stalled since it opened.
    pub fn stall_micros(&self) -> u64 {
        self.db_options.get_ticker_count(Ticker::StallMicros)
    }

    /// Block-cache hits and misses of this database since it opened.
    pub fn block_cache_stats(&self) -> (u64, u64) {
        (
            self.db_options.get_ticker_count(Ticker::BlockCacheHit),
            self.db_options.get_ticker_count(Ticker::BlockCacheMiss),
        )
    }

    /// Row cache hits and misses of this shard so far.
    pub fn row_cache_stats(&self) -> (u64, u64) {
        (
            self.db_options.get_ticker_count(Ticker::RowCacheHit),
            self.db_options.get_ticker_count(Ticker::RowCacheMiss),
        )
    }

    /// Flushes memtables and syncs the WAL; called on graceful shutdown so the next start
    /// does not replay the WAL.
    ///
    /// # Errors
    /// [`StorageError::Rocks`] if the flush fails.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.db
            .flush_cf(self.cf(CF_ROWS))
            .map_err(|e| self.rocks(e))?;
        self.db
            .flush_cf(self.cf(CF_META))
            .map_err(|e| self.rocks(e))?;
        self.db
            .flush_cf(self.cf(CF_HISTORY))
            .map_err(|e| self.rocks(e))?;
        self.db.flush_wal(true).map_err(|e| self.rocks(e))
    }
}

/// Writes history entries into a batch with reused buffers.
#[derive(Default)]
pub(super) struct HistoryWriter {
    key: Vec<u8>,
    row: Vec<u8>,
    value: Vec<u8>,
}

impl HistoryWriter {
    fn put(
        &mut self,
        cf: &ColumnFamily,
        wb: &mut WriteBatch,
        w: &RowWrite,
        meta: super::history::HistoryMeta,
    ) {
        let Some(k) = keys::parse_row_key(&w.key) else {
            return;
        };
        let row = match &w.value {
            Some(v) => Some(v.as_slice()),
            None => {
                row_codec::encode_tombstone(w.event_time_micros, &mut self.row);
                None
            }
        };
        self.entry(cf, wb, &k, w.event_time_micros, meta, row);
    }

    /// Writes an aggregation event (its input values, or a tombstone) to the history.
    fn put_event(
        &mut self,
        cf: &ColumnFamily,
        wb: &mut WriteBatch,
        ev: &AggEvent,
        meta: super::history::HistoryMeta,
    ) {
        let Some(k) = keys::parse_view_key(&ev.key) else {
            return;
        };
        match &ev.values {
            Some(v) => row_codec::encode_row(ev.event_time_micros, v, &mut self.row),
            None => row_codec::encode_tombstone(ev.event_time_micros, &mut self.row),
        }
        self.entry(cf, wb, &k, ev.event_time_micros, meta, None);
    }

    /// Writes one entry: `row`, or when `None` the row encoded into `self.row`.
    fn entry(
        &mut self,
        cf: &ColumnFamily,
        wb: &mut WriteBatch,
        k: &keys::RowKey<'_>,
        event_time_micros: i64,
        meta: super::history::HistoryMeta,
        row: Option<&[u8]>,
    ) {
        self.key.clear();
        keys::encode_history_key(
            k.view,
            k.version,
            k.entity_key,
            event_time_micros,
            meta.offset,
            &mut self.key,
        );
        let row = row.unwrap_or(&self.row);
        super::history::encode_value(meta.arrival_micros, row, &mut self.value);
        wb.put_cf(cf, &self.key, &self.value);
    }
}

mod checkpoint;
mod drop;
mod read;
mod warm;

pub use read::{ConsistentRead, RowBytes};
pub use warm::Warmed;
mod events;
#[cfg(test)]
mod lookup_cache_tests;
#[cfg(test)]
mod tests;
