//! The Raft log and vote in RocksDB (`<data_dir>/raft`, column families `raft_log` and
//! `raft_meta`). Entries are keyed by big-endian index so iteration is in log order. Every
//! write that openraft requires to be durable (append, vote) is written with a synced WAL
//! before it is acknowledged; RocksDB calls run on the blocking pool.

// openraft's trait methods dictate `StorageError` (large); helpers return the same type.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};
use rocksdb::{DB, Direction, IteratorMode, WriteBatch, WriteOptions};

use super::types::TypeConfig;

pub(crate) const CF_LOG: &str = "raft_log";
pub(crate) const CF_META: &str = "raft_meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

type StorageResult<T> = Result<T, StorageError<u64>>;

fn read_err(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

/// The Raft log store; cheap to clone (log readers are clones).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
}

impl LogStore {
    /// Wraps a database that has the `raft_log` and `raft_meta` column families.
    pub fn new(db: Arc<DB>) -> Self {
        LogStore { db }
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("raft column families are created at open")
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> StorageResult<Option<T>> {
        let Some(bytes) = self.db.get_cf(self.cf(CF_META), key).map_err(read_err)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(read_err)
    }

    /// Writes meta `key` with a synced WAL, off the async workers.
    async fn put_meta_synced<T: serde::Serialize>(
        &self,
        key: &'static [u8],
        value: &T,
    ) -> StorageResult<()> {
        let bytes = serde_json::to_vec(value).map_err(write_err)?;
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            let cf = db
                .cf_handle(CF_META)
                .expect("raft column families are created at open");
            db.put_cf_opt(cf, key, bytes, &wo)
        })
        .await
        .map_err(write_err)?
        .map_err(write_err)
    }

    /// Deletes log entries `[from, to)` (`to` `None`: to the end) on the blocking pool.
    async fn delete_log_range(&self, from: u64, to: Option<u64>) -> StorageResult<()> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let cf = db
                .cf_handle(CF_LOG)
                .expect("raft column families are created at open");
            db.delete_range_cf(cf, index_key(from), index_key(to.unwrap_or(u64::MAX)))?;
            if to.is_none() {
                // delete_range's end is exclusive.
                db.delete_cf(cf, index_key(u64::MAX))?;
            }
            Ok::<(), rocksdb::Error>(())
        })
        .await
        .map_err(write_err)?
        .map_err(write_err)
    }

    fn last_log_id(&self) -> StorageResult<Option<LogId<u64>>> {
        let mut it = self.db.iterator_cf(self.cf(CF_LOG), IteratorMode::End);
        match it.next() {
            None => Ok(None),
            Some(item) => {
                let (_, v) = item.map_err(read_err)?;
                let entry: Entry<TypeConfig> = serde_json::from_slice(&v).map_err(read_err)?;
                Ok(Some(entry.log_id))
            }
        }
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let end = range.end_bound().cloned();
        let db = self.db.clone();
        // Replication reads entries on every round: on the blocking pool, not on the
        // async worker running Raft.
        tokio::task::spawn_blocking(move || {
            let cf = db
                .cf_handle(CF_LOG)
                .expect("raft column families are created at open");
            let mut out = Vec::new();
            let key = index_key(start);
            for item in db.iterator_cf(cf, IteratorMode::From(&key, Direction::Forward)) {
                let (k, v) = item.map_err(read_err)?;
                let idx = u64::from_be_bytes(
                    k.as_ref()
                        .try_into()
                        .map_err(|_| read_err(std::io::Error::other("bad log key")))?,
                );
                if !(Bound::Unbounded, end).contains(&idx) {
                    break;
                }
                out.push(serde_json::from_slice(&v).map_err(read_err)?);
            }
            Ok(out)
        })
        .await
        .map_err(read_err)?
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId<u64>> = self.get_meta(KEY_LAST_PURGED)?;
        let last = self.last_log_id()?.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StorageResult<()> {
        self.put_meta_synced(KEY_VOTE, vote).await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<u64>>> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> StorageResult<()> {
        self.put_meta_synced(KEY_COMMITTED, &committed).await
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<u64>>> {
        Ok(self
            .get_meta::<Option<LogId<u64>>>(KEY_COMMITTED)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut wb = WriteBatch::default();
        for e in entries {
            wb.put_cf(
                self.cf(CF_LOG),
                index_key(e.log_id.index),
                serde_json::to_vec(&e).map_err(write_err)?,
            );
        }
        let db = self.db.clone();
        // Entries must be readable when this returns, and acknowledged only once durable.
        let res = tokio::task::spawn_blocking(move || {
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            db.write_opt(wb, &wo)
        })
        .await
        .map_err(write_err)?;
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        // Deletes [log_id.index, ∞), off the async workers.
        self.delete_log_range(log_id.index, None).await
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        // Record the purge point first, so a crash never leaves a hole before it.
        self.put_meta_synced(KEY_LAST_PURGED, &log_id).await?;
        self.delete_log_range(0, Some(log_id.index + 1)).await
    }
}
