//! Reading a label set: Parquet, or CSV with a header, decoded in batches by a thread of
//! its own; each batch becomes a [`Chunk`] with its entity keys and as-of times extracted
//! (a row without a usable key or time is an error naming the row and column).

use std::fs::File;
use std::io::Seek;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit as ArrowUnit};
use arrow::record_batch::RecordBatch;
use quiver_proto::v1::EntityKey;

use super::{ExportError, ExportOptions};

/// Unit of an integer time column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    /// Seconds since the Unix epoch.
    Seconds,
    /// Milliseconds.
    Millis,
    /// Microseconds.
    Micros,
    /// Nanoseconds.
    Nanos,
}

impl std::str::FromStr for TimeUnit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "s" | "seconds" => TimeUnit::Seconds,
            "ms" | "millis" => TimeUnit::Millis,
            "us" | "micros" => TimeUnit::Micros,
            "ns" | "nanos" => TimeUnit::Nanos,
            _ => return Err(format!("time unit {s:?}: expected s, ms, us or ns")),
        })
    }
}

/// Microseconds from a count of `unit`s.
fn to_micros(v: i64, unit: ArrowUnit) -> i64 {
    match unit {
        ArrowUnit::Second => v.saturating_mul(1_000_000),
        ArrowUnit::Millisecond => v.saturating_mul(1_000),
        ArrowUnit::Microsecond => v,
        ArrowUnit::Nanosecond => v.div_euclid(1_000),
    }
}

/// Label rows to look up: the label columns, and per row its key and time (µs).
pub struct Chunk {
    pub batch: RecordBatch,
    pub keys: Vec<EntityKey>,
    pub times: Vec<i64>,
}

/// The label file, decoded by a thread into chunks.
pub struct Reader {
    rx: tokio::sync::mpsc::Receiver<Result<Chunk, ExportError>>,
    thread: Option<std::thread::JoinHandle<()>>,
    schema: Option<arrow::datatypes::SchemaRef>,
}

impl Reader {
    /// Opens `path` (`.parquet` / `.pq`, or `.csv`) and starts decoding it.
    ///
    /// # Errors
    /// [`ExportError::Labels`] when it cannot be opened, or lacks the key or time column.
    pub fn open(path: &Path, opts: &ExportOptions) -> Result<Reader, ExportError> {
        let err = |message: String| ExportError::Labels {
            path: path.to_path_buf(),
            message,
        };
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let batches: Box<dyn Iterator<Item = Result<RecordBatch, String>> + Send> = match ext
            .as_str()
        {
            "parquet" | "pq" => {
                let file = File::open(path).map_err(|e| err(e.to_string()))?;
                let r =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                        .map_err(|e| err(e.to_string()))?
                        .with_batch_size(opts.chunk_rows)
                        .build()
                        .map_err(|e| err(e.to_string()))?;
                Box::new(r.map(|b| b.map_err(|e| e.to_string())))
            }
            "csv" => {
                let mut file = File::open(path).map_err(|e| err(e.to_string()))?;
                let format = arrow::csv::reader::Format::default().with_header(true);
                let (inferred, _) = format
                    .infer_schema(&mut file, Some(10_000))
                    .map_err(|e| err(e.to_string()))?;
                file.rewind().map_err(|e| err(e.to_string()))?;
                // Keys as text unless they are int64 keys: "007" stays "007".
                let key_type = if opts.int_keys {
                    DataType::Int64
                } else {
                    DataType::Utf8
                };
                let fields: Vec<Field> = inferred
                    .fields()
                    .iter()
                    .map(|f| {
                        if f.name() == &opts.key_column {
                            Field::new(f.name(), key_type.clone(), true)
                        } else {
                            f.as_ref().clone()
                        }
                    })
                    .collect();
                let r = arrow::csv::ReaderBuilder::new(Arc::new(Schema::new(fields)))
                    .with_format(format)
                    .with_batch_size(opts.chunk_rows)
                    .build(file)
                    .map_err(|e| err(e.to_string()))?;
                Box::new(r.map(|b| b.map_err(|e| e.to_string())))
            }
            _ => {
                return Err(err(
                    "expected a .parquet or .csv file (by its extension)".into()
                ));
            }
        };
        let mut batches = batches.peekable();
        // The schema from the first batch (a file without rows has nothing to check).
        let schema = match batches.peek() {
            Some(Ok(b)) => Some(b.schema()),
            _ => None,
        };
        if let Some(s) = &schema {
            for c in [&opts.key_column, &opts.time_column] {
                if s.index_of(c).is_err() {
                    return Err(err(format!(
                        "no column {c:?} (columns: {})",
                        s.fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let (path, opts) = (path.to_path_buf(), opts.clone());
        let thread = std::thread::Builder::new()
            .name("export-reader".into())
            .spawn(move || {
                let mut row = 0u64;
                for b in batches {
                    let chunk = b
                        .map_err(|message| ExportError::Labels {
                            path: path.clone(),
                            message,
                        })
                        .and_then(|b| chunk(&path, b, row, &opts));
                    let failed = chunk.is_err();
                    if let Ok(c) = &chunk {
                        row += c.batch.num_rows() as u64;
                    }
                    if tx.blocking_send(chunk).is_err() || failed {
                        return;
                    }
                }
            })
            .map_err(|e| err(e.to_string()))?;
        Ok(Reader {
            rx,
            thread: Some(thread),
            schema,
        })
    }

    /// The next chunk, `None` at the end of the file.
    ///
    /// # Errors
    /// The first unreadable batch or unusable row.
    pub async fn next_chunk(&mut self, _rows: usize) -> Result<Option<Chunk>, ExportError> {
        self.rx.recv().await.transpose()
    }

    /// The file's schema (`None` for a file without rows).
    pub fn schema(&self) -> Option<arrow::datatypes::SchemaRef> {
        self.schema.clone()
    }

    /// Label columns per row.
    pub fn label_columns(&self) -> usize {
        self.schema.as_ref().map_or(0, |s| s.fields().len())
    }

    /// Waits for the reader thread.
    ///
    /// # Errors
    /// Never in practice (errors come through [`Reader::next_chunk`]).
    pub fn finish(mut self) -> Result<(), ExportError> {
        self.rx.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Ok(())
    }
}

/// A decoded batch as a chunk: keys and times extracted. `first` is the batch's first row
/// (0-based) in the file, for messages.
fn chunk(
    path: &Path,
    batch: RecordBatch,
    first: u64,
    opts: &ExportOptions,
) -> Result<Chunk, ExportError> {
    let err = |message: String| ExportError::Labels {
        path: path.to_path_buf(),
        message,
    };
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| err(format!("no column {name:?} in a later batch")))
    };
    let (key_col, time_col) = (col(&opts.key_column)?, col(&opts.time_column)?);
    let (kc, tc) = (opts.key_column.as_str(), opts.time_column.as_str());
    let at = |i: usize| first + i as u64 + 1;
    let keys: Vec<EntityKey> = match key_col.data_type() {
        t if is_text(t) => {
            let mut keys = Vec::with_capacity(batch.num_rows());
            texts(&key_col, kc, first, |i, v| {
                keys.push(if opts.int_keys {
                    EntityKey::from(v.parse::<i64>().map_err(|_| {
                        format!("row {}: key {v:?} in column {kc:?} is not an int64", at(i))
                    })?)
                } else {
                    EntityKey::from(v)
                });
                Ok(())
            })
            .map_err(err)?;
            keys
        }
        t if t.is_integer() => ints(&key_col, kc, first)
            .map_err(err)?
            .into_iter()
            .map(|v| {
                if opts.int_keys {
                    EntityKey::from(v)
                } else {
                    EntityKey::from(v.to_string().as_str())
                }
            })
            .collect(),
        t => {
            return Err(err(format!(
                "key column {kc:?} is {t}: expected strings or integers"
            )));
        }
    };
    let times: Vec<i64> = match time_col.data_type() {
        DataType::Timestamp(unit, _) => {
            let unit = *unit;
            let v = ints(&time_col, tc, first).map_err(err)?;
            v.into_iter().map(|v| to_micros(v, unit)).collect()
        }
        t if t.is_integer() => {
            let unit = match opts.time_unit {
                TimeUnit::Seconds => ArrowUnit::Second,
                TimeUnit::Millis => ArrowUnit::Millisecond,
                TimeUnit::Micros => ArrowUnit::Microsecond,
                TimeUnit::Nanos => ArrowUnit::Nanosecond,
            };
            let v = ints(&time_col, tc, first).map_err(err)?;
            v.into_iter().map(|v| to_micros(v, unit)).collect()
        }
        t if is_text(t) => {
            let mut times = Vec::with_capacity(batch.num_rows());
            texts(&time_col, tc, first, |i, v| {
                times.push(parse_time(v).ok_or_else(|| {
                    format!(
                        "row {}: time {v:?} in column {tc:?} is not an RFC 3339 time",
                        at(i)
                    )
                })?);
                Ok(())
            })
            .map_err(err)?;
            times
        }
        t => {
            return Err(err(format!(
                "time column {tc:?} is {t}: expected a timestamp, an integer ({:?}) or RFC 3339 text",
                opts.time_unit
            )));
        }
    };
    Ok(Chunk { batch, keys, times })
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// The cells of integer (or timestamp) column `name` as i64; a null names its row
/// (`first`: the batch's first row in the file, 0-based).
fn ints(col: &arrow::array::ArrayRef, name: &str, first: u64) -> Result<Vec<i64>, String> {
    let v = arrow::compute::cast(col, &DataType::Int64).map_err(|e| e.to_string())?;
    let v = v.as_primitive::<Int64Type>();
    if let Some(i) = (0..v.len()).find(|i| v.is_null(*i)) {
        return Err(format!(
            "row {}: column {name:?} is null",
            first + i as u64 + 1
        ));
    }
    Ok(v.values().to_vec())
}

/// Calls `f(row in batch, text)` for each cell of text column `name`; a null names its
/// row.
fn texts(
    col: &arrow::array::ArrayRef,
    name: &str,
    first: u64,
    mut f: impl FnMut(usize, &str) -> Result<(), String>,
) -> Result<(), String> {
    let s = arrow::compute::cast(col, &DataType::Utf8).map_err(|e| e.to_string())?;
    let s = s.as_string::<i32>();
    for i in 0..s.len() {
        if s.is_null(i) {
            return Err(format!(
                "row {}: column {name:?} is null",
                first + i as u64 + 1
            ));
        }
        f(i, s.value(i))?;
    }
    Ok(())
}

/// [`chunk`], for the unit tests.
#[cfg(test)]
pub(super) fn chunk_for_tests(
    path: &Path,
    batch: RecordBatch,
    first: u64,
    opts: &ExportOptions,
) -> Result<Chunk, ExportError> {
    chunk(path, batch, first, opts)
}

/// µs since the epoch of an RFC 3339 time in UTC (`2026-11-30T10:00:00Z`, fractions
/// allowed; a space for the `T` too).
fn parse_time(s: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(s.trim()).ok()?;
    Some(match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    })
}
