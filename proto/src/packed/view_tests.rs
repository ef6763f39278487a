//! [`ColumnView`] and [`gather_views`] against the decoded columns and [`gather`].

use prost::Message as _;

use super::tests::{Cell, TYPES, build, random_cells, same_column};
use super::*;
use crate::test_rng::Rng;
use crate::v1::{FeatureStatus, FeatureType, PackedColumn};

/// Whether [`gather`] merges `col` on its typed path (so a view must take it).
fn fixed_width(col: &PackedColumn) -> bool {
    match col.feature_type() {
        FeatureType::Bool | FeatureType::Int64 | FeatureType::Float64 => true,
        FeatureType::Float32Vector => col.dimension > 0,
        _ => false,
    }
}

#[test]
fn gather_views_equals_gather_of_the_decoded_columns() {
    let mut rng = Rng(29);
    let (mut in_place, mut declined) = (0, 0);
    for round in 0..800 {
        let ty = TYPES[rng.below(TYPES.len() as u64)];
        let dim = (ty == FeatureType::Float32Vector && rng.below(3) > 0).then_some(4);
        let event_times = rng.below(2) == 0;
        let parts: Vec<PackedColumn> = (0..1 + rng.below(4))
            .map(|_| {
                let rows = [0, 1, 3, 40][rng.below(4)];
                // Now and then a part of another type or dimension, or without event times.
                let (pty, pdim) = match rng.below(12) {
                    0 => (TYPES[rng.below(TYPES.len() as u64)], dim),
                    1 if dim.is_some() => (ty, Some(5)),
                    _ => (ty, dim),
                };
                let times = event_times && rng.below(10) > 0;
                let mut col = build(pty, &random_cells(&mut rng, pty, rows, pdim), times);
                // A status the client does not know is normalised by both paths.
                if rows > 0 && rng.below(8) == 0 {
                    col.statuses[0] = 77;
                }
                col
            })
            .collect();
        let wire: Vec<Vec<u8>> = parts.iter().map(|c| c.encode_to_vec()).collect();
        let views: Vec<Option<ColumnView<'_>>> = wire
            .iter()
            .zip(&parts)
            .map(|(w, c)| ColumnView::parse(w, c.row_count()))
            .collect();
        for (v, c) in views.iter().zip(&parts) {
            assert_eq!(v.is_some(), fixed_width(c), "round {round}: {c:?}");
        }
        let rows: Vec<(u32, u32)> = (0..rng.below(60))
            .filter_map(|_| {
                let p = rng.below(parts.len() as u64);
                let n = parts[p].row_count() as u64;
                (n > 0).then(|| (p as u32, rng.below(n) as u32))
            })
            .collect();
        let Some(views) = views.into_iter().collect::<Option<Vec<_>>>() else {
            continue;
        };
        let refs: Vec<&PackedColumn> = parts.iter().collect();
        let want = gather(&refs, &rows).expect("rows in range");
        match gather_views(&views, &rows) {
            Some(got) => {
                assert!(
                    same_column(&got, &want),
                    "round {round} ({ty:?}): {got:?} != {want:?}"
                );
                in_place += 1;
            }
            None => {
                // Only where gather itself leaves its typed path.
                let mixed = parts
                    .iter()
                    .any(|c| c.r#type != parts[0].r#type || c.dimension != parts[0].dimension);
                let no_vector = ty == FeatureType::Float32Vector
                    && !rows.iter().any(|&(p, r)| {
                        let c = &parts[p as usize];
                        c.status_at(r as usize) == FeatureStatus::Present && !c.is_null(r as usize)
                    });
                assert!(mixed || no_vector, "round {round}: declined {parts:?}");
                declined += 1;
            }
        }
    }
    assert!(
        in_place > 250 && declined > 5,
        "{in_place} merged in place, {declined} declined"
    );
}

#[test]
fn gather_views_refuses_rows_outside_their_part() {
    let cells: Vec<Cell> = random_cells(&mut Rng(1), FeatureType::Int64, 3, None);
    let wire = build(FeatureType::Int64, &cells, false).encode_to_vec();
    let view = ColumnView::parse(&wire, 3).expect("a fixed-width column");
    assert!(gather_views(std::slice::from_ref(&view), &[(0, 3)]).is_none());
    assert!(gather_views(std::slice::from_ref(&view), &[(1, 0)]).is_none());
    assert!(gather_views(&[], &[]).is_none());
    let two = gather_views(std::slice::from_ref(&view), &[(0, 2), (0, 0)]).expect("in range");
    assert_eq!(two.row_count(), 2);
}

/// A float64 column of three rows: present, null, not found; event times.
fn three_rows() -> PackedColumn {
    PackedColumn {
        name: "v:f".into(),
        r#type: FeatureType::Float64 as i32,
        statuses: vec![1, 1, 2],
        null_rows: vec![1],
        float64s: vec![1.5, 0.0, 0.0],
        event_times_micros: vec![10, 11, 0],
        ..Default::default()
    }
}

#[test]
fn a_view_reads_the_column_it_was_sent() {
    let col = three_rows();
    let wire = col.encode_to_vec();
    let view = ColumnView::parse(&wire, 3).expect("a fixed-width column");
    assert_eq!(view.name(), "v:f");
    assert_eq!(view.row_count(), 3);
    let got = gather_views(&[view], &[(0, 0), (0, 1), (0, 2)]).expect("in range");
    assert_eq!(got, col);
    // Fields the view does not read (unknown ones, a blob) are skipped, as prost skips
    // or ignores them for a float64 column.
    let mut more = wire.clone();
    prost::encoding::uint64::encode(20, &7, &mut more);
    prost::encoding::bytes::encode(21, &vec![1u8, 2], &mut more);
    prost::encoding::sfixed64::encode(22, &-1, &mut more);
    prost::encoding::float::encode(23, &1.0, &mut more);
    prost::encoding::bytes::encode(9, &vec![9u8], &mut more);
    assert!(ColumnView::parse(&more, 3).is_some());
}

#[test]
fn columns_a_view_does_not_take_are_left_to_the_decoder() {
    let col = three_rows();
    let wire = col.encode_to_vec();
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    // Legal protobuf the view leaves to prost: a repeated field in two pieces, unpacked.
    let (a, b) = (
        PackedColumn {
            statuses: vec![1],
            ..three_rows()
        },
        PackedColumn {
            statuses: vec![1, 2],
            ..Default::default()
        },
    );
    let mut split = a.encode_to_vec();
    split.extend(b.encode_to_vec());
    assert_eq!(PackedColumn::decode(&split[..]).unwrap(), three_rows());
    cases.push(("statuses in two pieces", split));
    // Two pieces of which the last alone would fit the rows: four statuses in all.
    let mut four = PackedColumn {
        statuses: vec![1],
        ..Default::default()
    }
    .encode_to_vec();
    four.extend(three_rows().encode_to_vec());
    assert_eq!(PackedColumn::decode(&four[..]).unwrap().statuses.len(), 4);
    cases.push(("four statuses in two pieces", four));
    let mut unpacked = PackedColumn {
        statuses: vec![],
        ..three_rows()
    }
    .encode_to_vec();
    prost::encoding::int32::encode_repeated(3, &[1, 1, 2], &mut unpacked);
    cases.push(("unpacked statuses", unpacked));
    let mut unpacked = PackedColumn {
        float64s: vec![],
        ..three_rows()
    }
    .encode_to_vec();
    prost::encoding::double::encode_repeated(7, &[1.5, 0.0, 0.0], &mut unpacked);
    cases.push(("unpacked values", unpacked));
    // Not laid out for three rows, or malformed.
    let with = |f: &dyn Fn(&mut PackedColumn)| {
        let mut c = three_rows();
        f(&mut c);
        c.encode_to_vec()
    };
    cases.push(("a negative status", with(&|c| c.statuses[2] = -1)));
    cases.push(("a status of two bytes", with(&|c| c.statuses[2] = 300)));
    cases.push(("a value short", with(&|c| c.float64s.truncate(2))));
    cases.push((
        "an event time short",
        with(&|c| c.event_times_micros.truncate(2)),
    ));
    cases.push(("null rows descending", with(&|c| c.null_rows = vec![2, 1])));
    cases.push(("a null row past the end", with(&|c| c.null_rows = vec![3])));
    cases.push((
        "a string column",
        with(&|c| c.r#type = FeatureType::String as i32),
    ));
    cases.push(("an unknown type", with(&|c| c.r#type = 42)));
    cases.push((
        "vectors without a dimension",
        with(&|c| {
            c.r#type = FeatureType::Float32Vector as i32;
            c.float64s.clear();
            c.float32s = vec![0.0; 3];
        }),
    ));
    let mut bad_name = wire.clone();
    let at = bad_name.windows(3).position(|w| w == b"v:f").unwrap();
    bad_name[at] = 0xff;
    cases.push(("a name that is not UTF-8", bad_name));
    cases.push(("truncated", wire[..wire.len() - 3].to_vec()));
    for (what, bytes) in &cases {
        assert!(ColumnView::parse(bytes, 3).is_none(), "{what}");
    }
    assert!(ColumnView::parse(&wire, 4).is_none(), "another row count");
    assert!(ColumnView::parse(&wire, 3).is_some());
}
