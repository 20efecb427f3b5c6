//! Where record values go besides the line: structured metadata, the tenant, mapped labels,
//! and Docker's partial keys.

use serde_json::json;

use super::*;

const CONTAINER_ID: &str = "5f4f2f0b7d1c6e3a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a";

fn config(edit: impl FnOnce(&mut LokiConfig)) -> LokiConfig {
    let labels = [("job".to_owned(), "fluent-bit".to_owned())].into();
    let mut config = LokiConfig { labels, ..LokiConfig::default() };
    edit(&mut config);
    config
}

fn transformed(config: &LokiConfig, record: &serde_json::Value) -> Transformed {
    let record = rmp_serde::to_vec_named(record).unwrap();
    let event = Event::new(0, &record);
    Transform::new(config).entry_or_fragment(event, &mut Scratch::default()).unwrap()
}

fn entry(config: &LokiConfig, record: &serde_json::Value) -> Entry {
    match transformed(config, record) {
        Transformed::Entry(entry) => entry,
        Transformed::Fragment => panic!("not a fragment: {record}"),
    }
}

fn docker_record(line: &str) -> serde_json::Value {
    json!({
        "container_id": CONTAINER_ID,
        "container_name": "/web",
        "source": "stdout",
        "log": line,
    })
}

#[test]
fn structured_metadata_leaves_line_and_labels_and_wins_over_remove_keys() {
    let config = config(|c| c.structured_metadata_keys = vec!["container_id".into()]);
    let entry = entry(&config, &docker_record("hello"));
    assert_eq!(entry.line, "hello");
    assert_eq!(entry.stream.selector(), r#"{container_name="/web", job="fluent-bit"}"#);
    let metadata: Vec<_> = entry.stream.structured_metadata().collect();
    assert_eq!(metadata, [("container_id", CONTAINER_ID)]);
}

#[test]
fn structured_metadata_names_are_made_valid_and_nil_values_left_out() {
    let config = config(|c| c.structured_metadata_keys = vec!["trace.id".into(), "span".into()]);
    let entry = entry(&config, &json!({"log": "x", "trace.id": 7, "span": null}));
    let metadata: Vec<_> = entry.stream.structured_metadata().collect();
    assert_eq!(metadata, [("trace_id", "7")]);
    assert_eq!(entry.line, "x");
}

#[test]
fn entries_with_the_same_metadata_share_their_stream() {
    let config = config(|c| c.structured_metadata_keys = vec!["source".into()]);
    let transform = Transform::new(&config);
    let mut scratch = Scratch::default();
    let mut stream_of = |source: &str| {
        let record = rmp_serde::to_vec_named(&json!({"log": "x", "source": source})).unwrap();
        transform.entry(Event::new(0, &record), &mut scratch).unwrap().stream
    };
    let stdout = stream_of("stdout");
    assert!(Arc::ptr_eq(&stdout, &stream_of("stdout")), "no allocation per entry");
    let stderr = stream_of("stderr");
    assert_ne!(stdout, stderr);
    assert!(stdout.same_loki_stream(&stderr));
}

#[test]
fn the_tenant_comes_from_its_key_which_leaves_the_line() {
    let config = config(|c| c.tenant_key = Some("namespace".into()));
    let mut record = docker_record("hello");
    record["namespace"] = json!("team-a");
    let entry = entry(&config, &record);
    assert_eq!(entry.stream.tenant().map(|tenant| &**tenant), Some("team-a"));
    assert_eq!(entry.line, "hello");

    let without = self::entry(&config, &docker_record("hello"));
    assert_eq!(without.stream.tenant(), None, "the default tenant");
    assert!(
        without.stream.same_loki_stream(&StreamLabels::new([
            ("container_name", "/web"),
            ("job", "fluent-bit")
        ]))
    );

    record["namespace"] = json!("not/valid");
    assert_eq!(self::entry(&config, &record).stream.tenant(), None, "Loki would refuse it");
}

#[test]
fn label_map_takes_labels_from_nested_values_and_leaves_the_record() {
    let config = config(|c| {
        c.label_keys = Vec::new();
        c.drop_single_key = false;
        c.label_map = [
            ("kubernetes.labels.app", "app"),
            ("kubernetes.labels.app.kubernetes.io/part-of", "part_of"),
            ("attrs.com.example.team", "team"),
            ("kubernetes.missing", "missing"),
        ]
        .into_iter()
        .map(|(path, name)| (path.to_owned(), name.to_owned()))
        .collect();
    });
    let record = json!({
        "log": "x",
        "kubernetes": {"labels": {"app": "shop", "app.kubernetes.io/part-of": "store"}},
        "attrs": {"com.example.team": "web"},
    });
    let entry = entry(&config, &record);
    assert_eq!(
        entry.stream.selector(),
        r#"{app="shop", job="fluent-bit", part_of="store", team="web"}"#
    );
    let line: serde_json::Value = serde_json::from_str(entry.line.as_str()).unwrap();
    assert_eq!(line, record, "the record is left as it is");
}

#[test]
fn a_label_key_wins_over_a_mapped_label_of_the_same_name() {
    let config = config(|c| {
        c.label_keys = vec!["app".into()];
        c.label_map = [("meta.app".to_owned(), "app".to_owned())].into();
    });
    let entry = entry(&config, &json!({"log": "x", "app": "top", "meta": {"app": "nested"}}));
    assert_eq!(entry.stream.selector(), r#"{app="top", job="fluent-bit"}"#);
}

#[test]
fn docker_fragments_are_told_apart_and_their_keys_never_reach_the_line() {
    let mut part = docker_record("part");
    part["partial_message"] = json!("true");
    part["partial_id"] = json!("ab12");
    part["partial_ordinal"] = json!("1");
    part["partial_last"] = json!("false");
    let joining = config(|_| {});
    assert_eq!(transformed(&joining, &part), Transformed::Fragment);

    let rendered = Transform::new(&joining)
        .entry(Event::new(0, &rmp_serde::to_vec_named(&part).unwrap()), &mut Scratch::default())
        .unwrap();
    assert_eq!(rendered.line, "part", "taken whole, the partial keys are dropped");

    part["partial_message"] = json!("false");
    assert_eq!(entry(&joining, &part).line, "part");

    let not_joining = config(|c| c.reassemble_partials = false);
    part["partial_message"] = json!("true");
    let line: serde_json::Value =
        serde_json::from_str(entry(&not_joining, &part).line.as_str()).unwrap();
    assert_eq!(line["partial_id"], "ab12", "unchanged when lines are not joined");
}

#[test]
fn past_the_stream_limit_entries_keep_their_tenant_and_metadata() {
    let config = config(|c| {
        c.max_streams = 1;
        c.tenant_key = Some("tenant".into());
        c.structured_metadata_keys = vec!["container_id".into()];
    });
    let transform = Transform::new(&config);
    let mut scratch = Scratch::default();
    let mut stream_of = |name: &str| {
        let record =
            json!({"container_name": name, "tenant": "b", "container_id": "0f", "log": "x"});
        let record = rmp_serde::to_vec_named(&record).unwrap();
        transform.entry(Event::new(0, &record), &mut scratch).unwrap().stream
    };
    let _first = stream_of("/first");
    let overflow = stream_of("/second");
    assert!(overflow.selector().contains("stream_overflow"), "{}", overflow.selector());
    assert_eq!(overflow.tenant().map(|tenant| &**tenant), Some("b"));
    assert_eq!(overflow.structured_metadata().collect::<Vec<_>>(), [("container_id", "0f")]);
}
