//! The disk buffer's record reader, on segment files that may be torn or damaged.

use std::sync::Arc;

use crate::disk::record::{self, KnownStreams, Parsed};
use crate::loki::labels::StreamLabels;
use crate::transform::Entry;

/// One entry of a seed record: labels, tenant, structured metadata, timestamp, line.
pub type SeedEntry<'a> =
    (&'a [(&'a str, &'a str)], Option<&'a str>, &'a [(&'a str, &'a str)], i64, &'a str);

/// Reads `data` as a disk buffer segment, as the replay after a restart does: record after
/// record, skipping damaged bytes to the next record mark.
///
/// Checks that every step moves forward within the segment, and that the entries of every good
/// record, written again as a record, read back the same.
pub fn disk_segment(data: &[u8]) {
    let mut streams = KnownStreams::new();
    let mut rest = data;
    while !rest.is_empty() {
        match record::parse(rest, &mut streams) {
            Parsed::Record { entries, len } => {
                assert!(len > 0 && len <= rest.len(), "record of {len} bytes in {}", rest.len());
                check_rewrite(&entries);
                rest = &rest[len..];
            }
            Parsed::Corrupt { skip } => {
                assert!(skip > 0 && skip <= rest.len(), "skip of {skip} in {}", rest.len());
                rest = &rest[skip..];
            }
            Parsed::Incomplete => break,
        }
    }
}

/// The bytes of a disk buffer record holding `entries`, for seeds.
pub fn disk_record(entries: &[SeedEntry<'_>]) -> Vec<u8> {
    let entries: Vec<Entry> = entries
        .iter()
        .map(|&(labels, tenant, metadata, timestamp_ns, line)| Entry {
            stream: Arc::new(
                StreamLabels::new(labels.iter().copied())
                    .with_tenant(tenant.map(Arc::from))
                    .with_structured_metadata(metadata.iter().copied()),
            ),
            timestamp_ns,
            line: line.into(),
        })
        .collect();
    let mut out = Vec::new();
    record::encode(&entries, &mut out);
    out
}

fn check_rewrite(entries: &[Entry]) {
    let mut written = Vec::new();
    record::encode(entries, &mut written);
    let Parsed::Record { entries: read, len } = record::parse(&written, &mut KnownStreams::new())
    else {
        panic!("a record written from good entries does not read back");
    };
    assert_eq!(len, written.len(), "the record read back is not the one written");
    assert_eq!(read.len(), entries.len(), "entries lost in a rewrite");
    for (before, after) in entries.iter().zip(&read) {
        assert_eq!(before.stream, after.stream, "labels or metadata changed in a rewrite");
        assert_eq!(before.stream.tenant(), after.stream.tenant(), "tenant changed in a rewrite");
        assert_eq!(before.timestamp_ns, after.timestamp_ns, "time changed in a rewrite");
        assert_eq!(before.line, after.line, "line changed in a rewrite");
    }
}
