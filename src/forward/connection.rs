//! One client connection: read bytes, cut them into requests, turn events into entries, hand
//! the entries on, and acknowledge each request once its events are safe.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::buffer::MemoryBudget;
use crate::delivery::{DeliveryTicket, EntryGroup, TicketReceiver};
use crate::forward::ack::write_ack;
use crate::forward::decode::{self, DecodeError, Request};
use crate::forward::handshake::{self, HandshakeConfig, HandshakeError};
use crate::forward::read_buffer::ReadBuffer;
use crate::log_limit::LogLimiter;
use crate::metrics::{ListenerLabels, Metrics};
use crate::msgpack::{ScanError, Scanner};
use crate::transform::partial::{JoinedLine, PartialAssembler};
use crate::transform::{Entry, LineLimit, Scratch, Transform, Transformed};

/// What every connection shares.
pub(crate) struct ConnectionShared {
    pub(crate) transform: Transform,
    pub(crate) entries: mpsc::Sender<EntryGroup>,
    pub(crate) budget: MemoryBudget,
    pub(crate) max_message_bytes: usize,
    pub(crate) max_decompressed_bytes: usize,
    /// Cancelled when fwd2loki shuts down: connections read what was already sent, then stop.
    pub(crate) shutdown: CancellationToken,
    pub(crate) metrics: Arc<Metrics>,
    /// The handshake every client must pass, when a shared key is configured.
    pub(crate) handshake: Option<HandshakeConfig>,
    /// Closes connections stuck in the middle of a request.
    pub(crate) idle_timeout: Duration,
    /// Keeps repeated connection errors from flooding the log.
    pub(crate) log_limiter: LogLimiter,
    /// TLS for TCP connections, when configured.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// One permit per open connection: the `max_connections` limit.
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
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
    /// The client did not pass the handshake.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// Nothing arrived for the idle timeout in the middle of a request.
    #[error("no data for {0:?} in the middle of a request")]
    IdleTimeout(Duration),
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
            Self::Handshake(HandshakeError::Timeout(_)) | Self::IdleTimeout(_) => "idle_timeout",
            Self::Handshake(_) => "auth_failed",
        }
    }
}

/// At shutdown, a connection that has been quiet this long has nothing more in flight.
const DRAIN_QUIET: Duration = Duration::from_millis(100);

/// Serves one connection until the client closes it, it sends bad data, or shutdown.
pub(crate) async fn serve<S>(
    mut stream: S,
    peer: &str,
    listener: &str,
    shared: Arc<ConnectionShared>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let labels = ListenerLabels { listener: listener.to_owned() };
    let open = shared.metrics.connections_open.get_or_create(&labels).clone();
    open.inc();
    let mut connection = Connection::new(&shared, &labels);
    let served = async {
        let first_bytes = match &shared.handshake {
            Some(config) => handshake::accept(&mut stream, config).await?,
            None => Vec::new(),
        };
        connection.run(stream, first_bytes).await
    };
    let served = served.await;
    connection.ship_open_lines().await;
    match served {
        Ok(()) => debug!(peer, "connection closed"),
        Err(error) => {
            let reason = error.reason();
            shared.metrics.input_error(reason);
            if let Some(held_back) = shared.log_limiter.allow(reason) {
                warn!(peer, %error, reason, held_back, "closing connection");
            }
        }
    }
    open.dec();
}

/// What woke the connection.
enum Wake {
    Read(std::io::Result<usize>),
    Acked { chunk: Vec<u8>, safe: bool },
    Shutdown,
    DrainedQuiet,
    Idle,
    PartialsDue,
}

/// The per-connection state.
struct Connection<'a> {
    shared: &'a ConnectionShared,
    scanner: Scanner,
    scratch: Scratch,
    /// Where compressed entries are inflated.
    inflated: Vec<u8>,
    /// Entries decoded but not handed on yet, with the tickets of their requests.
    group: EntryGroup,
    group_bytes: usize,
    /// Chunk ids waiting for their events to be safe, oldest first.
    pending_acks: VecDeque<(Vec<u8>, TicketReceiver)>,
    /// Docker's split lines being joined, unless `reassemble_partials` is off.
    partials: Option<PartialAssembler>,
    /// Lines the assembler has finished, on their way to become entries.
    joined: Vec<JoinedLine>,
    records_received: Counter,
    /// Records decoded since the counter was last told: the counter is shared by every
    /// connection, so it is updated once per read rather than once per record.
    records_uncounted: u64,
    bytes_received: Counter,
}

impl<'a> Connection<'a> {
    fn new(shared: &'a ConnectionShared, listener: &ListenerLabels) -> Self {
        Self {
            shared,
            scanner: Scanner::new(shared.max_message_bytes),
            scratch: Scratch::default(),
            inflated: Vec::new(),
            group: EntryGroup::default(),
            group_bytes: 0,
            pending_acks: VecDeque::new(),
            partials: shared.transform.partial_limits().map(PartialAssembler::new),
            joined: Vec::new(),
            records_received: shared.metrics.records_received.get_or_create(listener).clone(),
            records_uncounted: 0,
            bytes_received: shared.metrics.bytes_received.get_or_create(listener).clone(),
        }
    }

    /// Reads requests until the client leaves; `first_bytes` were read before, during the
    /// handshake.
    async fn run<S>(&mut self, mut stream: S, first_bytes: Vec<u8>) -> Result<(), ConnectionError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut buffer = ReadBuffer::new(&first_bytes);
        let mut draining = false;
        loop {
            // Requests before a bad one are still handed on and acknowledged; only the
            // connection is lost.
            let (consumed, failure) = self.decode_requests(buffer.filled());
            buffer.consume(consumed);
            self.count_records();
            self.hand_on().await?;
            if let Some(error) = failure {
                return Err(error);
            }

            let mid_request = !buffer.filled().is_empty() && !draining;
            let idle_timeout = self.shared.idle_timeout;
            let partials_due = self.partials.as_ref().and_then(PartialAssembler::next_deadline);
            let wake = tokio::select! {
                read = stream.read_buf(buffer.for_reading()) => Wake::Read(read),
                (chunk, safe) = next_ack(&mut self.pending_acks) => Wake::Acked { chunk, safe },
                () = self.shared.shutdown.cancelled(), if !draining => Wake::Shutdown,
                () = tokio::time::sleep(DRAIN_QUIET), if draining => Wake::DrainedQuiet,
                () = tokio::time::sleep(idle_timeout), if mid_request => Wake::Idle,
                () = sleep_until(partials_due) => Wake::PartialsDue,
            };
            match wake {
                Wake::Read(Ok(0)) => {
                    if !buffer.filled().is_empty() {
                        let bytes = buffer.filled().len();
                        debug!(bytes, "client closed the connection mid-request");
                    }
                    // A client that only closed its sending side still reads its acks.
                    break;
                }
                Wake::Read(read) => {
                    let len = read?;
                    buffer.read_done(len);
                    self.bytes_received.inc_by(len as u64);
                }
                Wake::Acked { chunk, safe } => write_ack_if_safe(&mut stream, &chunk, safe).await?,
                // Read on until the client has been quiet for a moment: what it sent before
                // the shutdown is still delivered.
                Wake::Shutdown => draining = true,
                Wake::DrainedQuiet => break,
                Wake::Idle => return Err(ConnectionError::IdleTimeout(idle_timeout)),
                // The lines go out with the next hand-on, at the top of the loop.
                Wake::PartialsDue => self.expire_partials()?,
            }
        }
        self.finish_acks(&mut stream).await
    }

    /// Waits for the acks still pending and writes those whose events were delivered, as
    /// long as the client is there to read them.
    async fn finish_acks<S>(&mut self, stream: &mut S) -> Result<(), ConnectionError>
    where
        S: AsyncWrite + Unpin,
    {
        while !self.pending_acks.is_empty() {
            let (chunk, safe) = next_ack(&mut self.pending_acks).await;
            if let Err(error) = write_ack_if_safe(stream, &chunk, safe).await {
                debug!(%error, unwritten = self.pending_acks.len() + 1, "client left before its acks");
                break;
            }
        }
        Ok(())
    }

    /// Decodes every complete request at the start of `buffer`. Returns the bytes used and the
    /// error that stopped decoding, if any.
    ///
    /// A request that is already whole is parsed where it lies, which finds its end on the way;
    /// only one still arriving is followed by the scanner, which remembers how far it got, so a
    /// large request is not walked again with every read.
    fn decode_requests(&mut self, buffer: &[u8]) -> (usize, Option<ConnectionError>) {
        let mut consumed = 0;
        while consumed < buffer.len() {
            let rest = &buffer[consumed..];
            let parsed = if self.scanner.in_progress() {
                Err(None)
            } else {
                match decode::parse_prefix(rest) {
                    Ok((_, len)) if len > self.scanner.max_len() => {
                        let limit = self.scanner.max_len();
                        return (consumed, Some(ScanError::TooLarge { limit }.into()));
                    }
                    Ok((request, len)) => Ok((request, len)),
                    Err(error) if error.is_truncated() => Err(None),
                    Err(error) => Err(Some(error)),
                }
            };
            let (request, len) = match parsed {
                Ok(parsed) => parsed,
                Err(Some(error)) => return (consumed, Some(error.into())),
                Err(None) => match self.scanner.scan(rest) {
                    Ok(Some(len)) => match decode::parse(&rest[..len]) {
                        Ok(request) => (request, len),
                        Err(error) => return (consumed, Some(error.into())),
                    },
                    Ok(None) => break,
                    Err(error) => return (consumed, Some(error.into())),
                },
            };
            if let Err(error) = self.decode_request(request) {
                return (consumed, Some(error.into()));
            }
            consumed += len;
        }
        (consumed, None)
    }

    fn count_records(&mut self) {
        self.records_received.inc_by(std::mem::take(&mut self.records_uncounted));
    }

    /// Decodes one request into the group. A request is taken whole or not at all: on error,
    /// none of its events stay in the group.
    fn decode_request(&mut self, request: Request<'_>) -> Result<(), DecodeError> {
        let Request::Events { options, .. } = &request else {
            return Ok(());
        };
        let group_len = self.group.entries.len();
        let Self { shared, scratch, inflated, group, partials, joined, .. } = self;
        // Parts of split lines are taken as they come: should a later event refuse the
        // request, they stay with their line, and a client that sends the request again
        // replaces them (by ordinal) rather than doubling them.
        let decoded = request.for_each_event(inflated, shared.max_decompressed_bytes, |event| {
            match shared.transform.entry_or_fragment(event, scratch)? {
                Transformed::Entry(entry) => accept(shared, group, entry),
                Transformed::Fragment => {
                    let taken = match partials {
                        Some(partials) => partials.add(event, Instant::now(), joined)?,
                        None => false,
                    };
                    if !taken {
                        accept(shared, group, shared.transform.entry(event, scratch)?);
                    }
                    add_joined_lines(shared, scratch, group, joined)?;
                }
            }
            Ok::<_, DecodeError>(())
        });
        let events = match decoded {
            Ok(events) => events,
            Err(error) => {
                self.group.entries.truncate(group_len);
                return Err(error);
            }
        };
        self.records_uncounted += events;
        let added = &self.group.entries[group_len..];
        self.group_bytes += added.iter().map(Entry::charged_bytes).sum::<usize>();
        if let Some(chunk) = options.chunk {
            let (ticket, receiver) = DeliveryTicket::new();
            self.group.tickets.push(ticket);
            self.pending_acks.push_back((chunk.to_vec(), receiver));
        }
        Ok(())
    }

    /// Turns the split lines whose next part did not come in time into entries, as far as
    /// they got.
    fn expire_partials(&mut self) -> Result<(), DecodeError> {
        let group_len = self.group.entries.len();
        if let Some(partials) = &mut self.partials {
            partials.expire(Instant::now(), &mut self.joined)?;
        }
        add_joined_lines(self.shared, &mut self.scratch, &mut self.group, &mut self.joined)?;
        let added = &self.group.entries[group_len..];
        self.group_bytes += added.iter().map(Entry::charged_bytes).sum::<usize>();
        Ok(())
    }

    /// Hands on the split lines still being joined, as far as they got, when the connection
    /// ends for whatever reason: their parts may have been acknowledged already.
    async fn ship_open_lines(&mut self) {
        let Some(partials) = &mut self.partials else {
            return;
        };
        let group_len = self.group.entries.len();
        let closed = partials.close(&mut self.joined).and_then(|()| {
            add_joined_lines(self.shared, &mut self.scratch, &mut self.group, &mut self.joined)
        });
        let added = &self.group.entries[group_len..];
        self.group_bytes += added.iter().map(Entry::charged_bytes).sum::<usize>();
        let handed_on = match closed {
            Ok(()) => self.hand_on().await,
            Err(error) => Err(error.into()),
        };
        if let Err(error) = handed_on {
            debug!(%error, "open split lines could not be handed on");
        }
    }

    /// Hands the decoded entries to the batcher, waiting for room in the memory budget.
    async fn hand_on(&mut self) -> Result<(), ConnectionError> {
        if self.group.entries.is_empty() && self.group.tickets.is_empty() {
            return Ok(());
        }
        // The next read is likely to carry about as many entries as this one: starting the
        // next group at that size saves growing it from nothing on every read.
        let next = EntryGroup {
            entries: Vec::with_capacity(self.group.entries.len()),
            ..EntryGroup::default()
        };
        let mut group = std::mem::replace(&mut self.group, next);
        group.charge = self.shared.budget.reserve(self.group_bytes).await;
        self.group_bytes = 0;
        self.shared.entries.send(group).await.map_err(|_| ConnectionError::PipelineClosed)
    }
}

/// Adds `entry` to the group unless `max_line_bytes` drops it, counting what the limit did.
fn accept(shared: &ConnectionShared, group: &mut EntryGroup, mut entry: Entry) {
    match shared.transform.limit_line(&mut entry) {
        LineLimit::Fits => group.entries.push(entry),
        LineLimit::Truncated => {
            shared.metrics.lines_truncated.inc();
            group.entries.push(entry);
        }
        LineLimit::Drop => shared.metrics.dropped("line_too_long", 1),
    }
}

/// Turns the lines in `joined` into entries of the group, counting how each was finished.
fn add_joined_lines(
    shared: &ConnectionShared,
    scratch: &mut Scratch,
    group: &mut EntryGroup,
    joined: &mut Vec<JoinedLine>,
) -> Result<(), DecodeError> {
    for line in joined.drain(..) {
        if let Some(reason) = line.outcome.incomplete_reason() {
            shared.metrics.partial_flushed(reason);
        } else {
            shared.metrics.partials_joined.inc();
        }
        accept(shared, group, shared.transform.entry(line.event(), scratch)?);
    }
    Ok(())
}

/// Resolves at `deadline`; never without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Waits for the oldest pending ack; never resolves while none is pending. Cancel-safe: the
/// ack stays queued until its outcome is known.
async fn next_ack(pending: &mut VecDeque<(Vec<u8>, TicketReceiver)>) -> (Vec<u8>, bool) {
    let Some((_, receiver)) = pending.front_mut() else {
        return std::future::pending().await;
    };
    let safe = receiver.await.is_ok();
    let (chunk, _) = pending.pop_front().expect("the front entry was just awaited");
    (chunk, safe)
}

/// Writes the ack for `chunk` when its events are safe. Unsafe (abandoned) events get no
/// ack, so the client sends them again.
async fn write_ack_if_safe<S>(stream: &mut S, chunk: &[u8], safe: bool) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    if !safe {
        return Ok(());
    }
    let mut reply = Vec::with_capacity(chunk.len() + 8);
    write_ack(chunk, &mut reply);
    stream.write_all(&reply).await
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;
