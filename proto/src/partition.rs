//! Entity key → shard.
//!
//! A shard is exactly one Kafka partition of every source topic, so the function that maps
//! a key to a shard must be the producers' partitioner, bit for bit, or lookups miss.
//! Keys are hashed as the *serialized* Kafka record key bytes.

use std::fmt;
use std::str::FromStr;

pub use crate::ids::ShardId;

/// The producers' partitioner; a cluster-wide setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Partitioner {
    /// The Kafka Java client's default: `(murmur2(key) & 0x7fffffff) % P`.
    /// librdkafka calls it `murmur2_random`.
    #[default]
    Murmur2,
    /// librdkafka's default `consistent_random`: `crc32(key) % P`.
    Crc32,
}

impl Partitioner {
    /// Returns the shard that owns `key` in a cluster of `shard_count` shards.
    ///
    /// # Panics
    /// Panics if `shard_count` is zero; configurations are validated to be non-zero.
    pub fn shard_for_key(self, key: &[u8], shard_count: u32) -> ShardId {
        assert!(shard_count > 0, "shard_count must be non-zero");
        let p = match self {
            Partitioner::Murmur2 => (kafka_murmur2(key) & 0x7fff_ffff) % shard_count,
            Partitioner::Crc32 => crc32fast::hash(key) % shard_count,
        };
        ShardId(p)
    }

    /// The name librdkafka's `partitioner` property uses for this function.
    pub fn librdkafka_name(self) -> &'static str {
        match self {
            Partitioner::Murmur2 => "murmur2_random",
            Partitioner::Crc32 => "consistent_random",
        }
    }

    /// The name used in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            Partitioner::Murmur2 => "murmur2",
            Partitioner::Crc32 => "crc32",
        }
    }
}

impl fmt::Display for Partitioner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unrecognised partitioner name.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown partitioner {0:?}: expected \"murmur2\" (alias \"murmur2_random\") or \"crc32\" (alias \"consistent_random\")"
)]
pub struct UnknownPartitioner(pub String);

impl FromStr for Partitioner {
    type Err = UnknownPartitioner;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "murmur2" | "murmur2_random" => Ok(Partitioner::Murmur2),
            "crc32" | "consistent_random" => Ok(Partitioner::Crc32),
            other => Err(UnknownPartitioner(other.to_owned())),
        }
    }
}

/// MurmurHash2 (32 bit) exactly as Kafka's `Utils.murmur2`: seed `0x9747b28c`,
/// little-endian 4-byte blocks.
pub fn kafka_murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const SEED: u32 = 0x9747_b28c;
    // Java truncates the length to int; keys are far below 4 GiB.
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut blocks = data.chunks_exact(4);
    for b in &mut blocks {
        let mut k = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = blocks.remainder();
    if tail.len() == 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka_reference_vectors() {
        // Vectors from librdkafka's rdmurmur2.c unit test, which were taken from Java.
        let cases: &[(&[u8], u32)] = &[
            (b"kafka", 0xd067cf64),
            (b"giberish123456789", 0x8f552b0c),
            (b"1234", 0x9fc97b14),
            (b"234", 0xe7c009ca),
            (b"34", 0x873930da),
            (b"4", 0x5a4b5ca1),
            (b"PreAmbleWillBeRemoved,ThePrePartThatIs", 0x78424f1c),
            (b"reAmbleWillBeRemoved,ThePrePartThatIs", 0x4a62b377),
            (b"eAmbleWillBeRemoved,ThePrePartThatIs", 0xe0e4e09e),
            (b"AmbleWillBeRemoved,ThePrePartThatIs", 0x62b8b43f),
            (b"", 0x106e08d9),
        ];
        for (key, want) in cases {
            assert_eq!(
                kafka_murmur2(key),
                *want,
                "key {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn murmur2_partition_masks_sign_bit_not_abs() {
        // 0xd067cf64 has the sign bit set: Java's toPositive masks it (not abs()).
        let p = Partitioner::Murmur2.shard_for_key(b"kafka", 1000);
        assert_eq!(p, ShardId((0xd067cf64u32 & 0x7fff_ffff) % 1000));
    }

    #[test]
    fn crc32_matches_ieee_reference() {
        // CRC-32/ISO-HDLC check value.
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf43926);
        assert_eq!(
            Partitioner::Crc32.shard_for_key(b"123456789", 7),
            ShardId(0xcbf43926 % 7)
        );
    }

    #[test]
    fn partitioner_names_round_trip() {
        for p in [Partitioner::Murmur2, Partitioner::Crc32] {
            assert_eq!(p.as_str().parse::<Partitioner>().unwrap(), p);
            assert_eq!(p.librdkafka_name().parse::<Partitioner>().unwrap(), p);
        }
        let err = "fnv1a".parse::<Partitioner>().unwrap_err();
        assert!(err.to_string().contains("fnv1a"));
    }
}
