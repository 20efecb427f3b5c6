//! A Loki stand-in that only counts: it answers `POST /loki/api/v1/push` with 204 after
//! counting the entries of the body, and does nothing else, so that it takes as little of the
//! machine as possible from the shipper being measured.
//!
//! It speaks just enough HTTP/1.1 for a client that sends `Content-Length` bodies over
//! keep-alive connections, which is what fwd2loki's client does.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::loopback::LoopbackServer;
use super::push_count::PushCounter;
use super::tally::Tally;

/// The only path answered with success.
pub const PUSH_PATH: &str = "/loki/api/v1/push";

/// Largest body accepted; far above any push fwd2loki sends.
const MAX_BODY_BYTES: usize = 256 << 20;

/// Headers read per request; more is an error.
const MAX_HEADERS: usize = 32;

/// A running null receiver.
#[derive(Debug)]
pub struct NullLoki {
    server: LoopbackServer,
    tally: Arc<Tally>,
}

impl NullLoki {
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

    /// The URL to give fwd2loki as `loki.url`.
    pub fn push_url(&self) -> String {
        format!("http://{}{PUSH_PATH}", self.server.address())
    }

    /// What has been counted.
    pub fn tally(&self) -> &Arc<Tally> {
        &self.tally
    }
}

/// The parts of a request head the receiver acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    /// Bytes of the request line and headers, blank line included.
    len: usize,
    /// The body's length.
    body_len: usize,
    /// Whether it is a POST to the push path.
    is_push: bool,
    /// Whether the client asked to close the connection after the answer.
    close: bool,
}

/// Why a request could not be read; the connection is closed.
#[derive(Debug, thiserror::Error)]
enum HeadError {
    #[error("malformed HTTP request: {0}")]
    Malformed(#[from] httparse::Error),
    #[error("request without Content-Length (chunked bodies are not read)")]
    NoLength,
    #[error("body of {0} bytes is over the limit")]
    TooLarge(usize),
}

/// Serves one keep-alive connection until the client closes it.
async fn serve(mut stream: TcpStream, tally: Arc<Tally>) {
    if let Err(reason) = serve_requests(&mut stream, &tally).await {
        tally.fail(format!("null Loki receiver: {reason}"));
        let _ = stream
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await;
    }
}

async fn serve_requests(stream: &mut TcpStream, tally: &Tally) -> Result<(), String> {
    let mut buffer = BytesMut::with_capacity(64 * 1024);
    let mut counter = PushCounter::default();
    loop {
        let head = loop {
            if let Some(head) = parse_head(&buffer).map_err(|error| error.to_string())? {
                break head;
            }
            if !read_more(stream, &mut buffer).await? {
                return Ok(());
            }
        };
        buffer.advance(head.len);
        buffer.reserve(head.body_len.saturating_sub(buffer.len()));
        while buffer.len() < head.body_len {
            if !read_more(stream, &mut buffer).await? {
                return Ok(());
            }
        }
        let body = buffer.split_to(head.body_len);
        let answer: &[u8] = if !head.is_push {
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        } else {
            let counts = counter.count(&body).map_err(|error| error.to_string())?;
            tally.record(counts.entries, counts.line_bytes);
            b"HTTP/1.1 204 No Content\r\n\r\n"
        };
        stream.write_all(answer).await.map_err(|error| format!("cannot answer: {error}"))?;
        if head.close {
            return Ok(());
        }
    }
}

/// Reads more bytes into `buffer`; false when the client has closed the connection.
async fn read_more(stream: &mut TcpStream, buffer: &mut BytesMut) -> Result<bool, String> {
    if buffer.capacity() - buffer.len() < 4096 {
        buffer.reserve(64 * 1024);
    }
    let read = stream.read_buf(buffer).await.map_err(|error| format!("cannot read: {error}"))?;
    Ok(read > 0)
}

/// Parses the request head at the start of `buffer`, or `None` when it is incomplete.
fn parse_head(buffer: &[u8]) -> Result<Option<Head>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = request.parse(buffer)? else {
        return Ok(None);
    };
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| header.value)
    };
    let body_len = match header("content-length") {
        Some(value) => std::str::from_utf8(value)
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok())
            .ok_or(HeadError::NoLength)?,
        None if header("transfer-encoding").is_some() => return Err(HeadError::NoLength),
        None => 0,
    };
    if body_len > MAX_BODY_BYTES {
        return Err(HeadError::TooLarge(body_len));
    }
    let close = header("connection").is_some_and(|value| value.eq_ignore_ascii_case(b"close"));
    Ok(Some(Head {
        len,
        body_len,
        is_push: request.method == Some("POST") && request.path == Some(PUSH_PATH),
        close,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_head_of_a_push() {
        let request =
            b"POST /loki/api/v1/push HTTP/1.1\r\nhost: x\r\ncontent-length: 12\r\n\r\nbody";
        let head = parse_head(request).unwrap().unwrap();
        assert_eq!(
            head,
            Head { len: request.len() - 4, body_len: 12, is_push: true, close: false }
        );
        assert_eq!(parse_head(&request[..20]).unwrap(), None);
    }

    #[test]
    fn tells_other_requests_apart() {
        let head =
            parse_head(b"GET /ready HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap().unwrap();
        assert!(!head.is_push && head.close);
        assert!(matches!(
            parse_head(b"POST /loki/api/v1/push HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HeadError::NoLength)
        ));
    }

    #[tokio::test]
    async fn counts_pushes_over_http() {
        use crate::loki::batch::StreamEntries;
        use crate::loki::encode::PushEncoder;
        use crate::loki::labels::StreamLabels;

        let loki = NullLoki::start().await.unwrap();
        let streams = [StreamEntries {
            labels: Arc::new(StreamLabels::new([("job", "a")])),
            entries: vec![(1, "one".into()), (2, "three".into())],
        }];
        let body = PushEncoder::default().encode(&streams);
        let address = loki.push_url().replace("http://", "").replace(PUSH_PATH, "");
        let mut stream = TcpStream::connect(address).await.unwrap();
        for _ in 0..2 {
            let head = format!(
                "POST {PUSH_PATH} HTTP/1.1\r\ncontent-type: application/x-protobuf\r\n\
                 content-length: {}\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            stream.write_all(&body).await.unwrap();
            let mut answer = [0u8; 27];
            stream.read_exact(&mut answer).await.unwrap();
            assert_eq!(&answer, b"HTTP/1.1 204 No Content\r\n\r\n");
        }
        assert_eq!((loki.tally().entries(), loki.tally().line_bytes()), (4, 16));
        assert!(loki.tally().failure().is_none());
    }
}
