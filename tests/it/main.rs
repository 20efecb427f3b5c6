//! Integration tests of fwd2loki, built as one test binary that shares the support helpers.

mod bench;
mod beyond;
mod cli;
mod delivery;
mod disk_buffer;
mod fluent_bit_config;
mod fluent_logger;
mod fuzz_corpus;
mod loki_receiver;
mod loki_tls;
mod nomad;
mod observability;
mod pipeline;
mod security;
mod support;
