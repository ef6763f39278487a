//! Building a [`LookupResult`] from the nodes' answers: one answer covering every row in
//! order is taken as it is; the answers of a lookup fanned out over several nodes are
//! merged column by column into request order.
//!
//! A fanned-out lookup merges the columns as the nodes sent them
//! ([`RawLookupResponse`], [`ColumnView`]): a fixed-width column is read in place and each
//! value copied once, from the received bytes into the result. A column of another type
//! (strings, bytes, lists), or one the view does not take, is decoded first and merged by
//! [`gather`]; so is every column of a node that answers in the older CELLS encoding.

use quiver_proto::lookup_response::RawLookupResponse;
use quiver_proto::packed::{ColumnBuilder, ColumnView, gather, gather_views};
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{
    FeatureColumn, FeatureStatus, FeatureType, GetOnlineFeaturesResponse, PackedColumn,
};

use super::LookupResult;
use crate::error::ClientError;
use crate::watermark::Watermarks;

/// A node's answer whose columns do not add up (a bug or a corrupted message): refused
/// rather than read out of bounds.
pub(crate) fn malformed(e: impl std::fmt::Display) -> ClientError {
    ClientError::Rpc(tonic::Status::data_loss(format!(
        "malformed lookup response: {e}"
    )))
}

/// The PACKED columns of a response: as sent, or built from a CELLS response (a node that
/// predates the PACKED encoding answers CELLS whatever the request asks).
pub(crate) fn packed_columns(
    mut resp: GetOnlineFeaturesResponse,
) -> Result<(Vec<PackedColumn>, usize), ClientError> {
    if resp.packed_columns.is_empty() && !resp.columns.is_empty() {
        let rows = resp.columns[0].statuses.len();
        let cols = resp
            .columns
            .iter()
            .map(|c| cells_to_packed(c, rows))
            .collect::<Result<_, _>>()?;
        return Ok((cols, rows));
    }
    let rows = resp.row_count as usize;
    for c in &resp.packed_columns {
        c.validate(rows).map_err(malformed)?;
    }
    Ok((std::mem::take(&mut resp.packed_columns), rows))
}

fn cells_to_packed(c: &FeatureColumn, rows: usize) -> Result<PackedColumn, ClientError> {
    if c.values.len() != rows || c.statuses.len() != rows || c.event_times_micros.len() != rows {
        return Err(malformed(format!("column {:?} has ragged cells", c.name)));
    }
    let ty = c
        .values
        .iter()
        .find_map(|v| v.kind.as_ref())
        .map_or(FeatureType::Unspecified, kind_type);
    let mut b = ColumnBuilder::new(c.name.clone(), ty, rows, true);
    for r in 0..rows {
        let t = c.event_times_micros[r];
        match FeatureStatus::try_from(c.statuses[r]).unwrap_or(FeatureStatus::Unspecified) {
            FeatureStatus::Present => b.push_kind(c.values[r].kind.as_ref(), t),
            other => b.push_missing(other, t),
        }
    }
    Ok(b.finish())
}

fn kind_type(k: &Kind) -> FeatureType {
    match k {
        Kind::BoolValue(_) => FeatureType::Bool,
        Kind::Int64Value(_) => FeatureType::Int64,
        Kind::Float64Value(_) => FeatureType::Float64,
        Kind::StringValue(_) => FeatureType::String,
        Kind::BytesValue(_) => FeatureType::Bytes,
        Kind::Float32Vector(_) => FeatureType::Float32Vector,
        Kind::Int64List(_) => FeatureType::Int64List,
        Kind::Float64List(_) => FeatureType::Float64List,
        Kind::StringList(_) => FeatureType::StringList,
    }
}

/// Whether request row `i` is row `i` of the only part, for every `i` (`rows[i]`: the
/// row's (part, row in part)): the answer needs no merge.
pub(crate) fn in_request_order(parts: usize, rows: &[(u32, u32)]) -> bool {
    parts == 1
        && rows
            .iter()
            .enumerate()
            .all(|(i, &(p, r))| p == 0 && r as usize == i)
}

/// Rows of a sub-response: its row count, or for a CELLS answer its columns' length.
fn part_rows(p: &RawLookupResponse) -> usize {
    match p.head.columns.first() {
        Some(c) if p.packed_columns.is_empty() => c.statuses.len(),
        _ => p.head.row_count as usize,
    }
}

impl LookupResult {
    /// Wraps one node's response covering every row in order.
    ///
    /// # Errors
    /// [`ClientError::Rpc`] (`DATA_LOSS`) if the response's columns are inconsistent.
    pub fn new(mut resp: GetOnlineFeaturesResponse) -> Result<Self, ClientError> {
        let watermarks = Watermarks::from_wire(&resp.watermarks);
        let view_versions = std::mem::take(&mut resp.view_versions);
        let (columns, rows) = packed_columns(resp)?;
        Ok(LookupResult {
            columns,
            rows,
            watermarks,
            view_versions,
        })
    }

    /// Assembles sub-responses; `rows[i]` locates request row `i` as (part, row in part).
    pub(crate) fn assemble(
        parts: Vec<RawLookupResponse>,
        rows: Vec<(u32, u32)>,
    ) -> Result<Self, ClientError> {
        let mut watermarks = Watermarks::new();
        for p in &parts {
            watermarks.merge_wire(&p.head.watermarks);
        }
        // The parts agree on their versions (`batch.rs` re-reads those that do not).
        let view_versions = parts
            .iter()
            .map(|p| &p.head.view_versions)
            .find(|v| !v.is_empty())
            .cloned()
            .unwrap_or_default();
        let identity = in_request_order(parts.len(), &rows) && part_rows(&parts[0]) == rows.len();
        let cells = parts
            .iter()
            .any(|p| p.packed_columns.is_empty() && !p.head.columns.is_empty());
        if identity || cells || parts.is_empty() {
            let parts = parts
                .into_iter()
                .map(|p| p.into_response().map_err(malformed))
                .collect::<Result<_, _>>()?;
            return Self::assemble_decoded(parts, rows, watermarks, view_versions);
        }
        let width = parts[0].packed_columns.len();
        if parts.iter().any(|p| p.packed_columns.len() != width) {
            return Err(malformed("sub-responses have different column counts"));
        }
        for (p, r) in &rows {
            let part = parts
                .get(*p as usize)
                .ok_or_else(|| malformed("a row maps to no sub-response"))?;
            if *r as usize >= part_rows(part) {
                return Err(malformed("a row is outside its sub-response"));
            }
        }
        let mut columns = Vec::with_capacity(width);
        // Column c of every part, refilled per column (one allocation per lookup).
        let mut views: Vec<ColumnView<'_>> = Vec::with_capacity(parts.len());
        for c in 0..width {
            views.clear();
            views.extend(
                parts
                    .iter()
                    .map_while(|p| ColumnView::parse(&p.packed_columns[c], part_rows(p))),
            );
            let merged = if views.len() == parts.len() {
                gather_views(&views, &rows)
            } else {
                None
            };
            let column = match merged {
                Some(column) => column,
                None => decode_and_gather(&parts, c, &rows)?,
            };
            columns.push(column);
        }
        Ok(LookupResult {
            columns,
            rows: rows.len(),
            watermarks,
            view_versions,
        })
    }

    /// Assembles decoded sub-responses (one that covers every row in order, or the
    /// CELLS answers of nodes that predate the PACKED encoding).
    fn assemble_decoded(
        parts: Vec<GetOnlineFeaturesResponse>,
        rows: Vec<(u32, u32)>,
        watermarks: Watermarks,
        view_versions: Vec<u32>,
    ) -> Result<Self, ClientError> {
        let mut parts: Vec<(Vec<PackedColumn>, usize)> = parts
            .into_iter()
            .map(packed_columns)
            .collect::<Result<_, _>>()?;
        if in_request_order(parts.len(), &rows) && parts[0].1 == rows.len() {
            let (columns, n) = parts.pop().expect("one part");
            return Ok(LookupResult {
                columns,
                rows: n,
                watermarks,
                view_versions,
            });
        }
        let Some((first, _)) = parts.first() else {
            return Ok(LookupResult {
                columns: Vec::new(),
                rows: rows.len(),
                watermarks,
                view_versions,
            });
        };
        for (cols, _) in &parts {
            if cols.len() != first.len() {
                return Err(malformed("sub-responses have different column counts"));
            }
        }
        for (p, r) in &rows {
            let (_, n) = parts
                .get(*p as usize)
                .ok_or_else(|| malformed("a row maps to no sub-response"))?;
            if *r as usize >= *n {
                return Err(malformed("a row is outside its sub-response"));
            }
        }
        let mut columns = Vec::with_capacity(first.len());
        // Column c of every part, refilled per column (one allocation per lookup).
        let mut of_parts: Vec<&PackedColumn> = Vec::with_capacity(parts.len());
        for c in 0..first.len() {
            of_parts.clear();
            of_parts.extend(parts.iter().map(|(cols, _)| &cols[c]));
            let column = gather(&of_parts, &rows)
                .ok_or_else(|| malformed("a row is outside its sub-response"))?;
            columns.push(column);
        }
        Ok(LookupResult {
            columns,
            rows: rows.len(),
            watermarks,
            view_versions,
        })
    }
}

/// Column `c` of every part decoded, checked against its part's rows, and merged.
fn decode_and_gather(
    parts: &[RawLookupResponse],
    c: usize,
    rows: &[(u32, u32)],
) -> Result<PackedColumn, ClientError> {
    let decoded = parts
        .iter()
        .map(|p| {
            let col = p.decode_column(c).map_err(malformed)?;
            col.validate(part_rows(p)).map_err(malformed)?;
            Ok(col)
        })
        .collect::<Result<Vec<_>, ClientError>>()?;
    let refs: Vec<&PackedColumn> = decoded.iter().collect();
    gather(&refs, rows).ok_or_else(|| malformed("a row is outside its sub-response"))
}

#[cfg(test)]
mod tests;
