//! [`gather`]: one column assembled from the same column of several sub-responses, as
//! the client merges the answers of the nodes it fanned a lookup out to.
//!
//! Row by row through [`ColumnBuilder::push_row_of`] a cell costs a status conversion,
//! a null search, two matches on the type and a push per array. For the fixed-width
//! types (bool, int64, float64, and float32 vectors that every part lays out as a matrix
//! of one dimension) a row is instead a copy of its status, its value and its event
//! time into arrays sized once. Other types, and parts whose types or dimensions
//! differ, take the row-by-row path. Both paths give the same column
//! (`tests::gather_equals_the_row_by_row_merge`).

use super::ColumnBuilder;
use crate::v1::{FeatureStatus, FeatureType, PackedColumn};

/// Column `i` of the result is row `rows[i].1` of `parts[rows[i].0]`. The column takes
/// the first part's name and type; a cell of a part whose column has another type is
/// null, and event times are kept if the first part has them. `None` if `parts` is empty
/// or a row points outside its part.
///
/// Each part must be validated ([`PackedColumn::validate`]) for its row count.
pub fn gather(parts: &[&PackedColumn], rows: &[(u32, u32)]) -> Option<PackedColumn> {
    let first = *parts.first()?;
    let in_range = rows.iter().all(|&(p, r)| {
        parts
            .get(p as usize)
            .is_some_and(|c| (r as usize) < c.row_count())
    });
    if !in_range {
        return None;
    }
    let ty = first.feature_type();
    let event_times = !first.event_times_micros.is_empty();
    let same_type = parts.iter().all(|c| c.r#type == first.r#type);
    let fast = same_type
        && match ty {
            FeatureType::Bool | FeatureType::Int64 | FeatureType::Float64 => true,
            FeatureType::Float32Vector => {
                first.dimension > 0
                    && parts.iter().all(|c| c.dimension == first.dimension)
                    && rows.iter().any(|&(p, r)| has_value(parts[p as usize], r))
            }
            _ => false,
        };
    if !fast {
        let mut b = ColumnBuilder::new(first.name.clone(), ty, rows.len(), event_times);
        for &(p, r) in rows {
            b.push_row_of(parts[p as usize], r as usize);
        }
        return Some(b.finish());
    }
    let mut out = PackedColumn {
        name: first.name.clone(),
        r#type: first.r#type,
        statuses: Vec::with_capacity(rows.len()),
        ..Default::default()
    };
    if event_times {
        out.event_times_micros = rows
            .iter()
            .map(|&(p, r)| parts[p as usize].event_time_at(r as usize))
            .collect();
    }
    for (i, &(p, r)) in rows.iter().enumerate() {
        let c = parts[p as usize];
        let status = c.status_at(r as usize);
        out.statuses.push(status as i32);
        if status == FeatureStatus::Present && c.is_null(r as usize) {
            out.null_rows.push(i as u32);
        }
    }
    // A row without a value (missing, or null) is zero, as the builder pads it.
    let value = |p: u32, r: u32| has_value(parts[p as usize], r).then_some(r as usize);
    match ty {
        FeatureType::Bool => {
            out.bools = rows
                .iter()
                .map(|&(p, r)| value(p, r).is_some_and(|r| parts[p as usize].bools[r]))
                .collect();
        }
        FeatureType::Int64 => {
            out.int64s = rows
                .iter()
                .map(|&(p, r)| value(p, r).map_or(0, |r| parts[p as usize].int64s[r]))
                .collect();
        }
        FeatureType::Float64 => {
            out.float64s = rows
                .iter()
                .map(|&(p, r)| value(p, r).map_or(0.0, |r| parts[p as usize].float64s[r]))
                .collect();
        }
        _ => {
            let d = first.dimension as usize;
            out.dimension = first.dimension;
            out.float32s = vec![0.0; rows.len() * d];
            for (i, &(p, r)) in rows.iter().enumerate() {
                if let Some(r) = value(p, r) {
                    out.float32s[i * d..(i + 1) * d]
                        .copy_from_slice(&parts[p as usize].float32s[r * d..(r + 1) * d]);
                }
            }
        }
    }
    Some(out)
}

/// Whether row `r` of `c` is PRESENT with a value (not null).
fn has_value(c: &PackedColumn, r: u32) -> bool {
    c.status_at(r as usize) == FeatureStatus::Present && !c.is_null(r as usize)
}
