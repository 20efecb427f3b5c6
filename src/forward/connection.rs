//! One client connection: read bytes, cut them into requests, turn events into entries, hand
//! the entries on and acknowledge.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::buffer::{MemoryBudget, MemoryCharge};
use crate::forward::ack::write_ack;
use crate::forward::decode::{self, DecodeError, Request};
use crate::msgpack::{ScanError, Scanner};
use crate::transform::{Entry, Scratch, Transform};

/// Entries handed from a connection to the batcher, with the memory they were charged.
#[derive(Debug)]
pub(crate) struct EntryGroup {
    /// The entries, in the order they arrived.
    pub(crate) entries: Vec<Entry>,
    /// The memory reserved for them.
    pub(crate) charge: MemoryCharge,
}

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct ConnectionShared {
    pub(crate) transform: Transform,
    pub(crate) entries: mpsc::Sender<EntryGroup>,
    pub(crate) budget: MemoryBudget,
    pub(crate) max_message_bytes: usize,
    pub(crate) max_decompressed_bytes: usize,
    /// Cancelled when fwd2loki shuts down: connections stop reading.
    pub(crate) shutdown: CancellationToken,
}

/// Why a connection was closed by the server.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// Reading or writing the socket failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// The byte stream is not a sequence of msgpack values within the size limit.
    #[error(transparent)]
    Framing(#[from] ScanError),
    /// A request could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The pipeline behind the connection has stopped.
    #[error("shutting down")]
    PipelineClosed,
}

impl ConnectionError {
    /// A short fixed name for the kind of error, for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Io(_) => "io",
            Self::Framing(ScanError::TooLarge { .. }) => "message_too_large",
            Self::Framing(ScanError::ReservedMarker { .. }) => "invalid_msgpack",
            Self::Decode(error) => error.reason(),
            Self::PipelineClosed => "shutdown",
        }
    }
}

/// Size of the first read buffer; it grows for larger requests and shrinks back after them.
const INITIAL_BUFFER_BYTES: usize = 8 * 1024;
/// A buffer grown beyond this is replaced by a small one once it is empty.
const SHRINK_ABOVE_BYTES: usize = 1 << 20;

/// Serves one connection until the client closes it, it sends bad data, or shutdown.
pub(crate) async fn serve<S>(stream: S, peer: &str, shared: Arc<ConnectionShared>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut connection = Connection::new(&shared);
    match connection.run(stream).await {
        Ok(()) => debug!(peer, "connection closed"),
        Err(error) => warn!(peer, %error, reason = error.reason(), "closing connection"),
    }
}

/// The per-connection state.
struct Connection<'a> {
    shared: &'a ConnectionShared,
    scanner: Scanner,
    scratch: Scratch,
    /// Where compressed entries are inflated.
    inflated: Vec<u8>,
    /// Entries decoded but not handed on yet.
    group: Vec<Entry>,
    group_bytes: usize,
    /// Encoded ack replies for requests whose entries are in `group`.
    acks: Vec<u8>,
}

impl<'a> Connection<'a> {
    fn new(shared: &'a ConnectionShared) -> Self {
        Self {
            shared,
            scanner: Scanner::new(shared.max_message_bytes),
            scratch: Scratch::default(),
            inflated: Vec::new(),
            group: Vec::new(),
            group_bytes: 0,
            acks: Vec::new(),
        }
    }

    async fn run<S>(&mut self, mut stream: S) -> Result<(), ConnectionError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut buffer = BytesMut::with_capacity(INITIAL_BUFFER_BYTES);
        loop {
            // Requests before a bad one are still handed on and acknowledged; only the
            // connection is lost.
            let (consumed, failure) = self.decode_requests(&buffer);
            buffer.advance(consumed);
            self.hand_on(&mut stream).await?;
            if let Some(error) = failure {
                return Err(error);
            }
            if buffer.is_empty() && buffer.capacity() > SHRINK_ABOVE_BYTES {
                buffer = BytesMut::with_capacity(INITIAL_BUFFER_BYTES);
            }

            if buffer.capacity() - buffer.len() < INITIAL_BUFFER_BYTES / 2 {
                buffer.reserve(buffer.len().max(INITIAL_BUFFER_BYTES));
            }
            let read = tokio::select! {
                read = stream.read_buf(&mut buffer) => read?,
                () = self.shared.shutdown.cancelled() => return Ok(()),
            };
            if read == 0 {
                if !buffer.is_empty() {
                    debug!(
                        bytes = buffer.len(),
                        "client closed the connection mid-request"
                    );
                }
                return Ok(());
            }
        }
    }

    /// Decodes every complete request at the start of `buffer`. Returns the bytes used and the
    /// error that stopped decoding, if any.
    fn decode_requests(&mut self, buffer: &[u8]) -> (usize, Option<ConnectionError>) {
        let mut consumed = 0;
        loop {
            let len = match self.scanner.scan(&buffer[consumed..]) {
                Ok(Some(len)) => len,
                Ok(None) => return (consumed, None),
                Err(error) => return (consumed, Some(error.into())),
            };
            if let Err(error) = self.decode_request(&buffer[consumed..consumed + len]) {
                return (consumed, Some(error.into()));
            }
            consumed += len;
        }
    }

    /// Decodes one request into `group`. A request is taken whole or not at all: on error,
    /// none of its events stay in the group.
    fn decode_request(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        let request = decode::parse(bytes)?;
        let Request::Events { options, .. } = &request else {
            return Ok(());
        };
        let group_len = self.group.len();
        let Self {
            shared,
            scratch,
            inflated,
            group,
            ..
        } = self;
        let decoded = request.for_each_event(inflated, shared.max_decompressed_bytes, |event| {
            group.push(shared.transform.entry(event, scratch)?);
            Ok::<_, DecodeError>(())
        });
        if let Err(error) = decoded {
            self.group.truncate(group_len);
            return Err(error);
        }
        self.group_bytes += self.group[group_len..]
            .iter()
            .map(Entry::charged_bytes)
            .sum::<usize>();
        if let Some(chunk) = options.chunk {
            write_ack(chunk, &mut self.acks);
        }
        Ok(())
    }

    /// Hands the decoded entries to the batcher, waiting for room in the memory budget, then
    /// acknowledges the requests they came from.
    async fn hand_on<S>(&mut self, stream: &mut S) -> Result<(), ConnectionError>
    where
        S: AsyncWrite + Unpin,
    {
        if !self.group.is_empty() {
            let charge = self.shared.budget.reserve(self.group_bytes).await;
            let entries = std::mem::take(&mut self.group);
            self.group_bytes = 0;
            let group = EntryGroup { entries, charge };
            self.shared
                .entries
                .send(group)
                .await
                .map_err(|_| ConnectionError::PipelineClosed)?;
        }
        if !self.acks.is_empty() {
            stream.write_all(&self.acks).await?;
            self.acks.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;
