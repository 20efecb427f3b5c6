//! The Fluentd forward protocol: the listeners, the per-connection decoder and a small client.
//!
//! Spec: <https://github.com/fluent/fluentd/wiki/Forward-Protocol-Specification-v1>.

pub mod ack;
pub mod client;
pub(crate) mod connection;
pub mod decode;
pub mod handshake;
mod read_buffer;
pub mod server;
pub mod tls;

pub use connection::ConnectionError;
