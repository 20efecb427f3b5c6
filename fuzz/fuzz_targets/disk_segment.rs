//! See `fwd2loki::fuzzing::disk_segment`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fwd2loki::fuzzing::disk_segment(data));
