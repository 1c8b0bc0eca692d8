#![no_main]
//! See `keyplane::fuzzing::plugin_component`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyplane::fuzzing::plugin_component(data));
