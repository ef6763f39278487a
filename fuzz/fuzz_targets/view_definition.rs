//! Fuzz target `view_definition`: see `quiver_node::fuzzing::view_definition`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quiver_node::fuzzing::view_definition(data));
