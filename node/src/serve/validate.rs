//! Limits on hostile input that the registry cannot express: key, string and vector
//! sizes of pushed rows. Pure functions (fuzzed by `fuzz/fuzz_targets/request.rs`).

use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{PushRow, entity_key};

use super::ServeError;
use crate::config::Limits;

/// Checks every row's key length and every value's string/bytes length and vector or
/// list length; the error names the row, the feature and the limit.
///
/// # Errors
/// [`ServeError::InvalidArgument`] for the first value over a limit.
pub fn check_push_rows(rows: &[PushRow], limits: &Limits) -> Result<(), ServeError> {
    let invalid = |m: String| Err(ServeError::InvalidArgument(m));
    for (i, row) in rows.iter().enumerate() {
        if let Some(entity_key::Kind::StringValue(k)) =
            row.entity_key.as_ref().and_then(|k| k.kind.as_ref())
            && k.len() > limits.max_key_bytes
        {
            return invalid(format!(
                "rows[{i}].entity_key is {} bytes, exceeding the limit max_key_bytes = {}",
                k.len(),
                limits.max_key_bytes
            ));
        }
        for (name, value) in &row.features {
            let Some(kind) = value.kind.as_ref() else {
                continue;
            };
            let (bytes, elements) = match kind {
                Kind::StringValue(s) => (s.len(), 0),
                Kind::BytesValue(b) => (b.len(), 0),
                Kind::Float32Vector(v) => (0, v.values.len()),
                Kind::Int64List(v) => (0, v.values.len()),
                Kind::Float64List(v) => (0, v.values.len()),
                Kind::StringList(v) => (
                    v.values.iter().map(String::len).max().unwrap_or(0),
                    v.values.len(),
                ),
                Kind::BoolValue(_) | Kind::Int64Value(_) | Kind::Float64Value(_) => (0, 0),
            };
            if bytes > limits.max_string_bytes {
                return invalid(format!(
                    "rows[{i}].features[{name:?}] has a string of {bytes} bytes, exceeding the limit max_string_bytes = {}",
                    limits.max_string_bytes
                ));
            }
            if elements > limits.max_vector_len {
                return invalid(format!(
                    "rows[{i}].features[{name:?}] has {elements} elements, exceeding the limit max_vector_len = {}",
                    limits.max_vector_len
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::v1::{EntityKey, FloatVector, Value};

    fn limits() -> Limits {
        crate::config::NodeConfigFile::default()
            .validate()
            .map(|c| c.limits)
            .expect("default config is valid")
    }

    fn row(key: &str, name: &str, kind: Kind) -> PushRow {
        PushRow {
            entity_key: Some(EntityKey::from(key)),
            event_time_micros: 0,
            features: [(name.to_owned(), Value { kind: Some(kind) })].into(),
            delete: false,
        }
    }

    #[test]
    fn each_size_limit_is_named() {
        let l = limits();
        let ok = row("u1", "s", Kind::StringValue("x".repeat(l.max_string_bytes)));
        assert!(check_push_rows(&[ok], &l).is_ok());
        let cases = [
            (
                row(&"k".repeat(l.max_key_bytes + 1), "a", Kind::BoolValue(true)),
                "max_key_bytes",
            ),
            (
                row(
                    "u",
                    "s",
                    Kind::StringValue("x".repeat(l.max_string_bytes + 1)),
                ),
                "max_string_bytes",
            ),
            (
                row("u", "b", Kind::BytesValue(vec![0; l.max_string_bytes + 1])),
                "max_string_bytes",
            ),
            (
                row(
                    "u",
                    "v",
                    Kind::Float32Vector(FloatVector {
                        values: vec![0.0; l.max_vector_len + 1],
                    }),
                ),
                "max_vector_len",
            ),
        ];
        for (r, limit) in cases {
            let e = check_push_rows(&[r], &l).expect_err(limit).to_string();
            assert!(e.contains(limit) && e.contains("rows[0]"), "{e}");
        }
    }
}
