//! The per-shard consume → decode → apply loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use quiver_proto::ShardId;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::decode::{RawRecord, decode_record};
use super::gap::{Position, judge_offset};
use super::status::{IngestStatus, TopicIngestStatus};
use super::{IngestConfig, IngestError};
use crate::metrics as m;
use crate::registry::{FeatureView, KeyType, Registry, RegistrySnapshot};
use crate::storage::row_codec::encode_row;
use crate::storage::{IngestBatch, RowWrite, ShardStore, TopicProgress, keys};

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
    let mut ingest = ShardIngest {
        shard,
        shard_label: shard.0.to_string(),
        store,
        registry,
        config,
        consumer,
        dead_letters,
        status: status.clone(),
        streams: HashMap::new(),
        assigned: Vec::new(),
        topics: Vec::new(),
        generation: None,
        last_lag_refresh: None,
        consumer_next: HashMap::new(),
        gap: HashMap::new(),
        batch_newest_record_ms: i64::MIN,
        batch_newest_event: HashMap::new(),
        applied_record_ms: i64::MIN,
        view_newest: HashMap::new(),
    };
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

/// A sequence of offsets of one topic applied to a set of views, with its own resume
/// position (stored under `key` in the shard's meta column family).
struct Stream {
    /// The topic name for serving views; `topic#view@version` for a pending version.
    key: String,
    routes: Vec<Route>,
    /// Next offset this stream applies.
    next: i64,
}

/// The offset-stream key of a pending view version on `topic`.
pub fn pending_stream_key(topic: &str, view: &str, version: u32) -> String {
    format!("{topic}#{view}@{version}")
}

struct Route {
    view: Arc<FeatureView>,
    key_type: KeyType,
}

struct ShardIngest {
    shard: ShardId,
    shard_label: String,
    store: Arc<ShardStore>,
    registry: Registry,
    config: IngestConfig,
    consumer: BaseConsumer<IngestContext>,
    dead_letters: Option<Arc<ThreadedProducer<DefaultProducerContext>>>,
    status: Arc<IngestStatus>,
    /// Offset streams per source topic: the serving views share the topic's stream; each
    /// pending view version has its own (it re-reads the topic from the start).
    streams: HashMap<String, Vec<Stream>>,
    /// Stream keys per topic at the last assignment.
    assigned: Vec<(String, Vec<String>)>,
    topics: Vec<String>,
    generation: Option<u64>,
    last_lag_refresh: Option<Instant>,
    /// Per topic, the offset after the last record this consumer delivered (unknown after
    /// an assignment from the beginning until the first record).
    consumer_next: HashMap<String, i64>,
    /// The offset gap being re-fetched, per topic: (expected, delivered, attempts so far).
    gap: HashMap<String, (i64, i64, u32)>,
    /// Of the batch in hand: the newest Kafka timestamp (ms) and per view the newest event
    /// time (µs); published once the batch is applied.
    batch_newest_record_ms: i64,
    batch_newest_event: HashMap<String, i64>,
    /// Kafka timestamp (ms) of the newest record applied, for the lag in seconds.
    applied_record_ms: i64,
    /// Newest event time (µs) applied per view, for the freshness gauge.
    view_newest: HashMap<String, i64>,
}

impl ShardIngest {
    fn run(&mut self, cancel: &CancellationToken) {
        let _span = tracing::info_span!("ingest", shard_id = %self.shard).entered();
        info!("ingest loop started");
        // Every per-shard series exists from the start (at 0), so rates and alerts over
        // rare events (errors, gaps) see a series rather than nothing.
        for name in [
            m::INGEST_RECORDS,
            m::INGEST_APPLIED,
            m::INGEST_SUPERSEDED,
            m::INGEST_CONSUMER_ERRORS,
            m::INGEST_GAP_REFETCHES,
            m::INGEST_OFFSET_GAPS,
            m::INGEST_APPLY_ERRORS,
        ] {
            counter!(name, "shard" => self.shard_label.clone()).increment(0);
        }
        gauge!(m::INGEST_LAG_SECONDS, "shard" => self.shard_label.clone()).set(0.0);
        while !cancel.is_cancelled() {
            self.refresh_routes();
            if self.topics.is_empty() {
                std::thread::sleep(self.config.poll_timeout);
                continue;
            }
            let batch = self.poll_batch();
            if !batch.progress.is_empty() && self.apply_with_retry(&batch, cancel) {
                self.publish_applied();
            }
            self.maybe_refresh_lag();
        }
        info!("ingest loop stopped");
    }

    /// Re-reads the registry; when the topics or streams change, reassigns each topic from
    /// the lowest stored offset of its streams (a stream skips records below its own).
    fn refresh_routes(&mut self) {
        let snap = self.registry.snapshot();
        if self.generation == Some(snap.generation) {
            return;
        }
        self.generation = Some(snap.generation);
        let offsets = self.store.offsets();
        self.streams = build_streams(&snap, &offsets);
        let mut assigned: Vec<(String, Vec<String>)> = self
            .streams
            .iter()
            .map(|(t, ss)| (t.clone(), ss.iter().map(|s| s.key.clone()).collect()))
            .collect();
        assigned.sort();
        if assigned == self.assigned {
            return;
        }
        let topics: Vec<String> = assigned.iter().map(|(t, _)| t.clone()).collect();
        let mut tpl = TopicPartitionList::new();
        self.consumer_next.clear();
        self.gap.clear();
        for (t, streams) in &self.streams {
            let start = match streams.iter().map(|s| s.next).min() {
                Some(n) if n > 0 => {
                    self.consumer_next.insert(t.clone(), n);
                    Offset::Offset(n)
                }
                _ => Offset::Beginning,
            };
            if let Err(e) = tpl.add_partition_offset(t, self.shard.0 as i32, start) {
                error!(topic = %t, error = %e, "cannot add partition to assignment");
            }
        }
        match self.consumer.assign(&tpl) {
            Ok(()) => {
                info!(streams = ?assigned, "assigned source partitions");
                self.status.update(|s| {
                    s.retain(|t, _| topics.contains(t));
                    for t in &topics {
                        s.entry(t.clone()).or_insert(TopicIngestStatus {
                            high_watermark: -1,
                            reached_end: false,
                        });
                    }
                });
                self.topics = topics;
                self.assigned = assigned;
                self.last_lag_refresh = None;
            }
            // Retried on the next cycle: the generation is forgotten.
            Err(e) => {
                error!(error = %e, "assigning source partitions failed");
                self.generation = None;
            }
        }
    }

    /// Gathers up to `max_batch_records` records: waits up to `poll_timeout` for the first,
    /// then takes whatever is already fetched.
    fn poll_batch(&mut self) -> IngestBatch {
        let mut batch = IngestBatch::default();
        let mut stream_index: HashMap<String, usize> = HashMap::new();
        let mut seen_topics: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut dead_letters: Vec<(rdkafka::message::OwnedMessage, String, String)> = Vec::new();
        // Taken out so records (which borrow the consumer) can update stream positions.
        let mut streams = std::mem::take(&mut self.streams);
        let mut row_buf = Vec::new();
        let mut timeout = self.config.poll_timeout;
        // Whether the last event polled was an end-of-partition.
        let mut eof = false;
        // Bounded by records, not row writes, so a run of malformed records (no writes)
        // still commits its offsets every `max_batch_records`.
        let mut records = 0;
        // Set when a gap in offsets ends the batch: (topic, offset to re-read from).
        let mut refetch: Option<(String, i64)> = None;
        while records < self.config.max_batch_records {
            let Some(item) = self.consumer.poll(timeout) else {
                break;
            };
            timeout = Duration::ZERO;
            let msg = match item {
                Ok(msg) => msg,
                Err(KafkaError::PartitionEOF(_)) => {
                    eof = true;
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, "kafka consumer error");
                    counter!(m::INGEST_CONSUMER_ERRORS, "shard" => self.shard_label.clone())
                        .increment(1);
                    continue;
                }
            };
            let topic = msg.topic();
            let offset = msg.offset();
            let mut gap = self.gap.remove(topic);
            let position = judge_offset(
                self.consumer_next.get(topic).copied(),
                offset,
                &mut gap,
                self.config.gap_refetches,
            );
            if let Some(g) = gap {
                self.gap.insert(topic.to_owned(), g);
            }
            match position {
                Position::InOrder => {}
                Position::Refetch { expected } => {
                    // Not consumed: the batch ends here and the consumer goes back.
                    let attempt = self.gap.get(topic).map_or(0, |g| g.2);
                    counter!(m::INGEST_GAP_REFETCHES, "shard" => self.shard_label.clone())
                        .increment(1);
                    if attempt == 1 {
                        info!(
                            topic,
                            expected, offset, "offset gap; re-reading from the expected offset"
                        );
                    } else {
                        debug!(
                            topic,
                            expected, offset, attempt, "offset gap persists; re-reading"
                        );
                    }
                    refetch = Some((topic.to_owned(), expected));
                    break;
                }
                Position::AcceptGap { expected } => {
                    counter!(m::INGEST_OFFSET_GAPS, "shard" => self.shard_label.clone())
                        .increment((offset - expected) as u64);
                    warn!(
                        topic,
                        expected,
                        offset,
                        refetches = self.config.gap_refetches,
                        "offsets missing from the partition; continuing after them"
                    );
                }
            }
            match self.consumer_next.get_mut(topic) {
                Some(next) => *next = offset + 1,
                None => {
                    self.consumer_next.insert(topic.to_owned(), offset + 1);
                }
            }
            records += 1;
            // A record after an end-of-partition event: the end moved on.
            eof = false;
            if !seen_topics.contains(topic) {
                seen_topics.insert(topic.to_owned());
            }
            let raw = RawRecord {
                key: msg.key(),
                payload: msg.payload(),
                timestamp_millis: msg.timestamp().to_millis(),
            };
            if let Some(ms) = raw.timestamp_millis {
                self.batch_newest_record_ms = self.batch_newest_record_ms.max(ms);
            }
            let Some(topic_streams) = streams.get_mut(topic) else {
                continue;
            };
            for stream in topic_streams.iter_mut() {
                // Below a stream's position: already applied for its views.
                if offset < stream.next {
                    continue;
                }
                stream.next = offset + 1;
                // Looked up before inserting: the key is cloned once per batch, not per record.
                let idx = match stream_index.get(&stream.key) {
                    Some(i) => *i,
                    None => {
                        batch.progress.push(TopicProgress {
                            topic: stream.key.clone(),
                            ..Default::default()
                        });
                        stream_index.insert(stream.key.clone(), batch.progress.len() - 1);
                        batch.progress.len() - 1
                    }
                };
                let progress = &mut batch.progress[idx];
                progress.next_offset = offset + 1;
                progress.consumed += 1;
                let mut malformed = false;
                for route in &stream.routes {
                    match decode_record(&route.view, route.key_type, &raw) {
                        Ok(rec) => {
                            match self.batch_newest_event.get_mut(&route.view.name) {
                                Some(t) => *t = (*t).max(rec.event_time_micros),
                                None => {
                                    self.batch_newest_event
                                        .insert(route.view.name.clone(), rec.event_time_micros);
                                }
                            }
                            let value = rec.values.map(|vals| {
                                encode_row(rec.event_time_micros, &vals, &mut row_buf);
                                row_buf.clone()
                            });
                            batch.writes.push(RowWrite {
                                topic: idx,
                                key: keys::row_key(
                                    &route.view.name,
                                    route.view.version,
                                    &rec.entity_key,
                                ),
                                event_time_micros: rec.event_time_micros,
                                value,
                            });
                        }
                        Err(e) => {
                            malformed = true;
                            counter!(m::INGEST_MALFORMED, "shard" => self.shard_label.clone(), "reason" => e.reason())
                                .increment(1);
                            warn!(topic, partition = msg.partition(), offset, view = %route.view.name,
                                version = route.view.version, error = %e, "skipping malformed record");
                            dead_letters.push((
                                msg.detach(),
                                route.view.name.clone(),
                                e.to_string(),
                            ));
                        }
                    }
                }
                if malformed {
                    batch.progress[idx].malformed += 1;
                }
            }
        }
        self.streams = streams;
        if let Some((topic, expected)) = refetch {
            // Purges what was prefetched after the gap and fetches again from it.
            if let Err(e) = self.consumer.seek(
                &topic,
                self.shard.0 as i32,
                Offset::Offset(expected),
                Duration::from_secs(1),
            ) {
                warn!(topic, expected, error = %e, "seeking back to an offset gap failed");
            }
            // The missing records are usually being stored right now: give them a moment.
            std::thread::sleep(Duration::from_millis(5));
        }
        for (msg, view, error) in &dead_letters {
            self.dead_letter(msg, view, error);
        }
        let single_topic = self.topics.len() == 1;
        self.status.update(|s| {
            for (t, st) in s.iter_mut() {
                // `eof` means the batch's last event was the end of the partition: every
                // record before it is in this batch, so once applied the replica is at the
                // end even if the batch had records (under steady writes nearly every batch
                // does, and a new replica never became Serving: found by the chaos suite).
                // EOF events do not name the topic; exact for the common single-topic case,
                // otherwise the lag refresh decides.
                if eof && single_topic {
                    st.reached_end = true;
                } else if seen_topics.contains(t) {
                    st.reached_end = false;
                }
            }
        });
        batch
    }

    fn dead_letter(&self, msg: &rdkafka::message::OwnedMessage, view: &str, error: &str) {
        let (Some(producer), Some(topic)) = (&self.dead_letters, &self.config.dead_letter_topic)
        else {
            return;
        };
        let partition = msg.partition().to_string();
        let offset = msg.offset().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "quiver-error",
                value: Some(error),
            })
            .insert(Header {
                key: "quiver-view",
                value: Some(view),
            })
            .insert(Header {
                key: "quiver-source-topic",
                value: Some(msg.topic()),
            })
            .insert(Header {
                key: "quiver-source-partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "quiver-source-offset",
                value: Some(&offset),
            });
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(headers);
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        if let Some(p) = msg.payload() {
            record = record.payload(p);
        }
        let result = match producer.send(record) {
            Ok(()) => "queued",
            Err((e, _)) => {
                warn!(error = %e, "dead-letter produce failed");
                "failed"
            }
        };
        counter!(m::INGEST_DEAD_LETTERS, "result" => result).increment(1);
    }

    /// After a batch is applied: the newest record and event times it carried become the
    /// lag and freshness figures.
    fn publish_applied(&mut self) {
        self.applied_record_ms = self.applied_record_ms.max(self.batch_newest_record_ms);
        self.batch_newest_record_ms = i64::MIN;
        for (view, t) in self.batch_newest_event.drain() {
            let newest = self.view_newest.entry(view.clone()).or_insert(i64::MIN);
            if t > *newest {
                *newest = t;
                gauge!(m::VIEW_NEWEST_EVENT, "view" => view, "shard" => self.shard_label.clone())
                    .set(t as f64 / 1e6);
            }
        }
    }

    /// Applies a batch, retrying storage failures until they succeed or the loop is
    /// cancelled: skipping a batch would lose records, and its offsets are not stored.
    /// Returns whether it was applied.
    fn apply_with_retry(&mut self, batch: &IngestBatch, cancel: &CancellationToken) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            match self.store.apply(batch) {
                Ok(outcome) => {
                    let l = self.shard_label.clone();
                    let consumed: u64 = batch.progress.iter().map(|p| p.consumed).sum();
                    counter!(m::INGEST_RECORDS, "shard" => l.clone()).increment(consumed);
                    counter!(m::INGEST_APPLIED, "shard" => l.clone()).increment(outcome.applied);
                    counter!(m::INGEST_SUPERSEDED, "shard" => l.clone())
                        .increment(outcome.superseded);
                    histogram!(m::INGEST_BATCH_DURATION).record(started.elapsed().as_secs_f64());
                    debug!(consumed, applied = outcome.applied, "applied batch");
                    return true;
                }
                Err(e) => {
                    counter!(m::INGEST_APPLY_ERRORS, "shard" => self.shard_label.clone())
                        .increment(1);
                    error!(error = %e, "applying ingest batch failed; retrying");
                    if cancel.is_cancelled() {
                        return false;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn maybe_refresh_lag(&mut self) {
        if self
            .last_lag_refresh
            .is_some_and(|t| t.elapsed() < self.config.lag_refresh_interval)
        {
            return;
        }
        self.last_lag_refresh = Some(Instant::now());
        let offsets = self.store.offsets();
        let mut total_lag = 0i64;
        for topic in &self.topics {
            match self.consumer.fetch_watermarks(
                topic,
                self.shard.0 as i32,
                Duration::from_millis(500),
            ) {
                Ok((_low, high)) => {
                    let next = offsets.get(topic).map_or(0, |r| r.next_offset);
                    let lag = (high - next).max(0);
                    total_lag += lag;
                    self.status.update(|s| {
                        if let Some(st) = s.get_mut(topic) {
                            st.high_watermark = high;
                            if lag == 0 && self.topics.len() > 1 {
                                st.reached_end = true;
                            }
                        }
                    });
                }
                Err(e) => debug!(topic = %topic, error = %e, "fetching watermarks failed"),
            }
        }
        gauge!(m::INGEST_LAG_RECORDS, "shard" => self.shard_label.clone()).set(total_lag as f64);
        // While records wait, the lag in time is how old the last applied one is (a fair
        // bound from below on how stale reads of this shard are); none waiting: 0.
        let lag_seconds = if total_lag > 0 && self.applied_record_ms > 0 {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            ((now_ms - self.applied_record_ms).max(0)) as f64 / 1000.0
        } else {
            0.0
        };
        gauge!(m::INGEST_LAG_SECONDS, "shard" => self.shard_label.clone()).set(lag_seconds);
    }
}

fn build_streams(
    snap: &RegistrySnapshot,
    offsets: &std::collections::BTreeMap<String, crate::storage::OffsetRecord>,
) -> HashMap<String, Vec<Stream>> {
    let next = |key: &str| offsets.get(key).map_or(0, |r| r.next_offset);
    let route = |view: &Arc<FeatureView>| {
        snap.entities.get(&view.entity).map(|e| Route {
            view: view.clone(),
            key_type: e.key_type,
        })
    };
    let mut streams: HashMap<String, Vec<Stream>> = HashMap::new();
    for topic in snap.topics() {
        let serving: Vec<Route> = snap
            .views
            .values()
            .filter(|v| v.source.topic == topic)
            .filter_map(route)
            .collect();
        let mut list = vec![Stream {
            key: topic.clone(),
            routes: serving,
            next: next(&topic),
        }];
        for view in snap.pending.values().filter(|v| v.source.topic == topic) {
            let key = pending_stream_key(&topic, &view.name, view.version);
            list.push(Stream {
                next: next(&key),
                routes: route(view).into_iter().collect(),
                key,
            });
        }
        streams.insert(topic, list);
    }
    streams
}
