//! No line lost: Loki failing, slow, refusing or down, and fwd2loki shutting down.
//!
//! Each fault test sends records, injects the fault in the test Loki, and checks that every
//! record arrives once the fault is gone. Duplicates are possible (a push can be stored by
//! Loki after fwd2loki gave up waiting for the answer) and are reported, not forbidden, where
//! the fault allows them.

use std::collections::HashMap;
use std::time::Duration;

use fwd2loki::forward::client::{Mode, OutgoingEvent, TimeFormat, encode_requests};
use tokio::io::AsyncWriteExt;

use crate::support::loki::{Fault, ReceivedEntry, TestLoki};
use crate::support::shipper::{
    BinaryShipper, PATIENCE, Shipper, docker_record, resident_bytes, send_records,
};

const T0: i64 = 1_764_000_000_000_000_000;

/// `count` records of one container, numbered from `first`.
fn numbered(first: usize, count: usize) -> Vec<OutgoingEvent> {
    (first..first + count)
        .map(|n| {
            OutgoingEvent::from_json(T0 + n as i64, &docker_record("/app", &format!("line {n}")))
        })
        .collect()
}

/// Checks that lines `line 0` to `line {count - 1}` all arrived; returns how many arrived twice.
fn assert_all_arrived(entries: &[ReceivedEntry], count: usize, case: &str) -> usize {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for entry in entries {
        *seen.entry(entry.line.as_str()).or_default() += 1;
    }
    let missing: Vec<usize> =
        (0..count).filter(|n| !seen.contains_key(format!("line {n}").as_str())).collect();
    assert!(missing.is_empty(), "{case}: {} of {count} lines missing: {missing:?}", missing.len());
    let duplicates = seen.values().map(|times| times - 1).sum();
    eprintln!("{case}: all {count} records arrived, {duplicates} of them twice");
    duplicates
}

#[tokio::test]
async fn loki_failing_with_500_for_a_while_loses_nothing() {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |_| {}).await;
    loki.set_default_fault(Some(Fault::Status(500)));

    let mut stream = shipper.connect().await;
    send_records(&mut stream, Mode::Message, TimeFormat::EventTime, &numbered(0, 300), false).await;
    loki.wait_for_requests(4, PATIENCE).await;
    loki.set_default_fault(None);

    let entries = loki.wait_for_entries(300, PATIENCE).await;
    let duplicates = assert_all_arrived(&entries, 300, "500 for a while");
    assert_eq!(duplicates, 0, "a 500 stores nothing, so a retry cannot duplicate");
    assert!(shipper.metrics().push_retries.get() >= 3);
    assert_eq!(shipper.metrics().dropped_count("loki_500"), 0);
}

#[tokio::test]
async fn rate_limited_with_retry_after_loses_nothing() {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |_| {}).await;
    loki.push_faults([Fault::StatusRetryAfter(429, 1), Fault::StatusRetryAfter(429, 1)]);

    let mut stream = shipper.connect().await;
    send_records(&mut stream, Mode::Forward, TimeFormat::EventTime, &numbered(0, 200), false).await;

    let entries = loki.wait_for_entries(200, PATIENCE).await;
    assert_eq!(assert_all_arrived(&entries, 200, "429 with Retry-After"), 0);
    assert_eq!(shipper.metrics().push_retries.get(), 2);
}

#[tokio::test]
async fn loki_hanging_past_the_timeout_loses_nothing() {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |config| {
        config.loki.timeout = Duration::from_millis(300);
    })
    .await;
    loki.push_faults([Fault::Delay(Duration::from_secs(2)), Fault::Delay(Duration::from_secs(2))]);

    let mut stream = shipper.connect().await;
    send_records(&mut stream, Mode::Message, TimeFormat::EventTime, &numbered(0, 100), false).await;

    let entries = loki.wait_for_entries(100, PATIENCE).await;
    // The test Loki stores a push it was slow to answer, as a real one may: the retry can
    // then arrive twice.
    assert_all_arrived(&entries, 100, "hanging past the timeout");
    assert!(shipper.metrics().push_retries.get() >= 2);
}

#[tokio::test]
async fn loki_down_then_up_loses_nothing() {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |_| {}).await;
    loki.shutdown().await;

    let mut stream = shipper.connect().await;
    send_records(&mut stream, Mode::Message, TimeFormat::EventTime, &numbered(0, 300), false).await;
    let refused = || {
        let labels = fwd2loki::metrics::StatusLabels { status: "error".into() };
        shipper.metrics().loki_requests.get_or_create(&labels).get()
    };
    while refused() < 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loki.restart().await;

    let entries = loki.wait_for_entries(300, PATIENCE).await;
    assert_eq!(assert_all_arrived(&entries, 300, "down then up"), 0);
}

#[tokio::test]
async fn a_refused_batch_is_counted_as_dropped_and_later_batches_go_through() {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |_| {}).await;
    loki.push_faults([Fault::Status(400)]);

    let mut stream = shipper.connect().await;
    // Acks come back when the entries are handled: refused for good counts as handled.
    send_records(&mut stream, Mode::Forward, TimeFormat::EventTime, &numbered(0, 10), true).await;
    assert_eq!(shipper.metrics().dropped_count("loki_400"), 10);

    send_records(&mut stream, Mode::Forward, TimeFormat::EventTime, &numbered(10, 5), true).await;
    let entries = loki.wait_for_entries(5, PATIENCE).await;
    let lines: Vec<_> = entries.iter().map(|entry| entry.line.as_str()).collect();
    assert_eq!(lines, ["line 10", "line 11", "line 12", "line 13", "line 14"]);
    assert_eq!(shipper.metrics().entries_pushed.get(), 5);
}

#[tokio::test]
async fn a_batch_too_large_for_loki_is_split_and_delivered() {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |_| {}).await;
    loki.push_faults([Fault::Status(413), Fault::Status(413)]);

    let mut stream = shipper.connect().await;
    send_records(&mut stream, Mode::Forward, TimeFormat::EventTime, &numbered(0, 40), true).await;
    let entries = loki.wait_for_entries(40, PATIENCE).await;
    assert_eq!(assert_all_arrived(&entries, 40, "413"), 0);
    assert!(loki.pushes().len() >= 2, "the batch went in parts");
    assert_eq!(shipper.metrics().dropped_count("loki_413"), 0);
}

#[tokio::test]
async fn acks_wait_until_loki_has_the_entries() {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |_| {}).await;
    loki.set_default_fault(Some(Fault::Status(503)));

    let mut stream = shipper.connect().await;
    let mut acked = tokio::spawn(async move {
        send_records(&mut stream, Mode::Message, TimeFormat::EventTime, &numbered(0, 1), true)
            .await;
    });
    loki.wait_for_requests(3, PATIENCE).await;
    let early = tokio::time::timeout(Duration::from_millis(300), &mut acked).await;
    assert!(early.is_err(), "no ack while Loki refuses the entry");

    loki.set_default_fault(None);
    tokio::time::timeout(PATIENCE, acked).await.expect("ack after delivery").unwrap();
    assert_eq!(loki.entries().len(), 1);
}

#[tokio::test]
async fn overlong_lines_are_truncated_or_dropped_and_counted() {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |config| config.loki.max_line_bytes = 10).await;
    let mut stream = shipper.connect().await;
    let events = [
        OutgoingEvent::from_json(T0, &docker_record("/app", "0123456789-cut")),
        OutgoingEvent::from_json(T0 + 1, &docker_record("/app", "short")),
    ];
    send_records(&mut stream, Mode::Forward, TimeFormat::EventTime, &events, true).await;
    let lines: Vec<_> =
        loki.wait_for_entries(2, PATIENCE).await.into_iter().map(|e| e.line).collect();
    assert_eq!(lines, ["0123456789", "short"]);
    assert_eq!(shipper.metrics().lines_truncated.get(), 1);

    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |config| {
        config.loki.max_line_bytes = 10;
        config.loki.oversized_lines = fwd2loki::config::OversizedLines::Drop;
    })
    .await;
    let mut stream = shipper.connect().await;
    send_records(&mut stream, Mode::Forward, TimeFormat::EventTime, &events, true).await;
    let lines: Vec<_> =
        loki.wait_for_entries(1, PATIENCE).await.into_iter().map(|e| e.line).collect();
    assert_eq!(lines, ["short"]);
    assert_eq!(shipper.metrics().dropped_count("line_too_long"), 1);
}

#[tokio::test]
async fn concurrent_pushes_keep_each_stream_in_order() {
    const CONTAINERS: usize = 6;
    const PER_CONTAINER: usize = 300;
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |config| {
        config.loki.max_concurrent_pushes = 4;
        // Many small pushes, so that the lanes overlap.
        config.loki.batch_size = 2000;
        config.loki.min_backoff = Duration::from_millis(5);
        config.loki.max_backoff = Duration::from_millis(20);
    })
    .await;
    // Slow and failed answers among the first pushes: a push held up must not be overtaken by
    // a later push of its streams.
    let schedule = [Fault::Delay(Duration::from_millis(40)), Fault::Status(500)];
    loki.push_faults((0..30).map(|n| schedule[n % 2].clone()));

    let mut senders = tokio::task::JoinSet::new();
    for container in 0..CONTAINERS {
        let mut stream = shipper.connect().await;
        senders.spawn(async move {
            let name = format!("/app-{container}");
            let events: Vec<OutgoingEvent> = (0..PER_CONTAINER)
                .map(|n| {
                    let line = format!("{container}-{n} {}", "x".repeat(100));
                    let record = docker_record(&name, &line);
                    OutgoingEvent::from_json(T0 + n as i64, &record)
                })
                .collect();
            send_records(&mut stream, Mode::Message, TimeFormat::EventTime, &events, true).await;
        });
    }
    senders.join_all().await;
    loki.wait_for_entries(CONTAINERS * PER_CONTAINER, PATIENCE).await;

    // The pushes in the order Loki accepted them: each stream's timestamps only go forward.
    let mut last_seen: HashMap<String, (i128, usize)> = HashMap::new();
    for stream in loki.pushes().iter().flat_map(|push| &push.streams) {
        for entry in &stream.entries {
            let (last, count) = last_seen.entry(stream.label_string.clone()).or_insert((0, 0));
            assert!(
                entry.timestamp_ns >= *last,
                "{}: {} arrived after a later entry",
                stream.label_string,
                entry.line
            );
            *last = entry.timestamp_ns;
            *count += 1;
        }
    }
    assert_eq!(last_seen.len(), CONTAINERS);
    assert!(last_seen.values().all(|&(_, count)| count == PER_CONTAINER), "{last_seen:?}");
    assert!(loki.faults_applied() >= 30, "the faults were met");
}

#[tokio::test]
async fn shutdown_delivers_pending_batches_first() {
    let loki = TestLoki::start().await;
    // Batches that would wait an hour: only the shutdown can send them.
    let config = format!("[loki]\nurl = \"{}\"\nbatch_wait = \"1h\"\n", loki.push_url());
    let shipper = BinaryShipper::start(&config);
    let mut stream = tokio::net::TcpStream::connect(shipper.tcp).await.unwrap();
    send_records(&mut stream, Mode::Message, TimeFormat::EventTime, &numbered(0, 50), false).await;
    // Wait until the records are in fwd2loki's hands; the hour-long batch cannot have gone.
    let mut sent = Vec::new();
    encode_requests("t", Mode::Message, TimeFormat::EventTime, &numbered(50, 1), None, &mut sent);
    stream.write_all(&sent).await.unwrap();
    assert!(loki.entries().is_empty());

    let (code, _) = tokio::task::spawn_blocking(move || shipper.terminate()).await.unwrap();
    assert_eq!(code, 0, "a clean shutdown exits 0");
    assert_all_arrived(&loki.entries(), 51, "SIGTERM with pending batches");
}

#[tokio::test]
async fn loki_down_with_ten_times_the_buffer_offered_keeps_memory_bounded() {
    const BUFFER: u64 = 8 << 20;
    const LINE_BYTES: usize = 16 * 1024;
    const CONNECTIONS: usize = 4;
    const PER_CONNECTION: usize = 1280; // 4 x 1280 x 16 KiB = 80 MiB, ten times the buffer.

    let loki = TestLoki::start().await;
    loki.set_default_fault(Some(Fault::Status(503)));
    let config = format!(
        "[loki]\nurl = \"{}\"\nmin_backoff = \"50ms\"\nmax_backoff = \"200ms\"\n[buffer]\nmax_bytes = {BUFFER}\n",
        loki.push_url()
    );
    let shipper = BinaryShipper::start(&config);
    let idle = resident_bytes(shipper.pid());

    let mut senders = Vec::new();
    for connection in 0..CONNECTIONS {
        let mut stream = tokio::net::TcpStream::connect(shipper.tcp).await.unwrap();
        senders.push(tokio::spawn(async move {
            let line = format!("{connection}").repeat(LINE_BYTES);
            for n in 0..PER_CONNECTION {
                let record = docker_record(&format!("/app-{connection}"), &format!("{n} {line}"));
                let event = [OutgoingEvent::from_json(T0 + n as i64, &record)];
                send_records(&mut stream, Mode::Message, TimeFormat::Integer, &event, false).await;
            }
        }));
    }

    // While Loki refuses everything, fwd2loki fills its buffer and stops reading: the senders
    // stay blocked and memory stays near the buffer size.
    let mut peak = idle;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(resident_bytes(shipper.pid()));
    }
    let blocked = senders.iter().filter(|sender| !sender.is_finished()).count();
    eprintln!(
        "Loki down, 80 MiB offered: idle RSS {} KiB, peak RSS {} KiB, {blocked} of {CONNECTIONS} senders blocked",
        idle / 1024,
        peak / 1024
    );
    assert_eq!(blocked, CONNECTIONS, "every sender is held back, none is answered with loss");
    assert!(
        peak < idle + 3 * BUFFER,
        "peak RSS {peak} grew more than three buffers over idle {idle}"
    );

    loki.set_default_fault(None);
    for sender in senders {
        tokio::time::timeout(Duration::from_secs(120), sender)
            .await
            .expect("senders finish")
            .unwrap();
    }
    let total = CONNECTIONS * PER_CONNECTION;
    let entries = loki.wait_for_entries(total, Duration::from_secs(120)).await;
    assert!(entries.len() >= total);
}
