//! Redis (Debian's `redis-server`, started by the tool on a free loopback port, no
//! persistence) holding every row as a hash `bench_f{F}:{key}` with fields `f0..`, read
//! with one pipelined HMGET per key of a batch — what a team would build by hand instead
//! of quiver — through the `redis` crate, the client such a team would use.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use redis::aio::MultiplexedConnection;

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

/// Redis as a [`System`]: the `redis` crate's multiplexed async connections (what a team
/// would use from Rust), one pipeline of HMGETs per lookup, values parsed as `f64`.
pub struct Redis {
    conns: Vec<MultiplexedConnection>,
    next: AtomicUsize,
    /// The field names of each view's HMGET (`f0`, `f1`, …).
    fields: HashMap<u32, Arc<Vec<String>>>,
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
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", server.port))
            .context("redis client")?;
        let mut conns = Vec::new();
        for _ in 0..connections.max(1) {
            conns.push(
                client
                    .get_multiplexed_async_connection()
                    .await
                    .context("connect to redis")?,
            );
        }
        let fields: HashMap<u32, Arc<Vec<String>>> = features
            .iter()
            .map(|f| (*f, Arc::new((0..*f).map(|i| format!("f{i}")).collect())))
            .collect();
        let r = Redis {
            conns,
            next: AtomicUsize::new(0),
            fields,
            pid: server.pid(),
        };
        let mut c = r.conns[0].clone();
        for f in features {
            let bar = Progress::new(&format!("load redis {}", view(*f)), u64::from(ds.entities));
            let names = &r.fields[f];
            let mut k = 0;
            while k < ds.entities {
                let end = (k + 500).min(ds.entities);
                let mut pipe = redis::pipe();
                for e in k..end {
                    // Rust's Display: the shortest text that parses back to the value.
                    let items: Vec<(&str, String)> = names
                        .iter()
                        .enumerate()
                        .map(|(i, n)| (n.as_str(), ds.value(e, i as u32).to_string()))
                        .collect();
                    pipe.hset_multiple(format!("{}:{}", view(*f), key(e)), &items)
                        .ignore();
                }
                let () = pipe.query_async(&mut c).await.context("HSET")?;
                k = end;
                bar.set(u64::from(k));
            }
            bar.finish();
        }
        Ok(r)
    }

    fn pipeline(&self, features: u32, keys: &[u32]) -> redis::Pipeline {
        let fields = self.fields.get(&features).cloned().unwrap_or_default();
        let v = view(features);
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("HMGET")
                .arg(format!("{v}:{}", key(*k)))
                .arg(fields.as_slice());
        }
        pipe
    }

    fn conn(&self) -> MultiplexedConnection {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }
}

/// Runs a pipeline of HMGETs: per key, the values of its fields (`None` if missing).
async fn run(
    mut conn: MultiplexedConnection,
    pipe: redis::Pipeline,
    features: u32,
) -> Result<Fetched, String> {
    let rows: Vec<Vec<Option<f64>>> = pipe
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(r) = rows.iter().find(|r| r.len() != features as usize) {
        return Err(format!(
            "HMGET answered {} fields, expected {features}",
            r.len()
        ));
    }
    Ok(rows)
}

impl System for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn server_pids(&self) -> Vec<u32> {
        vec![self.pid]
    }

    fn lookup(&self, features: u32, keys: &[u32]) -> LookupFuture {
        let (conn, pipe) = (self.conn(), self.pipeline(features, keys));
        Box::pin(async move {
            let rows = run(conn, pipe, features).await?;
            let missing: usize = rows.iter().flatten().filter(|v| v.is_none()).count();
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
        let (conn, pipe) = (self.conn(), self.pipeline(features, keys));
        Box::pin(run(conn, pipe, features))
    }
}
