//! A minimal HTTP/1.1 client with keep-alive connections, enough to POST JSON to Feast's
//! feature server at load without a heavyweight dependency: `Content-Length` and chunked
//! bodies; a connection that fails is dropped and reopened by the next request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// A pool of keep-alive connections to one loopback server.
pub struct HttpPool {
    port: u16,
    conns: Vec<Arc<Mutex<Option<BufStream<TcpStream>>>>>,
    next: AtomicUsize,
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
    /// A pool of up to `size` connections to `127.0.0.1:port` (opened on first use).
    pub fn new(port: u16, size: usize) -> HttpPool {
        HttpPool {
            port,
            conns: (0..size.max(1))
                .map(|_| Arc::new(Mutex::new(None)))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// POSTs `body` as JSON to `path`, on the next connection of the pool.
    pub fn post_json(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<Response, String>> + Send + 'static {
        let slot = self.conns[self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len()].clone();
        let port = self.port;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        async move {
            let mut guard = slot.lock().await;
            if guard.is_none() {
                let s = TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                *guard = Some(BufStream::new(s));
            }
            let io = guard.as_mut().expect("set above");
            let result = exchange(io, head.as_bytes(), &body).await;
            if result.is_err() {
                *guard = None;
            }
            result
        }
    }
}

async fn exchange(
    io: &mut BufStream<TcpStream>,
    head: &[u8],
    body: &[u8],
) -> Result<Response, String> {
    let e = |e: std::io::Error| e.to_string();
    io.write_all(head).await.map_err(e)?;
    io.write_all(body).await.map_err(e)?;
    io.flush().await.map_err(e)?;
    let mut line = String::new();
    io.read_line(&mut line).await.map_err(e)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    loop {
        line.clear();
        if io.read_line(&mut line).await.map_err(e)? == 0 {
            return Err("connection closed in the header".into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    if chunked {
        loop {
            line.clear();
            io.read_line(&mut line).await.map_err(e)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| format!("bad chunk size {line:?}"))?;
            let start = out.len();
            out.resize(start + size, 0);
            io.read_exact(&mut out[start..]).await.map_err(e)?;
            line.clear();
            io.read_line(&mut line).await.map_err(e)?;
            if size == 0 {
                break;
            }
        }
    } else {
        let n = length.ok_or("response without Content-Length")?;
        out.resize(n, 0);
        io.read_exact(&mut out).await.map_err(e)?;
    }
    if close {
        return Err("server closed the connection".into());
    }
    Ok(Response { status, body: out })
}

#[cfg(test)]
mod tests {
    use super::*;
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
