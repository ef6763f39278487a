//! The receiving side of checkpoint bootstrap: a new replica of a shard that served
//! before copies a Serving peer's checkpoint into `<shard dir>.bootstrap`, file by file
//! from where an interrupted copy stopped, verifies every file's SHA-256, and moves the
//! directory into place; the replica then opens it and ingests from the offsets it holds.

use std::path::Path;

use metrics::{counter, gauge};
use quiver_proto::v1::replica_service_client::ReplicaServiceClient;
use quiver_proto::v1::{CheckpointManifest, CreateCheckpointRequest, FetchCheckpointFileRequest};
use quiver_proto::{NodeId, ShardId};
use tracing::{info, warn};

use super::sha256_file;
use crate::control::plane::ControlPlane;
use crate::control::state::ReplicaState;
use crate::metrics as m;

/// Where a new replica's data came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bootstrap {
    /// Copied from `node`'s checkpoint of `bytes` bytes.
    FromPeer {
        /// The peer.
        node: NodeId,
        /// Bytes of the checkpoint.
        bytes: u64,
    },
    /// No other replica of the shard serves: nothing to copy.
    NoPeer,
}

/// Copies a Serving peer's checkpoint of `shard` into `target` (a shard directory that
/// does not exist yet), trying each Serving peer in turn.
///
/// # Errors
/// Why the last peer tried failed (the caller retries later).
pub(crate) async fn bootstrap_from_peer(
    control: &ControlPlane,
    shard: ShardId,
    target: &Path,
    progress: &(dyn Fn(NodeId, u64, u64) + Sync),
) -> Result<Bootstrap, String> {
    let state = control.state();
    let me = control.node_id();
    let peers: Vec<(NodeId, String)> = state
        .assignment
        .get(&shard)
        .into_iter()
        .flatten()
        .filter(|r| r.node != me && r.state == ReplicaState::Serving)
        .filter_map(|r| state.members.get(&r.node).map(|m| (r.node, m.addr.clone())))
        .collect();
    if peers.is_empty() {
        return Ok(Bootstrap::NoPeer);
    }
    let peers = peers.into_iter().map(|(node, addr)| {
        let client = control
            .peer_channel(&addr)
            .map(ReplicaServiceClient::new)
            .map_err(|e| format!("node {node} ({addr}): {e}"));
        (node, client)
    });
    copy_from_any(peers, shard, target, progress).await
}

/// Copies the checkpoint of `shard` from the first of `peers` that delivers a whole,
/// verified one. A copy that fails part-way leaves what it verified for the next try,
/// which resumes it when the next peer hands out the same checkpoint.
///
/// # Errors
/// Why the last peer tried failed.
pub(crate) async fn copy_from_any<C>(
    peers: impl IntoIterator<Item = (NodeId, Result<ReplicaServiceClient<C>, String>)>,
    shard: ShardId,
    target: &Path,
    progress: &(dyn Fn(NodeId, u64, u64) + Sync),
) -> Result<Bootstrap, String>
where
    C: tonic::client::GrpcService<tonic::body::Body>,
    C::Error: Into<tonic::codegen::StdError>,
    C::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <C::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let shard_label = shard.0.to_string();
    let mut last = String::from("no peer to copy from");
    for (node, client) in peers {
        let report = |copied: u64, total: u64| progress(node, copied, total);
        let copied = match client {
            Ok(client) => copy_from(client, shard, target, &shard_label, &report).await,
            Err(e) => Err(e),
        };
        match copied {
            Ok(bytes) => {
                counter!(m::REPLICA_BOOTSTRAPS, "source" => "checkpoint").increment(1);
                return Ok(Bootstrap::FromPeer { node, bytes });
            }
            Err(e) => {
                counter!(m::REPLICA_BOOTSTRAP_FAILURES).increment(1);
                warn!(shard_id = %shard, peer = %node, error = %e, "copying a checkpoint failed; trying the next peer");
                last = format!("node {node}: {e}");
            }
        }
    }
    Err(last)
}

fn checked_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(format!("the peer listed a bad file name {name:?}"));
    }
    Ok(())
}

async fn copy_from<C>(
    client: ReplicaServiceClient<C>,
    shard: ShardId,
    target: &Path,
    shard_label: &str,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<u64, String>
where
    C: tonic::client::GrpcService<tonic::body::Body>,
    C::Error: Into<tonic::codegen::StdError>,
    C::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <C::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut client = client.max_decoding_message_size(8 << 20);
    let manifest: CheckpointManifest = client
        .create_checkpoint(CreateCheckpointRequest { shard: shard.0 })
        .await
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?
        .into_inner();
    let staging = target.with_extension("bootstrap");
    let marker = staging.join(".checkpoint-id");
    // The same checkpoint as an interrupted copy: keep what was copied.
    let id = manifest.id.clone();
    let resume = blocking({
        let (staging, marker) = (staging.clone(), marker.clone());
        move || prepare_staging(&staging, &marker, &id)
    })
    .await?;
    let total: u64 = manifest.files.iter().map(|f| f.size).sum();
    info!(shard_id = %shard, checkpoint = %manifest.id, files = manifest.files.len(), bytes = total, resume, "copying a peer's checkpoint");
    let mut done = 0u64;
    for f in &manifest.files {
        checked_name(&f.name)?;
        let path = staging.join(&f.name);
        let (mut file, mut have) = blocking({
            let (path, size) = (path.clone(), f.size);
            move || open_for_append(&path, size)
        })
        .await?;
        if have < f.size {
            let mut stream = client
                .fetch_checkpoint_file(FetchCheckpointFileRequest {
                    id: manifest.id.clone(),
                    shard: shard.0,
                    name: f.name.clone(),
                    offset: have,
                })
                .await
                .map_err(|s| format!("{}: {}", s.code(), s.message()))?
                .into_inner();
            while let Some(chunk) = stream
                .message()
                .await
                .map_err(|s| format!("{}: {}", s.code(), s.message()))?
            {
                let n = chunk.data.len() as u64;
                if crc32fast::hash(&chunk.data) != chunk.crc32 {
                    // Not written: the next try resumes from the last good byte.
                    return Err(format!(
                        "a chunk of file {} of checkpoint {} at byte {have} failed its CRC-32 check",
                        f.name, manifest.id
                    ));
                }
                file = blocking(move || {
                    use std::io::Write;
                    let mut file = file;
                    file.write_all(&chunk.data)?;
                    Ok(file)
                })
                .await?;
                have += n;
                progress(done + have, total);
                counter!(m::REPLICA_CHECKPOINT_BYTES).increment(n);
                gauge!(m::REPLICA_BOOTSTRAP_PROGRESS, "shard" => shard_label.to_owned())
                    .set((done + have) as f64 / total.max(1) as f64);
            }
        }
        let check = path.clone();
        let sha = blocking(move || {
            file.sync_all()?;
            drop(file);
            sha256_file(&check)
        })
        .await?;
        if have != f.size || sha != f.sha256 {
            let _ = blocking(move || std::fs::remove_file(&path)).await;
            return Err(format!(
                "file {} of checkpoint {} failed its check ({have} of {} bytes, checksum {})",
                f.name,
                manifest.id,
                f.size,
                if sha == f.sha256 { "ok" } else { "wrong" }
            ));
        }
        done += f.size;
    }
    let target = target.to_owned();
    blocking(move || {
        std::fs::remove_file(&marker)?;
        std::fs::rename(&staging, &target)
    })
    .await?;
    gauge!(m::REPLICA_BOOTSTRAP_PROGRESS, "shard" => shard_label.to_owned()).set(1.0);
    Ok(total)
}

/// Runs file operations on the blocking pool.
async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(op)
        .await
        .map_err(|e| format!("file task failed: {e}"))?
        .map_err(|e| format!("checkpoint copy: {e}"))
}

/// Keeps the staging directory of an interrupted copy of checkpoint `id` (returns
/// `true`), or starts it afresh.
fn prepare_staging(staging: &Path, marker: &Path, id: &str) -> std::io::Result<bool> {
    if std::fs::read_to_string(marker).is_ok_and(|m| m == id) {
        return Ok(true);
    }
    match std::fs::remove_dir_all(staging) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::create_dir_all(staging)?;
    std::fs::write(marker, id)?;
    Ok(false)
}

/// Opens `path` to append to, with how much of its `size` bytes it holds (an overlong
/// file is started over).
fn open_for_append(path: &Path, size: u64) -> std::io::Result<(std::fs::File, u64)> {
    let mut have = std::fs::metadata(path).map_or(0, |m| m.len());
    if have > size {
        std::fs::remove_file(path)?;
        have = 0;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    Ok((file, have))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_copy_of_the_same_checkpoint_resumes_and_another_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join("00001.bootstrap");
        let marker = staging.join(".checkpoint-id");
        assert!(!prepare_staging(&staging, &marker, "1-100").unwrap());
        std::fs::write(staging.join("000007.sst"), b"half").unwrap();
        // The same checkpoint: what was copied stays, and the file resumes at its length.
        assert!(prepare_staging(&staging, &marker, "1-100").unwrap());
        let (_, have) = open_for_append(&staging.join("000007.sst"), 10).unwrap();
        assert_eq!(have, 4);
        // Longer than the manifest says: started over.
        let (_, have) = open_for_append(&staging.join("000007.sst"), 2).unwrap();
        assert_eq!(have, 0);
        assert_eq!(
            std::fs::metadata(staging.join("000007.sst")).unwrap().len(),
            0
        );
        // Another checkpoint: the staging directory starts afresh.
        std::fs::write(staging.join("000008.sst"), b"old").unwrap();
        assert!(!prepare_staging(&staging, &marker, "1-200").unwrap());
        assert!(!staging.join("000008.sst").exists());
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "1-200");
    }

    #[test]
    fn file_names_from_a_peer_cannot_leave_the_staging_directory() {
        for bad in ["", "../x", "a/b", ".checkpoint-id", "..", "a\\\\b"] {
            assert!(checked_name(bad).is_err(), "{bad:?}");
        }
        assert!(checked_name("000012.sst").is_ok());
        assert!(checked_name("MANIFEST-000005").is_ok());
    }
}
