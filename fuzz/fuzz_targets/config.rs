//! The TOML configuration file: see `fwd2loki::fuzzing::config`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fwd2loki::fuzzing::config(data));
