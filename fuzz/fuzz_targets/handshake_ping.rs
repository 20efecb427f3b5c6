//! See `fwd2loki::fuzzing::handshake_ping`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fwd2loki::fuzzing::handshake_ping(data));
