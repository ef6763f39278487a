use super::*;

fn round_trip(kind: AccKind, acc: &Acc<'_>) {
    let mut buf = Vec::new();
    acc.put(&mut buf);
    let back = kind.read(&mut Cursor { buf: &buf }).unwrap();
    assert_eq!(&back, acc);
}

#[test]
fn every_state_round_trips_and_merges_like_one_state() {
    use FeatureType as T;
    let kinds = [
        (AccKind::Count, T::Int64),
        (AccKind::SumI, T::Int64),
        (AccKind::SumF, T::Float64),
        (AccKind::MinI, T::Int64),
        (AccKind::MaxI, T::Int64),
        (AccKind::MinF, T::Float64),
        (AccKind::MaxF, T::Float64),
        (AccKind::Moments, T::Float64),
        (AccKind::Last(T::String), T::String),
        (AccKind::LastN(T::Int64, 3), T::Int64),
    ];
    for (kind, ty) in kinds {
        let value = |i: i64| match ty {
            T::Int64 => Scalar::Int(i * 7 - 20),
            T::Float64 => Scalar::Float(i as f64 * 0.5 - 3.0),
            _ => Scalar::Bytes(format!("v{i}").into_bytes().into()),
        };
        // Two "tiles" of events, and one state with all of them.
        let (mut a, mut b, mut whole) = (kind.empty(), kind.empty(), kind.empty());
        for i in 0..10 {
            let v = value(i);
            let tile = if i < 4 { &mut a } else { &mut b };
            tile.add(Some(&v), i, 3);
            whole.add(Some(&v), i, 3);
        }
        round_trip(kind, &a);
        round_trip(kind, &b);
        round_trip(kind, &kind.empty());
        let mut running = kind.running();
        let mut buf = Vec::new();
        a.put(&mut buf);
        b.put(&mut buf);
        let mut c = Cursor { buf: &buf };
        kind.merge(&mut c, &mut running).unwrap();
        kind.merge(&mut c, &mut running).unwrap();
        match (&running, &whole) {
            (Acc::Moments(n1, m1, v1), Acc::Moments(n2, m2, v2)) => {
                assert_eq!(n1, n2);
                assert!(
                    (m1 - m2).abs() < 1e-12 && (v1 - v2).abs() < 1e-9,
                    "{kind:?}"
                );
            }
            _ => assert_eq!(running, whole, "{kind:?}"),
        }
    }
}

#[test]
fn last_n_keeps_the_newest_by_event_time_then_log_order() {
    let mut acc = AccKind::LastN(FeatureType::Int64, 3).empty();
    for (t, v) in [(5, 1), (3, 2), (5, 3), (9, 4), (1, 5)] {
        acc.add(Some(&Scalar::Int(v)), t, 3);
    }
    let Acc::LastN(n, items) = acc else { panic!() };
    assert_eq!(n, 5);
    let got: Vec<_> = items.iter().map(|(t, v)| (*t, v.clone())).collect();
    assert_eq!(
        got,
        vec![
            (5, Scalar::Int(1)),
            (5, Scalar::Int(3)),
            (9, Scalar::Int(4))
        ]
    );
}

#[test]
fn nulls_and_nan_are_not_counted_by_min_and_max() {
    let mut min = AccKind::MinF.empty();
    min.add(Some(&Scalar::Float(f64::NAN)), 0, 0);
    min.add(None, 0, 0);
    assert_eq!(min.n(), 0);
    min.add(Some(&Scalar::Float(2.0)), 0, 0);
    assert_eq!(min, Acc::MinF(1, 2.0));
}

#[test]
fn corrupt_states_are_errors() {
    let mut c = Cursor { buf: &[5] };
    assert!(AccKind::SumI.read(&mut c).is_err());
    let mut c = Cursor { buf: &[1, 200] };
    assert!(AccKind::LastN(FeatureType::Int64, 3).read(&mut c).is_err());
}

#[test]
fn fixed_width_states_round_trip_and_merge_like_one_state() {
    use FeatureType as T;
    let kinds = [
        (AccKind::Count, T::Int64),
        (AccKind::SumI, T::Int64),
        (AccKind::SumF, T::Float64),
        (AccKind::MinI, T::Int64),
        (AccKind::MaxF, T::Float64),
        (AccKind::Moments, T::Float64),
        (AccKind::Last(T::Int64), T::Int64),
        (AccKind::Last(T::Bool), T::Bool),
    ];
    for (kind, ty) in kinds {
        let w = kind.fixed_width().expect("fixed");
        let value = |i: i64| match ty {
            T::Int64 => Scalar::Int(i * 3 - 7),
            T::Bool => Scalar::Bool(i % 3 == 0),
            _ => Scalar::Float(i as f64 * 1.5 - 4.0),
        };
        let (mut a, mut b, mut whole) = (kind.empty(), kind.empty(), kind.empty());
        for i in 0..9 {
            let tile = if i < 5 { &mut a } else { &mut b };
            tile.add(Some(&value(i)), i, 0);
            whole.add(Some(&value(i)), i, 0);
        }
        // An empty tile between them: all-zero words are the empty state.
        let mut entries = vec![0u8; 3 * w];
        a.write_fixed(&mut entries[..w]);
        b.write_fixed(&mut entries[2 * w..]);
        assert_eq!(kind.read_fixed(&entries[..w]), a, "{kind:?}");
        assert_eq!(
            kind.read_fixed(&entries[w..2 * w]),
            kind.empty(),
            "{kind:?}"
        );
        let mut running = kind.running();
        kind.merge_fixed(&entries, &mut running);
        match (&running, &whole) {
            (Acc::Moments(n1, m1, v1), Acc::Moments(n2, m2, v2)) => {
                assert_eq!(n1, n2);
                assert!((m1 - m2).abs() < 1e-12 && (v1 - v2).abs() < 1e-9);
            }
            _ => assert_eq!(running, whole, "{kind:?}"),
        }
    }
    assert_eq!(AccKind::Distinct.fixed_width(), None);
    assert_eq!(AccKind::Last(T::String).fixed_width(), None);
}
