//! Fuzz target `request`: see `quiver_node::fuzzing::request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quiver_node::fuzzing::request(data));
