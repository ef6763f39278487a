use super::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }
}

const TYPES: [FeatureType; 9] = [
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
type Cell = (FeatureStatus, Option<Kind>, i64);

fn random_cells(rng: &mut Rng, ty: FeatureType, rows: usize, dim: Option<usize>) -> Vec<Cell> {
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

fn build(ty: FeatureType, cells: &[Cell], event_times: bool) -> PackedColumn {
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
