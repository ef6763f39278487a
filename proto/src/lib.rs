//! quiver's wire contract and the pieces of logic that both sides of it must share.
//!
//! # Layout
//! - [`v1`]: generated protobuf messages and gRPC stubs of package `quiver.v1`.
//! - [`partition`]: entity key → shard, identical to the producers' Kafka partitioner.
//! - [`error`]: the closed set of error codes the node returns and the client branches on.
//! - [`transport`]: how callers reach a node (TLS, bearer token).
//! - [`json_number`]: exact numbers in JSON text (ingest, push, `quiverctl`).
//! - [`packed`]: the PACKED lookup encoding: building and reading typed columns.
//! - [`lookup_request`]: the lookup request as a node decodes it (feature references
//!   as bytes, no `String` each).

pub mod error;
pub mod ids;
pub mod json_number;
pub mod lookup_request;
pub mod lookup_response;
pub mod packed;
pub mod partition;
pub mod transport;

#[cfg(test)]
mod test_rng;

/// Generated code for package `quiver.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("quiver.v1");

    /// Encoded `FileDescriptorSet` of every quiver.v1 file, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("quiver_descriptor");
}

pub use error::ErrorCode;
pub use ids::{NodeId, ShardId};
pub use partition::Partitioner;

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

impl v1::entity_key::Kind {
    /// The bytes producers key Kafka records with, and the partitioner hashes: UTF-8 text,
    /// or canonical decimal text for int64 keys.
    pub fn kafka_key(&self) -> Vec<u8> {
        match self {
            v1::entity_key::Kind::StringValue(s) => s.as_bytes().to_vec(),
            v1::entity_key::Kind::Int64Value(i) => i.to_string().into_bytes(),
        }
    }

    /// Appends the bytes of [`Self::kafka_key`] to `out` (no allocation beyond `out`'s).
    pub fn write_kafka_key(&self, out: &mut Vec<u8>) {
        match self {
            v1::entity_key::Kind::StringValue(s) => out.extend_from_slice(s.as_bytes()),
            v1::entity_key::Kind::Int64Value(i) => {
                use std::io::Write as _;
                // Writing to a Vec cannot fail.
                let _ = write!(out, "{i}");
            }
        }
    }

    /// `"string"` or `"int64"`, as entity definitions name key types.
    pub fn type_name(&self) -> &'static str {
        match self {
            v1::entity_key::Kind::StringValue(_) => "string",
            v1::entity_key::Kind::Int64Value(_) => "int64",
        }
    }
}

impl v1::value::Kind {
    /// The feature type this value has, as definition files name it (`"float32_vector"`).
    pub fn type_name(&self) -> &'static str {
        use v1::value::Kind;
        match self {
            Kind::BoolValue(_) => "bool",
            Kind::Int64Value(_) => "int64",
            Kind::Float64Value(_) => "float64",
            Kind::StringValue(_) => "string",
            Kind::BytesValue(_) => "bytes",
            Kind::Float32Vector(_) => "float32_vector",
            Kind::Int64List(_) => "int64_list",
            Kind::Float64List(_) => "float64_list",
            Kind::StringList(_) => "string_list",
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $kind:ident $(($conv:expr))?),* $(,)?) => {$(
        impl From<$t> for v1::Value {
            fn from(v: $t) -> Self {
                v1::Value {
                    kind: Some(v1::value::Kind::$kind(value_from!(@conv v $(, $conv)?))),
                }
            }
        }
    )*};
    (@conv $v:ident) => { $v };
    (@conv $v:ident, $conv:expr) => { $conv($v) };
}

// Typed feature values for pushes: `Value::from(2.5)`, `Value::from(vec![0.1f32, 0.2])`.
value_from! {
    bool => BoolValue,
    i64 => Int64Value,
    f64 => Float64Value,
    String => StringValue,
    &str => StringValue(str::to_owned),
    Vec<u8> => BytesValue,
    Vec<f32> => Float32Vector(|values| v1::FloatVector { values }),
    Vec<i64> => Int64List(|values| v1::Int64List { values }),
    Vec<f64> => Float64List(|values| v1::DoubleList { values }),
    Vec<String> => StringList(|values| v1::StringList { values }),
}
