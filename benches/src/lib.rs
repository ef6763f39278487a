//! quiver's bench suite.
//!
//! - [`fixtures`]: data for the criterion micro-benchmarks (`cargo bench`).
//! - The `quiver-bench` tool, for capacity planning: [`load`] (open-loop load, no
//!   coordinated omission), [`env`] (a real cluster of `quiver-node` processes with the
//!   Tansu broker, and the dataset every system is loaded with), [`systems`] (quiver and
//!   the systems it is measured against — Redis, Feast, the gRPC echo and RocksDB floor),
//!   [`lookup`] (SLO search and sweeps), [`ingest`] (apply throughput and freshness),
//!   [`capacity`] (the sizing model), [`report`] (JSON, Markdown, SVG plots).

pub mod capacity;
pub mod client_loop;
pub mod env;
pub mod export;
pub mod fixtures;
pub mod ingest;
pub mod load;
pub mod lookup;
pub mod replicas;
pub mod report;
pub mod systems;

pub use fixtures::*;

/// The floor's echo service, generated from `protos/echo.proto`.
#[allow(missing_docs, clippy::all)]
pub mod echo_proto {
    tonic::include_proto!("quiverbench.v1");
}
