//! Fuzz target `row_codec`: see `quiver_node::fuzzing::row_codec`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quiver_node::fuzzing::row_codec(data));
