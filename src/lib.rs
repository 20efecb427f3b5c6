//! fwd2loki receives logs over the Fluentd forward protocol, as Docker's `fluentd` logging
//! driver sends them, and pushes them to Grafana Loki.
//!
//! The data flow, one module per stage:
//!
//! ```text
//! forward::server ─▶ forward::connection ─▶ pipeline (batcher) ─▶ loki::push ─▶ Loki
//!   listeners         msgpack framing,        loki::batch           snappy protobuf,
//!   (tcp, unix)       decode, transform,      per-stream buffers    retries
//!                     acks
//! ```
//!
//! - [`msgpack`] finds message boundaries and reads values without copying.
//! - [`forward`] speaks the protocol: request modes, acks, listeners, and a client.
//! - [`transform`] turns a record into a Loki entry: labels, structured metadata, tenant and
//!   the rendered line, after joining the lines Docker split.
//! - [`loki`] batches entries, encodes push requests and sends them.
//! - [`buffer`] bounds the memory held between the sockets and Loki.
//! - [`pipeline`] starts the stages and stops them in order.

pub mod bench;
pub mod buffer;
pub mod config;
pub mod delivery;
mod disk;
pub mod fluentbit;
pub mod forward;
pub mod fuzzing;
pub mod log_limit;
pub mod loki;
pub mod metrics;
pub mod msgpack;
pub mod pipeline;
pub mod secrets;
pub mod server;
pub mod transform;
