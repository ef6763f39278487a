//! The lookup response as a client decodes it: [`LookupResponse`], the generated
//! `GetOnlineFeaturesResponse` with a decoder that reads each packed column's arrays in
//! one pass, and [`LookupClient`], which calls `GetOnlineFeatures` with that decoder.
//!
//! prost decodes a packed repeated field one element at a time through the `Buf` trait
//! and pushes each onto a `Vec` that starts empty: a 100-row float64 column costs 100
//! `Buf` reads and seven reallocations, and a 100 × 50 response from three nodes some
//! 3,000 reallocations that the client's allocator then has to coalesce. This decoder
//! sizes each array once from the field's length (fixed-width fields: bytes ÷ width;
//! varint fields: the bytes that end a varint) and converts the contiguous bytes in one
//! loop. Every other field, and any packed field whose bytes are not contiguous in the
//! received buffer, goes to the generated decoder, so the values, the errors and the
//! handling of unknown fields are prost's. `tests` checks, for every field, that both
//! decoders agree on arbitrary columns and on corrupted buffers.
//!
//! Servers and other clients keep the generated types; the wire contract is unchanged.

use bytes::Buf;
use prost::DecodeError;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint};
use tonic::GrpcMethod;
use tonic::codegen::http::uri::PathAndQuery;

use crate::v1::{GetOnlineFeaturesRequest, GetOnlineFeaturesResponse, PackedColumn};

/// `GetOnlineFeaturesResponse.packed_columns`.
const PACKED_COLUMNS: u32 = 3;

/// A decoded `GetOnlineFeaturesResponse` (see the module docs). Encoding is the generated
/// message's.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LookupResponse(pub GetOnlineFeaturesResponse);

impl prost::Message for LookupResponse {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        self.0.encode_raw(buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != PACKED_COLUMNS || wire_type != WireType::LengthDelimited {
            return self.0.merge_field(tag, wire_type, buf, ctx);
        }
        let mut col = PackedColumn::default();
        merge_column(&mut col, buf, ctx)?;
        self.0.packed_columns.push(col);
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.0.encoded_len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Decodes one length-delimited `PackedColumn` (what `prost::encoding::message::merge`
/// does, with [`merge_packed`] first in line). A column has no nested messages, so the
/// recursion depth does not grow.
fn merge_column(
    col: &mut PackedColumn,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<(), DecodeError> {
    let len = decode_varint(buf)?;
    let remaining = buf.remaining();
    if len > remaining as u64 {
        return Err(malformed());
    }
    merge_column_fields(col, buf, remaining - len as usize, ctx)
}

/// Decodes the fields of a column from `buf` until `limit` bytes remain.
fn merge_column_fields(
    col: &mut PackedColumn,
    buf: &mut impl Buf,
    limit: usize,
    ctx: DecodeContext,
) -> Result<(), DecodeError> {
    while buf.remaining() > limit {
        let (tag, wire_type) = decode_key(buf)?;
        if wire_type == WireType::LengthDelimited && merge_packed(col, tag, buf)? {
            continue;
        }
        prost::Message::merge_field(col, tag, wire_type, buf, ctx.clone())?;
    }
    if buf.remaining() != limit {
        return Err(malformed());
    }
    Ok(())
}

/// The error for a field that runs past the end of its column.
fn malformed() -> DecodeError {
    // prost offers no public constructor (`DecodeError::new` is deprecated); a key whose
    // length is missing yields its own "invalid varint" error, which is what this is.
    match <PackedColumn as prost::Message>::decode(&[0x0a_u8][..]) {
        Err(e) => e,
        Ok(_) => unreachable!("a key without its length never decodes"),
    }
}

/// Decodes packed field `tag` of a column from contiguous bytes, if it is one of the
/// numeric arrays and its bytes are contiguous in `buf`; `Ok(false)` leaves `buf`
/// untouched for the generated decoder.
fn merge_packed(col: &mut PackedColumn, tag: u32, buf: &mut impl Buf) -> Result<bool, DecodeError> {
    // The length prefix, read from a copy so that `buf` is untouched on `Ok(false)`.
    let chunk = buf.chunk();
    let mut peek = chunk;
    let Ok(len) = decode_varint(&mut peek) else {
        return Ok(false);
    };
    let header = chunk.len() - peek.len();
    let Some(bytes) = usize::try_from(len).ok().and_then(|l| peek.get(..l)) else {
        return Ok(false);
    };
    let done = match tag {
        3 => varints(bytes, &mut col.statuses, |v| v as i32)?,
        4 => varints(bytes, &mut col.null_rows, |v| v as u32)?,
        5 => varints(bytes, &mut col.bools, |v| v != 0)?,
        6 => fixed(bytes, &mut col.int64s, i64::from_le_bytes),
        7 => fixed(bytes, &mut col.float64s, f64::from_le_bytes),
        8 => fixed(bytes, &mut col.float32s, f32::from_le_bytes),
        10 => varints(bytes, &mut col.offsets, |v| v as u32)?,
        11 => varints(bytes, &mut col.list_offsets, |v| v as u32)?,
        13 => fixed(bytes, &mut col.event_times_micros, i64::from_le_bytes),
        _ => false,
    };
    if done {
        buf.advance(header + bytes.len());
    }
    Ok(done)
}

/// Appends the little-endian values of `bytes`; `false` (nothing appended) if its length
/// is not a multiple of the width, for prost to reject.
fn fixed<T, const W: usize>(bytes: &[u8], out: &mut Vec<T>, from: fn([u8; W]) -> T) -> bool {
    if !bytes.len().is_multiple_of(W) {
        return false;
    }
    out.reserve_exact(bytes.len() / W);
    out.extend(
        bytes
            .chunks_exact(W)
            .map(|c| from(c.try_into().expect("chunks_exact yields W bytes"))),
    );
    true
}

/// Appends the varints of `bytes`, converted as prost converts them; an error if one is
/// malformed or runs past the end.
fn varints<T>(bytes: &[u8], out: &mut Vec<T>, from: fn(u64) -> T) -> Result<bool, DecodeError> {
    // Each varint ends with the one byte of it below 0x80.
    out.reserve_exact(bytes.iter().filter(|b| **b < 0x80).count());
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest[0] < 0x80 {
            out.push(from(u64::from(rest[0])));
            rest = &rest[1..];
            continue;
        }
        out.push(from(decode_varint(&mut rest)?));
    }
    Ok(true)
}

/// Calls `quiver.v1.FeatureService/GetOnlineFeatures` and decodes the answer with
/// [`LookupResponse`]; otherwise what the generated `FeatureServiceClient` does.
#[derive(Debug, Clone)]
pub struct LookupClient<T> {
    inner: tonic::client::Grpc<T>,
}

impl<T> LookupClient<T>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    /// A client over `channel`.
    pub fn new(channel: T) -> Self {
        LookupClient {
            inner: tonic::client::Grpc::new(channel),
        }
    }

    /// Limits the size of a decoded response (tonic's default is 4 MiB).
    #[must_use]
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.inner = self.inner.max_decoding_message_size(limit);
        self
    }

    /// Tells the node it may compress responses with `encoding`.
    #[must_use]
    pub fn accept_compressed(mut self, encoding: tonic::codec::CompressionEncoding) -> Self {
        self.inner = self.inner.accept_compressed(encoding);
        self
    }

    /// Looks features up.
    ///
    /// # Errors
    /// The node's status, or a transport or decode error as a status.
    pub async fn get_online_features(
        &mut self,
        request: impl tonic::IntoRequest<GetOnlineFeaturesRequest>,
    ) -> Result<tonic::Response<GetOnlineFeaturesResponse>, tonic::Status> {
        self.send(request.into_request()).await
    }

    /// Looks features up with a request encoded as `GetOnlineFeaturesRequest` by another
    /// message type (e.g. [`crate::lookup_request::OutgoingLookup`]).
    ///
    /// # Errors
    /// The node's status, or a transport or decode error as a status.
    pub async fn send<M>(
        &mut self,
        request: tonic::Request<M>,
    ) -> Result<tonic::Response<GetOnlineFeaturesResponse>, tonic::Status>
    where
        M: prost::Message + Send + Sync + 'static,
    {
        let resp = self.call::<M, LookupResponse>(request).await?;
        Ok(resp.map(|r| r.0))
    }

    /// Like [`Self::send`], keeping the packed columns as the bytes the node sent (see
    /// [`RawLookupResponse`]): for a caller that merges several nodes' answers.
    ///
    /// # Errors
    /// The node's status, or a transport or decode error as a status.
    pub async fn send_raw<M>(
        &mut self,
        request: tonic::Request<M>,
    ) -> Result<tonic::Response<RawLookupResponse>, tonic::Status>
    where
        M: prost::Message + Send + Sync + 'static,
    {
        self.call::<M, RawLookupResponse>(request).await
    }

    async fn call<M, R>(
        &mut self,
        request: tonic::Request<M>,
    ) -> Result<tonic::Response<R>, tonic::Status>
    where
        M: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
    {
        self.inner
            .ready()
            .await
            .map_err(|e| tonic::Status::unknown(format!("Service was not ready: {}", e.into())))?;
        let codec = tonic_prost::ProstCodec::<M, R>::default();
        let path = PathAndQuery::from_static("/quiver.v1.FeatureService/GetOnlineFeatures");
        let mut req = request;
        req.extensions_mut().insert(GrpcMethod::new(
            "quiver.v1.FeatureService",
            "GetOnlineFeatures",
        ));
        self.inner.unary(req, path, codec).await
    }
}

mod raw;

pub use raw::RawLookupResponse;

#[cfg(test)]
mod tests;
