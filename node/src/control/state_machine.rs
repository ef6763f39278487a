//! The control-plane state machine: [`ClusterState`] in memory, persisted after every
//! applied batch together with the last applied log id and membership (one record, so
//! they never disagree), in RocksDB column family `sm`. Snapshots are the serialised
//! record; the latest one is kept in `sm` too so it survives restarts.
//!
//! Every applied change is published on a `watch` channel, which is how the rest of the
//! node (shard manager, registry, serving) follows the committed state.

// openraft's trait methods dictate `StorageError` (large); helpers return the same type.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use rocksdb::DB;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::state::{ClusterState, CommandResult};
use super::types::TypeConfig;

pub(crate) const CF_SM: &str = "sm";
const KEY_DATA: &[u8] = b"data";
const KEY_SNAPSHOT: &[u8] = b"snapshot";

type StorageResult<T> = Result<T, StorageError<u64>>;

fn sm_read_err(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::read_state_machine(AnyError::new(&e)).into()
}

fn sm_write_err(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

/// The persisted record: state plus what Raft needs to know about it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SmData {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    state: ClusterState,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

/// The state machine; clones share state (the snapshot builder is a clone).
#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<DB>,
    data: Arc<Mutex<SmData>>,
    published: Arc<watch::Sender<Arc<ClusterState>>>,
}

impl StateMachineStore {
    /// Loads the persisted state (empty on a new database).
    ///
    /// # Errors
    /// If the stored record cannot be read or decoded.
    pub fn open(db: Arc<DB>) -> StorageResult<Self> {
        let cf = db
            .cf_handle(CF_SM)
            .expect("sm column family is created at open");
        let data: SmData = match db.get_cf(cf, KEY_DATA).map_err(sm_read_err)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(sm_read_err)?,
            None => SmData::default(),
        };
        let (tx, _) = watch::channel(Arc::new(data.state.clone()));
        Ok(StateMachineStore {
            db,
            data: Arc::new(Mutex::new(data)),
            published: Arc::new(tx),
        })
    }

    /// Subscribes to the committed state.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.published.subscribe()
    }

    /// The current committed state.
    pub fn state(&self) -> Arc<ClusterState> {
        self.published.borrow().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SmData> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn persist(&self, key: &'static [u8], bytes: Vec<u8>) -> StorageResult<()> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let cf = db
                .cf_handle(CF_SM)
                .expect("sm column family is created at open");
            db.put_cf(cf, key, bytes)
        })
        .await
        .map_err(sm_write_err)?
        .map_err(sm_write_err)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let (bytes, meta) = {
            let d = self.lock();
            let bytes = serde_json::to_vec(&*d).map_err(sm_read_err)?;
            let id = d.last_applied.map_or_else(
                || "empty".to_owned(),
                |l| format!("{}-{}", l.leader_id, l.index),
            );
            let meta = SnapshotMeta {
                last_log_id: d.last_applied,
                last_membership: d.membership.clone(),
                snapshot_id: id,
            };
            (bytes, meta)
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes.clone(),
        };
        self.persist(
            KEY_SNAPSHOT,
            serde_json::to_vec(&stored).map_err(sm_write_err)?,
        )
        .await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>)> {
        let d = self.lock();
        Ok((d.last_applied, d.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let (results, bytes, state) = {
            let mut d = self.lock();
            let mut results = Vec::new();
            for entry in entries {
                d.last_applied = Some(entry.log_id);
                let epoch = d.state.epoch;
                results.push(match entry.payload {
                    EntryPayload::Blank => CommandResult::Applied {
                        epoch,
                        changes: vec![],
                    },
                    EntryPayload::Normal(cmd) => d.state.apply(&cmd),
                    EntryPayload::Membership(m) => {
                        d.membership = StoredMembership::new(Some(entry.log_id), m);
                        CommandResult::Applied {
                            epoch,
                            changes: vec![],
                        }
                    }
                });
            }
            let bytes = serde_json::to_vec(&*d).map_err(sm_write_err)?;
            (results, bytes, Arc::new(d.state.clone()))
        };
        // Not synced: the log is durable, and openraft re-applies from the committed index.
        self.persist(KEY_DATA, bytes).await?;
        self.published.send_if_modified(|cur| {
            let changed = **cur != *state;
            if changed {
                *cur = state;
            }
            changed
        });
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let bytes = snapshot.into_inner();
        let mut data: SmData = serde_json::from_slice(&bytes).map_err(sm_read_err)?;
        data.last_applied = meta.last_log_id;
        data.membership = meta.last_membership.clone();
        let record = serde_json::to_vec(&data).map_err(sm_write_err)?;
        let state = Arc::new(data.state.clone());
        *self.lock() = data;
        self.persist(KEY_DATA, record).await?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        };
        self.persist(
            KEY_SNAPSHOT,
            serde_json::to_vec(&stored).map_err(sm_write_err)?,
        )
        .await?;
        self.published.send_replace(state);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let cf = self
            .db
            .cf_handle(CF_SM)
            .expect("sm column family is created at open");
        let Some(bytes) = self.db.get_cf(cf, KEY_SNAPSHOT).map_err(sm_read_err)? else {
            return Ok(None);
        };
        let stored: StoredSnapshot = serde_json::from_slice(&bytes).map_err(sm_read_err)?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

/// Opens (or creates) the control-plane database with its column families.
///
/// # Errors
/// RocksDB's error if it cannot be opened.
pub fn open_raft_db(path: &std::path::Path) -> Result<Arc<DB>, rocksdb::Error> {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let cfs = [super::log_store::CF_LOG, super::log_store::CF_META, CF_SM]
        .into_iter()
        .map(|n| rocksdb::ColumnFamilyDescriptor::new(n, rocksdb::Options::default()));
    Ok(Arc::new(DB::open_cf_descriptors(&opts, path, cfs)?))
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};

    use super::super::log_store::LogStore;
    use super::*;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<u64>> {
            let dir = tempfile::tempdir().map_err(sm_write_err)?;
            let db = open_raft_db(dir.path()).map_err(sm_write_err)?;
            let sm = StateMachineStore::open(db.clone())?;
            Ok((dir, LogStore::new(db), sm))
        }
    }

    /// openraft's own conformance suite for storage implementations.
    #[test]
    fn passes_the_openraft_storage_suite() {
        Suite::test_all(Builder).unwrap();
    }
}
