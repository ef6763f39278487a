//! A replica's watermark: the next offset to apply of every offset stream it consumes,
//! published after every applied batch ([`super::ShardStore::subscribe_watermark`]).
//!
//! Streams are a source topic's (`orders`) or a pending view version's own re-ingest of
//! one (`orders#view@version`, [`is_topic_stream`]). Lookups report the topic streams'
//! offsets to clients, which hand them back as floors. Every lookup reports the watermark
//! of each shard it read, and a replica publishes a new one once per ingest batch, so
//! the wire form of a published watermark is made once, on first use, and shared by
//! every answer that reports it ([`Offsets::topic_offsets_wire`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use quiver_proto::packed::EncodedWatermark;

/// A published watermark, shared.
pub type Watermark = Arc<Offsets>;

/// Applied offsets of a shard: offset stream → next offset to apply. Reads as the
/// `BTreeMap` it is (`Deref`).
#[derive(Default)]
pub struct Offsets {
    by_stream: BTreeMap<String, i64>,
    /// The topic streams' offsets encoded, once asked for.
    wire: OnceLock<Bytes>,
}

/// Whether an offset stream is a topic's (what clients wait on), not a pending view
/// version's own re-ingest (`topic#view@version`): those exist on a replica only until the
/// version is promoted, so a client holding one as a floor would find every replica
/// that already promoted "behind" it forever.
pub fn is_topic_stream(stream: &str) -> bool {
    !stream.contains('#')
}

impl Offsets {
    /// The topic streams' offsets as the `offsets` field of a `ShardWatermark`
    /// ([`EncodedWatermark::offsets_field`]), encoded on the first call and kept.
    pub fn topic_offsets_wire(&self) -> &Bytes {
        self.wire.get_or_init(|| {
            EncodedWatermark::offsets_field(
                self.by_stream
                    .iter()
                    .filter(|(s, _)| is_topic_stream(s))
                    .map(|(s, o)| (s.as_str(), *o)),
            )
        })
    }

    /// This watermark in a lookup answer, as shard `shard`'s.
    pub fn to_wire(&self, shard: u32) -> EncodedWatermark {
        EncodedWatermark {
            shard,
            offsets: self.topic_offsets_wire().clone(),
        }
    }
}

impl std::ops::Deref for Offsets {
    type Target = BTreeMap<String, i64>;

    fn deref(&self) -> &BTreeMap<String, i64> {
        &self.by_stream
    }
}

impl From<BTreeMap<String, i64>> for Offsets {
    fn from(by_stream: BTreeMap<String, i64>) -> Self {
        Offsets {
            by_stream,
            wire: OnceLock::new(),
        }
    }
}

impl FromIterator<(String, i64)> for Offsets {
    fn from_iter<I: IntoIterator<Item = (String, i64)>>(iter: I) -> Self {
        BTreeMap::from_iter(iter).into()
    }
}

impl PartialEq for Offsets {
    fn eq(&self, other: &Self) -> bool {
        self.by_stream == other.by_stream
    }
}

impl Eq for Offsets {}

impl fmt::Debug for Offsets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.by_stream.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use quiver_proto::v1::{ShardWatermark, TopicOffset};

    use super::*;

    #[test]
    fn the_wire_form_reports_topic_streams_only() {
        let wm: Offsets = [
            ("clicks".to_owned(), 7),
            ("orders".to_owned(), 12),
            ("orders#v@2".to_owned(), 99),
        ]
        .into_iter()
        .collect();
        assert_eq!(wm["orders#v@2"], 99, "reads as its map");
        let first = wm.topic_offsets_wire().clone();
        assert_eq!(
            wm.to_wire(5).to_message(),
            ShardWatermark {
                shard: 5,
                offsets: vec![
                    TopicOffset {
                        topic: "clicks".into(),
                        next_offset: 7,
                    },
                    TopicOffset {
                        topic: "orders".into(),
                        next_offset: 12,
                    },
                ],
            }
        );
        // Made once: later answers share the same bytes.
        assert_eq!(wm.topic_offsets_wire().as_ptr(), first.as_ptr());
        assert_eq!(
            Offsets::default().to_wire(0).to_message(),
            ShardWatermark::default()
        );
    }
}
