//! What operators see: Prometheus metrics, health and readiness, and JSON logs.

use std::sync::Arc;
use std::time::Duration;

use fwd2loki::forward::client::{Mode, OutgoingEvent, TimeFormat};
use fwd2loki::metrics::Metrics;
use fwd2loki::pipeline::Pipeline;
use fwd2loki::server::{Server, ServerState};
use tokio::io::AsyncWriteExt;

use crate::support::loki::{Fault, TestLoki};
use crate::support::shipper::{BinaryShipper, PATIENCE, docker_record, send_records, test_config};

const T0: i64 = 1_764_000_000_000_000_000;

fn records(first: usize, count: usize) -> Vec<OutgoingEvent> {
    (first..first + count)
        .map(|n| OutgoingEvent::from_json(T0 + n as i64, &docker_record("/app", &format!("{n}"))))
        .collect()
}

/// Scrapes `/metrics` and parses it with a real exposition-format parser.
async fn scrape(http: std::net::SocketAddr) -> prometheus_parse::Scrape {
    let response = reqwest::get(format!("http://{http}/metrics")).await.expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let text = response.text().await.unwrap();
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("valid exposition format")
}

/// The value of the sample `name` whose labels include `labels`.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|sample| {
            sample.metric == name
                && labels.iter().all(|(key, value)| sample.labels.get(key) == Some(*value))
        })
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"));
    match sample.value {
        prometheus_parse::Value::Counter(value)
        | prometheus_parse::Value::Gauge(value)
        | prometheus_parse::Value::Untyped(value) => value,
        ref other => panic!("{name} is not a plain number: {other:?}"),
    }
}

#[tokio::test]
async fn metrics_count_what_was_sent_pushed_and_dropped() {
    let loki = TestLoki::start().await;
    let config = format!("[loki]\nurl = \"{}\"\nbatch_wait = \"50ms\"\n", loki.push_url());
    let shipper = BinaryShipper::start(&config);
    let mut stream = tokio::net::TcpStream::connect(shipper.tcp).await.unwrap();

    send_records(&mut stream, Mode::Forward, TimeFormat::EventTime, &records(0, 10), true).await;
    loki.push_faults([Fault::Status(400)]);
    send_records(&mut stream, Mode::Forward, TimeFormat::EventTime, &records(10, 5), true).await;
    let mut garbage = tokio::net::TcpStream::connect(shipper.tcp).await.unwrap();
    garbage.write_all(&[0xc1]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let scrape = scrape(shipper.http).await;
    let listener = shipper.tcp.to_string();
    let by_listener = [("listener", listener.as_str())];
    assert_eq!(value(&scrape, "fwd2loki_records_received_total", &by_listener), 15.0);
    assert!(value(&scrape, "fwd2loki_received_bytes_total", &by_listener) > 0.0);
    assert_eq!(value(&scrape, "fwd2loki_connections_open", &by_listener), 1.0);
    assert_eq!(value(&scrape, "fwd2loki_entries_pushed_total", &[]), 10.0);
    assert_eq!(value(&scrape, "fwd2loki_entries_dropped_total", &[("reason", "loki_400")]), 5.0);
    assert_eq!(value(&scrape, "fwd2loki_loki_requests_total", &[("status", "204")]), 1.0);
    assert_eq!(value(&scrape, "fwd2loki_loki_requests_total", &[("status", "400")]), 1.0);
    assert_eq!(
        value(&scrape, "fwd2loki_input_errors_total", &[("reason", "invalid_msgpack")]),
        1.0
    );
    assert_eq!(value(&scrape, "fwd2loki_buffer_bytes", &[]), 0.0);
    assert!(
        scrape.samples.iter().any(|sample| sample.metric == "fwd2loki_push_duration_seconds_count"
            || sample.metric == "fwd2loki_push_duration_seconds")
    );
    assert_eq!(
        value(&scrape, "fwd2loki_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );
}

#[tokio::test]
async fn health_and_ready_answer() {
    let loki = TestLoki::start().await;
    let shipper = BinaryShipper::start(&format!("[loki]\nurl = \"{}\"\n", loki.push_url()));
    for path in ["health", "ready"] {
        let response = reqwest::get(format!("http://{}/{path}", shipper.http)).await.unwrap();
        assert_eq!(response.status(), 200, "/{path}");
    }
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_fwd2loki"))
        .args(["health", "--url", &format!("http://{}/health", shipper.http)])
        .status()
        .unwrap();
    assert!(status.success(), "fwd2loki health exits 0 for a live fwd2loki");
    drop(shipper);
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_fwd2loki"))
        .args(["health", "--url", "http://127.0.0.1:9/health"])
        .status()
        .unwrap();
    assert!(!status.success(), "fwd2loki health fails when nothing answers");
}

#[tokio::test]
async fn ready_is_503_until_listeners_are_bound_and_pushers_started() {
    let loki = TestLoki::start().await;
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let state = ServerState::new(Arc::clone(&metrics));
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let address = server.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(server.serve(state.clone(), stop.clone()));
    let ready =
        || async { reqwest::get(format!("http://{address}/ready")).await.unwrap().status() };

    assert_eq!(ready().await, 503);
    let pipeline =
        Pipeline::start_with_metrics(&test_config(&loki, dir.path()), metrics).await.unwrap();
    state.set_ready(true);
    assert_eq!(ready().await, 200);
    state.set_ready(false);
    pipeline.shutdown(PATIENCE).await;
    assert_eq!(ready().await, 503, "not ready while shutting down");
    stop.cancel();
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let loki = TestLoki::start().await;
    loki.push_faults([Fault::Status(500), Fault::Status(400)]);
    let config = format!(
        "[loki]\nurl = \"{}\"\nmin_backoff = \"10ms\"\nmax_backoff = \"20ms\"\n",
        loki.push_url()
    );
    let shipper = BinaryShipper::start(&config);
    let mut stream = tokio::net::TcpStream::connect(shipper.tcp).await.unwrap();
    send_records(&mut stream, Mode::Forward, TimeFormat::EventTime, &records(0, 3), true).await;
    let mut garbage = tokio::net::TcpStream::connect(shipper.tcp).await.unwrap();
    garbage.write_all(b"\x91\xc1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let logs = shipper.logs();
    let (code, _) = tokio::task::spawn_blocking(move || shipper.terminate()).await.unwrap();
    assert_eq!(code, 0);
    assert!(logs.len() >= 5, "startup, retry, refusal and closed connection: {logs:#?}");
    for line in &logs {
        let log: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            log.is_object() && log["level"].is_string() && log["message"].is_string(),
            "{line}"
        );
    }
    let messages: Vec<&str> =
        logs.iter().filter_map(|line| line.split("\"message\":\"").nth(1)).collect();
    for expected in ["push failed; will retry", "loki refused a batch", "closing connection"] {
        assert!(
            messages.iter().any(|m| m.starts_with(expected)),
            "no {expected:?} in {messages:#?}"
        );
    }
}
