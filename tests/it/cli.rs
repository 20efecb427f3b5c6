//! The binary's interface: configuration errors, the stdout mode and `fwd2loki send`.

use std::process::{Command, Stdio};

use crate::support::shipper::{BinaryShipper, run_binary};

fn config_error(config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config).unwrap();
    run_binary(&["--config", path.to_str().unwrap()])
}

#[test]
fn config_errors_name_the_key_and_exit_2_before_starting() {
    let cases = [
        ("[loki]\nbatch_wate = \"1s\"", "loki.batch_wate: unknown field `batch_wate`"),
        ("[loki]\nbatch_wait = \"soon\"", "loki.batch_wait: invalid duration \"soon\""),
        ("[loki]\nbatch_size = \"big\"", "loki.batch_size: invalid size \"big\""),
        (
            "[loki]\nlabels = { \"1abc\" = \"x\" }",
            "loki.labels: \"1abc\" is not a valid label name",
        ),
        ("[input]\nlisten = [\"24224\"]", "input.listen[0]"),
        ("[loki\n", "is not valid TOML"),
    ];
    for (config, expected) in cases {
        let (code, stderr) = config_error(config);
        assert_eq!(code, 2, "{config}: {stderr}");
        assert!(stderr.contains(expected), "{config}: expected {expected:?} in {stderr}");
    }
}

#[test]
fn flags_and_environment_are_checked_like_the_file() {
    let (code, stderr) = run_binary(&["--batch-wait", "1 fortnight"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("loki.batch_wait: invalid duration"), "{stderr}");

    let output = Command::new(env!("CARGO_BIN_EXE_fwd2loki"))
        .env("FWD2LOKI_LOKI_URL", "ftp://loki")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("loki.url"));
}

#[test]
fn an_unusable_listen_address_exits_2_naming_the_key() {
    // 192.0.2.1 is TEST-NET-1: never a local address, so binding fails without any traffic.
    let (code, stderr) = run_binary(&["--listen", "192.0.2.1:24224", "--server-listen", ""]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("input.listen: cannot listen on 192.0.2.1:24224"), "{stderr}");
}

#[test]
fn missing_config_file_is_reported() {
    let (code, stderr) = run_binary(&["--config", "does-not-exist.toml"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read config file does-not-exist.toml"), "{stderr}");
}

#[test]
fn without_a_loki_url_entries_are_printed_and_send_delivers_them() {
    let shipper = BinaryShipper::start("[loki]\nlabels = { job = \"demo\" }\n");
    let address = shipper.tcp.to_string();

    let record =
        r#"{"container_id":"abc","container_name":"/demo","source":"stdout","log":"hello"}"#;
    let status = Command::new(env!("CARGO_BIN_EXE_fwd2loki"))
        .args(["send", "--address", &address, "--ack", "--record", record])
        .status()
        .unwrap();
    assert!(status.success());

    let mut piped = Command::new(env!("CARGO_BIN_EXE_fwd2loki"))
        .args(["send", "--address", &address, "--mode", "compressed", "--ack"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(piped.stdin.as_mut().unwrap(), b"plain text line\n").unwrap();
    drop(piped.stdin.take());
    assert!(piped.wait().unwrap().success());

    let (code, stdout) = shipper.terminate();
    assert_eq!(code, 0);
    let printed: Vec<serde_json::Value> =
        stdout.lines().map(|line| serde_json::from_str(line).expect("JSON line")).collect();
    assert_eq!(printed.len(), 2, "{stdout}");
    assert_eq!(printed[0]["labels"], serde_json::json!({"container_name": "/demo", "job": "demo"}));
    assert_eq!(printed[0]["line"], "hello");
    assert!(printed[0]["timestamp"].as_str().unwrap().parse::<i64>().is_ok());
    assert_eq!(printed[1]["labels"], serde_json::json!({"job": "demo"}));
    assert_eq!(printed[1]["line"], "plain text line");
}
