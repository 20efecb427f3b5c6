//! The Loki side: stream labels, batches, the push request and the HTTP client.
//!
//! Push API: <https://grafana.com/docs/loki/latest/reference/loki-http-api/#ingest-logs>.

pub mod batch;
pub mod encode;
pub mod labels;
pub mod push;
pub mod stdout;
