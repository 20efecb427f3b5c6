//! What fwd2loki does beyond the fluent-bit setup it replaces: Docker's split lines joined,
//! arrival order kept for equal timestamps, structured metadata, tenants taken from records,
//! and labels from nested records.

use std::collections::BTreeMap;
use std::time::Duration;

use fwd2loki::config::{BufferKind, Config};
use fwd2loki::forward::client::{Mode, OutgoingEvent, TimeFormat};
use serde_json::json;

use crate::support::loki::{ReceivedEntry, TestLoki};
use crate::support::shipper::{
    CONTAINER_ID, PATIENCE, Shipper, docker_labels, docker_record, send_records,
};

/// 2025-11-24T16:00:00Z, a whole second as Docker sends without sub-second precision.
const T0: i64 = 1_764_000_000_000_000_000;

/// The size of Docker's log copier buffer, at which it splits a line.
const DOCKER_SPLIT_BYTES: usize = 16 * 1024;

/// One fragment of a split line, shaped like Docker's: the base keys, the piece of the line in
/// `log` as raw bytes (a piece may end inside a UTF-8 character), and the partial keys.
fn fragment(container_name: &str, id: &str, ordinal: usize, last: bool, piece: &[u8]) -> Vec<u8> {
    let mut record = Vec::new();
    let string = |record: &mut Vec<u8>, text: &[u8]| {
        rmp::encode::write_str_len(record, text.len() as u32).unwrap();
        record.extend_from_slice(text);
    };
    rmp::encode::write_map_len(&mut record, 8).unwrap();
    let ordinal = ordinal.to_string();
    let fields: [(&str, &[u8]); 8] = [
        ("container_id", CONTAINER_ID.as_bytes()),
        ("container_name", container_name.as_bytes()),
        ("source", b"stdout"),
        ("log", piece),
        ("partial_message", b"true"),
        ("partial_id", id.as_bytes()),
        ("partial_ordinal", ordinal.as_bytes()),
        ("partial_last", if last { b"true" } else { b"false" }),
    ];
    for (key, value) in fields {
        string(&mut record, key.as_bytes());
        string(&mut record, value);
    }
    record
}

/// The fragments Docker makes of `line`: 16 KiB pieces, all with the first one's time.
fn split_like_docker(container_name: &str, id: &str, line: &str) -> Vec<OutgoingEvent> {
    let pieces: Vec<&[u8]> = line.as_bytes().chunks(DOCKER_SPLIT_BYTES).collect();
    let last = pieces.len();
    pieces
        .iter()
        .enumerate()
        .map(|(index, piece)| OutgoingEvent {
            timestamp_ns: T0,
            record: fragment(container_name, id, index + 1, index + 1 == last, piece),
        })
        .collect()
}

/// A long line with multibyte characters, so that some 16 KiB boundaries fall inside one.
fn long_line(bytes: usize, seed: char) -> String {
    let mut line = String::new();
    let mut n = 0;
    while line.len() < bytes {
        line.push_str(&format!("{seed}{n} é€ "));
        n += 1;
    }
    line
}

fn partial_id(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

#[tokio::test]
async fn a_line_docker_split_arrives_whole() {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |_| {}).await;
    let line = long_line(50 * 1024, 'a');
    let fragments = split_like_docker("/web", &partial_id(1), &line);
    assert_eq!(fragments.len(), 4);
    let boundaries = (1..fragments.len()).map(|index| index * DOCKER_SPLIT_BYTES);
    assert!(
        boundaries.clone().any(|boundary| !line.is_char_boundary(boundary)),
        "a 16 KiB boundary cuts a character in two"
    );

    let mut stream = shipper.connect().await;
    send_records(&mut stream, Mode::Message, TimeFormat::Integer, &fragments, true).await;

    let entries = loki.wait_for_entries(1, PATIENCE).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].line, line, "exactly the text the container wrote");
    assert_eq!(entries[0].timestamp_ns, i128::from(T0));
    assert_eq!(entries[0].labels, docker_labels("/web"), "the partial keys are not labels");
    assert_eq!(shipper.metrics().partials_joined.get(), 1);
}

#[tokio::test]
async fn interleaved_split_lines_of_two_containers_on_one_connection() {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |_| {}).await;
    let (web_line, db_line) = (long_line(40 * 1024, 'w'), long_line(20 * 1024, 'd'));
    let web = split_like_docker("/web", &partial_id(1), &web_line);
    let db = split_like_docker("/db", &partial_id(2), &db_line);
    let mut events = Vec::new();
    for index in 0..web.len().max(db.len()) {
        events.extend(web.get(index).cloned());
        events.extend(db.get(index).cloned());
    }

    let mut stream = shipper.connect().await;
    send_records(&mut stream, Mode::Message, TimeFormat::Integer, &events, false).await;

    let entries = loki.wait_for_entries(2, PATIENCE).await;
    let by_container: BTreeMap<&str, &str> = entries
        .iter()
        .map(|entry| (entry.labels["container_name"].as_str(), entry.line.as_str()))
        .collect();
    assert_eq!(
        by_container,
        BTreeMap::from([("/db", db_line.as_str()), ("/web", web_line.as_str())])
    );
    assert_eq!(entries.len(), 2);
}

#[tokio::test]
async fn a_split_line_whose_last_part_is_lost_is_shipped_at_the_timeout() {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |config| {
        config.loki.partial_timeout = Duration::from_millis(200);
    })
    .await;
    let line = long_line(40 * 1024, 'l');
    let mut fragments = split_like_docker("/web", &partial_id(3), &line);
    fragments.pop();
    let arrived: usize = line.len() - line.len() % DOCKER_SPLIT_BYTES;

    // The connection stays open and quiet: only the timer can ship the line.
    let mut stream = shipper.connect().await;
    send_records(&mut stream, Mode::Message, TimeFormat::Integer, &fragments, false).await;

    let entries = loki.wait_for_entries(1, PATIENCE).await;
    assert_eq!(entries[0].line, String::from_utf8_lossy(&line.as_bytes()[..arrived]));
    let flushed = shipper.metrics().encode();
    assert!(flushed.contains("fwd2loki_partials_flushed_total{reason=\"timeout\"} 1"), "{flushed}");
    drop(stream);
}

/// Checks that `entries` hold `lines` in order with strictly increasing timestamps.
fn assert_in_order(entries: &[ReceivedEntry], lines: &[String]) {
    let received: Vec<&str> = entries.iter().map(|entry| entry.line.as_str()).collect();
    assert_eq!(received, lines);
    let times: Vec<i128> = entries.iter().map(|entry| entry.timestamp_ns).collect();
    assert!(times.windows(2).all(|pair| pair[0] < pair[1]), "strictly increasing: {times:?}");
    assert_eq!(times[0], i128::from(T0), "the first keeps its time");
    assert!(times[times.len() - 1] < i128::from(T0) + 1_000_000_000, "still in the same second");
}

async fn send_a_burst_of_one_second(config: impl FnOnce(&mut Config)) {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |c| {
        // Small batches: the order must hold across pushes.
        c.loki.batch_size = 4096;
        config(c);
    })
    .await;
    let lines: Vec<String> = (0..1000).map(|n| format!("line {n:04}")).collect();
    let events: Vec<OutgoingEvent> = lines
        .iter()
        .map(|line| OutgoingEvent::from_json(T0, &docker_record("/app", line)))
        .collect();
    let mut stream = shipper.connect().await;
    send_records(&mut stream, Mode::Message, TimeFormat::Integer, &events, false).await;

    let entries = loki.wait_for_entries(1000, PATIENCE).await;
    assert!(loki.pushes().len() > 1, "the lines span several pushes");
    assert_in_order(&entries, &lines);
    assert_eq!(shipper.metrics().timestamps_moved.get(), 999);
}

#[tokio::test]
async fn lines_of_one_second_arrive_in_the_order_sent() {
    send_a_burst_of_one_second(|_| {}).await;
}

#[tokio::test]
async fn lines_of_one_second_arrive_in_the_order_sent_through_the_disk_buffer() {
    let dir = tempfile::tempdir().unwrap();
    send_a_burst_of_one_second(|config| {
        config.buffer.kind = BufferKind::Disk;
        config.buffer.path = Some(dir.path().to_owned());
    })
    .await;
}

#[tokio::test]
async fn structured_metadata_is_sent_beside_the_line_not_in_it_or_the_labels() {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |config| {
        config.loki.structured_metadata_keys = vec!["container_id".into(), "source".into()];
    })
    .await;
    let events = [OutgoingEvent::from_json(T0, &docker_record("/web", "GET / 200"))];
    let mut stream = shipper.connect().await;
    send_records(&mut stream, Mode::Message, TimeFormat::EventTime, &events, false).await;

    let entries = loki.wait_for_entries(1, PATIENCE).await;
    assert_eq!(
        entries[0].structured_metadata,
        [("container_id".to_owned(), CONTAINER_ID.to_owned()), ("source".into(), "stdout".into())]
    );
    assert_eq!(entries[0].line, "GET / 200");
    assert_eq!(entries[0].labels, docker_labels("/web"));
}

#[tokio::test]
async fn each_tenant_gets_its_own_pushes() {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |config| {
        config.loki.tenant_key = Some("namespace".into());
        config.loki.tenant_id = Some("fallback".into());
    })
    .await;
    let record = |namespace: Option<&str>, n: usize| {
        let mut record = docker_record("/app", &format!("{} {n}", namespace.unwrap_or("none")));
        if let Some(namespace) = namespace {
            record["namespace"] = json!(namespace);
        }
        OutgoingEvent::from_json(T0 + n as i64, &record)
    };
    let events: Vec<OutgoingEvent> =
        (0..6).map(|n| record([Some("team-a"), Some("team-b"), None][n % 3], n)).collect();
    let mut stream = shipper.connect().await;
    send_records(&mut stream, Mode::Forward, TimeFormat::EventTime, &events, true).await;

    let entries = loki.wait_for_entries(6, PATIENCE).await;
    let mut tenants: Vec<Option<String>> =
        loki.pushes().into_iter().map(|push| push.tenant).collect();
    tenants.sort();
    let expected = ["fallback", "team-a", "team-b"].map(|tenant| Some(tenant.to_owned()));
    assert_eq!(tenants, expected, "one push per tenant");
    let mut by_tenant: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for entry in &entries {
        let tenant = entry.tenant.clone().expect("every push names a tenant");
        by_tenant.entry(tenant).or_default().push(&entry.line);
    }
    assert_eq!(
        by_tenant,
        BTreeMap::from([
            ("fallback".to_owned(), vec!["none 2", "none 5"]),
            ("team-a".to_owned(), vec!["team-a 0", "team-a 3"]),
            ("team-b".to_owned(), vec!["team-b 1", "team-b 4"]),
        ])
    );
    assert!(entries.iter().all(|entry| entry.labels == docker_labels("/app")));
}

#[tokio::test]
async fn tenants_and_structured_metadata_survive_the_disk_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |config| {
        config.buffer.kind = BufferKind::Disk;
        config.buffer.path = Some(dir.path().to_owned());
        config.loki.tenant_key = Some("namespace".into());
        config.loki.structured_metadata_keys = vec!["container_id".into()];
    })
    .await;
    let mut record = docker_record("/app", "kept");
    record["namespace"] = json!("team-a");
    let mut stream = shipper.connect().await;
    let events = [OutgoingEvent::from_json(T0, &record)];
    send_records(&mut stream, Mode::Message, TimeFormat::EventTime, &events, true).await;

    let entries = loki.wait_for_entries(1, PATIENCE).await;
    assert_eq!(entries[0].tenant.as_deref(), Some("team-a"));
    assert_eq!(
        entries[0].structured_metadata,
        [("container_id".to_owned(), CONTAINER_ID.to_owned())]
    );
    assert_eq!(entries[0].line, "kept");
}

#[tokio::test]
async fn label_map_makes_labels_of_nested_values() {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |config| {
        config.loki.label_map = [
            ("kubernetes.labels.app", "app"),
            ("kubernetes.labels.app.kubernetes.io/part-of", "part_of"),
        ]
        .into_iter()
        .map(|(path, name)| (path.to_owned(), name.to_owned()))
        .collect();
    })
    .await;
    let mut record = docker_record("/web", "hello");
    record["kubernetes"] =
        json!({"labels": {"app": "shop", "app.kubernetes.io/part-of": "store"}, "pod": "p-1"});
    let events = [OutgoingEvent::from_json(T0, &record)];
    let mut stream = shipper.connect().await;
    send_records(&mut stream, Mode::Message, TimeFormat::EventTime, &events, false).await;

    let entries = loki.wait_for_entries(1, PATIENCE).await;
    let mut labels = docker_labels("/web");
    labels.insert("app".into(), "shop".into());
    labels.insert("part_of".into(), "store".into());
    assert_eq!(entries[0].labels, labels);
    let line: serde_json::Value = serde_json::from_str(&entries[0].line).unwrap();
    assert_eq!(line, json!({"log": "hello", "kubernetes": record["kubernetes"]}), "left as it is");
}
