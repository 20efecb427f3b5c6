//! Entry points of the fuzz targets in `fuzz/`, kept in the library so that `cargo test` can
//! replay the checked-in corpus through exactly the code the fuzzers run.
//!
//! Each function takes arbitrary bytes, feeds them to the parsers that read untrusted input the
//! way the server does, and panics only when an invariant breaks; errors from the parsers are
//! expected and ignored. Not part of the supported API.

#![doc(hidden)]

mod disk_segment;
mod fluent_bit;
mod handshake;

pub use disk_segment::{SeedEntry, disk_record, disk_segment};
pub use fluent_bit::fluent_bit_config;
pub use handshake::{
    HANDSHAKE_AUTH_SALT, HANDSHAKE_NONCE, HANDSHAKE_SHARED_KEY, HANDSHAKE_USER, handshake_ping,
    valid_ping,
};

use std::io::Write;
use std::ops::Range;
use std::sync::OnceLock;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use tokio::time::Instant;

use crate::config::{Config, LineFormat, LokiConfig};
use crate::forward::decode::{self, DecodeError, Event};
use crate::loki::labels::is_valid_name;
use crate::loki::tenant::is_valid_tenant_id;
use crate::msgpack::{Reader, ScanError, Scanner, Value, value_len};
use crate::transform::partial::{
    JoinedLine, PARTIAL_ID, PARTIAL_LAST, PARTIAL_MESSAGE, PARTIAL_ORDINAL, PartialAssembler,
};
use crate::transform::{Entry, LineLimit, Scratch, Transform, Transformed};

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
/// framing, request decoding (gzip included), the joining of Docker's split lines and the
/// record-to-entry transform under several configurations, with the line limit applied.
///
/// Beyond not panicking, it checks that the framing finds the same requests whether the bytes
/// arrive at once or in small reads, that it refuses exactly the requests over a smaller limit,
/// that an event count matches the events seen, that a record's layout gives the entry a walk
/// of the record gives, that label and structured metadata names and
/// tenants are valid, that the line limit holds, that lines rendered as JSON objects are JSON,
/// and that joined lines keep no partial keys and stay within their limit.
pub fn forward_stream(data: &[u8]) {
    let framing = scan_at_once(data, MAX_MESSAGE_BYTES);
    assert_eq!(scan_in_reads(data), framing, "framing depends on how the bytes arrive");
    check_small_limit(data, &framing.requests);
    check_parse_in_place(data, &framing.requests);
    let mut decoder = Decoder::new(true);
    for range in &framing.requests {
        // An error closes the connection, as in the server.
        if decoder.request(&data[range.clone()]).is_err() {
            break;
        }
    }
    decoder.close();
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
    let mut decoder = Decoder::new(true);
    let _ = decoder.request(&packed_request(data, true));
    decoder.close();

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
    from_compressed.close();
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
    let event = Event::new(1_700_000_000_000_000_001, &record);
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

/// Checks that parsing each request where it lies, with the rest of the stream after it, as the
/// server does for a request that is already whole, finds the end framing found, or the error
/// that decoding the framed request finds.
fn check_parse_in_place(data: &[u8], requests: &[Range<usize>]) {
    for range in requests {
        let in_place = decode::parse_prefix(&data[range.start..]).map(|(_, len)| len);
        let framed = decode::parse(&data[range.clone()]).map(|_| range.len());
        assert_eq!(
            in_place.map_err(|error| error.reason()),
            framed.map_err(|error| error.reason()),
            "parsing in place disagrees with framing at {range:?}"
        );
    }
}

/// The `[loki]` sections every event is transformed under: the defaults, and others that reach
/// every line format, both treatments of long lines, unjoined and cut split lines, odd label
/// keys, `label_map`, structured metadata, the tenant key and the stream cap. Written as TOML,
/// so that they pass the same checks as a real configuration.
const LOKI_CONFIGS: [&str; 4] = [
    "labels = { job = \"fuzz\" }",
    r#"
    labels = { job = "fuzz" }
    drop_single_key = false
    label_keys = ["container_name", "1.odd key", "__x", "log"]
    remove_keys = ["source", "container_id", "container_name"]
    max_line_bytes = 64
    reassemble_partials = false
    "#,
    r#"
    labels = { job = "fuzz" }
    line_format = "key_value"
    label_keys = ["source"]
    remove_keys = []
    label_map = { "kubernetes.labels.app" = "app", "a.b" = "a_b", log = "log_label" }
    structured_metadata_keys = ["container_id", "1.odd key"]
    tenant_key = "tenant"
    max_line_bytes = 32
    partial_timeout = "5ms"
    max_partial_bytes = 8
    "#,
    r#"
    labels = { job = "fuzz" }
    line_format = "raw"
    drop_single_key = false
    label_keys = ["log"]
    max_streams = 2
    max_line_bytes = 16
    oversized_lines = "drop"
    "#,
];

/// One `[loki]` configuration of [`LOKI_CONFIGS`], parsed.
struct LokiVariant {
    config: LokiConfig,
    /// Whether every line is a JSON object before the line limit.
    json_object_lines: bool,
}

/// The parsed [`LOKI_CONFIGS`].
fn loki_variants() -> &'static [LokiVariant] {
    static VARIANTS: OnceLock<Vec<LokiVariant>> = OnceLock::new();
    VARIANTS.get_or_init(|| {
        LOKI_CONFIGS
            .iter()
            .map(|section| {
                let config = Config::from_toml(&format!("[loki]\n{section}"))
                    .unwrap_or_else(|error| panic!("fuzzing configuration: {error}"))
                    .loki;
                let json_object_lines =
                    config.line_format == LineFormat::Json && !config.drop_single_key;
                LokiVariant { config, json_object_lines }
            })
            .collect()
    })
}

/// One configuration's connection state: what `forward::connection` keeps per connection.
struct Variant {
    transform: Transform,
    scratch: Scratch,
    partials: Option<PartialAssembler>,
    joined: Vec<JoinedLine>,
    /// Set once an event is refused: the server closes the connection then.
    closed: bool,
    loki: &'static LokiVariant,
}

impl Variant {
    fn new(loki: &'static LokiVariant) -> Self {
        let transform = Transform::new(&loki.config);
        let partials = transform.partial_limits().map(PartialAssembler::new);
        let (scratch, joined) = (Scratch::default(), Vec::new());
        Self { transform, scratch, partials, joined, closed: false, loki }
    }

    /// Turns one event into entries as the connection does: an entry, or a part of a split
    /// line for the assembler, which may complete lines.
    fn event(&mut self, event: Event<'_>, now: Instant) {
        if self.closed {
            return;
        }
        if event.layout.is_some() {
            self.check_layout(event);
        }
        let done = match self.transform.entry_or_fragment(event, &mut self.scratch) {
            Ok(Transformed::Entry(entry)) => {
                self.check(event.timestamp_ns, entry);
                Ok(())
            }
            Ok(Transformed::Fragment) => self.fragment(event, now),
            Err(error) => Err(error),
        };
        if done.is_err() {
            self.close();
        }
    }

    /// The layout the decoder noted must give the entry (or error) a walk of the record gives.
    fn check_layout(&self, event: Event<'_>) {
        let transform = |event| {
            let result = self.transform.entry_or_fragment(event, &mut Scratch::default());
            result.map_err(|error| error.reason())
        };
        let walked = transform(Event { layout: None, ..event });
        assert_eq!(transform(event), walked, "the record's layout changed its entry");
    }

    fn fragment(&mut self, event: Event<'_>, now: Instant) -> Result<(), DecodeError> {
        let taken = match &mut self.partials {
            Some(partials) => partials.add(event, now, &mut self.joined)?,
            None => false,
        };
        if !taken {
            let entry = self.transform.entry(event, &mut self.scratch)?;
            self.check(event.timestamp_ns, entry);
        }
        self.joined_lines()
    }

    /// Ships the lines that waited too long for their next part, as the connection does when
    /// their deadline passes.
    fn expire(&mut self, now: Instant) {
        let Some(partials) = &mut self.partials else {
            return;
        };
        let due = partials.next_deadline().is_some_and(|deadline| deadline <= now);
        if self.closed || !due {
            return;
        }
        let expired = partials.expire(now, &mut self.joined);
        if expired.and_then(|()| self.joined_lines()).is_err() {
            self.close();
        }
    }

    /// Ships the lines still being joined, as the connection does when it ends.
    fn close(&mut self) {
        self.closed = true;
        if let Some(partials) = &mut self.partials {
            let closed = partials.close(&mut self.joined);
            let _ = closed.and_then(|()| self.joined_lines());
        }
    }

    /// Turns the lines the assembler finished into entries.
    fn joined_lines(&mut self) -> Result<(), DecodeError> {
        for line in std::mem::take(&mut self.joined) {
            check_joined(&line, self.loki.config.max_partial_bytes);
            let entry = self.transform.entry(line.event(), &mut self.scratch)?;
            self.check(line.timestamp_ns, entry);
        }
        Ok(())
    }

    fn check(&self, timestamp_ns: i64, mut entry: Entry) {
        assert_eq!(entry.timestamp_ns, timestamp_ns, "the entry keeps the event's time");
        if self.loki.json_object_lines {
            check_json_object(&entry.line.to_text());
        }
        check_entry(&self.transform, self.loki.config.max_line_bytes, &mut entry);
    }
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
    /// The clock of split-line timeouts: it moves 1 ms per event from the decoder's start,
    /// so that runs repeat.
    start: Instant,
}

impl Decoder {
    /// A decoder that turns every event into entries too if `transform`.
    fn new(transform: bool) -> Self {
        let configs = if transform { loki_variants() } else { &[] };
        let variants = configs.iter().map(Variant::new).collect();
        let start = Instant::from_std(std::time::Instant::now());
        Self { variants, inflated: Vec::new(), events: Vec::new(), start }
    }

    /// Decodes one request and transforms its events; returns the number of events.
    fn request(&mut self, bytes: &[u8]) -> Result<u64, DecodeError> {
        let request = decode::parse(bytes)?;
        let Self { variants, inflated, events, start } = self;
        let clock = |events: usize| *start + Duration::from_millis(events as u64);
        let events_before = events.len();
        let decoded = request.for_each_event(inflated, MAX_DECOMPRESSED_BYTES, |event| {
            assert!(event.timestamp_ns >= 0, "negative time {}", event.timestamp_ns);
            assert_eq!(value_len(event.record), Some(event.record.len()), "record is one value");
            events.push((event.timestamp_ns, event.record.to_vec()));
            let now = clock(events.len());
            variants.iter_mut().for_each(|variant| variant.event(event, now));
            Ok::<_, DecodeError>(())
        });
        let now = clock(events.len());
        variants.iter_mut().for_each(|variant| variant.expire(now));
        let count = decoded?;
        let seen = events.len() - events_before;
        assert_eq!(count, seen as u64, "event count differs from the events seen");
        Ok(count)
    }

    /// Ends the connection: lines still being joined are shipped.
    fn close(mut self) {
        self.variants.iter_mut().for_each(Variant::close);
    }
}

/// Checks a line joined from Docker's parts: one map, its text within the limit in one `log`
/// key, and none of the partial keys left.
fn check_joined(line: &JoinedLine, max_bytes: u64) {
    assert!(line.timestamp_ns >= 0, "negative time {}", line.timestamp_ns);
    assert_eq!(value_len(&line.record), Some(line.record.len()), "joined record is one value");
    let mut reader = Reader::new(&line.record);
    let Ok(Value::Map(pairs)) = reader.read() else {
        panic!("joined record is not a map");
    };
    let partial_keys = [PARTIAL_MESSAGE, PARTIAL_ID, PARTIAL_ORDINAL, PARTIAL_LAST];
    let mut logs = 0;
    for _ in 0..pairs {
        let key = reader.read_raw().expect("a complete map");
        let value = reader.read_raw().expect("a complete map");
        let Ok(Value::Str(name) | Value::Bin(name)) = Reader::new(key).read() else {
            continue;
        };
        assert!(!partial_keys.iter().any(|key| key.as_bytes() == name), "partial key left");
        if name == b"log" {
            logs += 1;
            let Ok(Value::Str(text)) = Reader::new(value).read() else {
                panic!("joined log is not a string");
            };
            assert!(text.len() as u64 <= max_bytes, "joined {} bytes", text.len());
        }
    }
    assert_eq!(logs, 1, "a joined record has one log key");
}

/// Checks the labels of `entry` and applies the line limit, checking what it did.
fn check_entry(transform: &Transform, max_line_bytes: u64, entry: &mut Entry) {
    for (name, _) in entry.stream.pairs() {
        assert!(is_valid_name(name), "label name {name:?} is invalid");
    }
    for (name, _) in entry.stream.structured_metadata() {
        assert!(is_valid_name(name), "structured metadata name {name:?} is invalid");
    }
    if let Some(tenant) = entry.stream.tenant() {
        assert!(is_valid_tenant_id(tenant), "tenant {tenant:?} is invalid");
    }
    let original = entry.line.clone();
    let limit = usize::try_from(max_line_bytes).unwrap_or(usize::MAX);
    let outcome = transform.limit_line(entry);
    match outcome {
        LineLimit::Fits => assert!(original.len() <= limit && entry.line == original),
        LineLimit::Truncated => {
            assert!(original.len() > limit, "a line within the limit was cut");
            assert!(entry.line.len() <= limit, "a cut line is still too long");
            assert!(
                original.as_bytes().starts_with(entry.line.as_bytes()),
                "a cut line is not a prefix"
            );
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
