use std::time::Duration;

use quiver_proto::v1::value::Kind;
use quiver_proto::{Partitioner, ShardId};

use super::*;
use crate::storage::{StorageConfig, StorageEngine};

pub(super) fn engine(dir: &std::path::Path) -> StorageEngine {
    StorageEngine::new(StorageConfig::for_test(dir.to_path_buf())).unwrap()
}

/// A write of view `v` version 1, entity `key`, one int64 feature (`None`: a delete).
pub(super) fn write(key: &str, et: i64, v: Option<i64>) -> RowWrite {
    let value = v.map(|x| {
        let mut buf = Vec::new();
        row_codec::encode_row(et, &[Some(Kind::Int64Value(x))], &mut buf);
        buf
    });
    RowWrite {
        topic: 0,
        key: keys::row_key("v", 1, key.as_bytes()),
        event_time_micros: et,
        value,
        history: None,
    }
}

fn batch(writes: Vec<RowWrite>, next_offset: i64) -> IngestBatch {
    let consumed = writes.len() as u64;
    IngestBatch {
        writes,
        events: Vec::new(),
        progress: vec![TopicProgress {
            topic: "t".into(),
            next_offset,
            consumed,
            malformed: 0,
        }],
    }
}

fn read(store: &ShardStore, key: &str) -> Option<row_codec::DecodedRow> {
    let k = keys::row_key("v", 1, key.as_bytes());
    let res = store.get_rows([&k]);
    res.into_iter()
        .next()
        .unwrap()
        .unwrap()
        .map(|v| row_codec::decode_row(&v).unwrap())
}

#[test]
fn last_write_wins_by_event_time_within_and_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let s = e.open_shard(ShardId(0), 4, Partitioner::Murmur2).unwrap();
    // Within one batch: newer, then an older one arriving later, then a tie (later wins).
    let out = s
        .apply(&batch(
            vec![
                write("a", 20, Some(2)),
                write("a", 10, Some(1)),
                write("b", 5, Some(5)),
            ],
            3,
        ))
        .unwrap();
    assert_eq!(
        out,
        ApplyOutcome {
            applied: 2,
            superseded: 1,
            ..Default::default()
        }
    );
    assert_eq!(
        read(&s, "a").unwrap().values,
        vec![Some(Kind::Int64Value(2))]
    );
    // Across batches: older loses, equal event time wins (later offset).
    let out = s
        .apply(&batch(
            vec![write("a", 15, Some(9)), write("a", 20, Some(3))],
            5,
        ))
        .unwrap();
    assert_eq!(
        out,
        ApplyOutcome {
            applied: 1,
            superseded: 1,
            ..Default::default()
        }
    );
    assert_eq!(
        read(&s, "a").unwrap().values,
        vec![Some(Kind::Int64Value(3))]
    );
    let rec = s.offsets()["t"];
    assert_eq!(
        (rec.next_offset, rec.consumed, rec.applied, rec.superseded),
        (5, 5, 3, 2)
    );
    assert_eq!(s.watermark()["t"], 5);
}

#[test]
fn tombstones_delete_and_block_older_events() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let s = e.open_shard(ShardId(1), 4, Partitioner::Murmur2).unwrap();
    s.apply(&batch(
        vec![write("a", 10, Some(1)), write("a", 20, None)],
        2,
    ))
    .unwrap();
    assert!(read(&s, "a").unwrap().header.tombstone);
    // An older event arriving after the delete must not resurrect the row.
    let out = s.apply(&batch(vec![write("a", 15, Some(7))], 3)).unwrap();
    assert_eq!(out.superseded, 1);
    assert!(read(&s, "a").unwrap().header.tombstone);
    // A newer one does.
    s.apply(&batch(vec![write("a", 30, Some(8))], 4)).unwrap();
    assert_eq!(
        read(&s, "a").unwrap().values,
        vec![Some(Kind::Int64Value(8))]
    );
}

#[test]
fn offsets_and_counters_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = engine(dir.path());
        let s = e.open_shard(ShardId(2), 4, Partitioner::Murmur2).unwrap();
        s.apply(&batch(vec![write("a", 1, Some(1))], 1)).unwrap();
        s.apply(&batch(vec![write("b", 1, Some(1))], 2)).unwrap();
    }
    let e = engine(dir.path());
    let s = e.open_shard(ShardId(2), 4, Partitioner::Murmur2).unwrap();
    assert_eq!(s.offsets()["t"].next_offset, 2);
    assert_eq!(s.offsets()["t"].consumed, 2);
    assert_eq!(s.watermark()["t"], 2);
    assert!(read(&s, "b").is_some());
}

#[test]
fn refuses_a_directory_of_another_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    drop(e.open_shard(ShardId(0), 4, Partitioner::Murmur2).unwrap());
    let err = e
        .open_shard(ShardId(0), 8, Partitioner::Murmur2)
        .err()
        .unwrap();
    assert!(
        matches!(err, crate::storage::StorageError::IdentityMismatch { .. }),
        "{err}"
    );
    let err = e
        .open_shard(ShardId(0), 4, Partitioner::Crc32)
        .err()
        .unwrap();
    assert!(err.to_string().contains("crc32"), "{err}");
}

#[test]
fn compaction_removes_expired_rows_physically() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    e.ttls()
        .replace([(("v".to_owned(), 1), Some(Duration::from_secs(60)))]);
    let s = e.open_shard(ShardId(3), 4, Partitioner::Murmur2).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    s.apply(&batch(
        vec![
            write("old", now - 120_000_000, Some(1)),
            write("fresh", now, Some(2)),
        ],
        2,
    ))
    .unwrap();
    assert_eq!(s.count_raw_rows().unwrap(), 2);
    s.compact_rows();
    assert_eq!(s.count_raw_rows().unwrap(), 1);
    assert!(read(&s, "old").is_none());
    assert!(read(&s, "fresh").is_some());
}

/// `cached_only` reads never touch the files: a row only on disk (a cold block cache
/// after a reopen) answers `Incomplete`; once a full read has brought its block into the
/// cache, the cached read finds it.
#[test]
fn cached_only_reads_never_do_io() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = engine(dir.path());
        let s = e.open_shard(ShardId(0), 4, Partitioner::Murmur2).unwrap();
        let writes = (0..200)
            .map(|i| write(&format!("k{i}"), 10, Some(i)))
            .collect();
        s.apply(&batch(writes, 200)).unwrap();
        s.flush().unwrap();
    }
    let e = engine(dir.path());
    let s = e.open_shard(ShardId(0), 4, Partitioner::Murmur2).unwrap();
    let keys: Vec<Vec<u8>> = (0..200)
        .map(|i| keys::row_key("v", 1, format!("k{i}").as_bytes()))
        .collect();
    let read = s.consistent_read();
    let cold = read.get_rows(keys.iter(), true);
    assert!(
        cold.iter()
            .all(|r| matches!(r, Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete)),
        "a cold cache answers Incomplete: {:?}",
        cold.iter()
            .map(|r| r.as_ref().map(|v| v.is_some()))
            .collect::<Vec<_>>()
    );
    let full = read.get_rows(keys.iter(), false);
    assert!(full.iter().all(|r| matches!(r, Ok(Some(_)))));
    let warm = read.get_rows(keys.iter(), true);
    assert!(
        warm.iter().all(|r| matches!(r, Ok(Some(_)))),
        "the full read filled the cache"
    );
}

/// Rows of version `version` of view `v`, 24 pseudo-random int64 features each (they
/// compress poorly, so the SST size follows the row count).
fn wide_rows(version: u32, from: u64, n: u64) -> Vec<RowWrite> {
    (from..from + n)
        .map(|k| {
            let vals: Vec<_> = (0..24u64)
                .map(|i| {
                    let z = (k * 24 + i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    Some(Kind::Int64Value((z ^ (z >> 29)) as i64))
                })
                .collect();
            let mut buf = Vec::new();
            row_codec::encode_row(10, &vals, &mut buf);
            RowWrite {
                topic: 0,
                key: keys::row_key("v", version, format!("k{k}").as_bytes()),
                event_time_micros: 10,
                value: Some(buf),
                history: None,
            }
        })
        .collect()
}

#[test]
fn a_dropped_version_gives_its_disk_space_back_and_leaves_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let s = e.open_shard(ShardId(0), 4, Partitioner::Murmur2).unwrap();
    let mut next = 0;
    for chunk in 0..20 {
        // Interleaved batches of both versions: their rows share memtables and flushes.
        let mut writes = wide_rows(1, chunk * 1000, 1000);
        writes.extend(wide_rows(2, chunk * 100, 100));
        next += writes.len() as i64;
        s.apply(&batch(writes, next)).unwrap();
        if chunk % 5 == 4 {
            s.flush().unwrap();
        }
    }
    s.flush().unwrap();
    let live = |s: &ShardStore| {
        s.db.property_int_value_cf(s.cf(CF_ROWS), "rocksdb.live-sst-files-size")
            .unwrap()
            .unwrap()
    };
    let before = live(&s);
    assert!(before > 3 << 20, "{before} bytes of SST");
    assert!(s.drop_view_version("v", 1).unwrap());
    s.reclaim_view_version("v", 1).unwrap();
    let after = live(&s);
    // Version 2 is a tenth of the data; what is left is about its size.
    assert!(after < before / 5, "{before} → {after} bytes");
    let kept: Vec<Vec<u8>> = (0..2000)
        .map(|k| keys::row_key("v", 2, format!("k{k}").as_bytes()))
        .collect();
    assert!(s.get_rows(&kept).iter().all(|r| matches!(r, Ok(Some(_)))));
    let gone = keys::row_key("v", 1, b"k7");
    assert!(matches!(s.get_rows([&gone])[0], Ok(None)));
}

#[test]
fn an_interrupted_drop_resumes_and_deletes_every_key_of_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let s = e.open_shard(ShardId(0), 4, Partitioner::Murmur2).unwrap();
    let mut writes = wide_rows(1, 0, 3000);
    writes.extend(wide_rows(2, 0, 300));
    s.apply(&batch(writes, 3300)).unwrap();
    s.flush().unwrap();
    // More of version 1 in the memtable only.
    s.apply(&batch(wide_rows(1, 3000, 500), 3800)).unwrap();
    // The process died after the drop's first step: the marker says "dropping".
    let marker = keys::dropped_version_key("v", 1);
    s.db.put_cf(s.cf(CF_META), &marker, drop::DROPPING).unwrap();
    assert!(s.drop_view_version("v", 1).unwrap(), "resumed");
    let left = |version: u32| {
        let start = keys::row_prefix("v", version);
        s.db.prefix_iterator_cf(s.cf(CF_ROWS), &start)
            .map(Result::unwrap)
            .take_while(|(k, _)| k.starts_with(&start))
            .count()
    };
    assert_eq!(left(1), 0);
    assert_eq!(left(2), 300);
    s.reclaim_view_version("v", 1).unwrap();
    assert_eq!(left(1), 0);
    assert_eq!(left(2), 300);
    // Done: the marker says so and a second drop writes nothing.
    let done = s.db.get_cf(s.cf(CF_META), &marker).unwrap().unwrap();
    assert!(done.is_empty());
    assert!(!s.drop_view_version("v", 1).unwrap());
}
