//! Copying a real replica's checkpoint over gRPC on loopback from peers that fail: a
//! damaged chunk is refused by its CRC-32 before it is written, a peer that dies part-way
//! leaves what was verified, and the next peer's copy resumes from there and ends with
//! exactly the source replica's rows and offsets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use quiver_proto::v1::replica_service_client::ReplicaServiceClient;
use quiver_proto::v1::replica_service_server::{ReplicaService, ReplicaServiceServer};
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{CheckpointManifest, CreateCheckpointRequest, FetchCheckpointFileRequest};
use quiver_proto::{NodeId, Partitioner, ShardId};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::fetch::{Bootstrap, copy_from_any};
use super::serve::{ChunkStream, file_chunks, manifest_of};
use crate::storage::{
    IngestBatch, RowWrite, ShardStore, StorageConfig, StorageEngine, TopicProgress, keys, row_codec,
};

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// Flips a bit of the second chunk it sends of the largest file (the CRC-32 is left as
    /// computed).
    Corrupt,
    /// Fails the stream instead of sending the second chunk it would send of the largest
    /// file.
    Die,
}

/// A peer serving one checkpoint directory with the node's own chunk stream, and a fault.
#[derive(Clone)]
struct Peer {
    root: PathBuf,
    manifest: CheckpointManifest,
    fault: Fault,
    /// Bytes of file data this peer sent.
    sent: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl ReplicaService for Peer {
    async fn create_checkpoint(
        &self,
        _: Request<CreateCheckpointRequest>,
    ) -> Result<Response<CheckpointManifest>, Status> {
        Ok(Response::new(self.manifest.clone()))
    }

    type FetchCheckpointFileStream = ChunkStream;

    async fn fetch_checkpoint_file(
        &self,
        request: Request<FetchCheckpointFileRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let r = request.into_inner();
        let largest = self
            .manifest
            .files
            .iter()
            .max_by_key(|f| f.size)
            .map(|f| f.name.clone());
        let faulty = largest.as_deref() == Some(r.name.as_str()) && self.fault != Fault::None;
        let chunks = file_chunks(self.root.join(&r.id).join(&r.name), r.offset)
            .await
            .map_err(|e| Status::not_found(e.to_string()))?;
        let (fault, sent) = (self.fault, self.sent.clone());
        let chunks = chunks.enumerate().map(move |(i, c)| {
            let mut c = c?;
            if faulty && i == 1 {
                if fault == Fault::Die {
                    return Err(Status::unavailable("the peer died"));
                }
                c.data[7] ^= 0x10;
            }
            sent.fetch_add(c.data.len() as u64, Ordering::Relaxed);
            Ok(c)
        });
        Ok(Response::new(Box::pin(chunks)))
    }
}

async fn serve(peer: Peer) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ReplicaServiceServer::new(peer))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

async fn client(addr: SocketAddr) -> Result<ReplicaServiceClient<Channel>, String> {
    ReplicaServiceClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| e.to_string())
}

/// `n` rows of 24 pseudo-random int64 features (poorly compressible: several MB of SST).
fn fill(store: &ShardStore, n: u64) {
    let mut z = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        z ^= z << 13;
        z ^= z >> 7;
        z ^= z << 17;
        z as i64
    };
    for chunk in 0..n / 1000 {
        let writes = (0..1000)
            .map(|i| {
                let k = chunk * 1000 + i;
                let vals: Vec<_> = (0..24).map(|_| Some(Kind::Int64Value(next()))).collect();
                let mut buf = Vec::new();
                row_codec::encode_row(1_000 + k as i64, &vals, &mut buf);
                RowWrite {
                    topic: 0,
                    key: keys::row_key("v", 1, format!("k{k}").as_bytes()),
                    event_time_micros: 1_000 + k as i64,
                    value: Some(buf),
                    history: None,
                }
            })
            .collect();
        let batch = IngestBatch {
            writes,
            events: Vec::new(),
            progress: vec![TopicProgress {
                topic: "t".into(),
                next_offset: ((chunk + 1) * 1000) as i64,
                consumed: 1000,
                malformed: 0,
            }],
        };
        store.apply(&batch).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_chunk_or_a_dying_peer_fails_the_copy_and_the_next_peer_resumes_it() {
    let src = tempfile::tempdir().unwrap();
    let engine = StorageEngine::new(StorageConfig::for_test(src.path().join("data"))).unwrap();
    let store = engine
        .open_shard(ShardId(0), 1, Partitioner::Murmur2)
        .unwrap();
    const ROWS: u64 = 20_000;
    fill(&store, ROWS);
    let root = src.path().join("checkpoints");
    std::fs::create_dir_all(&root).unwrap();
    store.checkpoint(&root.join("0-1")).unwrap();
    let manifest = manifest_of(&root.join("0-1"), "0-1", ShardId(0), &store).unwrap();
    let total: u64 = manifest.files.iter().map(|f| f.size).sum();
    let largest = manifest.files.iter().map(|f| f.size).max().unwrap();
    assert!(
        largest > 2 << 20,
        "the largest file spans chunks: {largest}"
    );
    let peer = |fault| Peer {
        root: root.clone(),
        manifest: manifest.clone(),
        fault,
        sent: Arc::new(AtomicU64::new(0)),
    };
    let (corrupt, dying, good) = (peer(Fault::Corrupt), peer(Fault::Die), peer(Fault::None));
    let good_sent = good.sent.clone();
    let addrs = [serve(corrupt).await, serve(dying).await, serve(good).await];

    let dst = tempfile::tempdir().unwrap();
    let copy_engine = StorageEngine::new(StorageConfig::for_test(dst.path().join("data"))).unwrap();
    let target = copy_engine.shard_dir(ShardId(0));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let progress = |_: NodeId, _: u64, _: u64| {};

    // A damaged chunk: refused by its CRC-32, nothing of it written, no shard in place.
    let e = copy_from_any(
        [(NodeId(2), client(addrs[0]).await)],
        ShardId(0),
        &target,
        &progress,
    )
    .await
    .unwrap_err();
    assert!(e.contains("failed its CRC-32 check"), "{e}");
    assert!(!target.exists());
    let staging = target.with_extension("bootstrap");
    let staged = |name: &str| std::fs::metadata(staging.join(name)).map_or(0, |m| m.len());
    let big = manifest
        .files
        .iter()
        .max_by_key(|f| f.size)
        .unwrap()
        .name
        .clone();
    assert_eq!(staged(&big), 1 << 20, "only the first, good chunk is kept");

    // A peer dying part-way, then an unreachable one: the copy fails, keeping what it has.
    let dead: Result<ReplicaServiceClient<Channel>, String> = Err("connection refused".into());
    let e = copy_from_any(
        [(NodeId(3), client(addrs[1]).await), (NodeId(5), dead)],
        ShardId(0),
        &target,
        &progress,
    )
    .await
    .unwrap_err();
    assert!(e.contains("node 5"), "the last peer's reason: {e}");
    assert!(!target.exists());
    // It resumed at the good chunk: one more chunk, then it died.
    assert_eq!(staged(&big), 2 << 20);

    // The next peer hands out the same checkpoint: the copy resumes, sending less than all.
    let done = copy_from_any(
        [(NodeId(4), client(addrs[2]).await)],
        ShardId(0),
        &target,
        &progress,
    )
    .await
    .unwrap();
    assert_eq!(
        done,
        Bootstrap::FromPeer {
            node: NodeId(4),
            bytes: total
        }
    );
    let sent = good_sent.load(Ordering::Relaxed);
    assert!(sent < total, "resumed: {sent} of {total} bytes sent again");
    assert!(!staging.exists());

    // The copy is the source replica: every row and the offsets.
    let copy = copy_engine
        .open_shard(ShardId(0), 1, Partitioner::Murmur2)
        .unwrap();
    assert_eq!(copy.offsets(), store.offsets());
    let all: Vec<Vec<u8>> = (0..ROWS)
        .map(|k| keys::row_key("v", 1, format!("k{k}").as_bytes()))
        .collect();
    let (a, b) = (store.get_rows(&all), copy.get_rows(&all));
    assert_eq!(a.len(), ROWS as usize);
    for (i, (x, y)) in a.into_iter().zip(b).enumerate() {
        let (x, y) = (x.unwrap(), y.unwrap());
        assert!(x.is_some(), "row {i} in the source");
        assert_eq!(x.as_deref(), y.as_deref(), "row {i}");
    }
}
