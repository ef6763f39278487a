//! The gRPC floor: a tonic service that answers every request with a payload of the size
//! quiver's lookup response has for the same batch, doing nothing else. It runs as a
//! process of its own (`quiver-bench serve-echo`, same runtime defaults as a node), so its
//! CPU is accounted like a node's. quiver's throughput over the echo's is the share of
//! the transport's limit that quiver reaches.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use tonic::transport::Channel;

use super::{Fetched, LookupFuture, System};
use crate::echo_proto::echo_client::EchoClient;
use crate::echo_proto::echo_server::{Echo as EchoService, EchoServer};
use crate::echo_proto::{EchoRequest, EchoResponse};

/// Largest answer the server builds.
const MAX_RESPONSE: u32 = 64 << 20;

struct Service;

#[tonic::async_trait]
impl EchoService for Service {
    async fn echo(
        &self,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoResponse>, tonic::Status> {
        let n = request.into_inner().response_bytes;
        if n > MAX_RESPONSE {
            return Err(tonic::Status::invalid_argument(format!(
                "response_bytes {n} is over {MAX_RESPONSE}"
            )));
        }
        Ok(tonic::Response::new(EchoResponse {
            payload: vec![0; n as usize],
        }))
    }
}

/// Serves the echo service on `addr` until the process is stopped.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    // The same transport settings as a quiver node and its clients: the floor must
    // pay what quiver pays.
    tonic::transport::Server::builder()
        .initial_stream_window_size(quiver_proto::transport::STREAM_WINDOW_BYTES)
        .initial_connection_window_size(quiver_proto::transport::CONNECTION_WINDOW_BYTES)
        .add_service(EchoServer::new(Service).max_decoding_message_size(256 << 20))
        .serve(addr)
        .await?;
    Ok(())
}

/// The echo floor as a [`System`]; its process is killed on drop.
pub struct Echo {
    child: Child,
    client: EchoClient<Channel>,
    /// (features, batch) → (request bytes, response bytes).
    sizes: Mutex<HashMap<(u32, usize), (usize, usize)>>,
}

impl Echo {
    /// Starts `exe serve-echo` on a free loopback port and connects to it.
    ///
    /// # Errors
    /// When the process does not start or listen.
    pub async fn start(exe: &std::path::Path) -> anyhow::Result<Echo> {
        let port = quiver_testkit::free_port();
        let child = Command::new(exe)
            .args(["serve-echo", "--addr", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start the echo server")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "the echo server did not listen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let channel = quiver_proto::transport::Credentials::none()
            .endpoint(&format!("127.0.0.1:{port}"))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        Ok(Echo {
            child,
            client: EchoClient::new(channel).max_decoding_message_size(256 << 20),
            sizes: Mutex::new(HashMap::new()),
        })
    }

    /// Sets the sizes of a (features, batch) case: quiver's request and response bytes.
    pub fn set_sizes(&self, features: u32, batch: usize, request: usize, response: usize) {
        self.sizes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((features, batch), (request, response));
    }

    fn request(&self, features: u32, batch: usize) -> EchoRequest {
        let (req, resp) = self
            .sizes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(features, batch))
            .copied()
            .unwrap_or((64, 64));
        EchoRequest {
            payload: vec![1; req],
            response_bytes: resp as u32,
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl System for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn server_pids(&self) -> Vec<u32> {
        vec![self.child.id()]
    }

    fn lookup(&self, features: u32, keys: &[u32]) -> LookupFuture {
        let (mut client, req) = (self.client.clone(), self.request(features, keys.len()));
        Box::pin(async move {
            let want = req.response_bytes as usize;
            let r = client.echo(req).await.map_err(|e| e.to_string())?;
            if r.get_ref().payload.len() != want {
                return Err("short echo".into());
            }
            Ok(())
        })
    }

    fn fetch(
        &self,
        _features: u32,
        _keys: &[u32],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Fetched, String>> + Send>> {
        Box::pin(async { Err("the echo floor holds no data".to_string()) })
    }
}
