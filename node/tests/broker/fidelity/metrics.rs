use super::*;

/// Refusals for a missing view grant are counted; GetStatus shows a reader only its
/// granted views' streams; CPU time keeps its fraction; the dead-letter counter exists
/// without a dead-letter topic; a node's log file has no colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_status_and_logs_tell_the_truth() {
    let root = tempfile::tempdir().unwrap();
    let (security, admin) = auth_toml(root.path());
    let admin_creds = bearer(&admin);
    let n = one_node(Some(security), &admin_creds).await;
    let ep = n.member.endpoint();
    wait_ingested(&ep, &admin_creds).await;
    let token = AdminServiceClient::new(channel(&ep, &admin_creds).await.unwrap())
        .create_token(CreateTokenRequest {
            name: "clicks-only".into(),
            role: "reader".into(),
            views: vec!["clicks".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let reader = bearer(&token.token);
    let port = n.member.metrics;
    let denied = |port| {
        metric(
            port,
            "quiver_auth_denied_total",
            &[("reason", "permission_denied")],
        )
        .unwrap_or(0.0)
    };
    let before = denied(port);
    let refused = lookup(&ep, &reader, &["secret:s"]).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert_eq!(
        denied(port),
        before + 1.0,
        "the view-grant refusal is counted"
    );

    let status = AdminServiceClient::new(channel(&ep, &reader).await.unwrap())
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let streams: BTreeSet<&str> = status
        .shards
        .iter()
        .flat_map(|s| s.partitions.iter().map(|p| p.topic.as_str()))
        .collect();
    assert_eq!(
        streams,
        ["clicks"].into(),
        "a reader of clicks sees {streams:?}"
    );
    assert!(status.shards.iter().all(|s| s.row_count_estimate == 0));

    let text = scrape(port).unwrap();
    assert!(
        text.contains("# TYPE process_cpu_seconds_total counter"),
        "{text}"
    );
    assert_eq!(
        metric(
            port,
            "quiver_ingest_dead_letters_total",
            &[("result", "queued")]
        ),
        Some(0.0),
        "dead letters exported at 0 without a dead-letter topic"
    );
    // CPU time as the kernel counts it (10 ms ticks), not truncated to whole seconds:
    // compare with /proc at a moment the kernel's figure has a fraction far from 0.
    let ticks = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for _ in 0..50 {
            let _ = lookup(&ep, &admin_creds, &["clicks:n"]).await;
        }
        let before = ticks(n.proc.pid());
        let exported = metric(port, "process_cpu_seconds_total", &[]).unwrap();
        let after = ticks(n.proc.pid());
        if before.fract() > 0.2 && before.fract() < 0.8 && after - before < 0.05 {
            assert!(
                exported >= before - 1e-9 && exported <= after + 1e-9,
                "exported {exported}, /proc {before}..{after}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no usable CPU sample");
    }
    let log = std::fs::read_to_string(n.proc.log_path()).unwrap();
    assert!(!log.is_empty());
    assert!(!log.contains('\u{1b}'), "ANSI escape codes in the log file");
}
