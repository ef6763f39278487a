//! Checkpoint bootstrap: a new replica of a shard that served before copies a Serving
//! peer's RocksDB checkpoint (its SST files and the offsets they contain) over gRPC
//! (`quiver.v1.ReplicaService`, members only) instead of replaying the partition, so
//! re-replication and scale-out never depend on the topic still holding every record.
//! `serve.rs` makes and streams checkpoints; `fetch.rs` copies one, resumably, and
//! verifies every file.

mod fetch;
pub mod serve;
#[cfg(test)]
mod tests;

pub(crate) use fetch::{Bootstrap, bootstrap_from_peer};

/// SHA-256 of the file at `path`. Blocking.
pub(crate) fn sha256_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(ctx.finish().as_ref().to_vec())
}
