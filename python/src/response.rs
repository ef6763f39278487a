//! A lookup's answer, handed to Python as column buffers.
//!
//! The wire's packed columns are already Arrow-shaped (typed arrays, `u32` offsets into
//! one blob for strings, list offsets): each array goes to Python as one `bytes` written
//! in place (`PyBytes::new_with`), which `quiver/_response.py` wraps as NumPy arrays and
//! Arrow buffers without a Python object per value.

use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList};
use quiver_client::LookupResult;
use quiver_proto::v1::{FeatureStatus, FeatureType, PackedColumn};

/// The answer of one `get_online_features` call.
#[pyclass(module = "quiver._quiver", frozen)]
pub struct Response {
    pub(crate) result: LookupResult,
}

/// The definition-file name of a feature type.
pub(crate) fn type_name(t: FeatureType) -> &'static str {
    match t {
        FeatureType::Bool => "bool",
        FeatureType::Int64 => "int64",
        FeatureType::Float64 => "float64",
        FeatureType::String => "string",
        FeatureType::Bytes => "bytes",
        FeatureType::Float32Vector => "float32_vector",
        FeatureType::Int64List => "int64_list",
        FeatureType::Float64List => "float64_list",
        FeatureType::StringList => "string_list",
        FeatureType::Unspecified => "unspecified",
    }
}

/// `items` written little-endian into one `bytes` of `width` bytes per item.
fn le_bytes<'py, T: Copy>(
    py: Python<'py>,
    items: &[T],
    width: usize,
    put: impl Fn(T, &mut [u8]),
) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, items.len() * width, |buf| {
        for (chunk, v) in buf.chunks_exact_mut(width).zip(items) {
            put(*v, chunk);
        }
        Ok(())
    })
}

fn i64s<'py>(py: Python<'py>, v: &[i64]) -> PyResult<Bound<'py, PyBytes>> {
    le_bytes(py, v, 8, |x, b| b.copy_from_slice(&x.to_le_bytes()))
}

fn f64s<'py>(py: Python<'py>, v: &[f64]) -> PyResult<Bound<'py, PyBytes>> {
    le_bytes(py, v, 8, |x, b| b.copy_from_slice(&x.to_le_bytes()))
}

fn f32s<'py>(py: Python<'py>, v: &[f32]) -> PyResult<Bound<'py, PyBytes>> {
    le_bytes(py, v, 4, |x, b| b.copy_from_slice(&x.to_le_bytes()))
}

fn u32s<'py>(py: Python<'py>, v: &[u32]) -> PyResult<Bound<'py, PyBytes>> {
    le_bytes(py, v, 4, |x, b| b.copy_from_slice(&x.to_le_bytes()))
}

/// One byte per row: the status code (`FeatureStatus`).
fn statuses<'py>(py: Python<'py>, c: &PackedColumn) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, c.statuses.len(), |buf| {
        for (b, s) in buf.iter_mut().zip(&c.statuses) {
            *b = u8::try_from(*s).unwrap_or(0);
        }
        Ok(())
    })
}

/// Per row, whether it holds a value: PRESENT and not in `null_rows` (ascending).
fn valid_rows(c: &PackedColumn) -> impl Iterator<Item = bool> + '_ {
    let present = FeatureStatus::Present as i32;
    let mut nulls = c.null_rows.iter().peekable();
    c.statuses.iter().enumerate().map(move |(row, s)| {
        let null = nulls.next_if(|n| **n as usize == row).is_some();
        *s == present && !null
    })
}

/// One byte per row: 1 where the row holds a value.
fn validity<'py>(py: Python<'py>, c: &PackedColumn) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, c.statuses.len(), |buf| {
        for (b, valid) in buf.iter_mut().zip(valid_rows(c)) {
            *b = u8::from(valid);
        }
        Ok(())
    })
}

/// Column `c` as a dict of its name, type and arrays.
fn column<'py>(py: Python<'py>, c: &PackedColumn) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let ty = c.feature_type();
    d.set_item("name", &c.name)?;
    d.set_item("type", type_name(ty))?;
    d.set_item("statuses", statuses(py, c)?)?;
    d.set_item("valid", validity(py, c)?)?;
    if !c.event_times_micros.is_empty() {
        d.set_item("event_times", i64s(py, &c.event_times_micros)?)?;
    }
    match ty {
        FeatureType::Bool => {
            let v = PyBytes::new_with(py, c.bools.len(), |buf| {
                for (b, v) in buf.iter_mut().zip(&c.bools) {
                    *b = u8::from(*v);
                }
                Ok(())
            })?;
            d.set_item("values", v)?;
        }
        FeatureType::Int64 => d.set_item("values", i64s(py, &c.int64s)?)?,
        FeatureType::Float64 => d.set_item("values", f64s(py, &c.float64s)?)?,
        FeatureType::String | FeatureType::Bytes => {
            d.set_item("offsets", u32s(py, &c.offsets)?)?;
            d.set_item("blob", PyBytes::new(py, &c.blob))?;
        }
        FeatureType::Float32Vector => {
            d.set_item("values", f32s(py, &c.float32s)?)?;
            d.set_item("dimension", c.dimension)?;
            if c.dimension == 0 {
                d.set_item("list_offsets", u32s(py, &c.list_offsets)?)?;
            }
        }
        FeatureType::Int64List => {
            d.set_item("list_offsets", u32s(py, &c.list_offsets)?)?;
            d.set_item("values", i64s(py, &c.int64s)?)?;
        }
        FeatureType::Float64List => {
            d.set_item("list_offsets", u32s(py, &c.list_offsets)?)?;
            d.set_item("values", f64s(py, &c.float64s)?)?;
        }
        FeatureType::StringList => {
            d.set_item("list_offsets", u32s(py, &c.list_offsets)?)?;
            d.set_item("offsets", u32s(py, &c.offsets)?)?;
            d.set_item("blob", PyBytes::new(py, &c.blob))?;
        }
        FeatureType::Unspecified => {}
    }
    Ok(d)
}

#[pymethods]
impl Response {
    /// Rows (entity keys, duplicates included).
    #[getter]
    fn row_count(&self) -> usize {
        self.result.row_count()
    }

    /// Column names (`view:feature`) in request order.
    #[getter]
    fn feature_names(&self) -> Vec<String> {
        self.result.feature_names().map(str::to_owned).collect()
    }

    /// The watermark token of the shards that answered.
    #[getter]
    fn watermark(&self) -> String {
        self.result.watermarks().to_string()
    }

    /// When every column is float64: all of them as one writable buffer, column after
    /// column (`rows` f64 each, NaN where the row holds no value) — a column-major
    /// rows × columns matrix for NumPy and pandas to use without copying. Else `None`.
    fn float_block<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyByteArray>>> {
        let r = &self.result;
        let rows = r.row_count();
        let cols: Vec<&PackedColumn> = (0..r.column_count()).filter_map(|i| r.column(i)).collect();
        if cols.is_empty()
            || cols
                .iter()
                .any(|c| c.feature_type() != FeatureType::Float64)
        {
            return Ok(None);
        }
        let block = PyByteArray::new_with(py, rows * cols.len() * 8, |buf| {
            for (col, c) in buf.chunks_exact_mut(rows * 8).zip(&cols) {
                let cells = col.chunks_exact_mut(8).zip(valid_rows(c));
                for (row, (cell, valid)) in cells.enumerate() {
                    let v = match c.float64s.get(row) {
                        Some(v) if valid => *v,
                        _ => f64::NAN,
                    };
                    cell.copy_from_slice(&v.to_le_bytes());
                }
            }
            Ok(())
        })?;
        Ok(Some(block))
    }

    /// Every column as a dict: `name`, `type`, `statuses` (u8 per row), `valid` (u8 per
    /// row), `event_times` (i64 per row, when asked for) and the type's arrays.
    fn columns<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for i in 0..self.result.column_count() {
            if let Some(c) = self.result.column(i) {
                list.append(column(py, c)?)?;
            }
        }
        Ok(list)
    }
}
