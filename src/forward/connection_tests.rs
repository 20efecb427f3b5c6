//! The connection loop fed byte streams cut at arbitrary points.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use proptest::prelude::*;
use tokio::io::ReadBuf;

use super::*;
use crate::config::LokiConfig;
use crate::forward::client::{Mode, OutgoingEvent, TimeFormat, encode_requests};

/// A socket that delivers its bytes in exactly the given chunks, then end of stream, and keeps
/// what is written to it.
struct ChunkedSocket {
    chunks: VecDeque<Vec<u8>>,
    written: Vec<u8>,
}

impl AsyncRead for ChunkedSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(mut chunk) = self.chunks.pop_front() {
            let fits = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..fits]);
            if fits < chunk.len() {
                self.chunks.push_front(chunk.split_off(fits));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ChunkedSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Requests of every mode, each asking for an ack; returns the bytes and the lines sent.
fn requests_of_every_mode() -> (Vec<u8>, Vec<String>) {
    let mut bytes = Vec::new();
    let mut lines = Vec::new();
    for (index, mode) in
        [Mode::Message, Mode::Forward, Mode::Packed, Mode::Compressed].into_iter().enumerate()
    {
        let events: Vec<_> = (0..3)
            .map(|n| {
                let line = format!("{mode:?} {n} {}", "x".repeat(n * 40));
                lines.push(line.clone());
                OutgoingEvent::from_json(n as i64, &serde_json::json!({ "log": line }))
            })
            .collect();
        let chunk = format!("chunk{index}");
        encode_requests("tag", mode, TimeFormat::EventTime, &events, Some(&chunk), &mut bytes);
    }
    (bytes, lines)
}

/// Runs a connection over `chunks` and returns the lines handed on and the bytes written back.
fn run_connection(chunks: Vec<Vec<u8>>) -> (Vec<String>, Vec<u8>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (entries, mut received) = mpsc::channel(1024);
        let shared = ConnectionShared {
            transform: Transform::new(&LokiConfig::default()),
            entries,
            budget: MemoryBudget::new(1 << 20),
            max_message_bytes: 1 << 20,
            max_decompressed_bytes: 1 << 20,
            shutdown: CancellationToken::new(),
            metrics: Arc::new(Metrics::default()),
            handshake: None,
            idle_timeout: std::time::Duration::from_secs(60),
            log_limiter: LogLimiter::new(std::time::Duration::from_secs(60)),
            tls: None,
            slots: Arc::new(tokio::sync::Semaphore::new(1)),
        };
        let mut socket = ChunkedSocket { chunks: chunks.into(), written: Vec::new() };
        let labels = ListenerLabels { listener: "test".into() };
        let mut connection = Connection::new(&shared, &labels);
        // Acks wait for delivery: play the batcher, dropping (delivering) each group at once.
        let delivered = tokio::spawn(async move {
            let mut lines = Vec::new();
            while let Some(group) = received.recv().await {
                lines.extend(group.entries.into_iter().map(|entry| entry.line.as_str().to_owned()));
            }
            lines
        });
        connection.run(&mut socket, Vec::new()).await.expect("valid stream");
        drop(connection);
        drop(shared);
        (delivered.await.unwrap(), socket.written)
    })
}

fn expected_acks() -> Vec<u8> {
    let mut acks = Vec::new();
    for chunk in ["chunk0-0", "chunk0-1", "chunk0-2", "chunk1", "chunk2", "chunk3"] {
        write_ack(chunk.as_bytes(), &mut acks);
    }
    acks
}

#[test]
fn a_stream_split_at_every_byte_position_decodes_the_same() {
    let (bytes, lines) = requests_of_every_mode();
    for split in 1..bytes.len() {
        let chunks = vec![bytes[..split].to_vec(), bytes[split..].to_vec()];
        let (received, acks) = run_connection(chunks);
        assert_eq!(received, lines, "split at {split}");
        assert_eq!(acks, expected_acks(), "split at {split}");
    }
}

proptest! {
    #[test]
    fn a_stream_in_random_chunk_sizes_decodes_the_same(
        sizes in proptest::collection::vec(1usize..200, 1..64)
    ) {
        let (bytes, lines) = requests_of_every_mode();
        let mut chunks = Vec::new();
        let mut rest = bytes.as_slice();
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            chunks.push(chunk.to_vec());
            rest = tail;
        }
        let (received, acks) = run_connection(chunks);
        prop_assert_eq!(received, lines);
        prop_assert_eq!(acks, expected_acks());
    }
}
