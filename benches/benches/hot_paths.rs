//! Micro-benchmarks of quiver's hot paths: partitioner, record decode, row codec, lookup
//! (RocksDB multi-get + response assembly) and response encoding.
//!
//! Run: `cargo bench -p quiver-bench --bench hot_paths` (see docs/PERFORMANCE.md).

use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use quiver_bench::{
    SHARDS, entity_key, filled_stores, json_record, protobuf_record, registry, values,
};
use quiver_node::config::NodeConfigFile;
use quiver_node::ingest::decode::{RawRecord, decode_record};
use quiver_node::registry::KeyType;
use quiver_node::serve::lookup::{execute_lookup, plan_lookup};
use quiver_node::storage::row_codec::{decode_row, decode_selected, encode_row};
use quiver_proto::Partitioner;
use quiver_proto::v1::{EntityKey, GetOnlineFeaturesRequest};

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
        let req = GetOnlineFeaturesRequest {
            features: vec!["stats:*".into()],
            entity_keys: (0..n)
                .map(|i| EntityKey::from(entity_key(i * 97 % entities)))
                .collect(),
            ..Default::default()
        };
        g.throughput(Throughput::Elements(n));
        g.bench_with_input(
            BenchmarkId::new("plan_multiget_assemble", n),
            &req,
            |b, req| {
                b.iter(|| {
                    let plan = plan_lookup(req, &snap, &limits, Partitioner::Murmur2, SHARDS)
                        .expect("valid");
                    execute_lookup(&plan, &stores, now).expect("lookup")
                })
            },
        );
        let plan = plan_lookup(&req, &snap, &limits, Partitioner::Murmur2, SHARDS).expect("valid");
        let resp = execute_lookup(&plan, &stores, now).expect("lookup");
        let mut out = Vec::with_capacity(resp.encoded_len());
        g.bench_with_input(BenchmarkId::new("response_encode", n), &resp, |b, resp| {
            b.iter(|| {
                out.clear();
                resp.encode(&mut out).expect("buffer has capacity");
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = partitioner, record_decode, row_codec, lookup
}
criterion_main!(benches);
