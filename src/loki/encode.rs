//! Encoding a batch as Loki's push request: protobuf, then a snappy block.
//!
//! The protobuf is written field by field straight into one reused buffer, without building a
//! tree of owned messages first. The schema is Loki's `pkg/push/push.proto`:
//!
//! ```text
//! PushRequest      { repeated StreamAdapter streams = 1; }
//! StreamAdapter    { string labels = 1; repeated EntryAdapter entries = 2; }
//! EntryAdapter     { google.protobuf.Timestamp timestamp = 1; string line = 2;
//!                    repeated LabelPairAdapter structuredMetadata = 3; }
//! LabelPairAdapter { string name = 1; string value = 2; }
//! Timestamp        { int64 seconds = 1; int32 nanos = 2; }
//! ```
//!
//! Structured metadata is the same for every entry of a [`StreamEntries`], so its encoding is
//! measured once per stream.

use bytes::Bytes;
use prost::encoding::{WireType, encoded_len_varint, key_len};

use crate::loki::batch::StreamEntries;

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Encodes push requests, reusing its buffers from one batch to the next.
pub struct PushEncoder {
    protobuf: Vec<u8>,
    /// Where snappy writes. Kept at its largest length, so that it is zeroed only when it grows,
    /// not for every push. It leaves as the body of a push and comes back through
    /// [`Self::recycle`]: a fresh body for every push would cost a megabyte of newly mapped
    /// (and so zeroed) memory each time.
    compressed: Vec<u8>,
    snappy: snap::raw::Encoder,
}

impl Default for PushEncoder {
    fn default() -> Self {
        Self { protobuf: Vec::new(), compressed: Vec::new(), snappy: snap::raw::Encoder::new() }
    }
}

impl std::fmt::Debug for PushEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushEncoder").field("buffer_capacity", &self.protobuf.capacity()).finish()
    }
}

impl PushEncoder {
    /// Encodes the streams as a snappy-compressed `PushRequest`, the body of a push. Hand the
    /// body back to [`Self::recycle`] once the push is over.
    pub fn encode(&mut self, streams: &[StreamEntries]) -> Bytes {
        self.protobuf.clear();
        write_push_request(streams, &mut self.protobuf);
        let max_len = snap::raw::max_compress_len(self.protobuf.len());
        if self.compressed.len() < max_len {
            self.compressed.resize(max_len, 0);
        }
        let len = self
            .snappy
            .compress(&self.protobuf, &mut self.compressed)
            .expect("snappy compresses any input shorter than 4 GiB");
        let mut body = std::mem::take(&mut self.compressed);
        body.truncate(len);
        Bytes::from(body)
    }

    /// Takes back the buffer of a body from [`Self::encode`] for the next push, unless it is
    /// still shared (a request may still hold it).
    pub fn recycle(&mut self, body: Bytes) {
        let Ok(body) = body.try_into_mut() else {
            return;
        };
        let buffer = Vec::from(body);
        if buffer.capacity() > self.compressed.capacity() {
            self.compressed = buffer;
        }
    }

    /// Length of the protobuf encoding of the last request, before compression.
    pub fn last_protobuf_len(&self) -> usize {
        self.protobuf.len()
    }
}

/// Appends the protobuf `PushRequest` for `streams` to `out`.
pub fn write_push_request(streams: &[StreamEntries], out: &mut Vec<u8>) {
    // Measuring a stream walks all its entries: do it once.
    let stream_lens: Vec<usize> = streams.iter().map(stream_len).collect();
    out.reserve(stream_lens.iter().map(|len| field_len(1, *len)).sum());
    for (stream, stream_len) in streams.iter().zip(stream_lens) {
        write_len_prefix(1, stream_len, out);
        write_string(1, stream.labels.selector(), out);
        let metadata_len = structured_metadata_len(stream);
        for (timestamp_ns, line) in &stream.entries {
            let (seconds, nanos) = split_timestamp(*timestamp_ns);
            write_len_prefix(2, entry_len(seconds, nanos, line.len()) + metadata_len, out);
            write_len_prefix(1, timestamp_len(seconds, nanos), out);
            write_varint_field(1, seconds as u64, out);
            write_varint_field(2, nanos as u64, out);
            write_bytes(2, line.as_bytes(), out);
            for (name, value) in stream.labels.structured_metadata() {
                write_len_prefix(3, pair_len(name, value), out);
                write_string(1, name, out);
                write_string(2, value, out);
            }
        }
    }
}

/// Seconds and nanoseconds of a timestamp, the nanoseconds always in `0..1e9`.
fn split_timestamp(timestamp_ns: i64) -> (i64, i32) {
    (timestamp_ns.div_euclid(NANOS_PER_SEC), timestamp_ns.rem_euclid(NANOS_PER_SEC) as i32)
}

fn stream_len(stream: &StreamEntries) -> usize {
    let metadata_len = structured_metadata_len(stream);
    let entries: usize = stream
        .entries
        .iter()
        .map(|(timestamp_ns, line)| {
            let (seconds, nanos) = split_timestamp(*timestamp_ns);
            field_len(2, entry_len(seconds, nanos, line.len()) + metadata_len)
        })
        .sum();
    field_len(1, stream.labels.selector().len()) + entries
}

/// Length of the structured metadata fields of each entry of `stream`.
fn structured_metadata_len(stream: &StreamEntries) -> usize {
    stream
        .labels
        .structured_metadata()
        .map(|(name, value)| field_len(3, pair_len(name, value)))
        .sum()
}

fn pair_len(name: &str, value: &str) -> usize {
    field_len(1, name.len()) + field_len(2, value.len())
}

fn entry_len(seconds: i64, nanos: i32, line_len: usize) -> usize {
    field_len(1, timestamp_len(seconds, nanos)) + field_len(2, line_len)
}

fn timestamp_len(seconds: i64, nanos: i32) -> usize {
    key_len(1) + encoded_len_varint(seconds as u64) + key_len(2) + encoded_len_varint(nanos as u64)
}

/// Length of a length-delimited field whose content is `len` bytes.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn write_len_prefix(tag: u32, len: usize, out: &mut Vec<u8>) {
    write_key(tag, WireType::LengthDelimited, out);
    write_varint(len as u64, out);
}

/// Appends a field key. Loki's fields all have numbers under 16, so a key is one byte.
fn write_key(tag: u32, wire_type: WireType, out: &mut Vec<u8>) {
    write_varint(u64::from(tag << 3 | wire_type as u32), out);
}

/// Appends `value` as a varint. prost's `encode_varint` writes through the generic `BufMut`,
/// one `extend_from_slice` per byte; this is the same encoding at a fraction of the cost,
/// which matters at five varints per entry.
fn write_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn write_string(tag: u32, value: &str, out: &mut Vec<u8>) {
    write_bytes(tag, value.as_bytes(), out);
}

/// Writes a string field from bytes known to be UTF-8.
fn write_bytes(tag: u32, value: &[u8], out: &mut Vec<u8>) {
    write_len_prefix(tag, value.len(), out);
    out.extend_from_slice(value);
}

/// Writes an int64 or int32 field; negative values are sign-extended to ten bytes, as protobuf
/// requires for both.
fn write_varint_field(tag: u32, value: u64, out: &mut Vec<u8>) {
    write_key(tag, WireType::Varint, out);
    write_varint(value, out);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message;

    use super::*;
    use crate::loki::labels::StreamLabels;

    #[derive(Clone, PartialEq, Message)]
    struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        streams: Vec<StreamAdapter>,
    }

    #[derive(Clone, PartialEq, Message)]
    struct StreamAdapter {
        #[prost(string, tag = "1")]
        labels: String,
        #[prost(message, repeated, tag = "2")]
        entries: Vec<EntryAdapter>,
    }

    #[derive(Clone, PartialEq, Message)]
    struct EntryAdapter {
        #[prost(message, optional, tag = "1")]
        timestamp: Option<Timestamp>,
        #[prost(string, tag = "2")]
        line: String,
        #[prost(message, repeated, tag = "3")]
        structured_metadata: Vec<LabelPairAdapter>,
    }

    #[derive(Clone, PartialEq, Message)]
    struct LabelPairAdapter {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(string, tag = "2")]
        value: String,
    }

    #[derive(Clone, PartialEq, Message)]
    struct Timestamp {
        #[prost(int64, tag = "1")]
        seconds: i64,
        #[prost(int32, tag = "2")]
        nanos: i32,
    }

    #[test]
    fn varints_are_prosts() {
        let edges = (0..64).flat_map(|bit| [(1u64 << bit) - 1, 1 << bit, (1 << bit) + 1]);
        for value in edges.chain([u64::MAX, -1i64 as u64, -1_000_000_000i64 as u64]) {
            let mut ours = Vec::new();
            write_varint(value, &mut ours);
            let mut prosts = Vec::new();
            prost::encoding::encode_varint(value, &mut prosts);
            assert_eq!(ours, prosts, "{value}");
            assert_eq!(ours.len(), encoded_len_varint(value), "{value}");
        }
    }

    #[test]
    fn prost_decodes_what_is_written() {
        let streams = vec![
            StreamEntries {
                labels: Arc::new(StreamLabels::new([("job", "a")])),
                entries: vec![
                    (1_700_000_000_123_456_789, "first".into()),
                    (0, "".into()),
                    (-1, "before the epoch".into()),
                    (1_700_000_000_000_000_000, "x".repeat(300).into()),
                ],
            },
            StreamEntries {
                labels: Arc::new(StreamLabels::new([("job", "b"), ("host", "é")])),
                entries: vec![(5, "b".into())],
            },
        ];
        let mut encoder = PushEncoder::default();
        let body = encoder.encode(&streams);
        let protobuf = snap::raw::Decoder::new().decompress_vec(&body).expect("snappy block");
        assert_eq!(protobuf.len(), encoder.last_protobuf_len());

        let request = PushRequest::decode(protobuf.as_slice()).expect("valid protobuf");
        let timestamp = |seconds, nanos| Some(Timestamp { seconds, nanos });
        let entry = |timestamp, line: &str| EntryAdapter {
            timestamp,
            line: line.to_owned(),
            structured_metadata: Vec::new(),
        };
        let expected = PushRequest {
            streams: vec![
                StreamAdapter {
                    labels: r#"{job="a"}"#.to_owned(),
                    entries: vec![
                        entry(timestamp(1_700_000_000, 123_456_789), "first"),
                        entry(timestamp(0, 0), ""),
                        entry(timestamp(-1, 999_999_999), "before the epoch"),
                        entry(timestamp(1_700_000_000, 0), &"x".repeat(300)),
                    ],
                },
                StreamAdapter {
                    labels: r#"{host="é", job="b"}"#.to_owned(),
                    entries: vec![entry(timestamp(0, 5), "b")],
                },
            ],
        };
        assert_eq!(request, expected);
    }

    #[test]
    fn a_recycled_body_carries_the_next_push_intact() {
        let stream = |line: &str| StreamEntries {
            labels: Arc::new(StreamLabels::new([("job", "a")])),
            entries: vec![(1, line.into())],
        };
        let decoded = |body: &[u8]| {
            let protobuf = snap::raw::Decoder::new().decompress_vec(body).expect("snappy block");
            PushRequest::decode(protobuf.as_slice()).expect("valid protobuf").streams[0].entries[0]
                .line
                .clone()
        };
        let mut encoder = PushEncoder::default();
        let long = "a long line that leaves stale bytes behind ".repeat(50);
        let first = encoder.encode(&[stream(&long)]);
        let first_buffer = first.as_ptr();
        encoder.recycle(first);

        let second = encoder.encode(&[stream("short")]);
        assert_eq!(second.as_ptr(), first_buffer, "the buffer is used again");
        assert_eq!(decoded(&second), "short");

        // A body still held elsewhere (by a request being sent) is left alone.
        let held = second.clone();
        encoder.recycle(second);
        let third = encoder.encode(&[stream("third")]);
        assert_ne!(third.as_ptr(), held.as_ptr());
        assert_eq!((decoded(&held), decoded(&third)), ("short".to_owned(), "third".to_owned()));
    }

    #[test]
    fn structured_metadata_goes_with_every_entry_of_its_stream() {
        let labels = StreamLabels::new([("job", "a")])
            .with_structured_metadata([("container_id", "0f3c"), ("source", "stdérr")]);
        let streams = vec![StreamEntries {
            labels: Arc::new(labels),
            entries: vec![(1, "one".into()), (2, "x".repeat(200).into())],
        }];
        let body = PushEncoder::default().encode(&streams);
        let protobuf = snap::raw::Decoder::new().decompress_vec(&body).expect("snappy block");
        let request = PushRequest::decode(protobuf.as_slice()).expect("valid protobuf");
        let pair = |name: &str, value: &str| LabelPairAdapter {
            name: name.to_owned(),
            value: value.to_owned(),
        };
        let entries = &request.streams[0].entries;
        assert_eq!(entries.len(), 2);
        for entry in entries {
            assert_eq!(
                entry.structured_metadata,
                [pair("container_id", "0f3c"), pair("source", "stdérr")]
            );
        }
        assert_eq!(entries[1].line, "x".repeat(200));
    }
}
