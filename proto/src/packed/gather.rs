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
    let n = rows.len();
    let d = first.dimension as usize;
    match ty {
        FeatureType::Bool => out.bools.reserve_exact(n),
        FeatureType::Int64 => out.int64s.reserve_exact(n),
        FeatureType::Float64 => out.float64s.reserve_exact(n),
        _ => {
            out.dimension = first.dimension;
            out.float32s = vec![0.0; n * d];
        }
    }
    if event_times {
        out.event_times_micros.reserve_exact(n);
    }
    for (i, &(p, r)) in rows.iter().enumerate() {
        let (c, r) = (parts[p as usize], r as usize);
        let status = c.status_at(r);
        out.statuses.push(status as i32);
        let null = status == FeatureStatus::Present && c.is_null(r);
        if null {
            out.null_rows.push(i as u32);
        }
        if event_times {
            out.event_times_micros.push(c.event_time_at(r));
        }
        // A row without a value (missing, or null) is zero, as the builder pads it.
        let has = status == FeatureStatus::Present && !null;
        match ty {
            FeatureType::Bool => out.bools.push(has && c.bools[r]),
            FeatureType::Int64 => out.int64s.push(if has { c.int64s[r] } else { 0 }),
            FeatureType::Float64 => out.float64s.push(if has { c.float64s[r] } else { 0.0 }),
            _ if has => {
                out.float32s[i * d..(i + 1) * d].copy_from_slice(&c.float32s[r * d..(r + 1) * d])
            }
            _ => {}
        }
    }
    Some(out)
}

/// Whether row `r` of `c` is PRESENT with a value (not null).
fn has_value(c: &PackedColumn, r: u32) -> bool {
    c.status_at(r as usize) == FeatureStatus::Present && !c.is_null(r as usize)
}
