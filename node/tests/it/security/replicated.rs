//! Tokens are replicated state: one created through any member is accepted by every
//! member as soon as its creation returned — a member that has not applied the creation
//! yet catches up with the leader before judging an id it does not know — and an id no
//! member knows is still refused as unauthenticated. An export through any member reads
//! every shard within the caller's grants.

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

/// `MEMBERS` secure members (auth on, R = 2) over `kafka`, each in every member's map and
/// judging tokens (a token it does not know is refused as unauthenticated).
struct Members {
    addrs: Vec<String>,
    nodes: Vec<Node>,
    cancel: CancellationToken,
    _dirs: Vec<tempfile::TempDir>,
}

const UNKNOWN: &str = "qvr_0123456789ab_not-a-real-secret";

async fn start_members(kafka: &crate::harness::Kafka) -> Members {
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
            let e = schema(addr, UNKNOWN).await.err()?;
            (e.code() == Code::Unauthenticated).then_some(())
        })
        .await;
    }
    Members {
        addrs,
        nodes,
        cancel,
        _dirs: dirs,
    }
}

impl Members {
    async fn stop(self) {
        self.cancel.cancel();
        for n in self.nodes {
            n.wait().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_works_on_every_member_as_soon_as_its_creation_returned() {
    let kafka = crate::harness::Kafka::new(&[("scores", 2), ("secret", 2)]);
    let members = start_members(&kafka).await;
    let addrs = &members.addrs;
    let unknown = UNKNOWN;
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
        for addr in addrs {
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
    for addr in addrs {
        let e = schema(addr, unknown).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{addr}: {}", e.message());
        assert!(
            e.message().contains("no token with id '0123456789ab'"),
            "{}",
            e.message()
        );
    }

    members.stop().await;
}

/// An export through any member reads every shard (the ones it lacks as a member, from a
/// replica elsewhere) with the caller's grants checked once on the member it called: a
/// reader granted `scores` exports all of it through each member; `secret` is refused
/// whatever member is asked, and no token is refused before anything is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_through_any_member_reads_every_shard_within_the_callers_grants() {
    use quiver_proto::v1::{
        ApplyDefinitionsRequest, AsOf, FeatureStatus, GetOnlineFeaturesRequest,
    };

    let kafka = crate::harness::Kafka::new(&[("scores", 2), ("secret", 2)]);
    let members = start_members(&kafka).await;
    let addrs = &members.addrs;
    AdminServiceClient::new(channel(&addrs[0], BOOTSTRAP))
        .apply_definitions(ApplyDefinitionsRequest {
            toml: super::VIEWS.replace(
                "name = \"scores\"\nentity = \"user\"",
                "name = \"scores\"\nentity = \"user\"\nhistory = \"1d\"",
            ),
            dry_run: false,
        })
        .await
        .unwrap();
    let t = crate::ingest::now_ms() - 10_000;
    const KEYS: i64 = 30;
    for k in 0..KEYS {
        kafka
            .send_json(
                "scores",
                &format!("u{k}"),
                serde_json::json!({"ts": t, "score": k, "tag": "x", "emb": [1.0]}),
            )
            .await;
    }
    let reader = AdminServiceClient::new(channel(&addrs[0], BOOTSTRAP))
        .create_token(CreateTokenRequest {
            name: "trainer".into(),
            role: "reader".into(),
            views: vec!["scores".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let chunk = |feature: &str| GetOnlineFeaturesRequest {
        features: vec![feature.into()],
        entity_keys: (0..KEYS)
            .map(|k| crate::ingest::key(&format!("u{k}")))
            .collect(),
        as_of: Some(AsOf {
            time_micros: (t + 1) * 1_000,
            ..Default::default()
        }),
        ..Default::default()
    };
    let export = |addr: String, token: String, feature: &'static str| async move {
        let mut stream = FeatureServiceClient::new(channel(&addr, &token))
            .export_features(futures::stream::iter(vec![chunk(feature)]))
            .await?
            .into_inner();
        stream
            .message()
            .await
            .map(|m| m.expect("one answer per chunk"))
    };
    for addr in addrs {
        // Every replica ingests in its own time: poll until this member's export is whole.
        let answer = eventually(Duration::from_secs(30), "a whole export", || {
            let (addr, reader) = (addr.clone(), reader.clone());
            async move {
                let a = match export(addr.clone(), reader, "scores:score").await {
                    Ok(a) => a,
                    Err(e) => {
                        eprintln!("export through {addr}: {:?} {}", e.code(), e.message());
                        return None;
                    }
                };
                let col = &a.packed_columns[0];
                (0..KEYS as usize)
                    .all(|i| col.status_at(i) == FeatureStatus::Present)
                    .then_some(a)
            }
        })
        .await;
        assert_eq!(
            answer.packed_columns[0].int64s,
            (0..KEYS).collect::<Vec<_>>()
        );

        let e = export(addr.clone(), reader.clone(), "secret:ssn")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{addr}: {}", e.message());
        assert!(e.message().contains("secret"), "{}", e.message());
        let e = export(addr.clone(), UNKNOWN.into(), "scores:score")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{addr}: {}", e.message());
    }
    members.stop().await;
}
