//! The lookup request as a node decodes it: [`LookupRequest`], the wire twin of
//! `quiver.v1.GetOnlineFeaturesRequest` whose feature references stay bytes.
//!
//! The generated `GetOnlineFeaturesRequest` decodes each of its feature references into
//! a `String` of its own: 50 allocations (and UTF-8 checks) per 50-feature lookup before
//! the node even looks the list up in its plan cache. Field 1 is `repeated string` on the
//! wire, which is byte-for-byte a `repeated bytes`; decoded as [`bytes::Bytes`], each
//! reference is a slice of the received buffer (a reference count, no copy). The node
//! checks a reference's UTF-8 only when it compiles a plan for the list, which a cached
//! list never needs again.
//!
//! Every other field is the generated type's. Clients and tools keep using the generated
//! message; the wire contract (the .proto file and what reflection serves) is unchanged.
//! `tests::the_twin_has_every_field_of_the_proto_message` fails if the .proto gains a
//! field this twin does not have.

use bytes::Bytes;

use crate::v1::{AsOf, EntityKey, GetOnlineFeaturesRequest, ResponseEncoding, ShardWatermark};

/// `quiver.v1.GetOnlineFeaturesRequest` with its feature references as bytes (see the
/// module docs). The fields mean what the .proto says.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LookupRequest {
    /// `view:feature` or `view:*` references, as received (not yet checked as UTF-8).
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub features: Vec<Bytes>,
    /// Name of a registered feature service.
    #[prost(string, tag = "2")]
    pub feature_service: String,
    /// Keys of the entity every referenced view is keyed by.
    #[prost(message, repeated, tag = "3")]
    pub entity_keys: Vec<EntityKey>,
    /// Optional minimum watermarks per shard.
    #[prost(message, repeated, tag = "4")]
    pub min_watermarks: Vec<ShardWatermark>,
    /// How long the node may wait for a minimum watermark, in ms (0: its own limit).
    #[prost(uint32, tag = "5")]
    pub watermark_wait_ms: u32,
    /// PACKED (the default) or CELLS.
    #[prost(enumeration = "ResponseEncoding", tag = "6")]
    pub encoding: i32,
    /// PACKED only: also return each value's event time.
    #[prost(bool, tag = "7")]
    pub include_event_times: bool,
    /// Unset: the latest values; set: values as of a past time.
    #[prost(message, optional, tag = "8")]
    pub as_of: Option<AsOf>,
}

/// A feature reference that is not UTF-8 text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "feature reference {index} is not UTF-8 text ({len} bytes): references look like \"view:feature\""
)]
pub struct NotUtf8 {
    /// Its position in `features`.
    pub index: usize,
    /// Its length in bytes.
    pub len: usize,
}

impl LookupRequest {
    /// Feature reference `index` as text.
    ///
    /// # Errors
    /// [`NotUtf8`] if it is not UTF-8 (what decoding the generated message would have
    /// refused).
    ///
    /// # Panics
    /// If `index` is out of range.
    pub fn feature(&self, index: usize) -> Result<&str, NotUtf8> {
        let b = &self.features[index];
        std::str::from_utf8(b).map_err(|_| NotUtf8 {
            index,
            len: b.len(),
        })
    }
}

impl From<GetOnlineFeaturesRequest> for LookupRequest {
    /// Moves the fields over; each reference's `String` becomes `Bytes` without a copy.
    fn from(r: GetOnlineFeaturesRequest) -> Self {
        LookupRequest {
            features: r.features.into_iter().map(Bytes::from).collect(),
            feature_service: r.feature_service,
            entity_keys: r.entity_keys,
            min_watermarks: r.min_watermarks,
            watermark_wait_ms: r.watermark_wait_ms,
            encoding: r.encoding,
            include_event_times: r.include_event_times,
            as_of: r.as_of,
        }
    }
}

impl From<&GetOnlineFeaturesRequest> for LookupRequest {
    fn from(r: &GetOnlineFeaturesRequest) -> Self {
        r.clone().into()
    }
}

/// `quiver.v1.GetOnlineFeaturesRequest` as a client sends it: the feature references
/// encoded once per lookup (`references`, field 1 as prost writes it) and shared by
/// reference count among the lookup's sub-requests, retries and hedges; `rest` carries
/// every other field (its own `features` must be empty). Encode-only: the bytes are
/// exactly the generated message's with those references
/// (`tests::an_outgoing_lookup_encodes_as_the_generated_request`).
///
/// Cloning the references into each sub-request's generated message was 50
/// allocations per node per 50-feature lookup in the smart client.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutgoingLookup {
    /// Field 1 of the encoded message: [`OutgoingLookup::encode_references`].
    pub references: Bytes,
    /// The other fields.
    pub rest: GetOnlineFeaturesRequest,
}

impl OutgoingLookup {
    /// `features` encoded as field 1 of the message, in order.
    pub fn encode_references(features: &[String]) -> Bytes {
        let len: usize = features
            .iter()
            .map(|f| prost::encoding::string::encoded_len(1, f))
            .sum();
        let mut buf = Vec::with_capacity(len);
        for f in features {
            prost::encoding::string::encode(1, f, &mut buf);
        }
        buf.into()
    }
}

impl prost::Message for OutgoingLookup {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        debug_assert!(
            self.rest.features.is_empty(),
            "references go in `references`"
        );
        // Field 1 first, as prost orders fields by tag.
        buf.put_slice(&self.references);
        self.rest.encode_raw(buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.references.len() + self.rest.encoded_len()
    }

    fn clear(&mut self) {
        self.references = Bytes::new();
        self.rest.clear();
    }
}

#[cfg(test)]
mod tests;
