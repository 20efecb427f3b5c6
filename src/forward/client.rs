//! A small forward-protocol client: request encoding for every mode, used by `fwd2loki send`,
//! the load generator and the tests.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::msgpack::Scanner;

/// How events are packed into requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// One request per event, `[tag, time, record, option]`: what Docker sends.
    Message,
    /// `[tag, [[time, record], ...], option]`.
    Forward,
    /// `[tag, bin(entries), option]`.
    Packed,
    /// `[tag, bin(gzip(entries)), {"compressed": "gzip", ...}]`.
    Compressed,
}

/// How event times are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TimeFormat {
    /// EventTime (ext type 0): seconds and nanoseconds.
    EventTime,
    /// Integer seconds, as Docker sends without `fluentd-sub-second-precision`.
    Integer,
    /// Float seconds.
    Float,
}

/// One event to send: its time in nanoseconds and its record as a msgpack map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEvent {
    /// Nanoseconds since the epoch.
    pub timestamp_ns: i64,
    /// A complete msgpack map.
    pub record: Vec<u8>,
}

impl OutgoingEvent {
    /// An event whose record is the msgpack encoding of a JSON object.
    ///
    /// # Panics
    ///
    /// When `record` cannot be encoded, which does not happen for JSON values.
    pub fn from_json(timestamp_ns: i64, record: &serde_json::Value) -> Self {
        let record = rmp_serde::to_vec_named(record).expect("JSON values encode as msgpack");
        Self { timestamp_ns, record }
    }
}

/// Appends the requests carrying `events` in `mode` to `out`. In message mode that is one
/// request per event; in the others, one request for all of them. With `chunk`, every request
/// asks for an ack with that id (message mode appends the event's index to keep ids unique).
/// Returns the chunk ids asked for, in order.
pub fn encode_requests(
    tag: &str,
    mode: Mode,
    time_format: TimeFormat,
    events: &[OutgoingEvent],
    chunk: Option<&str>,
    out: &mut Vec<u8>,
) -> Vec<String> {
    let mut chunks = Vec::new();
    if mode == Mode::Message {
        for (index, event) in events.iter().enumerate() {
            let chunk = chunk.map(|chunk| format!("{chunk}-{index}"));
            write_array_len(out, 4);
            write_str(out, tag.as_bytes());
            write_time(out, event.timestamp_ns, time_format);
            out.extend_from_slice(&event.record);
            write_options(out, chunk.as_deref(), false);
            chunks.extend(chunk);
        }
        return chunks;
    }

    write_array_len(out, 3);
    write_str(out, tag.as_bytes());
    match mode {
        Mode::Forward => {
            write_array_len(out, events.len() as u32);
            write_entries(out, events, time_format);
        }
        Mode::Packed | Mode::Compressed => {
            let mut entries = Vec::new();
            write_entries(&mut entries, events, time_format);
            if mode == Mode::Compressed {
                let mut gzip = GzEncoder::new(Vec::new(), Compression::fast());
                gzip.write_all(&entries).expect("writing to a Vec cannot fail");
                entries = gzip.finish().expect("writing to a Vec cannot fail");
            }
            rmp::encode::write_bin(out, &entries).expect("writing to a Vec cannot fail");
        }
        Mode::Message => unreachable!("handled above"),
    }
    write_options(out, chunk, mode == Mode::Compressed);
    chunks.extend(chunk.map(str::to_owned));
    chunks
}

/// Reads one ack reply per chunk id and checks that each echoes its id.
///
/// # Errors
///
/// When the connection closes first, or a reply is not the expected ack.
pub async fn read_acks<S>(stream: &mut S, chunks: &[String]) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buffer = Vec::new();
    let mut scanner = Scanner::new(64 * 1024);
    for chunk in chunks {
        let len = loop {
            if let Some(len) = scanner.scan(&buffer).map_err(std::io::Error::other)? {
                break len;
            }
            let mut part = [0u8; 4096];
            let read = stream.read(&mut part).await?;
            if read == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buffer.extend_from_slice(&part[..read]);
        };
        let reply: std::collections::HashMap<String, String> =
            rmp_serde::from_slice(&buffer[..len])
                .map_err(|error| std::io::Error::other(format!("reply is not an ack: {error}")))?;
        if reply.get("ack") != Some(chunk) {
            return Err(std::io::Error::other(format!("expected ack {chunk:?}, got {reply:?}")));
        }
        buffer.drain(..len);
    }
    Ok(())
}

/// Writes `requests` and, if `chunks` is not empty, waits for their acks.
///
/// # Errors
///
/// Socket errors, or a wrong ack.
pub async fn send_requests<S>(
    stream: &mut S,
    requests: &[u8],
    chunks: &[String],
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(requests).await?;
    stream.flush().await?;
    read_acks(stream, chunks).await
}

fn write_entries(out: &mut Vec<u8>, events: &[OutgoingEvent], time_format: TimeFormat) {
    for event in events {
        write_array_len(out, 2);
        write_time(out, event.timestamp_ns, time_format);
        out.extend_from_slice(&event.record);
    }
}

fn write_time(out: &mut Vec<u8>, timestamp_ns: i64, time_format: TimeFormat) {
    let seconds = timestamp_ns.div_euclid(1_000_000_000);
    let nanos = timestamp_ns.rem_euclid(1_000_000_000);
    match time_format {
        TimeFormat::EventTime => {
            rmp::encode::write_ext_meta(out, 8, 0).expect("writing to a Vec cannot fail");
            out.extend_from_slice(&(seconds as u32).to_be_bytes());
            out.extend_from_slice(&(nanos as u32).to_be_bytes());
        }
        TimeFormat::Integer => {
            rmp::encode::write_sint(out, seconds).expect("writing to a Vec cannot fail");
        }
        TimeFormat::Float => {
            let secs = timestamp_ns as f64 / 1e9;
            rmp::encode::write_f64(out, secs).expect("writing to a Vec cannot fail");
        }
    }
}

fn write_options(out: &mut Vec<u8>, chunk: Option<&str>, compressed: bool) {
    let pairs = u32::from(chunk.is_some()) + u32::from(compressed);
    rmp::encode::write_map_len(out, pairs).expect("writing to a Vec cannot fail");
    if let Some(chunk) = chunk {
        write_str(out, b"chunk");
        write_str(out, chunk.as_bytes());
    }
    if compressed {
        write_str(out, b"compressed");
        write_str(out, b"gzip");
    }
}

fn write_array_len(out: &mut Vec<u8>, len: u32) {
    rmp::encode::write_array_len(out, len).expect("writing to a Vec cannot fail");
}

fn write_str(out: &mut Vec<u8>, text: &[u8]) {
    rmp::encode::write_str_len(out, text.len() as u32).expect("writing to a Vec cannot fail");
    out.extend_from_slice(text);
}
