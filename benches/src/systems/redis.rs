//! Redis (Debian's `redis-server`, started by the tool on a free loopback port, no
//! persistence) holding every row as a hash `bench_f{F}:{key}` with fields `f0..`, read
//! with one pipelined HMGET per key of a batch — what a team would build by hand instead
//! of quiver. The RESP client is a few lines over a pool of connections.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::{Fetched, LookupFuture, System};
use crate::env::dataset::{key, view};
use crate::env::{Dataset, Progress};

/// A `redis-server` process; killed on drop.
pub struct RedisServer {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port and waits until it answers.
    ///
    /// # Errors
    /// When it is not installed or does not start.
    pub fn start() -> anyhow::Result<RedisServer> {
        let port = quiver_testkit::free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start redis-server (Debian package redis-server)")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(RedisServer { child, port })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One RESP connection.
struct Conn {
    io: BufStream<TcpStream>,
    line: Vec<u8>,
}

impl Conn {
    async fn connect(port: u16) -> std::io::Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.set_nodelay(true)?;
        Ok(Conn {
            io: BufStream::new(s),
            line: Vec::with_capacity(64),
        })
    }

    async fn read_line(&mut self) -> Result<&[u8], String> {
        self.line.clear();
        self.io
            .read_until(b'\n', &mut self.line)
            .await
            .map_err(|e| e.to_string())?;
        if self.line.len() < 3 || !self.line.ends_with(b"\r\n") {
            return Err("connection closed".into());
        }
        if self.line[0] == b'-' {
            return Err(String::from_utf8_lossy(&self.line[1..self.line.len() - 2]).into_owned());
        }
        Ok(&self.line[..self.line.len() - 2])
    }

    fn number(line: &[u8]) -> Result<i64, String> {
        std::str::from_utf8(&line[1..])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad RESP line {:?}", String::from_utf8_lossy(line)))
    }

    /// Reads one array reply of bulk strings; `sink` sees each element.
    async fn read_array(&mut self, mut sink: impl FnMut(Option<&[u8]>)) -> Result<usize, String> {
        let n = Self::number(self.read_line().await?)?;
        let mut bulk = Vec::new();
        for _ in 0..n {
            let len = Self::number(self.read_line().await?)?;
            if len < 0 {
                sink(None);
                continue;
            }
            bulk.resize(len as usize + 2, 0);
            self.io
                .read_exact(&mut bulk)
                .await
                .map_err(|e| e.to_string())?;
            sink(Some(&bulk[..len as usize]));
        }
        Ok(n.max(0) as usize)
    }
}

fn put_bulk(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", s.len()).as_bytes());
    out.extend_from_slice(s);
    out.extend_from_slice(b"\r\n");
}

/// Redis as a [`System`].
pub struct Redis {
    conns: Vec<Arc<Mutex<Conn>>>,
    next: AtomicUsize,
    /// The field list of each view's HMGET (`$2\r\nf0\r\n…`), encoded once.
    fields: HashMap<u32, Arc<Vec<u8>>>,
    pid: u32,
}

impl Redis {
    /// Connects `connections` clients to `server` and loads every entity of `ds` into a
    /// hash per view of `features`.
    ///
    /// # Errors
    /// When connecting or loading fails.
    pub async fn load(
        server: &RedisServer,
        connections: usize,
        ds: &Dataset,
        features: &[u32],
    ) -> anyhow::Result<Redis> {
        let mut conns = Vec::new();
        for _ in 0..connections.max(1) {
            conns.push(Arc::new(Mutex::new(Conn::connect(server.port).await?)));
        }
        let mut fields = HashMap::new();
        for f in features {
            let mut enc = Vec::new();
            for i in 0..*f {
                put_bulk(&mut enc, format!("f{i}").as_bytes());
            }
            fields.insert(*f, Arc::new(enc));
        }
        let r = Redis {
            conns,
            next: AtomicUsize::new(0),
            fields,
            pid: server.pid(),
        };
        for f in features {
            let bar = Progress::new(&format!("load redis {}", view(*f)), u64::from(ds.entities));
            let mut c = r.conns[0].lock().await;
            let mut k = 0;
            while k < ds.entities {
                let end = (k + 500).min(ds.entities);
                let mut cmd = Vec::new();
                for e in k..end {
                    cmd.extend_from_slice(format!("*{}\r\n", 2 + 2 * f).as_bytes());
                    put_bulk(&mut cmd, b"HSET");
                    put_bulk(&mut cmd, format!("{}:{}", view(*f), key(e)).as_bytes());
                    for i in 0..*f {
                        put_bulk(&mut cmd, format!("f{i}").as_bytes());
                        put_bulk(&mut cmd, ds.value(e, i).to_string().as_bytes());
                    }
                }
                c.io.write_all(&cmd).await?;
                c.io.flush().await?;
                for _ in k..end {
                    c.read_line()
                        .await
                        .map_err(|e| anyhow::anyhow!("HSET: {e}"))?;
                }
                k = end;
                bar.set(u64::from(k));
            }
            bar.finish();
        }
        Ok(r)
    }

    fn command(&self, features: u32, keys: &[u32]) -> Vec<u8> {
        let fields = self
            .fields
            .get(&features)
            .map(|f| f.as_slice())
            .unwrap_or_default();
        let v = view(features);
        let mut cmd = Vec::with_capacity(keys.len() * (fields.len() + 40));
        for k in keys {
            cmd.extend_from_slice(format!("*{}\r\n", 2 + features).as_bytes());
            put_bulk(&mut cmd, b"HMGET");
            put_bulk(&mut cmd, format!("{v}:{}", key(*k)).as_bytes());
            cmd.extend_from_slice(fields);
        }
        cmd
    }

    fn conn(&self) -> Arc<Mutex<Conn>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }
}

/// Sends one pipeline of HMGETs and reads the replies, each element through `sink(key
/// index, value)`.
async fn pipeline(
    conn: Arc<Mutex<Conn>>,
    cmd: Vec<u8>,
    keys: usize,
    features: u32,
    mut sink: impl FnMut(usize, Option<&[u8]>),
) -> Result<(), String> {
    let mut c = conn.lock().await;
    c.io.write_all(&cmd).await.map_err(|e| e.to_string())?;
    c.io.flush().await.map_err(|e| e.to_string())?;
    for i in 0..keys {
        let n = c.read_array(|v| sink(i, v)).await?;
        if n != features as usize {
            return Err(format!("HMGET answered {n} fields, expected {features}"));
        }
    }
    Ok(())
}

impl System for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn server_pids(&self) -> Vec<u32> {
        vec![self.pid]
    }

    fn lookup(&self, features: u32, keys: &[u32]) -> LookupFuture {
        let (conn, cmd, n) = (self.conn(), self.command(features, keys), keys.len());
        Box::pin(async move {
            let mut missing = 0;
            pipeline(conn, cmd, n, features, |_, v| {
                missing += usize::from(v.is_none())
            })
            .await?;
            if missing > 0 {
                return Err(format!("{missing} values missing"));
            }
            Ok(())
        })
    }

    fn fetch(
        &self,
        features: u32,
        keys: &[u32],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Fetched, String>> + Send>> {
        let (conn, cmd, n) = (self.conn(), self.command(features, keys), keys.len());
        Box::pin(async move {
            let mut out: Fetched = vec![Vec::new(); n];
            pipeline(conn, cmd, n, features, |i, v| {
                out[i].push(v.and_then(|b| std::str::from_utf8(b).ok()?.parse().ok()));
            })
            .await?;
            Ok(out)
        })
    }
}
