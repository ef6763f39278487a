//! The storage floor: RocksDB's multi-get of the same rows, under the same key layout and
//! row encoding as a quiver shard, called from the bench process with no network, no
//! request decoding and no response assembly. quiver's throughput over this one's is the
//! share of the storage engine's limit that quiver reaches.

use std::path::Path;
use std::sync::Arc;

use quiver_node::storage::keys::row_key;
use quiver_node::storage::row_codec::encode_row;
use quiver_proto::v1::value::Kind;

use super::{Fetched, LookupFuture, System};
use crate::env::dataset::{key, view};
use crate::env::{Dataset, Progress};

/// The floor as a [`System`].
pub struct Rocks {
    db: Arc<rocksdb::DB>,
}

impl Rocks {
    /// Opens a database in `dir` (block cache `cache_mib`) holding every entity of `ds`
    /// for every view of `features`, flushed to SST files as a node's would be.
    ///
    /// # Errors
    /// When RocksDB fails.
    pub fn load(
        dir: &Path,
        cache_mib: usize,
        ds: &Dataset,
        features: &[u32],
    ) -> anyhow::Result<Rocks> {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        let mut block = rocksdb::BlockBasedOptions::default();
        block.set_block_cache(&rocksdb::Cache::new_lru_cache(cache_mib << 20));
        block.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&block);
        let db = rocksdb::DB::open(&opts, dir)?;
        let ts = crate::env::cluster::now_ms() * 1000;
        let mut row = Vec::new();
        for f in features {
            let bar = Progress::new(
                &format!("load rocksdb {}", view(*f)),
                u64::from(ds.entities),
            );
            let v = view(*f);
            let mut batch = rocksdb::WriteBatch::default();
            for k in 0..ds.entities {
                let values: Vec<Option<Kind>> = (0..*f)
                    .map(|i| Some(Kind::Float64Value(ds.value(k, i))))
                    .collect();
                encode_row(ts, &values, &mut row);
                batch.put(row_key(&v, 1, key(k).as_bytes()), &row);
                if batch.len() >= 1000 {
                    db.write(std::mem::take(&mut batch))?;
                    bar.set(u64::from(k) + 1);
                }
            }
            db.write(batch)?;
            bar.finish();
        }
        db.flush()?;
        Ok(Rocks { db: Arc::new(db) })
    }

    fn keys(features: u32, keys: &[u32]) -> Vec<Vec<u8>> {
        let v = view(features);
        keys.iter()
            .map(|k| row_key(&v, 1, key(*k).as_bytes()))
            .collect()
    }
}

impl System for Rocks {
    fn name(&self) -> &'static str {
        "rocksdb"
    }

    fn server_pids(&self) -> Vec<u32> {
        Vec::new()
    }

    fn lookup(&self, features: u32, keys: &[u32]) -> LookupFuture {
        let (db, keys) = (self.db.clone(), Self::keys(features, keys));
        Box::pin(async move {
            // A blocking read belongs on the blocking pool, as a node's does.
            tokio::task::spawn_blocking(move || {
                let mut missing = 0;
                for r in db.multi_get(&keys) {
                    match r {
                        Ok(Some(_)) => {}
                        Ok(None) => missing += 1,
                        Err(e) => return Err(e.to_string()),
                    }
                }
                if missing > 0 {
                    return Err(format!("{missing} rows missing"));
                }
                Ok(())
            })
            .await
            .map_err(|e| e.to_string())?
        })
    }

    fn fetch(
        &self,
        features: u32,
        keys: &[u32],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Fetched, String>> + Send>> {
        let (db, keys) = (self.db.clone(), Self::keys(features, keys));
        Box::pin(async move {
            let rows = tokio::task::spawn_blocking(move || db.multi_get(&keys))
                .await
                .map_err(|e| e.to_string())?;
            rows.into_iter()
                .map(|r| {
                    let bytes = r.map_err(|e| e.to_string())?.ok_or("missing row")?;
                    let row = quiver_node::storage::row_codec::decode_row(&bytes)
                        .map_err(|e| e.to_string())?;
                    Ok((0..features as usize)
                        .map(|i| match row.values.get(i) {
                            Some(Some(Kind::Float64Value(v))) => Some(*v),
                            _ => None,
                        })
                        .collect())
                })
                .collect()
        })
    }
}
