//! [`LookupRequest`]'s protobuf encoding, written by hand: field 1 goes into one
//! [`FeatureRefs`] buffer, every other field is read and written with prost's own
//! functions for its type, in tag order, as the generated message does.

use bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

use super::LookupRequest;

impl Message for LookupRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        // Field 1, already encoded.
        buf.put_slice(self.features.encoded());
        if !self.feature_service.is_empty() {
            encoding::string::encode(2, &self.feature_service, buf);
        }
        encoding::message::encode_repeated(3, &self.entity_keys, buf);
        encoding::message::encode_repeated(4, &self.min_watermarks, buf);
        if self.watermark_wait_ms != 0 {
            encoding::uint32::encode(5, &self.watermark_wait_ms, buf);
        }
        if self.encoding != 0 {
            encoding::int32::encode(6, &self.encoding, buf);
        }
        if self.include_event_times {
            encoding::bool::encode(7, &self.include_event_times, buf);
        }
        if let Some(as_of) = &self.as_of {
            encoding::message::encode(8, as_of, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let field = |mut e: DecodeError, name| {
            e.push("GetOnlineFeaturesRequest", name);
            e
        };
        match tag {
            1 => merge_reference(self, wire_type, buf).map_err(|e| field(e, "features")),
            2 => encoding::string::merge(wire_type, &mut self.feature_service, buf, ctx)
                .map_err(|e| field(e, "feature_service")),
            3 => encoding::message::merge_repeated(wire_type, &mut self.entity_keys, buf, ctx)
                .map_err(|e| field(e, "entity_keys")),
            4 => encoding::message::merge_repeated(wire_type, &mut self.min_watermarks, buf, ctx)
                .map_err(|e| field(e, "min_watermarks")),
            5 => encoding::uint32::merge(wire_type, &mut self.watermark_wait_ms, buf, ctx)
                .map_err(|e| field(e, "watermark_wait_ms")),
            6 => encoding::int32::merge(wire_type, &mut self.encoding, buf, ctx)
                .map_err(|e| field(e, "encoding")),
            7 => encoding::bool::merge(wire_type, &mut self.include_event_times, buf, ctx)
                .map_err(|e| field(e, "include_event_times")),
            8 => encoding::message::merge(
                wire_type,
                self.as_of.get_or_insert_with(Default::default),
                buf,
                ctx,
            )
            .map_err(|e| field(e, "as_of")),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let mut len = self.features.encoded().len();
        if !self.feature_service.is_empty() {
            len += encoding::string::encoded_len(2, &self.feature_service);
        }
        len += encoding::message::encoded_len_repeated(3, &self.entity_keys);
        len += encoding::message::encoded_len_repeated(4, &self.min_watermarks);
        if self.watermark_wait_ms != 0 {
            len += encoding::uint32::encoded_len(5, &self.watermark_wait_ms);
        }
        if self.encoding != 0 {
            len += encoding::int32::encoded_len(6, &self.encoding);
        }
        if self.include_event_times {
            len += encoding::bool::encoded_len(7, &self.include_event_times);
        }
        if let Some(as_of) = &self.as_of {
            len += encoding::message::encoded_len(8, as_of);
        }
        len
    }

    fn clear(&mut self) {
        *self = LookupRequest::default();
    }
}

/// One field-1 entry, and the ones right after it: length-delimited references, copied
/// into the request's [`super::FeatureRefs`] (not checked as UTF-8, see there).
fn merge_reference(
    req: &mut LookupRequest,
    wire_type: WireType,
    buf: &mut impl Buf,
) -> Result<(), DecodeError> {
    encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
    let len = encoding::decode_varint(buf)?;
    if len > buf.remaining() as u64 {
        // What prost's own `bytes::merge` says of a length past the end; it has no other
        // public constructor for the error.
        #[allow(deprecated)]
        return Err(DecodeError::new("buffer underflow"));
    }
    req.features.push_from(buf, len as usize);
    req.features.push_run(buf);
    Ok(())
}
