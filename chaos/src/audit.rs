//! The broker audit: after the run, every partition of the workload's topic is read back
//! from the broker from its first offset, and every acknowledged write must be found at
//! the offset it was acknowledged at, with its key and sequence number.
//!
//! This separates "quiver lost a write" from "the broker did not keep it": a replica
//! rebuilt from offset 0 can only be as complete as the log it re-reads.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;

use crate::cluster::TOPIC;
use crate::history::Write;
use crate::workload::key_name;

/// What the read-back found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BrokerAudit {
    /// Records read back, all partitions.
    pub records: u64,
    /// Acknowledged writes looked up at their offsets.
    pub checked: u64,
    /// Acknowledged writes not found at their offset (first few, with what was there).
    pub missing: Vec<String>,
    /// How many were not found.
    pub missing_count: u64,
    /// Partitions whose read-back did not reach the high watermark in time.
    pub incomplete: Vec<String>,
    /// Per partition, the end of the log read back (its high watermark).
    pub log_end: BTreeMap<u32, i64>,
    /// Per key, the records of the log and the sum of their `seq`: what the workload's
    /// aggregation view must count on every replica.
    #[serde(skip)]
    pub per_key: HashMap<String, (i64, i64)>,
}

impl BrokerAudit {
    const EXAMPLES: usize = 10;

    /// Whether every acknowledged write was found and every partition read completely.
    pub fn ok(&self) -> bool {
        self.missing_count == 0 && self.incomplete.is_empty()
    }
}

/// One record as read back: its key and the `seq` field of its JSON payload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    key: Option<String>,
    seq: Option<i64>,
}

fn seq_of(payload: Option<&[u8]>) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_slice(payload?).ok()?;
    match v.get("seq")? {
        serde_json::Value::String(s) => s.parse().ok(),
        n => n.as_i64(),
    }
}

/// Reads every partition of the workload's topic back and checks `writes` against it.
/// Blocking (run it off the async runtime).
///
/// # Errors
/// When the consumer cannot be created or assigned.
pub fn audit(
    bootstrap: &str,
    shards: u32,
    writes: &[Write],
    timeout: Duration,
) -> anyhow::Result<BrokerAudit> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "quiver-chaos-audit")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let deadline = Instant::now() + timeout;
    let mut high = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..shards {
        let (_, h) = consumer.fetch_watermarks(TOPIC, p as i32, Duration::from_secs(10))?;
        high.insert(p, h);
        tpl.add_partition_offset(TOPIC, p as i32, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut log: HashMap<(u32, i64), Found> = HashMap::new();
    let mut next: BTreeMap<u32, i64> = high.keys().map(|p| (*p, 0)).collect();
    let done = |next: &BTreeMap<u32, i64>| next.iter().all(|(p, n)| *n >= high[p]);
    while !done(&next) && Instant::now() < deadline {
        let Some(item) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let Ok(msg) = item else { continue };
        let p = msg.partition() as u32;
        log.insert(
            (p, msg.offset()),
            Found {
                key: msg.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                seq: seq_of(msg.payload()),
            },
        );
        let n = next.entry(p).or_default();
        *n = (*n).max(msg.offset() + 1);
    }
    let mut per_key: HashMap<String, (i64, i64)> = HashMap::new();
    for f in log.values() {
        if let (Some(k), Some(seq)) = (&f.key, f.seq) {
            let e = per_key.entry(k.clone()).or_default();
            e.0 += 1;
            e.1 += seq;
        }
    }
    let mut a = BrokerAudit {
        records: log.len() as u64,
        log_end: high.clone(),
        per_key,
        incomplete: next
            .iter()
            .filter(|(p, n)| **n < high[p])
            .map(|(p, n)| format!("partition {p}: read to {n} of {}", high[p]))
            .collect(),
        ..Default::default()
    };
    for w in writes {
        let Some(ack) = w.acked else { continue };
        a.checked += 1;
        let offset = ack.next_offset - 1;
        let want = Found {
            key: Some(key_name(w.key)),
            seq: Some(w.seq),
        };
        let found = log.get(&(ack.shard, offset));
        if found != Some(&want) {
            a.missing_count += 1;
            if a.missing.len() < BrokerAudit::EXAMPLES {
                a.missing.push(format!(
                    "{} seq {} ({:?}) acknowledged at partition {} offset {offset}; read back: {}",
                    key_name(w.key),
                    w.seq,
                    w.via,
                    ack.shard,
                    match found {
                        None => "nothing".to_string(),
                        Some(f) => format!("{:?} seq {:?}", f.key, f.seq),
                    }
                ));
            }
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_is_read_from_the_json_payload() {
        assert_eq!(
            seq_of(Some(br#"{"ts":5,"seq":42,"check":"1/42"}"#)),
            Some(42)
        );
        assert_eq!(seq_of(Some(br#"{"seq":"43"}"#)), Some(43));
        assert_eq!(seq_of(Some(b"not json")), None);
        assert_eq!(seq_of(None), None);
    }
}
