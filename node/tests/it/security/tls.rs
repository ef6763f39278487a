//! TLS: plaintext against a TLS node fails; under mutual TLS a certificate from another
//! CA fails and the right one succeeds (and maps to its role); certificates reload
//! without a restart; members talk to each other over mutual TLS.

use std::path::Path;
use std::time::Duration;

use quiver_node::config::IdentitySection;
use quiver_node::{Listeners, Node};
use quiver_proto::transport::{Credentials, TlsClientSettings};
use quiver_proto::v1::cluster_service_client::ClusterServiceClient;
use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use quiver_proto::v1::{GetClusterMapRequest, GetSchemaRequest, PushRequest};
use quiver_testkit::{Ca, Pem};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::{BOOTSTRAP, secure_config};
use crate::harness::eventually;

fn tls_creds(ca: &Ca, client: Option<&Pem>, token: Option<&str>) -> Credentials {
    Credentials {
        tls: Some(TlsClientSettings {
            ca_pem: Some(ca.cert_pem().into_bytes()),
            identity: client.map(|p| (p.cert.clone().into_bytes(), p.key.clone().into_bytes())),
            server_name: None,
        }),
        token: token.map(str::to_owned),
    }
}

async fn schema(creds: &Credentials, addr: &str) -> Result<(), tonic::Status> {
    let ch = creds.lazy_channel(addr, Duration::from_secs(2)).unwrap();
    FeatureServiceClient::new(ch)
        .get_schema(GetSchemaRequest {})
        .await
        .map(|_| ())
}

/// A failure of the connection itself (handshake refused, alert, closed), not a gRPC
/// answer from the node: which code depends on when the TLS stack noticed.
fn assert_transport_failure(e: &tonic::Status) {
    assert!(
        matches!(
            e.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal
        ),
        "expected a transport failure, got {e:?}"
    );
    assert!(
        quiver_proto::ErrorCode::from_status(e).is_none(),
        "no handler answered: {e:?}"
    );
}

fn write_tls(
    dir: &Path,
    ca: &Ca,
    server: &Pem,
    client_auth: &str,
    f: &mut quiver_node::config::NodeConfigFile,
) {
    let (cert, key) = server.write(dir, "node");
    f.tls.cert_file = cert;
    f.tls.key_file = key;
    f.tls.ca_file = ca.write(dir, "ca");
    f.tls.client_auth = client_auth.into();
    f.tls.reload_interval = Duration::from_millis(100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_accepts_only_certificates_of_the_configured_ca() {
    let ca = Ca::new("quiver test CA");
    let other = Ca::new("someone else's CA");
    let server = ca.issue("node-1");
    let app = ca.issue("ranker");
    let stranger = other.issue("ranker");
    let unmapped = ca.issue("nobody");
    let kafka = crate::harness::Kafka::new(&[("scores", 2), ("secret", 2)]);
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = secure_config(dir.path(), &addr, &kafka.bootstrap, |f, d| {
        write_tls(d, &ca, &server, "required", f);
        f.auth.identities = vec![IdentitySection {
            name: "ranker".into(),
            role: "reader".into(),
            views: vec![],
        }];
    });
    let cancel = CancellationToken::new();
    let node = Node::start(config, Listeners { grpc: listener }, cancel.clone())
        .await
        .unwrap();

    // The right certificate: authenticated by its identity (no token), role reader.
    let good = tls_creds(&ca, Some(&app), None);
    eventually(
        Duration::from_secs(20),
        "mTLS lookup of the schema",
        || async { schema(&good, &addr).await.ok() },
    )
    .await;
    let ch = good.lazy_channel(&addr, Duration::from_secs(2)).unwrap();
    let push = FeatureServiceClient::new(ch)
        .push(PushRequest {
            view: "scores".into(),
            rows: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(push.code(), Code::PermissionDenied, "{push:?}");
    assert!(
        push.message().contains("certificate identity 'ranker'"),
        "{push:?}"
    );

    // A certificate of another CA, with the same name: the handshake fails.
    let e = schema(&tls_creds(&ca, Some(&stranger), None), &addr)
        .await
        .unwrap_err();
    assert_transport_failure(&e);
    // No certificate at all under required mTLS, even with a valid token: fails.
    let e = schema(&tls_creds(&ca, None, Some(BOOTSTRAP)), &addr)
        .await
        .unwrap_err();
    assert_transport_failure(&e);
    // Plaintext against the TLS port: fails.
    let e = schema(
        &Credentials {
            tls: None,
            token: Some(BOOTSTRAP.into()),
        },
        &addr,
    )
    .await
    .unwrap_err();
    // The node closes the connection on the bytes that are not a TLS handshake; hyper
    // reports that as unavailable, unknown, internal or (when the close wins the race
    // with the request) cancelled — a transport failure in each case, never an answer.
    assert!(
        matches!(
            e.code(),
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
        ),
        "{e:?}"
    );
    // A client that does not trust the node's CA: fails.
    let e = schema(&tls_creds(&other, Some(&app), None), &addr)
        .await
        .unwrap_err();
    assert_transport_failure(&e);
    // A certificate of the right CA whose name has no role: authenticated transport,
    // but UNAUTHENTICATED naming the certificate.
    let e = schema(&tls_creds(&ca, Some(&unmapped), None), &addr)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("nobody"), "{e:?}");
    // The node kept serving the good client throughout.
    schema(&good, &addr).await.unwrap();

    // Certificate reload: the node's certificate is replaced by one from another CA;
    // new connections see it without a restart.
    let renewed = other.issue("node-1");
    let (cert, key) = (dir.path().join("node.crt"), dir.path().join("node.key"));
    // Key first, then certificate: a reload in between fails and keeps the old pair.
    std::fs::write(&key, &renewed.key).unwrap();
    std::fs::write(&cert, &renewed.cert).unwrap();
    let trusts_new = Credentials {
        tls: Some(TlsClientSettings {
            ca_pem: Some(other.cert_pem().into_bytes()),
            identity: Some((app.cert.clone().into_bytes(), app.key.clone().into_bytes())),
            server_name: None,
        }),
        token: None,
    };
    eventually(
        Duration::from_secs(20),
        "reloaded certificate served",
        || async { schema(&trusts_new, &addr).await.ok() },
    )
    .await;
    let e = schema(&good, &addr).await.unwrap_err();
    assert_transport_failure(&e);
    cancel.cancel();
    node.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_form_a_cluster_over_mutual_tls_with_certificate_identities() {
    let ca = Ca::new("quiver test CA");
    let kafka = crate::harness::Kafka::new(&[("scores", 2), ("secret", 2)]);
    let mut listeners = Vec::new();
    for _ in 0..2 {
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
        let server = ca.issue(&format!("quiver-node-{}", i + 1));
        let config = secure_config(dir.path(), &addrs[i], &kafka.bootstrap, |f, d| {
            write_tls(d, &ca, &server, "required", f);
            f.node_id = i as u64 + 1;
            f.control.voters = 3;
            f.control.replication_factor = 2;
            f.control.initial_voters = voters.clone();
            // Members authenticate with their certificates, not a shared token.
            f.auth.cluster_token_file = Default::default();
            f.auth.identities = vec![
                IdentitySection {
                    name: "quiver-node-1".into(),
                    role: "node".into(),
                    views: vec![],
                },
                IdentitySection {
                    name: "quiver-node-2".into(),
                    role: "node".into(),
                    views: vec![],
                },
                IdentitySection {
                    name: "ops".into(),
                    role: "admin".into(),
                    views: vec![],
                },
            ];
        });
        assert!(config.security.peer_credentials.token.is_none());
        nodes.push(
            Node::start(config, Listeners { grpc: listener }, cancel.clone())
                .await
                .unwrap(),
        );
        dirs.push(dir);
    }
    let ops = tls_creds(&ca, Some(&ca.issue("ops")), None);
    for addr in &addrs {
        let ch = ops.lazy_channel(addr, Duration::from_secs(2)).unwrap();
        eventually(Duration::from_secs(60), "both members in the map", || {
            let ch = ch.clone();
            async move {
                let m = ClusterServiceClient::new(ch)
                    .get_cluster_map(GetClusterMapRequest {})
                    .await
                    .ok()?
                    .into_inner();
                let placed = m.shards.len() == 2 && m.shards.iter().all(|s| s.replicas.len() == 2);
                (m.members.len() == 2 && placed).then_some(())
            }
        })
        .await;
    }
    cancel.cancel();
    for n in nodes {
        n.wait().await.unwrap();
    }
}
