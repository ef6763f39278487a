//! The authorisation matrix: every RPC × every kind of caller (each role, with and
//! without a grant of the view the call touches, and invalid, unknown, revoked and
//! missing tokens). Each call's outcome must be exactly the specified one; refused
//! calls must change nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt as _;
use quiver_proto::ErrorCode;
use quiver_proto::transport::AuthChannel;
use quiver_proto::v1::admin_service_client::AdminServiceClient;
use quiver_proto::v1::cluster_service_client::ClusterServiceClient;
use quiver_proto::v1::control_service_client::ControlServiceClient;
use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use quiver_proto::v1::raft_service_client::RaftServiceClient;
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::*;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use tonic::Code;

use super::{BOOTSTRAP, CLUSTER, SecureNode};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    Missing,
    Garbage,
    UnknownId,
    WrongSecret,
    Revoked,
    Bootstrap,
    Cluster,
    Reader,
    ReaderScores,
    Writer,
    WriterScores,
    Admin,
    AdminScores,
}

const EVERYONE: [Who; 13] = [
    Who::Missing,
    Who::Garbage,
    Who::UnknownId,
    Who::WrongSecret,
    Who::Revoked,
    Who::Bootstrap,
    Who::Cluster,
    Who::Reader,
    Who::ReaderScores,
    Who::Writer,
    Who::WriterScores,
    Who::Admin,
    Who::AdminScores,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rpc {
    Lookup(&'static str),
    Push(&'static str),
    Schema,
    Apply,
    ListViews,
    Describe(&'static str),
    Status,
    CreateToken,
    RevokeToken,
    ListTokens,
    ClusterMap,
    WatchMap,
    Drain,
    Vote,
    AppendEntries,
    InstallSnapshot,
    Propose,
    Join,
    Report,
    Health,
    Reflection,
}

const RPCS: [Rpc; 24] = [
    Rpc::Lookup("scores"),
    Rpc::Lookup("secret"),
    Rpc::Push("scores"),
    Rpc::Push("secret"),
    Rpc::Schema,
    Rpc::Apply,
    Rpc::ListViews,
    Rpc::Describe("scores"),
    Rpc::Describe("secret"),
    Rpc::Status,
    Rpc::CreateToken,
    Rpc::RevokeToken,
    Rpc::ListTokens,
    Rpc::ClusterMap,
    Rpc::WatchMap,
    Rpc::Drain,
    Rpc::Vote,
    Rpc::AppendEntries,
    Rpc::InstallSnapshot,
    Rpc::Propose,
    Rpc::Join,
    Rpc::Report,
    Rpc::Health,
    Rpc::Reflection,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Unauthenticated,
    Denied,
    Allowed,
}

#[derive(Clone, Copy, PartialEq)]
enum Level {
    Public,
    Read,
    Write,
    Admin,
    Member,
}

fn level(rpc: Rpc) -> Level {
    match rpc {
        Rpc::Health => Level::Public,
        Rpc::Push(_) => Level::Write,
        Rpc::Apply | Rpc::CreateToken | Rpc::RevokeToken | Rpc::ListTokens | Rpc::Drain => {
            Level::Admin
        }
        Rpc::Vote
        | Rpc::AppendEntries
        | Rpc::InstallSnapshot
        | Rpc::Propose
        | Rpc::Join
        | Rpc::Report => Level::Member,
        _ => Level::Read,
    }
}

/// The specification.
fn expected(rpc: Rpc, who: Who) -> Outcome {
    if level(rpc) == Level::Public {
        return Outcome::Allowed;
    }
    let (levels, scores_only): (&[Level], bool) = match who {
        Who::Missing | Who::Garbage | Who::UnknownId | Who::WrongSecret | Who::Revoked => {
            return Outcome::Unauthenticated;
        }
        Who::Cluster => (&[Level::Member], false),
        Who::Reader => (&[Level::Read], false),
        Who::ReaderScores => (&[Level::Read], true),
        Who::Writer => (&[Level::Read, Level::Write], false),
        Who::WriterScores => (&[Level::Read, Level::Write], true),
        Who::Admin | Who::Bootstrap => (&[Level::Read, Level::Write, Level::Admin], false),
        Who::AdminScores => (&[Level::Read, Level::Write, Level::Admin], true),
    };
    if !levels.contains(&level(rpc)) {
        return Outcome::Denied;
    }
    let view = match rpc {
        Rpc::Lookup(v) | Rpc::Push(v) | Rpc::Describe(v) => Some(v),
        _ => None,
    };
    if scores_only && view == Some("secret") {
        return Outcome::Denied;
    }
    Outcome::Allowed
}

struct Ctx {
    node: SecureNode,
    tokens: BTreeMap<Who, Option<String>>,
    applied: usize,
}

impl Ctx {
    fn channel(&self, who: Who) -> AuthChannel {
        let token = self.tokens[&who].clone();
        self.node.channel(&self.node.creds(token.as_deref()))
    }

    fn admin(&self) -> AdminServiceClient<AuthChannel> {
        AdminServiceClient::new(self.channel(Who::Bootstrap))
    }

    async fn create(&self, name: &str, role: &str, views: &[&str]) -> (String, String) {
        let r = self
            .admin()
            .create_token(CreateTokenRequest {
                name: name.into(),
                role: role.into(),
                views: views.iter().map(|v| (*v).to_owned()).collect(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        (r.id, r.token)
    }

    async fn tokens(&self) -> Vec<TokenInfo> {
        self.admin()
            .list_tokens(ListTokensRequest {})
            .await
            .unwrap()
            .into_inner()
            .tokens
    }

    /// Makes the call; `Ok(())` when it passed the security checks and did what it
    /// should (or failed for a reason unrelated to security where that is expected).
    async fn call(&mut self, rpc: Rpc, who: Who) -> Result<(), tonic::Status> {
        let ch = self.channel(who);
        let key = EntityKey::from("u1");
        match rpc {
            Rpc::Lookup(view) => {
                FeatureServiceClient::new(ch)
                    .get_online_features(GetOnlineFeaturesRequest {
                        features: vec![format!("{view}:*")],
                        entity_keys: vec![key],
                        ..Default::default()
                    })
                    .await?;
            }
            Rpc::Push(view) => {
                let (name, value) = if view == "scores" {
                    ("score", Kind::Int64Value(7))
                } else {
                    ("ssn", Kind::StringValue("000".into()))
                };
                FeatureServiceClient::new(ch)
                    .push(PushRequest {
                        view: view.into(),
                        rows: vec![PushRow {
                            entity_key: Some(key),
                            event_time_micros: 0,
                            features: [(name.to_owned(), Value { kind: Some(value) })].into(),
                            delete: false,
                        }],
                    })
                    .await?;
            }
            Rpc::Schema => {
                let s = FeatureServiceClient::new(ch)
                    .get_schema(GetSchemaRequest {})
                    .await?
                    .into_inner();
                let names: Vec<&str> = s.views.iter().map(|v| v.name.as_str()).collect();
                let scores_only = matches!(
                    who,
                    Who::ReaderScores | Who::WriterScores | Who::AdminScores
                );
                assert_eq!(
                    names.contains(&"secret"),
                    !scores_only,
                    "{who:?} schema {names:?}"
                );
            }
            Rpc::Apply => {
                self.applied += 1;
                let toml = format!(
                    "[[view]]\nname = \"extra_{}\"\nentity = \"user\"\n[view.source]\ntopic = \"scores\"\nevent_time_field = \"ts\"\n[[view.feature]]\nname = \"x\"\ntype = \"int64\"\n",
                    format!("{who:?}").to_lowercase()
                );
                AdminServiceClient::new(ch)
                    .apply_definitions(ApplyDefinitionsRequest {
                        toml,
                        dry_run: false,
                    })
                    .await?;
            }
            Rpc::ListViews => {
                let l = AdminServiceClient::new(ch)
                    .list_views(ListViewsRequest {})
                    .await?
                    .into_inner();
                let scores_only = matches!(
                    who,
                    Who::ReaderScores | Who::WriterScores | Who::AdminScores
                );
                assert_eq!(
                    l.views.iter().any(|v| v.name == "secret"),
                    !scores_only,
                    "{who:?} lists views the grants allow"
                );
            }
            Rpc::Describe(view) => {
                AdminServiceClient::new(ch)
                    .describe_view(DescribeViewRequest { name: view.into() })
                    .await?;
            }
            Rpc::Status => {
                AdminServiceClient::new(ch)
                    .get_status(GetStatusRequest {})
                    .await?;
            }
            Rpc::CreateToken => {
                AdminServiceClient::new(ch)
                    .create_token(CreateTokenRequest {
                        name: format!("made_by_{who:?}"),
                        role: "reader".into(),
                        views: vec![],
                        ..Default::default()
                    })
                    .await?;
            }
            Rpc::RevokeToken => {
                let (victim, _) = self
                    .create(&format!("victim_of_{who:?}"), "reader", &[])
                    .await;
                let r = AdminServiceClient::new(ch)
                    .revoke_token(RevokeTokenRequest { id: victim.clone() })
                    .await;
                let revoked = self
                    .tokens()
                    .await
                    .into_iter()
                    .find(|t| t.id == victim)
                    .expect("victim listed")
                    .revoked_at_ms
                    != 0;
                assert_eq!(revoked, r.is_ok(), "{who:?}: revoked exactly when allowed");
                r?;
            }
            Rpc::ListTokens => {
                let l = AdminServiceClient::new(ch)
                    .list_tokens(ListTokensRequest {})
                    .await?
                    .into_inner();
                assert!(!l.tokens.is_empty());
            }
            Rpc::ClusterMap => {
                ClusterServiceClient::new(ch)
                    .get_cluster_map(GetClusterMapRequest {})
                    .await?;
            }
            Rpc::WatchMap => {
                let mut s = ClusterServiceClient::new(ch)
                    .watch_cluster_map(GetClusterMapRequest {})
                    .await?
                    .into_inner();
                let first = tokio::time::timeout(Duration::from_secs(5), s.next())
                    .await
                    .expect("first map in time");
                first.expect("stream yields")?;
            }
            Rpc::Drain => {
                // Node 99 does not exist: an authorised call passes the guard and is
                // rejected by the control plane (nothing drains).
                let r = ClusterServiceClient::new(ch)
                    .drain_node(DrainNodeRequest { node_id: 99 })
                    .await;
                not_security(r, Code::NotFound)?;
            }
            Rpc::Vote | Rpc::AppendEntries | Rpc::InstallSnapshot => {
                let msg = RaftMessage {
                    data: b"not json".to_vec(),
                };
                let mut c = RaftServiceClient::new(ch);
                let r = match rpc {
                    Rpc::Vote => c.vote(msg).await,
                    Rpc::AppendEntries => c.append_entries(msg).await,
                    _ => c.install_snapshot(msg).await,
                };
                not_security(r, Code::InvalidArgument)?;
            }
            Rpc::Propose => {
                let r = ControlServiceClient::new(ch)
                    .propose(ProposeRequest {
                        command_json: b"{}".to_vec(),
                    })
                    .await;
                not_security(r, Code::InvalidArgument)?;
            }
            Rpc::Join => {
                let r = ControlServiceClient::new(ch)
                    .join(JoinRequest {
                        node_id: 0,
                        addr: String::new(),
                        zone: String::new(),
                    })
                    .await;
                not_security(r, Code::InvalidArgument)?;
            }
            Rpc::Report => {
                ControlServiceClient::new(ch)
                    .report(ReportRequest {
                        node_id: 999,
                        replicas: vec![],
                        want_read_index: false,
                    })
                    .await?;
            }
            Rpc::Health => {
                tonic_health::pb::health_client::HealthClient::new(ch)
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await?;
            }
            Rpc::Reflection => {
                use tonic_reflection::pb::v1::ServerReflectionRequest;
                use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
                use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
                let req = ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(MessageRequest::ListServices(String::new())),
                };
                let mut s = ServerReflectionClient::new(ch)
                    .server_reflection_info(futures::stream::iter([req]))
                    .await?
                    .into_inner();
                s.next().await.expect("one answer")?;
            }
        }
        Ok(())
    }
}

/// An authorised call that fails for its own (expected) reason counts as allowed.
fn not_security<T>(r: Result<T, tonic::Status>, expected: Code) -> Result<(), tonic::Status> {
    match r {
        Ok(_) => Ok(()),
        Err(s) if matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied) => Err(s),
        // Anything else is reported by the matrix as an unexpected answer.
        Err(s) if s.code() == expected => Ok(()),
        Err(s) => Err(s),
    }
}

fn high_watermarks(bootstrap: &str, topic: &str) -> i64 {
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "audit")
        .create()
        .unwrap();
    (0..2)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(5))
                .unwrap()
                .1
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_for_every_caller_is_exactly_as_specified() {
    let node = SecureNode::start(|_, _| {}).await;
    let mut ctx = Ctx {
        node,
        tokens: BTreeMap::new(),
        applied: 0,
    };
    for (who, token) in [
        (Who::Missing, None),
        (Who::Garbage, Some("hello".to_owned())),
        (Who::Bootstrap, Some(BOOTSTRAP.to_owned())),
        (Who::Cluster, Some(CLUSTER.to_owned())),
    ] {
        ctx.tokens.insert(who, token);
    }
    for (who, role, views) in [
        (Who::Reader, "reader", &[][..]),
        (Who::ReaderScores, "reader", &["scores"][..]),
        (Who::Writer, "writer", &[][..]),
        (Who::WriterScores, "writer", &["scores"][..]),
        (Who::Admin, "admin", &[][..]),
        (Who::AdminScores, "admin", &["scores"][..]),
        (Who::Revoked, "admin", &[][..]),
    ] {
        let (id, token) = ctx.create(&format!("{who:?}"), role, views).await;
        assert!(token.starts_with(&format!("qvr_{id}_")), "{token}");
        ctx.tokens.insert(who, Some(token));
        if who == Who::Revoked {
            ctx.admin()
                .revoke_token(RevokeTokenRequest { id })
                .await
                .unwrap();
        }
    }
    let reader = ctx.tokens[&Who::Reader].clone().unwrap();
    let mut wrong = reader.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'A' { 'B' } else { 'A' });
    ctx.tokens.insert(Who::WrongSecret, Some(wrong));
    let secret = reader.rsplit('_').next().unwrap().to_owned();
    ctx.tokens
        .insert(Who::UnknownId, Some(format!("qvr_000000000000_{secret}")));

    // Token lists never carry secrets or hashes.
    for t in ctx.tokens().await {
        assert!(!format!("{t:?}").contains(&secret));
    }

    let mut checked = 0;
    let mut unauthorised_successes = Vec::new();
    let mut mismatches = Vec::new();
    let mut allowed_pushes = 0;
    let mut allowed_creates = 0;
    let mut allowed_applies = Vec::new();
    for rpc in RPCS {
        for who in EVERYONE {
            let want = expected(rpc, who);
            let got = match ctx.call(rpc, who).await {
                Ok(()) => Outcome::Allowed,
                Err(s) => {
                    let outcome = match s.code() {
                        Code::Unauthenticated => Outcome::Unauthenticated,
                        Code::PermissionDenied => Outcome::Denied,
                        _ => {
                            checked += 1;
                            mismatches.push(format!(
                                "{rpc:?} as {who:?}: want {want:?}, got {:?}: {}",
                                s.code(),
                                s.message()
                            ));
                            continue;
                        }
                    };
                    assert!(
                        ErrorCode::from_status(&s).is_some(),
                        "refusals carry the quiver error code: {s:?}"
                    );
                    check_message(rpc, who, &s);
                    outcome
                }
            };
            checked += 1;
            if got == Outcome::Allowed && want != Outcome::Allowed {
                unauthorised_successes.push(format!("{rpc:?} as {who:?}"));
            }
            if got != want {
                mismatches.push(format!("{rpc:?} as {who:?}: want {want:?}, got {got:?}"));
            }
            if got == Outcome::Allowed {
                match rpc {
                    Rpc::Push(_) => allowed_pushes += 1,
                    Rpc::CreateToken => allowed_creates += 1,
                    Rpc::Apply => {
                        allowed_applies.push(format!("extra_{}", format!("{who:?}").to_lowercase()))
                    }
                    _ => {}
                }
            }
        }
    }
    assert_eq!(checked, RPCS.len() * EVERYONE.len());
    if !unauthorised_successes.is_empty() || !mismatches.is_empty() {
        // Stop the node first: its shutdown logs would otherwise follow, and bury, the
        // failure message in the test's output.
        ctx.node.stop().await;
        panic!("unauthorised successes: {unauthorised_successes:#?}\nmismatches: {mismatches:#?}");
    }
    assert!(ctx.applied > 0);

    // Refused calls changed nothing: exactly the allowed pushes reached Kafka, exactly the
    // allowed creations and definitions exist.
    let produced = high_watermarks(&ctx.node.kafka.bootstrap, "scores")
        + high_watermarks(&ctx.node.kafka.bootstrap, "secret");
    assert_eq!(
        produced, allowed_pushes,
        "records in Kafka = allowed pushes"
    );
    let made = ctx
        .tokens()
        .await
        .iter()
        .filter(|t| t.name.starts_with("made_by_"))
        .count();
    assert_eq!(made, allowed_creates);
    // Applied views list once built (a new view is backfilled before it serves): poll.
    allowed_applies.sort();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut extra: Vec<String> = ctx
            .admin()
            .list_views(ListViewsRequest {})
            .await
            .unwrap()
            .into_inner()
            .views
            .into_iter()
            .map(|v| v.name)
            .filter(|n| n.starts_with("extra_"))
            .collect();
        extra.sort();
        if extra == allowed_applies || std::time::Instant::now() > deadline {
            assert_eq!(extra, allowed_applies);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A method the node does not list is closed: refused to every authenticated caller
    // (even admin and members), unauthenticated for strangers; never "unimplemented".
    for who in [
        Who::Reader,
        Who::Writer,
        Who::Admin,
        Who::Bootstrap,
        Who::Cluster,
    ] {
        let s = call_unlisted(ctx.channel(who)).await.unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{who:?}: {s:?}");
        assert!(s.message().contains("authorisation table"), "{s:?}");
    }
    for who in [Who::Missing, Who::Garbage] {
        let s = call_unlisted(ctx.channel(who)).await.unwrap_err();
        assert_eq!(s.code(), Code::Unauthenticated, "{who:?}: {s:?}");
    }
    ctx.node.stop().await;
}

/// Calls `/quiver.v1.FeatureService/Export`, a method no table lists.
async fn call_unlisted(channel: AuthChannel) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<GetSchemaRequest, Schema>::default();
    let path = http::uri::PathAndQuery::from_static("/quiver.v1.FeatureService/Export");
    grpc.unary(tonic::Request::new(GetSchemaRequest {}), path, codec)
        .await
        .map(|_| ())
}

/// Refusals say what was missing.
fn check_message(rpc: Rpc, who: Who, s: &tonic::Status) {
    let m = s.message();
    let needle = match (who, s.code()) {
        (Who::Missing, _) => "missing credentials",
        (Who::Garbage, _) => "not a quiver token",
        (Who::UnknownId, _) => "no token with id",
        (Who::WrongSecret, _) => "wrong secret",
        (Who::Revoked, _) => "was revoked",
        (_, Code::PermissionDenied)
            if matches!(
                rpc,
                Rpc::Lookup("secret") | Rpc::Push("secret") | Rpc::Describe("secret")
            ) && matches!(
                who,
                Who::ReaderScores | Who::WriterScores | Who::AdminScores
            ) && level(rpc) != Level::Write
                || matches!(
                    (rpc, who),
                    (Rpc::Push("secret"), Who::WriterScores | Who::AdminScores)
                ) =>
        {
            "view 'secret'"
        }
        (_, Code::PermissionDenied) => "needs",
        _ => return,
    };
    assert!(
        m.contains(needle),
        "{rpc:?} as {who:?}: {m:?} should mention {needle:?}"
    );
}
