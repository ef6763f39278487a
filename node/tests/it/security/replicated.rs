//! Tokens are replicated state: one created through any member is accepted by every
//! member as soon as its creation returned — a member that has not applied the creation
//! yet catches up with the leader before judging an id it does not know — and an id no
//! member knows is still refused as unauthenticated.

use std::time::Duration;

use quiver_node::{Listeners, Node};
use quiver_proto::transport::{AuthChannel, Credentials};
use quiver_proto::v1::admin_service_client::AdminServiceClient;
use quiver_proto::v1::cluster_service_client::ClusterServiceClient;
use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use quiver_proto::v1::{
    CreateTokenRequest, GetClusterMapRequest, GetSchemaRequest, RevokeTokenRequest,
};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::{BOOTSTRAP, secure_config};
use crate::harness::eventually;

const MEMBERS: usize = 3;

fn channel(addr: &str, token: &str) -> AuthChannel {
    Credentials {
        tls: None,
        token: Some(token.to_owned()),
    }
    .lazy_channel(addr, Duration::from_secs(2))
    .unwrap()
}

async fn schema(addr: &str, token: &str) -> Result<(), tonic::Status> {
    FeatureServiceClient::new(channel(addr, token))
        .get_schema(GetSchemaRequest::default())
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_works_on_every_member_as_soon_as_its_creation_returned() {
    let kafka = crate::harness::Kafka::new(&[("scores", 2), ("secret", 2)]);
    let mut listeners = Vec::new();
    for _ in 0..MEMBERS {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    let voters: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}@{a}", i + 1))
        .collect();
    let cancel = CancellationToken::new();
    let mut nodes = Vec::new();
    let mut dirs = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let config = secure_config(dir.path(), &addrs[i], &kafka.bootstrap, |f, _| {
            f.node_id = i as u64 + 1;
            f.control.voters = MEMBERS;
            f.control.replication_factor = 2;
            f.control.initial_voters = voters.clone();
        });
        nodes.push(
            Node::start(config, Listeners { grpc: listener }, cancel.clone())
                .await
                .unwrap(),
        );
        dirs.push(dir);
    }
    // Every member in every member's map, and judging tokens (its state known to be
    // current: a token it does not know is refused as unauthenticated, not unavailable).
    let unknown = "qvr_0123456789ab_not-a-real-secret";
    for addr in &addrs {
        let ch = channel(addr, BOOTSTRAP);
        eventually(Duration::from_secs(60), "every member in the map", || {
            let ch = ch.clone();
            async move {
                let m = ClusterServiceClient::new(ch)
                    .get_cluster_map(GetClusterMapRequest {})
                    .await
                    .ok()?
                    .into_inner();
                (m.members.len() == MEMBERS).then_some(())
            }
        })
        .await;
        eventually(Duration::from_secs(30), "tokens judged", || async {
            let e = schema(addr, unknown).await.err()?;
            (e.code() == Code::Unauthenticated).then_some(())
        })
        .await;
    }

    // Each round creates a token through one member and at once uses it on all of them,
    // concurrently: a member that has not applied the creation yet (the leader commits
    // and answers before the followers apply) must not refuse it. Without the catch-up,
    // a follower refused a fresh token in most rounds.
    for round in 0..20 {
        let via = &addrs[round % MEMBERS];
        let created = AdminServiceClient::new(channel(via, BOOTSTRAP))
            .create_token(CreateTokenRequest {
                name: format!("fresh-{round}"),
                role: "reader".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let token = created.token;
        let answers = futures::future::join_all(addrs.iter().map(|a| schema(a, &token))).await;
        for (addr, answer) in addrs.iter().zip(answers) {
            if let Err(s) = answer {
                panic!(
                    "round {round}: a token created through {via} was refused by {addr}: {:?} {}",
                    s.code(),
                    s.message()
                );
            }
        }

        // Revoked through another member: refused everywhere once applied (a revocation
        // propagates with the log, like every change).
        let revoke_via = &addrs[(round + 1) % MEMBERS];
        AdminServiceClient::new(channel(revoke_via, BOOTSTRAP))
            .revoke_token(RevokeTokenRequest { id: created.id })
            .await
            .unwrap();
        for addr in &addrs {
            eventually(
                Duration::from_secs(10),
                "the revocation applied",
                || async {
                    let e = schema(addr, &token).await.err()?;
                    (e.code() == Code::Unauthenticated && e.message().contains("revoked"))
                        .then_some(())
                },
            )
            .await;
        }
    }

    // An id no member knows: every member refuses it as unauthenticated, naming the id.
    for addr in &addrs {
        let e = schema(addr, unknown).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{addr}: {}", e.message());
        assert!(
            e.message().contains("no token with id '0123456789ab'"),
            "{}",
            e.message()
        );
    }

    cancel.cancel();
    for n in nodes {
        n.wait().await.unwrap();
    }
}
