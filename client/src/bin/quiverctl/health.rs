//! `quiverctl health`: the standard gRPC health check (`grpc.health.v1.Health/Check`), as
//! a container health check or readiness probe runs it: exit status 0 when the service
//! is SERVING, 1 when it is not (or the node cannot be reached in time).

use std::time::Duration;

use anyhow::Context as _;
use quiver_proto::transport::Credentials;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Asks the node at `addr` about `service`; prints its status.
///
/// # Errors
/// The node could not be reached or answered an error within `timeout`.
pub async fn check(
    addr: &str,
    credentials: &Credentials,
    service: &str,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let channel = credentials
        .lazy_channel(addr, timeout)
        .with_context(|| format!("connect to {addr}"))?;
    let mut client = HealthClient::new(channel);
    let answer = tokio::time::timeout(
        timeout,
        client.check(HealthCheckRequest {
            service: service.to_owned(),
        }),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no health answer from {addr} within {timeout:?}"))?
    .with_context(|| format!("health check of {service:?} at {addr}"))?;
    let status =
        ServingStatus::try_from(answer.into_inner().status).unwrap_or(ServingStatus::Unknown);
    println!("{service}: {}", status.as_str_name());
    Ok(status == ServingStatus::Serving)
}
