//! fluent-bit's classic configuration format: see `fwd2loki::fuzzing::fluent_bit_config`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fwd2loki::fuzzing::fluent_bit_config(data));
