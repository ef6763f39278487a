//! The aggregation check: after healing and the broker audit, every replica of every shard
//! is asked, at the end of the log it re-read, for each key's lifetime count of records
//! and sum of their `seq` (the workload's aggregation view, computed by the replicas). Both
//! must equal what the broker's log holds for the key: a counted event is never lost
//! (kill -9, partitions, restarts, re-replication) and never counted twice.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use quiver_client::{FeatureStatus, Lookup};
use serde::Serialize;

use crate::probe::{cluster_map_by, connect, keys_by_shard, watermarks};
use crate::workload::{AGG_VIEW, key_name};

/// What the check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AggregateCheck {
    /// Keys with records in the log.
    pub keys_with_events: u64,
    /// (key, replica) answers compared.
    pub answers_checked: u64,
    /// Answers that differ from the log.
    pub mismatches: u64,
    /// The first few, described.
    pub examples: Vec<String>,
}

impl AggregateCheck {
    const EXAMPLES: usize = 5;

    /// Whether every replica counted exactly the log.
    pub fn ok(&self) -> bool {
        self.mismatches == 0 && self.answers_checked > 0
    }
}

/// Reads `events` and `seq_sum` of every key from every replica of its shard, each at
/// least at `log_end` of its shard, and compares them with `per_key` (key name → records
/// in the log, sum of their `seq`).
///
/// # Errors
/// When a replica cannot answer within `timeout`.
pub async fn check(
    endpoints: &[String],
    keys: u32,
    log_end: &BTreeMap<u32, i64>,
    per_key: &HashMap<String, (i64, i64)>,
    timeout: Duration,
) -> anyhow::Result<AggregateCheck> {
    let deadline = Instant::now() + timeout;
    let map = cluster_map_by(endpoints, deadline).await?;
    let by_shard = keys_by_shard(&map, keys);
    let mut out = AggregateCheck {
        keys_with_events: per_key.len() as u64,
        ..Default::default()
    };
    let (events, sum) = (format!("{AGG_VIEW}:events"), format!("{AGG_VIEW}:seq_sum"));
    for s in &map.shards {
        let shard_keys = by_shard.get(&s.shard).cloned().unwrap_or_default();
        let wm = watermarks(log_end.get_key_value(&s.shard));
        for r in &s.replicas {
            for chunk in shard_keys.chunks(500) {
                let res = loop {
                    let attempt = async {
                        let mut c = connect(&format!("http://{}", r.addr))
                            .await
                            .ok_or_else(|| "no connection".to_string())?;
                        let l = Lookup::features([events.as_str(), sum.as_str()])
                            .keys(chunk.iter().map(|k| key_name(*k)))
                            .min_watermarks(&wm);
                        c.get_online_features(l).await.map_err(|e| e.to_string())
                    };
                    let why = match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                        Ok(Ok(res)) => break res,
                        Ok(Err(e)) => e,
                        Err(_) => "no answer within 2 s".to_string(),
                    };
                    if Instant::now() > deadline {
                        anyhow::bail!(
                            "aggregate read of shard {} on node {} did not succeed in time (last: {why})",
                            s.shard,
                            r.node_id
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                };
                let (ec, sc) = (res.column_index(&events), res.column_index(&sum));
                for (row, k) in chunk.iter().enumerate() {
                    out.answers_checked += 1;
                    let name = key_name(*k);
                    let want = per_key.get(&name).copied();
                    let got = match (ec, sc) {
                        (Some(ec), Some(sc)) if res.status(row, ec) == FeatureStatus::Present => {
                            Some((
                                res.i64(row, ec).unwrap_or(-1),
                                res.i64(row, sc).unwrap_or(-1),
                            ))
                        }
                        _ => None,
                    };
                    if got != want {
                        out.mismatches += 1;
                        if out.examples.len() < AggregateCheck::EXAMPLES {
                            out.examples.push(format!(
                                "{name} on node {} (shard {}): counted {got:?} (records, seq sum), the log holds {want:?}",
                                r.node_id, s.shard
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}
