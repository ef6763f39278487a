//! Files in and out of the cluster: point-in-time training sets here, and backfill of
//! historical rows from files ([`backfill`]).
//!
//! Point-in-time training sets: a label set (entity key, timestamp, any label columns) in,
//! the label set with each requested feature as of its row's timestamp out — read through
//! the smart client with per-key as-of lookups (docs/POINT_IN_TIME.md), so training reads
//! the same values, through the same code path, as inference.
//!
//! Streamed with bounded memory: a reader thread decodes the label file in batches
//! ([`labels`]), chunks of `chunk_rows` rows are looked up with at most `parallel` chunks
//! in flight (in order), and a writer thread appends each answered chunk to the Parquet
//! output as it comes ([`columns`] builds the feature columns). At no point does more than
//! `(parallel + 4) × chunk_rows` rows' worth of data exist.

pub mod backfill;
mod columns;
mod labels;
#[cfg(test)]
mod tests;
mod through_node;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use parquet::arrow::ArrowWriter;

use crate::{Client, ClientError, Lookup};

pub use columns::status_name;
pub use labels::TimeUnit;

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Feature references (`view:feature`, `view:*`); or set `feature_service`.
    pub features: Vec<String>,
    /// A feature service instead of `features`.
    pub feature_service: Option<String>,
    /// The label column holding entity keys.
    pub key_column: String,
    /// The label column holding each row's timestamp.
    pub time_column: String,
    /// Unit of an integer time column.
    pub time_unit: TimeUnit,
    /// The entity's keys are int64 (else strings; integer key columns are then read as
    /// their decimal text).
    pub int_keys: bool,
    /// Only versions that had arrived by each row's time: exactly what a lookup then
    /// returned (the default for training).
    pub exclude_late_arrivals: bool,
    /// Also write a `<feature>__status` column (`PRESENT`, `NOT_FOUND`, `EXPIRED`); without
    /// it a value that is not present is a null.
    pub status_columns: bool,
    /// Rows per lookup (at most the nodes' `max_batch_keys`).
    pub chunk_rows: usize,
    /// Chunks in flight.
    pub parallel: usize,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            features: Vec::new(),
            feature_service: None,
            key_column: "key".into(),
            time_column: "timestamp".into(),
            time_unit: TimeUnit::Micros,
            int_keys: false,
            exclude_late_arrivals: true,
            status_columns: false,
            chunk_rows: 1000,
            parallel: 4,
        }
    }
}

/// What an export did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    /// Label rows read and written.
    pub rows: u64,
    /// Feature columns written per row.
    pub features: usize,
}

/// Why an export failed. The output file is removed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The label file cannot be read, or a row of it is unusable (the message names the
    /// row and column).
    #[error("labels {path}: {message}")]
    Labels {
        /// The label file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The options are inconsistent.
    #[error("invalid export: {0}")]
    Invalid(String),
    /// A lookup failed.
    #[error("lookup of label rows {first}..{end}: {source}")]
    Lookup {
        /// First row of the chunk.
        first: u64,
        /// One past its last row.
        end: u64,
        /// The client's error.
        #[source]
        source: ClientError,
    },
    /// Writing the output failed.
    #[error("output {path}: {message}")]
    Output {
        /// The output file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// Exports the training set of `labels` (Parquet, or CSV with a header) to `out`
/// (Parquet), calling `progress(rows done)` after each chunk.
///
/// # Errors
/// [`ExportError`] naming the file, row or chunk; nothing is left at `out` then.
pub async fn export(
    client: &Client,
    labels: &Path,
    out: &Path,
    opts: &ExportOptions,
    mut progress: impl FnMut(u64),
) -> Result<ExportSummary, ExportError> {
    check(opts)?;
    removed_on_error(
        out,
        run(Source::Smart(client), labels, out, opts, &mut progress).await,
    )
}

/// As [`export`], through one node's `ExportFeatures` stream (the node at `addr`, with
/// `credentials`) instead of the smart client: for a machine that reaches one node or a
/// load balancer, not every node. The node reads each shard it lacks from a replica on
/// the caller's behalf — one hop more per key than [`export`].
///
/// # Errors
/// As [`export`]; nothing is left at `out` then.
pub async fn export_through_node(
    credentials: &quiver_proto::transport::Credentials,
    addr: &str,
    labels: &Path,
    out: &Path,
    opts: &ExportOptions,
    mut progress: impl FnMut(u64),
) -> Result<ExportSummary, ExportError> {
    check(opts)?;
    let result = match through_node::NodeStream::open(credentials, addr, opts.parallel).await {
        Ok(stream) => run(Source::Node(stream), labels, out, opts, &mut progress).await,
        Err(e) => Err(e),
    };
    removed_on_error(out, result)
}

/// `result`, with the output file removed if it is an error (no partial training set).
fn removed_on_error(
    out: &Path,
    result: Result<ExportSummary, ExportError>,
) -> Result<ExportSummary, ExportError> {
    if result.is_err() {
        let _ = std::fs::remove_file(out);
    }
    result
}

fn check(opts: &ExportOptions) -> Result<(), ExportError> {
    if opts.features.is_empty() == opts.feature_service.is_none() {
        return Err(ExportError::Invalid(
            "give either features or a feature service".into(),
        ));
    }
    if opts.chunk_rows == 0 || opts.parallel == 0 {
        return Err(ExportError::Invalid(
            "chunk_rows and parallel must be at least 1".into(),
        ));
    }
    Ok(())
}

/// Where chunks are looked up.
enum Source<'c> {
    /// The smart client: each shard's keys from a replica of that shard.
    Smart(&'c Client),
    /// One node's `ExportFeatures` stream.
    Node(through_node::NodeStream),
}

/// One answered chunk, ready to write.
type Answered = Result<RecordBatch, ExportError>;

async fn run(
    source: Source<'_>,
    labels: &Path,
    out: &Path,
    opts: &ExportOptions,
    progress: &mut impl FnMut(u64),
) -> Result<ExportSummary, ExportError> {
    let mut input = labels::Reader::open(labels, opts)?;
    let mut writer: Option<Writer> = None;
    let (mut rows, mut features) = (0u64, 0usize);
    let mut in_flight: FuturesOrdered<
        std::pin::Pin<Box<dyn Future<Output = Answered> + Send + '_>>,
    > = FuturesOrdered::new();
    let mut next_row = 0u64;
    let mut input_done = false;
    loop {
        while !input_done && in_flight.len() < opts.parallel {
            match input.next_chunk(opts.chunk_rows).await? {
                Some(chunk) => {
                    let first = next_row;
                    next_row += chunk.batch.num_rows() as u64;
                    in_flight.push_back(match &source {
                        Source::Smart(client) => Box::pin(answer(client, chunk, first, opts)),
                        Source::Node(stream) => Box::pin(stream.answer(chunk, first, opts)),
                    });
                }
                None => input_done = true,
            }
        }
        let Some(answered) = in_flight.next().await else {
            break;
        };
        let batch = answered?;
        let w = match &mut writer {
            Some(w) => w,
            None => writer.insert(Writer::create(out, batch.schema())?),
        };
        features = batch.num_columns() - input.label_columns();
        rows += batch.num_rows() as u64;
        w.write(batch)?;
        progress(rows);
    }
    input.finish()?;
    match writer {
        Some(w) => w.close()?,
        None => {
            return Err(ExportError::Labels {
                path: labels.to_path_buf(),
                message: "the label set has no rows".into(),
            });
        }
    }
    if opts.status_columns {
        features /= 2;
    }
    Ok(ExportSummary { rows, features })
}

/// Looks up one chunk of label rows and appends its feature columns.
async fn answer(
    client: &Client,
    chunk: labels::Chunk,
    first: u64,
    opts: &ExportOptions,
) -> Answered {
    let end = first + chunk.batch.num_rows() as u64;
    let lookup = match &opts.feature_service {
        Some(s) => Lookup::feature_service(s.clone()),
        None => Lookup::features(opts.features.iter().cloned()),
    }
    .keys(chunk.keys)
    .as_of_per_key(chunk.times)
    .exclude_late_arrivals(opts.exclude_late_arrivals);
    let result = client
        .get_online_features(&lookup)
        .await
        .map_err(|source| ExportError::Lookup { first, end, source })?;
    columns::append(&chunk.batch, &result, opts.status_columns).map_err(ExportError::Invalid)
}

/// The Parquet output, written by its own thread (file I/O and compression off the async
/// workers) through a bounded channel.
struct Writer {
    tx: Option<std::sync::mpsc::SyncSender<RecordBatch>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
    path: PathBuf,
}

impl Writer {
    fn create(path: &Path, schema: SchemaRef) -> Result<Writer, ExportError> {
        let err = |message: String| ExportError::Output {
            path: path.to_path_buf(),
            message,
        };
        let file = std::fs::File::create(path).map_err(|e| err(e.to_string()))?;
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build();
        let mut w = ArrowWriter::try_new(file, Arc::clone(&schema), Some(props))
            .map_err(|e| err(e.to_string()))?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<RecordBatch>(2);
        let thread = std::thread::Builder::new()
            .name("export-writer".into())
            .spawn(move || {
                for batch in rx {
                    w.write(&batch).map_err(|e| e.to_string())?;
                    // Bounded memory: a row group per few chunks, not per file.
                    if w.in_progress_rows() >= 64 * 1024 {
                        w.flush().map_err(|e| e.to_string())?;
                    }
                }
                w.close().map(|_| ()).map_err(|e| e.to_string())
            })
            .map_err(|e| err(e.to_string()))?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
            path: path.to_path_buf(),
        })
    }

    fn write(&mut self, batch: RecordBatch) -> Result<(), ExportError> {
        let sent = self.tx.as_ref().map(|tx| tx.send(batch).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        // The thread ended early: its error says why.
        self.join().and(Err(ExportError::Output {
            path: self.path.clone(),
            message: "the writer stopped".into(),
        }))
    }

    fn close(mut self) -> Result<(), ExportError> {
        self.join()
    }

    fn join(&mut self) -> Result<(), ExportError> {
        self.tx = None;
        let Some(t) = self.thread.take() else {
            return Ok(());
        };
        let message = match t.join() {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(m)) => m,
            Err(_) => "the writer thread panicked".into(),
        };
        Err(ExportError::Output {
            path: self.path.clone(),
            message,
        })
    }
}
