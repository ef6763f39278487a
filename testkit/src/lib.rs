//! quiver-testkit: what process-level tests (and the chaos suite) need to run real
//! clusters on loopback: the Tansu broker and `quiver-node` as processes that die with the
//! harness, and cluster config files.

// Test support: a failed setup step is a failed test, so it panics with the reason.
#![allow(clippy::unwrap_used)]

pub mod cluster;
pub mod pki;
pub mod process;
pub mod security;
pub mod values;

pub use cluster::{
    ClusterSettings, Member, all_serving_on, allocate, allocate_on, initial_members, write_config,
};
pub use pki::{Ca, Pem, SecureRig};
pub use process::{
    Broker, NodeProcess, free_port, health_status, node_binary, signal, tansu_binary,
};
pub use tonic_health::pb::health_check_response::ServingStatus;
