#![no_main]
//! See `keyplane::fuzzing::policy_tests`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyplane::fuzzing::policy_tests(data));
