//! `quiverctl export`: a training set with a progress line on stderr.

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use quiver_client::Client;
use quiver_client::export::{ExportOptions, export, export_through_node};
use quiver_proto::transport::Credentials;

/// How an export reaches the cluster.
pub enum Via<'a> {
    /// The smart client: each shard's keys to its replicas.
    Smart(Client),
    /// One node's `ExportFeatures` stream (credentials, address).
    Node(&'a Credentials, &'a str),
}

/// Exports `labels` to `out`, reporting progress about twice a second and a summary.
///
/// # Errors
/// The export's error (the row, column or chunk it names).
pub async fn run(
    via: Via<'_>,
    labels: &Path,
    out: &Path,
    opts: &ExportOptions,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last = Instant::now();
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let progress = |rows| {
        if last.elapsed().as_millis() >= 500 {
            last = Instant::now();
            let rate = rows as f64 / started.elapsed().as_secs_f64().max(1e-9);
            let end = if interactive { "\r" } else { "\n" };
            eprint!("exported {rows} label rows ({rate:.0} rows/s){end}");
            let _ = std::io::stderr().flush();
        }
    };
    let summary = match via {
        Via::Smart(client) => export(&client, labels, out, opts, progress).await?,
        Via::Node(credentials, addr) => {
            export_through_node(credentials, addr, labels, out, opts, progress).await?
        }
    };
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "exported {} label rows × {} features to {} in {secs:.1} s ({:.0} rows/s)",
        summary.rows,
        summary.features,
        out.display(),
        summary.rows as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// Backfills `view` from `from`, reporting progress and a summary.
///
/// # Errors
/// The backfill's error (the row and column, or the failed push and how to resume).
pub async fn backfill(
    client: &Client,
    view: &str,
    from: &Path,
    opts: &quiver_client::export::backfill::BackfillOptions,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last = Instant::now();
    let summary = quiver_client::export::backfill::backfill(client, view, from, opts, |rows| {
        if last.elapsed().as_millis() >= 500 {
            last = Instant::now();
            eprintln!("backfilled {rows} rows");
        }
    })
    .await?;
    eprintln!(
        "backfilled {} of {} rows of {} into {view} in {:.1} s{}",
        summary.pushed,
        summary.rows,
        from.display(),
        started.elapsed().as_secs_f64(),
        if summary.pushed < summary.rows {
            " (the rest were pushed by an earlier run)"
        } else {
            ""
        }
    );
    Ok(())
}
