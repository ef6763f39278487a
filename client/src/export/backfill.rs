//! Backfill from files: historical rows (entity key, event time, features) read from
//! Parquet or CSV and pushed through the cluster — the nodes produce them into the view's
//! topic with the cluster's partitioner, in the view's record format — so history and
//! latest values come from the same log.
//!
//! All or nothing per file: the whole file is read and every row converted and checked
//! against the view's schema first (an error names the row and the column, and nothing is
//! produced); then it is pushed in batches. A state file beside the data
//! (`<file>.backfill`) records the rows acknowledged, so an interrupted backfill resumes
//! after them (rows are last-write-wins by event time, so even a batch sent twice changes
//! no served value).

use std::path::{Path, PathBuf};

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int64Type};
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{self, DoubleList, FloatVector, Int64List, StringList, Value};

use super::ExportOptions;
use super::labels::{Chunk, Reader};
use crate::{Client, ClientError, PushRow, PushSchema};

/// How to read the file.
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// The column of entity keys.
    pub key_column: String,
    /// The column of event times.
    pub time_column: String,
    /// Unit of an integer time column.
    pub time_unit: super::TimeUnit,
    /// Rows per push (at most the cluster's `max_push_rows`).
    pub batch_rows: usize,
    /// Where progress is recorded (default: `<file>.backfill`).
    pub state: Option<PathBuf>,
}

impl Default for BackfillOptions {
    fn default() -> Self {
        BackfillOptions {
            key_column: "key".into(),
            time_column: "event_time".into(),
            time_unit: super::TimeUnit::Micros,
            batch_rows: 500,
            state: None,
        }
    }
}

/// What a backfill did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackfillSummary {
    /// Rows in the file.
    pub rows: u64,
    /// Rows pushed by this run (the rest were acknowledged by an earlier, interrupted one).
    pub pushed: u64,
}

/// Why a backfill failed.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// The file cannot be read, or a row does not fit the view (names the row and
    /// column). Nothing was produced.
    #[error("{path}: {message}")]
    File {
        /// The data file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The view is unknown, or the schema could not be read.
    #[error("view {view:?}: {source}")]
    View {
        /// The view.
        view: String,
        /// The client's error.
        #[source]
        source: ClientError,
    },
    /// A push failed after `done` rows were acknowledged (recorded in the state file: run
    /// again to resume).
    #[error(
        "push of rows {from}..{to} failed ({done} rows acknowledged so far; run again to resume): {source}"
    )]
    Push {
        /// First row of the failed batch (1-based).
        from: u64,
        /// Its last row.
        to: u64,
        /// Rows acknowledged.
        done: u64,
        /// The client's error.
        #[source]
        source: ClientError,
    },
    /// The state file cannot be read or written.
    #[error("state {path}: {message}")]
    State {
        /// The state file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// Backfills `view` from `path`, calling `progress(rows acknowledged)` after each push.
///
/// # Errors
/// [`BackfillError`]; a file or schema error before anything is produced.
pub async fn backfill(
    client: &Client,
    view: &str,
    path: &Path,
    opts: &BackfillOptions,
    mut progress: impl FnMut(u64),
) -> Result<BackfillSummary, BackfillError> {
    let schema = client
        .push_schema(view)
        .await
        .map_err(|source| BackfillError::View {
            view: view.to_owned(),
            source,
        })?;
    let batch_rows = opts
        .batch_rows
        .clamp(1, schema.max_push_rows.max(1) as usize);
    let read = ExportOptions {
        key_column: opts.key_column.clone(),
        time_column: opts.time_column.clone(),
        time_unit: opts.time_unit,
        int_keys: schema.key_type == "int64",
        chunk_rows: batch_rows,
        ..Default::default()
    };
    let file_err = |message: String| BackfillError::File {
        path: path.to_path_buf(),
        message,
    };
    // Pass 1: every row converted and checked; nothing is kept.
    let mut rows = 0u64;
    let mut reader = Reader::open(path, &read).map_err(|e| file_err(e.to_string()))?;
    let columns = match reader.schema() {
        Some(s) => plan_columns(&s, &schema, opts).map_err(file_err)?,
        None => return Err(file_err("the file has no rows".into())),
    };
    while let Some(chunk) = reader
        .next_chunk(batch_rows)
        .await
        .map_err(|e| file_err(e.to_string()))?
    {
        convert(&chunk, &columns, rows).map_err(file_err)?;
        rows += chunk.batch.num_rows() as u64;
    }
    reader.finish().map_err(|e| file_err(e.to_string()))?;

    // Pass 2: push, recording progress.
    let state = State::open(
        opts.state
            .clone()
            .unwrap_or_else(|| path.with_extension(format!("{}.backfill", ext(path)))),
        path,
        view,
    )?;
    let mut done = state.done;
    if done >= rows {
        progress(rows);
        return Ok(BackfillSummary { rows, pushed: 0 });
    }
    let start = done;
    let mut reader = Reader::open(path, &read).map_err(|e| file_err(e.to_string()))?;
    let mut at = 0u64;
    while let Some(chunk) = reader
        .next_chunk(batch_rows)
        .await
        .map_err(|e| file_err(e.to_string()))?
    {
        let n = chunk.batch.num_rows() as u64;
        if at + n <= done {
            at += n;
            continue;
        }
        let mut batch = convert(&chunk, &columns, at).map_err(file_err)?;
        // Resume mid-chunk: skip what was acknowledged.
        batch.drain(..(done - at) as usize);
        let from = done + 1;
        client
            .push(view, batch)
            .await
            .map_err(|source| BackfillError::Push {
                from,
                to: at + n,
                done,
                source,
            })?;
        done = at + n;
        at += n;
        state.record(done)?;
        progress(done);
    }
    reader.finish().map_err(|e| file_err(e.to_string()))?;
    Ok(BackfillSummary {
        rows,
        pushed: done - start,
    })
}

fn ext(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_owned()
}

/// A feature column of the file: its index and the view's type for it.
struct FeatureColumn {
    name: String,
    index: usize,
    ty: String,
}

/// Maps the file's columns (besides key and time) to the view's fields.
fn plan_columns(
    file: &arrow::datatypes::Schema,
    schema: &PushSchema,
    opts: &BackfillOptions,
) -> Result<Vec<FeatureColumn>, String> {
    let mut out = Vec::new();
    for (index, f) in file.fields().iter().enumerate() {
        let name = f.name();
        if name == &opts.key_column || name == &opts.time_column {
            continue;
        }
        let Some((_, ty)) = schema.fields.iter().find(|(n, _)| n == name) else {
            return Err(format!(
                "column {name:?} is not a field of the view (fields: {})",
                schema
                    .fields
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        out.push(FeatureColumn {
            name: name.clone(),
            index,
            ty: ty.clone(),
        });
    }
    Ok(out)
}

/// A chunk's rows as pushes; `first` is its first row (0-based) in the file.
fn convert(chunk: &Chunk, columns: &[FeatureColumn], first: u64) -> Result<Vec<PushRow>, String> {
    let n = chunk.batch.num_rows();
    let mut rows: Vec<v1::PushRow> = chunk
        .keys
        .iter()
        .zip(&chunk.times)
        .map(|(k, t)| v1::PushRow {
            entity_key: Some(k.clone()),
            event_time_micros: *t,
            ..Default::default()
        })
        .collect();
    for (i, r) in rows.iter().enumerate() {
        if r.event_time_micros < 0 {
            return Err(format!(
                "row {}: event time before 1970",
                first + i as u64 + 1
            ));
        }
    }
    for c in columns {
        let array = chunk.batch.column(c.index);
        for (i, row) in rows.iter_mut().enumerate().take(n) {
            if array.is_null(i) {
                continue;
            }
            let v = value(array, i, &c.ty)
                .map_err(|e| format!("row {}: column {:?}: {e}", first + i as u64 + 1, c.name))?;
            row.features.insert(c.name.clone(), v);
        }
    }
    Ok(rows.into_iter().map(PushRow::from).collect())
}

/// Cell `i` of `array` as a value of the view's type `ty`.
fn value(array: &ArrayRef, i: usize, ty: &str) -> Result<Value, String> {
    let dt = array.data_type();
    let wrong = || format!("a {dt} column cannot hold the view's {ty}");
    let kind = match (ty, dt) {
        ("bool", DataType::Boolean) => Kind::BoolValue(array.as_boolean().value(i)),
        ("int64", t) if t.is_integer() => Kind::Int64Value(int(array, i)?),
        ("float64", t) if t.is_floating() => Kind::Float64Value(float(array, i)?),
        ("float64", t) if t.is_integer() => {
            let v = int(array, i)?;
            if v.unsigned_abs() > 1 << 53 {
                return Err(format!("{v} is not exactly a float64"));
            }
            Kind::Float64Value(v as f64)
        }
        ("string", DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
            Kind::StringValue(text(array, i)?)
        }
        ("bytes", DataType::Binary | DataType::LargeBinary | DataType::BinaryView) => {
            let b = arrow::compute::cast(&array.slice(i, 1), &DataType::Binary)
                .map_err(|e| e.to_string())?;
            Kind::BytesValue(b.as_binary::<i32>().value(0).to_vec())
        }
        (
            "float32_vector" | "int64_list" | "float64_list" | "string_list",
            DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..),
        ) => {
            let list = arrow::compute::cast(
                &array.slice(i, 1),
                &DataType::List(std::sync::Arc::new(arrow::datatypes::Field::new(
                    "item",
                    match ty {
                        "float32_vector" => DataType::Float32,
                        "int64_list" => DataType::Int64,
                        "float64_list" => DataType::Float64,
                        _ => DataType::Utf8,
                    },
                    true,
                ))),
            )
            .map_err(|_| wrong())?;
            let items = list.as_list::<i32>().value(0);
            if items.null_count() > 0 {
                return Err("a list holds a null".into());
            }
            match ty {
                "float32_vector" => Kind::Float32Vector(FloatVector {
                    values: items.as_primitive::<Float32Type>().values().to_vec(),
                }),
                "int64_list" => Kind::Int64List(Int64List {
                    values: items.as_primitive::<Int64Type>().values().to_vec(),
                }),
                "float64_list" => Kind::Float64List(DoubleList {
                    values: items.as_primitive::<Float64Type>().values().to_vec(),
                }),
                _ => Kind::StringList(StringList {
                    values: items
                        .as_string::<i32>()
                        .iter()
                        .map(|s| s.unwrap_or_default().to_owned())
                        .collect(),
                }),
            }
        }
        _ => return Err(wrong()),
    };
    Ok(Value { kind: Some(kind) })
}

fn int(array: &ArrayRef, i: usize) -> Result<i64, String> {
    let v =
        arrow::compute::cast(&array.slice(i, 1), &DataType::Int64).map_err(|e| e.to_string())?;
    let v = v.as_primitive::<Int64Type>();
    if v.is_null(0) {
        // A u64 beyond i64: the cast gives a null.
        return Err("out of the int64 range".into());
    }
    Ok(v.value(0))
}

fn float(array: &ArrayRef, i: usize) -> Result<f64, String> {
    let v =
        arrow::compute::cast(&array.slice(i, 1), &DataType::Float64).map_err(|e| e.to_string())?;
    Ok(v.as_primitive::<Float64Type>().value(0))
}

fn text(array: &ArrayRef, i: usize) -> Result<String, String> {
    let v = arrow::compute::cast(&array.slice(i, 1), &DataType::Utf8).map_err(|e| e.to_string())?;
    Ok(v.as_string::<i32>().value(0).to_owned())
}

/// The progress of a backfill of one file into one view, in a small text file.
struct State {
    path: PathBuf,
    /// What identifies the file and the view.
    identity: String,
    /// Rows acknowledged.
    done: u64,
}

impl State {
    fn open(path: PathBuf, file: &Path, view: &str) -> Result<State, BackfillError> {
        let err = |message: String| BackfillError::State {
            path: path.clone(),
            message,
        };
        let meta = std::fs::metadata(file).map_err(|e| err(e.to_string()))?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let identity = format!("view={view} bytes={} modified={modified}", meta.len());
        let done = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mut lines = text.lines();
                match (
                    lines.next(),
                    lines.next().and_then(|l| l.strip_prefix("done=")),
                ) {
                    (Some(id), Some(d)) if id == identity => {
                        d.parse().map_err(|_| err(format!("corrupt: {text:?}")))?
                    }
                    // Another file, or another view: start over.
                    _ => 0,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(err(e.to_string())),
        };
        Ok(State {
            path,
            identity,
            done,
        })
    }

    /// Records `done` rows (write then rename: never a torn file).
    fn record(&self, done: u64) -> Result<(), BackfillError> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, format!("{}\ndone={done}\n", self.identity))
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|e| BackfillError::State {
                path: self.path.clone(),
                message: e.to_string(),
            })
    }
}
