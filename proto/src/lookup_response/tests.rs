use bytes::Buf;
use prost::Message;

use super::*;
use crate::test_rng::Rng;
use crate::v1::{FeatureColumn, ShardWatermark, TopicOffset, Value};

/// Lengths and values shaped for the decoder tests.
trait Draw {
    fn len(&mut self) -> usize;
    fn wide(&mut self) -> u64;
    fn vec<T>(&mut self, f: impl FnMut(&mut Self) -> T) -> Vec<T>;
}

impl Draw for Rng {
    /// A length: often empty, sometimes long enough for several reallocations.
    fn len(&mut self) -> usize {
        [0, 0, 1, 2, 7, 100, 300][self.below(7)]
    }

    /// Any u64, small ones more often (varints of every length).
    fn wide(&mut self) -> u64 {
        self.next() >> (self.below(8) * 8)
    }

    fn vec<T>(&mut self, mut f: impl FnMut(&mut Self) -> T) -> Vec<T> {
        (0..self.len()).map(|_| f(self)).collect()
    }
}

/// A column with arbitrary arrays (the decoder does not validate; it must only agree
/// with prost), including negative statuses and values beyond u32 that prost truncates.
fn column(rng: &mut Rng) -> PackedColumn {
    PackedColumn {
        name: ["", "v:f", "view_é:🦀"][rng.below(3)].into(),
        r#type: rng.below(12) as i32 - 1,
        statuses: rng.vec(|r| r.wide() as i32),
        null_rows: rng.vec(|r| r.wide() as u32),
        bools: rng.vec(|r| r.next() & 1 == 1),
        int64s: rng.vec(|r| r.next() as i64),
        float64s: rng.vec(|r| f64::from_bits(r.next() & !(0x7ff << 52)) * 1e10),
        float32s: rng.vec(|r| (r.next() as i32) as f32 / 7.0),
        blob: rng.vec(|r| r.next() as u8).into(),
        offsets: rng.vec(|r| r.wide() as u32),
        list_offsets: rng.vec(|r| r.wide() as u32),
        dimension: rng.wide() as u32,
        event_times_micros: rng.vec(|r| r.next() as i64),
    }
}

fn response(rng: &mut Rng) -> GetOnlineFeaturesResponse {
    GetOnlineFeaturesResponse {
        columns: (0..rng.below(2))
            .map(|_| FeatureColumn {
                name: "v:cells".into(),
                values: vec![Value::default(); rng.below(3)],
                statuses: rng.vec(|r| r.below(4) as i32),
                event_times_micros: rng.vec(|r| r.next() as i64),
            })
            .collect(),
        watermarks: (0..rng.below(3))
            .map(|i| ShardWatermark {
                shard: i as u32,
                offsets: (0..rng.below(3))
                    .map(|t| TopicOffset {
                        topic: format!("t{t}"),
                        next_offset: rng.next() as i64,
                    })
                    .collect(),
            })
            .collect(),
        packed_columns: (0..rng.below(6)).map(|_| column(rng)).collect(),
        row_count: rng.wide() as u32,
        view_versions: rng.vec(|r| r.wide() as u32),
        registry_revision: rng.wide(),
    }
}

/// Both decoders over `buf` split at `split` (a chained, non-contiguous buffer when the
/// split is inside it).
fn both(
    bytes: &[u8],
    split: usize,
) -> (
    Result<GetOnlineFeaturesResponse, DecodeError>,
    Result<GetOnlineFeaturesResponse, DecodeError>,
) {
    let (a, b) = bytes.split_at(split.min(bytes.len()));
    let generated = GetOnlineFeaturesResponse::decode(a.chain(b));
    let ours = LookupResponse::decode(a.chain(b)).map(|r| r.0);
    (generated, ours)
}

#[test]
fn decodes_what_prost_decodes_for_arbitrary_responses() {
    let mut rng = Rng(7);
    let mut packed_fields = 0;
    for _ in 0..400 {
        let resp = response(&mut rng);
        packed_fields += resp.packed_columns.len();
        let bytes = resp.encode_to_vec();
        let ours = LookupResponse::decode(&bytes[..]).expect("decodes").0;
        assert_eq!(ours, resp);
        // Non-contiguous: the packed fields that straddle the split go to prost.
        let split = rng.below(bytes.len() as u64 + 1);
        let (generated, ours) = both(&bytes, split);
        assert_eq!(ours.expect("decodes"), generated.expect("decodes"));
    }
    assert!(
        packed_fields > 500,
        "only {packed_fields} columns generated"
    );
}

#[test]
fn keeps_the_capacity_of_each_array_to_its_length() {
    let mut rng = Rng(11);
    for _ in 0..100 {
        let col = column(&mut rng);
        let resp = GetOnlineFeaturesResponse {
            packed_columns: vec![col.clone(), col],
            ..Default::default()
        };
        let ours = LookupResponse::decode(&resp.encode_to_vec()[..])
            .expect("decodes")
            .0;
        for c in &ours.packed_columns {
            assert_eq!(c.float64s.capacity(), c.float64s.len());
            assert_eq!(c.statuses.capacity(), c.statuses.len());
            assert_eq!(c.offsets.capacity(), c.offsets.len());
            assert_eq!(c.event_times_micros.capacity(), c.event_times_micros.len());
        }
    }
}

/// The same column with every numeric array unpacked (one key per element), which a
/// protobuf decoder must accept too.
fn unpacked(col: &PackedColumn) -> Vec<u8> {
    use prost::encoding::{bool, double, float, int32, sfixed64, string, uint32};
    let mut b = Vec::new();
    string::encode(1, &col.name, &mut b);
    int32::encode(2, &col.r#type, &mut b);
    int32::encode_repeated(3, &col.statuses, &mut b);
    uint32::encode_repeated(4, &col.null_rows, &mut b);
    bool::encode_repeated(5, &col.bools, &mut b);
    sfixed64::encode_repeated(6, &col.int64s, &mut b);
    double::encode_repeated(7, &col.float64s, &mut b);
    float::encode_repeated(8, &col.float32s, &mut b);
    prost::encoding::bytes::encode(9, &col.blob, &mut b);
    uint32::encode_repeated(10, &col.offsets, &mut b);
    uint32::encode_repeated(11, &col.list_offsets, &mut b);
    sfixed64::encode_repeated(13, &col.event_times_micros, &mut b);
    b
}

#[test]
fn decodes_unpacked_and_split_arrays_as_prost_does() {
    let mut rng = Rng(3);
    for _ in 0..200 {
        let (c1, c2) = (column(&mut rng), column(&mut rng));
        // An unpacked column, then a packed one whose arrays arrive in two pieces each
        // (a repeated field may occur more than once; the pieces are concatenated).
        let mut body = unpacked(&c1);
        body.extend(c2.encode_to_vec());
        body.extend(c1.encode_to_vec());
        let mut bytes = Vec::new();
        prost::encoding::bytes::encode(PACKED_COLUMNS, &body, &mut bytes);
        let (generated, ours) = both(&bytes, bytes.len());
        let generated = generated.expect("decodes");
        assert_eq!(ours.expect("decodes"), generated);
        assert_eq!(
            generated.packed_columns[0].float64s.len(),
            c1.float64s.len() * 2 + c2.float64s.len()
        );
    }
}

/// A random response's bytes with one to three bytes changed, removed, inserted or cut
/// off; `None` when nothing is left to corrupt.
fn corrupted(rng: &mut Rng) -> Option<Vec<u8>> {
    let mut bytes = response(rng).encode_to_vec();
    if bytes.is_empty() {
        return None;
    }
    for _ in 0..1 + rng.below(3) {
        let i = rng.below(bytes.len() as u64);
        match rng.below(4) {
            0 => bytes[i] = rng.next() as u8,
            1 => bytes[i] ^= 0x80,
            2 => bytes.truncate(i),
            _ => bytes.insert(i, [0x80, 0xff, 0x01, 0x0a][rng.below(4)]),
        }
        if bytes.is_empty() {
            break;
        }
    }
    Some(bytes)
}

#[test]
fn accepts_and_refuses_corrupted_responses_exactly_as_prost_does() {
    let mut rng = Rng(5);
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..3000 {
        let Some(bytes) = corrupted(&mut rng) else {
            continue;
        };
        let split = rng.below(bytes.len() as u64 + 1);
        match both(&bytes, split) {
            (Ok(g), Ok(o)) => {
                assert_eq!(o, g);
                ok += 1;
            }
            (Err(_), Err(_)) => refused += 1,
            (g, o) => panic!("prost {g:?}, ours {o:?} for {bytes:?}"),
        }
    }
    assert!(
        ok > 100 && refused > 100,
        "{ok} accepted, {refused} refused"
    );
}

/// A raw response decoded, then its columns: what prost decodes, for the same bytes.
fn raw_then_columns(bytes: &[u8], split: usize) -> Result<GetOnlineFeaturesResponse, DecodeError> {
    let (a, b) = bytes.split_at(split.min(bytes.len()));
    RawLookupResponse::decode(a.chain(b))?.into_response()
}

#[test]
fn a_raw_response_keeps_the_received_bytes_and_decodes_as_prost_does() {
    let mut rng = Rng(13);
    let mut columns = 0;
    for _ in 0..400 {
        let resp = response(&mut rng);
        let bytes = bytes::Bytes::from(resp.encode_to_vec());
        let raw = RawLookupResponse::decode(bytes.clone()).expect("decodes");
        columns += raw.packed_columns.len();
        assert!(raw.head.packed_columns.is_empty());
        // Each column is a slice of the received buffer, not a copy.
        let whole = bytes.as_ptr_range();
        for c in &raw.packed_columns {
            let r = c.as_ptr_range();
            assert!(c.is_empty() || (whole.start <= r.start && r.end <= whole.end));
        }
        // It encodes as the response (fields in another order) and decodes to it.
        assert_eq!(raw.encoded_len(), bytes.len());
        let again = GetOnlineFeaturesResponse::decode(&raw.encode_to_vec()[..]).expect("decodes");
        assert_eq!(again, resp);
        for i in 0..raw.packed_columns.len() {
            assert_eq!(
                raw.decode_column(i).expect("decodes"),
                resp.packed_columns[i]
            );
        }
        assert_eq!(raw.into_response().expect("decodes"), resp);
        // From a non-contiguous buffer (the columns are then copied).
        let split = rng.below(bytes.len() as u64 + 1);
        assert_eq!(raw_then_columns(&bytes, split).expect("decodes"), resp);
    }
    assert!(columns > 500, "only {columns} columns generated");
}

#[test]
fn a_raw_response_and_its_columns_refuse_what_prost_refuses() {
    let mut rng = Rng(19);
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..3000 {
        let Some(bytes) = corrupted(&mut rng) else {
            continue;
        };
        let split = rng.below(bytes.len() as u64 + 1);
        match (
            GetOnlineFeaturesResponse::decode(&bytes[..]),
            raw_then_columns(&bytes, split),
        ) {
            (Ok(g), Ok(o)) => {
                assert_eq!(o, g);
                ok += 1;
            }
            (Err(_), Err(_)) => refused += 1,
            (g, o) => panic!("prost {g:?}, raw {o:?} for {bytes:?}"),
        }
    }
    assert!(
        ok > 100 && refused > 100,
        "{ok} accepted, {refused} refused"
    );
}
