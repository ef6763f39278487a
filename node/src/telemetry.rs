//! Logging and the Prometheus endpoint, installed once per process by binaries.

use std::convert::Infallible;
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tracing::warn;
use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber: `format` is `"plain"` or `"json"`; `RUST_LOG`
/// overrides `default_level`. Plain logs are coloured only when stderr is a terminal, so
/// log files and collectors get no escape codes.
pub fn init_logging(format: &str, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The recorder could not be built or installed (one per process).
    #[error("prometheus recorder: {0}")]
    Recorder(String),
    /// The listen address could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Installs the Prometheus recorder, describes every metric and serves `/metrics` on
/// `addr` (HTTP/1.1) until the process exits. Must run inside a tokio runtime.
///
/// The exposition is the recorder's, followed by the process metrics read from `/proc`
/// at scrape time (`process_cpu_seconds_total` as a counter of seconds with the kernel's
/// 10 ms resolution, `process_resident_memory_bytes`): the `metrics` crate's counters are
/// integers, which truncated CPU time to whole seconds.
///
/// # Errors
/// If the listener cannot bind or a recorder is already installed.
pub async fn init_metrics(addr: SocketAddr, node_id: u64) -> Result<(), MetricsError> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ],
        )
        .map_err(|e| MetricsError::Recorder(e.to_string()))?
        .set_buckets_for_metric(
            Matcher::Full(crate::metrics::AGG_TILES_PER_READ.into()),
            &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
        )
        .map_err(|e| MetricsError::Recorder(e.to_string()))?
        .add_global_label("node", node_id.to_string())
        .build_recorder();
    let handle = recorder.handle();
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    metrics::set_global_recorder(recorder).map_err(|e| MetricsError::Recorder(e.to_string()))?;
    crate::metrics::describe();
    // Histogram buckets and idle series are maintained by upkeep, which only the
    // exporter's own listener would run for us.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    tokio::spawn(serve_metrics(listener, handle, node_id));
    Ok(())
}

async fn serve_metrics(listener: TcpListener, handle: PrometheusHandle, node_id: u64) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handle = handle.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let handle = handle.clone();
            async move { Ok::<_, Infallible>(respond(&req, &handle, node_id)) }
        });
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            // A scraper that hangs up mid-response is not worth a warning.
            let _ = conn.await;
        });
    }
}

fn respond(
    req: &Request<Incoming>,
    handle: &PrometheusHandle,
    node_id: u64,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if req.method() != hyper::Method::GET || !(path == "/metrics" || path == "/") {
        let mut not_found = Response::new(Full::new(Bytes::from_static(
            b"quiver-node serves Prometheus metrics on GET /metrics\n",
        )));
        *not_found.status_mut() = StatusCode::NOT_FOUND;
        return not_found;
    }
    let mut body = handle.render();
    crate::metrics::render_process(&mut body, node_id);
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
