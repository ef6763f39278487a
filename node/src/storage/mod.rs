//! Storage: one RocksDB instance per shard replica.
//!
//! A shard replica owns a RocksDB directory `<data_dir>/shards/<shard>` with column
//! families `rows` (feature rows, see [`keys`]) and `meta` (resume offsets, counters, the
//! shard identity). One database per shard (as Venice does per partition) makes the
//! per-shard operations the design needs cheap and obviously correct: a replica's rows and
//! offsets live in one directory (a RocksDB checkpoint of it carries its own offsets: a new
//! replica of a shard that served copies one from a peer, `replica/checkpoint`); dropping
//! a replica closes it and removes the directory. All shards share one
//! block cache, one write-buffer budget and RocksDB's background thread pool through
//! [`StorageEngine`].
//!
//! Rows and the offsets they came from are written in one atomic `WriteBatch`; that is what
//! makes restarts exact (no record lost, none applied twice) without fsync per batch:
//! after a crash both the rows and their offsets are rolled back together, and the
//! records are consumed again.

mod engine;
pub mod history;
pub mod keys;
pub mod lookup_cache;
pub mod row_codec;
mod shard_store;
mod watermark;

#[cfg(test)]
pub use engine::TestShard;
pub use engine::{StorageConfig, StorageEngine, TtlTable};
pub use shard_store::{
    AggEvent, ApplyOutcome, ConsistentRead, IngestBatch, RowBytes, RowWrite, ShardStore,
    TopicProgress, Warmed,
};
pub use watermark::{Offsets, Watermark, is_topic_stream};

use quiver_proto::{Partitioner, ShardId};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// RocksDB returned an error.
    #[error("rocksdb error on shard {shard}: {source}")]
    Rocks {
        /// Shard involved.
        shard: ShardId,
        /// Cause.
        #[source]
        source: rocksdb::Error,
    },
    /// The directory holds a shard of a different identity (other shard count or partitioner).
    #[error("shard {shard}: stored identity {stored} does not match the configured {configured}")]
    IdentityMismatch {
        /// Shard involved.
        shard: ShardId,
        /// What the directory says.
        stored: String,
        /// What the node is configured with.
        configured: String,
    },
    /// A stored record could not be decoded.
    #[error("shard {shard}: corrupt {what}: {detail}")]
    Corrupt {
        /// Shard involved.
        shard: ShardId,
        /// Which record.
        what: &'static str,
        /// Decoder message.
        detail: String,
    },
    /// Filesystem error around the database directory.
    #[error("storage directory {path}: {source}")]
    Io {
        /// Path involved.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// What a shard directory belongs to; checked on every open so a node never serves a
/// directory written under another shard count or partitioner (its keys would be misplaced).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardIdentity {
    /// Shard number (= Kafka partition).
    pub shard: u32,
    /// Cluster shard count P.
    pub shard_count: u32,
    /// Partitioner name.
    pub partitioner: String,
    /// Row format version.
    pub row_format: u8,
}

impl ShardIdentity {
    /// The identity of `shard` in a cluster of `shard_count` shards.
    pub fn new(shard: ShardId, shard_count: u32, partitioner: Partitioner) -> Self {
        ShardIdentity {
            shard: shard.0,
            shard_count,
            partitioner: partitioner.as_str().to_owned(),
            row_format: row_codec::ROW_FORMAT_V1,
        }
    }
}

/// Resume position and lifetime counters of one source topic's partition in a shard,
/// stored in `meta` in the same batch as the rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OffsetRecord {
    /// Offset of the next record to consume.
    pub next_offset: i64,
    /// Records consumed (each offset counted once over the replica's lifetime).
    pub consumed: u64,
    /// Records that changed a row.
    pub applied: u64,
    /// Records older (by event time) than the stored row, hence ignored.
    pub superseded: u64,
    /// Records that could not be decoded and were skipped.
    pub malformed: u64,
}

impl OffsetRecord {
    const ENCODED_LEN: usize = 1 + 8 * 5;

    /// Encodes as `u8 version | 5 × u64 LE`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::ENCODED_LEN);
        out.push(1);
        out.extend_from_slice(&self.next_offset.to_le_bytes());
        for v in [self.consumed, self.applied, self.superseded, self.malformed] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Decodes [`OffsetRecord::encode`] output.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != Self::ENCODED_LEN || b[0] != 1 {
            return None;
        }
        let word = |i: usize| -> [u8; 8] {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[1 + 8 * i..9 + 8 * i]);
            w
        };
        Some(OffsetRecord {
            next_offset: i64::from_le_bytes(word(0)),
            consumed: u64::from_le_bytes(word(1)),
            applied: u64::from_le_bytes(word(2)),
            superseded: u64::from_le_bytes(word(3)),
            malformed: u64::from_le_bytes(word(4)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_record_round_trips() {
        let r = OffsetRecord {
            next_offset: 77,
            consumed: 80,
            applied: 60,
            superseded: 15,
            malformed: 5,
        };
        assert_eq!(OffsetRecord::decode(&r.encode()), Some(r));
        assert_eq!(OffsetRecord::decode(&[1, 2, 3]), None);
    }
}
