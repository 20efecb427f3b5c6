//! The limit: a forward receiver that frames every request and decodes every event, down to
//! each key and value of its record, then forgets it. No forward receiver that looks at the
//! records can do less, so its rate bounds what any shipper can reach with the same generator
//! on the same machine.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::loopback::LoopbackServer;
use super::tally::Tally;
use crate::forward::decode::{self, DecodeError};
use crate::msgpack::{ReadError, Reader, Scanner};

/// Largest request accepted, as large as any workload's request can be.
const MAX_REQUEST_BYTES: usize = 1 << 30;

/// Bytes of free room kept in the read buffer before each read.
const READ_BYTES: usize = 64 * 1024;

/// A running decode-only receiver.
#[derive(Debug)]
pub struct DecodeOnly {
    server: LoopbackServer,
    tally: Arc<Tally>,
}

impl DecodeOnly {
    /// Starts the receiver on an ephemeral loopback port.
    ///
    /// # Errors
    ///
    /// When the port cannot be bound.
    pub async fn start() -> std::io::Result<Self> {
        let tally = Arc::new(Tally::default());
        let shared = Arc::clone(&tally);
        let server =
            LoopbackServer::start(move |stream| serve(stream, Arc::clone(&shared))).await?;
        Ok(Self { server, tally })
    }

    /// The address to send forward requests to.
    pub fn address(&self) -> std::net::SocketAddr {
        self.server.address()
    }

    /// The events counted.
    pub fn tally(&self) -> &Arc<Tally> {
        &self.tally
    }
}

async fn serve(stream: TcpStream, tally: Arc<Tally>) {
    if let Err(reason) = decode_stream(stream, &tally).await {
        tally.fail(format!("decode-only receiver: {reason}"));
    }
}

/// Reads requests until the client closes the connection, counting their events.
async fn decode_stream(mut stream: TcpStream, tally: &Tally) -> Result<(), String> {
    let mut buffer = BytesMut::with_capacity(READ_BYTES);
    let mut scanner = Scanner::new(MAX_REQUEST_BYTES);
    let mut inflated = Vec::new();
    loop {
        let mut consumed = 0;
        let mut events = 0;
        while let Some(len) =
            scanner.scan(&buffer[consumed..]).map_err(|error| error.to_string())?
        {
            let request = decode::parse(&buffer[consumed..consumed + len])
                .map_err(|error| error.to_string())?;
            events += request
                .for_each_event(&mut inflated, MAX_REQUEST_BYTES, |event| {
                    decode_record(event.record).map_err(DecodeError::from)
                })
                .map_err(|error| error.to_string())?;
            consumed += len;
        }
        buffer.advance(consumed);
        tally.record(events, 0);

        if buffer.capacity() - buffer.len() < READ_BYTES / 2 {
            buffer.reserve(READ_BYTES.max(buffer.len()));
        }
        let read =
            stream.read_buf(&mut buffer).await.map_err(|error| format!("cannot read: {error}"))?;
        if read == 0 {
            return Ok(());
        }
    }
}

/// Decodes every item of a record, nested ones included, the least a receiver does to see
/// its keys and values. Strings are not checked to be UTF-8.
fn decode_record(record: &[u8]) -> Result<(), ReadError> {
    let mut reader = Reader::new(record);
    while !reader.is_empty() {
        std::hint::black_box(reader.read()?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_item_of_a_record_and_refuses_a_cut_one() {
        let record = rmp_serde::to_vec(&serde_json::json!({
            "log": "x".repeat(300),
            "attrs": {"team": ["web", 1, null]},
        }))
        .unwrap();
        assert_eq!(decode_record(&record), Ok(()));
        // A string whose length runs past the record's end.
        let cut = &record[..record.len() - 5];
        assert_eq!(decode_record(cut), Err(ReadError::Truncated));
    }
}
