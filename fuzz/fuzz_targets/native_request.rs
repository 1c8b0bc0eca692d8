#![no_main]
//! See `keyplane::fuzzing::native_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyplane::fuzzing::native_request(data));
