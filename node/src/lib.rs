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
//! - [`replica`]: the lifecycle of this node's shard replicas (open, follow, close).
//! - [`serve`]: gRPC services (feature lookups, pushes, admin, health, reflection).
//! - [`state`]: the node's shared state (local replicas, readiness, draining).
//! - [`gate`]: the gate a replica's readers enter and its close waits for.
//! - [`produce`]: the Kafka producer behind `Push`.
//! - [`node`]: assembly, start-up and ordered shutdown ([`run`]).
//! - [`tasks`]: the node's supervised, named long-lived tasks and their tick loop.
//! - [`metrics`]: every exported metric name.

pub mod aggregate;
pub mod config;
pub mod control;
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
pub mod ingest;
pub mod kafka_meta;
pub mod metrics;
pub mod node;
pub mod produce;
pub mod registry;
pub mod replica;
pub mod security;
pub mod serve;
pub mod state;
pub mod storage;
pub mod tasks;
pub mod telemetry;

pub use node::{Listeners, Node, NodeError, run};
