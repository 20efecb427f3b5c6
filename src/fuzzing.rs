//! Entry points of the fuzz targets in `fuzz/`, kept in the library so that `cargo test` can
//! replay the checked-in corpus through exactly the code the fuzzers run.
//!
//! Each function takes arbitrary bytes, feeds them to the parsers that read untrusted input the
//! way the server does, and panics only when an invariant breaks; errors from the parsers are
//! expected and ignored. Not part of the supported API.

#![doc(hidden)]

use std::io::Write;
use std::ops::Range;
use std::sync::OnceLock;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::config::{Config, LineFormat, LokiConfig, OversizedLines};
use crate::forward::decode::{self, DecodeError, Event};
use crate::loki::labels::is_valid_name;
use crate::msgpack::{ScanError, Scanner, value_len};
use crate::transform::{Entry, LineLimit, Scratch, Transform};

/// Largest request accepted. Smaller than the server's 8 MiB default: fuzz inputs are a few
/// KiB, and a smaller limit keeps the announced-size checks within the fuzzer's reach.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Most bytes a compressed request may inflate to.
pub const MAX_DECOMPRESSED_BYTES: usize = 1 << 20;
/// A second scanner limit that fuzz inputs easily exceed, to check the size refusal.
const SMALL_MESSAGE_BYTES: usize = 512;
/// The sizes of the simulated socket reads, used in turn, so that requests arrive split at
/// many different points.
const READ_SIZES: [usize; 6] = [1, 2, 3, 7, 64, 1500];

/// Feeds `data` to the server's request path as if one connection had sent it: the msgpack
/// framing, request decoding (gzip included) and the record-to-entry transform under several
/// configurations, with the line limit applied.
///
/// Beyond not panicking, it checks that the framing finds the same requests whether the bytes
/// arrive at once or in small reads, that it refuses exactly the requests over a smaller limit,
/// that an event count matches the events seen, that label names are valid, that the line
/// limit holds, and that lines rendered as JSON objects are JSON.
pub fn forward_stream(data: &[u8]) {
    let framing = scan_at_once(data, MAX_MESSAGE_BYTES);
    assert_eq!(scan_in_reads(data), framing, "framing depends on how the bytes arrive");
    check_small_limit(data, &framing.requests);
    let mut decoder = Decoder::new(true);
    for range in &framing.requests {
        // Errors close the connection in the server; here they only end the request.
        let _ = decoder.request(&data[range.clone()]);
    }
    // The server decodes only what framing cut out, but `decode::parse` is public: bytes that
    // are not one complete value must be refused too, not panic.
    let _ = Decoder::new(false).request(data);
}

/// Decodes `data` as the entries of a PackedForward request, and also as the gzip payload of a
/// CompressedPackedForward one (`[tag, bin(data), {"compressed": "gzip"}]`), so that the
/// fuzzer explores both the gzip layer and the entries inside it.
///
/// Checks that the gzip-compressed request `[tag, bin(gzip(data)), {"compressed": "gzip"}]`
/// yields exactly the events, or the error, of the uncompressed `[tag, bin(data)]`.
pub fn compressed_entries(data: &[u8]) {
    let _ = Decoder::new(true).request(&packed_request(data, true));

    if data.len() > MAX_DECOMPRESSED_BYTES {
        return;
    }
    let mut gzip = GzEncoder::new(Vec::new(), Compression::fast());
    gzip.write_all(data).expect("writing to a Vec cannot fail");
    let compressed = packed_request(&gzip.finish().expect("writing to a Vec cannot fail"), true);
    let mut from_compressed = Decoder::new(true);
    let mut from_plain = Decoder::new(false);
    assert_eq!(
        from_compressed.request(&compressed).map_err(|error| error.reason()),
        from_plain.request(&packed_request(data, false)).map_err(|error| error.reason()),
        "gzip changed the request's outcome"
    );
    assert_eq!(from_compressed.events, from_plain.events, "gzip changed the events");
}

/// Parses `data` as a configuration file. When it is valid, builds the transform from it and
/// turns a Docker-shaped record into an entry, which must succeed with valid label names.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::from_toml(text) else {
        return;
    };
    let transform = Transform::new(&config.loki);
    let record = docker_record();
    let event = Event { timestamp_ns: 1_700_000_000_000_000_001, record: &record };
    let mut entry = transform
        .entry(event, &mut Scratch::default())
        .unwrap_or_else(|error| panic!("a valid config cannot refuse a plain record: {error}"));
    check_entry(&transform, config.loki.max_line_bytes, &mut entry);
}

/// The requests framing found in a stream, and the error that ended it, if any.
#[derive(Debug, PartialEq, Eq)]
struct Framing {
    /// Where each complete request lies in the stream.
    requests: Vec<Range<usize>>,
    /// The error that stops the connection.
    error: Option<ScanError>,
}

/// Frames `data` as one read holding all of it, as `forward::connection` does.
fn scan_at_once(data: &[u8], max_len: usize) -> Framing {
    let mut scanner = Scanner::new(max_len);
    let mut requests = Vec::new();
    let mut start = 0;
    loop {
        match scanner.scan(&data[start..]) {
            Ok(Some(len)) => {
                // A zero length would make the connection loop forever on the same bytes.
                assert!(len > 0 && len <= data.len() - start, "bad length {len} at {start}");
                assert!(len <= max_len, "request of {len} bytes passed the limit");
                let request = &data[start..start + len];
                assert_eq!(value_len(request), Some(len), "value_len disagrees with the scanner");
                requests.push(start..start + len);
                start += len;
            }
            Ok(None) => return Framing { requests, error: None },
            Err(error) => return Framing { requests, error: Some(error) },
        }
    }
}

/// Frames `data` arriving in small reads, with one scanner that keeps its place between reads.
fn scan_in_reads(data: &[u8]) -> Framing {
    let mut scanner = Scanner::new(MAX_MESSAGE_BYTES);
    let mut requests = Vec::new();
    let (mut start, mut received) = (0, 0);
    for read_size in READ_SIZES.iter().cycle() {
        if received == data.len() {
            break;
        }
        received = (received + read_size).min(data.len());
        loop {
            match scanner.scan(&data[start..received]) {
                Ok(Some(len)) => {
                    requests.push(start..start + len);
                    start += len;
                }
                Ok(None) => break,
                Err(error) => return Framing { requests, error: Some(error) },
            }
        }
    }
    Framing { requests, error: None }
}

/// Checks that a scanner with a small limit takes exactly the requests that fit in it.
fn check_small_limit(data: &[u8], requests: &[Range<usize>]) {
    for range in requests {
        let found = Scanner::new(SMALL_MESSAGE_BYTES).scan(&data[range.start..]);
        // Every value still expected takes at least one byte, so a request that fits is never
        // refused, and one that does not fit always is.
        let expected = if range.len() <= SMALL_MESSAGE_BYTES {
            Ok(Some(range.len()))
        } else {
            Err(ScanError::TooLarge { limit: SMALL_MESSAGE_BYTES })
        };
        assert_eq!(
            found, expected,
            "request at {range:?} under a {SMALL_MESSAGE_BYTES}-byte limit"
        );
    }
}

/// One of the configurations every event is transformed with.
struct Variant {
    transform: Transform,
    scratch: Scratch,
    max_line_bytes: u64,
    /// Whether every line is a JSON object before the line limit.
    json_object_lines: bool,
}

/// The configurations: the default one, and others that reach every line format, both
/// treatments of long lines, and odd label keys. Each flag says whether every line of that
/// configuration is a JSON object.
fn configs() -> &'static [(LokiConfig, bool)] {
    static CONFIGS: OnceLock<Vec<(LokiConfig, bool)>> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let base = || LokiConfig {
            // A fixed label instead of this host's name, so that runs repeat on any machine.
            labels: [("job".to_owned(), "fuzz".to_owned())].into(),
            ..LokiConfig::default()
        };
        let strings = |items: &[&str]| items.iter().map(|&item| item.to_owned()).collect();
        vec![
            (base(), false),
            (
                LokiConfig {
                    drop_single_key: false,
                    label_keys: strings(&["container_name", "1.odd key", "__x", "log"]),
                    remove_keys: strings(&["source", "container_id", "container_name"]),
                    max_line_bytes: 64,
                    ..base()
                },
                true,
            ),
            (
                LokiConfig {
                    line_format: LineFormat::KeyValue,
                    label_keys: strings(&["source"]),
                    remove_keys: Vec::new(),
                    max_line_bytes: 32,
                    ..base()
                },
                false,
            ),
            (
                LokiConfig {
                    line_format: LineFormat::Raw,
                    drop_single_key: false,
                    label_keys: Vec::new(),
                    max_line_bytes: 16,
                    oversized_lines: OversizedLines::Drop,
                    ..base()
                },
                false,
            ),
        ]
    })
}

/// Decodes requests as one connection does, turning events into entries under every
/// configuration.
struct Decoder {
    /// Empty when events are only collected. Built for each input, not shared between
    /// inputs, so that every run starts from the same state and crashes reproduce.
    variants: Vec<Variant>,
    inflated: Vec<u8>,
    /// Time and record of every event decoded, in order.
    events: Vec<(i64, Vec<u8>)>,
}

impl Decoder {
    /// A decoder that turns every event into entries too if `transform`.
    fn new(transform: bool) -> Self {
        let configs = if transform { configs() } else { &[] };
        let variants = configs
            .iter()
            .map(|(config, json_object_lines)| Variant {
                transform: Transform::new(config),
                scratch: Scratch::default(),
                max_line_bytes: config.max_line_bytes,
                json_object_lines: *json_object_lines,
            })
            .collect();
        Self { variants, inflated: Vec::new(), events: Vec::new() }
    }

    /// Decodes one request and transforms its events; returns the number of events.
    fn request(&mut self, bytes: &[u8]) -> Result<u64, DecodeError> {
        let request = decode::parse(bytes)?;
        let Self { variants, inflated, events } = self;
        let events_before = events.len();
        let count = request.for_each_event(inflated, MAX_DECOMPRESSED_BYTES, |event| {
            assert!(event.timestamp_ns >= 0, "negative time {}", event.timestamp_ns);
            assert_eq!(value_len(event.record), Some(event.record.len()), "record is one value");
            events.push((event.timestamp_ns, event.record.to_vec()));
            variants.iter_mut().for_each(|variant| transform(variant, event));
            Ok::<_, DecodeError>(())
        })?;
        let seen = events.len() - events_before;
        assert_eq!(count, seen as u64, "event count differs from the events seen");
        Ok(count)
    }
}

/// Turns one event into an entry under `variant` and checks the result. A record the variant
/// cannot render (a map keyed by a container) is an error the server reports, not a bug.
fn transform(variant: &mut Variant, event: Event<'_>) {
    let Ok(mut entry) = variant.transform.entry(event, &mut variant.scratch) else {
        return;
    };
    assert_eq!(entry.timestamp_ns, event.timestamp_ns, "the entry keeps the event's time");
    if variant.json_object_lines {
        check_json_object(&entry.line);
    }
    check_entry(&variant.transform, variant.max_line_bytes, &mut entry);
}

/// Checks the labels of `entry` and applies the line limit, checking what it did.
fn check_entry(transform: &Transform, max_line_bytes: u64, entry: &mut Entry) {
    for (name, _) in entry.stream.pairs() {
        assert!(is_valid_name(name), "label name {name:?} is invalid");
    }
    let original = entry.line.clone();
    let limit = usize::try_from(max_line_bytes).unwrap_or(usize::MAX);
    let outcome = transform.limit_line(entry);
    match outcome {
        LineLimit::Fits => assert!(original.len() <= limit && entry.line == original),
        LineLimit::Truncated => {
            assert!(original.len() > limit, "a line within the limit was cut");
            assert!(entry.line.len() <= limit, "a cut line is still too long");
            assert!(original.starts_with(&entry.line), "a cut line is not a prefix");
            // Cutting at a character boundary loses at most one character's worth of bytes.
            assert!(limit - entry.line.len() < 4, "cut {} bytes short", limit - entry.line.len());
        }
        LineLimit::Drop => assert!(original.len() > limit, "a line within the limit was dropped"),
    }
}

/// Checks that `line` is a JSON object. Nesting beyond serde_json's recursion limit is
/// skipped: that limit is the checker's, not a property of the line.
fn check_json_object(line: &str) {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(value) => assert!(value.is_object(), "line is JSON but not an object: {line}"),
        Err(error) if error.to_string().starts_with("recursion limit exceeded") => {}
        Err(error) => panic!("line is not JSON ({error}): {line}"),
    }
}

/// `[tag, bin(entries)]`, with `{"compressed": "gzip"}` as a third element if `gzip`.
fn packed_request(entries: &[u8], gzip: bool) -> Vec<u8> {
    let mut request = Vec::with_capacity(entries.len() + 32);
    rmp::encode::write_array_len(&mut request, if gzip { 3 } else { 2 })
        .expect("writing to a Vec cannot fail");
    rmp::encode::write_str(&mut request, "fuzz").expect("writing to a Vec cannot fail");
    rmp::encode::write_bin(&mut request, entries).expect("writing to a Vec cannot fail");
    if gzip {
        rmp::encode::write_map_len(&mut request, 1).expect("writing to a Vec cannot fail");
        rmp::encode::write_str(&mut request, "compressed").expect("writing to a Vec cannot fail");
        rmp::encode::write_str(&mut request, "gzip").expect("writing to a Vec cannot fail");
    }
    // The server frames every request before decoding it; these must frame whole.
    if request.len() <= MAX_MESSAGE_BYTES {
        let framed = Scanner::new(MAX_MESSAGE_BYTES).scan(&request);
        assert_eq!(framed, Ok(Some(request.len())), "a built request does not frame whole");
    }
    request
}

/// A record as Docker's fluentd driver sends it.
fn docker_record() -> Vec<u8> {
    let mut record = Vec::new();
    let pairs = [
        ("container_id", "0f3c9a2b7d1e"),
        ("container_name", "/wiki-js"),
        ("source", "stdout"),
        ("log", "GET /wiki/home 200"),
    ];
    rmp::encode::write_map_len(&mut record, pairs.len() as u32)
        .expect("writing to a Vec cannot fail");
    for (key, value) in pairs {
        rmp::encode::write_str(&mut record, key).expect("writing to a Vec cannot fail");
        rmp::encode::write_str(&mut record, value).expect("writing to a Vec cannot fail");
    }
    record
}
