//! The format of a disk buffer record: one group of entries, framed and checksummed.
//!
//! ```text
//! magic "F2LR" | payload length (u32 LE) | CRC-32 of the payload (u32 LE) | payload
//! ```
//!
//! The payload is msgpack: the label sets of the group's streams, then each entry as
//! `[stream index, timestamp ns, line]`, then each stream's tenant and structured metadata. The
//! magic lets a reader find the next record after a corrupt one; the checksum tells a damaged
//! record from a good one.
//!
//! Records written before tenants and structured metadata existed end after the entries; they
//! are read as having neither.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::loki::labels::StreamLabels;
use crate::transform::Entry;

/// Marks the start of every record.
pub(crate) const MAGIC: [u8; 4] = *b"F2LR";
/// Bytes before the payload.
pub(crate) const HEADER_BYTES: usize = 12;

/// Label sets already read, shared by the entries of a stream.
pub(crate) type KnownStreams = HashSet<Arc<StreamLabels>>;

/// Most label sets remembered in [`KnownStreams`]; beyond it the set starts over.
const KNOWN_STREAMS_LIMIT: usize = 4096;

/// A stream's tenant and structured metadata, as stored; `S` is `&str` when writing and
/// `String` when reading.
#[derive(Serialize, Deserialize)]
struct StoredDetails<S> {
    tenant: Option<S>,
    structured_metadata: Vec<(S, S)>,
}

#[derive(Serialize)]
struct StoredGroupRef<'a> {
    streams: Vec<Vec<(&'a str, &'a str)>>,
    entries: Vec<(u32, i64, Cow<'a, str>)>,
    /// Per stream, in the order of `streams`; empty when no stream has either.
    details: Vec<StoredDetails<&'a str>>,
}

#[derive(Deserialize)]
struct StoredGroup {
    streams: Vec<Vec<(String, String)>>,
    entries: Vec<(u32, i64, String)>,
    #[serde(default)]
    details: Vec<StoredDetails<String>>,
}

/// Appends the record for `entries` to `out`.
pub(crate) fn encode(entries: &[Entry], out: &mut Vec<u8>) {
    let mut streams: Vec<&Arc<StreamLabels>> = Vec::new();
    let mut stored = StoredGroupRef {
        streams: Vec::new(),
        entries: Vec::with_capacity(entries.len()),
        details: Vec::new(),
    };
    for entry in entries {
        let index = match streams.iter().position(|known| Arc::ptr_eq(known, &entry.stream)) {
            Some(index) => index,
            None => {
                streams.push(&entry.stream);
                stored.streams.push(entry.stream.pairs().collect());
                streams.len() - 1
            }
        };
        stored.entries.push((index as u32, entry.timestamp_ns, entry.line.to_text()));
    }
    let has_details = |stream: &&Arc<StreamLabels>| {
        stream.tenant().is_some() || stream.structured_metadata().len() > 0
    };
    if streams.iter().any(has_details) {
        stored.details = streams
            .iter()
            .map(|stream| StoredDetails {
                tenant: stream.tenant().map(|tenant| &**tenant),
                structured_metadata: stream.structured_metadata().collect(),
            })
            .collect();
    }
    let payload = rmp_serde::to_vec(&stored).expect("entries encode as msgpack");
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// What was found at the start of a byte range of a segment.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// A good record of `len` bytes and its entries.
    Record { entries: Vec<Entry>, len: usize },
    /// The bytes end inside a record: more may come, or the last write was torn.
    Incomplete,
    /// Damaged bytes; the next record may start `skip` bytes further.
    Corrupt { skip: usize },
}

/// Reads the record at the start of `bytes`. Label sets are shared through `streams`.
pub(crate) fn parse(bytes: &[u8], streams: &mut KnownStreams) -> Parsed {
    if bytes.len() < HEADER_BYTES {
        return if MAGIC.starts_with(&bytes[..bytes.len().min(4)]) {
            Parsed::Incomplete
        } else {
            Parsed::Corrupt { skip: next_magic(bytes) }
        };
    }
    if bytes[..4] != MAGIC {
        return Parsed::Corrupt { skip: next_magic(bytes) };
    }
    let len = u32::from_le_bytes(bytes[4..8].try_into().expect("four bytes")) as usize;
    let checksum = u32::from_le_bytes(bytes[8..12].try_into().expect("four bytes"));
    let Some(payload) = bytes.get(HEADER_BYTES..HEADER_BYTES + len) else {
        return Parsed::Incomplete;
    };
    if crc32fast::hash(payload) != checksum {
        return Parsed::Corrupt { skip: next_magic(bytes) };
    }
    let Ok(stored) = rmp_serde::from_slice::<StoredGroup>(payload) else {
        return Parsed::Corrupt { skip: next_magic(bytes) };
    };
    let mut details = stored.details.into_iter();
    let labels: Vec<Arc<StreamLabels>> = stored
        .streams
        .into_iter()
        .map(|pairs| {
            let (tenant, metadata) = details.next().map_or((None, Vec::new()), |details| {
                (details.tenant, details.structured_metadata)
            });
            let built = StreamLabels::new(pairs)
                .with_tenant(tenant.map(Arc::from))
                .with_structured_metadata(metadata);
            if let Some(known) = streams.get(&built) {
                return Arc::clone(known);
            }
            if streams.len() >= KNOWN_STREAMS_LIMIT {
                streams.clear();
            }
            let built = Arc::new(built);
            streams.insert(Arc::clone(&built));
            built
        })
        .collect();
    let mut entries = Vec::with_capacity(stored.entries.len());
    for (index, timestamp_ns, line) in stored.entries {
        let Some(stream) = labels.get(index as usize) else {
            return Parsed::Corrupt { skip: next_magic(bytes) };
        };
        entries.push(Entry { stream: Arc::clone(stream), timestamp_ns, line: line.into() });
    }
    Parsed::Record { entries, len: HEADER_BYTES + len }
}

/// Offset of the next possible record start after the first byte, or the end of `bytes`.
pub(crate) fn next_magic(bytes: &[u8]) -> usize {
    (1..bytes.len())
        .find(|&offset| MAGIC.starts_with(&bytes[offset..(offset + 4).min(bytes.len())]))
        .unwrap_or(bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<Entry> {
        let web = Arc::new(StreamLabels::new([("job", "a"), ("container_name", "/web")]));
        let db = Arc::new(StreamLabels::new([("job", "a"), ("container_name", "/db")]));
        vec![
            Entry { stream: Arc::clone(&web), timestamp_ns: 1, line: "one".into() },
            Entry { stream: db, timestamp_ns: 2, line: "two".into() },
            Entry { stream: web, timestamp_ns: -3, line: "three".into() },
        ]
    }

    fn parse_all(mut bytes: &[u8]) -> (Vec<Entry>, usize) {
        let mut streams = KnownStreams::new();
        let (mut found, mut corrupt) = (Vec::new(), 0);
        while !bytes.is_empty() {
            match parse(bytes, &mut streams) {
                Parsed::Record { entries, len } => {
                    found.extend(entries);
                    bytes = &bytes[len..];
                }
                Parsed::Incomplete => break,
                Parsed::Corrupt { skip } => {
                    corrupt += 1;
                    bytes = &bytes[skip..];
                }
            }
        }
        (found, corrupt)
    }

    #[test]
    fn records_round_trip() {
        let mut bytes = Vec::new();
        encode(&entries(), &mut bytes);
        encode(&entries()[..1], &mut bytes);
        let (found, corrupt) = parse_all(&bytes);
        assert_eq!(corrupt, 0);
        assert_eq!(found.len(), 4);
        assert_eq!(found[..3], entries()[..]);
        assert!(Arc::ptr_eq(&found[0].stream, &found[3].stream), "label sets are shared");
    }

    #[test]
    fn tenants_and_structured_metadata_round_trip() {
        let labels = StreamLabels::new([("job", "a")]);
        let detailed = Arc::new(
            labels
                .clone()
                .with_tenant(Some("team-a".into()))
                .with_structured_metadata([("container_id", "0f3c")]),
        );
        let plain = Arc::new(labels);
        let written = vec![
            Entry { stream: Arc::clone(&detailed), timestamp_ns: 1, line: "one".into() },
            Entry { stream: plain, timestamp_ns: 2, line: "two".into() },
        ];
        let mut bytes = Vec::new();
        encode(&written, &mut bytes);
        let (found, corrupt) = parse_all(&bytes);
        assert_eq!(corrupt, 0);
        assert_eq!(found, written);
        assert_eq!(found[0].stream.tenant().map(|tenant| &**tenant), Some("team-a"));
    }

    #[test]
    fn records_of_the_first_format_are_still_read() {
        #[derive(Serialize)]
        struct FirstFormat<'a> {
            streams: Vec<Vec<(&'a str, &'a str)>>,
            entries: Vec<(u32, i64, &'a str)>,
        }
        let payload = rmp_serde::to_vec(&FirstFormat {
            streams: vec![vec![("job", "a")]],
            entries: vec![(0, 5, "old")],
        })
        .unwrap();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        let (found, corrupt) = parse_all(&bytes);
        assert_eq!(corrupt, 0);
        let stream = Arc::new(StreamLabels::new([("job", "a")]));
        assert_eq!(found, [Entry { stream, timestamp_ns: 5, line: "old".into() }]);
    }

    #[test]
    fn a_torn_tail_is_incomplete_and_a_damaged_record_is_skipped() {
        let mut bytes = Vec::new();
        encode(&entries(), &mut bytes);
        let first = bytes.len();
        encode(&entries()[1..2], &mut bytes);
        encode(&entries()[2..], &mut bytes);

        let mut streams = KnownStreams::new();
        assert!(matches!(parse(&bytes[..first - 1], &mut streams), Parsed::Incomplete));
        assert!(matches!(parse(&bytes[..5], &mut streams), Parsed::Incomplete));

        // Flip a payload byte of the second record: only it is lost.
        let mut damaged = bytes.clone();
        damaged[first + HEADER_BYTES + 2] ^= 0xff;
        let (found, corrupt) = parse_all(&damaged);
        assert_eq!(corrupt, 1);
        let lines: Vec<_> = found.iter().map(|entry| entry.line.as_str()).collect();
        assert_eq!(lines, ["one", "two", "three", "three"]);

        // Garbage between records is skipped up to the next record.
        let mut garbage = b"xxxxxxx".to_vec();
        garbage.extend_from_slice(&bytes[first..]);
        let (found, corrupt) = parse_all(&garbage);
        assert_eq!((found.len(), corrupt), (2, 1));
    }
}
