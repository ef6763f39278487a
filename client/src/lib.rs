//! quiver-client: the smart client of the quiver feature store.
//!
//! It bootstraps from any node, caches the cluster map (shard → replicas), computes each
//! key's shard with the cluster's partitioner, sends one sub-request per node in
//! parallel, and reassembles the answer in request order. Replicas are chosen by least
//! outstanding requests (power of two choices); a failed or slow sub-request fails over
//! or is hedged on another replica within the call's deadline and a retry budget. The
//! client remembers the highest watermark it has seen per shard and asks every replica
//! for at least that, so reads never go back in time, even across failover; a push
//! returns a watermark for read-your-writes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), quiver_client::ClientError> {
//! use std::time::Duration;
//! use quiver_client::{Client, Hedging, Lookup, PushRow};
//!
//! let client = Client::builder()
//!     .seeds(["127.0.0.1:7070", "127.0.0.1:7071"])
//!     .deadline(Duration::from_millis(50))
//!     .hedging(Hedging::Fixed(Duration::from_millis(5)))
//!     .build()
//!     .await?;
//!
//! let lookup = Lookup::features(["user_txn:txn_count_1h", "user_txn:avg_amount_7d"])
//!     .keys(["user-1", "user-2", "user-3"]);
//! let result = client.get_online_features(&lookup).await?;
//! let count = result.column_index("user_txn:txn_count_1h").expect("requested");
//! for row in 0..result.row_count() {
//!     println!("{:?} {:?}", result.i64(row, count), result.status(row, count));
//! }
//!
//! // Read-your-writes: the watermark a push returns makes the next read see it.
//! let wm = client
//!     .push("user_txn", [PushRow::new("user-1").set("txn_count_1h", 7i64)])
//!     .await?;
//! let fresh = client
//!     .get_online_features(&Lookup::features(["user_txn:txn_count_1h"]).keys(["user-1"]).min_watermarks(&wm))
//!     .await?;
//! assert_eq!(fresh.i64(0, 0), Some(7));
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`Client`] (`client.rs`) and its builder and settings ([`config`]).
//! - `shard_map_cache.rs`: the versioned cluster map, coalesced refresh, the watch stream.
//! - `router.rs`: key → shard → replica (power of two choices, circuit breakers).
//! - `pool.rs`: one lazily connected channel per node, outstanding counts, breakers.
//! - `batch.rs`: fan-out, failover, hedging and reassembly of one lookup.
//! - `retry.rs`: error → recovery decision, and the retry budget; `hedge.rs`: hedge delay.
//! - [`watermark`]: watermark tokens and the session's monotonic-read floor.
//! - [`cache`]: the optional client-side row cache (watermark-aware, single flight).
//! - `schema/`: the registry schema requests are validated against (`mod.rs`) and its
//!   cache, refreshed on unknown names and newer registry revisions (`cache.rs`).
//! - [`lookup`], [`push`]: request and result types; [`error`]: [`ClientError`].
//! - [`metrics`]: metric names; [`NodeClient`]: one node, for operator tools.

mod batch;
#[doc(hidden)]
pub mod bench_support;
pub mod cache;
#[cfg(feature = "cli")]
pub mod cli;
mod client;
pub mod config;
pub mod error;
#[cfg(feature = "export")]
pub mod export;
mod hedge;
mod lagging;
pub mod lookup;
pub mod metrics;
mod node_client;
mod pool;
pub mod push;
mod retry;
mod router;
mod schema;
mod shard_map_cache;
mod stats;
pub mod watermark;

pub use client::Client;
pub use config::{CacheConfig, ClientBuilder, ClientConfig, Hedging, RetryBudget};
pub use error::ClientError;
pub use lookup::{Lookup, LookupResult, Row};
pub use node_client::NodeClient;
pub use push::{PushRow, PushSchema};
pub use quiver_proto::v1::value::Kind as ValueKind;
pub use quiver_proto::v1::{EntityKey, FeatureStatus, Value};
pub use stats::ClientStats;
pub use watermark::Watermarks;

/// The README, whose Rust example is compiled as a doc test of this crate so that it stays
/// true to the API (its shell and output blocks are not Rust and are not compiled).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExamples;
