//! The environment of a run: the machine, the dataset, the quiver cluster, and progress
//! on the terminal.

pub mod cluster;
pub mod dataset;
pub mod machine;
pub mod progress;
mod prom;

pub use cluster::{BenchCluster, ClusterSpec};
pub use dataset::{Dataset, KeyChoice};
pub use machine::Machine;
pub use progress::Progress;

use std::io::{Read, Write};
use std::time::Duration;

/// A plain HTTP/1.0 GET on loopback (Prometheus exporters, health checks): the body.
///
/// # Errors
/// When the server does not answer 200 within five seconds.
pub fn http_get(host: &str, port: u16, path: &str) -> anyhow::Result<String> {
    let mut s = std::net::TcpStream::connect((host, port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("GET {path}: no HTTP header"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        anyhow::bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}
