//! Integration tests of fwd2loki, built as one test binary that shares the support helpers.

mod loki_receiver;
mod support;
