//! Request decoding, from raw msgpack bytes.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::*;

/// Collects `(timestamp_ns, record bytes)` of every event, or the error.
fn events_of(bytes: &[u8]) -> Result<Vec<(i64, Vec<u8>)>, DecodeError> {
    let request = parse(bytes)?;
    let mut events = Vec::new();
    request.for_each_event(&mut Vec::new(), 1 << 20, |event| {
        events.push((event.timestamp_ns, event.record.to_vec()));
        Ok::<_, DecodeError>(())
    })?;
    Ok(events)
}

/// `{"log": "a"}`
const RECORD: [u8; 7] = [0x81, 0xa3, b'l', b'o', b'g', 0xa1, b'a'];

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// `[tag, bin(payload), {"compressed": "gzip"}]`
fn compressed_request(payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0x93, 0xa1, b't'];
    rmp::encode::write_bin(&mut bytes, payload).unwrap();
    bytes.extend_from_slice(&[0x81, 0xaa]);
    bytes.extend_from_slice(b"compressed");
    bytes.extend_from_slice(&[0xa4, b'g', b'z', b'i', b'p']);
    bytes
}

#[test]
fn message_mode_with_docker_int32_seconds_and_empty_option() {
    // ["t", int32 1764000000, {"log": "a"}, {}] as Docker's logger encodes it.
    let mut bytes = vec![0x94, 0xa1, b't', 0xd2];
    bytes.extend_from_slice(&1_764_000_000i32.to_be_bytes());
    bytes.extend_from_slice(&RECORD);
    bytes.push(0x80);
    assert_eq!(events_of(&bytes).unwrap(), [(1_764_000_000_000_000_000, RECORD.to_vec())]);
}

#[test]
fn forward_entries_may_carry_fluent_bit_metadata_times() {
    // ["t", [[[EventTime(1, 2), {}], {"log": "a"}]]]
    let mut bytes = vec![0x92, 0xa1, b't', 0x91, 0x92, 0x92];
    bytes.extend_from_slice(&[0xd7, 0x00, 0, 0, 0, 1, 0, 0, 0, 2, 0x80]);
    bytes.extend_from_slice(&RECORD);
    assert_eq!(events_of(&bytes).unwrap(), [(1_000_000_002, RECORD.to_vec())]);
}

#[test]
fn packed_forward_accepts_str_payloads() {
    // ["t", str([1, {"log": "a"}])]: fluentd's out_forward sends str for compatibility.
    let mut entry = vec![0x92, 0x01];
    entry.extend_from_slice(&RECORD);
    let mut bytes = vec![0x92, 0xa1, b't'];
    rmp::encode::write_str_len(&mut bytes, entry.len() as u32).unwrap();
    bytes.extend_from_slice(&entry);
    assert_eq!(events_of(&bytes).unwrap(), [(1_000_000_000, RECORD.to_vec())]);
}

#[test]
fn compressed_packed_forward_reads_concatenated_gzip_members() {
    let mut first = vec![0x92, 0x01];
    first.extend_from_slice(&RECORD);
    let mut second = vec![0x92, 0x02];
    second.extend_from_slice(&RECORD);
    let mut payload = gzip(&first);
    payload.extend(gzip(&second));
    let events = events_of(&compressed_request(&payload)).unwrap();
    let times: Vec<_> = events.iter().map(|(time, _)| *time).collect();
    assert_eq!(times, [1_000_000_000, 2_000_000_000]);
}

#[test]
fn a_gzip_bomb_is_refused_at_the_limit() {
    let payload = gzip(&vec![0u8; 4 << 20]);
    let bytes = compressed_request(&payload);
    let request = parse(&bytes).unwrap();
    let result = request.for_each_event(&mut Vec::new(), 1 << 20, |_| Ok::<_, DecodeError>(()));
    assert!(matches!(result, Err(DecodeError::DecompressedTooLarge { limit: 1_048_576 })));
}

#[test]
fn corrupt_gzip_and_unknown_compression_are_refused() {
    assert!(matches!(events_of(&compressed_request(b"not gzip")), Err(DecodeError::Gzip(_))));

    // ["t", bin(""), {"compressed": "lz4"}]
    let mut bytes = vec![0x93, 0xa1, b't', 0xc4, 0x00, 0x81, 0xaa];
    bytes.extend_from_slice(b"compressed");
    bytes.extend_from_slice(&[0xa3, b'l', b'z', b'4']);
    assert!(matches!(
        parse(&bytes),
        Err(DecodeError::UnsupportedCompression { name }) if name == "lz4"
    ));
}

#[test]
fn the_size_option_must_match_the_entries() {
    // ["t", [[1, {"log": "a"}]], {"size": 2}]
    let mut bytes = vec![0x93, 0xa1, b't', 0x91, 0x92, 0x01];
    bytes.extend_from_slice(&RECORD);
    bytes.extend_from_slice(&[0x81, 0xa4, b's', b'i', b'z', b'e', 0x02]);
    assert!(matches!(events_of(&bytes), Err(DecodeError::SizeMismatch { announced: 2, found: 1 })));
    let last = bytes.len() - 1;
    bytes[last] = 0x01;
    assert_eq!(events_of(&bytes).unwrap().len(), 1);
}

#[test]
fn chunk_option_is_read_and_unknown_options_skipped() {
    // ["t", 1, {"log": "a"}, {"metadata": {"k": [1]}, "chunk": "abc"}]
    let mut bytes = vec![0x94, 0xa1, b't', 0x01];
    bytes.extend_from_slice(&RECORD);
    bytes.extend_from_slice(&[0x82, 0xa8]);
    bytes.extend_from_slice(b"metadata");
    bytes.extend_from_slice(&[0x81, 0xa1, b'k', 0x91, 0x01, 0xa5]);
    bytes.extend_from_slice(b"chunk");
    bytes.extend_from_slice(&[0xa3, b'a', b'b', b'c']);
    let Request::Events { options, .. } = parse(&bytes).unwrap() else {
        panic!("an event request");
    };
    assert_eq!(options.chunk, Some(&b"abc"[..]));
}

#[test]
fn bad_times_and_records_are_refused_with_reasons() {
    let message = |time: &[u8], record: &[u8]| {
        let mut bytes = vec![0x93, 0xa1, b't'];
        bytes.extend_from_slice(time);
        bytes.extend_from_slice(record);
        events_of(&bytes)
    };
    assert!(matches!(message(&[0xff], &RECORD), Err(DecodeError::InvalidTime { .. })));
    // EventTime with 1e9 nanoseconds.
    let bad_nanos = [0xd7, 0x00, 0, 0, 0, 1, 0x3b, 0x9a, 0xca, 0x00];
    assert!(matches!(message(&bad_nanos, &RECORD), Err(DecodeError::InvalidTime { .. })));
    // Extension type 5 is not EventTime.
    let other_ext = [0xd7, 0x05, 0, 0, 0, 1, 0, 0, 0, 0];
    assert!(matches!(message(&other_ext, &RECORD), Err(DecodeError::InvalidTime { .. })));
    assert!(matches!(message(&[0x01], &[0xa1, b'x']), Err(DecodeError::RecordNotMap { .. })));
}

#[test]
fn non_arrays_and_wrong_arities_are_unknown_shapes() {
    assert!(matches!(parse(&[0x80]), Err(DecodeError::NotAnArray { found: "a map" })));
    assert!(matches!(parse(&[0x91, 0xa1, b't']), Err(DecodeError::UnknownShape { .. })));
    assert!(matches!(parse(&[0x92, 0x01, 0x01]), Err(DecodeError::UnknownShape { .. })));
    // Forward mode with two trailing elements.
    assert!(matches!(
        parse(&[0x94, 0xa1, b't', 0x90, 0x80, 0x80]),
        Err(DecodeError::UnknownShape { .. })
    ));
    assert!(matches!(parse(&[0xc0]), Ok(Request::Heartbeat)));
    // Message mode needs at least three elements; the fuzzer's first find.
    assert!(parse(&[0x92, 0xa1, b't', 0x01]).is_err());
}
