//! The core pipeline end to end: forward requests in over real sockets, pushes decoded by the
//! test Loki out.

use std::time::Duration;

use fwd2loki::config::LineFormat;
use fwd2loki::forward::client::{Mode, OutgoingEvent, TimeFormat};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::loki::TestLoki;
use crate::support::shipper::{
    BinaryShipper, CONTAINER_ID, HOSTNAME, PATIENCE, Shipper, docker_labels, docker_record,
    send_records,
};

/// 2025-11-24T16:00:00.123456789Z.
const T0: i64 = 1_764_000_000_123_456_789;

fn events(records: &[serde_json::Value]) -> Vec<OutgoingEvent> {
    records
        .iter()
        .enumerate()
        .map(|(index, record)| OutgoingEvent::from_json(T0 + index as i64, record))
        .collect()
}

#[tokio::test]
async fn reference_example_over_tcp_with_the_real_binary() {
    let loki = TestLoki::start().await;
    let config = format!(
        "[loki]\nurl = \"{}\"\nlabels = {{ job = \"fluent-bit\", hostname = \"{HOSTNAME}\" }}\n",
        loki.push_url()
    );
    let shipper = BinaryShipper::start(&config);
    let mut stream = tokio::net::TcpStream::connect(shipper.tcp).await.unwrap();

    let line = "2025-11-24 16:00:00 GET /wiki/home 200 \"quoted\" \\ tab\tend";
    let mut with_extra = docker_record("/wiki-js", "second line");
    with_extra["com.example.team"] = json!("web");
    let events = [
        OutgoingEvent::from_json(T0, &docker_record("/wiki-js", line)),
        OutgoingEvent::from_json(T0 + 1, &with_extra),
    ];
    send_records(&mut stream, Mode::Message, TimeFormat::EventTime, &events, false).await;

    let entries = loki.wait_for_entries(2, PATIENCE).await;
    assert_eq!(entries[0].labels, docker_labels("/wiki-js"));
    assert_eq!(entries[0].line, line, "the line exactly as the container wrote it");
    assert_eq!(entries[0].timestamp_ns, i128::from(T0), "nanoseconds are kept");
    assert_eq!(entries[1].labels, docker_labels("/wiki-js"));
    let extra: serde_json::Value = serde_json::from_str(&entries[1].line).unwrap();
    assert_eq!(extra, json!({"log": "second line", "com.example.team": "web"}));
    assert!(!entries[1].line.contains(CONTAINER_ID), "container_id is removed");

    let push = &loki.pushes()[0];
    assert_eq!(push.content_type, "application/x-protobuf");
    assert!(push.user_agent.starts_with("fwd2loki/"), "{}", push.user_agent);
    assert_eq!(push.tenant, None);
    assert!(push.streams.iter().all(|stream| stream.labels_sorted));
    assert_eq!(
        push.streams[0].label_string,
        format!(r#"{{container_name="/wiki-js", hostname="{HOSTNAME}", job="fluent-bit"}}"#)
    );
    assert!(loki.rejections().is_empty(), "{:?}", loki.rejections());

    let (code, stdout) = shipper.terminate();
    assert_eq!(code, 0);
    assert!(stdout.is_empty(), "nothing printed when a Loki URL is set: {stdout}");
}

#[tokio::test]
async fn docker_integer_second_times_arrive_as_whole_seconds() {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |_| {}).await;
    let mut stream = shipper.connect().await;
    let events = events(&[docker_record("/app", "a")]);
    send_records(&mut stream, Mode::Message, TimeFormat::Integer, &events, false).await;

    let entries = loki.wait_for_entries(1, PATIENCE).await;
    assert_eq!(entries[0].timestamp_ns, i128::from(T0 / 1_000_000_000 * 1_000_000_000));
    assert_eq!(entries[0].line, "a");
}

#[tokio::test]
async fn every_mode_delivers_every_event_in_order() {
    for mode in [Mode::Message, Mode::Forward, Mode::Packed, Mode::Compressed] {
        let loki = TestLoki::start().await;
        let shipper = Shipper::start(&loki, |_| {}).await;
        let mut stream = shipper.connect().await;
        let records: Vec<_> =
            (0..50).map(|i| docker_record("/app", &format!("{mode:?} line {i}"))).collect();
        send_records(&mut stream, mode, TimeFormat::EventTime, &events(&records), false).await;

        let entries = loki.wait_for_entries(50, PATIENCE).await;
        for (index, entry) in entries.iter().enumerate() {
            assert_eq!(entry.line, format!("{mode:?} line {index}"));
            assert_eq!(entry.timestamp_ns, i128::from(T0 + index as i64));
        }
        assert!(loki.rejections().is_empty(), "{mode:?}: {:?}", loki.rejections());
    }
}

#[tokio::test]
async fn acks_answer_every_chunk_in_every_mode() {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |_| {}).await;
    let mut stream = shipper.connect().await;
    for mode in [Mode::Message, Mode::Forward, Mode::Packed, Mode::Compressed] {
        let records = [docker_record("/app", "x"), docker_record("/app", "y")];
        // send_records fails unless each request's ack echoes its chunk id.
        send_records(&mut stream, mode, TimeFormat::EventTime, &events(&records), true).await;
    }
    // Message mode sends two requests, the others one each.
    loki.wait_for_entries(8, PATIENCE).await;
}

#[tokio::test]
async fn float_and_ext8_event_times_are_read() {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |_| {}).await;
    let mut stream = shipper.connect().await;

    let record = rmp_serde::to_vec_named(&json!({"log": "float"})).unwrap();
    // ["t", 1.5, {"log": "float"}] -- Message mode with a float64 time.
    let mut request = vec![0x93, 0xa1, b't', 0xcb];
    request.extend_from_slice(&1.5f64.to_be_bytes());
    request.extend_from_slice(&record);
    // ["t", ext8(type 0, 8 bytes: 3 s, 7 ns), {"log": "ext8"}]
    let record = rmp_serde::to_vec_named(&json!({"log": "ext8"})).unwrap();
    request.extend_from_slice(&[0x93, 0xa1, b't', 0xc7, 0x08, 0x00, 0, 0, 0, 3, 0, 0, 0, 7]);
    request.extend_from_slice(&record);
    stream.write_all(&request).await.unwrap();

    let entries = loki.wait_for_entries(2, PATIENCE).await;
    let mut times: Vec<_> = entries.iter().map(|e| (e.line.clone(), e.timestamp_ns)).collect();
    times.sort();
    assert_eq!(times, [("ext8".into(), 3_000_000_007), ("float".into(), 1_500_000_000)]);
}

#[tokio::test]
async fn unix_socket_delivers() {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |_| {}).await;
    let mut stream = shipper.connect_unix().await;
    let events = events(&[docker_record("/over-unix", "via the socket")]);
    send_records(&mut stream, Mode::Message, TimeFormat::EventTime, &events, true).await;

    let entries = loki.wait_for_entries(1, PATIENCE).await;
    assert_eq!(entries[0].labels, docker_labels("/over-unix"));
    assert_eq!(entries[0].line, "via the socket");
}

#[tokio::test]
async fn batches_are_cut_by_size() {
    let loki = TestLoki::start().await;
    // A wait far beyond the test's patience: only the size can cut these batches.
    let shipper = Shipper::start(&loki, |config| {
        config.loki.batch_size = 1000;
        config.loki.batch_wait = Duration::from_secs(3600);
    })
    .await;
    let mut stream = shipper.connect().await;
    let line = "x".repeat(300);
    let records: Vec<_> = (0..10).map(|_| docker_record("/app", &line)).collect();
    send_records(&mut stream, Mode::Forward, TimeFormat::EventTime, &events(&records), false).await;

    // Three entries of 300 bytes fit in 1000; the tenth waits in the open batch.
    let entries = loki.wait_for_entries(9, PATIENCE).await;
    assert_eq!(entries.len(), 9);
    let pushes = loki.pushes();
    assert_eq!(pushes.len(), 3);
    for push in pushes {
        let bytes: usize = push.streams.iter().flat_map(|s| &s.entries).map(|e| e.line.len()).sum();
        assert_eq!(bytes, 900);
    }
}

#[tokio::test]
async fn batches_are_cut_by_time() {
    let loki = TestLoki::start().await;
    // A size no test reaches: only batch_wait can send this entry.
    let shipper = Shipper::start(&loki, |config| {
        config.loki.batch_size = 1 << 30;
        config.buffer.max_bytes = 1 << 30;
        config.loki.batch_wait = Duration::from_millis(200);
    })
    .await;
    let mut stream = shipper.connect().await;
    let events = events(&[docker_record("/app", "alone")]);
    send_records(&mut stream, Mode::Message, TimeFormat::EventTime, &events, false).await;
    let entries = loki.wait_for_entries(1, PATIENCE).await;
    assert_eq!(entries[0].line, "alone");
}

#[tokio::test]
async fn streams_are_sorted_by_time_within_a_push() {
    let loki = TestLoki::start().await;
    // With keep_arrival_order, entries this close would be moved into arrival order instead.
    let shipper = Shipper::start(&loki, |config| config.loki.keep_arrival_order = false).await;
    let mut stream = shipper.connect().await;
    let at = |offset: i64, line: &str| {
        OutgoingEvent::from_json(T0 + offset, &docker_record("/app", line))
    };
    let events = [at(30, "third"), at(10, "first"), at(20, "second"), at(20, "second-b")];
    send_records(&mut stream, Mode::Forward, TimeFormat::EventTime, &events, false).await;

    let entries = loki.wait_for_entries(4, PATIENCE).await;
    let lines: Vec<_> = entries.iter().map(|entry| entry.line.as_str()).collect();
    assert_eq!(lines, ["first", "second", "second-b", "third"]);
    assert!(loki.rejections().is_empty(), "{:?}", loki.rejections());
}

#[tokio::test]
async fn several_containers_make_several_streams_in_one_push() {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |_| {}).await;
    for name in ["/web", "/db", "/cache"] {
        let mut stream = shipper.connect().await;
        let events = events(&[docker_record(name, name)]);
        send_records(&mut stream, Mode::Message, TimeFormat::EventTime, &events, true).await;
    }
    let entries = loki.wait_for_entries(3, PATIENCE).await;
    for entry in entries {
        assert_eq!(entry.labels, docker_labels(&entry.line));
    }
}

#[tokio::test]
async fn every_line_format_and_label_sanitising() {
    let record = json!({"container.name": "web", "level": "info", "msg": "two words", "log": "L"});
    let cases = [
        (LineFormat::Json, r#"{"level":"info","log":"L","msg":"two words"}"#),
        (LineFormat::KeyValue, r#"level=info log=L msg="two words""#),
        (LineFormat::Raw, "L"),
    ];
    for (format, expected) in cases {
        let loki = TestLoki::start().await;
        let shipper = Shipper::start(&loki, |config| {
            config.loki.line_format = format;
            config.loki.label_keys = vec!["container.name".into()];
        })
        .await;
        let mut stream = shipper.connect().await;
        let events = events(std::slice::from_ref(&record));
        send_records(&mut stream, Mode::Message, TimeFormat::EventTime, &events, false).await;

        let entries = loki.wait_for_entries(1, PATIENCE).await;
        assert_eq!(entries[0].line, expected, "{format:?}");
        assert_eq!(entries[0].labels["container_name"], "web", "sanitised label name");
    }
}

#[tokio::test]
async fn a_bad_request_closes_only_its_connection_and_keeps_what_came_before() {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |_| {}).await;
    let mut good = shipper.connect().await;
    let mut bad = shipper.connect().await;

    // A valid request followed, in the same write, by a request whose tag is not a string.
    let mut bytes = Vec::new();
    let before = [OutgoingEvent::from_json(T0, &docker_record("/bad", "sent before the garbage"))];
    fwd2loki::forward::client::encode_requests(
        "t",
        Mode::Message,
        TimeFormat::EventTime,
        &before,
        None,
        &mut bytes,
    );
    bytes.extend_from_slice(&[0x93, 0x01, 0x02, 0x80]);
    bad.write_all(&bytes).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, bad.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the bad connection is closed");

    let events = events(&[docker_record("/good", "still flowing")]);
    send_records(&mut good, Mode::Message, TimeFormat::EventTime, &events, true).await;
    let mut lines: Vec<_> =
        loki.wait_for_entries(2, PATIENCE).await.into_iter().map(|e| e.line).collect();
    lines.sort();
    assert_eq!(lines, ["sent before the garbage", "still flowing"]);
}

#[tokio::test]
async fn heartbeats_are_ignored_and_unknown_shapes_refused() {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |_| {}).await;

    let mut stream = shipper.connect().await;
    stream.write_all(&[0xc0, 0xc0]).await.unwrap();
    let events = events(&[docker_record("/app", "after heartbeats")]);
    send_records(&mut stream, Mode::Message, TimeFormat::EventTime, &events, true).await;
    assert_eq!(loki.wait_for_entries(1, PATIENCE).await[0].line, "after heartbeats");

    // A well-formed array of one element: no mode has that shape.
    for unknown in [&[0x91, 0xa1, b't'][..], &[0x92, 0xa1, b't', 0xc0], &[0xa3, b'a', b'b', b'c']] {
        let mut stream = shipper.connect().await;
        stream.write_all(unknown).await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{unknown:02x?} closes the connection");
    }
}

#[tokio::test]
async fn requests_split_into_single_bytes_are_reassembled() {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |_| {}).await;
    let mut stream = shipper.connect().await;
    let records: Vec<_> = (0..3).map(|i| docker_record("/app", &format!("split {i}"))).collect();
    let mut bytes = Vec::new();
    fwd2loki::forward::client::encode_requests(
        "t",
        Mode::Forward,
        TimeFormat::EventTime,
        &events(&records),
        None,
        &mut bytes,
    );
    for byte in bytes {
        stream.write_all(&[byte]).await.unwrap();
        stream.flush().await.unwrap();
    }
    let entries = loki.wait_for_entries(3, PATIENCE).await;
    assert_eq!(entries[2].line, "split 2");
}
