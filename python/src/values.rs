//! Python values → entity keys and feature values.
//!
//! Rows are read from Python in two steps: under the GIL each value becomes a [`Raw`]
//! (what Python gave, no typing yet); then, once the view's push schema is known (which
//! may need a round trip, off the GIL), [`typed`] checks each against its field's type.
//! Every refusal names the row and the field; nothing is sent unless every row passes.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyFloat, PyInt, PyList, PyString, PyTuple};
use quiver_client::{EntityKey, PushRow, PushSchema, Value, ValueKind};
use quiver_proto::v1::{DoubleList, FloatVector, Int64List, StringList};

/// A Python value before it is checked against a field's type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Raw>),
}

impl Raw {
    fn kind(&self) -> &'static str {
        match self {
            Raw::Null => "null",
            Raw::Bool(_) => "a bool",
            Raw::Int(_) => "an int",
            Raw::Float(_) => "a float",
            Raw::Str(_) => "a str",
            Raw::Bytes(_) => "bytes",
            Raw::List(_) => "a list",
        }
    }
}

/// The name of `obj`'s type, for messages.
fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "?".into(), |n| n.to_string())
}

/// Reads one Python value: None, pandas' NA/NaT → null; bool, int, float, str, bytes;
/// lists, tuples and NumPy arrays/scalars (through `tolist()`).
pub(crate) fn raw(obj: &Bound<'_, PyAny>) -> PyResult<Raw> {
    if obj.is_none() {
        return Ok(Raw::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Raw::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        return obj.extract::<i64>().map(Raw::Int).map_err(|_| {
            PyErr::new::<pyo3::exceptions::PyValueError, _>("int out of int64 range")
        });
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Raw::Float(f.value()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Raw::Str(s.to_cow()?.into_owned()));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Raw::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Raw::Bytes(b.to_vec()));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for item in obj.try_iter()? {
            items.push(raw(&item?)?);
        }
        return Ok(Raw::List(items));
    }
    let name = type_name(obj);
    if name == "NAType" || name == "NaTType" {
        return Ok(Raw::Null);
    }
    // NumPy scalars and arrays (and pandas' own arrays) turn into Python values.
    if obj.hasattr("tolist")? {
        let native = obj.call_method0("tolist")?;
        if type_name(&native) != name {
            return raw(&native);
        }
    }
    Err(PyErr::new::<pyo3::exceptions::PyTypeError, _>(format!(
        "unsupported value of type {name}"
    )))
}

/// Reads an entity key: a str, or an int (bools refused).
pub(crate) fn key(obj: &Bound<'_, PyAny>, position: usize) -> PyResult<EntityKey> {
    let bad = |what: String| {
        crate::errors::invalid(format!(
            "entity key at position {position} is {what}; keys are str or int"
        ))
    };
    match raw(obj) {
        Ok(Raw::Str(s)) => Ok(EntityKey::from(s.as_str())),
        Ok(Raw::Int(i)) => Ok(EntityKey::from(i)),
        // A float column holding integers (pandas widens ints with missing values).
        Ok(f @ Raw::Float(_)) => integer(&f)
            .map(EntityKey::from)
            .ok_or_else(|| bad(f.kind().into())),
        Ok(other) => Err(bad(other.kind().into())),
        Err(_) => Err(bad(format!("of type {}", type_name(obj)))),
    }
}

/// Reads a sequence of entity keys.
pub(crate) fn keys(seq: &Bound<'_, PyAny>) -> PyResult<Vec<EntityKey>> {
    let mut out = Vec::new();
    for (i, item) in seq.try_iter()?.enumerate() {
        out.push(key(&item?, i)?);
    }
    Ok(out)
}

/// A row to push, read from Python but not yet typed.
#[derive(Debug, Clone)]
pub(crate) struct RawRow {
    pub(crate) key: EntityKey,
    pub(crate) event_time_micros: i64,
    pub(crate) fields: Vec<(String, Raw)>,
    pub(crate) delete: bool,
}

/// Reads `(key, event_time_micros, {field: value}, delete)` tuples.
pub(crate) fn raw_rows(rows: &Bound<'_, PyAny>) -> PyResult<Vec<RawRow>> {
    let mut out = Vec::new();
    for (i, row) in rows.try_iter()?.enumerate() {
        let row = row?;
        let (key_obj, t, fields, delete): (Bound<'_, PyAny>, i64, Bound<'_, PyAny>, bool) =
            row.extract().map_err(|_| {
                crate::errors::invalid(format!(
                    "row {i}: expected (key, event_time_micros, {{field: value}}, delete)"
                ))
            })?;
        let key = key(&key_obj, i).map_err(|e| crate::errors::invalid(format!("row {i}: {e}")))?;
        let mut named = Vec::new();
        let items = fields.call_method0("items")?;
        for item in items.try_iter()? {
            let (name, value): (String, Bound<'_, PyAny>) = item?.extract()?;
            let v = raw(&value)
                .map_err(|e| crate::errors::invalid(format!("row {i}, field {name:?}: {e}")))?;
            named.push((name, v));
        }
        out.push(RawRow {
            key,
            event_time_micros: t,
            fields: named,
            delete,
        });
    }
    Ok(out)
}

/// A number as f64, if it is one.
fn number(r: &Raw) -> Option<f64> {
    match r {
        Raw::Int(i) => Some(*i as f64),
        Raw::Float(f) => Some(*f),
        _ => None,
    }
}

/// An int, or a float holding an integer exactly (a pandas int column widened by NaN).
fn integer(r: &Raw) -> Option<i64> {
    match r {
        Raw::Int(i) => Some(*i),
        Raw::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
        _ => None,
    }
}

fn list_of<T>(r: &Raw, each: impl Fn(&Raw) -> Option<T>) -> Option<Vec<T>> {
    match r {
        Raw::List(items) => items.iter().map(each).collect(),
        _ => None,
    }
}

/// `r` as a value of type `ty` (a definition-file type name); `Ok(None)` for a null. A
/// float NaN is a null for every type but float64 (where NaN is a value).
pub(crate) fn typed(r: &Raw, ty: &str) -> Result<Option<Value>, String> {
    let nan = matches!(r, Raw::Float(f) if f.is_nan());
    if matches!(r, Raw::Null) || (nan && ty != "float64") {
        return Ok(None);
    }
    let kind = match ty {
        "bool" => match r {
            Raw::Bool(b) => Some(ValueKind::BoolValue(*b)),
            _ => None,
        },
        "int64" => integer(r).map(ValueKind::Int64Value),
        "float64" => number(r).map(ValueKind::Float64Value),
        "string" => match r {
            Raw::Str(s) => Some(ValueKind::StringValue(s.clone())),
            _ => None,
        },
        "bytes" => match r {
            Raw::Bytes(b) => Some(ValueKind::BytesValue(b.clone())),
            _ => None,
        },
        "float32_vector" => list_of(r, |x| number(x).map(|f| f as f32))
            .map(|values| ValueKind::Float32Vector(FloatVector { values })),
        "int64_list" => {
            list_of(r, integer).map(|values| ValueKind::Int64List(Int64List { values }))
        }
        "float64_list" => {
            list_of(r, number).map(|values| ValueKind::Float64List(DoubleList { values }))
        }
        "string_list" => list_of(r, |x| match x {
            Raw::Str(s) => Some(s.clone()),
            _ => None,
        })
        .map(|values| ValueKind::StringList(StringList { values })),
        other => return Err(format!("has type {other}, which this SDK cannot write")),
    };
    match kind {
        Some(k) => Ok(Some(Value { kind: Some(k) })),
        None => Err(format!("is {ty}, got {}", r.kind())),
    }
}

/// Types every row against `schema` (the view's push fields): the rows to send, or the
/// first problem, naming the row and the field.
pub(crate) fn push_rows(
    view: &str,
    schema: &PushSchema,
    rows: Vec<RawRow>,
) -> Result<Vec<PushRow>, String> {
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let key_type = match &row.key.kind {
            Some(quiver_proto::v1::entity_key::Kind::StringValue(_)) => "string",
            Some(quiver_proto::v1::entity_key::Kind::Int64Value(_)) => "int64",
            None => "empty",
        };
        if key_type != schema.key_type {
            return Err(format!(
                "row {i}: the key is {key_type}, but view {view:?} is keyed by {}",
                schema.key_type
            ));
        }
        if row.delete {
            if row.fields.iter().any(|(_, v)| *v != Raw::Null) {
                return Err(format!("row {i}: a delete carries no field values"));
            }
            out.push(PushRow::delete(row.key));
            continue;
        }
        let mut p = PushRow::new(row.key);
        if row.event_time_micros != 0 {
            p = p.event_time_micros(row.event_time_micros);
        }
        for (name, raw) in &row.fields {
            let Some((_, ty)) = schema.fields.iter().find(|(n, _)| n == name) else {
                return Err(format!("row {i}: view {view:?} has no field {name:?}"));
            };
            match typed(raw, ty) {
                Ok(Some(v)) => p = p.set(name.clone(), v),
                Ok(None) => {}
                Err(m) => return Err(format!("row {i}, field {name:?} {m}")),
            }
        }
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(v: Option<Value>) -> Option<ValueKind> {
        v.and_then(|v| v.kind)
    }

    #[test]
    fn numbers_widen_only_where_exact() {
        assert_eq!(
            kind(typed(&Raw::Float(3.0), "int64").unwrap()),
            Some(ValueKind::Int64Value(3))
        );
        assert!(typed(&Raw::Float(3.5), "int64").is_err());
        assert_eq!(
            kind(typed(&Raw::Int(2), "float64").unwrap()),
            Some(ValueKind::Float64Value(2.0))
        );
        assert!(typed(&Raw::Bool(true), "int64").is_err());
        assert!(typed(&Raw::Int(1), "bool").is_err());
    }

    #[test]
    fn nan_is_null_except_for_float64() {
        assert_eq!(typed(&Raw::Float(f64::NAN), "int64").unwrap(), None);
        assert_eq!(typed(&Raw::Float(f64::NAN), "string").unwrap(), None);
        match kind(typed(&Raw::Float(f64::NAN), "float64").unwrap()) {
            Some(ValueKind::Float64Value(f)) => assert!(f.is_nan()),
            other => panic!("{other:?}"),
        }
        assert_eq!(typed(&Raw::Null, "float64").unwrap(), None);
    }

    #[test]
    fn lists_are_typed_item_by_item() {
        let l = Raw::List(vec![Raw::Int(1), Raw::Float(2.5)]);
        assert!(typed(&l, "int64_list").is_err());
        assert_eq!(
            kind(typed(&l, "float64_list").unwrap()),
            Some(ValueKind::Float64List(DoubleList {
                values: vec![1.0, 2.5]
            }))
        );
        let err = typed(&Raw::Str("x".into()), "float32_vector").unwrap_err();
        assert_eq!(err, "is float32_vector, got a str");
    }

    #[test]
    fn push_rows_name_the_row_and_field() {
        let schema = PushSchema {
            key_type: "string".into(),
            fields: vec![("amount".into(), "float64".into())],
            max_push_rows: 100,
        };
        let row = |fields: Vec<(String, Raw)>| RawRow {
            key: EntityKey::from("k"),
            event_time_micros: 0,
            fields,
            delete: false,
        };
        let ok = row(vec![("amount".into(), Raw::Int(3))]);
        let bad = row(vec![("amount".into(), Raw::Str("3".into()))]);
        let unknown = row(vec![("amt".into(), Raw::Int(3))]);
        assert_eq!(push_rows("v", &schema, vec![ok.clone()]).unwrap().len(), 1);
        assert_eq!(
            push_rows("v", &schema, vec![ok.clone(), bad]).unwrap_err(),
            "row 1, field \"amount\" is float64, got a str"
        );
        assert_eq!(
            push_rows("v", &schema, vec![unknown]).unwrap_err(),
            "row 0: view \"v\" has no field \"amt\""
        );
        let mut int_key = ok.clone();
        int_key.key = EntityKey::from(7);
        assert_eq!(
            push_rows("v", &schema, vec![ok, int_key]).unwrap_err(),
            "row 1: the key is int64, but view \"v\" is keyed by string"
        );
    }
}
