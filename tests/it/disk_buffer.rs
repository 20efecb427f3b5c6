//! The disk buffer: acks once records are on disk, replay after a crash, recovery from
//! damaged segments, and a full disk slowing clients instead of losing lines.

use std::path::Path;
use std::time::Duration;

use fwd2loki::config::BufferKind;
use fwd2loki::forward::client::{Mode, OutgoingEvent, TimeFormat};
use fwd2loki::pipeline::ShutdownOutcome;

use crate::support::loki::{Fault, TestLoki};
use crate::support::shipper::{BinaryShipper, PATIENCE, Shipper, docker_record, send_records};

const T0: i64 = 1_764_000_000_000_000_000;

fn record(n: usize) -> OutgoingEvent {
    OutgoingEvent::from_json(T0 + n as i64, &docker_record("/app", &format!("line {n}")))
}

fn disk_config(loki: &TestLoki, dir: &Path) -> String {
    format!(
        "[loki]\nurl = \"{}\"\nbatch_wait = \"50ms\"\nmin_backoff = \"20ms\"\nmax_backoff = \"100ms\"\n\
         [buffer]\ntype = \"disk\"\npath = \"{}\"\nmax_bytes = \"64MiB\"\n",
        loki.push_url(),
        dir.display()
    )
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    files.sort();
    files
}

/// The first segment file that holds records (the writer's last one may be empty).
fn first_written_segment(dir: &Path) -> std::path::PathBuf {
    segment_files(dir)
        .into_iter()
        .find(|path| std::fs::metadata(path).unwrap().len() > 0)
        .expect("a segment with records")
}

#[tokio::test]
async fn every_acked_record_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let loki = TestLoki::start().await;
    // Loki refuses everything: acks can only come from the disk buffer.
    loki.set_default_fault(Some(Fault::Status(503)));
    let shipper = BinaryShipper::start(&disk_config(&loki, dir.path()));

    let mut stream = tokio::net::TcpStream::connect(shipper.tcp).await.unwrap();
    let (acked_tx, mut acked_rx) = tokio::sync::watch::channel(0usize);
    let sender = tokio::spawn(async move {
        for n in 0.. {
            let mut requests = Vec::new();
            let events = [record(n)];
            let chunk = format!("chunk-{n}");
            let chunks = fwd2loki::forward::client::encode_requests(
                "t",
                Mode::Message,
                TimeFormat::EventTime,
                &events,
                Some(&chunk),
                &mut requests,
            );
            if fwd2loki::forward::client::send_requests(&mut stream, &requests, &chunks)
                .await
                .is_err()
            {
                return;
            }
            acked_tx.send_replace(n + 1);
        }
    });
    // Kill in the middle of the run, with requests in flight.
    acked_rx.wait_for(|acked| *acked >= 200).await.unwrap();
    drop(shipper); // SIGKILL
    let _ = sender.await;
    let acked = *acked_rx.borrow();
    assert!(loki.entries().is_empty(), "nothing reached Loki before the crash");

    loki.set_default_fault(None);
    let restarted = BinaryShipper::start(&disk_config(&loki, dir.path()));
    let entries = loki.wait_for_entries(acked, PATIENCE).await;
    let mut lines: Vec<&str> = entries.iter().map(|entry| entry.line.as_str()).collect();
    lines.sort();
    lines.dedup();
    for n in 0..acked {
        assert!(lines.binary_search(&format!("line {n}").as_str()).is_ok(), "acked line {n} lost");
    }
    eprintln!(
        "kill -9 after {acked} acked records: all arrived after restart ({} entries)",
        entries.len()
    );
    let (code, _) = tokio::task::spawn_blocking(move || restarted.terminate()).await.unwrap();
    assert_eq!(code, 0);
}

/// Fills a disk buffer in `dir` with lines `0..count` while Loki is down, then stops.
async fn persist_records(dir: &Path, count: usize) {
    let loki = TestLoki::start().await;
    loki.set_default_fault(Some(Fault::Status(503)));
    let shipper = Shipper::start(&loki, |config| {
        config.buffer.kind = BufferKind::Disk;
        config.buffer.path = Some(dir.to_owned());
    })
    .await;
    let mut stream = shipper.connect().await;
    // Separate requests, so that separate records are written.
    for n in 0..count {
        send_records(&mut stream, Mode::Message, TimeFormat::EventTime, &[record(n)], true).await;
    }
    drop(stream);
    let outcome = shipper.stop(Duration::from_millis(500)).await;
    assert_eq!(outcome, ShutdownOutcome::Persisted);
}

/// Starts a shipper on the buffer in `dir` and returns the lines it delivers and its count of
/// damaged records.
async fn replay(dir: &Path, expected: usize) -> (Vec<String>, u64) {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |config| {
        config.buffer.kind = BufferKind::Disk;
        config.buffer.path = Some(dir.to_owned());
    })
    .await;
    let entries = loki.wait_for_entries(expected, PATIENCE).await;
    let corrupt = shipper.metrics().disk_records_corrupt.get();
    assert_eq!(shipper.stop(PATIENCE).await, ShutdownOutcome::Delivered);
    (entries.into_iter().map(|entry| entry.line).collect(), corrupt)
}

#[tokio::test]
async fn a_torn_last_write_is_skipped_and_the_rest_replayed() {
    let dir = tempfile::tempdir().unwrap();
    persist_records(dir.path(), 20).await;
    let segment = first_written_segment(dir.path());
    let len = std::fs::metadata(&segment).unwrap().len();
    // Cut the last record in half, as a crash in the middle of a write would.
    let file = std::fs::OpenOptions::new().write(true).open(&segment).unwrap();
    file.set_len(len - 20).unwrap();

    let (lines, corrupt) = replay(dir.path(), 19).await;
    let expected: Vec<String> = (0..19).map(|n| format!("line {n}")).collect();
    assert_eq!(lines, expected);
    assert_eq!(corrupt, 1);
    assert!(
        segment_files(dir.path()).iter().all(|path| std::fs::metadata(path).unwrap().len() == 0),
        "delivered segments are deleted"
    );
}

#[tokio::test]
async fn a_damaged_record_is_skipped_and_the_rest_replayed() {
    let dir = tempfile::tempdir().unwrap();
    persist_records(dir.path(), 20).await;
    let segment = first_written_segment(dir.path());
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();

    let (lines, corrupt) = replay(dir.path(), 19).await;
    assert_eq!(lines.len(), 19, "one record lost to the damage: {lines:?}");
    assert_eq!(corrupt, 1);
}

#[tokio::test]
async fn a_full_disk_buffer_holds_clients_back_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let loki = TestLoki::start().await;
    loki.set_default_fault(Some(Fault::Status(503)));
    let shipper = Shipper::start(&loki, |config| {
        config.buffer.kind = BufferKind::Disk;
        config.buffer.path = Some(dir.path().to_owned());
        config.buffer.max_bytes = 256 << 10;
    })
    .await;
    let mut stream = shipper.connect().await;
    let line = "x".repeat(4096);
    let events: Vec<_> = (0..200)
        .map(|n| OutgoingEvent::from_json(T0 + n, &docker_record("/app", &format!("{n} {line}"))))
        .collect();
    let mut sender = tokio::spawn(async move {
        for event in events.chunks(1) {
            send_records(&mut stream, Mode::Message, TimeFormat::EventTime, event, true).await;
        }
    });
    // 800 KiB into a 256 KiB buffer: the client cannot finish while Loki is down.
    while shipper.metrics().disk_buffer_bytes.get() < 200 << 10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(tokio::time::timeout(Duration::from_millis(300), &mut sender).await.is_err());
    assert!(shipper.metrics().disk_buffer_bytes.get() <= 256 << 10);

    loki.set_default_fault(None);
    tokio::time::timeout(PATIENCE, sender).await.expect("the client finishes").unwrap();
    let entries = loki.wait_for_entries(200, PATIENCE).await;
    assert!(entries.len() >= 200);
}
