use super::*;

/// A node restarted after a token was revoked while it was down never accepts it: until
/// its control-plane state has caught up with the leader it answers UNAVAILABLE (the
/// client goes elsewhere), then UNAUTHENTICATED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_while_a_node_was_down_is_refused_from_its_first_answer() {
    let broker = Broker::start();
    broker.create_topic("clicks", 8);
    broker.create_topic("secret", 8);
    let root = tempfile::tempdir().unwrap();
    let mut settings = ClusterSettings::new(broker.bootstrap());
    let (security, admin) = auth_toml(root.path());
    settings.security_toml = security;
    let members = initial_members(root.path(), 3, &settings);
    let mut procs: BTreeMap<u64, NodeProcess> = members
        .iter()
        .map(|m| (m.id, NodeProcess::start_member(m, 1, None)))
        .collect();
    let admin_creds = bearer(&admin);
    let connect = |ep: String, c: Credentials| async move { channel(&ep, &c).await.unwrap() };
    let ep1 = members[0].endpoint();
    let deadline = Instant::now() + Duration::from_secs(60);
    let token = loop {
        let mut admin_client =
            AdminServiceClient::new(connect(ep1.clone(), admin_creds.clone()).await);
        if admin_client
            .apply_definitions(ApplyDefinitionsRequest {
                toml: VIEWS.into(),
                dry_run: false,
            })
            .await
            .is_ok()
            && let Ok(t) = admin_client
                .create_token(CreateTokenRequest {
                    name: "ranker".into(),
                    role: "reader".into(),
                    views: vec![],
                    ..Default::default()
                })
                .await
        {
            break t.into_inner();
        }
        assert!(
            Instant::now() < deadline,
            "cluster did not accept admin calls"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reader = bearer(&token.token);
    let ep3 = members[2].endpoint();
    // Node 3 knows the token.
    let deadline = Instant::now() + Duration::from_secs(30);
    while list_views(&ep3, &reader).await.is_err() {
        assert!(Instant::now() < deadline, "node 3 never accepted the token");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    procs.remove(&3).unwrap().terminate();
    AdminServiceClient::new(connect(ep1.clone(), admin_creds.clone()).await)
        .revoke_token(RevokeTokenRequest {
            id: token.id.clone(),
        })
        .await
        .unwrap();
    procs.insert(3, NodeProcess::start_member(&members[2], 2, None));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut unavailable = 0;
    loop {
        match list_views(&ep3, &reader).await {
            Ok(_) => panic!("node 3 answered a revoked token after its restart"),
            Err(s) if s.code() == tonic::Code::Unavailable => unavailable += 1,
            Err(s) if s.code() == tonic::Code::Unauthenticated => {
                assert!(s.message().contains("revoked"), "{s:?}");
                break;
            }
            Err(s) => panic!("unexpected answer {s:?}"),
        }
        assert!(Instant::now() < deadline, "node 3 never caught up");
    }
    eprintln!("{unavailable} UNAVAILABLE answers before node 3 caught up");
}
