//! Replays every checked-in fuzz input (seed corpora, and any crash a fuzzer found once)
//! through its harness: a regression test that needs no nightly toolchain.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use quiver_node::fuzzing;

fn replay(target: &str, harness: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| harness(&data));
        assert!(outcome.is_ok(), "{target}: input {} panics", path.display());
        n += 1;
    }
    assert!(
        n >= 5,
        "{target}: only {n} corpus inputs in {}",
        dir.display()
    );
}

#[test]
fn decode_json_corpus() {
    replay("decode_json", fuzzing::decode_json);
}

#[test]
fn decode_protobuf_corpus() {
    replay("decode_protobuf", fuzzing::decode_protobuf);
}

#[test]
fn view_definition_corpus() {
    replay("view_definition", fuzzing::view_definition);
}

#[test]
fn request_corpus() {
    replay("request", fuzzing::request);
}

#[test]
fn row_codec_corpus() {
    replay("row_codec", fuzzing::row_codec);
}
