//! The lookup request as a node decodes it: [`LookupRequest`], the wire twin of
//! `quiver.v1.GetOnlineFeaturesRequest` whose feature references stay one buffer of
//! bytes.
//!
//! The generated `GetOnlineFeaturesRequest` decodes each of its feature references into
//! a `String` of its own: 50 allocations (and UTF-8 checks) per 50-feature lookup before
//! the node even looks the list up in its plan cache. Field 1 is `repeated string` on the
//! wire, which is byte-for-byte a `repeated bytes`; the twin copies the references, as
//! encoded, into one [`FeatureRefs`] buffer (one allocation per request), which is also
//! the plan cache's key. (Each reference as a [`bytes::Bytes`] slice of the received
//! buffer cost a reference count up and down and a `Vec` slot: 4.8 µs of the decode of
//! a 1 × 50 request, against one `memcpy` per reference now.) The node checks a
//! reference's UTF-8 only when it compiles a plan for the list, which a cached list
//! never needs again.
//!
//! Every other field is the generated type's, read and written with prost's functions
//! (`wire.rs`). Clients and tools keep using the generated message; the wire contract
//! (the .proto file and what reflection serves) is unchanged.
//! `tests::the_twin_has_every_field_of_the_proto_message` fails if the .proto gains a
//! field this twin does not have.

use bytes::Bytes;

use crate::v1::{AsOf, EntityKey, GetOnlineFeaturesRequest, ShardWatermark};

mod refs;
mod wire;

pub use refs::{FeatureRefs, Iter as FeatureRefsIter};

/// `quiver.v1.GetOnlineFeaturesRequest` with its feature references as bytes (see the
/// module docs). The fields mean what the .proto says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LookupRequest {
    /// `view:feature` or `view:*` references, as received (not yet checked as UTF-8).
    pub features: FeatureRefs,
    /// Name of a registered feature service.
    pub feature_service: String,
    /// Keys of the entity every referenced view is keyed by.
    pub entity_keys: Vec<EntityKey>,
    /// Optional minimum watermarks per shard.
    pub min_watermarks: Vec<ShardWatermark>,
    /// How long the node may wait for a minimum watermark, in ms (0: its own limit).
    pub watermark_wait_ms: u32,
    /// PACKED (the default) or CELLS ([`crate::v1::ResponseEncoding`]).
    pub encoding: i32,
    /// PACKED only: also return each value's event time.
    pub include_event_times: bool,
    /// Unset: the latest values; set: values as of a past time.
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

/// Reference `index`, `bytes`, as text.
///
/// # Errors
/// [`NotUtf8`] if it is not UTF-8 (what decoding the generated message would have
/// refused).
pub fn reference_text(index: usize, bytes: &[u8]) -> Result<&str, NotUtf8> {
    std::str::from_utf8(bytes).map_err(|_| NotUtf8 {
        index,
        len: bytes.len(),
    })
}

impl LookupRequest {
    /// Feature reference `index` as text (a walk of the references: for tests and
    /// errors; the plan compiler iterates them).
    ///
    /// # Errors
    /// [`NotUtf8`] if it is not UTF-8.
    ///
    /// # Panics
    /// If `index` is out of range.
    pub fn feature(&self, index: usize) -> Result<&str, NotUtf8> {
        let b = self
            .features
            .iter()
            .nth(index)
            .expect("feature reference index in range");
        reference_text(index, b)
    }
}

impl From<GetOnlineFeaturesRequest> for LookupRequest {
    /// Moves the fields over; the references are copied into one buffer.
    fn from(r: GetOnlineFeaturesRequest) -> Self {
        LookupRequest {
            features: FeatureRefs::from_refs(&r.features),
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

/// `quiver.v1.GetOnlineFeaturesRequest` as a client sends it, in three pieces of bytes
/// encoded ahead: `head`, the feature references and the feature service (fields 1 and
/// 2), encoded once per lookup and shared by reference count among its sub-requests,
/// retries and hedges; `keys`, a sub-request's entity keys (field 3), encoded from the
/// caller's keys without copying them into messages of their own; and `rest`, every
/// other field (its own fields 1 to 3 must be empty). Encode-only: the bytes are exactly
/// the generated message's (`tests::an_outgoing_lookup_encodes_as_the_generated_request`).
///
/// Cloning the references into each sub-request's generated message was 50 allocations
/// per node per 50-feature lookup in the smart client, and cloning the keys one more per
/// key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutgoingLookup {
    /// Fields 1 and 2 of the encoded message: [`OutgoingLookup::encode_head`].
    pub head: Bytes,
    /// Field 3: [`OutgoingLookup::encode_keys`].
    pub keys: Bytes,
    /// The other fields.
    pub rest: GetOnlineFeaturesRequest,
}

impl OutgoingLookup {
    /// `features` encoded as field 1 of the message, in order.
    pub fn encode_references(features: &[String]) -> Bytes {
        Self::encode_head(features, "")
    }

    /// `features` encoded as field 1 of the message, in order, then `feature_service` as
    /// field 2 (nothing if empty, as prost writes a default string).
    pub fn encode_head(features: &[String], feature_service: &str) -> Bytes {
        use prost::encoding::string;
        let service = if feature_service.is_empty() {
            0
        } else {
            prost::encoding::key_len(2)
                + prost::encoding::encoded_len_varint(feature_service.len() as u64)
                + feature_service.len()
        };
        let len: usize = features
            .iter()
            .map(|f| string::encoded_len(1, f))
            .sum::<usize>()
            + service;
        let mut buf = Vec::with_capacity(len);
        for f in features {
            string::encode(1, f, &mut buf);
        }
        if service > 0 {
            prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, &mut buf);
            prost::encoding::encode_varint(feature_service.len() as u64, &mut buf);
            buf.extend_from_slice(feature_service.as_bytes());
        }
        buf.into()
    }

    /// `keys` encoded as field 3 of the message, in order: one buffer for them all.
    pub fn encode_keys<'k>(keys: impl Iterator<Item = &'k EntityKey> + Clone) -> Bytes {
        use prost::Message as _;
        let len: usize = keys
            .clone()
            .map(|k| prost::encoding::message::encoded_len(3, k))
            .sum();
        let mut buf = Vec::with_capacity(len);
        for k in keys {
            prost::encoding::encode_key(3, prost::encoding::WireType::LengthDelimited, &mut buf);
            prost::encoding::encode_varint(k.encoded_len() as u64, &mut buf);
            k.encode_raw(&mut buf);
        }
        buf.into()
    }
}

impl prost::Message for OutgoingLookup {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        debug_assert!(
            self.rest.features.is_empty()
                && self.rest.feature_service.is_empty()
                && self.rest.entity_keys.is_empty(),
            "fields 1 to 3 go in `head` and `keys`"
        );
        // Fields in tag order, as prost writes them.
        buf.put_slice(&self.head);
        buf.put_slice(&self.keys);
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
        self.head.len() + self.keys.len() + self.rest.encoded_len()
    }

    fn clear(&mut self) {
        self.head = Bytes::new();
        self.keys = Bytes::new();
        self.rest.clear();
    }
}

#[cfg(test)]
mod tests;
