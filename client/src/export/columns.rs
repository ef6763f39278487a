//! A looked-up chunk as Arrow columns: the label columns as read, then one typed column per
//! feature (null where the value is not PRESENT), optionally each followed by its status.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder, Int64Builder,
    ListBuilder, StringBuilder,
};
use arrow::datatypes::{Field, Schema};
use arrow::record_batch::RecordBatch;
use quiver_proto::packed::ValueRef;
use quiver_proto::v1::{FeatureStatus, FeatureType};

use crate::LookupResult;

/// Suffix of a feature's status column.
pub const STATUS_SUFFIX: &str = "__status";

/// `labels` with `result`'s feature columns appended (`result` has one row per label row,
/// in order).
///
/// # Errors
/// A label column named like a feature column, or a result of another length.
pub fn append(
    labels: &RecordBatch,
    result: &LookupResult,
    status_columns: bool,
) -> Result<RecordBatch, String> {
    let n = labels.num_rows();
    if result.row_count() != n {
        return Err(format!("{} answers for {n} label rows", result.row_count()));
    }
    let mut fields: Vec<Arc<Field>> = labels.schema().fields().iter().cloned().collect();
    let mut arrays: Vec<ArrayRef> = labels.columns().to_vec();
    for c in 0..result.column_count() {
        let col = result.column(c).ok_or("missing column")?;
        let name = col.name.clone();
        if labels.schema().index_of(&name).is_ok() {
            return Err(format!(
                "the label set already has a column named {name:?}, like a feature"
            ));
        }
        let array = feature_array(result, c, col.feature_type(), n);
        fields.push(Arc::new(Field::new(&name, array.data_type().clone(), true)));
        arrays.push(array);
        if status_columns {
            let mut b = StringBuilder::with_capacity(n, n * 7);
            for row in 0..n {
                b.append_value(status_name(result.status(row, c)));
            }
            fields.push(Arc::new(Field::new(
                format!("{name}{STATUS_SUFFIX}"),
                arrow::datatypes::DataType::Utf8,
                false,
            )));
            arrays.push(Arc::new(b.finish()));
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(|e| e.to_string())
}

/// The status as written in a status column.
pub fn status_name(s: FeatureStatus) -> &'static str {
    match s {
        FeatureStatus::Present => "PRESENT",
        FeatureStatus::NotFound => "NOT_FOUND",
        FeatureStatus::Expired => "EXPIRED",
        FeatureStatus::Unspecified => "UNSPECIFIED",
    }
}

/// Column `c` of `result` as an Arrow array of its type; a value that is not PRESENT (or a
/// null) is a null.
fn feature_array(result: &LookupResult, c: usize, ty: FeatureType, n: usize) -> ArrayRef {
    let value = |row: usize| {
        (result.status(row, c) == FeatureStatus::Present)
            .then(|| result.value(row, c))
            .flatten()
    };
    macro_rules! scalar {
        ($builder:expr, $variant:ident) => {{
            let mut b = $builder;
            for row in 0..n {
                match value(row) {
                    Some(ValueRef::$variant(v)) => b.append_value(v),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    macro_rules! list {
        ($inner:expr, $variant:ident) => {{
            let mut b = ListBuilder::new($inner);
            for row in 0..n {
                match value(row) {
                    Some(ValueRef::$variant(v)) => {
                        b.values().append_slice(v);
                        b.append(true);
                    }
                    _ => b.append(false),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    match ty {
        FeatureType::Bool => scalar!(BooleanBuilder::with_capacity(n), Bool),
        FeatureType::Int64 => scalar!(Int64Builder::with_capacity(n), Int64),
        FeatureType::Float64 | FeatureType::Unspecified => {
            scalar!(Float64Builder::with_capacity(n), Float64)
        }
        FeatureType::String => scalar!(StringBuilder::with_capacity(n, n * 8), String),
        FeatureType::Bytes => scalar!(BinaryBuilder::with_capacity(n, n * 8), Bytes),
        FeatureType::Float32Vector => list!(Float32Builder::new(), Float32Vector),
        FeatureType::Int64List => list!(Int64Builder::new(), Int64List),
        FeatureType::Float64List => list!(Float64Builder::new(), Float64List),
        FeatureType::StringList => {
            let mut b = ListBuilder::new(StringBuilder::new());
            for row in 0..n {
                match value(row) {
                    Some(ValueRef::StringList(v)) => {
                        for s in v.iter() {
                            b.values().append_value(s);
                        }
                        b.append(true);
                    }
                    _ => b.append(false),
                }
            }
            Arc::new(b.finish())
        }
    }
}
