use super::*;
use crate::test_rng::Rng;

pub(super) const TYPES: [FeatureType; 9] = [
    FeatureType::Bool,
    FeatureType::Int64,
    FeatureType::Float64,
    FeatureType::String,
    FeatureType::Bytes,
    FeatureType::Float32Vector,
    FeatureType::Int64List,
    FeatureType::Float64List,
    FeatureType::StringList,
];

fn random_kind(rng: &mut Rng, ty: FeatureType, dim: Option<usize>) -> Kind {
    let len = |rng: &mut Rng| [0, 1, 3, 9][rng.below(4)];
    let text = |rng: &mut Rng| -> String {
        (0..rng.below(12))
            .map(|_| ['a', 'é', '日', '🦀', '"'][rng.below(5)])
            .collect()
    };
    match ty {
        FeatureType::Bool => Kind::BoolValue(rng.next() & 1 == 1),
        FeatureType::Int64 => Kind::Int64Value(rng.next() as i64),
        FeatureType::Float64 => Kind::Float64Value(f64::from_bits(rng.next())),
        FeatureType::String => Kind::StringValue(text(rng)),
        FeatureType::Bytes => Kind::BytesValue((0..len(rng)).map(|_| rng.next() as u8).collect()),
        FeatureType::Float32Vector => {
            let n = dim.unwrap_or_else(|| len(rng));
            Kind::Float32Vector(FloatVector {
                values: (0..n).map(|_| f32::from_bits(rng.next() as u32)).collect(),
            })
        }
        FeatureType::Int64List => Kind::Int64List(Int64List {
            values: (0..len(rng)).map(|_| rng.next() as i64).collect(),
        }),
        FeatureType::Float64List => Kind::Float64List(DoubleList {
            values: (0..len(rng)).map(|_| f64::from_bits(rng.next())).collect(),
        }),
        FeatureType::StringList => Kind::StringList(StringList {
            values: (0..len(rng)).map(|_| text(rng)).collect(),
        }),
        FeatureType::Unspecified => unreachable!(),
    }
}

/// Bit-exact equality (NaN payloads and signed zeros included).
fn same(a: &Kind, b: &Kind) -> bool {
    match (a, b) {
        (Kind::Float64Value(x), Kind::Float64Value(y)) => x.to_bits() == y.to_bits(),
        (Kind::Float32Vector(x), Kind::Float32Vector(y)) => {
            x.values.len() == y.values.len()
                && x.values
                    .iter()
                    .zip(&y.values)
                    .all(|(p, q)| p.to_bits() == q.to_bits())
        }
        (Kind::Float64List(x), Kind::Float64List(y)) => {
            x.values.len() == y.values.len()
                && x.values
                    .iter()
                    .zip(&y.values)
                    .all(|(p, q)| p.to_bits() == q.to_bits())
        }
        _ => a == b,
    }
}

/// A row of the oracle: status, value, event time.
pub(super) type Cell = (FeatureStatus, Option<Kind>, i64);

pub(super) fn random_cells(
    rng: &mut Rng,
    ty: FeatureType,
    rows: usize,
    dim: Option<usize>,
) -> Vec<Cell> {
    (0..rows)
        .map(|r| {
            let t = 1_000 + r as i64;
            match rng.below(6) {
                0 => (FeatureStatus::NotFound, None, 0),
                1 => (FeatureStatus::Expired, None, t),
                2 => (FeatureStatus::Present, None, t),
                _ => (FeatureStatus::Present, Some(random_kind(rng, ty, dim)), t),
            }
        })
        .collect()
}

pub(super) fn build(ty: FeatureType, cells: &[Cell], event_times: bool) -> PackedColumn {
    let mut b = ColumnBuilder::new("v:f".into(), ty, cells.len(), event_times);
    for (status, value, t) in cells {
        match status {
            FeatureStatus::Present => b.push_kind(value.as_ref(), *t),
            other => b.push_missing(*other, *t),
        }
    }
    b.finish()
}

fn check(col: &PackedColumn, cells: &[Cell], event_times: bool) {
    col.validate(cells.len()).unwrap();
    for (r, (status, value, t)) in cells.iter().enumerate() {
        assert_eq!(col.status_at(r), *status, "row {r}");
        let got = col.value(r).map(|v| v.to_kind());
        match (value, &got) {
            (Some(w), Some(g)) => assert!(same(w, g), "row {r}: {w:?} != {g:?}"),
            (None, None) => {}
            _ => panic!("row {r}: wrote {value:?}, read {got:?}"),
        }
        assert_eq!(
            col.is_null(r),
            *status == FeatureStatus::Present && value.is_none()
        );
        assert_eq!(col.event_time_at(r), if event_times { *t } else { 0 });
    }
}

#[test]
fn every_type_round_trips_through_a_packed_column_and_its_wire_form() {
    use prost::Message as _;
    let mut rng = Rng(17);
    for ty in TYPES {
        for rows in [0, 1, 2, 7, 64] {
            for event_times in [false, true] {
                let dim = (ty == FeatureType::Float32Vector && rng.below(2) == 0).then_some(8);
                let cells = random_cells(&mut rng, ty, rows, dim);
                let col = build(ty, &cells, event_times);
                check(&col, &cells, event_times);
                let wire = PackedColumn::decode(col.encode_to_vec().as_slice()).unwrap();
                check(&wire, &cells, event_times);
                // The CELLS form says the same.
                let cells_form = col.to_cells();
                for (r, v) in cells_form.values.iter().enumerate() {
                    match (&v.kind, col.value(r).map(|x| x.to_kind())) {
                        (Some(a), Some(b)) => assert!(same(a, &b), "row {r}"),
                        (None, None) => {}
                        other => panic!("row {r}: {other:?}"),
                    }
                }
            }
        }
    }
}

#[test]
fn vectors_of_one_length_form_a_matrix() {
    let cells: Vec<Cell> = vec![
        (
            FeatureStatus::Present,
            Some(Kind::Float32Vector(FloatVector {
                values: vec![1.0, 2.0],
            })),
            1,
        ),
        (FeatureStatus::NotFound, None, 0),
        (
            FeatureStatus::Present,
            Some(Kind::Float32Vector(FloatVector {
                values: vec![3.0, 4.0],
            })),
            1,
        ),
    ];
    let col = build(FeatureType::Float32Vector, &cells, false);
    assert_eq!(col.dimension, 2);
    assert_eq!(col.float32s, [1.0, 2.0, 0.0, 0.0, 3.0, 4.0]);
    assert!(col.list_offsets.is_empty());
    check(&col, &cells, false);
}

#[test]
fn merging_rows_of_several_columns_keeps_every_value() {
    let mut rng = Rng(5);
    for ty in TYPES {
        let a = random_cells(&mut rng, ty, 10, None);
        let b = random_cells(&mut rng, ty, 7, None);
        let (ca, cb) = (build(ty, &a, true), build(ty, &b, true));
        // Interleave: the client's request order across two nodes' answers.
        let order: Vec<(usize, usize)> = (0..17)
            .map(|i| {
                if i % 2 == 0 && i / 2 < 10 {
                    (0, i / 2)
                } else {
                    (1, (i / 2).min(6))
                }
            })
            .collect();
        let mut m = ColumnBuilder::new("v:f".into(), ty, order.len(), true);
        let mut want = Vec::new();
        for (part, row) in &order {
            let (col, cells) = if *part == 0 { (&ca, &a) } else { (&cb, &b) };
            m.push_row_of(col, *row);
            want.push(cells[*row].clone());
        }
        check(&m.finish(), &want, true);
    }
}

#[test]
fn inconsistent_columns_are_refused_not_indexed() {
    let cells = vec![(
        FeatureStatus::Present,
        Some(Kind::StringValue("ab".into())),
        1,
    )];
    let good = build(FeatureType::String, &cells, false);
    good.validate(1).unwrap();
    let mut c = good.clone();
    c.offsets = vec![0, 9];
    assert!(c.validate(1).is_err());
    let mut c = good.clone();
    c.blob = vec![0xff, 0xfe].into();
    assert!(c.validate(1).unwrap_err().problem.contains("UTF-8"));
    assert!(good.validate(2).is_err());
    let mut c = good.clone();
    c.r#type = FeatureType::Float64 as i32;
    assert!(c.validate(1).is_err());
    let mut c = good;
    c.null_rows = vec![3];
    assert!(c.validate(1).is_err());
    // Reading a broken column never panics.
    let broken = PackedColumn {
        r#type: FeatureType::Int64List as i32,
        statuses: vec![1],
        list_offsets: vec![0, 99],
        ..Default::default()
    };
    assert!(broken.value(0).is_none());
}

/// The row-by-row merge `gather` replaces for the fixed-width types.
fn merge_row_by_row(parts: &[&PackedColumn], rows: &[(u32, u32)]) -> PackedColumn {
    let first = parts[0];
    let mut b = ColumnBuilder::new(
        first.name.clone(),
        first.feature_type(),
        rows.len(),
        !first.event_times_micros.is_empty(),
    );
    for &(p, r) in rows {
        b.push_row_of(parts[p as usize], r as usize);
    }
    b.finish()
}

/// Bit-exact column equality (NaNs compare by their bits).
pub(super) fn same_column(a: &PackedColumn, b: &PackedColumn) -> bool {
    use prost::Message as _;
    a.encode_to_vec() == b.encode_to_vec()
}

#[test]
fn gather_equals_the_row_by_row_merge() {
    let mut rng = Rng(23);
    let mut fast = 0;
    for round in 0..600 {
        let ty = TYPES[rng.below(TYPES.len() as u64)];
        let dim = (ty == FeatureType::Float32Vector && rng.below(3) > 0).then_some(4);
        let event_times = rng.below(2) == 0;
        let parts: Vec<PackedColumn> = (0..1 + rng.below(4))
            .map(|_| {
                let rows = [0, 1, 3, 40][rng.below(4)];
                // A part without event times, or of another type or dimension, now and then.
                let (pty, pdim) = match rng.below(12) {
                    0 => (TYPES[rng.below(TYPES.len() as u64)], dim),
                    1 if dim.is_some() => (ty, Some(5)),
                    _ => (ty, dim),
                };
                let mut col = build(pty, &random_cells(&mut rng, pty, rows, pdim), event_times);
                // Statuses the client does not know are normalised by both paths.
                if rows > 0 && rng.below(8) == 0 {
                    col.statuses[0] = 77;
                }
                col
            })
            .collect();
        let refs: Vec<&PackedColumn> = parts.iter().collect();
        let rows: Vec<(u32, u32)> = (0..rng.below(60))
            .filter_map(|_| {
                let p = rng.below(parts.len() as u64);
                let n = parts[p].row_count() as u64;
                (n > 0).then(|| (p as u32, rng.below(n) as u32))
            })
            .collect();
        let got = gather(&refs, &rows).expect("rows in range");
        let want = merge_row_by_row(&refs, &rows);
        assert!(
            same_column(&got, &want),
            "round {round} ({ty:?}): {got:?} != {want:?}"
        );
        got.validate(rows.len()).unwrap();
        let fixed = matches!(
            ty,
            FeatureType::Bool | FeatureType::Int64 | FeatureType::Float64
        );
        fast += usize::from(fixed || got.dimension > 0);
    }
    assert!(fast > 200, "only {fast} rounds took the typed path");
}

#[test]
fn gather_refuses_rows_outside_their_part() {
    let cells = random_cells(&mut Rng(1), FeatureType::Int64, 3, None);
    let col = build(FeatureType::Int64, &cells, false);
    assert!(gather(&[&col], &[(0, 3)]).is_none());
    assert!(gather(&[&col], &[(1, 0)]).is_none());
    assert!(gather(&[], &[]).is_none());
    assert_eq!(gather(&[&col], &[(0, 2), (0, 0)]).unwrap().row_count(), 2);
}

#[test]
fn an_answer_encodes_as_its_response() {
    use crate::v1::{GetOnlineFeaturesResponse, ShardWatermark, TopicOffset};
    use prost::Message as _;
    let mut rng = Rng(31);
    for round in 0..200 {
        let rows = [0, 1, 3, 50][rng.below(4)];
        let event_times = rng.below(2) == 0;
        let specs: Vec<(FeatureType, Vec<Cell>)> = (0..rng.below(6))
            .map(|_| {
                let ty = TYPES[rng.below(TYPES.len() as u64)];
                let dim = (ty == FeatureType::Float32Vector && rng.below(2) == 0).then_some(3);
                (ty, random_cells(&mut rng, ty, rows, dim))
            })
            .collect();
        let name = |i: usize| format!("v:f{round}_{i}");
        let builders = |named: bool| -> Vec<ColumnBuilder> {
            specs
                .iter()
                .enumerate()
                .map(|(i, (ty, cells))| {
                    let n = if named { name(i) } else { String::new() };
                    let mut b = ColumnBuilder::new(n, *ty, rows, event_times);
                    for (status, value, t) in cells {
                        match status {
                            FeatureStatus::Present => b.push_kind(value.as_ref(), *t),
                            other => b.push_missing(*other, *t),
                        }
                    }
                    b
                })
                .collect()
        };
        let head = GetOnlineFeaturesResponse {
            watermarks: (0..rng.below(3))
                .map(|s| ShardWatermark {
                    shard: s as u32,
                    offsets: (0..rng.below(3))
                        .map(|t| TopicOffset {
                            topic: format!("t{t}"),
                            next_offset: rng.next() as i64 >> 1,
                        })
                        .collect(),
                })
                .collect(),
            row_count: rows as u32,
            view_versions: (0..rng.below(3)).map(|_| rng.below(5) as u32).collect(),
            registry_revision: rng.below(3) as u64,
            ..Default::default()
        };
        let want = GetOnlineFeaturesResponse {
            packed_columns: builders(true)
                .into_iter()
                .map(ColumnBuilder::finish)
                .collect(),
            ..head.clone()
        };
        // Names in the builders, or unnamed builders named from one shared list (as a
        // node answers): the same bytes, and the same finished response.
        let names: std::sync::Arc<[String]> = (0..specs.len()).map(name).collect();
        // Some watermarks encoded ahead (as a node reports its replicas'), the rest in
        // the head.
        let ahead = rng.below(head.watermarks.len() as u64 + 1);
        let mut split = head.clone();
        let encoded = split
            .watermarks
            .split_off(head.watermarks.len() - ahead)
            .iter()
            .map(|w| crate::packed::EncodedWatermark {
                shard: w.shard,
                offsets: crate::packed::EncodedWatermark::offsets_field(
                    w.offsets.iter().map(|o| (o.topic.as_str(), o.next_offset)),
                ),
            })
            .collect();
        for answer in [
            PackedAnswer::new(head.clone(), builders(true)),
            PackedAnswer::named(head.clone(), builders(false), names.clone()),
            PackedAnswer::named(split, builders(false), names).with_watermarks(encoded),
        ] {
            let bytes = answer.encode_to_vec();
            assert_eq!(answer.encoded_len(), bytes.len(), "round {round}");
            assert_eq!(bytes, want.encode_to_vec(), "round {round}");
            assert!(
                same_column_set(&answer.into_response(), &want),
                "round {round}"
            );
        }
    }
}

fn same_column_set(
    a: &crate::v1::GetOnlineFeaturesResponse,
    b: &crate::v1::GetOnlineFeaturesResponse,
) -> bool {
    use prost::Message as _;
    a.encode_to_vec() == b.encode_to_vec()
}
