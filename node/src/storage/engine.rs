//! Resources shared by every shard database of a node, and the TTL compaction filter.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quiver_proto::{Partitioner, ShardId};
use rocksdb::compaction_filter::Decision;
use rocksdb::statistics::StatsLevel;
use rocksdb::{
    BlockBasedOptions, Cache, DBCompressionType, DataBlockIndexType, Options, WriteBufferManager,
};

use super::lookup_cache::LookupCache;
use super::shard_store::ShardStore;
use super::{ShardIdentity, StorageError, keys, row_codec};

/// Static storage settings of a node.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Root data directory; shards live in `<data_dir>/shards/<shard>`.
    pub data_dir: PathBuf,
    /// Block cache shared by all shards.
    pub block_cache_bytes: usize,
    /// Row cache shared by all shards (0: none): the values of point reads, so a read of
    /// a hot key skips the SST file's filter, index and data block search.
    pub row_cache_bytes: usize,
    /// quiver's lookup cache (0: none): the latest rows of hot keys of plain views, in
    /// front of RocksDB ([`super::lookup_cache`]).
    pub lookup_cache_bytes: usize,
    /// Whether ingest caches the rows it writes in the lookup cache (not only replaces
    /// cached ones).
    pub lookup_cache_fill_on_ingest: bool,
    /// Memtable budget shared by all shards (charged to the block cache).
    pub write_buffer_bytes: usize,
    /// How long a tombstone marker is kept so out-of-order older events cannot resurrect a
    /// deleted row.
    pub tombstone_retention: Duration,
}

impl StorageConfig {
    /// Small settings for tests.
    pub fn for_test(data_dir: PathBuf) -> Self {
        StorageConfig {
            data_dir,
            block_cache_bytes: 16 << 20,
            // On in tests so that every read path runs through it.
            row_cache_bytes: 4 << 20,
            lookup_cache_bytes: 4 << 20,
            lookup_cache_fill_on_ingest: true,
            write_buffer_bytes: 16 << 20,
            tombstone_retention: Duration::from_secs(3600),
        }
    }
}

/// A test's storage: an engine over a fresh temporary directory and its shard 0 (keys to
/// shards by murmur2). Fields drop in order: the store, the engine, then the directory.
#[cfg(test)]
pub struct TestShard {
    /// Shard 0.
    pub store: std::sync::Arc<super::ShardStore>,
    /// The engine that opened it.
    pub engine: StorageEngine,
    /// Its data directory.
    pub dir: tempfile::TempDir,
}

#[cfg(test)]
impl TestShard {
    /// Opens shard 0 in a fresh directory with [`StorageConfig::for_test`] settings.
    pub fn open() -> TestShard {
        let dir = tempfile::tempdir().unwrap();
        let engine = StorageEngine::new(StorageConfig::for_test(dir.path().to_path_buf())).unwrap();
        let store = std::sync::Arc::new(
            engine
                .open_shard(
                    quiver_proto::ShardId(0),
                    1,
                    quiver_proto::Partitioner::Murmur2,
                )
                .unwrap(),
        );
        TestShard { store, engine, dir }
    }
}

/// TTL per `(view, version)`, read by the compaction filters of every shard.
///
/// Refreshed from the registry whenever it changes. Views missing from the table are
/// kept (never dropped by the filter), so a registry race can only delay removal.
#[derive(Clone, Default)]
pub struct TtlTable {
    inner: Arc<RwLock<TtlMap>>,
}

/// `(view, version)` → TTL (`None`: never expires).
type TtlMap = HashMap<(String, u32), Option<Duration>>;

impl TtlTable {
    /// Replaces the table.
    pub fn replace(&self, entries: impl IntoIterator<Item = ((String, u32), Option<Duration>)>) {
        let map = entries.into_iter().collect();
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = map;
    }

    pub(super) fn get(&self, view: &str, version: u32) -> Option<Option<Duration>> {
        let map = self.inner.read().unwrap_or_else(|p| p.into_inner());
        // Allocation-free lookup would need a borrowed key type; compactions are not hot.
        map.get(&(view.to_owned(), version)).copied()
    }
}

pub(super) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The compaction-filter decision for one stored row: drop rows older than their view's
/// TTL and tombstones older than the retention; keep anything it cannot parse.
pub fn ttl_decision(
    ttls: &TtlTable,
    tombstone_retention: Duration,
    key: &[u8],
    value: &[u8],
) -> Decision {
    let Some(k) = keys::parse_view_key(key) else {
        return Decision::Keep;
    };
    let header = if key[0] == keys::TILE_TAG || key[0] == keys::TILE_BODY_TAG {
        // An aggregation's tile set: its table entry is how long its newest event stays
        // in some window (see `refresh_ttls`); erasing deletes the key, no marker.
        crate::aggregate::tiles::newest(value).map(|t| row_codec::RowHeader {
            event_time_micros: t,
            tombstone: false,
        })
    } else {
        row_codec::decode_header(value).map_err(|_| crate::aggregate::AggError::Truncated)
    };
    let Ok(h) = header else {
        return Decision::Keep;
    };
    let age_micros = now_micros().saturating_sub(h.event_time_micros);
    let ttl = ttls.get(k.view, k.version);
    let limit = if h.tombstone {
        // A tombstone must outlive the retention, and the TTL, since an older event within
        // the TTL would otherwise resurrect the row as present.
        Some(match ttl.flatten() {
            Some(t) => t.max(tombstone_retention),
            None => tombstone_retention,
        })
    } else {
        ttl.flatten()
    };
    match limit {
        Some(limit) if age_micros > limit.as_micros() as i64 => Decision::Remove,
        _ => Decision::Keep,
    }
}

/// Opens shard databases with shared caches and options.
pub struct StorageEngine {
    config: StorageConfig,
    cache: Cache,
    row_cache: Option<Cache>,
    lookup_cache: Option<Arc<LookupCache>>,
    write_buffers: WriteBufferManager,
    ttls: TtlTable,
    history: TtlTable,
}

impl StorageEngine {
    /// Creates the engine and the shards directory.
    ///
    /// # Errors
    /// [`StorageError::Io`] if the directory cannot be created.
    pub fn new(config: StorageConfig) -> Result<Self, StorageError> {
        let dir = config.data_dir.join("shards");
        std::fs::create_dir_all(&dir).map_err(|source| StorageError::Io { path: dir, source })?;
        let cache = Cache::new_lru_cache(config.block_cache_bytes);
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
            config.write_buffer_bytes,
            false,
            cache.clone(),
        );
        let row_cache =
            (config.row_cache_bytes > 0).then(|| Cache::new_lru_cache(config.row_cache_bytes));
        let lookup_cache = (config.lookup_cache_bytes > 0).then(|| {
            Arc::new(LookupCache::new(
                config.lookup_cache_bytes,
                config.lookup_cache_fill_on_ingest,
            ))
        });
        Ok(StorageEngine {
            config,
            cache,
            row_cache,
            lookup_cache,
            write_buffers,
            ttls: TtlTable::default(),
            history: TtlTable::default(),
        })
    }

    /// History retention per (view, version), read by the history compaction filter:
    /// `None` for a view that keeps no history. Refreshed on registry changes.
    pub fn history_retention(&self) -> &TtlTable {
        &self.history
    }

    /// The TTL table the compaction filters consult.
    pub fn ttls(&self) -> &TtlTable {
        &self.ttls
    }

    /// Bytes currently held by the shared block cache.
    pub fn block_cache_usage(&self) -> usize {
        self.cache.get_usage()
    }

    /// Bytes currently held by the shared row cache (0 without one).
    pub fn row_cache_usage(&self) -> usize {
        self.row_cache.as_ref().map_or(0, Cache::get_usage)
    }

    /// Bytes charged to the lookup cache's entries (0 without one).
    pub fn lookup_cache_usage(&self) -> usize {
        self.lookup_cache.as_ref().map_or(0, |c| c.usage())
    }

    /// The lookup cache every shard of this engine shares, if configured.
    pub(super) fn lookup_cache(&self) -> Option<Arc<LookupCache>> {
        self.lookup_cache.clone()
    }

    /// Directory of `shard`.
    pub fn shard_dir(&self, shard: ShardId) -> PathBuf {
        self.config
            .data_dir
            .join("shards")
            .join(format!("{:05}", shard.0))
    }

    pub(super) fn db_options(&self) -> Options {
        let mut o = Options::default();
        o.create_if_missing(true);
        o.create_missing_column_families(true);
        o.set_write_buffer_manager(&self.write_buffers);
        if let Some(rc) = &self.row_cache {
            // Point reads (lookups, tiles) of values in SST files; RocksDB keys entries by
            // file, so a compaction or a checkpoint copy never serves a stale one, and
            // reads through a snapshot use it for every file older than the snapshot.
            o.set_row_cache(rc);
        }
        o.enable_statistics();
        // Only tickers are read (block cache hits and misses, stall time); histograms and
        // timers cost every Get a few clock reads and histogram updates.
        o.set_statistics_level(StatsLevel::ExceptHistogramOrTimers);
        // Background threads are process-wide (the default Env); keep the pool small.
        o.set_max_background_jobs(2);
        o.set_keep_log_file_num(3);
        o
    }

    pub(super) fn rows_options(&self) -> Options {
        let mut bbo = BlockBasedOptions::default();
        bbo.set_block_cache(&self.cache);
        bbo.set_bloom_filter(10.0, false);
        bbo.set_cache_index_and_filter_blocks(true);
        bbo.set_pin_l0_filter_and_index_blocks_in_cache(true);
        bbo.set_block_size(16 * 1024);
        bbo.set_format_version(6);
        // Point lookups are the hot path: a hash index per data block finds a key without
        // the binary search and linear scan of the block's restart intervals.
        bbo.set_data_block_index_type(DataBlockIndexType::BinaryAndHash);
        bbo.set_data_block_hash_ratio(0.75);
        let mut o = Options::default();
        o.set_block_based_table_factory(&bbo);
        // A whole-key bloom filter over the memtable: a point read of a key the memtable
        // lacks (most of them, between flushes) skips the skip-list search.
        o.set_memtable_prefix_bloom_ratio(0.02);
        o.set_memtable_whole_key_filtering(true);
        o.set_compression_type(DBCompressionType::Lz4);
        o.set_bottommost_compression_type(DBCompressionType::Zstd);
        o.set_level_compaction_dynamic_level_bytes(true);
        // Cold files would otherwise never meet the TTL filter.
        o.set_periodic_compaction_seconds(24 * 3600);
        let ttls = self.ttls.clone();
        let retention = self.config.tombstone_retention;
        o.set_compaction_filter(
            "quiver_ttl",
            move |_level: u32, key: &[u8], value: &[u8]| ttl_decision(&ttls, retention, key, value),
        );
        o
    }

    /// Options of the `history` column family: point seeks by entity and time (a prefix
    /// bloom would not help a seek), the retention filter per compaction.
    pub(super) fn history_options(&self) -> Options {
        let mut bbo = BlockBasedOptions::default();
        bbo.set_block_cache(&self.cache);
        bbo.set_cache_index_and_filter_blocks(true);
        bbo.set_block_size(16 * 1024);
        bbo.set_format_version(6);
        let mut o = Options::default();
        o.set_block_based_table_factory(&bbo);
        o.set_compression_type(DBCompressionType::Lz4);
        o.set_bottommost_compression_type(DBCompressionType::Zstd);
        o.set_level_compaction_dynamic_level_bytes(true);
        o.set_periodic_compaction_seconds(24 * 3600);
        o.set_compaction_filter_factory(super::history::HistoryFilterFactory::new(
            self.history.clone(),
        ));
        o
    }

    /// Opens (or creates) the database of `shard` and checks its identity.
    ///
    /// # Errors
    /// [`StorageError::IdentityMismatch`] if the directory belongs to another configuration;
    /// [`StorageError::Rocks`] on RocksDB failure.
    pub fn open_shard(
        &self,
        shard: ShardId,
        shard_count: u32,
        partitioner: Partitioner,
    ) -> Result<ShardStore, StorageError> {
        ShardStore::open(
            self,
            shard,
            ShardIdentity::new(shard, shard_count, partitioner),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_decision_rules() {
        let ttls = TtlTable::default();
        ttls.replace([
            (("v".to_owned(), 1), Some(Duration::from_secs(60))),
            (("forever".to_owned(), 1), None),
        ]);
        let retention = Duration::from_secs(3600);
        let now = now_micros();
        let mut row = Vec::new();
        let decide = |view: &str, et: i64, tomb: bool, buf: &mut Vec<u8>| {
            if tomb {
                row_codec::encode_tombstone(et, buf)
            } else {
                row_codec::encode_row(et, &[None], buf)
            }
            ttl_decision(&ttls, retention, &keys::row_key(view, 1, b"k"), buf)
        };
        let min = 60_000_000;
        assert!(matches!(
            decide("v", now - 2 * min, false, &mut row),
            Decision::Remove
        ));
        assert!(matches!(
            decide("v", now - min / 2, false, &mut row),
            Decision::Keep
        ));
        assert!(matches!(
            decide("forever", 0, false, &mut row),
            Decision::Keep
        ));
        // Tombstones live for the retention even when the TTL is shorter.
        assert!(matches!(
            decide("v", now - 2 * min, true, &mut row),
            Decision::Keep
        ));
        assert!(matches!(
            decide("v", now - 61 * min, true, &mut row),
            Decision::Remove
        ));
        assert!(matches!(
            decide("forever", now - 61 * min, true, &mut row),
            Decision::Remove
        ));
        // A tile set goes when its newest event is older than its entry.
        let agg = |newest: i64| {
            let mut v = vec![crate::aggregate::tiles::TILES_FORMAT, 0];
            v.extend_from_slice(&newest.to_le_bytes());
            v.push(0);
            ttl_decision(&ttls, retention, &keys::tile_key("v", 1, b"k"), &v)
        };
        assert!(matches!(agg(now - 2 * min), Decision::Remove));
        assert!(matches!(agg(now - min / 2), Decision::Keep));
        // Unknown views and unparsable values are kept.
        assert!(matches!(
            decide("unknown", 0, false, &mut row),
            Decision::Keep
        ));
        assert!(matches!(
            ttl_decision(&ttls, retention, b"junk", b"junk"),
            Decision::Keep
        ));
    }
}
