use super::*;

/// Runs `testkit/python/reflect_call.py`: grpcio + grpcio-reflection, as a Python user
/// would call the node, knowing nothing but its address.
fn python_call(addr: &str, method: &str, request: &serde_json::Value) -> serde_json::Value {
    let script = repo_root().join("testkit/python/reflect_call.py");
    let out = Command::new("python3")
        .arg(script)
        .args([addr, method, &request.to_string()])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "reflect_call.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// learns the API from the node and decodes the PACKED response with no quiver code,
/// reading a float64 bit-exact; a lookup with no keys is INVALID_ARGUMENT naming the
/// problem, like every malformed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_grpcio_with_reflection_reads_features_and_empty_batches_are_invalid() {
    let none = Credentials::none();
    let n = one_node(None, &none).await;
    wait_ingested(&n.member.endpoint(), &none).await;
    let addr = n.member.addr();
    let ok = python_call(
        &addr,
        "quiver.v1.FeatureService/GetOnlineFeatures",
        &serde_json::json!({
            "features": ["clicks:n", "clicks:score"],
            "entityKeys": [{"stringValue": "u1"}],
        }),
    );
    // The default PACKED encoding, decoded by stock protobuf from reflected descriptors:
    // typed arrays per column, as the proto comments describe.
    let packed = &ok["ok"]["packedColumns"];
    assert_eq!(packed[0]["type"], "INT64", "{ok}");
    assert_eq!(packed[0]["statuses"][0], "PRESENT", "{ok}");
    assert_eq!(packed[0]["int64s"][0], "7", "{ok}");
    assert_eq!(packed[1]["type"], "FLOAT64", "{ok}");
    let score = packed[1]["float64s"][0]
        .as_f64()
        .unwrap_or_else(|| panic!("{ok}"));
    assert_eq!(
        score.to_bits(),
        0.938_538_012_326_916_5f64.to_bits(),
        "{ok}"
    );
    // And the per-cell form, on request.
    let cells = python_call(
        &addr,
        "quiver.v1.FeatureService/GetOnlineFeatures",
        &serde_json::json!({
            "features": ["clicks:n"],
            "entityKeys": [{"stringValue": "u1"}],
            "encoding": "CELLS",
        }),
    );
    assert_eq!(
        cells["ok"]["columns"][0]["values"][0]["int64Value"], "7",
        "{cells}"
    );
    let empty = python_call(
        &addr,
        "quiver.v1.FeatureService/GetOnlineFeatures",
        &serde_json::json!({
            "features": ["clicks:n"],
        }),
    );
    assert_eq!(empty["code"], "INVALID_ARGUMENT", "{empty}");
    assert!(
        empty["details"]
            .as_str()
            .unwrap()
            .contains("no entity keys"),
        "{empty}"
    );
    drop(n.broker);
}
