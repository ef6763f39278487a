//! A view's answer from its stored rows: each row decoded into the response columns
//! ([`fill_row`]), or, for a view of fixed-width features, runs of rows of its
//! [`FixedLayout`] decoded column by column ([`fill_rows`]).

use quiver_proto::ShardId;
use quiver_proto::packed::ColumnBuilder;
use quiver_proto::v1::FeatureStatus;

use super::ExecError;
use crate::serve::ServeError;
use crate::serve::plan::ViewPlan;
use crate::storage::row_codec::{self, FieldRef, FixedLayout, RowFields};

/// Appends a stored field to a column. A stored type that is not the column's (a corrupt
/// row: the registry never retypes a feature within a version) is an error.
fn push_field(b: &mut ColumnBuilder, f: FieldRef<'_>, t: i64) -> bool {
    use quiver_proto::v1::FeatureType as T;
    match (b.feature_type(), f) {
        (_, FieldRef::Null) => b.push_null(t),
        (T::Bool, FieldRef::Bool(v)) => b.push_bool(v, t),
        (T::Int64, FieldRef::Int64(v)) => b.push_i64(v, t),
        (T::Float64, FieldRef::Float64(v)) => b.push_f64(v, t),
        (T::String, FieldRef::Str(v)) => b.push_blob(v.as_bytes(), t),
        (T::Bytes, FieldRef::Bytes(v)) => b.push_blob(v, t),
        (T::Float32Vector, FieldRef::Float32s(raw)) => b.push_f32s(FieldRef::f32s(raw), t),
        (T::Int64List, FieldRef::Int64s(n, raw)) => b.push_i64s(FieldRef::i64s(n, raw), t),
        (T::Float64List, FieldRef::Float64s(raw)) => b.push_f64s(FieldRef::f64s(raw), t),
        (T::StringList, FieldRef::Strs(n, raw)) => b.push_strs(FieldRef::strs(n, raw), t),
        _ => return false,
    }
    true
}

/// Appends view `vp`'s answer for `rows` (each request row's shard and stored row, in
/// request order) to its columns. For a view whose features are all fixed-width
/// ([`FixedLayout`]), consecutive rows of that layout are decoded column by column
/// ([`fill_run`]); every other row by [`fill_row`].
///
/// # Errors
/// The first error of `rows`, or of [`fill_row`].
pub(super) fn fill_rows<'r>(
    vp: &ViewPlan,
    rows: impl ExactSizeIterator<Item = Result<(ShardId, Option<&'r [u8]>), ExecError>>,
    now_micros: i64,
    columns: &mut [ColumnBuilder],
) -> Result<(), ExecError> {
    let Some(layout) = &vp.fixed else {
        for row in rows {
            let (shard, value) = row?;
            fill_row(vp, shard, value, now_micros, columns)?;
        }
        return Ok(());
    };
    // One allocation per view of a lookup: the run's rows and event times.
    let mut run: Vec<(&[u8], i64)> = Vec::with_capacity(rows.len());
    for row in rows {
        let (shard, value) = row?;
        let live = value.and_then(|v| Some((v, layout.header(v)?.event_time_micros)));
        match live {
            Some((v, t)) if !expired(vp, t, now_micros) => {
                run.push((v, t));
            }
            _ => {
                fill_run(vp, layout, &run, columns);
                run.clear();
                fill_row(vp, shard, value, now_micros, columns)?;
            }
        }
    }
    fill_run(vp, layout, &run, columns);
    Ok(())
}

/// Appends `run` (rows [`FixedLayout::header`] accepted, unexpired, with their event
/// times) to the view's columns, column by column: each value read at its offset, each
/// column's builder taken up once per run rather than once per row.
fn fill_run(
    vp: &ViewPlan,
    layout: &FixedLayout,
    run: &[(&[u8], i64)],
    columns: &mut [ColumnBuilder],
) {
    for step in &vp.steps {
        let b = &mut columns[step.column];
        if layout.is_f64(step.feature) {
            for &(row, t) in run {
                b.push_f64(layout.f64(row, step.feature), t);
            }
        } else {
            for &(row, t) in run {
                b.push_bool(layout.bool(row, step.feature), t);
            }
        }
    }
}

/// Whether a row written at `t` is past the view's TTL at `at_micros`.
fn expired(vp: &ViewPlan, t: i64, at_micros: i64) -> bool {
    vp.ttl_micros
        .is_some_and(|ttl| at_micros.saturating_sub(t) > ttl)
}

/// Appends one row's answer for `vp` from its stored row `value` (`None`: no row) to the
/// view's columns, its TTL judged at `at_micros` (now, or the as-of time).
///
/// # Errors
/// [`ServeError::Storage`] for a corrupt row or a stored type that is not the declared
/// one.
pub(in crate::serve) fn fill_row(
    vp: &ViewPlan,
    shard: ShardId,
    value: Option<&[u8]>,
    at_micros: i64,
    columns: &mut [ColumnBuilder],
) -> Result<(), ExecError> {
    let corrupt =
        |e: row_codec::CodecError| ServeError::Storage(format!("shard {shard}: corrupt row: {e}"));
    let missing = |columns: &mut [ColumnBuilder], status, t| {
        vp.columns
            .iter()
            .for_each(|c| columns[*c].push_missing(status, t));
    };
    let Some(bytes) = value else {
        missing(columns, FeatureStatus::NotFound, 0);
        return Ok(());
    };
    let (header, mut fields) = RowFields::open(bytes).map_err(corrupt)?;
    if header.tombstone {
        missing(columns, FeatureStatus::NotFound, 0);
        return Ok(());
    }
    let t = header.event_time_micros;
    if expired(vp, t, at_micros) {
        missing(columns, FeatureStatus::Expired, t);
        return Ok(());
    }
    let mut mismatch = false;
    // The last feature read: a feature named twice has adjacent steps and is read once.
    let mut last: Option<(usize, FieldRef<'_>)> = None;
    for step in &vp.steps {
        let field = match last {
            Some((feature, field)) if feature == step.feature => field,
            _ => {
                let field = fields.read(step.feature).map_err(corrupt)?;
                last = Some((step.feature, field));
                field
            }
        };
        mismatch |= !push_field(&mut columns[step.column], field, t);
    }
    if mismatch {
        return Err(ServeError::Storage(format!(
            "shard {shard}: a stored value of view {} does not have its declared type",
            vp.view.name
        ))
        .into());
    }
    Ok(())
}
