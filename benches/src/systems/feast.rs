//! Feast's feature server (PyPI `feast`, installed by `setup.sh`) on a Redis online store
//! (the same `redis-server` as the Redis peer, database 1), materialised with the same
//! rows through `write_to_online_store`, queried over its HTTP API
//! (`POST /get-online-features`) with the same entity batches.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::http::HttpPool;
use super::{Fetched, LookupFuture, System};
use crate::env::dataset::{feature_refs, key, view};
use crate::env::{Dataset, Progress};

const LOADER: &str = include_str!("feast.py");

/// Feast as a [`System`]; its server is stopped on drop.
pub struct Feast {
    server: Child,
    http: HttpPool,
    /// `"features":[...]` of each view, encoded once.
    features_json: HashMap<u32, Arc<String>>,
}

/// The last lines of a failed Python process's stderr (where its exception is), on one line.
fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let mut lines: Vec<&str> = text.lines().rev().take(5).collect();
    lines.reverse();
    lines.join(" | ")
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("{what}: start"))?;
    if !out.status.success() {
        bail!("{what} failed: {}", stderr_tail(&out.stderr));
    }
    Ok(())
}

/// Whether the `feast` command is installed.
pub fn installed() -> bool {
    Command::new("feast")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Feast {
    /// Writes a feature repository under `dir`, applies it, loads `ds` into the online
    /// store in Redis database 1 at `redis_port`, and starts `feast serve` with `workers`
    /// worker processes.
    ///
    /// # Errors
    /// When a step fails (the message carries Feast's last lines).
    pub fn start(
        dir: &Path,
        redis_port: u16,
        ds: &Dataset,
        features: &[u32],
        workers: usize,
    ) -> anyhow::Result<Feast> {
        let repo = dir.join("feast_repo");
        std::fs::create_dir_all(&repo)?;
        let loader = dir.join("feast_loader.py");
        std::fs::write(&loader, LOADER)?;
        std::fs::write(
            repo.join("feature_store.yaml"),
            format!(
                "project: quiverbench\nregistry: registry.db\nprovider: local\nonline_store:\n  type: redis\n  connection_string: \"127.0.0.1:{redis_port},db=1\"\nentity_key_serialization_version: 3\n"
            ),
        )?;
        let mut defs = String::from(
            "from datetime import timedelta\nfrom feast import Entity, FeatureView, Field, FileSource, ValueType\nfrom feast.types import Float64\n\nuser = Entity(name=\"user\", join_keys=[\"user_id\"], value_type=ValueType.STRING)\nsource = FileSource(path=\"data.parquet\", timestamp_field=\"ts\")\n",
        );
        for f in features {
            defs.push_str(&format!(
                "{v} = FeatureView(name=\"{v}\", entities=[user], ttl=timedelta(days=3650), online=True, source=source,\n    schema=[Field(name=f\"f{{i}}\", dtype=Float64) for i in range({f})])\n",
                v = view(*f)
            ));
        }
        std::fs::write(repo.join("definitions.py"), defs)?;
        let list = features
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        run(
            Command::new("python3")
                .arg(&loader)
                .arg("prepare")
                .arg(&repo)
                .arg(&list),
            "feast: write the offline source",
        )?;
        run(
            Command::new("feast").current_dir(&repo).arg("apply"),
            "feast apply",
        )?;
        load(&loader, &repo, ds, &list, features.len())?;
        let port = quiver_testkit::free_port();
        let server = Command::new("feast")
            .current_dir(&repo)
            .args(["serve", "-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["--workers", &workers.max(1).to_string(), "--no-access-log"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("feast_serve.log"))?)
            .spawn()
            .context("start feast serve")?;
        let feast = Feast {
            server,
            http: HttpPool::new(port, 32),
            features_json: features
                .iter()
                .map(|f| {
                    let refs = serde_json::to_string(&feature_refs(*f)).unwrap_or_default();
                    (*f, Arc::new(format!("\"features\":{refs}")))
                })
                .collect(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while crate::env::http_get("127.0.0.1", port, "/health").is_err() {
            if Instant::now() > deadline {
                bail!(
                    "feast serve did not answer /health (log: {})",
                    dir.join("feast_serve.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(feast)
    }

    /// `POST /get-online-features`: the body of a 200 answer.
    fn get_online_features(
        &self,
        features: u32,
        keys: &[u32],
    ) -> impl std::future::Future<Output = Result<Vec<u8>, String>> + Send + 'static {
        let req = self
            .http
            .post_json("/get-online-features", self.body(features, keys));
        async move {
            let r = req.await?;
            if r.status != 200 {
                return Err(format!(
                    "HTTP {}: {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ));
            }
            Ok(r.body)
        }
    }

    fn body(&self, features: u32, keys: &[u32]) -> Vec<u8> {
        let f = self
            .features_json
            .get(&features)
            .map(|s| s.as_str())
            .unwrap_or("\"features\":[]");
        let keys: Vec<String> = keys.iter().map(|k| format!("\"{}\"", key(*k))).collect();
        format!("{{{f},\"entities\":{{\"user_id\":[{}]}}}}", keys.join(",")).into_bytes()
    }
}

fn load(
    loader: &PathBuf,
    repo: &Path,
    ds: &Dataset,
    list: &str,
    views: usize,
) -> anyhow::Result<()> {
    let mut child = Command::new("python3")
        .arg(loader)
        .arg("load")
        .arg(repo)
        .arg(ds.entities.to_string())
        .arg(ds.seed.to_string())
        .arg(list)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start the Feast loader")?;
    let bar = Progress::new("load feast", u64::from(ds.entities) * views as u64);
    let mut done_views = 0u64;
    let mut last = 0u64;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let n: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if n < last {
                done_views += 1;
            }
            last = n;
            bar.set(done_views * u64::from(ds.entities) + n);
        }
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("the Feast loader failed: {}", stderr_tail(&out.stderr));
    }
    bar.finish();
    Ok(())
}

impl Drop for Feast {
    fn drop(&mut self) {
        // gunicorn's workers follow their master on SIGTERM.
        let _ = Command::new("kill")
            .args(["-TERM", &self.server.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.server.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn parse(body: &[u8], keys: usize, features: u32) -> Result<Fetched, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let results = v["results"].as_array().ok_or("no results")?;
    // Columns come in Feast's own order (not the request's), named in the metadata.
    let names = v["metadata"]["feature_names"]
        .as_array()
        .ok_or("no feature_names")?;
    let column = |i: u32| {
        let want = format!("f{i}");
        names
            .iter()
            .position(|n| n.as_str() == Some(want.as_str()))
            .and_then(|p| results.get(p))
            .ok_or_else(|| format!("no column {want}"))
    };
    let cols = (0..features).map(column).collect::<Result<Vec<_>, _>>()?;
    Ok((0..keys)
        .map(|row| cols.iter().map(|c| c["values"][row].as_f64()).collect())
        .collect())
}

impl System for Feast {
    fn name(&self) -> &'static str {
        "feast"
    }

    fn server_pids(&self) -> Vec<u32> {
        vec![self.server.id()]
    }

    fn lookup(&self, features: u32, keys: &[u32]) -> LookupFuture {
        let req = self.get_online_features(features, keys);
        Box::pin(async move { req.await.map(drop) })
    }

    fn fetch(
        &self,
        features: u32,
        keys: &[u32],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Fetched, String>> + Send>> {
        let (n, req) = (keys.len(), self.get_online_features(features, keys));
        Box::pin(async move { parse(&req.await?, n, features) })
    }
}
