//! Integration tests of fwd2loki, built as one test binary that shares the support helpers.

mod cli;
mod delivery;
mod disk_buffer;
mod fluent_logger;
mod loki_receiver;
mod observability;
mod pipeline;
mod support;
