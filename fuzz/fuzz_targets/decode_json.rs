//! Fuzz target `decode_json`: see `quiver_node::fuzzing::decode_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quiver_node::fuzzing::decode_json(data));
