//! Fuzz target `decode_protobuf`: see `quiver_node::fuzzing::decode_protobuf`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quiver_node::fuzzing::decode_protobuf(data));
