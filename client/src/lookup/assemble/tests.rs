//! `LookupResult::assemble` against an oracle: every cell of the result is the cell of the
//! decoded sub-response its row maps to.

use prost::Message as _;
use prost::bytes::Bytes;
use quiver_proto::v1::{FloatVector, StringList, Value};

use super::*;
use crate::router::Rng;

const TYPES: [FeatureType; 6] = [
    FeatureType::Bool,
    FeatureType::Int64,
    FeatureType::Float64,
    FeatureType::Float32Vector,
    FeatureType::String,
    FeatureType::StringList,
];

fn random_kind(rng: &Rng, ty: FeatureType, dim: usize) -> Kind {
    match ty {
        FeatureType::Bool => Kind::BoolValue(rng.next() & 1 == 1),
        FeatureType::Int64 => Kind::Int64Value(rng.next() as i64),
        FeatureType::Float64 => Kind::Float64Value(f64::from_bits(rng.next())),
        FeatureType::Float32Vector => Kind::Float32Vector(FloatVector {
            values: (0..dim)
                .map(|_| f32::from_bits(rng.next() as u32))
                .collect(),
        }),
        FeatureType::String => Kind::StringValue("é".repeat(rng.below(4))),
        _ => Kind::StringList(StringList {
            values: (0..rng.below(3)).map(|i| format!("s{i}")).collect(),
        }),
    }
}

/// A column of `rows` random cells: every status, nulls, values.
fn column(rng: &Rng, name: &str, ty: FeatureType, rows: usize, times: bool) -> PackedColumn {
    let mut b = ColumnBuilder::new(name.into(), ty, rows, times);
    for r in 0..rows {
        let t = 1_000 + r as i64;
        match rng.below(6) {
            0 => b.push_missing(FeatureStatus::NotFound, 0),
            1 => b.push_missing(FeatureStatus::Expired, t),
            2 => b.push_kind(None, t),
            _ => b.push_kind(Some(&random_kind(rng, ty, 3)), t),
        }
    }
    b.finish()
}

/// A sub-response as the client receives it.
fn raw(resp: &GetOnlineFeaturesResponse) -> RawLookupResponse {
    RawLookupResponse::decode(Bytes::from(resp.encode_to_vec())).expect("decodes")
}

/// A value's bits (NaN payloads and signed zeros included).
fn bits(k: Option<Kind>) -> Vec<u8> {
    Value { kind: k }.encode_to_vec()
}

/// Asserts that `got` holds, row by row, the cells of `parts` that `rows` names.
fn check(got: &LookupResult, parts: &[GetOnlineFeaturesResponse], rows: &[(u32, u32)]) {
    assert_eq!(got.row_count(), rows.len());
    assert_eq!(got.column_count(), parts[0].packed_columns.len());
    for c in 0..got.column_count() {
        let col = got.column(c).expect("a column");
        let times = !parts[0].packed_columns[c].event_times_micros.is_empty();
        assert_eq!(col.name, parts[0].packed_columns[c].name);
        for (i, &(p, r)) in rows.iter().enumerate() {
            let want = &parts[p as usize].packed_columns[c];
            let r = r as usize;
            assert_eq!(got.status(i, c), want.status_at(r), "column {c} row {i}");
            assert_eq!(
                bits(got.value(i, c).map(|v| v.to_kind())),
                bits(want.value(r).map(|v| v.to_kind())),
                "column {c} row {i}"
            );
            assert_eq!(col.is_null(i), want.is_null(r), "column {c} row {i}");
            let t = if times { want.event_time_at(r) } else { 0 };
            assert_eq!(got.event_time_micros(i, c), t, "column {c} row {i}");
        }
    }
}

#[test]
fn merging_in_place_equals_the_cells_of_the_decoded_answers() {
    let rng = Rng::new(41);
    for round in 0..300 {
        let types: Vec<FeatureType> = (0..1 + rng.below(6))
            .map(|_| TYPES[rng.below(TYPES.len())])
            .collect();
        let times = rng.below(2) == 0;
        let parts: Vec<GetOnlineFeaturesResponse> = (0..1 + rng.below(3))
            .map(|p| {
                let n = [0, 1, 5, 30][rng.below(4)];
                GetOnlineFeaturesResponse {
                    packed_columns: types
                        .iter()
                        .enumerate()
                        .map(|(c, ty)| column(&rng, &format!("v:f{c}"), *ty, n, times))
                        .collect(),
                    row_count: n as u32,
                    view_versions: vec![3],
                    registry_revision: p as u64,
                    ..Default::default()
                }
            })
            .collect();
        // Request rows in any order, duplicates included; sometimes one part in order.
        let rows: Vec<(u32, u32)> = if parts.len() == 1 && rng.below(3) == 0 {
            (0..parts[0].row_count).map(|r| (0, r)).collect()
        } else {
            (0..rng.below(50))
                .filter_map(|_| {
                    let p = rng.below(parts.len());
                    let n = parts[p].row_count as usize;
                    (n > 0).then(|| (p as u32, rng.below(n) as u32))
                })
                .collect()
        };
        let got = LookupResult::assemble(parts.iter().map(raw).collect(), rows.clone())
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        check(&got, &parts, &rows);
        assert_eq!(got.view_versions(), [3]);
    }
}

#[test]
fn legal_encodings_the_view_leaves_to_the_decoder_merge_the_same() {
    let rng = Rng::new(43);
    let part = |n: usize| GetOnlineFeaturesResponse {
        packed_columns: vec![
            column(&rng, "v:a", FeatureType::Float64, n, true),
            column(&rng, "v:b", FeatureType::Int64, n, true),
        ],
        row_count: n as u32,
        ..Default::default()
    };
    let parts = vec![part(4), part(3)];
    let mut raws: Vec<RawLookupResponse> = parts.iter().map(raw).collect();
    // Column a of part 1: its statuses in two pieces (a repeated field may repeat).
    let col = &parts[1].packed_columns[0];
    let mut split = PackedColumn {
        statuses: col.statuses[..1].to_vec(),
        ..col.clone()
    }
    .encode_to_vec();
    split.extend(
        PackedColumn {
            statuses: col.statuses[1..].to_vec(),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    raws[1].packed_columns[0] = Bytes::from(split);
    let rows = vec![(1, 2), (0, 0), (1, 0), (0, 3), (1, 1), (0, 1)];
    let got = LookupResult::assemble(raws, rows.clone()).expect("legal protobuf");
    check(&got, &parts, &rows);
}

#[test]
fn inconsistent_answers_are_refused_naming_what_is_wrong() {
    let rng = Rng::new(47);
    let part = |n: usize| GetOnlineFeaturesResponse {
        packed_columns: vec![
            column(&rng, "v:a", FeatureType::Float64, n, false),
            column(&rng, "v:b", FeatureType::String, n, false),
        ],
        row_count: n as u32,
        ..Default::default()
    };
    let rows = vec![(0, 0), (1, 0)];
    let refused = |raws: Vec<RawLookupResponse>, rows: Vec<(u32, u32)>| {
        let e = LookupResult::assemble(raws, rows).expect_err("inconsistent");
        let ClientError::Rpc(s) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(s.code(), tonic::Code::DataLoss, "{e}");
        s.message().to_owned()
    };
    // A value missing from a fixed-width column: the decoder's check names the column.
    let mut short = part(2);
    short.packed_columns[0].float64s.pop();
    let m = refused(vec![raw(&part(2)), raw(&short)], rows.clone());
    assert!(m.contains("v:a"), "{m}");
    // A string column whose offsets run past its blob.
    let mut bad = part(2);
    bad.packed_columns[1].offsets = vec![0, 50, 60];
    let m = refused(vec![raw(&part(2)), raw(&bad)], rows.clone());
    assert!(m.contains("v:b"), "{m}");
    // Bytes that are not a column at all.
    let mut garbage = raw(&part(2));
    garbage.packed_columns[0] = Bytes::from_static(&[0x0a, 0x7f]);
    refused(vec![raw(&part(2)), garbage], rows.clone());
    // Parts with different columns, and rows outside their part.
    let mut fewer = part(2);
    fewer.packed_columns.pop();
    let m = refused(vec![raw(&part(2)), raw(&fewer)], rows.clone());
    assert!(m.contains("column counts"), "{m}");
    let m = refused(vec![raw(&part(2)), raw(&part(2))], vec![(0, 2)]);
    assert!(m.contains("outside"), "{m}");
    let m = refused(vec![raw(&part(2)), raw(&part(2))], vec![(2, 0)]);
    assert!(m.contains("no sub-response"), "{m}");
}

#[test]
fn answers_in_the_cells_encoding_are_merged_too() {
    let rng = Rng::new(53);
    let parts: Vec<GetOnlineFeaturesResponse> = [3, 2]
        .iter()
        .map(|&n| GetOnlineFeaturesResponse {
            packed_columns: vec![column(&rng, "v:a", FeatureType::Float64, n, true)],
            row_count: n as u32,
            ..Default::default()
        })
        .collect();
    // The same answers as an older node sends them: a `Value` per cell.
    let cells: Vec<RawLookupResponse> = parts
        .iter()
        .map(|p| {
            raw(&GetOnlineFeaturesResponse {
                columns: p
                    .packed_columns
                    .iter()
                    .map(PackedColumn::to_cells)
                    .collect(),
                ..Default::default()
            })
        })
        .collect();
    let rows = vec![(1, 1), (0, 2), (0, 0), (1, 0)];
    let got = LookupResult::assemble(cells, rows.clone()).expect("merged");
    check(&got, &parts, &rows);
}
