//! The gzip layer of CompressedPackedForward and the entries inside it: see
//! `fwd2loki::fuzzing::compressed_entries`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fwd2loki::fuzzing::compressed_entries(data));
