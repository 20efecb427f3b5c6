//! Decoding one forward-protocol request into its events.
//!
//! The four event modes of the
//! [Forward Protocol v1](https://github.com/fluent/fluentd/wiki/Forward-Protocol-Specification-v1)
//! are told apart by the type of the request's second element:
//!
//! | second element     | mode                                                     |
//! |--------------------|----------------------------------------------------------|
//! | integer, float, ext| Message `[tag, time, record, option?]`                  |
//! | array              | Forward `[tag, [[time, record], ...], option?]`         |
//! | bin or str         | PackedForward `[tag, entries, option?]`, gzip-compressed |
//! |                    | when the option map says `compressed: "gzip"`            |

use std::io::Read;

use flate2::read::MultiGzDecoder;

use crate::msgpack::{MapLayout, ReadError, Reader, Value, is_map_marker};
use crate::transform::render::RenderError;

/// Why a request was refused. Every variant closes the connection it came from.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not valid msgpack.
    #[error(transparent)]
    Msgpack(#[from] ReadError),
    /// A record cannot be rendered as a line.
    #[error("record cannot be rendered: {0}")]
    Render(#[from] RenderError),
    /// The request is not an array (nor the `nil` heartbeat).
    #[error("request is {found}, not an array")]
    NotAnArray {
        /// What was found instead.
        found: &'static str,
    },
    /// The request is an array of a shape no mode has.
    #[error("unknown request shape: {reason}")]
    UnknownShape {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An event time that is not a non-negative integer, float or EventTime.
    #[error("invalid event time: {reason}")]
    InvalidTime {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An event record that is not a map.
    #[error("event record is {found}, not a map")]
    RecordNotMap {
        /// What was found instead.
        found: &'static str,
    },
    /// The `compressed` option names a compression this server does not read.
    #[error("unsupported compression {name:?}")]
    UnsupportedCompression {
        /// The option's value.
        name: String,
    },
    /// The gzip data of a CompressedPackedForward request is corrupt.
    #[error("invalid gzip data: {0}")]
    Gzip(std::io::Error),
    /// The gzip data inflates to more than the limit.
    #[error("compressed entries inflate to more than the limit of {limit} bytes")]
    DecompressedTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The `size` option disagrees with the number of entries.
    #[error("option size is {announced} but the request holds {found} entries")]
    SizeMismatch {
        /// The `size` option.
        announced: u64,
        /// Entries actually found.
        found: u64,
    },
}

impl DecodeError {
    /// Whether the bytes ended inside the request: more may complete it.
    pub fn is_truncated(&self) -> bool {
        matches!(self, Self::Msgpack(ReadError::Truncated))
    }

    /// A short fixed name for the kind of error, for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Msgpack(_) => "invalid_msgpack",
            Self::Render(_) => "invalid_record",
            Self::NotAnArray { .. } | Self::UnknownShape { .. } => "unknown_shape",
            Self::InvalidTime { .. } => "invalid_time",
            Self::RecordNotMap { .. } => "record_not_map",
            Self::UnsupportedCompression { .. } | Self::Gzip(_) => "invalid_compression",
            Self::DecompressedTooLarge { .. } => "decompressed_too_large",
            Self::SizeMismatch { .. } => "size_mismatch",
        }
    }
}

/// One log event: its time and its record, still as raw msgpack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// The record: a complete msgpack map.
    pub record: &'a [u8],
    /// Where the record's keys and values lie, when the walk that found the record's end
    /// noted them; the transform walks the record itself otherwise.
    pub layout: Option<MapLayout>,
}

impl<'a> Event<'a> {
    /// An event whose record has not been walked yet.
    pub fn new(timestamp_ns: i64, record: &'a [u8]) -> Self {
        Self { timestamp_ns, record, layout: None }
    }
}

/// The request options the server acts on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options<'a> {
    /// The `chunk` id the client wants acknowledged.
    pub chunk: Option<&'a [u8]>,
    /// The number of events the client says the request holds.
    pub size: Option<u64>,
    /// The `compressed` option's value.
    pub compressed: Option<&'a [u8]>,
}

/// A parsed request whose events can be read with [`Request::for_each_event`].
#[derive(Debug, Clone)]
pub enum Request<'a> {
    /// A `nil` heartbeat, to be ignored.
    Heartbeat,
    /// A request carrying events.
    Events {
        /// The tag the client gave the events.
        tag: &'a [u8],
        /// The events, not yet decoded.
        body: Body<'a>,
        /// The options map (empty if absent).
        options: Options<'a>,
    },
}

/// The event-carrying part of a request, in the form of its mode.
#[derive(Debug, Clone)]
pub enum Body<'a> {
    /// Message mode: one event.
    Message(Event<'a>),
    /// Forward mode: `count` entries, read from `entries`.
    Forward {
        /// A reader at the first entry.
        entries: Reader<'a>,
        /// The number of entries.
        count: u32,
    },
    /// PackedForward mode: concatenated entries.
    Packed(&'a [u8]),
    /// CompressedPackedForward mode: gzip of concatenated entries.
    CompressedPacked(&'a [u8]),
}

/// Parses the request `bytes`, one complete msgpack value.
///
/// # Errors
///
/// [`DecodeError`] when the request has no known shape.
pub fn parse(bytes: &[u8]) -> Result<Request<'_>, DecodeError> {
    parse_prefix(bytes).map(|(request, _)| request)
}

/// Parses the request at the start of `bytes`, which may hold more after it, and returns it
/// with its length. [`DecodeError::is_truncated`] tells a request that has not fully arrived
/// from a malformed one.
///
/// # Errors
///
/// As [`parse`], plus a truncated request.
pub fn parse_prefix(bytes: &[u8]) -> Result<(Request<'_>, usize), DecodeError> {
    let mut reader = Reader::new(bytes);
    let len = match reader.read()? {
        Value::Nil => return Ok((Request::Heartbeat, 1)),
        Value::Array(len) => len,
        other => {
            return Err(DecodeError::NotAnArray { found: kind(&other) });
        }
    };
    if !(2..=4).contains(&len) {
        return Err(DecodeError::UnknownShape { reason: "array must have 2 to 4 elements" });
    }
    let Value::Str(tag) = reader.read()? else {
        return Err(DecodeError::UnknownShape { reason: "tag is not a string" });
    };

    let mut after_second = reader.clone();
    let second = after_second.read()?;
    let (body, elements_used) = match second {
        Value::Array(count) => {
            reader = after_second;
            let entries = reader.clone();
            for _ in 0..count {
                reader.read_raw()?;
            }
            (Body::Forward { entries, count }, 2)
        }
        Value::Str(entries) | Value::Bin(entries) => {
            reader = after_second;
            (Body::Packed(entries), 2)
        }
        // A message needs its record: without this check `["tag", 1]` would take the bytes
        // after it (the next request) as its record before the arity is checked below.
        Value::UInt(_) | Value::Int(_) | Value::Float(_) | Value::Ext(..) if len < 3 => {
            return Err(DecodeError::UnknownShape {
                reason: "wrong number of elements for the mode",
            });
        }
        Value::UInt(_) | Value::Int(_) | Value::Float(_) | Value::Ext(..) => {
            reader = after_second;
            let timestamp_ns = time_from(second)?;
            let (record, layout) = read_record(&mut reader)?;
            (Body::Message(Event { timestamp_ns, record, layout }), 3)
        }
        _ => {
            return Err(DecodeError::UnknownShape {
                reason: "second element is neither a time, an array nor entries",
            });
        }
    };

    let options = match len.checked_sub(elements_used) {
        Some(0) => Options::default(),
        Some(1) => read_options(&mut reader)?,
        _ => {
            return Err(DecodeError::UnknownShape {
                reason: "wrong number of elements for the mode",
            });
        }
    };
    let body = match (body, options.compressed) {
        (Body::Packed(entries), Some(b"gzip")) => Body::CompressedPacked(entries),
        (body, None | Some(b"text")) => body,
        (Body::Packed(_), Some(other)) => {
            let name = String::from_utf8_lossy(other).into_owned();
            return Err(DecodeError::UnsupportedCompression { name });
        }
        (body, Some(_)) => body,
    };
    let len = bytes.len() - reader.remaining().len();
    Ok((Request::Events { tag, body, options }, len))
}

impl Request<'_> {
    /// Calls `on_event` for every event of the request, in order, and returns how many there
    /// were. Compressed entries are inflated into `scratch`, at most `max_inflated` bytes.
    ///
    /// # Errors
    ///
    /// The first [`DecodeError`] met, or one that `on_event` returned; events before it have
    /// already been handed to `on_event`.
    pub fn for_each_event<E>(
        &self,
        scratch: &mut Vec<u8>,
        max_inflated: usize,
        mut on_event: impl FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<u64, E>
    where
        E: From<DecodeError>,
    {
        let Request::Events { body, options, .. } = self else {
            return Ok(0);
        };
        let count = match body {
            Body::Message(event) => {
                on_event(*event)?;
                1
            }
            Body::Forward { entries, count } => {
                let mut entries = entries.clone();
                for _ in 0..*count {
                    on_event(read_entry(&mut entries)?)?;
                }
                u64::from(*count)
            }
            Body::Packed(entries) => for_each_packed(entries, &mut on_event)?,
            Body::CompressedPacked(compressed) => {
                inflate(compressed, scratch, max_inflated)?;
                for_each_packed(scratch, &mut on_event)?
            }
        };
        match options.size {
            Some(announced) if announced != count => {
                Err(DecodeError::SizeMismatch { announced, found: count }.into())
            }
            _ => Ok(count),
        }
    }
}

/// Reads consecutive `[time, record]` entries until `entries` ends.
fn for_each_packed<E: From<DecodeError>>(
    entries: &[u8],
    on_event: &mut impl FnMut(Event<'_>) -> Result<(), E>,
) -> Result<u64, E> {
    let mut reader = Reader::new(entries);
    let mut count = 0;
    while !reader.is_empty() {
        on_event(read_entry(&mut reader)?)?;
        count += 1;
    }
    Ok(count)
}

/// Inflates gzip data, possibly several concatenated members, refusing more than `limit` bytes.
fn inflate(compressed: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), DecodeError> {
    out.clear();
    let read_limit = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    MultiGzDecoder::new(compressed).take(read_limit).read_to_end(out).map_err(DecodeError::Gzip)?;
    if out.len() > limit {
        out.clear();
        return Err(DecodeError::DecompressedTooLarge { limit });
    }
    Ok(())
}

/// Reads one `[time, record]` entry.
fn read_entry<'a>(reader: &mut Reader<'a>) -> Result<Event<'a>, DecodeError> {
    match reader.read()? {
        Value::Array(2) => {}
        _ => {
            return Err(DecodeError::UnknownShape { reason: "entry is not [time, record]" });
        }
    }
    // fluent-bit 2.1+ may send the time as `[time, metadata]`; the time is its first element.
    let timestamp_ns = match reader.read()? {
        Value::Array(len @ 1..) => {
            let time = read_time(reader)?;
            for _ in 1..len {
                reader.read_raw()?;
            }
            time
        }
        time => time_from(time)?,
    };
    let (record, layout) = read_record(reader)?;
    Ok(Event { timestamp_ns, record, layout })
}

/// Reads an event time: integer seconds, float seconds or EventTime, as nanoseconds.
fn read_time(reader: &mut Reader<'_>) -> Result<i64, DecodeError> {
    time_from(reader.read()?)
}

/// The event time `value` stands for, in nanoseconds.
fn time_from(value: Value<'_>) -> Result<i64, DecodeError> {
    const NANOS_PER_SEC: i64 = 1_000_000_000;
    let out_of_range = DecodeError::InvalidTime { reason: "out of range" };
    match value {
        Value::UInt(secs) => i64::try_from(secs)
            .ok()
            .and_then(|secs| secs.checked_mul(NANOS_PER_SEC))
            .ok_or(out_of_range),
        Value::Int(_) => Err(DecodeError::InvalidTime { reason: "negative" }),
        Value::Float(secs) => {
            let nanos = (secs * NANOS_PER_SEC as f64).round();
            if nanos.is_finite() && (0.0..i64::MAX as f64).contains(&nanos) {
                Ok(nanos as i64)
            } else {
                Err(out_of_range)
            }
        }
        // EventTime: big-endian u32 seconds, then u32 nanoseconds.
        Value::Ext(0, &[s0, s1, s2, s3, n0, n1, n2, n3]) => {
            let secs = i64::from(u32::from_be_bytes([s0, s1, s2, s3]));
            let nanos = i64::from(u32::from_be_bytes([n0, n1, n2, n3]));
            if nanos >= NANOS_PER_SEC {
                return Err(DecodeError::InvalidTime { reason: "EventTime nanoseconds over 1e9" });
            }
            Ok(secs * NANOS_PER_SEC + nanos)
        }
        Value::Ext(..) => Err(DecodeError::InvalidTime { reason: "extension is not EventTime" }),
        _ => Err(DecodeError::InvalidTime { reason: "not a number or EventTime" }),
    }
}

/// Reads a record, which must be a map, as raw bytes, with its layout when it is small.
fn read_record<'a>(reader: &mut Reader<'a>) -> Result<(&'a [u8], Option<MapLayout>), DecodeError> {
    if reader.remaining().first().copied().is_some_and(is_map_marker) {
        return Ok(reader.read_map()?);
    }
    Err(DecodeError::RecordNotMap { found: kind(&reader.clone().read()?) })
}

/// Reads the option map, or `nil` standing for none.
fn read_options<'a>(reader: &mut Reader<'a>) -> Result<Options<'a>, DecodeError> {
    let pairs = match reader.read()? {
        Value::Map(pairs) => pairs,
        Value::Nil => return Ok(Options::default()),
        _ => {
            return Err(DecodeError::UnknownShape { reason: "option is not a map" });
        }
    };
    let mut options = Options::default();
    for _ in 0..pairs {
        // Keys and values are read whole, so that ignored options of any shape are skipped.
        let key = Reader::new(reader.read_raw()?).read()?;
        let value = Reader::new(reader.read_raw()?).read()?;
        match (key, value) {
            (Value::Str(b"chunk"), Value::Str(chunk) | Value::Bin(chunk)) => {
                options.chunk = Some(chunk);
            }
            (Value::Str(b"size"), Value::UInt(size)) => options.size = Some(size),
            (Value::Str(b"compressed"), Value::Str(name)) => options.compressed = Some(name),
            (Value::Str(b"chunk" | b"size" | b"compressed"), _) => {
                return Err(DecodeError::UnknownShape { reason: "option value of the wrong type" });
            }
            _ => {}
        }
    }
    Ok(options)
}

/// A name for the kind of a msgpack item, for error messages.
fn kind(value: &Value<'_>) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Bool(_) => "a boolean",
        Value::UInt(_) | Value::Int(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Str(_) => "a string",
        Value::Bin(_) => "a binary",
        Value::Ext(..) => "an extension",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
