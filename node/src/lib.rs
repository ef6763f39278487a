//! quiver-node: a shard replica server of the quiver feature store.
//!
//! A node owns shards (= Kafka partitions of every source topic), consumes them directly
//! into RocksDB (offsets stored with the data) and serves batched feature lookups over
//! gRPC. See `docs/ARCHITECTURE.md`.
//!
//! # Layout
//! - [`config`]: the config file format and the validated [`config::NodeConfig`].
//! - [`registry`]: entities, feature views, feature services; validation and persistence.
//! - [`storage`]: one RocksDB per shard replica; key layout, row codec, LWW apply, TTL.
//! - [`ingest`]: per-shard Kafka consume → decode → atomic apply loops.
//! - [`serve`]: gRPC services (feature lookups, pushes, admin, health, reflection).
//! - [`produce`]: the Kafka producer behind `Push`.
//! - [`node`]: assembly, start-up and ordered shutdown ([`run`]).
//! - [`tasks`]: the node's supervised, named long-lived tasks and their tick loop.
//! - [`metrics`]: every exported metric name.

pub mod config;
pub mod control;
#[doc(hidden)]
pub mod fuzzing;
pub mod ingest;
pub mod kafka_meta;
pub mod metrics;
pub mod node;
pub mod produce;
pub mod registry;
pub mod security;
pub mod serve;
pub mod shards;
pub mod storage;
pub mod tasks;
pub mod telemetry;

pub use node::{Listeners, Node, NodeError, run};
