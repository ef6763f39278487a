//! quiver's wire contract and the pieces of logic that both sides of it must share.
//!
//! # Layout
//! - [`v1`]: generated protobuf messages and gRPC stubs of package `quiver.v1`.
//! - [`partition`]: entity key → shard, identical to the producers' Kafka partitioner.
//! - [`error`]: the closed set of error codes the node returns and the client branches on.

pub mod error;
pub mod partition;

/// Generated code for package `quiver.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("quiver.v1");

    /// Encoded `FileDescriptorSet` of every quiver.v1 file, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("quiver_descriptor");
}

pub use error::ErrorCode;
pub use partition::{Partitioner, ShardId};

impl From<&str> for v1::EntityKey {
    fn from(s: &str) -> Self {
        v1::EntityKey {
            kind: Some(v1::entity_key::Kind::StringValue(s.to_owned())),
        }
    }
}

impl From<String> for v1::EntityKey {
    fn from(s: String) -> Self {
        v1::EntityKey {
            kind: Some(v1::entity_key::Kind::StringValue(s)),
        }
    }
}

impl From<i64> for v1::EntityKey {
    fn from(i: i64) -> Self {
        v1::EntityKey {
            kind: Some(v1::entity_key::Kind::Int64Value(i)),
        }
    }
}
