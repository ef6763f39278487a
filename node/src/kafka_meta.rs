//! Kafka metadata queries: the partition count of source topics, which must equal the
//! shard count P (shard *s* is partition *s*).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;

/// A metadata-only Kafka client (never consumes).
pub struct KafkaMetadata {
    consumer: BaseConsumer,
}

/// A topic that breaks the one-partition-per-shard rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicCheckError {
    /// The topic does not exist.
    #[error("source topic {topic:?} does not exist; create it with {expected} partitions")]
    Missing {
        /// Topic.
        topic: String,
        /// Shard count.
        expected: u32,
    },
    /// Partition count differs from the shard count.
    #[error(
        "source topic {topic:?} has {actual} partitions, but the cluster has {expected} shards; they must be equal"
    )]
    WrongPartitionCount {
        /// Topic.
        topic: String,
        /// Partitions found.
        actual: usize,
        /// Shard count.
        expected: u32,
    },
    /// The broker did not answer.
    #[error("cannot read metadata of topic {topic:?}: {error}")]
    Unreachable {
        /// Topic.
        topic: String,
        /// Client error.
        error: String,
    },
}

impl KafkaMetadata {
    /// Creates the client.
    ///
    /// # Errors
    /// If librdkafka rejects the configuration.
    pub fn new(
        bootstrap_servers: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<Self, KafkaError> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", bootstrap_servers)
            .set("allow.auto.create.topics", "false");
        for (k, v) in properties {
            cc.set(k, v);
        }
        Ok(KafkaMetadata {
            consumer: cc.create()?,
        })
    }

    /// Checks that `topic` has exactly `shard_count` partitions. Blocking.
    ///
    /// # Errors
    /// A [`TopicCheckError`] naming the topic and what is wrong.
    pub fn check_topic(
        &self,
        topic: &str,
        shard_count: u32,
        timeout: Duration,
    ) -> Result<(), TopicCheckError> {
        let md = self
            .consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| TopicCheckError::Unreachable {
                topic: topic.to_owned(),
                error: e.to_string(),
            })?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Err(TopicCheckError::Missing {
                topic: topic.to_owned(),
                expected: shard_count,
            });
        };
        if t.error().is_some() || t.partitions().is_empty() {
            return Err(TopicCheckError::Missing {
                topic: topic.to_owned(),
                expected: shard_count,
            });
        }
        let actual = t.partitions().len();
        if actual != shard_count as usize {
            return Err(TopicCheckError::WrongPartitionCount {
                topic: topic.to_owned(),
                actual,
                expected: shard_count,
            });
        }
        Ok(())
    }

    /// The first offset of each partition of `topic` (its log start: above 0 once the
    /// topic's retention deleted records), by partition. Blocking.
    ///
    /// # Errors
    /// [`TopicCheckError::Unreachable`] if the broker does not answer.
    pub fn log_starts(
        &self,
        topic: &str,
        shard_count: u32,
        timeout: Duration,
    ) -> Result<Vec<i64>, TopicCheckError> {
        (0..shard_count)
            .map(|p| self.log_start(topic, p, timeout))
            .collect()
    }

    /// The first offset of partition `partition` of `topic`. Blocking.
    ///
    /// # Errors
    /// [`TopicCheckError::Unreachable`] if the broker does not answer.
    pub fn log_start(
        &self,
        topic: &str,
        partition: u32,
        timeout: Duration,
    ) -> Result<i64, TopicCheckError> {
        self.consumer
            .fetch_watermarks(topic, partition as i32, timeout)
            .map(|(low, _)| low)
            .map_err(|e| TopicCheckError::Unreachable {
                topic: topic.to_owned(),
                error: e.to_string(),
            })
    }
}
