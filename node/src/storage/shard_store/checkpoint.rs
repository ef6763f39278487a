//! A checkpoint of the replica for a new replica of the shard (checkpoint bootstrap).

use std::path::Path;

use super::ShardStore;
use crate::storage::StorageError;

impl ShardStore {
    /// Writes a RocksDB checkpoint of the whole replica into `dir` (which must not exist):
    /// every column family as of one moment — the rows, and in `meta` the offsets they
    /// came from — as hard links to the immutable SST files where possible. Blocking.
    ///
    /// # Errors
    /// A RocksDB failure.
    pub fn checkpoint(&self, dir: &Path) -> Result<(), StorageError> {
        let cp = rocksdb::checkpoint::Checkpoint::new(&self.db).map_err(|e| self.rocks(e))?;
        cp.create_checkpoint(dir).map_err(|e| self.rocks(e))
    }
}
