//! A forward client nobody here wrote: the `fluent-logger` package for Python (PyPI).
//!
//! `.ci/run` installs it; run `pip install fluent-logger` to run these tests elsewhere.

use std::process::Command;

use crate::support::loki::TestLoki;
use crate::support::shipper::{PATIENCE, Shipper, docker_labels};

/// Sends two Docker-shaped records with `fluent.sender.FluentSender`, one with integer seconds
/// and one with nanosecond precision (EventTime).
const SCRIPT: &str = r#"
import sys
from fluent import sender, event
port = int(sys.argv[1])
record = lambda line: {"container_id": "f" * 64, "container_name": "/py-app", "source": "stderr", "log": line}
plain = sender.FluentSender("docker", host="127.0.0.1", port=port)
assert plain.emit_with_time("app", 1764000000, record("integer seconds")), plain.last_error
plain.close()
precise = sender.FluentSender("docker", host="127.0.0.1", port=port, nanosecond_precision=True)
assert precise.emit_with_time("app", 1764000001.25, record("event time")), precise.last_error
precise.close()
"#;

#[tokio::test]
async fn records_from_python_fluent_logger_arrive() {
    let loki = TestLoki::start().await;
    let shipper = Shipper::start(&loki, |_| {}).await;
    let port = shipper.tcp.port().to_string();

    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3").args(["-c", SCRIPT, &port]).output()
    })
    .await
    .unwrap()
    .expect("python3 runs");
    assert!(
        output.status.success(),
        "fluent-logger failed (pip install fluent-logger): {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let mut entries = loki.wait_for_entries(2, PATIENCE).await;
    entries.sort_by_key(|entry| entry.timestamp_ns);
    assert_eq!(entries[0].line, "integer seconds");
    assert_eq!(entries[0].timestamp_ns, 1_764_000_000_000_000_000);
    assert_eq!(entries[1].line, "event time");
    assert_eq!(entries[1].timestamp_ns, 1_764_000_001_250_000_000);
    assert_eq!(entries[0].labels, docker_labels("/py-app"));
}
