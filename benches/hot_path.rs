//! Throughput of each stage of fwd2loki's hot path on Docker-shaped records with 200-byte,
//! 1 KiB and 16 KiB lines: framing, decoding, the record-to-entry transform, and batching plus
//! push encoding. Each stage is measured in records per second, and again in bytes per second
//! in a group with the `_bytes` suffix.
//!
//! Run with `cargo bench --bench hot_path`; a filter such as `-- framing/` picks one stage.

use std::hint::black_box;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use criterion::{
    BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use fastrand::Rng;
use fwd2loki::bench::workload::{Container, docker_record, encode_record, printable_line};
use fwd2loki::buffer::MemoryCharge;
use fwd2loki::config::LokiConfig;
use fwd2loki::forward::client::{Mode, OutgoingEvent, TimeFormat, encode_requests};
use fwd2loki::forward::decode::{self, DecodeError, Event};
use fwd2loki::loki::batch::Batcher;
use fwd2loki::loki::encode::PushEncoder;
use fwd2loki::loki::labels::StreamLabels;
use fwd2loki::msgpack::{Reader, Scanner};
use fwd2loki::transform::{Entry, Scratch, Transform};

/// Line lengths measured, with the name each has in benchmark ids.
const LINE_SIZES: [(&str, usize); 3] = [("200B", 200), ("1KiB", 1024), ("16KiB", 16 * 1024)];
/// Every request mode, each with its name in benchmark ids.
const MODES: [(&str, Mode); 4] = [
    ("message", Mode::Message),
    ("forward", Mode::Forward),
    ("packed", Mode::Packed),
    ("compressed", Mode::Compressed),
];
/// Records in each framing and decoding input: two forward requests of 1000 events each.
const RECORDS: usize = 2000;
/// Events per request in the forward, packed and compressed modes.
const EVENTS_PER_REQUEST: usize = 1000;
/// Records transformed per iteration.
const TRANSFORM_RECORDS: usize = 1000;
/// Line bytes of one batch, fwd2loki's default `batch_size`.
const BATCH_BYTES: usize = 1 << 20;
/// Streams in one batch, as from eight containers.
const BATCH_STREAMS: usize = 8;
/// Event time of the records: integer seconds, as Docker sends them.
const FIRST_SECONDS: i64 = 1_764_000_000;

/// Records of one container with lines of `line_bytes`, `extra` fields added to each.
fn records(line_bytes: usize, count: usize, extra: &[(&str, &str)]) -> Vec<OutgoingEvent> {
    let mut rng = Rng::with_seed(line_bytes as u64);
    let container = Container::new(1, &mut rng);
    (0..count)
        .map(|index| {
            let line = printable_line(&mut rng, line_bytes);
            let record = if extra.is_empty() {
                docker_record(&container, &line)
            } else {
                let mut fields = vec![
                    ("container_id", container.id.as_str()),
                    ("container_name", container.name.as_str()),
                    ("source", "stdout"),
                    ("log", line.as_str()),
                ];
                fields.extend_from_slice(extra);
                encode_record(&fields)
            };
            OutgoingEvent {
                timestamp_ns: (FIRST_SECONDS + index as i64 / 1000) * 1_000_000_000,
                record,
            }
        })
        .collect()
}

/// A connection's bytes in one mode, and where each request lies in them.
struct Requests {
    bytes: Vec<u8>,
    requests: Vec<Range<usize>>,
}

impl Requests {
    fn encode(mode: Mode, events: &[OutgoingEvent]) -> Self {
        let mut bytes = Vec::new();
        for chunk in events.chunks(EVENTS_PER_REQUEST) {
            encode_requests("0123456789ab", mode, TimeFormat::Integer, chunk, None, &mut bytes);
        }
        let mut requests = Vec::new();
        let mut scanner = Scanner::new(bytes.len());
        let mut offset = 0;
        while offset < bytes.len() {
            let len = scanner
                .scan(&bytes[offset..])
                .expect("the client writes valid msgpack")
                .expect("the buffer holds whole requests");
            requests.push(offset..offset + len);
            offset += len;
        }
        Self { bytes, requests }
    }
}

/// Finds the end of every request, as a connection does on its read buffer.
fn frame_all(bytes: &[u8]) -> usize {
    let mut scanner = Scanner::new(bytes.len());
    let mut offset = 0;
    let mut requests = 0;
    while offset < bytes.len() {
        offset += scanner.scan(&bytes[offset..]).expect("valid msgpack").expect("whole requests");
        requests += 1;
    }
    requests
}

/// Parses every request and reads each of its events.
fn decode_all(input: &Requests, inflated: &mut Vec<u8>) -> u64 {
    input
        .requests
        .iter()
        .map(|range| {
            let request = decode::parse(&input.bytes[range.clone()]).expect("a known shape");
            request
                .for_each_event(inflated, usize::MAX, |event| {
                    black_box(event);
                    Ok::<_, DecodeError>(())
                })
                .expect("valid events")
        })
        .sum()
}

/// Inputs of the framing and decoding stages, per mode and line size.
struct Case {
    id: String,
    input: Requests,
    records: u64,
}

fn request_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (size_name, line_bytes) in LINE_SIZES {
        let events = records(line_bytes, RECORDS, &[]);
        for (mode_name, mode) in MODES {
            cases.push(Case {
                id: format!("{mode_name}/{size_name}"),
                input: Requests::encode(mode, &events),
                records: RECORDS as u64,
            });
        }
    }
    cases
}

fn framing(c: &mut Criterion) {
    let cases = request_cases();
    for (group_name, by_bytes) in [("framing", false), ("framing_bytes", true)] {
        let mut group = c.benchmark_group(group_name);
        group.sampling_mode(SamplingMode::Flat);
        for case in &cases {
            group.throughput(throughput(by_bytes, case.records, case.input.bytes.len()));
            group.bench_function(BenchmarkId::from_parameter(&case.id), |b| {
                b.iter(|| frame_all(black_box(&case.input.bytes)));
            });
        }
        group.finish();
    }
}

fn decoding(c: &mut Criterion) {
    let cases = request_cases();
    let mut inflated = Vec::new();
    for (group_name, by_bytes) in [("decoding", false), ("decoding_bytes", true)] {
        let mut group = c.benchmark_group(group_name);
        group.sampling_mode(SamplingMode::Flat);
        for case in &cases {
            group.throughput(throughput(by_bytes, case.records, case.input.bytes.len()));
            group.bench_function(BenchmarkId::from_parameter(&case.id), |b| {
                b.iter(|| decode_all(black_box(&case.input), &mut inflated));
            });
        }
        group.finish();
    }
}

/// The default configuration, with a fixed hostname label so that runs on any machine match.
fn loki_config() -> LokiConfig {
    let mut config = LokiConfig::default();
    config.labels.insert("hostname".into(), "bench".into());
    config
}

fn transform(c: &mut Criterion) {
    let transform = Transform::new(&loki_config());
    // With the defaults a Docker record keeps one key, so its line is the plain text; an
    // extra key makes the line a JSON object of `log` and that key.
    let shapes = [("plain", &[][..]), ("json", &[("env", "production")][..])];
    let mut cases = Vec::new();
    for (size_name, line_bytes) in LINE_SIZES {
        for (shape_name, extra) in shapes {
            let events = records(line_bytes, TRANSFORM_RECORDS, extra);
            let record_bytes = events.iter().map(|event| event.record.len()).sum();
            // The decoder hands each record on with its layout, found while framing it.
            let layouts: Vec<_> = events
                .iter()
                .map(|event| Reader::new(&event.record).read_map().expect("a record").1)
                .collect();
            cases.push((format!("{shape_name}/{size_name}"), events, layouts, record_bytes));
        }
    }
    for (group_name, by_bytes) in [("transform", false), ("transform_bytes", true)] {
        let mut group = c.benchmark_group(group_name);
        group.sampling_mode(SamplingMode::Flat);
        for (id, events, layouts, record_bytes) in &cases {
            group.throughput(throughput(by_bytes, events.len() as u64, *record_bytes));
            let mut scratch = Scratch::default();
            group.bench_function(BenchmarkId::from_parameter(id), |b| {
                b.iter(|| {
                    for (event, layout) in events.iter().zip(layouts) {
                        let event = Event {
                            timestamp_ns: event.timestamp_ns,
                            record: &event.record,
                            layout: *layout,
                        };
                        black_box(transform.entry(event, &mut scratch).expect("valid record"));
                    }
                });
            });
        }
        group.finish();
    }
}

/// Entries filling one batch of `BATCH_BYTES` line bytes, spread over `BATCH_STREAMS`
/// containers' streams in arrival order.
fn batch_entries(line_bytes: usize) -> Vec<Entry> {
    let streams: Vec<Arc<StreamLabels>> = (0..BATCH_STREAMS)
        .map(|index| {
            Arc::new(StreamLabels::new([
                ("container_name", format!("/app-{index}")),
                ("hostname", "bench".to_owned()),
                ("job", "fluent-bit".to_owned()),
            ]))
        })
        .collect();
    let mut rng = Rng::with_seed(line_bytes as u64);
    (0..BATCH_BYTES / line_bytes)
        .map(|index| Entry {
            stream: Arc::clone(&streams[index % BATCH_STREAMS]),
            timestamp_ns: (FIRST_SECONDS + index as i64 / 1000) * 1_000_000_000,
            line: printable_line(&mut rng, line_bytes).into(),
        })
        .collect()
}

fn batch_encode(c: &mut Criterion) {
    let cases: Vec<(&str, Vec<Entry>)> = LINE_SIZES
        .iter()
        .map(|&(size_name, line_bytes)| (size_name, batch_entries(line_bytes)))
        .collect();
    let mut encoder = PushEncoder::default();
    for (group_name, by_bytes) in [("batch_encode", false), ("batch_encode_bytes", true)] {
        let mut group = c.benchmark_group(group_name);
        group.sampling_mode(SamplingMode::Flat);
        for (size_name, entries) in &cases {
            let line_bytes = entries.iter().map(|entry| entry.line.len()).sum();
            group.throughput(throughput(by_bytes, entries.len() as u64, line_bytes));
            group.bench_function(BenchmarkId::from_parameter(size_name), |b| {
                b.iter_batched(
                    || entries.clone(),
                    |entries| {
                        let mut batcher = Batcher::new(
                            BATCH_BYTES,
                            Duration::from_secs(1),
                            Duration::from_millis(20),
                        );
                        let now = tokio::time::Instant::now();
                        for entry in entries {
                            let full = batcher.add(entry, MemoryCharge::default(), now);
                            assert!(full.is_none(), "the entries fill exactly one batch");
                        }
                        let mut batch = batcher.take().expect("entries were added");
                        batch.sort();
                        encoder.encode(batch.streams()).len()
                    },
                    BatchSize::LargeInput,
                );
            });
        }
        group.finish();
    }
}

fn throughput(by_bytes: bool, records: u64, bytes: usize) -> Throughput {
    if by_bytes { Throughput::Bytes(bytes as u64) } else { Throughput::Elements(records) }
}

criterion_group! {
    name = hot_path;
    // Short runs without plots (drawing them takes longer than measuring), so that the whole
    // file finishes in a few minutes on two cores.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(800))
        .without_plots();
    targets = framing, decoding, transform, batch_encode
}
criterion_main!(hot_path);
