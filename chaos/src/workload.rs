//! A workload that knows what it wrote: writers send values with known keys, sequence
//! numbers and event times (straight to Kafka and through `Push`) and record every
//! acknowledgement; readers look keys up through the smart client at a set rate and record
//! every answer with its watermarks and latency.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quiver_client::{Client, FeatureStatus, Lookup, LookupResult, PushRow};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cluster::TOPIC;
use crate::history::{Ack, History, Read, ReaderTotals, Seen, Via, Write};
use crate::rng::Rng;

/// The view the workload writes and reads.
pub const VIEW: &str = "chaos";
const SEQ: &str = "chaos:seq";
const CHECK: &str = "chaos:check";

/// An aggregation view over the same records: per key, the records counted and the sum of
/// their `seq` (lifetime windows), which the checker compares with the broker's log.
pub const AGG_VIEW: &str = "chaos_aggs";

/// Registry definitions of the workload's entity and views: `seq` (the value) and `check`
/// (`<key>/<seq>`, so a torn or misrouted row is detected), event time in microseconds;
/// and [`AGG_VIEW`], counting the same records.
pub fn definitions() -> String {
    format!(
        r#"
[[entity]]
name = "user"
key_type = "string"
{}
[[view]]
name = "{AGG_VIEW}"
entity = "user"
[view.source]
topic = "{TOPIC}"
event_time_field = "ts"
event_time_unit = "micros"
[view.aggregation]
allowed_lateness = "1h"
leading_edge = "event_time"
[[view.input]]
name = "seq"
type = "int64"
[[view.feature]]
name = "events"
function = "count"
window = "lifetime"
[[view.feature]]
name = "seq_sum"
function = "sum"
input = "seq"
window = "lifetime"
"#,
        view_definition(1)
    )
}

/// The workload view [`VIEW`] at `version`. The version-swap scenario applies new
/// versions of it, identical but for the number, and rolls between them.
pub fn view_definition(version: u32) -> String {
    format!(
        r#"
[[view]]
name = "{VIEW}"
version = {version}
entity = "user"
[view.source]
topic = "{TOPIC}"
event_time_field = "ts"
event_time_unit = "micros"
[[view.feature]]
name = "seq"
type = "int64"
[[view.feature]]
name = "check"
type = "string"
"#
    )
}

/// The entity key of key number `k`.
pub fn key_name(k: u32) -> String {
    format!("user-{k}")
}

/// The `check` feature of key `k` at `seq`.
pub fn check_value(k: u32, seq: i64) -> String {
    format!("{k}/{seq}")
}

/// The workload's shape.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// Distinct keys.
    pub keys: u32,
    /// Lookups per second, all readers together.
    pub read_rate: f64,
    /// Reader sessions (each its own client).
    pub readers: u32,
    /// Keys per lookup.
    pub batch: usize,
    /// Writes per second, half to Kafka and half through Push.
    pub write_rate: f64,
    /// Seed of key choices.
    pub seed: u64,
}

/// The shared record of a run.
pub struct Recorder {
    start: Instant,
    event_time_base_us: i64,
    next_seq: AtomicI64,
    writes: Mutex<Vec<Write>>,
    reads: Mutex<Vec<Read>>,
    acked: Mutex<BTreeMap<u32, i64>>,
    readers: Mutex<ReaderTotals>,
    swaps: Mutex<Vec<(u64, u32)>>,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        Recorder {
            start: Instant::now(),
            event_time_base_us: wall,
            next_seq: AtomicI64::new(1),
            writes: Mutex::new(Vec::new()),
            reads: Mutex::new(Vec::new()),
            acked: Mutex::new(BTreeMap::new()),
            readers: Mutex::new(ReaderTotals::default()),
            swaps: Mutex::new(Vec::new()),
        }
    }

    /// Microseconds since the start at `t`.
    pub fn micros(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_micros() as u64
    }

    fn begin_write(&self, key: u32, via: Via) -> (usize, i64) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let mut w = lock(&self.writes);
        w.push(Write {
            key,
            seq,
            via,
            sent_us: self.micros(Instant::now()),
            acked: None,
            error: None,
        });
        (w.len() - 1, seq)
    }

    fn ack(&self, index: usize, ack: Ack) {
        lock(&self.writes)[index].acked = Some(ack);
        let mut a = lock(&self.acked);
        let e = a.entry(ack.shard).or_insert(ack.next_offset);
        *e = (*e).max(ack.next_offset);
    }

    fn fail(&self, index: usize, error: String) {
        lock(&self.writes)[index].error = Some(error);
    }

    fn event_time(&self, seq: i64) -> i64 {
        self.event_time_base_us + seq
    }

    /// Records that the workload view's serving version became `version` now.
    pub fn swapped(&self, version: u32) {
        let at = self.micros(Instant::now());
        lock(&self.swaps).push((at, version));
    }

    /// Per shard, the offset after the last acknowledged write so far.
    pub fn acked_offsets(&self) -> BTreeMap<u32, i64> {
        lock(&self.acked).clone()
    }

    /// The history so far (the final reads are added by the caller).
    pub fn history(&self) -> History {
        History {
            event_time_base_us: self.event_time_base_us,
            writes: lock(&self.writes).clone(),
            reads: lock(&self.reads).clone(),
            final_reads: Vec::new(),
            swaps: lock(&self.swaps).clone(),
            readers: *lock(&self.readers),
        }
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// Locks `m`, carrying on past a poisoned lock (the data is append-only records).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Decodes the rows of `r` (a lookup of `keys`) into what the checker judges.
pub fn decode_rows(r: &LookupResult, keys: &[u32]) -> Vec<(u32, Option<Seen>)> {
    let (Some(seq_col), Some(check_col)) = (r.column_index(SEQ), r.column_index(CHECK)) else {
        return keys.iter().map(|k| (*k, None)).collect();
    };
    keys.iter()
        .enumerate()
        .map(|(row, k)| {
            let seen = match r.status(row, seq_col) {
                FeatureStatus::NotFound => None,
                FeatureStatus::Present => {
                    let seq = r.i64(row, seq_col).unwrap_or(-1);
                    let t = r.event_time_micros(row, seq_col);
                    Some(Seen {
                        seq,
                        event_time_us: t,
                        check_ok: r.str(row, check_col) == Some(check_value(*k, seq).as_str())
                            && r.event_time_micros(row, check_col) == t,
                    })
                }
                // Expired or unknown: nothing the workload wrote looks like that.
                _ => Some(Seen {
                    seq: -1,
                    event_time_us: 0,
                    check_ok: false,
                }),
            };
            (*k, seen)
        })
        .collect()
}

/// The lookup of `keys`.
pub fn lookup(keys: &[u32]) -> Lookup {
    // Event times: the checker pairs each value with the row version it came from.
    Lookup::features([SEQ, CHECK])
        .keys(keys.iter().map(|k| key_name(*k)))
        .event_times(true)
}

/// Lookups one reader may have in flight; a lookup due beyond it is recorded as failed
/// ("not issued"), so a stalled cluster cannot grow the reader's memory without bound.
const READER_MAX_IN_FLIGHT: usize = 512;

/// Reader `id`: open loop — a lookup of `spec.batch` random keys is issued every
/// `interval` from `first` on, when it is due, whether or not earlier ones have returned;
/// each is recorded with its latency from the time it was due. An outage therefore
/// counts every lookup that was due during it (a closed loop would issue one, wait, and
/// record the ones due meanwhile late but successful).
pub async fn reader(
    id: u32,
    client: Client,
    rec: Arc<Recorder>,
    spec: WorkloadSpec,
    interval: Duration,
    first: Instant,
    cancel: CancellationToken,
) {
    let mut rng = Rng::new(spec.seed ^ (u64::from(id) + 1).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut due = first;
    let mut in_flight = JoinSet::new();
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(due.into()) => {}
        }
        while in_flight.try_join_next().is_some() {}
        let keys: Vec<u32> = (0..spec.batch)
            .map(|_| rng.below(u64::from(spec.keys)) as u32)
            .collect();
        if in_flight.len() >= READER_MAX_IN_FLIGHT {
            lock(&rec.reads).push(Read {
                reader: id,
                intended_us: rec.micros(due),
                latency_us: 0,
                error: Some(format!(
                    "not issued: {READER_MAX_IN_FLIGHT} lookups of this reader in flight"
                )),
                rows: Vec::new(),
                watermarks: Vec::new(),
                versions: Vec::new(),
            });
        } else {
            in_flight.spawn(read_once(id, client.clone(), rec.clone(), keys, due));
        }
        due += interval;
    }
    // The lookups in flight end by their own deadline.
    while in_flight.join_next().await.is_some() {}
    lock(&rec.readers).add(&client.stats());
}

/// One lookup of a reader, due at `due`, recorded.
async fn read_once(id: u32, client: Client, rec: Arc<Recorder>, keys: Vec<u32>, due: Instant) {
    let result = client.get_online_features(&lookup(&keys)).await;
    let latency_us = Instant::now().saturating_duration_since(due).as_micros() as u64;
    let read = match result {
        Ok(r) => Read {
            reader: id,
            intended_us: rec.micros(due),
            latency_us,
            error: None,
            rows: decode_rows(&r, &keys),
            watermarks: r
                .watermarks()
                .iter()
                .filter(|(_, topic, _)| *topic == TOPIC)
                .map(|(s, _, o)| (s, o))
                .collect(),
            versions: r.view_versions().to_vec(),
        },
        Err(e) => Read {
            reader: id,
            intended_us: rec.micros(due),
            latency_us,
            error: Some(error_kind(&e)),
            rows: Vec::new(),
            watermarks: Vec::new(),
            versions: Vec::new(),
        },
    };
    lock(&rec.reads).push(read);
}

fn error_kind(e: &quiver_client::ClientError) -> String {
    short(&e.to_string())
}

/// An error's text cut to a length that groups well in the report.
fn short(text: &str) -> String {
    text.chars().take(160).collect()
}

/// Starts `write()` `rate` times per second until cancelled, with at most `inflight`
/// writes outstanding (the rate drops rather than memory growing when the cluster
/// stalls), then waits at most `drain` for the outstanding ones.
async fn paced<F, Fut>(
    rate: f64,
    inflight: usize,
    drain: Duration,
    cancel: CancellationToken,
    mut write: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(inflight));
    let mut tasks = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let one = write();
        tasks.spawn(async move {
            one.await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
}

/// Writes through Kafka at `rate` per second until cancelled, then waits (bounded) for
/// the outstanding acknowledgements.
///
/// # Errors
/// When the producer cannot be created.
pub async fn kafka_writer(
    rec: Arc<Recorder>,
    bootstrap: String,
    spec: WorkloadSpec,
    rate: f64,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "30000")
        .create()?;
    let mut rng = Rng::new(spec.seed ^ 0x006B_6166_6B61);
    paced(rate, 1024, Duration::from_secs(40), cancel, || {
        let key = rng.below(u64::from(spec.keys)) as u32;
        let (index, seq) = rec.begin_write(key, Via::Kafka);
        let payload = serde_json::json!({
            "ts": rec.event_time(seq),
            "seq": seq,
            "check": check_value(key, seq),
        })
        .to_string();
        let (producer, rec) = (producer.clone(), rec.clone());
        async move {
            let name = key_name(key);
            let r = producer
                .send(
                    FutureRecord::to(TOPIC).key(&name).payload(&payload),
                    Duration::from_secs(30),
                )
                .await;
            match r {
                Ok(d) => rec.ack(
                    index,
                    Ack {
                        shard: d.partition as u32,
                        next_offset: d.offset + 1,
                    },
                ),
                Err((e, _)) => rec.fail(index, short(&e.to_string())),
            }
        }
    })
    .await;
    Ok(())
}

/// Writes one row per `Push` at `rate` per second until cancelled (a few in flight).
pub async fn push_writer(
    rec: Arc<Recorder>,
    client: Client,
    spec: WorkloadSpec,
    rate: f64,
    cancel: CancellationToken,
) {
    let mut rng = Rng::new(spec.seed ^ 0x7075_7368);
    paced(rate, 16, Duration::from_secs(10), cancel, || {
        let key = rng.below(u64::from(spec.keys)) as u32;
        let (index, seq) = rec.begin_write(key, Via::Push);
        let row = PushRow::new(key_name(key))
            .set("seq", seq)
            .set("check", check_value(key, seq))
            .event_time_micros(rec.event_time(seq));
        let (client, rec) = (client.clone(), rec.clone());
        async move {
            match client.push(VIEW, [row]).await {
                Ok(wm) => match wm.iter().find(|(_, t, _)| *t == TOPIC) {
                    Some((shard, _, next)) => rec.ack(
                        index,
                        Ack {
                            shard,
                            next_offset: next,
                        },
                    ),
                    None => rec.fail(index, "push answered without a watermark".into()),
                },
                Err(e) => rec.fail(index, error_kind(&e)),
            }
        }
    })
    .await;
}
