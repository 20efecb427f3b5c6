//! A connection's bytes through framing, decoding and the transform: see
//! `fwd2loki::fuzzing::forward_stream`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fwd2loki::fuzzing::forward_stream(data));
