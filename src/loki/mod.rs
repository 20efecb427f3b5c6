//! The Loki side: stream labels and tenants, batches and the arrival order within them, the
//! push request and the HTTP client.
//!
//! Push API: <https://grafana.com/docs/loki/latest/reference/loki-http-api/#ingest-logs>.

pub mod auth;
pub mod batch;
pub mod encode;
pub mod labels;
pub mod order;
pub mod push;
pub mod stdout;
pub mod tenant;
