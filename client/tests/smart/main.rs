//! The smart client against real clusters: in-process nodes over librdkafka's mock Kafka
//! (routing, read-your-writes, bad input), and `quiver-node` processes with a Tansu broker
//! (failover under load, monotonic reads, hedging).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod backfill;
mod cache;
mod entities;
mod export;
mod failover;
mod fidelity;
mod hedging;
mod inprocess;
mod monotonic;
mod procs;
mod read_your_writes;
mod rolling_restart;
mod routing;
mod schema_change;
mod swap;
mod train_serve;
mod versions;
