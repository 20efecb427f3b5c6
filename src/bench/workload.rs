//! The load: Docker-shaped records for a few containers, encoded as forward requests before
//! any clock starts, the same bytes for the same seed.

use bytes::Bytes;
use fastrand::Rng;

use crate::forward::client::{Mode, OutgoingEvent, TimeFormat, encode_requests};

/// The time of every connection's first record (2025-11-24 16:00:00 UTC). A fixed time keeps
/// the bytes identical from run to run.
pub const FIRST_RECORD_SECONDS: i64 = 1_764_000_000;

/// Records each container writes per second of event time, so integer-second times repeat
/// within a stream as they do for a busy container.
const RECORDS_PER_EVENT_SECOND: u64 = 1000;

/// Events encoded at once in message mode, where each one is its own request anyway.
const MESSAGE_CHUNK_EVENTS: usize = 1024;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadSpec {
    /// Records in all, spread evenly over the connections.
    pub records: u64,
    /// Connections, one container each, as Docker opens them.
    pub connections: usize,
    /// How events are packed into requests.
    pub mode: Mode,
    /// Events per request in the forward, packed and compressed modes.
    pub events_per_request: usize,
    /// Bytes of each record's `log` value.
    pub line_bytes: usize,
    /// How event times are written.
    pub time_format: TimeFormat,
    /// Seed of every random choice.
    pub seed: u64,
}

/// Pre-encoded requests, one byte string per connection.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The concatenated requests each connection sends.
    pub connections: Vec<Bytes>,
    /// Records in all connections together.
    pub records: u64,
}

impl Workload {
    /// Generates and encodes the records, one thread per connection.
    ///
    /// # Panics
    ///
    /// When `spec.events_per_request` or `spec.connections` is zero.
    pub fn generate(spec: &WorkloadSpec) -> Self {
        assert!(spec.connections > 0, "at least one connection");
        assert!(spec.events_per_request > 0, "at least one event per request");
        let mut root = Rng::with_seed(spec.seed);
        let per_connection = spec.records / spec.connections as u64;
        let remainder = spec.records % spec.connections as u64;
        let plans: Vec<(usize, u64, Rng)> = (0..spec.connections)
            .map(|index| {
                let records = per_connection + u64::from((index as u64) < remainder);
                (index, records, root.fork())
            })
            .collect();
        let connections = std::thread::scope(|scope| {
            let workers: Vec<_> = plans
                .into_iter()
                .map(|(index, records, rng)| {
                    scope.spawn(move || encode_connection(spec, index, records, rng))
                })
                .collect();
            workers
                .into_iter()
                .map(|worker| worker.join().expect("encoding a connection does not panic"))
                .collect()
        });
        Self { connections, records: spec.records }
    }

    /// Bytes sent over all connections.
    pub fn wire_bytes(&self) -> u64 {
        self.connections.iter().map(|bytes| bytes.len() as u64).sum()
    }
}

/// One container: the identity Docker puts in each of its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The full 64-hex container id.
    pub id: String,
    /// The name with Docker's leading slash, `/app-N`.
    pub name: String,
}

impl Container {
    /// Container number `index` with a random id.
    pub fn new(index: usize, rng: &mut Rng) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let id = (0..64).map(|_| char::from(HEX[rng.usize(..HEX.len())])).collect();
        Self { id, name: format!("/app-{index}") }
    }

    /// The tag Docker gives the container's events by default: the short id.
    pub fn tag(&self) -> &str {
        &self.id[..12]
    }
}

/// A record as Docker's fluentd driver writes it: a msgpack map of `container_id`,
/// `container_name`, `source` and `log`, all strings.
pub fn docker_record(container: &Container, line: &str) -> Vec<u8> {
    encode_record(&[
        ("container_id", &container.id),
        ("container_name", &container.name),
        ("source", "stdout"),
        ("log", line),
    ])
}

/// A msgpack map of string keys and string values, in the given order.
pub fn encode_record(fields: &[(&str, &str)]) -> Vec<u8> {
    let len = fields.iter().map(|(key, value)| key.len() + value.len() + 10);
    let mut record = Vec::with_capacity(len.sum::<usize>() + 5);
    rmp::encode::write_map_len(&mut record, fields.len() as u32)
        .expect("writing to a Vec cannot fail");
    for (key, value) in fields {
        rmp::encode::write_str(&mut record, key).expect("writing to a Vec cannot fail");
        rmp::encode::write_str(&mut record, value).expect("writing to a Vec cannot fail");
    }
    record
}

/// A line of `len` random printable ASCII characters, as an application might print.
pub fn printable_line(rng: &mut Rng, len: usize) -> String {
    (0..len).map(|_| char::from(rng.u8(b' '..=b'~'))).collect()
}

/// Encodes every request of connection `index`.
fn encode_connection(spec: &WorkloadSpec, index: usize, records: u64, mut rng: Rng) -> Bytes {
    let container = Container::new(index, &mut rng);
    let chunk_events = match spec.mode {
        Mode::Message => MESSAGE_CHUNK_EVENTS,
        Mode::Forward | Mode::Packed | Mode::Compressed => spec.events_per_request,
    };
    let estimate = records as usize * (spec.line_bytes + container.id.len() + 64);
    let mut out = Vec::with_capacity(estimate);
    let mut events = Vec::with_capacity(chunk_events);
    let mut sequence = 0;
    while sequence < records {
        events.clear();
        let end = records.min(sequence + chunk_events as u64);
        for number in sequence..end {
            let seconds = FIRST_RECORD_SECONDS + (number / RECORDS_PER_EVENT_SECOND) as i64;
            let line = printable_line(&mut rng, spec.line_bytes);
            events.push(OutgoingEvent {
                timestamp_ns: seconds * 1_000_000_000,
                record: docker_record(&container, &line),
            });
        }
        encode_requests(container.tag(), spec.mode, spec.time_format, &events, None, &mut out);
        sequence = end;
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::decode::{DecodeError, Request, parse};
    use crate::msgpack::Scanner;

    fn spec(mode: Mode) -> WorkloadSpec {
        WorkloadSpec {
            records: 2_501,
            connections: 3,
            mode,
            events_per_request: 100,
            line_bytes: 50,
            time_format: TimeFormat::Integer,
            seed: 7,
        }
    }

    /// Decodes every request of one connection and returns its events' records.
    fn records_of(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut scanner = Scanner::new(bytes.len());
        let mut records = Vec::new();
        let mut inflated = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let len = scanner.scan(rest).unwrap().expect("complete request");
            let request = parse(&rest[..len]).unwrap();
            assert!(matches!(request, Request::Events { .. }));
            request
                .for_each_event(&mut inflated, usize::MAX, |event| {
                    records.push(event.record.to_vec());
                    Ok::<_, DecodeError>(())
                })
                .unwrap();
            rest = &rest[len..];
        }
        records
    }

    #[test]
    fn every_mode_carries_the_same_records() {
        let message = Workload::generate(&spec(Mode::Message));
        assert_eq!(message.connections.len(), 3);
        for mode in [Mode::Forward, Mode::Packed, Mode::Compressed] {
            let other = Workload::generate(&spec(mode));
            for (a, b) in message.connections.iter().zip(&other.connections) {
                assert_eq!(records_of(a), records_of(b), "{mode:?}");
            }
        }
        let counts: Vec<usize> =
            message.connections.iter().map(|bytes| records_of(bytes).len()).collect();
        assert_eq!(counts, [834, 834, 833]);
    }

    #[test]
    fn the_seed_decides_the_bytes() {
        let first = Workload::generate(&spec(Mode::Message));
        let again = Workload::generate(&spec(Mode::Message));
        assert_eq!(first.connections, again.connections);
        let other_seed = Workload::generate(&WorkloadSpec { seed: 8, ..spec(Mode::Message) });
        assert_ne!(first.connections, other_seed.connections);
    }

    #[test]
    fn records_are_shaped_like_dockers() {
        let mut rng = Rng::with_seed(1);
        let container = Container::new(4, &mut rng);
        let line = printable_line(&mut rng, 200);
        assert_eq!(line.len(), 200);
        assert!(line.bytes().all(|byte| (b' '..=b'~').contains(&byte)));
        let record: serde_json::Value =
            rmp_serde::from_slice(&docker_record(&container, &line)).unwrap();
        assert_eq!(record["container_name"], "/app-4");
        assert_eq!(record["source"], "stdout");
        assert_eq!(record["log"], line.as_str());
        let id = record["container_id"].as_str().unwrap();
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|byte| byte.is_ascii_hexdigit()));
    }
}
