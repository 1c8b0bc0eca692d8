#![no_main]
//! See `keyplane::fuzzing::aws_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyplane::fuzzing::aws_request(data));
