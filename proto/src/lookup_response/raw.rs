//! [`RawLookupResponse`]: a lookup response whose packed columns stay the bytes the node
//! sent, for a caller that merges several nodes' answers into one
//! ([`crate::packed::ColumnView`] reads them in place) and so never needs them as
//! `PackedColumn`s of their own.

use bytes::{Buf, BufMut, Bytes};
use prost::DecodeError;
use prost::encoding::{
    DecodeContext, WireType, decode_varint, encode_key, encode_varint, encoded_len_varint, key_len,
};

use super::{PACKED_COLUMNS, malformed, merge_column_fields};
use crate::v1::{GetOnlineFeaturesResponse, PackedColumn};

/// A `GetOnlineFeaturesResponse` with every field but `packed_columns` decoded, and each
/// packed column kept as its encoded message (a slice of the received buffer: taking it
/// copies nothing). It encodes as the response it was decoded from (the columns after the
/// other fields, which protobuf allows).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RawLookupResponse {
    /// Every field but `packed_columns`.
    pub head: GetOnlineFeaturesResponse,
    /// Each packed column's encoded `PackedColumn`, without its length prefix, in order.
    pub packed_columns: Vec<Bytes>,
}

impl RawLookupResponse {
    /// Decodes packed column `i` (as [`super::LookupResponse`] decodes it).
    ///
    /// # Errors
    /// prost's error for a malformed column.
    ///
    /// # Panics
    /// If `i` is not below `packed_columns.len()`.
    pub fn decode_column(&self, i: usize) -> Result<PackedColumn, DecodeError> {
        let mut col = PackedColumn::default();
        let mut bytes = &self.packed_columns[i][..];
        merge_column_fields(&mut col, &mut bytes, 0, DecodeContext::default())?;
        Ok(col)
    }

    /// The whole response, its columns decoded.
    ///
    /// # Errors
    /// prost's error for the first malformed column.
    pub fn into_response(self) -> Result<GetOnlineFeaturesResponse, DecodeError> {
        let columns = (0..self.packed_columns.len())
            .map(|i| self.decode_column(i))
            .collect::<Result<_, _>>()?;
        let mut resp = self.head;
        resp.packed_columns = columns;
        Ok(resp)
    }
}

impl prost::Message for RawLookupResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.head.encode_raw(buf);
        for c in &self.packed_columns {
            encode_key(PACKED_COLUMNS, WireType::LengthDelimited, buf);
            encode_varint(c.len() as u64, buf);
            buf.put_slice(c);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != PACKED_COLUMNS || wire_type != WireType::LengthDelimited {
            return self.head.merge_field(tag, wire_type, buf, ctx);
        }
        let len = decode_varint(buf)?;
        if len > buf.remaining() as u64 {
            return Err(malformed());
        }
        self.packed_columns.push(buf.copy_to_bytes(len as usize));
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.head.encoded_len()
            + self
                .packed_columns
                .iter()
                .map(|c| key_len(PACKED_COLUMNS) + encoded_len_varint(c.len() as u64) + c.len())
                .sum::<usize>()
    }

    fn clear(&mut self) {
        self.head.clear();
        self.packed_columns.clear();
    }
}
