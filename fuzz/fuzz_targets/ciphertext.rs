#![no_main]
//! See `keyplane::fuzzing::ciphertext`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyplane::fuzzing::ciphertext(data));
