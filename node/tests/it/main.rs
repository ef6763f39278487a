//! In-process integration tests: real nodes against librdkafka's mock Kafka cluster
//! (the real Kafka protocol), over real gRPC.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod admin;
mod cluster;
mod docs_examples;
mod export;
mod harness;
mod ingest;
mod lifecycle;
mod packed;
mod registry_reads;
mod retention;
mod rollback;
mod security;
mod serving;
mod transport;
mod versions;
