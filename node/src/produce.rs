//! The producer behind `Push`: writes validated rows to a view's source topic, each into
//! the partition of its key's shard, and reports the offsets they landed at.
//!
//! Idempotent (no duplicates from librdkafka's own retries) with `acks=all`. A push is
//! at-least-once as a whole: a client retrying after an error may write rows twice, which
//! is harmless because rows are last-write-wins by event time.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::ingest::encode::EncodedRecord;

/// Why a push could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// The local send queue is full: shed load.
    #[error("the push queue is full; retry later")]
    QueueFull,
    /// The broker did not acknowledge a record.
    #[error("producing to {topic:?} failed after {delivered} of {total} records: {error}")]
    Delivery {
        /// Topic.
        topic: String,
        /// Records acknowledged before the failure.
        delivered: usize,
        /// Records in the push.
        total: usize,
        /// librdkafka's error.
        error: String,
    },
}

/// A Kafka producer for pushes.
pub struct PushProducer {
    producer: FutureProducer,
}

impl PushProducer {
    /// Creates the producer; `properties` are passed to librdkafka (security settings).
    ///
    /// # Errors
    /// If librdkafka rejects the configuration.
    pub fn new(
        bootstrap_servers: &str,
        properties: &BTreeMap<String, String>,
        delivery_timeout: Duration,
    ) -> Result<Self, KafkaError> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // A push waits for its acknowledgement; batching delay would be pure latency.
            .set("linger.ms", "0")
            // Pushes fail while the producer is disconnected: reconnect within a second of
            // the broker's return, not librdkafka's default of up to 10 s.
            .set("reconnect.backoff.max.ms", "1000")
            .set(
                "message.timeout.ms",
                delivery_timeout.as_millis().max(1).to_string(),
            );
        for (k, v) in properties {
            cc.set(k, v);
        }
        Ok(PushProducer {
            producer: cc.create()?,
        })
    }

    /// Produces `records` to `topic`, record *i* into `partitions[i]`, in order, and waits
    /// for every acknowledgement. Returns, per partition, the offset of its last record.
    ///
    /// # Errors
    /// [`ProduceError::QueueFull`] before anything was enqueued is clean; a
    /// [`ProduceError::Delivery`] may leave a prefix of the records written.
    pub async fn produce(
        &self,
        topic: &str,
        records: &[EncodedRecord],
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, i64>, ProduceError> {
        let total = records.len();
        let failed = |delivered: usize, error: String| ProduceError::Delivery {
            topic: topic.to_owned(),
            delivered,
            total,
            error,
        };
        // Enqueue everything first (order per partition is the enqueue order), then wait.
        let mut pending = Vec::with_capacity(total);
        for (rec, &partition) in records.iter().zip(partitions) {
            let mut fr = FutureRecord::<[u8], [u8]>::to(topic)
                .key(&rec.key)
                .partition(partition)
                .timestamp(rec.timestamp_millis);
            if let Some(p) = &rec.payload {
                fr = fr.payload(p);
            }
            match self.producer.send_result(fr) {
                Ok(f) => pending.push(f),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if pending.is_empty() =>
                {
                    return Err(ProduceError::QueueFull);
                }
                Err((e, _)) => return Err(failed(0, e.to_string())),
            }
        }
        let mut last: BTreeMap<i32, i64> = BTreeMap::new();
        for (i, f) in pending.into_iter().enumerate() {
            match f.await {
                Ok(Ok(d)) => {
                    let o = last.entry(d.partition).or_insert(d.offset);
                    *o = (*o).max(d.offset);
                }
                Ok(Err((e, _))) => return Err(failed(i, e.to_string())),
                Err(_) => return Err(failed(i, "the producer was dropped".into())),
            }
        }
        Ok(last)
    }
}
