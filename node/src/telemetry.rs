//! Logging and the Prometheus exporter, installed once per process by binaries.

use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber: `format` is `"plain"` or `"json"`; `RUST_LOG`
/// overrides `default_level`.
pub fn init_logging(format: &str, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Installs the Prometheus recorder and its HTTP listener (serving `/metrics`) and
/// describes every metric. Must run inside a tokio runtime.
///
/// # Errors
/// If the listener cannot bind or a recorder is already installed.
pub fn init_metrics(
    addr: SocketAddr,
    node_id: u64,
) -> Result<(), metrics_exporter_prometheus::BuildError> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ],
        )?
        .add_global_label("node", node_id.to_string())
        .install()?;
    crate::metrics::describe();
    Ok(())
}
