//! The owner's side of a shard's ingest loop: the consumer it is built with, the thread
//! it runs on, and the handle that stops it at a batch boundary.

use std::sync::Arc;

use quiver_proto::ShardId;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DefaultProducerContext, ThreadedProducer};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::shard_ingest::ShardIngest;
use super::status::IngestStatus;
use super::{IngestConfig, IngestError};
use crate::registry::Registry;
use crate::storage::ShardStore;

/// Consumer context that logs through `tracing` and treats partition EOF (our "caught
/// up" signal, enabled on purpose) as the non-event it is.
pub(crate) struct IngestContext;

impl ClientContext for IngestContext {
    fn error(&self, error: KafkaError, reason: &str) {
        match error {
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {
                debug!(reason, "partition end reached")
            }
            e => warn!(error = %e, reason, "kafka client error"),
        }
    }
}

impl ConsumerContext for IngestContext {}

/// Owner of a running ingest loop: cancel it, then [`IngestHandle::join`].
pub struct IngestHandle {
    shard: ShardId,
    cancel: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Observed state.
    pub status: Arc<IngestStatus>,
}

impl IngestHandle {
    /// Asks the loop to stop after the batch in hand.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Waits for the loop to finish (its last batch is then durable in RocksDB's WAL).
    pub async fn join(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            let shard = self.shard;
            if tokio::task::spawn_blocking(move || t.join())
                .await
                .map(|r| r.is_err())
                .unwrap_or(true)
            {
                error!(shard_id = %shard, "ingest thread panicked");
            }
        }
    }
}

/// Starts the ingest loop of `store` on its own thread.
///
/// # Errors
/// [`IngestError::Kafka`] if the consumer cannot be created from the configuration.
pub fn spawn_shard_ingest(
    store: Arc<ShardStore>,
    registry: Registry,
    config: IngestConfig,
    dead_letters: Option<Arc<ThreadedProducer<DefaultProducerContext>>>,
    cancel: CancellationToken,
) -> Result<IngestHandle, IngestError> {
    let shard = store.shard();
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.bootstrap_servers)
        // librdkafka requires a group.id for assign(); no group protocol is used.
        .set("group.id", format!("quiver-node-{}", config.node_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        // Freshness: replicas of a shard must apply a record within milliseconds of each
        // other, or monotonic reads wait for the slower one. Brokers that do not answer a
        // waiting fetch as soon as data arrives (Tansu, found by the chaos suite: 500 ms,
        // librdkafka's default, became the skew between replicas) are bounded by this.
        // Overridable through kafka.properties.
        .set("fetch.wait.max.ms", "20")
        // After a broker stall the in-flight requests time out and librdkafka reconnects
        // with exponential backoff up to 10 s by default: a replica then stayed seconds
        // behind its peers after the broker was back (chaos broker-pause). Capped at 1 s.
        .set("reconnect.backoff.max.ms", "1000")
        .set(
            "client.id",
            format!("quiver-node-{}-shard-{}", config.node_id, shard),
        );
    for (k, v) in &config.kafka_properties {
        cc.set(k, v);
    }
    let consumer: BaseConsumer<IngestContext> =
        cc.create_with_context(IngestContext)
            .map_err(|source| IngestError::Kafka {
                shard: shard.0,
                source,
            })?;
    let status = Arc::new(IngestStatus::default());
    let mut ingest = ShardIngest::new(
        store,
        registry,
        config,
        consumer,
        dead_letters,
        status.clone(),
    );
    let loop_cancel = cancel.clone();
    let thread = std::thread::Builder::new()
        .name(format!("ingest-{shard}"))
        .spawn(move || ingest.run(&loop_cancel))
        .map_err(IngestError::Spawn)?;
    Ok(IngestHandle {
        shard,
        cancel,
        thread: Some(thread),
        status,
    })
}
