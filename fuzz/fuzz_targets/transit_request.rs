#![no_main]
//! See `keyplane::fuzzing::transit_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyplane::fuzzing::transit_request(data));
