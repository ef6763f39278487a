//! Exports through one node's `FeatureService.ExportFeatures` stream instead of the smart
//! client's routing: for a machine that can reach one node (or a load balancer in front
//! of the nodes) but not every node of the cluster. The node reads the shards it holds
//! and forwards the other keys to their replicas on the caller's behalf
//! (docs/POINT_IN_TIME.md); one network hop more per key than the smart client.
//!
//! One stream per export. Chunks are sent in order and answered in order, so each chunk
//! registers a one-shot waiter when it is sent, and a reader task hands the stream's
//! answers to the waiters in turn. At most `parallel` chunks are in flight (the caller's
//! `FuturesOrdered` bound), so both channels are bounded by it.

use std::time::Duration;

use quiver_proto::transport::Credentials;
use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use quiver_proto::v1::{AsOf, GetOnlineFeaturesRequest, GetOnlineFeaturesResponse};
use tokio::sync::{mpsc, oneshot};

use super::{Answered, ExportError, ExportOptions, columns, labels};
use crate::{ClientError, LookupResult};

type Waiter = oneshot::Sender<Result<GetOnlineFeaturesResponse, tonic::Status>>;

/// An open `ExportFeatures` stream.
pub(super) struct NodeStream {
    requests: mpsc::Sender<GetOnlineFeaturesRequest>,
    waiters: mpsc::Sender<Waiter>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for NodeStream {
    fn drop(&mut self) {
        // An export that failed elsewhere (a label row, the output) stops reading answers.
        self.reader.abort();
    }
}

impl NodeStream {
    /// Opens the stream to the node at `addr`, presenting `credentials`.
    pub(super) async fn open(
        credentials: &Credentials,
        addr: &str,
        parallel: usize,
    ) -> Result<NodeStream, ExportError> {
        let rpc = |status: tonic::Status| ExportError::Lookup {
            first: 0,
            end: 0,
            source: ClientError::Rpc(status),
        };
        let channel = credentials
            .lazy_channel(addr, Duration::from_secs(5))
            .map_err(|e| ExportError::Invalid(format!("node {addr}: {e}")))?;
        let (requests, mut rx) = mpsc::channel::<GetOnlineFeaturesRequest>(parallel + 1);
        let outgoing = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut answers = FeatureServiceClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .export_features(outgoing)
            .await
            .map_err(rpc)?
            .into_inner();
        let (waiters, mut waiting) = mpsc::channel::<Waiter>(parallel + 1);
        let reader = tokio::spawn(async move {
            while let Some(waiter) = waiting.recv().await {
                let answer = match answers.message().await {
                    Ok(Some(a)) => Ok(a),
                    Ok(None) => Err(tonic::Status::aborted(
                        "the node ended the export stream before answering every chunk",
                    )),
                    Err(status) => Err(status),
                };
                let failed = answer.is_err();
                let _ = waiter.send(answer);
                if failed {
                    // The stream is over: the waiters after this one learn it when their
                    // sender is dropped.
                    return;
                }
            }
        });
        Ok(NodeStream {
            requests,
            waiters,
            reader,
        })
    }

    /// Sends one chunk (in the caller's order) and returns the future of its columns.
    pub(super) fn answer(
        &self,
        chunk: labels::Chunk,
        first: u64,
        opts: &ExportOptions,
    ) -> impl Future<Output = Answered> + Send + 'static {
        let end = first + chunk.batch.num_rows() as u64;
        let lost = move |status: tonic::Status| ExportError::Lookup {
            first,
            end,
            source: ClientError::Rpc(status),
        };
        let request = GetOnlineFeaturesRequest {
            features: opts.features.clone(),
            feature_service: opts.feature_service.clone().unwrap_or_default(),
            entity_keys: chunk.keys,
            as_of: Some(AsOf {
                time_micros: 0,
                key_times_micros: chunk.times,
                exclude_late_arrivals: opts.exclude_late_arrivals,
            }),
            ..Default::default()
        };
        let (tx, rx) = oneshot::channel();
        // Both channels hold `parallel + 1` and at most `parallel` chunks are in flight:
        // a full channel is a bug, and so is a closed one before the stream failed.
        let sent = self.waiters.try_send(tx).is_ok() && self.requests.try_send(request).is_ok();
        let (batch, status_columns) = (chunk.batch, opts.status_columns);
        async move {
            if !sent {
                return Err(lost(tonic::Status::aborted(
                    "the export stream to the node is closed",
                )));
            }
            let resp = match rx.await {
                Ok(answer) => answer.map_err(lost)?,
                Err(_) => {
                    return Err(lost(tonic::Status::aborted(
                        "the export stream failed on an earlier chunk",
                    )));
                }
            };
            let result = LookupResult::new(resp).map_err(|source| ExportError::Lookup {
                first,
                end,
                source,
            })?;
            columns::append(&batch, &result, status_columns).map_err(ExportError::Invalid)
        }
    }
}
