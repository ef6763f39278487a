//! The node's HTTP/2 transport under clients that cancel calls: a hedging client cancels
//! the slower copy of every hedged call, often before the node has taken it up.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use quiver_proto::v1::{GetOnlineFeaturesRequest, GetOnlineFeaturesResponse};

use crate::harness::{Kafka, TestNode, config};
use crate::ingest::DEFS;

const LOOKUP_PATH: &str = "/quiver.v1.FeatureService/GetOnlineFeatures";

/// A gRPC call's request head (no body yet).
fn grpc_head(authority: &str) -> http::Request<()> {
    http::Request::post(format!("http://{authority}{LOOKUP_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// A message in gRPC's length-prefixed framing, uncompressed.
fn grpc_frame(msg: &impl Message) -> Bytes {
    let body = msg.encode_to_vec();
    let mut b = BytesMut::with_capacity(5 + body.len());
    b.put_u8(0);
    b.put_u32(u32::try_from(body.len()).unwrap());
    b.put_slice(&body);
    b.freeze()
}

/// Many more calls reset before the node takes them up than h2's default allowance (20)
/// reach the node in one burst; the connection must survive them and answer the next
/// call. With h2's default the node answered GOAWAY (ENHANCE_YOUR_CALM,
/// "too_many_resets") and every call on the connection failed.
#[tokio::test]
async fn calls_cancelled_before_the_node_takes_them_up_do_not_cost_the_connection() {
    let kafka = Kafka::new(&[("profile", 1), ("cards", 1)]);
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let node =
        TestNode::start_with_listener(config(dir.path(), &kafka.bootstrap, 1, DEFS), listener)
            .await;

    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let mut client = client.ready().await.unwrap();
    // The connection task is not polled until the burst is queued: every HEADERS and
    // RST_STREAM below leaves in the same writes and reaches the node together, before
    // its accept loop takes up any of the calls.
    let burst = 150;
    let mut cancelled = Vec::with_capacity(burst);
    for _ in 0..burst {
        let (response, mut stream) = client.send_request(grpc_head(&addr), false).unwrap();
        stream.send_reset(h2::Reason::CANCEL);
        cancelled.push(response);
    }
    let connection = tokio::spawn(connection);

    // The same connection answers a real lookup afterwards.
    let request = GetOnlineFeaturesRequest {
        features: vec!["profile:i".into()],
        entity_keys: vec!["nobody".into()],
        ..Default::default()
    };
    let mut client = client.ready().await.expect("the connection is still open");
    let (response, mut stream) = client.send_request(grpc_head(&addr), false).unwrap();
    stream.send_data(grpc_frame(&request), true).unwrap();
    let response = response
        .await
        .expect("the node answers on the same connection");
    assert_eq!(response.status(), http::StatusCode::OK);
    let mut body = response.into_body();
    let mut bytes = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        bytes.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.unwrap().expect("gRPC trailers");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.to_str().unwrap()),
        Some("0"),
        "{trailers:?}"
    );
    assert!(bytes.len() > 5, "a response message");
    let answer = GetOnlineFeaturesResponse::decode(&bytes[5..]).unwrap();
    assert_eq!(answer.row_count, 1);
    assert_eq!(answer.packed_columns.len(), 1);
    assert_eq!(answer.packed_columns[0].name, "profile:i");

    // Each cancelled call ends as cancelled, not as a connection error.
    for r in cancelled {
        let e = r.await.expect_err("a cancelled call has no response");
        assert_eq!(e.reason(), Some(h2::Reason::CANCEL), "{e}");
        assert!(!e.is_go_away(), "{e}");
    }
    drop(client);
    connection.abort();
    node.stop().await;
}
