//! In-process integration tests: real nodes against librdkafka's mock Kafka cluster
//! (the real Kafka protocol), over real gRPC.

mod admin;
mod harness;
mod ingest;
mod lifecycle;
mod serving;
