use serde_json::json;

use super::*;

const CONTAINER_ID: &str = "5f4f2f0b7d1c6e3a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a";

fn config(edit: impl FnOnce(&mut LokiConfig)) -> LokiConfig {
    let labels = [("job", "fluent-bit"), ("hostname", "node-1")]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    let mut config = LokiConfig { labels, ..LokiConfig::default() };
    edit(&mut config);
    config
}

fn entry(config: &LokiConfig, record: serde_json::Value) -> Entry {
    let record = rmp_serde::to_vec(&record).expect("json values encode");
    let event = Event::new(1_700_000_000_123_456_789, &record);
    Transform::new(config).entry(event, &mut Scratch::default()).expect("valid record")
}

/// Encodes a map with its keys in the given order (`json!` would sort them).
fn ordered_record(pairs: &[(&str, serde_json::Value)]) -> Vec<u8> {
    let mut record = Vec::new();
    rmp::encode::write_map_len(&mut record, pairs.len() as u32).unwrap();
    for (key, value) in pairs {
        rmp::encode::write_str(&mut record, key).unwrap();
        record.extend(rmp_serde::to_vec(value).unwrap());
    }
    record
}

fn docker_record(line: &str) -> serde_json::Value {
    json!({
        "container_id": CONTAINER_ID,
        "container_name": "/wiki-js",
        "source": "stdout",
        "log": line,
    })
}

#[test]
fn docker_record_becomes_the_plain_line_in_the_container_stream() {
    let entry = entry(&config(|_| {}), docker_record("GET /health 200"));
    assert_eq!(
        entry.stream.selector(),
        r#"{container_name="/wiki-js", hostname="node-1", job="fluent-bit"}"#
    );
    assert_eq!(entry.line, "GET /health 200");
    assert_eq!(entry.timestamp_ns, 1_700_000_000_123_456_789);
}

#[test]
fn extra_keys_make_a_json_line_in_record_order() {
    let record = ordered_record(&[
        ("container_id", json!(CONTAINER_ID)),
        ("container_name", json!("/wiki-js")),
        ("source", json!("stdout")),
        ("log", json!("hello")),
        ("com.example.team", json!("web")),
    ]);
    let event = Event::new(0, &record);
    let entry = Transform::new(&config(|_| {})).entry(event, &mut Scratch::default()).unwrap();
    assert_eq!(entry.line, r#"{"log":"hello","com.example.team":"web"}"#);
}

#[test]
fn without_drop_single_key_a_single_key_is_an_object() {
    let entry = entry(&config(|c| c.drop_single_key = false), docker_record("hi"));
    assert_eq!(entry.line, r#"{"log":"hi"}"#);
}

#[test]
fn single_non_string_value_is_its_json_text() {
    let entry = entry(&config(|_| {}), json!({"container_name": "/a", "log": {"a": [1, 2]}}));
    assert_eq!(entry.line, r#"{"a":[1,2]}"#);
}

#[test]
fn key_value_format() {
    let record = json!({"container_name": "/a", "level": "info", "msg": "two words", "n": 3});
    let entry = entry(&config(|c| c.line_format = LineFormat::KeyValue), record);
    assert_eq!(entry.line, r#"level=info msg="two words" n=3"#);
}

#[test]
fn raw_format_ships_the_line_key_or_the_whole_record() {
    let raw = config(|c| c.line_format = LineFormat::Raw);
    let mut record = docker_record("just this");
    record["extra"] = json!("ignored");
    assert_eq!(entry(&raw, record).line, "just this");

    let without_log = json!({"container_name": "/a", "msg": "m", "n": 1});
    assert_eq!(entry(&raw, without_log).line, r#"{"msg":"m","n":1}"#);

    let other_key = config(|c| {
        c.line_format = LineFormat::Raw;
        c.line_key = "msg".into();
    });
    assert_eq!(entry(&other_key, json!({"msg": "m", "n": 1})).line, "m");
}

#[test]
fn label_keys_are_sanitised_and_leave_the_line() {
    let config = config(|c| c.label_keys = vec!["container.name".into(), "1abc".into()]);
    let entry = entry(&config, json!({"container.name": "web", "1abc": 7, "log": "x"}));
    assert_eq!(
        entry.stream.selector(),
        r#"{_1abc="7", container_name="web", hostname="node-1", job="fluent-bit"}"#
    );
    assert_eq!(entry.line, "x");
}

#[test]
fn a_missing_or_nil_label_key_adds_no_label() {
    let config = config(|_| {});
    let missing = entry(&config, json!({"log": "x"}));
    assert_eq!(missing.stream.selector(), r#"{hostname="node-1", job="fluent-bit"}"#);
    let nil = entry(&config, json!({"container_name": null, "log": "x"}));
    assert_eq!(nil.stream, missing.stream);
}

#[test]
fn label_values_are_kept_as_they_are() {
    let entry = entry(&config(|_| {}), json!({"container_name": "a \"q\" \\ é\n", "log": "x"}));
    let labels: Vec<_> = entry.stream.pairs().collect();
    assert_eq!(labels[0], ("container_name", "a \"q\" \\ é\n"));
}

#[test]
fn a_record_label_wins_over_a_static_label_of_the_same_name() {
    let config = config(|c| c.label_keys = vec!["job".into()]);
    let entry = entry(&config, json!({"job": "from-record", "log": "x"}));
    assert_eq!(entry.stream.selector(), r#"{hostname="node-1", job="from-record"}"#);
}

#[test]
fn streams_are_interned_per_connection() {
    let config = config(|_| {});
    let transform = Transform::new(&config);
    let mut scratch = Scratch::default();
    let mut stream_of = |name: &str| {
        let record = rmp_serde::to_vec(&json!({"container_name": name, "log": "x"})).unwrap();
        let event = Event::new(0, &record);
        transform.entry(event, &mut scratch).unwrap().stream
    };
    let first = stream_of("/a");
    assert!(Arc::ptr_eq(&first, &stream_of("/a")));
    assert!(!Arc::ptr_eq(&first, &stream_of("/b")));
}

#[test]
fn invalid_utf8_is_replaced_not_refused() {
    // {"log": str of bytes ff fe}
    let record = [0x81, 0xa3, b'l', b'o', b'g', 0xa2, 0xff, 0xfe];
    let event = Event::new(0, &record);
    let entry = Transform::new(&config(|_| {})).entry(event, &mut Scratch::default()).unwrap();
    assert_eq!(entry.line, "\u{fffd}\u{fffd}");
}

#[test]
fn a_record_that_is_not_a_map_is_refused() {
    let event = Event::new(0, &[0x91, 0x01]);
    let result = Transform::new(&config(|_| {})).entry(event, &mut Scratch::default());
    assert!(matches!(result, Err(DecodeError::RecordNotMap { .. })));
}

#[test]
fn long_lines_are_truncated_at_a_character_boundary_or_dropped() {
    let truncating = Transform::new(&config(|c| c.max_line_bytes = 5));
    let mut long = entry(&config(|_| {}), docker_record("abcdé-and-more"));
    assert_eq!(truncating.limit_line(&mut long), LineLimit::Truncated);
    assert_eq!(long.line, "abcd", "é would straddle the limit");

    let mut short = entry(&config(|_| {}), docker_record("abc"));
    assert_eq!(truncating.limit_line(&mut short), LineLimit::Fits);

    let dropping = Transform::new(&config(|c| {
        c.max_line_bytes = 5;
        c.oversized_lines = OversizedLines::Drop;
    }));
    let mut long = entry(&config(|_| {}), docker_record("abcdef"));
    assert_eq!(dropping.limit_line(&mut long), LineLimit::Drop);
}

#[test]
fn a_record_laid_out_by_the_decoder_gives_the_entry_a_walk_gives() {
    let configs = [
        config(|_| {}),
        config(|c| c.drop_single_key = false),
        config(|c| c.structured_metadata_keys = vec!["source".into()]),
        config(|c| c.reassemble_partials = false),
    ];
    let records = [
        rmp_serde::to_vec(&docker_record("GET /health 200")).unwrap(),
        ordered_record(&[
            ("log", json!("hello")),
            ("container_name", json!("/api")),
            ("nested", json!({"a": [1, 2, {"b": null}]})),
            ("n", json!(-5)),
        ]),
        ordered_record(&[
            ("container_name", json!("/api")),
            ("partial_message", json!("true")),
            ("partial_id", json!("p1")),
            ("partial_ordinal", json!("1")),
            ("partial_last", json!("false")),
            ("log", json!("first half")),
        ]),
        // An integer key stays in the line.
        vec![0x82, 0x07, 0xa1, b'x', 0xa3, b'l', b'o', b'g', 0xa2, b'h', b'i'],
    ];
    for config in &configs {
        let transform = Transform::new(config);
        for record in &records {
            let mut reader = crate::msgpack::Reader::new(record);
            let (raw, layout) = reader.read_map().unwrap();
            assert!(layout.is_some(), "small maps are laid out");
            let laid_out = Event { timestamp_ns: 7, record: raw, layout };
            let walked = Event::new(7, record);
            let mut scratch = Scratch::default();
            assert_eq!(
                transform.entry_or_fragment(laid_out, &mut scratch).unwrap(),
                transform.entry_or_fragment(walked, &mut Scratch::default()).unwrap(),
                "{record:?}"
            );
        }
    }
}
