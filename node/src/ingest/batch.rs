//! Building one ingest batch from polled records: per record, the rows of every view of
//! every offset stream that has not applied it yet (or its malformed count), with the
//! streams' progress — applied with the offsets in one write.

use std::collections::HashMap;

use metrics::counter;
use rdkafka::message::Message;
use tracing::warn;

use super::decode::{RawRecord, decode_record};
use super::shard_ingest::Stream;
use crate::metrics as m;
use crate::storage::history::HistoryMeta;
use crate::storage::row_codec::encode_row;
use crate::storage::{AggEvent, IngestBatch, RowWrite, TopicProgress, keys};

/// One poll's gathering: the batch and what is settled after the poll loop.
#[derive(Default)]
pub(super) struct Polled {
    pub(super) batch: IngestBatch,
    /// Index of each stream's progress entry in the batch.
    pub(super) stream_index: HashMap<String, usize>,
    pub(super) row_buf: Vec<u8>,
    /// Malformed records: (record, view, error), dead-lettered after the loop.
    pub(super) dead_letters: Vec<(rdkafka::message::OwnedMessage, String, String)>,
    pub(super) seen_topics: std::collections::HashSet<String>,
    /// Whether the last event polled was an end-of-partition.
    pub(super) eof: bool,
    /// Set when a gap in offsets ended the batch: (topic, offset to re-read from).
    pub(super) refetch: Option<(String, i64)>,
}

impl Polled {
    /// Decodes the record at `offset` for every view of every stream of its topic that has
    /// not applied it yet, adding the rows (or the malformed count) to the batch.
    pub(super) fn decode(
        &mut self,
        streams: &mut [Stream],
        msg: &rdkafka::message::BorrowedMessage<'_>,
        raw: &RawRecord<'_>,
        newest_event: &mut HashMap<String, i64>,
        shard_label: &str,
    ) {
        let offset = msg.offset();
        for stream in streams.iter_mut() {
            // Below a stream's position: already applied for its views.
            if offset < stream.next {
                continue;
            }
            stream.next = offset + 1;
            // Looked up before inserting: the key is cloned once per batch, not per record.
            let idx = match self.stream_index.get(&stream.key) {
                Some(i) => *i,
                None => {
                    self.batch.progress.push(TopicProgress {
                        topic: stream.key.clone(),
                        ..Default::default()
                    });
                    let i = self.batch.progress.len() - 1;
                    self.stream_index.insert(stream.key.clone(), i);
                    i
                }
            };
            let progress = &mut self.batch.progress[idx];
            progress.next_offset = offset + 1;
            progress.consumed += 1;
            let mut malformed = false;
            for route in &stream.routes {
                match decode_record(route.view.record_view(), route.key_type, raw) {
                    Ok(rec) => {
                        match newest_event.get_mut(&route.view.name) {
                            Some(t) => *t = (*t).max(rec.event_time_micros),
                            None => {
                                newest_event.insert(route.view.name.clone(), rec.event_time_micros);
                            }
                        }
                        if let Some(agg) = &route.view.aggregation {
                            self.add_event(idx, route, agg, rec, (offset, raw), shard_label);
                            continue;
                        }
                        let value = rec.values.map(|vals| {
                            encode_row(rec.event_time_micros, &vals, &mut self.row_buf);
                            self.row_buf.clone()
                        });
                        self.batch.writes.push(RowWrite {
                            topic: idx,
                            key: keys::row_key(
                                &route.view.name,
                                route.view.version,
                                &rec.entity_key,
                            ),
                            event_time_micros: rec.event_time_micros,
                            value,
                            history: route.view.history.map(|_| HistoryMeta {
                                offset,
                                arrival_micros: raw
                                    .timestamp_millis
                                    .map_or(rec.event_time_micros, |ms| ms.saturating_mul(1000)),
                            }),
                        });
                    }
                    Err(e) => {
                        malformed = true;
                        counter!(m::INGEST_MALFORMED, "shard" => shard_label.to_owned(), "reason" => e.reason())
                            .increment(1);
                        warn!(topic = msg.topic(), partition = msg.partition(), offset, view = %route.view.name,
                            version = route.view.version, error = %e, "skipping malformed record");
                        self.dead_letters.push((
                            msg.detach(),
                            route.view.name.clone(),
                            e.to_string(),
                        ));
                    }
                }
            }
            if malformed {
                self.batch.progress[idx].malformed += 1;
            }
        }
    }

    /// Adds a decoded record of an aggregation view as an event, unless it is stamped
    /// more than `max_future` after its Kafka timestamp (deterministic: the timestamp is
    /// in the log), which is dropped and counted.
    fn add_event(
        &mut self,
        topic: usize,
        route: &super::shard_ingest::Route,
        agg: &crate::registry::aggregation::Aggregation,
        rec: super::decode::DecodedRecord,
        (offset, raw): (i64, &RawRecord<'_>),
        shard_label: &str,
    ) {
        let kafka_micros = raw.timestamp_millis.map(|ms| ms.saturating_mul(1000));
        if rec.values.is_some()
            && kafka_micros
                .is_some_and(|k| rec.event_time_micros > k.saturating_add(agg.max_future_micros))
        {
            counter!(m::INGEST_LATE_EVENTS, "shard" => shard_label.to_owned(),
                "view" => route.view.name.clone(), "reason" => "future")
            .increment(1);
            return;
        }
        self.batch.events.push(AggEvent {
            topic,
            view: route.view.clone(),
            key: keys::tile_key(&route.view.name, route.view.version, &rec.entity_key),
            event_time_micros: rec.event_time_micros,
            history: route.view.history.map(|_| HistoryMeta {
                offset,
                arrival_micros: kafka_micros.unwrap_or(rec.event_time_micros),
            }),
            values: rec.values,
        });
    }
}
