//! Tests of the test Loki itself: it must accept what Loki accepts, reject what Loki rejects,
//! and misbehave exactly as scripted, or the delivery tests built on it prove nothing.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use reqwest::StatusCode;

use crate::support::loki::proto::{
    EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp,
};
use crate::support::loki::{Fault, ReceivedEntry, TestLoki, encode_push_body, parse_label_string};

const PROTOBUF: &str = "application/x-protobuf";
const WAIT: Duration = Duration::from_secs(5);

fn entry(timestamp_ns: i64, line: &str) -> EntryAdapter {
    EntryAdapter {
        timestamp: Some(Timestamp {
            seconds: timestamp_ns.div_euclid(1_000_000_000),
            nanos: i32::try_from(timestamp_ns.rem_euclid(1_000_000_000)).expect("below 1e9"),
        }),
        line: line.to_owned(),
        ..EntryAdapter::default()
    }
}

fn stream(labels: &str, entries: Vec<EntryAdapter>) -> StreamAdapter {
    StreamAdapter { labels: labels.to_owned(), entries, hash: 0 }
}

/// A push of one stream holding one entry.
fn one_entry_push(labels: &str) -> Vec<u8> {
    body_of(vec![stream(labels, vec![entry(1_000, "line")])])
}

fn body_of(streams: Vec<StreamAdapter>) -> Vec<u8> {
    encode_push_body(&PushRequest { streams, format: String::new() })
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
}

async fn post(loki: &TestLoki, content_type: Option<&str>, body: Vec<u8>) -> reqwest::Response {
    let mut request = reqwest::Client::new().post(loki.push_url()).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.send().await.expect("the test Loki answers")
}

async fn post_push(loki: &TestLoki, body: Vec<u8>) -> reqwest::Response {
    post(loki, Some(PROTOBUF), body).await
}

/// Posts a body the receiver must refuse, and returns the recorded reason after checking the
/// status, that the reason is also the answer, and that nothing was accepted.
async fn assert_rejected(loki: &TestLoki, body: Vec<u8>, status: StatusCode) -> String {
    let rejections_before = loki.rejections().len();
    let response = post_push(loki, body).await;
    assert_eq!(response.status(), status);
    let answer = response.text().await.expect("the rejection has a body");
    let rejections = loki.rejections();
    assert_eq!(rejections.len(), rejections_before + 1, "one rejection is recorded");
    let reason = rejections.last().expect("a rejection was recorded").clone();
    assert_eq!(answer, format!("{reason}\n"), "the answer states the reason");
    assert!(loki.pushes().is_empty(), "nothing is accepted from a rejected push");
    reason
}

#[tokio::test]
async fn accepts_a_valid_push_and_records_labels_line_timestamp_and_headers() {
    let loki = TestLoki::start().await;
    let label_string = r#"{container_name="/wiki-js", hostname="h", job="fluent-bit"}"#;
    let mut sent_entry = entry(1_700_000_000_123_456_789, "GET /healthz 200");
    sent_entry.structured_metadata =
        vec![LabelPairAdapter { name: "container_id".to_owned(), value: "abc123".to_owned() }];
    let body = body_of(vec![stream(label_string, vec![sent_entry])]);

    let response = reqwest::Client::new()
        .post(loki.push_url())
        .header("content-type", PROTOBUF)
        .header("user-agent", "fwd2loki/0.1.0")
        .header("x-scope-orgid", "tenant-a")
        .header("authorization", "Basic dXNlcjpwYXNz")
        .body(body)
        .send()
        .await
        .expect("the test Loki answers");

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let expected_labels =
        labels(&[("container_name", "/wiki-js"), ("hostname", "h"), ("job", "fluent-bit")]);
    let expected_entry = ReceivedEntry {
        labels: expected_labels.clone(),
        tenant: Some("tenant-a".to_owned()),
        timestamp_ns: 1_700_000_000_123_456_789,
        line: "GET /healthz 200".to_owned(),
        structured_metadata: vec![("container_id".to_owned(), "abc123".to_owned())],
    };
    let pushes = loki.pushes();
    assert_eq!(pushes.len(), 1);
    let push = &pushes[0];
    assert_eq!(push.content_type, PROTOBUF);
    assert_eq!(push.user_agent, "fwd2loki/0.1.0");
    assert_eq!(push.tenant.as_deref(), Some("tenant-a"));
    assert_eq!(push.authorization.as_deref(), Some("Basic dXNlcjpwYXNz"));
    assert_eq!(push.streams.len(), 1);
    assert_eq!(push.streams[0].label_string, label_string);
    assert_eq!(push.streams[0].labels, expected_labels);
    assert!(push.streams[0].labels_sorted);
    assert_eq!(push.streams[0].entries, vec![expected_entry.clone()]);
    assert_eq!(loki.entries(), vec![expected_entry]);
    assert_eq!(loki.rejections(), Vec::<String>::new());
    assert_eq!(loki.requests(), 1);
}

#[tokio::test]
async fn decodes_escaped_label_values_and_notes_unsorted_names() {
    let loki = TestLoki::start().await;
    let label_string = concat!(
        r#"{path="C:\\logs\\\"x\"", text="a\nb\tc", snow="\u2603", "#,
        r#"octal_hex="\101\x42", emoji="\U0001F600"}"#,
    );

    let response = post_push(&loki, one_entry_push(label_string)).await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let stream = &loki.pushes()[0].streams[0];
    let expected = labels(&[
        ("path", r#"C:\logs\"x""#),
        ("text", "a\nb\tc"),
        ("snow", "\u{2603}"),
        ("octal_hex", "AB"),
        ("emoji", "\u{1F600}"),
    ]);
    assert_eq!(stream.labels, expected);
    assert!(!stream.labels_sorted, "`path` comes before `text` but `snow` does not");
}

/// Forms PromQL's `ParseMetric` accepts although fwd2loki is not expected to write them.
#[tokio::test]
async fn accepts_the_other_selector_forms_loki_accepts() {
    let cases = [
        (r#"{a="1",b="2"}"#, labels(&[("a", "1"), ("b", "2")])),
        ("{ a = \"1\" ,\tb=\"2\" , }", labels(&[("a", "1"), ("b", "2")])),
        (r"{a='it\'s', b=`raw\n`}", labels(&[("a", "it's"), ("b", r"raw\n")])),
        (r#"{a="1", empty=""}"#, labels(&[("a", "1")])),
    ];
    let loki = TestLoki::start().await;

    for (label_string, expected) in cases {
        let response = post_push(&loki, one_entry_push(label_string)).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{label_string}");
        let pushes = loki.pushes();
        let stream = &pushes.last().expect("the push was accepted").streams[0];
        assert_eq!(stream.labels, expected, "{label_string}");
    }
    assert_eq!(loki.rejections(), Vec::<String>::new());
}

#[tokio::test]
async fn rejects_label_strings_loki_rejects() {
    let too_many: Vec<String> = (0..16).map(|n| format!("l{n:02}=\"v\"")).collect();
    let too_many = format!("{{{}}}", too_many.join(", "));
    let long_name = format!("{{{}=\"v\"}}", "n".repeat(1025));
    let cases = [
        (r#"job="a""#, "Error parsing labels"),
        (r#"{job="a""#, "Error parsing labels"),
        (r#"{job="a"} x"#, "Error parsing labels"),
        (r#"{job="a" host="b"}"#, "Error parsing labels"),
        (r#"{job=a}"#, "Error parsing labels"),
        (r#"{job=~"a"}"#, "Error parsing labels"),
        (r#"{job!="a"}"#, "Error parsing labels"),
        (r#"up{job="a"}"#, "Error parsing labels"),
        (r#"{,}"#, "Error parsing labels"),
        (r#"{job="a\q"}"#, "unknown escape sequence"),
        (r#"{job="\uD800"}"#, "is not a character"),
        (r#"{job="\xff"}"#, "not valid UTF-8"),
        ("{job=\"a\nb\"}", "unterminated quoted string"),
        (r#"{1job="a"}"#, "invalid label name \"1job\""),
        (r#"{job-name="a"}"#, "invalid label name \"job-name\""),
        (r#"{__name__="a"}"#, "reserved label name: '__name__'"),
        (r#"{job="a", job="b"}"#, "duplicate label name: 'job'"),
        ("{}", "at least one label pair is required"),
        (r#"{job=""}"#, "at least one label pair is required"),
        (too_many.as_str(), "has 16 label names; limit 15"),
        (long_name.as_str(), "label name too long"),
    ];
    let loki = TestLoki::start().await;

    for (label_string, expected_reason) in cases {
        let reason =
            assert_rejected(&loki, one_entry_push(label_string), StatusCode::BAD_REQUEST).await;
        assert!(reason.contains(expected_reason), "{label_string}: {reason}");
    }
}

#[tokio::test]
async fn rejects_a_push_without_streams_with_422() {
    let loki = TestLoki::start().await;

    let reason = assert_rejected(&loki, body_of(vec![]), StatusCode::UNPROCESSABLE_ENTITY).await;

    assert_eq!(reason, "error at least one valid stream is required for ingestion");
}

#[tokio::test]
async fn rejects_invalid_timestamps() {
    let labels = r#"{job="a"}"#;
    let with_timestamp = |timestamp| EntryAdapter { timestamp, ..entry(0, "line") };
    let cases = [
        (Some(Timestamp { seconds: 1, nanos: -1 }), "nanos -1 not in range"),
        (Some(Timestamp { seconds: 1, nanos: 1_000_000_000 }), "not in range [0, 1e9)"),
        (Some(Timestamp { seconds: 253_402_300_800, nanos: 0 }), "outside years"),
        (None, "has no timestamp"),
    ];
    let loki = TestLoki::start().await;

    for (timestamp, expected_reason) in cases {
        let body = body_of(vec![stream(labels, vec![with_timestamp(timestamp)])]);
        let reason = assert_rejected(&loki, body, StatusCode::BAD_REQUEST).await;
        assert!(reason.contains(expected_reason), "{timestamp:?}: {reason}");
    }
}

#[tokio::test]
async fn rejects_invalid_structured_metadata_names_and_overlong_lines() {
    let loki = TestLoki::start().await;
    let mut bad_metadata = entry(1, "line");
    bad_metadata.structured_metadata =
        vec![LabelPairAdapter { name: "trace-id".to_owned(), value: "x".to_owned() }];
    let overlong = entry(1, &"x".repeat(256 * 1024 + 1));

    for (entry, expected_reason) in [
        (bad_metadata, "invalid structured metadata name: 'trace-id'"),
        (overlong, "Max entry size '262144' bytes exceeded"),
    ] {
        let body = body_of(vec![stream(r#"{job="a"}"#, vec![entry])]);
        let reason = assert_rejected(&loki, body, StatusCode::BAD_REQUEST).await;
        assert!(reason.contains(expected_reason), "{reason}");
    }

    let longest = body_of(vec![stream(r#"{job="a"}"#, vec![entry(1, &"x".repeat(256 * 1024))])]);
    assert_eq!(post_push(&loki, longest).await.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn rejects_entries_out_of_order_within_a_stream() {
    let loki = TestLoki::start().await;
    let body = body_of(vec![stream(r#"{job="a"}"#, vec![entry(2, "second"), entry(1, "first")])]);

    let reason = assert_rejected(&loki, body, StatusCode::BAD_REQUEST).await;

    assert!(reason.contains("out of order"), "{reason}");
}

#[tokio::test]
async fn accepts_equal_timestamps_and_independent_order_across_streams() {
    let loki = TestLoki::start().await;
    let body = body_of(vec![
        stream(r#"{job="a"}"#, vec![entry(5, "a1"), entry(5, "a2"), entry(6, "a3")]),
        stream(r#"{job="b"}"#, vec![entry(1, "b1")]),
    ]);

    let response = post_push(&loki, body).await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let lines: Vec<String> = loki.entries().into_iter().map(|entry| entry.line).collect();
    assert_eq!(lines, ["a1", "a2", "a3", "b1"]);
}

#[tokio::test]
async fn rejects_framed_snappy_and_undecodable_bodies() {
    let request = PushRequest {
        streams: vec![stream(r#"{job="a"}"#, vec![entry(1, "line")])],
        format: String::new(),
    };
    let mut framed = snap::write::FrameEncoder::new(Vec::new());
    framed.write_all(&prost::Message::encode_to_vec(&request)).expect("write to memory");
    let framed = framed.into_inner().expect("flush to memory");
    let truncated_protobuf =
        snap::raw::Encoder::new().compress_vec(b"\x0a\x05ab").expect("compress to memory");
    let cases = [
        (framed, "framed"),
        (b"not snappy at all".to_vec(), "snappy"),
        (truncated_protobuf, "protobuf PushRequest"),
    ];
    let loki = TestLoki::start().await;

    for (body, expected_reason) in cases {
        let reason = assert_rejected(&loki, body, StatusCode::BAD_REQUEST).await;
        assert!(reason.contains(expected_reason), "{reason}");
    }
}

#[tokio::test]
async fn requires_the_protobuf_content_type_and_no_content_encoding() {
    let loki = TestLoki::start().await;
    let body = one_entry_push(r#"{job="a"}"#);

    for content_type in [None, Some("application/json"), Some("text/plain")] {
        let response = post(&loki, content_type, body.clone()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{content_type:?}");
    }
    let gzipped = reqwest::Client::new()
        .post(loki.push_url())
        .header("content-type", PROTOBUF)
        .header("content-encoding", "gzip")
        .body(body.clone())
        .send()
        .await
        .expect("the test Loki answers");
    assert_eq!(gzipped.status(), StatusCode::BAD_REQUEST);
    let with_charset = post(&loki, Some("application/x-protobuf; charset=utf-8"), body).await;
    assert_eq!(with_charset.status(), StatusCode::NO_CONTENT);

    let rejections = loki.rejections();
    assert_eq!(rejections.len(), 4, "{rejections:?}");
    assert!(rejections[..3].iter().all(|reason| reason.contains("unsupported Content-Type")));
    assert!(rejections[3].contains("Content-Encoding \"gzip\" not supported"));
    assert_eq!(loki.pushes().len(), 1);
}

#[tokio::test]
async fn refuses_other_paths_and_methods() {
    let loki = TestLoki::start().await;
    let client = reqwest::Client::new();

    let wrong_path = client
        .post(format!("http://{}/api/prom/push", loki.addr()))
        .send()
        .await
        .expect("the test Loki answers");
    let wrong_method = client.get(loki.push_url()).send().await.expect("the test Loki answers");

    assert_eq!(wrong_path.status(), StatusCode::NOT_FOUND);
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(loki.rejections().len(), 2);
    assert_eq!(loki.requests(), 2);
}

#[tokio::test]
async fn answers_queued_faults_in_order_then_handles_pushes_normally() {
    let loki = TestLoki::start().await;
    loki.push_faults([Fault::Status(500), Fault::Status(429), Fault::Status(502)]);
    let mut answers = Vec::new();

    for _ in 0..4 {
        let response = post_push(&loki, one_entry_push(r#"{job="a"}"#)).await;
        let status = response.status().as_u16();
        answers.push((status, response.text().await.expect("the answer has a body")));
    }

    let expected = [(500, "injected 500\n"), (429, "injected 429\n"), (502, "injected 502\n")];
    for (answer, (status, body)) in answers.iter().zip(expected) {
        assert_eq!((answer.0, answer.1.as_str()), (status, body));
    }
    assert_eq!(answers[3].0, 204, "normal handling resumes once the queue is empty");
    assert_eq!(loki.pushes().len(), 1, "pushes answered by a fault are not recorded");
    assert_eq!(loki.requests(), 4);
    assert_eq!(loki.faults_applied(), 3);
    assert_eq!(loki.rejections(), Vec::<String>::new());
}

#[tokio::test]
async fn sends_retry_after_with_the_injected_status() {
    let loki = TestLoki::start().await;
    loki.push_faults([Fault::StatusRetryAfter(429, 7)]);

    let response = post_push(&loki, one_entry_push(r#"{job="a"}"#)).await;

    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = response.headers().get("retry-after").expect("Retry-After is sent");
    assert_eq!(retry_after, "7");
    assert!(loki.pushes().is_empty());
}

#[tokio::test]
async fn applies_the_default_fault_after_the_queue_until_it_is_cleared() {
    let loki = TestLoki::start().await;
    loki.set_default_fault(Some(Fault::Status(500)));
    loki.push_faults([Fault::Status(503)]);
    let mut statuses = Vec::new();

    for _ in 0..3 {
        statuses.push(post_push(&loki, one_entry_push(r#"{job="a"}"#)).await.status().as_u16());
    }
    loki.set_default_fault(None);
    statuses.push(post_push(&loki, one_entry_push(r#"{job="a"}"#)).await.status().as_u16());

    assert_eq!(statuses, [503, 500, 500, 204]);
    assert_eq!(loki.pushes().len(), 1);
    assert_eq!(loki.faults_applied(), 3);
}

#[tokio::test]
async fn delay_fault_slows_the_answer_and_still_accepts_the_push() {
    let loki = TestLoki::start().await;
    let delay = Duration::from_millis(300);
    loki.push_faults([Fault::Delay(delay), Fault::Delay(Duration::from_secs(1))]);

    let started = Instant::now();
    let response = post_push(&loki, one_entry_push(r#"{job="slow"}"#)).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(started.elapsed() >= delay, "answered after {:?}", started.elapsed());

    // A client that gives up does not stop the push from landing, as with a real slow Loki.
    let impatient = reqwest::Client::new()
        .post(loki.push_url())
        .header("content-type", PROTOBUF)
        .body(one_entry_push(r#"{job="late"}"#))
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(impatient.is_err_and(|error| error.is_timeout()));
    let entries = loki.wait_for_entries(2, WAIT).await;
    assert_eq!(entries[1].labels, labels(&[("job", "late")]));
    assert_eq!(loki.faults_applied(), 2);
}

#[tokio::test]
async fn shutdown_refuses_connections_and_restart_keeps_address_and_state() {
    let loki = TestLoki::start().await;
    let address = loki.addr();
    assert_eq!(post_push(&loki, one_entry_push(r#"{job="a"}"#)).await.status(), 204);

    loki.shutdown().await;
    let while_down = reqwest::Client::new()
        .post(loki.push_url())
        .header("content-type", PROTOBUF)
        .body(one_entry_push(r#"{job="b"}"#))
        .send()
        .await;
    assert!(while_down.is_err_and(|error| error.is_connect()));

    loki.restart().await;
    assert_eq!(loki.addr(), address);
    assert_eq!(post_push(&loki, one_entry_push(r#"{job="c"}"#)).await.status(), 204);
    let jobs: Vec<String> =
        loki.entries().into_iter().map(|entry| entry.labels["job"].clone()).collect();
    assert_eq!(jobs, ["a", "c"]);
    assert_eq!(loki.requests(), 2);
}

#[tokio::test]
async fn wait_for_entries_returns_once_enough_arrive() {
    let loki = TestLoki::start().await;
    let url = loki.push_url();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let body = body_of(vec![stream(r#"{job="a"}"#, vec![entry(1, "x"), entry(2, "y")])]);
        let client = reqwest::Client::new();
        client.post(url).header("content-type", PROTOBUF).body(body).send().await
    });

    let entries = loki.wait_for_entries(2, WAIT).await;

    assert_eq!(entries.len(), 2);
    let response = sender.await.expect("the sender finishes").expect("the push is answered");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

/// Runs `wait_for_entries` in a task of its own and returns the message it panicked with.
async fn wait_for_entries_panic(loki: TestLoki, count: usize, timeout: Duration) -> String {
    let waiting = tokio::spawn(async move { loki.wait_for_entries(count, timeout).await });
    let error = waiting.await.expect_err("the wait panics");
    let payload = error.try_into_panic().expect("the wait panicked rather than being cancelled");
    *payload.downcast::<String>().expect("the panic message is formatted text")
}

#[tokio::test]
async fn wait_for_entries_panics_at_the_timeout_listing_rejections() {
    let loki = TestLoki::start().await;
    let response = post_push(&loki, one_entry_push("{}")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let message = wait_for_entries_panic(loki, 1, Duration::from_millis(200)).await;

    assert!(message.starts_with("timed out after 200ms waiting for 1 accepted entries"));
    assert!(message.contains("0 accepted entries in 0 pushes, 1 requests"), "{message}");
    let rejection = r#"rejections: ["error at least one label pair is required per stream"]"#;
    assert!(message.contains(rejection), "{message}");
}

#[tokio::test]
async fn a_handler_panic_is_answered_with_500_and_fails_the_wait_at_once() {
    let loki = TestLoki::start().await;
    loki.push_faults([Fault::Panic]);

    let response = post_push(&loki, one_entry_push(r#"{job="a"}"#)).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(loki.handler_panics(), ["injected panic"]);

    let started = Instant::now();
    let message = wait_for_entries_panic(loki, 1, WAIT).await;
    assert!(started.elapsed() < WAIT, "the wait fails without waiting for the timeout");
    assert!(message.contains("handler panicked"), "{message}");
    assert!(message.contains("injected panic"), "{message}");
}

#[tokio::test]
#[should_panic(expected = "the test Loki handler panicked: [\"injected panic\"]")]
async fn a_handler_panic_fails_the_test_when_the_receiver_is_dropped() {
    let loki = TestLoki::start().await;
    loki.push_faults([Fault::Panic]);

    let response = post_push(&loki, one_entry_push(r#"{job="a"}"#)).await;

    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

proptest! {
    /// Any value written as a JSON string (a subset of Go's quoting) reads back unchanged.
    #[test]
    fn label_values_round_trip_through_go_quoting(
        name in "[a-zA-Z_][a-zA-Z0-9_]{0,12}",
        value in any::<String>(),
    ) {
        let quoted = serde_json::to_string(&value).expect("strings serialize");
        let selector = format!("{{{name}={quoted}}}");
        prop_assert_eq!(parse_label_string(&selector), Ok(vec![(name, value)]));
    }
}
