#![no_main]
//! See `keyplane::fuzzing::sigv4`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyplane::fuzzing::sigv4(data));
