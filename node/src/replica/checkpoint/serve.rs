//! The serving side of checkpoint bootstrap (`quiver.v1.ReplicaService`): a checkpoint of
//! a local Serving replica under `<data_dir>/checkpoints/<shard>-<id>`, its manifest
//! (files, sizes, SHA-256), and its files streamed in chunks from any offset. A checkpoint
//! is reused for [`REUSE`] (several new replicas, a resumed copy) and deleted after
//! [`KEEP`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::Stream;
use quiver_proto::ShardId;
use quiver_proto::v1::replica_service_server::ReplicaService;
use quiver_proto::v1::{
    CheckpointChunk, CheckpointFile, CheckpointManifest, CreateCheckpointRequest,
    FetchCheckpointFileRequest,
};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::sha256_file;
use crate::state::NodeState;

/// A checkpoint this young is handed out again instead of making a new one.
const REUSE: Duration = Duration::from_secs(120);
/// Checkpoints older than this are deleted (a copy taking longer starts over).
const KEEP: Duration = Duration::from_secs(30 * 60);
/// Bytes per streamed chunk.
const CHUNK: usize = 1 << 20;

/// `quiver.v1.ReplicaService`.
pub struct ReplicaServiceImpl {
    state: Arc<NodeState>,
    root: PathBuf,
    /// One checkpoint made at a time; the value maps each checkpoint made since this node
    /// started to its topic streams' offsets read just before it was made (a lower bound
    /// of the checkpoint's own). Only these are handed out again.
    making: tokio::sync::Mutex<HashMap<String, BTreeMap<String, i64>>>,
}

impl ReplicaServiceImpl {
    /// The service, keeping checkpoints under `<data_dir>/checkpoints`.
    pub fn new(state: Arc<NodeState>, data_dir: &Path) -> Self {
        ReplicaServiceImpl {
            state,
            root: data_dir.join("checkpoints"),
            making: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// `<shard>-<created ms>` checkpoints of `shard` (all shards if `None`), with their
    /// age.
    fn existing(root: &Path, shard: Option<ShardId>) -> Vec<(String, Duration)> {
        let Ok(entries) = std::fs::read_dir(root) else {
            return Vec::new();
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let (s, ms) = name.split_once('-')?;
                let (s, ms): (u32, u64) = (s.parse().ok()?, ms.parse().ok()?);
                if shard.is_some_and(|want| want.0 != s) {
                    return None;
                }
                Some((name, now.saturating_sub(Duration::from_millis(ms))))
            })
            .collect()
    }

    fn checked_id(id: &str, shard: u32) -> Result<(), Status> {
        let ok = id
            .split_once('-')
            .is_some_and(|(s, ms)| s.parse() == Ok(shard) && ms.parse::<u64>().is_ok());
        if ok {
            Ok(())
        } else {
            Err(Status::invalid_argument(format!(
                "checkpoint id {id:?} is not one of shard {shard}"
            )))
        }
    }

    async fn create(&self, shard: ShardId) -> Result<CheckpointManifest, Status> {
        let serving = self.state.control.as_ref().is_some_and(|c| {
            c.state().replicas_on(c.node_id()).get(&shard)
                == Some(&crate::control::state::ReplicaState::Serving)
        });
        let store = self.state.local().stores.get(&shard).cloned();
        let Some(store) = store.filter(|_| serving) else {
            return Err(Status::failed_precondition(format!(
                "node {} holds no Serving replica of shard {shard}",
                self.state.node_id
            )));
        };
        let mut made = self.making.lock().await;
        let root = self.root.clone();
        let (node, state) = (self.state.node_id, self.state.clone());
        let known = made.clone();
        let (manifest, fresh) = tokio::task::spawn_blocking(move || {
            for (name, age) in Self::existing(&root, None) {
                if age > KEEP {
                    let _ = std::fs::remove_dir_all(root.join(&name));
                }
            }
            // A copy resumes from the checkpoint's offsets: they must not be below the
            // partition's log start, or the new replica is held back for records that are
            // gone (its topic stream could never be assigned).
            let starts = match log_starts(&state, shard) {
                Ok(starts) => starts,
                Err(e) => return Ok(Err(Status::unavailable(format!(
                    "node {node} cannot read the log start of shard {shard}'s partitions: {e}"
                )))),
            };
            let live = topic_offsets(&store, &starts);
            if let Some(why) = below_log_start(&live, &starts) {
                return Ok(Err(Status::unavailable(format!(
                    "node {node} cannot hand out a checkpoint of shard {shard} yet: {why} (records it has yet to read past; try again shortly)"
                ))));
            }
            let reuse = Self::existing(&root, Some(shard))
                .into_iter()
                .filter(|(name, age)| {
                    *age < REUSE
                        && known
                            .get(name)
                            .is_some_and(|o| below_log_start(o, &starts).is_none())
                })
                .min_by_key(|(_, age)| *age);
            let (id, fresh) = match reuse {
                Some((name, _)) => (name, None),
                None => {
                    std::fs::create_dir_all(&root)?;
                    let ms = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_millis();
                    let id = format!("{}-{ms}", shard.0);
                    store
                        .checkpoint(&root.join(&id))
                        .map_err(std::io::Error::other)?;
                    info!(shard_id = %shard, checkpoint = %id, "checkpoint made for a new replica");
                    (id.clone(), Some((id, live)))
                }
            };
            manifest_of(&root.join(&id), &id, shard, &store).map(|m| Ok((m, fresh)))
        })
        .await
        .map_err(|e| Status::internal(format!("checkpoint task failed: {e}")))?
        .map_err(|e| Status::internal(format!("checkpoint of shard {shard}: {e}")))??;
        if let Some((id, offsets)) = fresh {
            made.retain(|id, _| self.root.join(id).exists());
            made.insert(id, offsets);
        }
        Ok(manifest)
    }
}

/// The log start of the shard's partition of each serving view's topic (none without a
/// broker to ask).
fn log_starts(
    state: &NodeState,
    shard: ShardId,
) -> Result<BTreeMap<String, i64>, crate::kafka_meta::TopicCheckError> {
    let Some(kafka) = state.kafka.as_ref() else {
        return Ok(BTreeMap::new());
    };
    let snapshot = state.registry.snapshot();
    let mut starts = BTreeMap::new();
    for view in snapshot.views.values() {
        let topic = &view.source.topic;
        if !starts.contains_key(topic) {
            let start = kafka.log_start(topic, shard.0, Duration::from_secs(2))?;
            starts.insert(topic.clone(), start);
        }
    }
    Ok(starts)
}

/// The store's position in each of `topics` (0 where it has consumed nothing).
fn topic_offsets(
    store: &crate::storage::ShardStore,
    topics: &BTreeMap<String, i64>,
) -> BTreeMap<String, i64> {
    let offsets = store.offsets();
    topics
        .keys()
        .map(|t| (t.clone(), offsets.get(t).map_or(0, |r| r.next_offset)))
        .collect()
}

/// Why a replica at `offsets` could not resume from the log, if it could not: a topic whose
/// position is below its partition's log start.
fn below_log_start(
    offsets: &BTreeMap<String, i64>,
    starts: &BTreeMap<String, i64>,
) -> Option<String> {
    starts.iter().find_map(|(topic, start)| {
        let at = offsets.get(topic).copied().unwrap_or(0);
        (at < *start).then(|| {
            format!(
                "it is at offset {at} of topic {topic:?}, below the partition's log start {start}"
            )
        })
    })
}

/// The manifest of checkpoint `id` in `dir`.
pub(crate) fn manifest_of(
    dir: &Path,
    id: &str,
    shard: ShardId,
    store: &crate::storage::ShardStore,
) -> std::io::Result<CheckpointManifest> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if !e.file_type()?.is_file() {
            continue;
        }
        let name = e.file_name().into_string().map_err(|n| {
            std::io::Error::other(format!("checkpoint file name {n:?} is not UTF-8"))
        })?;
        let path = e.path();
        files.push(CheckpointFile {
            size: e.metadata()?.len(),
            sha256: sha256_file(&path)?,
            name,
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(CheckpointManifest {
        id: id.to_owned(),
        shard: shard.0,
        files,
        // What the serving replica holds now; the checkpoint's own are in its `meta`.
        offsets: store
            .offsets()
            .into_iter()
            .map(|(k, r)| (k, r.next_offset))
            .collect(),
    })
}

pub(crate) type ChunkStream = Pin<Box<dyn Stream<Item = Result<CheckpointChunk, Status>> + Send>>;

#[tonic::async_trait]
impl ReplicaService for ReplicaServiceImpl {
    async fn create_checkpoint(
        &self,
        request: Request<CreateCheckpointRequest>,
    ) -> Result<Response<CheckpointManifest>, Status> {
        let shard = ShardId(request.into_inner().shard);
        self.create(shard).await.map(Response::new)
    }

    type FetchCheckpointFileStream = ChunkStream;

    async fn fetch_checkpoint_file(
        &self,
        request: Request<FetchCheckpointFileRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let r = request.into_inner();
        Self::checked_id(&r.id, r.shard)?;
        if r.name.is_empty() || r.name.contains(['/', '\\']) || r.name.starts_with('.') {
            return Err(Status::invalid_argument(format!(
                "{:?} is not a checkpoint file name",
                r.name
            )));
        }
        let path = self.root.join(&r.id).join(&r.name);
        let stream = file_chunks(path, r.offset).await.map_err(|e| {
            Status::not_found(format!(
                "checkpoint {} has no file {:?} (expired? ask for a new checkpoint): {e}",
                r.id, r.name
            ))
        })?;
        Ok(Response::new(stream))
    }
}

/// The chunks of the file at `path` from byte `offset` on, each with its CRC-32.
///
/// # Errors
/// When the file cannot be opened.
pub(crate) async fn file_chunks(path: PathBuf, offset: u64) -> std::io::Result<ChunkStream> {
    let file = tokio::task::spawn_blocking(move || {
        use std::io::Seek;
        let mut f = std::fs::File::open(&path)?;
        f.seek(std::io::SeekFrom::Start(offset))?;
        Ok::<_, std::io::Error>(f)
    })
    .await
    .map_err(std::io::Error::other)??;
    // HTTP/2 flow control paces the stream to the receiver: a chunk is read only when the
    // previous one was taken. Reads run on the blocking pool.
    let stream = futures::stream::unfold(Some(file), |file| async move {
        let file = file?;
        let read = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut file = file;
            // One buffer per chunk: it becomes the message's bytes.
            let mut buf = vec![0u8; CHUNK];
            let mut n = 0;
            while n < CHUNK {
                match file.read(&mut buf[n..])? {
                    0 => break,
                    k => n += k,
                }
            }
            buf.truncate(n);
            Ok::<_, std::io::Error>((file, buf))
        })
        .await;
        match read {
            Ok(Ok((_, buf))) if buf.is_empty() => None,
            Ok(Ok((file, buf))) => {
                let crc32 = crc32fast::hash(&buf);
                Some((Ok(CheckpointChunk { data: buf, crc32 }), Some(file)))
            }
            Ok(Err(e)) => {
                warn!(error = %e, "reading a checkpoint file failed");
                Some((Err(Status::internal(format!("read: {e}"))), None))
            }
            Err(e) => Some((Err(Status::internal(format!("read task: {e}"))), None)),
        }
    });
    Ok(Box::pin(stream))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::below_log_start;

    fn map(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
        pairs.iter().map(|(t, o)| ((*t).to_owned(), *o)).collect()
    }

    #[test]
    fn a_checkpoint_below_a_partitions_log_start_is_not_handed_out() {
        let starts = map(&[("a", 0), ("b", 14)]);
        // At or past every log start: a copy resumes from the log.
        assert_eq!(below_log_start(&map(&[("a", 3), ("b", 14)]), &starts), None);
        assert_eq!(below_log_start(&map(&[("a", 0), ("b", 90)]), &starts), None);
        // In a gap the retention made (the peer was at 6 when 6..14 were deleted).
        let why = below_log_start(&map(&[("a", 3), ("b", 6)]), &starts).unwrap();
        assert!(
            why.contains("offset 6 of topic \"b\"") && why.contains("log start 14"),
            "{why}"
        );
        // A topic the replica has not consumed at all counts as offset 0.
        let why = below_log_start(&map(&[("a", 3)]), &starts).unwrap();
        assert!(why.contains("offset 0 of topic \"b\""), "{why}");
        // No broker to ask: nothing to check.
        assert_eq!(below_log_start(&map(&[]), &map(&[])), None);
    }
}
