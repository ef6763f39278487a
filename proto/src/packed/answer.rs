//! [`PackedAnswer`]: a PACKED `GetOnlineFeaturesResponse` encoded straight from the
//! node's column builders.
//!
//! Finishing 50 builders into 50 `PackedColumn`s and collecting them into the response
//! moves each ~400-byte column three times (out of the builder, through the in-place
//! collect, into the response) before prost reads it once to encode it; at 1 × 50 those
//! copies were ~5 % of the node's CPU. This type keeps the builders where they were
//! filled and encodes each by reference, in the field order prost uses, so the bytes on
//! the wire are the generated message's (`tests::an_answer_encodes_as_its_response`).
//!
//! A node's answer takes its column names from the compiled plan ([`PackedAnswer::named`],
//! one shared list per feature list) rather than from a `String` cloned into each
//! builder: at 1 × 50 those were 50 allocations and frees per request. Its builders go
//! back to the plan's [`ColumnPool`] when it is dropped ([`PackedAnswer::recycled_to`]).

use std::sync::Arc;

use bytes::BufMut;
use prost::encoding::{DecodeContext, WireType, encode_varint, encoded_len_varint, key_len};

use super::{ColumnBuilder, ColumnPool, EncodedWatermark};
use crate::v1::GetOnlineFeaturesResponse;

/// `GetOnlineFeaturesResponse.packed_columns`.
const PACKED_COLUMNS: u32 = 3;

/// A PACKED lookup response: every field of `head` but its (empty) `packed_columns`,
/// with `watermarks` after the head's own, then `columns`. Encode-only: decoding one yields an empty answer (decode the
/// generated `GetOnlineFeaturesResponse` instead).
#[derive(Debug, Default)]
pub struct PackedAnswer {
    head: GetOnlineFeaturesResponse,
    columns: Vec<ColumnBuilder>,
    /// Watermarks encoded ahead ([`Self::with_watermarks`]), after `head.watermarks`.
    watermarks: Vec<EncodedWatermark>,
    /// Column `i`'s name, when the builders were made unnamed.
    names: Option<Arc<[String]>>,
    /// Where the builders go when the answer is dropped.
    recycle: Option<Arc<ColumnPool>>,
}

impl Drop for PackedAnswer {
    fn drop(&mut self) {
        if let Some(pool) = self.recycle.take() {
            pool.give(std::mem::take(&mut self.columns));
        }
    }
}

impl PackedAnswer {
    /// The answer with `columns` as its packed columns (`head.packed_columns` is
    /// replaced).
    pub fn new(mut head: GetOnlineFeaturesResponse, mut columns: Vec<ColumnBuilder>) -> Self {
        head.packed_columns = Vec::new();
        for c in &mut columns {
            c.seal();
        }
        PackedAnswer {
            head,
            columns,
            watermarks: Vec::new(),
            names: None,
            recycle: None,
        }
    }

    /// [`Self::new`] with column `i` named `names[i]` (the builders' own names are
    /// ignored). `names` must have one name per column; a column without one keeps its
    /// builder's name.
    pub fn named(
        head: GetOnlineFeaturesResponse,
        columns: Vec<ColumnBuilder>,
        names: Arc<[String]>,
    ) -> Self {
        debug_assert_eq!(names.len(), columns.len(), "one name per column");
        let mut answer = Self::new(head, columns);
        answer.names = Some(names);
        answer
    }

    /// The answer reporting `watermarks` too (after its head's own).
    pub fn with_watermarks(mut self, watermarks: Vec<EncodedWatermark>) -> Self {
        self.watermarks = watermarks;
        self
    }

    /// The answer, its builders given to `pool` when it is dropped (after it has been
    /// encoded) for a later request to reuse.
    pub fn recycled_to(mut self, pool: Arc<ColumnPool>) -> Self {
        self.recycle = Some(pool);
        self
    }

    /// Column `i`'s name on the wire.
    fn name(&self, i: usize) -> &str {
        match self.names.as_ref().and_then(|n| n.get(i)) {
            Some(n) => n,
            None => self.columns[i].name(),
        }
    }

    /// The generated message (the columns finished): for a CELLS answer, an export
    /// chunk or a test.
    pub fn into_response(mut self) -> GetOnlineFeaturesResponse {
        let mut resp = std::mem::take(&mut self.head);
        resp.watermarks
            .extend(self.watermarks.iter().map(EncodedWatermark::to_message));
        let names = self.names.take();
        resp.packed_columns = std::mem::take(&mut self.columns)
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| {
                if let Some(n) = names.as_ref().and_then(|n| n.get(i)) {
                    c.set_name(n.clone());
                }
                c.finish()
            })
            .collect();
        resp
    }

    /// Everything but the columns and the watermarks encoded ahead.
    pub fn head(&self) -> &GetOnlineFeaturesResponse {
        &self.head
    }

    /// The watermarks encoded ahead.
    pub fn watermarks(&self) -> &[EncodedWatermark] {
        &self.watermarks
    }
}

impl prost::Message for PackedAnswer {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        use prost::encoding::{message, uint32, uint64};
        let h = &self.head;
        for c in &h.columns {
            message::encode(1, c, buf);
        }
        for w in &h.watermarks {
            message::encode(2, w, buf);
        }
        for w in &self.watermarks {
            w.encode_field(buf);
        }
        for (i, c) in self.columns.iter().enumerate() {
            let name = self.name(i);
            prost::encoding::encode_key(PACKED_COLUMNS, WireType::LengthDelimited, buf);
            encode_varint(c.encoded_len(name) as u64, buf);
            c.encode_raw(name, buf);
        }
        if h.row_count != 0 {
            uint32::encode(4, &h.row_count, buf);
        }
        uint32::encode_packed(5, &h.view_versions, buf);
        if h.registry_revision != 0 {
            uint64::encode(6, &h.registry_revision, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl bytes::Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        let columns: usize = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let len = c.encoded_len(self.name(i));
                key_len(PACKED_COLUMNS) + encoded_len_varint(len as u64) + len
            })
            .sum();
        let watermarks: usize = self
            .watermarks
            .iter()
            .map(EncodedWatermark::field_len)
            .sum();
        // The head's own fields, packed_columns being empty.
        self.head.encoded_len() + watermarks + columns
    }

    fn clear(&mut self) {
        self.head.clear();
        self.columns.clear();
        self.watermarks.clear();
        self.names = None;
    }
}
