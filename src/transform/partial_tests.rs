use serde_json::json;

use super::*;

const T0: i64 = 1_764_000_000_000_000_000;
const TIMEOUT: Duration = Duration::from_secs(5);

fn limits(max_bytes: usize) -> PartialLimits {
    PartialLimits { max_bytes, timeout: TIMEOUT }
}

/// A record shaped like one fragment Docker sends.
fn fragment(id: &str, ordinal: usize, last: bool, text: &str) -> Vec<u8> {
    rmp_serde::to_vec_named(&json!({
        "container_id": "0f3c",
        "container_name": "/web",
        "source": "stdout",
        "log": text,
        "partial_message": "true",
        "partial_id": id,
        "partial_ordinal": ordinal.to_string(),
        "partial_last": if last { "true" } else { "false" },
    }))
    .unwrap()
}

fn decoded(line: &JoinedLine) -> serde_json::Value {
    rmp_serde::from_slice(&line.record).unwrap()
}

fn add(assembler: &mut PartialAssembler, record: &[u8], now: Instant) -> Vec<JoinedLine> {
    let mut out = Vec::new();
    let event = Event::new(T0, record);
    assert!(assembler.add(event, now, &mut out).unwrap(), "taken as a fragment");
    out
}

#[test]
fn fragments_become_one_record_without_the_partial_keys() {
    let mut assembler = PartialAssembler::new(limits(1 << 20));
    let now = Instant::now();
    assert!(add(&mut assembler, &fragment("a", 1, false, "one "), now).is_empty());
    assert!(add(&mut assembler, &fragment("a", 2, false, "two "), now).is_empty());
    assert_eq!(assembler.next_deadline(), Some(now + TIMEOUT));
    let joined = add(&mut assembler, &fragment("a", 3, true, "three"), now);
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0].outcome, JoinOutcome::Whole);
    assert_eq!(joined[0].timestamp_ns, T0);
    assert_eq!(
        decoded(&joined[0]),
        json!({
            "container_id": "0f3c",
            "container_name": "/web",
            "source": "stdout",
            "log": "one two three",
        })
    );
    assert!(assembler.is_empty());
    assert_eq!(assembler.next_deadline(), None);
}

#[test]
fn a_character_split_between_fragments_is_whole_again() {
    let mut assembler = PartialAssembler::new(limits(1 << 20));
    let now = Instant::now();
    // "é" is c3 a9; Docker cuts at a byte count, so a fragment may end inside it.
    let mut first = fragment("a", 1, false, "");
    let mut second = fragment("a", 2, true, "");
    for (record, bytes) in [(&mut first, &b"caf\xc3"[..]), (&mut second, &b"\xa9!"[..])] {
        let value: serde_json::Value = rmp_serde::from_slice(record).unwrap();
        let mut rebuilt = Vec::new();
        let map = value.as_object().unwrap();
        rmp::encode::write_map_len(&mut rebuilt, map.len() as u32).unwrap();
        for (key, value) in map {
            rmp::encode::write_str(&mut rebuilt, key).unwrap();
            if key == "log" {
                rmp::encode::write_str_len(&mut rebuilt, bytes.len() as u32).unwrap();
                rebuilt.extend_from_slice(bytes);
            } else {
                rebuilt.extend(rmp_serde::to_vec(value).unwrap());
            }
        }
        *record = rebuilt;
    }
    add(&mut assembler, &first, now);
    let joined = add(&mut assembler, &second, now);
    assert_eq!(decoded(&joined[0])["log"], "café!");
}

#[test]
fn interleaved_lines_are_joined_apart() {
    let mut assembler = PartialAssembler::new(limits(1 << 20));
    let now = Instant::now();
    add(&mut assembler, &fragment("a", 1, false, "a1"), now);
    add(&mut assembler, &fragment("b", 1, false, "b1"), now);
    add(&mut assembler, &fragment("a", 2, false, "a2"), now);
    let b = add(&mut assembler, &fragment("b", 2, true, "b2"), now);
    let a = add(&mut assembler, &fragment("a", 3, true, "a3"), now);
    assert_eq!(decoded(&a[0])["log"], "a1a2a3");
    assert_eq!(decoded(&b[0])["log"], "b1b2");
}

#[test]
fn parts_are_joined_in_ordinal_order_and_a_resent_part_replaces_the_first() {
    let mut assembler = PartialAssembler::new(limits(1 << 20));
    let now = Instant::now();
    add(&mut assembler, &fragment("a", 2, false, "two "), now);
    add(&mut assembler, &fragment("a", 1, false, "one "), now);
    add(&mut assembler, &fragment("a", 2, false, "two "), now);
    let joined = add(&mut assembler, &fragment("a", 3, true, "three"), now);
    assert_eq!(decoded(&joined[0])["log"], "one two three");
}

#[test]
fn a_line_without_its_last_part_is_shipped_at_the_timeout() {
    let mut assembler = PartialAssembler::new(limits(1 << 20));
    let start = Instant::now();
    add(&mut assembler, &fragment("a", 1, false, "one "), start);
    let later = start + Duration::from_secs(3);
    add(&mut assembler, &fragment("a", 2, false, "two"), later);

    let mut out = Vec::new();
    assembler.expire(start + TIMEOUT, &mut out).unwrap();
    assert!(out.is_empty(), "the timeout counts from the latest part");
    assert_eq!(assembler.next_deadline(), Some(later + TIMEOUT));
    assembler.expire(later + TIMEOUT, &mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].outcome, JoinOutcome::Timeout);
    assert_eq!(decoded(&out[0])["log"], "one two");
    assert!(assembler.is_empty());
}

#[test]
fn a_line_over_the_limit_is_cut_and_its_rest_skipped() {
    let mut assembler = PartialAssembler::new(limits(10));
    let now = Instant::now();
    assert!(add(&mut assembler, &fragment("a", 1, false, "12345678"), now).is_empty());
    let cut = add(&mut assembler, &fragment("a", 2, false, "abcdef"), now);
    assert_eq!(cut.len(), 1);
    assert_eq!(cut[0].outcome, JoinOutcome::TooLarge);
    assert_eq!(decoded(&cut[0])["log"], "12345678ab");
    assert!(add(&mut assembler, &fragment("a", 3, false, "skipped"), now).is_empty());
    assert!(add(&mut assembler, &fragment("a", 4, true, "skipped"), now).is_empty());
    assert!(assembler.is_empty(), "the last part ends the skipped line");

    let mut out = Vec::new();
    add(&mut assembler, &fragment("b", 1, false, "0123456789"), now);
    assert_eq!(
        add(&mut assembler, &fragment("b", 2, true, ""), now)[0].outcome,
        JoinOutcome::Whole
    );
    assembler.close(&mut out).unwrap();
    assert!(out.is_empty());
}

#[test]
fn closing_ships_open_lines_in_arrival_order() {
    let mut assembler = PartialAssembler::new(limits(1 << 20));
    let now = Instant::now();
    add(&mut assembler, &fragment("b", 1, false, "first"), now);
    add(&mut assembler, &fragment("a", 1, false, "second"), now + Duration::from_millis(1));
    let mut out = Vec::new();
    assembler.close(&mut out).unwrap();
    let lines: Vec<_> =
        out.iter().map(|line| (decoded(line)["log"].clone(), line.outcome)).collect();
    assert_eq!(
        lines,
        [(json!("first"), JoinOutcome::Closed), (json!("second"), JoinOutcome::Closed)]
    );
}

#[test]
fn too_many_open_lines_push_out_the_oldest() {
    let mut assembler = PartialAssembler::new(limits(1 << 20));
    let now = Instant::now();
    for index in 0..MAX_OPEN_LINES {
        let at = now + Duration::from_millis(index as u64);
        assert!(add(&mut assembler, &fragment(&index.to_string(), 1, false, "x"), at).is_empty());
    }
    let pushed_out = add(&mut assembler, &fragment("new", 1, false, "y"), now);
    assert_eq!(pushed_out.len(), 1);
    assert_eq!(pushed_out[0].outcome, JoinOutcome::TooMany);
    assert_eq!(assembler.open.len(), MAX_OPEN_LINES);
    assert!(!assembler.open.contains_key(b"0".as_slice()));
}

#[test]
fn a_record_without_a_partial_id_is_not_a_fragment() {
    let mut assembler = PartialAssembler::new(limits(1 << 20));
    let record = rmp_serde::to_vec_named(&json!({"log": "x", "partial_message": "true"})).unwrap();
    let event = Event::new(T0, &record);
    assert!(!assembler.add(event, Instant::now(), &mut Vec::new()).unwrap());
    assert!(assembler.is_empty());
}
