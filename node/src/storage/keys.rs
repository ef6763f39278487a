//! Storage key layout of a shard's RocksDB.
//!
//! Column family `rows` (feature rows):
//!
//! ```text
//! 0x01 | u16 BE len(view) | view name | u32 BE view version | entity key bytes
//! ```
//!
//! - The leading tag byte reserves room for the other key spaces the design needs next
//!   (`0x02` aggregation tiles, `0x03` bounded per-row history by inverted event time)
//!   without touching this one.
//! - The view version is part of the key, so a re-ingested new version never shares rows
//!   with the serving one and a version swap or drop is a prefix operation.
//! - The entity key bytes are exactly the Kafka record key (string keys: UTF-8; int64 keys:
//!   decimal text), the same bytes the partitioner hashes.
//!
//! Tags `0x02` and `0x04` (same layout): an aggregation view's recent and older tiles per
//! entity ([`crate::aggregate::tiles`], [`crate::aggregate::split`]).
//!
//! Column family `meta`: `o/<topic>` → [`super::OffsetRecord`] (resume position and
//! counters, written in the same batch as the rows), `e/<view>@<version>` → the newest
//! event time an aggregation view version has ingested (its event-time watermark, same
//! batch), `shard` → the shard identity.

use quiver_proto::v1::entity_key::Kind as KeyKind;

use crate::registry::KeyType;

/// Longest accepted entity key, in bytes (the Kafka record key, and the tail of a row key).
pub const MAX_KEY_BYTES: usize = 4096;

/// Appends the entity key bytes of `key` — the Kafka record key the partitioner hashes and
/// the tail of the row key — for an entity with `key_type` keys to `out`. Ingest (push)
/// and lookups share it, so both accept exactly the same keys.
///
/// # Errors
/// A message starting with `what` (e.g. `entity_keys[3]`) naming what is wrong: no
/// value, the wrong type, empty or longer than [`MAX_KEY_BYTES`]. `out` is unchanged.
pub fn append_entity_key(
    what: &dyn std::fmt::Display,
    key: Option<&KeyKind>,
    key_type: KeyType,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let key = key.ok_or_else(|| format!("{what} has no value"))?;
    if key.type_name() != key_type.as_str() {
        return Err(format!(
            "{what} is {}, but the entity has {} keys",
            key.type_name(),
            key_type.as_str()
        ));
    }
    let start = out.len();
    key.write_kafka_key(out);
    let len = out.len() - start;
    if len == 0 || len > MAX_KEY_BYTES {
        out.truncate(start);
        return Err(format!(
            "{what} is {len} bytes; keys must be 1..={MAX_KEY_BYTES} bytes"
        ));
    }
    Ok(())
}

/// Tag of the feature-row key space.
pub const ROW_TAG: u8 = 0x01;
/// Meta key of the shard identity record.
pub const SHARD_IDENTITY_KEY: &[u8] = b"shard";
/// Prefix of per-topic offset records in the meta column family.
pub const OFFSET_PREFIX: &[u8] = b"o/";

/// Appends the row key of `(view, version, entity_key)` to `out`.
pub fn encode_row_key(view: &str, version: u32, entity_key: &[u8], out: &mut Vec<u8>) {
    debug_assert!(
        view.len() <= usize::from(u16::MAX),
        "view names are validated to 64 bytes"
    );
    out.reserve(1 + 2 + view.len() + 4 + entity_key.len());
    out.push(ROW_TAG);
    out.extend_from_slice(&(view.len() as u16).to_be_bytes());
    out.extend_from_slice(view.as_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(entity_key);
}

/// Tag of the aggregation key space: one tile set per (view, version, entity).
pub const TILE_TAG: u8 = 0x02;
/// Tag of the aggregation *body* key space: an entity's older tiles, rewritten rarely (see
/// [`crate::aggregate::split`]); the `0x02` value holds the recent ones.
pub const TILE_BODY_TAG: u8 = 0x04;
/// Prefix of per-view-version event-time watermarks in the meta column family.
pub const EVENT_WATERMARK_PREFIX: &[u8] = b"e/";

/// Appends the tile-set key of `(view, version, entity_key)` to `out`: the row key's
/// layout under [`TILE_TAG`].
pub fn encode_tile_key(view: &str, version: u32, entity_key: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    encode_row_key(view, version, entity_key, out);
    out[start] = TILE_TAG;
}

/// Appends the key of the older tiles of `(view, version, entity_key)` to `out`.
pub fn encode_tile_body_key(view: &str, version: u32, entity_key: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    encode_row_key(view, version, entity_key, out);
    out[start] = TILE_BODY_TAG;
}

/// Returns the tile-set key of `(view, version, entity_key)`.
pub fn tile_key(view: &str, version: u32, entity_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_tile_key(view, version, entity_key, &mut out);
    out
}

/// Meta key of the event-time watermark of `(view, version)` on a shard: the newest
/// event time its aggregation has ingested (i64 LE µs), written with the offsets.
pub fn event_watermark_key(view: &str, version: u32) -> Vec<u8> {
    let mut k = EVENT_WATERMARK_PREFIX.to_vec();
    k.extend_from_slice(view.as_bytes());
    k.push(b'@');
    k.extend_from_slice(version.to_string().as_bytes());
    k
}

/// Prefix of the meta keys marking view versions this replica dropped.
pub const DROPPED_VERSION_PREFIX: &[u8] = b"d/";

/// The meta key marking `(view, version)` as dropped on this replica.
pub fn dropped_version_key(view: &str, version: u32) -> Vec<u8> {
    let mut k = DROPPED_VERSION_PREFIX.to_vec();
    k.extend_from_slice(view.as_bytes());
    k.push(b'@');
    k.extend_from_slice(version.to_string().as_bytes());
    k
}

/// Returns the row key of `(view, version, entity_key)`.
pub fn row_key(view: &str, version: u32, entity_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_row_key(view, version, entity_key, &mut out);
    out
}

/// Returns the key prefix shared by every row of `(view, version)`.
pub fn row_prefix(view: &str, version: u32) -> Vec<u8> {
    row_key(view, version, b"")
}

/// A parsed row key, borrowing from the key bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct RowKey<'a> {
    /// View name.
    pub view: &'a str,
    /// View version.
    pub version: u32,
    /// Entity key bytes.
    pub entity_key: &'a [u8],
}

/// Parses a row key; `None` if `key` is not a well-formed row key.
pub fn parse_row_key(key: &[u8]) -> Option<RowKey<'_>> {
    if key.first() != Some(&ROW_TAG) {
        return None;
    }
    parse_view_key(key)
}

/// Parses a row or tile-set key (same layout, any of the three tags); `None` if malformed.
pub fn parse_view_key(key: &[u8]) -> Option<RowKey<'_>> {
    let (&tag, rest) = key.split_first()?;
    if !(tag == ROW_TAG || tag == TILE_TAG || tag == TILE_BODY_TAG) || rest.len() < 2 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    let rest = &rest[2..];
    if rest.len() < len + 4 {
        return None;
    }
    let view = std::str::from_utf8(&rest[..len]).ok()?;
    let version = u32::from_be_bytes(rest[len..len + 4].try_into().ok()?);
    Some(RowKey {
        view,
        version,
        entity_key: &rest[len + 4..],
    })
}

/// Tag of the history key space (column family `history`): every version of a row of a
/// view with `history`, newest first per entity.
pub const HISTORY_TAG: u8 = 0x03;

/// Appends the prefix shared by every history entry of one entity of `(view, version)`:
/// the row key's view and version, then the entity key with its length (so one entity's
/// entries never interleave with another's whose key it prefixes).
pub fn encode_history_prefix(view: &str, version: u32, entity_key: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    encode_row_key(view, version, b"", out);
    out[start] = HISTORY_TAG;
    debug_assert!(
        entity_key.len() <= MAX_KEY_BYTES,
        "keys are checked on the way in"
    );
    out.extend_from_slice(&(entity_key.len() as u16).to_be_bytes());
    out.extend_from_slice(entity_key);
}

/// Appends the key of the history entry of `(view, version, entity_key)` with event time
/// `event_time_micros` written by the record at `offset`: the entity prefix, then the
/// event time and the offset, both inverted so an entity's newest version sorts first
/// (and of two with one event time, the later record, which won).
pub fn encode_history_key(
    view: &str,
    version: u32,
    entity_key: &[u8],
    event_time_micros: i64,
    offset: i64,
    out: &mut Vec<u8>,
) {
    encode_history_prefix(view, version, entity_key, out);
    out.extend_from_slice(&inverted_time(event_time_micros));
    out.extend_from_slice(&(!(offset as u64)).to_be_bytes());
}

/// The 8 bytes under which event time `t` sorts before every earlier time.
pub fn inverted_time(t: i64) -> [u8; 8] {
    (!((t as u64) ^ (1 << 63))).to_be_bytes()
}

/// A parsed history key.
#[derive(Debug, PartialEq, Eq)]
pub struct HistoryKey<'a> {
    /// View name.
    pub view: &'a str,
    /// View version.
    pub version: u32,
    /// Entity key bytes.
    pub entity_key: &'a [u8],
    /// Event time of the version, µs.
    pub event_time_micros: i64,
    /// Offset of the record that wrote it.
    pub offset: i64,
}

impl HistoryKey<'_> {
    /// Length of the entity prefix ([`encode_history_prefix`]) of the parsed key.
    pub fn prefix_len(key: &[u8]) -> usize {
        key.len().saturating_sub(16)
    }
}

/// Parses a history key; `None` if malformed.
pub fn parse_history_key(key: &[u8]) -> Option<HistoryKey<'_>> {
    let (&tag, rest) = key.split_first()?;
    if tag != HISTORY_TAG {
        return None;
    }
    let (len, rest) = rest.split_at_checked(2)?;
    let (view, rest) = rest.split_at_checked(usize::from(u16::from_be_bytes([len[0], len[1]])))?;
    let (version, rest) = rest.split_at_checked(4)?;
    let (len, rest) = rest.split_at_checked(2)?;
    let (entity, tail) =
        rest.split_at_checked(usize::from(u16::from_be_bytes([len[0], len[1]])))?;
    if tail.len() != 16 {
        return None;
    }
    let word = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
    Some(HistoryKey {
        view: std::str::from_utf8(view).ok()?,
        version: u32::from_be_bytes(version.try_into().ok()?),
        entity_key: entity,
        event_time_micros: (!word(&tail[..8]) ^ (1 << 63)) as i64,
        offset: !word(&tail[8..]) as i64,
    })
}

/// Meta key of the offset record of `topic`.
pub fn offset_key(topic: &str) -> Vec<u8> {
    let mut k = OFFSET_PREFIX.to_vec();
    k.extend_from_slice(topic.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_key_round_trips() {
        let k = row_key("user_stats", 3, b"user-42");
        let parsed = parse_row_key(&k).unwrap();
        assert_eq!(
            parsed,
            RowKey {
                view: "user_stats",
                version: 3,
                entity_key: b"user-42"
            }
        );
        assert!(k.starts_with(&row_prefix("user_stats", 3)));
    }

    #[test]
    fn prefixes_do_not_collide_across_views_or_versions() {
        // "ab" + key "c..." must not look like view "abc": the length prefix prevents it.
        assert!(!row_key("ab", 1, b"c").starts_with(&row_prefix("abc", 1)));
        assert!(!row_key("v", 1, b"k").starts_with(&row_prefix("v", 2)));
    }

    #[test]
    fn malformed_keys_are_rejected() {
        assert_eq!(parse_row_key(b""), None);
        assert_eq!(parse_row_key(&[ROW_TAG, 0, 10, b'a']), None);
        assert_eq!(parse_row_key(&[0x02, 0, 0, 0, 0, 0, 1]), None);
        let tile = tile_key("v", 2, b"k");
        assert_eq!(parse_row_key(&tile), None, "a tile key is not a row key");
        assert_eq!(parse_view_key(&tile).unwrap().entity_key, b"k");
        assert_eq!(&tile[1..], &row_key("v", 2, b"k")[1..]);
    }

    #[test]
    fn history_keys_sort_newest_first_per_entity_and_round_trip() {
        let k = |e: &[u8], t: i64, o: i64| {
            let mut out = Vec::new();
            encode_history_key("v", 2, e, t, o, &mut out);
            out
        };
        let parsed = k(b"user-1", -5, 42);
        assert_eq!(
            parse_history_key(&parsed),
            Some(HistoryKey {
                view: "v",
                version: 2,
                entity_key: b"user-1",
                event_time_micros: -5,
                offset: 42,
            })
        );
        // Newest event time first, then the later record; negative times too.
        let mut keys = [
            k(b"a", 10, 1),
            k(b"a", 20, 0),
            k(b"a", 10, 7),
            k(b"a", -3, 9),
            k(b"a", i64::MAX, 0),
        ];
        keys.sort();
        let order: Vec<(i64, i64)> = keys
            .iter()
            .map(|x| {
                let h = parse_history_key(x).unwrap();
                (h.event_time_micros, h.offset)
            })
            .collect();
        assert_eq!(order, [(i64::MAX, 0), (20, 0), (10, 7), (10, 1), (-3, 9)]);
        // An entity whose key extends another's never falls inside its range.
        let mut a = Vec::new();
        encode_history_prefix("v", 2, b"a", &mut a);
        assert!(!k(b"ab", 10, 1).starts_with(&a));
        assert_eq!(HistoryKey::prefix_len(&k(b"a", 1, 1)), a.len());
        assert_eq!(parse_history_key(&row_key("v", 2, b"k")), None);
        assert_eq!(parse_history_key(&[HISTORY_TAG; 10]), None);
    }

    #[test]
    fn entity_keys_are_checked_once_for_ingest_and_lookups() {
        let mut out = b"prefix".to_vec();
        let s = KeyKind::StringValue("user-1".into());
        append_entity_key(&"k", Some(&s), KeyType::String, &mut out).unwrap();
        assert_eq!(out, b"prefixuser-1");
        let mut out = Vec::new();
        let n = KeyKind::Int64Value(-42);
        append_entity_key(&"k", Some(&n), KeyType::Int64, &mut out).unwrap();
        assert_eq!(out, b"-42", "int64 keys are their decimal text");

        let mut out = b"kept".to_vec();
        let e = append_entity_key(&"entity_keys[3]", Some(&n), KeyType::String, &mut out);
        assert_eq!(
            e.unwrap_err(),
            "entity_keys[3] is int64, but the entity has string keys"
        );
        let e = append_entity_key(&"rows[0].entity_key", None, KeyType::String, &mut out);
        assert_eq!(e.unwrap_err(), "rows[0].entity_key has no value");
        let empty = KeyKind::StringValue(String::new());
        let e = append_entity_key(&"k", Some(&empty), KeyType::String, &mut out);
        assert_eq!(e.unwrap_err(), "k is 0 bytes; keys must be 1..=4096 bytes");
        let long = KeyKind::StringValue("x".repeat(MAX_KEY_BYTES + 1));
        let e = append_entity_key(&"k", Some(&long), KeyType::String, &mut out);
        assert_eq!(
            e.unwrap_err(),
            "k is 4097 bytes; keys must be 1..=4096 bytes"
        );
        assert_eq!(out, b"kept", "a refused key leaves the buffer as it was");
        let longest = KeyKind::StringValue("x".repeat(MAX_KEY_BYTES));
        append_entity_key(&"k", Some(&longest), KeyType::String, &mut out).unwrap();
        assert_eq!(out.len(), 4 + MAX_KEY_BYTES);
    }
}
