//! The lookup cache behind [`ConsistentRead::get_latest_rows`]: every answer is the row
//! as of the read's snapshot, whether it came from the cache or from RocksDB.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use quiver_proto::v1::value::Kind;
use quiver_proto::{Partitioner, ShardId};

use super::tests::write;
use super::*;
use crate::storage::{StorageConfig, StorageEngine, Warmed};

/// An engine whose lookup cache ingest fills (`fill`) or only lookups fill.
fn engine_filled_by(dir: &std::path::Path, fill_on_ingest: bool) -> StorageEngine {
    let mut config = StorageConfig::for_test(dir.to_path_buf());
    config.lookup_cache_fill_on_ingest = fill_on_ingest;
    StorageEngine::new(config).unwrap()
}

fn key(entity: &str) -> Vec<u8> {
    keys::row_key("v", 1, entity.as_bytes())
}

fn apply(s: &ShardStore, writes: Vec<RowWrite>, next_offset: i64) {
    s.apply(&IngestBatch {
        writes,
        events: Vec::new(),
        progress: vec![TopicProgress {
            topic: "t".into(),
            next_offset,
            consumed: 1,
            malformed: 0,
        }],
    })
    .unwrap();
}

/// One key's answer: (where it came from, its value or `None` for a tombstone); `None`
/// without a row.
fn latest(read: &ConsistentRead<'_>, entity: &str) -> Option<(&'static str, Option<i64>)> {
    let k = key(entity);
    let got = read.get_latest_rows(&[&k], false).remove(0).unwrap()?;
    let from = match got {
        RowBytes::Pinned(_) => "rocksdb",
        RowBytes::Cached(_) => "cache",
    };
    let row = row_codec::decode_row(&got).unwrap();
    let value = (!row.header.tombstone).then(|| match row.values[0] {
        Some(Kind::Int64Value(x)) => x,
        ref other => panic!("{other:?}"),
    });
    Some((from, value))
}

#[test]
fn answers_are_the_snapshot_s_rows_from_the_cache_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_filled_by(dir.path(), false);
    let s = e.open_shard(ShardId(0), 4, Partitioner::Murmur2).unwrap();
    apply(&s, vec![write("a", 10, Some(1))], 1);
    let r1 = s.consistent_read();
    assert_eq!(latest(&r1, "a"), Some(("rocksdb", Some(1))), "a miss fills");
    assert_eq!(latest(&r1, "a"), Some(("cache", Some(1))));
    assert_eq!(latest(&r1, "nobody"), None);
    assert_eq!(latest(&r1, "nobody"), None, "absent rows are not cached");

    // A write replaces the cached row; the older snapshot still answers its own row.
    apply(&s, vec![write("a", 20, Some(2))], 2);
    assert_eq!(latest(&r1, "a"), Some(("rocksdb", Some(1))));
    let r2 = s.consistent_read();
    assert_eq!(latest(&r2, "a"), Some(("cache", Some(2))));
    // The old snapshot's miss did not put its row back.
    assert_eq!(latest(&s.consistent_read(), "a"), Some(("cache", Some(2))));

    // An older event loses, and leaves the cache alone.
    apply(&s, vec![write("a", 15, Some(9))], 3);
    assert_eq!(latest(&s.consistent_read(), "a"), Some(("cache", Some(2))));

    // A delete forgets the row; the tombstone is then read and cached like a row.
    apply(&s, vec![write("a", 30, None)], 4);
    assert_eq!(latest(&s.consistent_read(), "a"), Some(("rocksdb", None)));
    assert_eq!(latest(&s.consistent_read(), "a"), Some(("cache", None)));
    assert_eq!(latest(&r2, "a"), Some(("rocksdb", Some(2))));
}

#[test]
fn a_sweep_and_a_dropped_version_forget_cached_rows() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_filled_by(dir.path(), false);
    let s = e.open_shard(ShardId(0), 4, Partitioner::Murmur2).unwrap();
    apply(&s, vec![write("a", 10, Some(1))], 1);
    assert_eq!(
        latest(&s.consistent_read(), "a"),
        Some(("rocksdb", Some(1)))
    );
    assert_eq!(latest(&s.consistent_read(), "a"), Some(("cache", Some(1))));
    s.compact_rows();
    assert_eq!(
        latest(&s.consistent_read(), "a"),
        Some(("rocksdb", Some(1)))
    );
    assert_eq!(latest(&s.consistent_read(), "a"), Some(("cache", Some(1))));
    assert!(s.drop_view_version("v", 1).unwrap());
    assert_eq!(
        latest(&s.consistent_read(), "a"),
        None,
        "the version's rows are gone"
    );
}

/// Filled by ingest: a written row is answered from the cache at once, and a snapshot
/// taken before the write still answers its own row (from RocksDB).
#[test]
fn ingest_fills_the_cache_and_older_snapshots_keep_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_filled_by(dir.path(), true);
    let s = e.open_shard(ShardId(0), 4, Partitioner::Murmur2).unwrap();
    let r0 = s.consistent_read();
    apply(
        &s,
        vec![write("a", 10, Some(1)), write("b", 10, Some(5))],
        1,
    );
    let r1 = s.consistent_read();
    assert_eq!(
        latest(&r1, "a"),
        Some(("cache", Some(1))),
        "written: cached"
    );
    assert_eq!(latest(&r1, "b"), Some(("cache", Some(5))));
    assert_eq!(latest(&r0, "a"), None, "before the write: no row");

    // Two writes of one key in a batch: the later event is cached.
    apply(
        &s,
        vec![write("a", 20, Some(2)), write("a", 25, Some(3))],
        2,
    );
    assert_eq!(latest(&s.consistent_read(), "a"), Some(("cache", Some(3))));
    assert_eq!(latest(&r1, "a"), Some(("rocksdb", Some(1))), "r1's own row");

    // An older event loses and leaves the cache alone.
    apply(&s, vec![write("a", 15, Some(9))], 3);
    assert_eq!(latest(&s.consistent_read(), "a"), Some(("cache", Some(3))));

    // A delete forgets the row rather than caching the tombstone.
    apply(&s, vec![write("b", 30, None)], 4);
    assert_eq!(latest(&s.consistent_read(), "b"), Some(("rocksdb", None)));

    // A replica opened again starts with a new generation: nothing cached is read.
    drop((r0, r1));
    drop(s);
    let s = e.open_shard(ShardId(0), 4, Partitioner::Murmur2).unwrap();
    assert_eq!(
        latest(&s.consistent_read(), "a"),
        Some(("rocksdb", Some(3)))
    );
}

/// 1,500 rows `e0`..`e1499` with value `i` and event time `event_time(name)`, every
/// hundredth (`i % 100 == 7`) a tombstone, flushed to an SST file; the replica opened
/// again.
fn reopened_with_stored_rows(e: &StorageEngine, event_time: impl Fn(&str) -> i64) -> ShardStore {
    let s = e.open_shard(ShardId(0), 4, Partitioner::Murmur2).unwrap();
    let writes = (0..1_500)
        .map(|i| {
            let name = format!("e{i}");
            write(&name, event_time(&name), (i % 100 != 7).then_some(i))
        })
        .collect();
    apply(&s, writes, 1);
    s.flush().unwrap();
    drop(s);
    e.open_shard(ShardId(0), 4, Partitioner::Murmur2).unwrap()
}

/// A replica opened again warms the cache with its stored rows: each then answers from
/// the cache with its stored value (a deleted row's tombstone too).
#[test]
fn warming_a_reopened_replica_caches_its_stored_rows() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_filled_by(dir.path(), false);
    // Events of now: RocksDB compacts the reopened replica's one SST file in the
    // background ("BottommostFiles"), at any time, and that would drop tombstones older
    // than the retention (the next test).
    let now = crate::storage::engine::now_micros();
    let s = reopened_with_stored_rows(&e, |_| now);
    assert_eq!(
        latest(&s.consistent_read(), "e3"),
        Some(("rocksdb", Some(3)))
    );
    assert_eq!(
        s.warm_lookup_cache(|| true).unwrap(),
        Warmed::default(),
        "stopped before the first chunk"
    );
    let warmed = s.warm_lookup_cache(|| false).unwrap();
    assert!(warmed.complete, "{warmed:?}");
    assert_eq!(warmed.rows, 1_500);
    let read = s.consistent_read();
    for i in (0..1_500).step_by(7) {
        let want = (i % 100 != 7).then_some(i);
        assert_eq!(
            latest(&read, &format!("e{i}")),
            Some(("cache", want)),
            "e{i}"
        );
    }
    assert_eq!(latest(&read, "nobody"), None);
}

/// Compactions drop tombstones older than the retention even under a snapshot (RocksDB's
/// compaction filter ignores snapshots), and RocksDB runs them in the background at any
/// time: one between two warming chunks leaves the later chunks fewer rows to cache (a
/// reopened replica's SST file is compacted so, which made the test above flaky while
/// its events were of 1970). Warming caches what the store holds when each chunk reads
/// it, and every key answers as the store does.
#[test]
fn warming_beside_a_compaction_that_drops_old_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_filled_by(dir.path(), false);
    // The first chunk is the first 512 keys in key order: its events are of now, the
    // later ones of 1970, past the retention. (A tombstone of 1970 in the first chunk
    // would be cached or not depending on whether RocksDB's own compaction ran before.)
    let mut names: Vec<String> = (0..1_500).map(|i| format!("e{i}")).collect();
    names.sort();
    let first_chunk: std::collections::HashSet<String> = names[..512].iter().cloned().collect();
    let now = crate::storage::engine::now_micros();
    let s = reopened_with_stored_rows(&e, |name| if first_chunk.contains(name) { now } else { 10 });
    let chunks = std::sync::atomic::AtomicUsize::new(0);
    let warmed = s
        .warm_lookup_cache(|| {
            // Called before each chunk: compact after the first one.
            if chunks.fetch_add(1, Ordering::Relaxed) == 1 {
                s.db.compact_range_cf(s.cf(CF_ROWS), None::<&[u8]>, None::<&[u8]>);
            }
            false
        })
        .unwrap();
    assert!(warmed.complete, "{warmed:?}");
    assert_eq!(
        chunks.load(Ordering::Relaxed),
        3,
        "1,485 rows left: three chunks"
    );
    let tombstone = |name: &str| name[1..].parse::<i64>().unwrap() % 100 == 7;
    let dropped = names[512..].iter().filter(|n| tombstone(n)).count() as u64;
    assert!(dropped > 0, "the test must drop some tombstones");
    assert_eq!(warmed.rows, 1_500 - dropped);
    let read = s.consistent_read();
    for name in &names {
        let i: i64 = name[1..].parse().unwrap();
        let want = match (tombstone(name), first_chunk.contains(name)) {
            (false, _) => Some(("cache", Some(i))),
            (true, true) => Some(("cache", None)),
            (true, false) => None,
        };
        assert_eq!(latest(&read, name), want, "{name}");
    }
}

/// Warming stops when the cache is nine tenths full: it never pushes out more than a
/// chunk's worth of what was cached before.
#[test]
fn warming_stops_at_the_cache_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StorageConfig::for_test(dir.path().to_path_buf());
    config.lookup_cache_bytes = 256 << 10;
    config.lookup_cache_fill_on_ingest = false;
    let e = StorageEngine::new(config).unwrap();
    let s = e.open_shard(ShardId(0), 4, Partitioner::Murmur2).unwrap();
    let writes = (0..20_000)
        .map(|i| write(&format!("e{i}"), 10, Some(i)))
        .collect();
    apply(&s, writes, 1);
    let warmed = s.warm_lookup_cache(|| false).unwrap();
    assert!(!warmed.complete, "{warmed:?}");
    assert!(
        warmed.rows > 1_000 && warmed.rows < 20_000,
        "{warmed:?} for a 256 KiB cache"
    );
    assert!(e.lookup_cache_usage() <= 256 << 10);
}

#[test]
fn without_a_cache_rows_come_from_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StorageConfig::for_test(dir.path().to_path_buf());
    config.lookup_cache_bytes = 0;
    let e = StorageEngine::new(config).unwrap();
    let s = e.open_shard(ShardId(0), 4, Partitioner::Murmur2).unwrap();
    apply(&s, vec![write("a", 10, Some(1))], 1);
    for _ in 0..2 {
        assert_eq!(
            latest(&s.consistent_read(), "a"),
            Some(("rocksdb", Some(1)))
        );
    }
    assert_eq!(e.lookup_cache_usage(), 0);
}

/// A writer applies batches without pause while readers compare, on one snapshot, the
/// cached read with a plain RocksDB read of the same keys: they must agree byte for
/// byte, and the cache must have answered some of them.
#[test]
fn under_concurrent_writes_the_cache_agrees_with_the_snapshot() {
    agree_under_concurrent_writes(false);
}

#[test]
fn under_concurrent_writes_the_ingest_filled_cache_agrees_with_the_snapshot() {
    agree_under_concurrent_writes(true);
}

fn agree_under_concurrent_writes(fill_on_ingest: bool) {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_filled_by(dir.path(), fill_on_ingest);
    let s = Arc::new(e.open_shard(ShardId(0), 4, Partitioner::Murmur2).unwrap());
    let entities: Vec<String> = (0..64).map(|i| format!("e{i}")).collect();
    let keys: Vec<Vec<u8>> = entities.iter().map(|e| key(e)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    // A replica warming the cache again and again meanwhile (what opening one does once).
    let warmer = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rows = 0;
            while !stop.load(Ordering::Relaxed) {
                rows += s
                    .warm_lookup_cache(|| stop.load(Ordering::Relaxed))
                    .unwrap()
                    .rows;
            }
            rows
        })
    };
    let writer = spawn_writer(&s, &stop, &entities);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let (mut reads, mut from_cache) = (0u64, 0u64);
    while std::time::Instant::now() < deadline {
        let read = s.consistent_read();
        let slices: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let cached = read.get_latest_rows(&slices, false);
        let plain = read.get_rows(keys.iter(), false);
        for (i, (c, p)) in cached.iter().zip(&plain).enumerate() {
            let c = c.as_ref().unwrap();
            let p = p.as_ref().unwrap();
            assert_eq!(c.as_deref(), p.as_deref(), "key {i} of read {reads}");
            from_cache += u64::from(matches!(c, Some(RowBytes::Cached(_))));
        }
        reads += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let batches = writer.join().unwrap();
    assert!(batches > 10, "the writer ran ({batches} batches)");
    let warmed = warmer.join().unwrap();
    assert!(warmed > 0, "the warmer cached rows");
    assert!(
        reads > 10 && from_cache > 0,
        "{reads} reads, {from_cache} rows from the cache"
    );
}

/// Rows answered from the cache alone ([`ShardStore::latest_rows_in_memory`], no
/// snapshot) come with the watermark of the state they are: under a writer that never
/// pauses, every such answer is what replaying the writes up to that watermark gives.
#[test]
fn rows_from_memory_alone_are_those_of_their_watermark() {
    for fill_on_ingest in [false, true] {
        rows_from_memory_match_their_watermark(fill_on_ingest);
    }
}

/// A writer that applies batches `1, 2, …` without pause until `stop`: batch `o`
/// writes entities `(8·o + j) mod 64` for `j` in `0..8`, value `o` (every fifth write,
/// `j mod 5 = 0`, a tombstone), and sets topic `t`'s offset to `o`. Returns the last batch.
fn spawn_writer(
    s: &Arc<ShardStore>,
    stop: &Arc<AtomicBool>,
    entities: &[String],
) -> std::thread::JoinHandle<i64> {
    let (s, stop, entities) = (s.clone(), stop.clone(), entities.to_vec());
    std::thread::spawn(move || {
        let mut offset = 0;
        while !stop.load(Ordering::Relaxed) {
            offset += 1;
            let writes = (0..8)
                .map(|j| {
                    let e = &entities[((offset * 8 + j) % 64) as usize];
                    write(e, offset, (j % 5 != 0).then_some(offset))
                })
                .collect();
            apply(&s, writes, offset);
        }
        offset
    })
}

/// Entity `idx`'s value once [`spawn_writer`] applied batches `1..=applied`: `None`
/// without a row, `Some(None)` for a tombstone.
fn replayed(idx: usize, applied: i64) -> Option<Option<i64>> {
    (1..=applied).rev().find_map(|o| {
        (0..8)
            .find(|j| ((o * 8 + j) % 64) as usize == idx)
            .map(|j| (j % 5 != 0).then_some(o))
    })
}

fn rows_from_memory_match_their_watermark(fill_on_ingest: bool) {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_filled_by(dir.path(), fill_on_ingest);
    let s = Arc::new(e.open_shard(ShardId(0), 4, Partitioner::Murmur2).unwrap());
    let entities: Vec<String> = (0..64).map(|i| format!("e{i}")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(&s, &stop, &entities);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let (mut tries, mut answered) = (0usize, 0u64);
    while std::time::Instant::now() < deadline {
        tries += 1;
        let picked = [(tries * 7) % 64, (tries * 13 + 1) % 64];
        let keys: Vec<Vec<u8>> = picked.iter().map(|&i| key(&entities[i])).collect();
        let slices: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let Some((wm, rows)) = s.latest_rows_in_memory(&slices) else {
            // Not all cached (or a write raced): a lookup through a snapshot fills it.
            s.consistent_read().get_latest_rows(&slices, false);
            continue;
        };
        let applied = wm.get("t").copied().unwrap_or(0);
        for (&idx, row) in picked.iter().zip(&rows) {
            let row = row_codec::decode_row(row).unwrap();
            let got = (!row.header.tombstone).then(|| match row.values[0] {
                Some(Kind::Int64Value(x)) => x,
                ref other => panic!("{other:?}"),
            });
            assert_eq!(
                Some(got),
                replayed(idx, applied),
                "entity e{idx} at watermark {applied} (fill on ingest: {fill_on_ingest})"
            );
        }
        answered += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let batches = writer.join().unwrap();
    assert!(batches > 10, "the writer ran ({batches} batches)");
    assert!(
        answered > 10,
        "{answered} of {tries} reads answered from memory (fill on ingest: {fill_on_ingest})"
    );
}
