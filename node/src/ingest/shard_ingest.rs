//! The per-shard consume → decode → apply loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use quiver_proto::ShardId;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::IngestConfig;
use super::batch::Polled;
use super::decode::RawRecord;
use super::gap::ConsumerOffsets;
use super::handle::IngestContext;
use super::status::{IngestStatus, TopicIngestStatus};
use crate::metrics as m;
use crate::registry::{FeatureView, KeyType, Registry, RegistrySnapshot};
use crate::storage::{IngestBatch, ShardStore};

/// A sequence of offsets of one topic applied to a set of views, with its own resume
/// position (stored under `key` in the shard's meta column family).
pub(super) struct Stream {
    /// The topic name for serving views; `topic#view@version` for a pending or retained
    /// version.
    pub(super) key: String,
    pub(super) routes: Vec<Route>,
    /// Next offset this stream applies.
    pub(super) next: i64,
}

/// The offset-stream key of a pending or retained view version on `topic`.
pub fn pending_stream_key(topic: &str, view: &str, version: u32) -> String {
    format!("{topic}#{view}@{version}")
}

pub(super) struct Route {
    pub(super) view: Arc<FeatureView>,
    pub(super) key_type: KeyType,
}

pub(super) struct ShardIngest {
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
    /// Where the consumer is, per topic, and the gap being re-fetched.
    offsets: ConsumerOffsets,
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
    pub(super) fn new(
        store: Arc<ShardStore>,
        registry: Registry,
        config: IngestConfig,
        consumer: BaseConsumer<IngestContext>,
        dead_letters: Option<Arc<ThreadedProducer<DefaultProducerContext>>>,
        status: Arc<IngestStatus>,
    ) -> Self {
        let shard = store.shard();
        ShardIngest {
            shard,
            shard_label: shard.0.to_string(),
            store,
            registry,
            config,
            consumer,
            dead_letters,
            status,
            streams: HashMap::new(),
            assigned: Vec::new(),
            topics: Vec::new(),
            generation: None,
            last_lag_refresh: None,
            offsets: ConsumerOffsets::default(),
            batch_newest_record_ms: i64::MIN,
            batch_newest_event: HashMap::new(),
            applied_record_ms: i64::MIN,
            view_newest: HashMap::new(),
        }
    }

    pub(super) fn run(&mut self, cancel: &CancellationToken) {
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
            m::AGG_TILES_WRITTEN,
            m::AGG_ROLLUPS,
            m::HISTORY_WRITTEN,
            m::VERSIONS_DROPPED,
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

    /// Removes from `streams` those that need records the partition no longer holds
    /// (`log_start.rs`), recording why in the status and the blocked-streams gauge.
    /// Returns `false` if a partition's log start could not be read.
    fn hold_streams_below_log_start(&self, streams: &mut HashMap<String, Vec<Stream>>) -> bool {
        let mut blocked = std::collections::BTreeMap::new();
        for (topic, list) in streams.iter_mut() {
            let low = match self.consumer.fetch_watermarks(
                topic,
                self.shard.0 as i32,
                Duration::from_secs(2),
            ) {
                Ok((low, _)) => low,
                Err(e) => {
                    warn!(topic = %topic, error = %e, "cannot read the partition's log start; not assigning yet");
                    return false;
                }
            };
            list.retain(|s| {
                let why = super::log_start::blocked_reason(
                    &s.key,
                    s.key == *topic,
                    s.next,
                    low,
                    self.config.full_log_required,
                );
                match why {
                    Some(why) => {
                        error!(stream = %s.key, next = s.next, log_start = low, "{why}");
                        blocked.insert(s.key.clone(), why);
                        false
                    }
                    None => true,
                }
            });
        }
        streams.retain(|_, list| !list.is_empty());
        gauge!(m::INGEST_STREAMS_BLOCKED, "shard" => self.shard_label.clone())
            .set(blocked.len() as f64);
        self.status.set_blocked(blocked);
        true
    }

    /// Deletes the data of every dropped view version this replica still holds (a range
    /// deletion each, once). A failure is logged and retried at the next registry change
    /// or restart; the version is no longer read or written either way.
    fn drop_versions(&self, snap: &RegistrySnapshot) {
        for d in &snap.dropped {
            match self.store.drop_view_version(&d.view, d.version) {
                Ok(true) => {
                    if let Err(e) = self.store.reclaim_view_version(&d.view, d.version) {
                        warn!(view = %d.view, version = d.version, error = %e, "compacting a dropped view version failed; its space returns with later compactions");
                    }
                    info!(view = %d.view, version = d.version, "dropped view version: rows deleted, space reclaimed");
                    counter!(m::VERSIONS_DROPPED, "shard" => self.shard_label.clone()).increment(1);
                }
                Ok(false) => {}
                Err(e) => {
                    error!(view = %d.view, version = d.version, error = %e, "deleting a dropped view version failed")
                }
            }
        }
    }

    /// Re-reads the registry; when the topics or streams change, reassigns each topic from
    /// the lowest stored offset of its streams (a stream skips records below its own).
    fn refresh_routes(&mut self) {
        let snap = self.registry.snapshot();
        if self.generation == Some(snap.generation) {
            return;
        }
        self.drop_versions(&snap);
        let offsets = self.store.offsets();
        let mut streams = build_streams(&snap, &offsets);
        if !self.hold_streams_below_log_start(&mut streams) {
            // The broker did not say where its partitions start: keep the current
            // assignment and streams, and try again on the next loop.
            return;
        }
        self.generation = Some(snap.generation);
        self.streams = streams;
        // Every aggregation view's drop counters exist from the start, at 0.
        for view in snap.views.values().filter(|v| v.aggregation.is_some()) {
            for reason in ["late", "future"] {
                counter!(m::INGEST_LATE_EVENTS, "shard" => self.shard_label.clone(),
                    "view" => view.name.clone(), "reason" => reason)
                .increment(0);
            }
        }
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
        self.offsets = ConsumerOffsets::default();
        for (t, streams) in &self.streams {
            let start = match streams.iter().map(|s| s.next).min() {
                Some(n) if n > 0 => {
                    self.offsets.next.insert(t.clone(), n);
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
        let mut p = Polled::default();
        // Taken out so records (which borrow the consumer) can update stream positions.
        let mut streams = std::mem::take(&mut self.streams);
        let mut timeout = self.config.poll_timeout;
        // Bounded by records, not row writes, so a run of malformed records (no writes)
        // still commits its offsets every `max_batch_records`.
        let mut records = 0;
        while records < self.config.max_batch_records {
            let Some(item) = self.consumer.poll(timeout) else {
                break;
            };
            timeout = Duration::ZERO;
            let msg = match item {
                Ok(msg) => msg,
                Err(KafkaError::PartitionEOF(_)) => {
                    p.eof = true;
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
            let refetches = self.config.gap_refetches;
            if let Some(expected) =
                self.offsets
                    .judge(topic, msg.offset(), refetches, &self.shard_label)
            {
                p.refetch = Some((topic.to_owned(), expected));
                break;
            }
            records += 1;
            // A record after an end-of-partition event: the end moved on.
            p.eof = false;
            if !p.seen_topics.contains(topic) {
                p.seen_topics.insert(topic.to_owned());
            }
            let raw = RawRecord {
                key: msg.key(),
                payload: msg.payload(),
                timestamp_millis: msg.timestamp().to_millis(),
            };
            if let Some(ms) = raw.timestamp_millis {
                self.batch_newest_record_ms = self.batch_newest_record_ms.max(ms);
            }
            if let Some(topic_streams) = streams.get_mut(topic) {
                p.decode(
                    topic_streams,
                    &msg,
                    &raw,
                    &mut self.batch_newest_event,
                    &self.shard_label,
                );
            }
        }
        self.streams = streams;
        self.finish_poll(p)
    }

    /// After a poll: re-read from a gap, dead-letter the malformed records, update what
    /// the status says about the partitions' ends.
    fn finish_poll(&mut self, p: Polled) -> IngestBatch {
        if let Some((topic, expected)) = &p.refetch {
            // Purges what was prefetched after the gap and fetches again from it.
            if let Err(e) = self.consumer.seek(
                topic,
                self.shard.0 as i32,
                Offset::Offset(*expected),
                Duration::from_secs(1),
            ) {
                warn!(topic, expected, error = %e, "seeking back to an offset gap failed");
            }
            // The missing records are usually being stored right now: give them a moment.
            std::thread::sleep(Duration::from_millis(5));
        }
        for (msg, view, error) in &p.dead_letters {
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
                if p.eof && single_topic {
                    st.reached_end = true;
                } else if p.seen_topics.contains(t) {
                    st.reached_end = false;
                }
            }
        });
        p.batch
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
                    if outcome.history_written > 0 {
                        counter!(m::HISTORY_WRITTEN, "shard" => l.clone())
                            .increment(outcome.history_written);
                    }
                    if !batch.events.is_empty() {
                        counter!(m::AGG_TILES_WRITTEN, "shard" => l.clone())
                            .increment(outcome.tiles_written);
                        counter!(m::AGG_ROLLUPS, "shard" => l.clone()).increment(outcome.rollups);
                    }
                    for (view, n) in &outcome.late {
                        counter!(m::INGEST_LATE_EVENTS, "shard" => l.clone(), "view" => view.clone(), "reason" => "late")
                            .increment(*n);
                    }
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
        // A retained version keeps ingesting on its own stream, in lockstep with the
        // serving one, so a rollback serves it at once with nothing missing. It served on
        // the topic's stream until it retired, so it starts there; a record of its own
        // from an earlier life (as a pending or retained version) is older, never ahead.
        for view in snap.retained_versions().filter(|v| v.source.topic == topic) {
            let key = pending_stream_key(&topic, &view.name, view.version);
            list.push(Stream {
                next: next(&key).max(next(&topic)),
                routes: route(view).into_iter().collect(),
                key,
            });
        }
        streams.insert(topic, list);
    }
    streams
}
