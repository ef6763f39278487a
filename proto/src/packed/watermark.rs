//! [`EncodedWatermark`]: a `ShardWatermark` of an answer encoded once, when the replica
//! publishes it, rather than built and encoded for every answer.
//!
//! A lookup reports the watermark of every shard it read. As a generated `ShardWatermark`
//! that is a `Vec` and a `TopicOffset` with a `String` topic per stream, built, encoded
//! and dropped per answer, although a replica's watermark changes once per ingest batch
//! and thousands of answers report the same one. The replica keeps its topic streams'
//! offsets encoded ([`EncodedWatermark::offsets_field`], shared `Bytes`); an answer holds
//! a reference to them and copies them to the wire.

use bytes::{BufMut, Bytes};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len, uint32};

use crate::v1::{ShardWatermark, TopicOffset};

/// `GetOnlineFeaturesResponse.watermarks`.
const WATERMARKS: u32 = 2;
/// `ShardWatermark.shard` and `ShardWatermark.offsets`.
const SHARD: u32 = 1;
const OFFSETS: u32 = 2;

/// One `ShardWatermark` of an answer: its shard, and its `offsets` as encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedWatermark {
    /// The shard.
    pub shard: u32,
    /// `ShardWatermark.offsets` as prost encodes it: each `TopicOffset` with its tag
    /// ([`Self::offsets_field`]).
    pub offsets: Bytes,
}

impl EncodedWatermark {
    /// `offsets`, in order, encoded as the `offsets` field of a `ShardWatermark`.
    pub fn offsets_field<'a>(offsets: impl IntoIterator<Item = (&'a str, i64)>) -> Bytes {
        let mut buf = Vec::new();
        for (topic, next_offset) in offsets {
            let entry = TopicOffset {
                topic: topic.to_owned(),
                next_offset,
            };
            prost::encoding::message::encode(OFFSETS, &entry, &mut buf);
        }
        buf.into()
    }

    /// The encoded `ShardWatermark` message's length.
    fn message_len(&self) -> usize {
        let shard = if self.shard == 0 {
            0
        } else {
            uint32::encoded_len(SHARD, &self.shard)
        };
        shard + self.offsets.len()
    }

    /// Bytes of [`Self::encode_field`].
    pub(super) fn field_len(&self) -> usize {
        let len = self.message_len();
        key_len(WATERMARKS) + encoded_len_varint(len as u64) + len
    }

    /// Writes the watermark as an entry of `GetOnlineFeaturesResponse.watermarks`.
    pub(super) fn encode_field(&self, buf: &mut impl BufMut) {
        encode_key(WATERMARKS, WireType::LengthDelimited, buf);
        encode_varint(self.message_len() as u64, buf);
        if self.shard != 0 {
            uint32::encode(SHARD, &self.shard, buf);
        }
        buf.put_slice(&self.offsets);
    }

    /// The generated message (decoded from the bytes; for slow paths and tests).
    ///
    /// # Panics
    /// If `offsets` is not a `ShardWatermark.offsets` encoding (made by anything but
    /// [`Self::offsets_field`]).
    pub fn to_message(&self) -> ShardWatermark {
        let mut wm = ShardWatermark::decode(&self.offsets[..])
            .expect("offsets made by EncodedWatermark::offsets_field");
        wm.shard = self.shard;
        wm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_the_generated_message() {
        let cases: [(u32, Vec<(&str, i64)>); 4] = [
            (0, vec![]),
            (3, vec![("t", 5)]),
            (7, vec![("orders", 0), ("clicks", -1), ("z", i64::MAX)]),
            (0, vec![("", 0), ("a", 300)]),
        ];
        for (shard, offsets) in cases {
            let encoded = EncodedWatermark {
                shard,
                offsets: EncodedWatermark::offsets_field(offsets.iter().copied()),
            };
            let message = ShardWatermark {
                shard,
                offsets: offsets
                    .iter()
                    .map(|&(t, o)| TopicOffset {
                        topic: t.into(),
                        next_offset: o,
                    })
                    .collect(),
            };
            let mut ours = Vec::new();
            encoded.encode_field(&mut ours);
            let mut theirs = Vec::new();
            prost::encoding::message::encode(WATERMARKS, &message, &mut theirs);
            assert_eq!(ours, theirs, "shard {shard} {offsets:?}");
            assert_eq!(encoded.field_len(), theirs.len());
            assert_eq!(encoded.to_message(), message);
        }
    }
}
