//! The client's CPU work without the network, for `quiver-bench`'s micro-benchmarks
//! (routing a batch to shards; merging per-shard answers back into request order).
//! Hidden from the documentation: not a stable API.

use prost::Message as _;
use quiver_proto::lookup_response::RawLookupResponse;
use quiver_proto::v1::{ClusterMap, EntityKey};

use crate::error::ClientError;
use crate::lookup::LookupResult;
use crate::router::{ShardedBatch, shard_batch};
use crate::shard_map_cache::RoutingTable;

/// A routing table built from a cluster map.
#[derive(Debug)]
pub struct Router(RoutingTable);

/// A batch split by shard.
#[derive(Debug)]
pub struct Split<'k>(ShardedBatch<'k>);

impl Router {
    /// Builds the table the client would route with.
    ///
    /// # Errors
    /// When the map is invalid.
    pub fn new(map: &ClusterMap) -> Result<Router, ClientError> {
        RoutingTable::from_cluster_map(map).map(Router)
    }

    /// Splits `keys` by shard, duplicates removed (what every lookup does first).
    pub fn split<'k>(&self, keys: &'k [EntityKey]) -> Split<'k> {
        Split(shard_batch(&self.0, keys))
    }
}

impl Split<'_> {
    /// Shards touched, with their distinct keys in the order a sub-request sends them.
    pub fn shard_keys(&self) -> Vec<(u32, Vec<EntityKey>)> {
        self.0
            .by_shard
            .iter()
            .map(|(s, idx)| {
                (
                    *s,
                    idx.iter()
                        .map(|u| (*self.0.unique[*u as usize]).clone())
                        .collect(),
                )
            })
            .collect()
    }

    /// Request row → (part, row in part), parts in [`Split::shard_keys`] order.
    pub fn row_order(&self) -> Vec<(u32, u32)> {
        let mut loc = vec![(u32::MAX, 0u32); self.0.unique.len()];
        for (p, idx) in self.0.by_shard.values().enumerate() {
            for (row, u) in idx.iter().enumerate() {
                loc[*u as usize] = (p as u32, row as u32);
            }
        }
        self.0
            .row_to_unique
            .iter()
            .map(|u| loc[*u as usize])
            .collect()
    }

    /// Merges one encoded answer per shard (in [`Split::shard_keys`] order, rows in its
    /// key order) into the request-ordered result, as a lookup does after its fan-out:
    /// each answer decoded as the client receives it, then merged.
    ///
    /// # Errors
    /// When an answer does not decode or the parts are inconsistent (as
    /// [`crate::Client::get_online_features`]).
    pub fn merge(&self, parts: &[prost::bytes::Bytes]) -> Result<LookupResult, ClientError> {
        let parts = parts
            .iter()
            .map(|b| RawLookupResponse::decode(b.clone()).map_err(crate::lookup::malformed))
            .collect::<Result<_, _>>()?;
        LookupResult::assemble(parts, self.row_order())
    }
}
