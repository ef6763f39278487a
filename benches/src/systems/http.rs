//! HTTP/1.1 for Feast's feature server through hyper (the client stack a Rust team would
//! use): pooled keep-alive connections, both body framings.

use std::sync::Arc;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A pool of keep-alive connections to one loopback server.
pub struct HttpPool {
    client: Client<HttpConnector, Full<Bytes>>,
    base: Arc<str>,
}

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpPool {
    /// A pool of up to `size` idle connections to `127.0.0.1:port` (opened on use).
    pub fn new(port: u16, size: usize) -> HttpPool {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(size.max(1))
            .build(connector);
        HttpPool {
            client,
            base: format!("http://127.0.0.1:{port}").into(),
        }
    }

    /// POSTs `body` as JSON to `path`.
    pub fn post_json(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<Response, String>> + Send + 'static {
        let request = hyper::Request::post(format!("{}{path}", self.base))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)));
        let client = self.client.clone();
        async move {
            let request = request.map_err(|e| e.to_string())?;
            let resp = client.request(request).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes()
                .to_vec();
            Ok(Response { status, body })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn posts_and_reads_both_body_framings_on_one_connection() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let mut io = BufStream::new(s);
            for reply in [
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_string(),
                "HTTP/1.1 422 Unprocessable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n".to_string(),
            ] {
                let mut line = String::new();
                let mut len = 0;
                loop {
                    line.clear();
                    io.read_line(&mut line).await.unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                io.read_exact(&mut body).await.unwrap();
                assert_eq!(body, b"{\"a\":1}");
                io.write_all(reply.as_bytes()).await.unwrap();
                io.flush().await.unwrap();
            }
        });
        let pool = HttpPool::new(port, 1);
        let r = pool.post_json("/x", b"{\"a\":1}".to_vec()).await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        let r = pool.post_json("/x", b"{\"a\":1}".to_vec()).await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (422, &b"abcde"[..]));
    }
}
