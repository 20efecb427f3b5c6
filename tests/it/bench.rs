//! `fwd2loki bench` end to end: the real binary runs the generator, the receivers and itself as
//! a child process. Only counts and the presence of figures are checked, never speed.

use std::process::{Command, Stdio};

/// Runs `fwd2loki bench --json` with `args` and returns its report.
fn bench(args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_fwd2loki"))
        .args(["bench", "--json", "--timeout", "120s"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the fwd2loki binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}");
    serde_json::from_slice(&output.stdout).expect("standard output is one JSON object")
}

fn assert_positive(report: &serde_json::Value, pointer: &str) {
    let value = report.pointer(pointer).and_then(serde_json::Value::as_f64);
    assert!(value.is_some_and(|value| value > 0.0), "{pointer} is {value:?} in {report}");
}

fn assert_complete(report: &serde_json::Value, records: u64) {
    assert_eq!(report["records"], records);
    assert_eq!(report["limit"]["received"], records, "{report}");
    assert_eq!(report["fwd2loki"]["received"], records, "{report}");
    // Default lines are 200 bytes and arrive as exactly the text the container wrote.
    assert_eq!(report["fwd2loki"]["line_bytes_received"], records * 200, "{report}");
    assert_eq!(report["fwd2loki"]["exit_code"], 0, "{report}");
    for pointer in [
        "/wire_bytes",
        "/limit/records_per_second",
        "/limit/megabytes_per_second",
        "/fwd2loki/records_per_second",
        "/fwd2loki/megabytes_per_second",
        "/fwd2loki/cpu_seconds_per_million",
        "/fwd2loki/peak_rss_bytes",
        "/fwd2loki/idle_rss_bytes",
        "/share_of_limit",
    ] {
        assert_positive(report, pointer);
    }
    let pushes = report["fwd2loki"]["pushes"].as_u64().expect("pushes are counted");
    assert!((1..=records).contains(&pushes), "{report}");
    let seconds = report["fwd2loki"]["seconds"].as_f64().expect("the time is reported");
    let drain = report["fwd2loki"]["drain_seconds"].as_f64().expect("the drain is reported");
    assert!((0.0..=seconds).contains(&drain), "{report}");
}

#[test]
fn message_mode_delivers_every_record_and_reports_the_figures() {
    let report = bench(&["--records", "20000", "--connections", "2"]);
    assert_eq!(report["mode"], "message");
    assert_eq!(report["connections"], 2);
    assert_complete(&report, 20_000);
}

#[test]
fn forward_mode_delivers_every_record_and_reports_the_figures() {
    let report = bench(&["--records", "20000", "--connections", "2", "--mode", "forward"]);
    assert_eq!(report["mode"], "forward");
    assert_eq!(report["events_per_request"], 1000);
    assert_complete(&report, 20_000);
}
