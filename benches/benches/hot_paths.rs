//! Micro-benchmarks of quiver's hot paths: partitioner, record decode, row codec, ingest's
//! write batch, lookup (RocksDB multi-get + response assembly), response encoding, and the
//! smart client's routing (split a batch by shard) and merge (answers back into request
//! order).
//!
//! Run: `cargo bench -p quiver-bench --bench hot_paths` (see docs/PERFORMANCE.md).

use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use quiver_bench::{
    SHARDS, entity_key, filled_stores, json_record, protobuf_record, registry, values,
};
use quiver_client::bench_support::Router;
use quiver_node::config::NodeConfigFile;
use quiver_node::ingest::decode::{RawRecord, decode_record};
use quiver_node::registry::KeyType;
use quiver_node::serve::lookup::{ExecError, ReadMode, execute, replicas_for};
use quiver_node::serve::plan::{PlanCache, plan_keys};
use quiver_node::storage::lookup_cache::LookupCache;
use quiver_node::storage::row_codec::{decode_row, decode_selected, encode_row};
use quiver_node::storage::{
    IngestBatch, RowWrite, StorageConfig, StorageEngine, TopicProgress, keys,
};
use quiver_proto::lookup_request::LookupRequest;
use quiver_proto::lookup_response::LookupResponse;
use quiver_proto::packed::{ColumnBuilder, gather};
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{
    ClusterMap, EntityKey, FeatureColumn, FeatureStatus, FeatureType, GetOnlineFeaturesRequest,
    GetOnlineFeaturesResponse, PackedColumn, ReplicaInfo, ShardReplicas, Value,
};
use quiver_proto::{Partitioner, ShardId};

fn partitioner(c: &mut Criterion) {
    let mut g = c.benchmark_group("partitioner");
    for len in [8usize, 32, 128] {
        let key = vec![b'k'; len];
        g.throughput(Throughput::Bytes(len as u64));
        for p in [Partitioner::Murmur2, Partitioner::Crc32] {
            g.bench_with_input(BenchmarkId::new(p.as_str(), len), &key, |b, k| {
                b.iter(|| p.shard_for_key(black_box(k), 64))
            });
        }
    }
    g.finish();
}

fn record_decode(c: &mut Criterion) {
    let snap = registry().snapshot();
    let (json_view, pb_view) = (snap.views["stats"].clone(), snap.views["stats_pb"].clone());
    let json = json_record(7);
    let pb = protobuf_record(7);
    let mut g = c.benchmark_group("record_decode_10_features");
    g.throughput(Throughput::Elements(1));
    g.bench_function("json", |b| {
        b.iter(|| {
            let raw = RawRecord {
                key: Some(b"user-00000007"),
                payload: Some(black_box(&json)),
                timestamp_millis: Some(1),
            };
            decode_record(&json_view, KeyType::String, &raw).expect("valid")
        })
    });
    g.bench_function("protobuf", |b| {
        b.iter(|| {
            let raw = RawRecord {
                key: Some(b"user-00000007"),
                payload: Some(black_box(&pb)),
                timestamp_millis: Some(1),
            };
            decode_record(&pb_view, KeyType::String, &raw).expect("valid")
        })
    });
    g.finish();
}

fn row_codec(c: &mut Criterion) {
    let vals = values(7);
    let mut buf = Vec::new();
    encode_row(1, &vals, &mut buf);
    let encoded = buf.clone();
    let mut slots = vec![None; 10];
    slots[0] = Some(0);
    slots[2] = Some(1);
    slots[6] = Some(2);
    let mut g = c.benchmark_group("row_codec_10_features");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode", |b| {
        b.iter(|| encode_row(1, black_box(&vals), &mut buf))
    });
    g.bench_function("decode_all", |b| {
        b.iter(|| decode_row(black_box(&encoded)).expect("valid"))
    });
    g.bench_function("decode_3_of_10", |b| {
        let mut out = vec![None; 3];
        b.iter(|| decode_selected(black_box(&encoded), &slots, &mut out).expect("valid"))
    });
    g.finish();
}

/// One shard's ingest write: 500 rows of new entities in one batch (rows, offsets, the
/// lookup cache), with the lookup cache filled by ingest or only replaced by it.
fn ingest_apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("ingest_apply_500_rows");
    g.throughput(Throughput::Elements(500));
    for fill in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = StorageConfig::for_test(dir.path().to_path_buf());
        config.lookup_cache_fill_on_ingest = fill;
        let engine = StorageEngine::new(config).expect("engine");
        let store = engine
            .open_shard(ShardId(0), 1, Partitioner::Murmur2)
            .expect("open");
        let mut next = 0u64;
        let name = if fill {
            "lookup_cache_filled"
        } else {
            "lookup_cache_replaced_only"
        };
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    // New entities every batch: the lookup cache inserts (and, once
                    // full, evicts) rather than replaces.
                    let batch = apply_batch(next, 500);
                    next += 500;
                    batch
                },
                |batch| store.apply(&batch).expect("apply"),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

/// The lookup cache's hits: 100 keys of 200,000 cached rows of 470 bytes (a 50-feature
/// row; ~110 MB, more than the CPU's caches hold, as a node's cache is), probed one key
/// at a time (`get`) or as a batch (`get_many`). Each iteration draws its keys at random
/// (fixed seed), so few of their entries are still in the CPU's caches.
fn lookup_cache_probe(c: &mut Criterion) {
    const ENTRIES: u64 = 200_000;
    let cache = LookupCache::new(1 << 30, true);
    let row = vec![7u8; 470];
    let keys: Vec<Vec<u8>> = (0..ENTRIES)
        .map(|i| keys::row_key("stats", 1, entity_key(i).as_bytes()))
        .collect();
    for key in &keys {
        cache.written(1, key, Some(&row));
    }
    let mut state = 0x5eed_u64;
    let mut draw = move |batch: &mut Vec<&'static [u8]>, keys: &'static [Vec<u8>]| {
        batch.clear();
        batch.extend((0..100).map(|_| {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            keys[((z ^ (z >> 31)) % ENTRIES) as usize].as_slice()
        }));
    };
    let keys: &'static [Vec<u8>] = keys.leak();
    let mut g = c.benchmark_group("lookup_cache_100_hits");
    g.throughput(Throughput::Elements(100));
    let (mut batch, mut out) = (Vec::with_capacity(100), Vec::with_capacity(100));
    g.bench_function("get", |b| {
        b.iter(|| {
            draw(&mut batch, keys);
            out.clear();
            out.extend(batch.iter().map(|k| cache.get(1, k)));
            assert!(out.iter().all(Option::is_some));
        })
    });
    g.bench_function("get_many", |b| {
        b.iter(|| {
            draw(&mut batch, keys);
            out.clear();
            cache.get_many(1, &batch, &mut out);
            assert!(out.iter().all(Option::is_some));
        })
    });
    g.finish();
}

fn apply_batch(first: u64, rows: u64) -> IngestBatch {
    let mut buf = Vec::new();
    let writes = (first..first + rows)
        .map(|i| {
            encode_row(1_760_000_000_000_000, &values(i), &mut buf);
            RowWrite {
                topic: 0,
                key: keys::row_key("stats", 1, entity_key(i).as_bytes()),
                event_time_micros: 1_760_000_000_000_000,
                value: Some(buf.clone()),
                history: None,
            }
        })
        .collect();
    IngestBatch {
        writes,
        events: Vec::new(),
        progress: vec![TopicProgress {
            topic: "stats".into(),
            next_offset: (first + rows) as i64,
            consumed: rows,
            malformed: 0,
        }],
    }
}

fn lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let entities = 100_000;
    let (_engine, stores) = filled_stores(dir.path(), entities);
    let snap = registry().snapshot();
    let limits = NodeConfigFile::default()
        .validate()
        .expect("defaults")
        .limits;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    let mut g = c.benchmark_group("lookup_10_features");
    for n in [1u64, 10, 100, 500] {
        // As the node decodes it (feature references as bytes).
        let req = LookupRequest::from(GetOnlineFeaturesRequest {
            features: vec!["stats:*".into()],
            entity_keys: (0..n)
                .map(|i| EntityKey::from(entity_key(i * 97 % entities)))
                .collect(),
            ..Default::default()
        });
        g.throughput(Throughput::Elements(n));
        // What the handler does: the feature list from the plan cache, the keys planned,
        // the rows read (all in memory here) and decoded into packed columns.
        let plans = PlanCache::default();
        let lookup = |req: &LookupRequest| {
            let compiled = plans.plan(req, &snap, &limits).expect("valid");
            let plan =
                plan_keys(req, compiled, &limits, Partitioner::Murmur2, SHARDS).expect("valid");
            let replicas = replicas_for(&plan, &stores, 0).expect("every shard is local");
            // As the handler: in-memory reads first, full reads if a row is on disk.
            match execute(&plan, &replicas, now, ReadMode::CachedOnly) {
                Err(ExecError::NeedsIo) => execute(&plan, &replicas, now, ReadMode::Full),
                other => other,
            }
            .expect("lookup")
        };
        g.bench_with_input(
            BenchmarkId::new("plan_multiget_assemble", n),
            &req,
            |b, req| b.iter(|| lookup(req)),
        );
        // Encoding straight from the builders (what the node sends) against finishing
        // them into the generated message first (what it did before `PackedAnswer`).
        let mut out = Vec::with_capacity(lookup(&req).encoded_len());
        g.bench_with_input(BenchmarkId::new("response_encode", n), &req, |b, req| {
            b.iter_batched(
                || lookup(req),
                |resp| {
                    out.clear();
                    resp.encode(&mut out).expect("buffer has capacity");
                },
                criterion::BatchSize::SmallInput,
            )
        });
        g.bench_with_input(
            BenchmarkId::new("response_finish_then_encode", n),
            &req,
            |b, req| {
                b.iter_batched(
                    || lookup(req),
                    |resp| {
                        out.clear();
                        resp.into_response()
                            .encode(&mut out)
                            .expect("buffer has capacity");
                    },
                    criterion::BatchSize::SmallInput,
                )
            },
        );
    }
    g.finish();
}

/// A 3-node, 8-shard, R = 2 map as a node serves it.
fn cluster_map() -> ClusterMap {
    ClusterMap {
        epoch: 7,
        shard_count: 8,
        replication_factor: 2,
        partitioner: "murmur2".into(),
        shards: (0..8)
            .map(|s| ShardReplicas {
                shard: s,
                replicas: (0..2)
                    .map(|r| {
                        let node = u64::from((s + r) % 3 + 1);
                        ReplicaInfo {
                            node_id: node,
                            addr: format!("127.0.0.1:{}", 7000 + node),
                            state: 2,
                        }
                    })
                    .collect(),
            })
            .collect(),
        ..Default::default()
    }
}

/// One shard's answer: `features` float64 columns for `keys` rows, PACKED (what nodes
/// send).
fn shard_answer(keys: usize, features: usize) -> GetOnlineFeaturesResponse {
    GetOnlineFeaturesResponse {
        packed_columns: (0..features)
            .map(|f| {
                let mut b =
                    ColumnBuilder::new(format!("v:f{f}"), FeatureType::Float64, keys, false);
                for k in 0..keys {
                    b.push_f64((k * f) as f64, 1_760_000_000_000_000);
                }
                b.finish()
            })
            .collect(),
        row_count: keys as u32,
        ..Default::default()
    }
}

/// The same answer per cell (the CELLS encoding), for the wire-format comparison.
fn cells_answer(keys: usize, features: usize) -> GetOnlineFeaturesResponse {
    GetOnlineFeaturesResponse {
        columns: (0..features)
            .map(|f| FeatureColumn {
                name: format!("v:f{f}"),
                values: (0..keys)
                    .map(|k| Value {
                        kind: Some(Kind::Float64Value((k * f) as f64)),
                    })
                    .collect(),
                statuses: vec![FeatureStatus::Present as i32; keys],
                event_times_micros: vec![1_760_000_000_000_000; keys],
            })
            .collect(),
        ..Default::default()
    }
}

/// Decoding a response off the wire, PACKED against CELLS (N keys × 50 float64s).
fn wire_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("response_decode_50_features");
    for n in [1usize, 10, 100] {
        for (name, resp) in [
            ("packed", shard_answer(n, 50)),
            ("cells", cells_answer(n, 50)),
        ] {
            let bytes = resp.encode_to_vec();
            g.throughput(Throughput::Bytes(bytes.len() as u64));
            g.bench_with_input(BenchmarkId::new(name, n), &bytes, |b, bytes| {
                b.iter(|| {
                    GetOnlineFeaturesResponse::decode(black_box(bytes.as_slice())).expect("valid")
                })
            });
            if name == "packed" {
                // The smart client's decoder of the same bytes.
                g.bench_with_input(
                    BenchmarkId::new("packed_one_pass", n),
                    &bytes,
                    |b, bytes| {
                        b.iter(|| {
                            LookupResponse::decode(black_box(bytes.as_slice())).expect("valid")
                        })
                    },
                );
            }
        }
    }
    g.finish();
}

fn client_route_merge(c: &mut Criterion) {
    let router = Router::new(&cluster_map()).expect("valid map");
    let mut g = c.benchmark_group("client_50_features");
    for n in [10u64, 100, 500] {
        let keys: Vec<EntityKey> = (0..n)
            .map(|i| EntityKey::from(entity_key(i * 31)))
            .collect();
        g.throughput(Throughput::Elements(n));
        g.bench_with_input(BenchmarkId::new("route", n), &keys, |b, keys| {
            b.iter(|| router.split(black_box(keys)))
        });
        let split = router.split(&keys);
        let order = split.row_order();
        let parts: Vec<GetOnlineFeaturesResponse> = split
            .shard_keys()
            .iter()
            .map(|(_, k)| shard_answer(k.len(), 50))
            .collect();
        // From the wire: each answer decoded as the client receives it, then merged
        // (fixed-width columns read in place), against decoding every answer's columns
        // first and merging those (the client until 2026-12-05).
        let wire: Vec<prost::bytes::Bytes> =
            parts.iter().map(|p| p.encode_to_vec().into()).collect();
        g.bench_with_input(BenchmarkId::new("merge", n), &wire, |b, wire| {
            b.iter(|| split.merge(black_box(wire)).expect("consistent parts"))
        });
        g.bench_with_input(BenchmarkId::new("merge_decoded", n), &wire, |b, wire| {
            b.iter(|| {
                let decoded: Vec<GetOnlineFeaturesResponse> = wire
                    .iter()
                    .map(|w| {
                        let resp = LookupResponse::decode(black_box(w.clone()))
                            .expect("valid")
                            .0;
                        for c in &resp.packed_columns {
                            c.validate(resp.row_count as usize).expect("consistent");
                        }
                        resp
                    })
                    .collect();
                (0..decoded[0].packed_columns.len())
                    .map(|c| {
                        let of: Vec<&PackedColumn> =
                            decoded.iter().map(|p| &p.packed_columns[c]).collect();
                        gather(&of, &order).expect("in range")
                    })
                    .collect::<Vec<_>>()
            })
        });
        // The columns alone, typed gather against the row-by-row builder it replaced.
        let first: Vec<&PackedColumn> = parts.iter().map(|p| &p.packed_columns[0]).collect();
        g.bench_with_input(
            BenchmarkId::new("gather_50_columns", n),
            &order,
            |b, order| {
                b.iter(|| {
                    (0..50)
                        .map(|_| gather(&first, order).expect("in range"))
                        .collect::<Vec<_>>()
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("row_by_row_50_columns", n),
            &order,
            |b, order| {
                b.iter(|| {
                    (0..50)
                        .map(|_| {
                            let mut c = ColumnBuilder::new(
                                first[0].name.clone(),
                                FeatureType::Float64,
                                order.len(),
                                false,
                            );
                            for &(p, r) in order {
                                c.push_row_of(first[p as usize], r as usize);
                            }
                            c.finish()
                        })
                        .collect::<Vec<_>>()
                })
            },
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = partitioner, record_decode, row_codec, ingest_apply, lookup_cache_probe, lookup, client_route_merge, wire_decode
}
criterion_main!(benches);
