#![no_main]
//! See `keyplane::fuzzing::audit_archive`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyplane::fuzzing::audit_archive(data));
