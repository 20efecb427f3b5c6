//! fluent-bit configurations: `--fluent-bit-config` runs one unchanged, shipping exactly what its
//! TOML translation ships, and `fwd2loki config convert` prints that translation.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use fwd2loki::config::Config;
use fwd2loki::forward::client::{Mode, OutgoingEvent, TimeFormat};
use serde_json::json;

use crate::support::loki::TestLoki;
use crate::support::shipper::{BinaryShipper, PATIENCE, docker_record, run_binary, send_records};

/// The reference deployment's fluent-bit.conf, its Loki URL's port left as `PORT`.
const REFERENCE: &str = include_str!("../fixtures/fluent-bit/reference.conf");
/// A fluent-bit.conf with fluent-bit's built-in `loki` output, its Loki port left as `PORT`.
const NATIVE: &str = include_str!("../fixtures/fluent-bit/native.conf");

/// What `native.conf` reads from the environment as its Loki password.
const SECRET: &str = "s3cr3t-from-env";

const T0: i64 = 1_764_000_000_123_456_789;

/// A fixture with `PORT` replaced by the port of `loki`.
fn pointed_at(conf: &str, loki: &TestLoki) -> String {
    conf.replace("PORT", &loki.addr().port().to_string())
}

/// The README's translation of the reference deployment, spelled out.
fn readme_translation(push_url: &str) -> String {
    format!(
        r#"
[input]
listen = ["0.0.0.0:24224"]

[loki]
url = "{push_url}"
remove_keys = ["source", "container_id"]
labels = {{ job = "fluent-bit", hostname = "node-1" }}
label_keys = ["container_name"]
batch_wait = "1s"
batch_size = 1001024
line_format = "json"
"#
    )
}

/// Docker-shaped records from two containers, one with an extra key and one left with nothing
/// but the removed keys and the label key. Their keys are sent in alphabetical order, as
/// serde_json's maps keep them.
fn docker_events() -> Vec<OutgoingEvent> {
    let mut with_extra = docker_record("/wiki-js", "second line");
    with_extra["com.example.team"] = json!("web");
    let mut no_log = docker_record("/db", "");
    no_log.as_object_mut().expect("a map").remove("log");
    let records = [
        docker_record("/wiki-js", "GET /wiki/home 200"),
        with_extra,
        docker_record("/db", "checkpoint complete"),
        no_log,
        docker_record("/wiki-js", "line with \"quotes\" and\ttab"),
    ];
    records.iter().zip(T0..).map(|(record, time)| OutgoingEvent::from_json(time, record)).collect()
}

/// One entry as Loki stored it: labels, tenant, timestamp and line.
type Stored = (BTreeMap<String, String>, Option<String>, i128, String);

/// Sends the Docker records to `shipper` and returns what `loki` stored, sorted, since the order
/// of streams within a push is not part of what is compared.
async fn ship(shipper: &BinaryShipper, loki: &TestLoki) -> Vec<Stored> {
    let events = docker_events();
    let mut stream = tokio::net::TcpStream::connect(shipper.tcp).await.expect("connects");
    send_records(&mut stream, Mode::Message, TimeFormat::EventTime, &events, false).await;
    let entries = loki.wait_for_entries(events.len(), PATIENCE).await;
    assert!(loki.rejections().is_empty(), "{:?}", loki.rejections());
    let mut stored: Vec<Stored> = entries
        .into_iter()
        .map(|entry| (entry.labels, entry.tenant, entry.timestamp_ns, entry.line))
        .collect();
    stored.sort();
    stored
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
}

/// The JSON log lines of `shipper` whose message is `message`.
fn logged(shipper: &BinaryShipper, message: &str) -> Vec<serde_json::Value> {
    let logs = shipper.logs().into_iter();
    let parsed = logs.filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok());
    parsed.filter(|log| log["message"] == message).collect()
}

#[tokio::test]
async fn the_reference_fluent_bit_config_ships_what_its_toml_translation_ships() {
    let loki_for_fluent_bit_config = TestLoki::start().await;
    let conf = pointed_at(REFERENCE, &loki_for_fluent_bit_config);
    let fluent_bit_shipper = BinaryShipper::start_with_fluent_bit_config(&conf, &[]);
    let from_fluent_bit_config = ship(&fluent_bit_shipper, &loki_for_fluent_bit_config).await;

    let loki_for_toml = TestLoki::start().await;
    let toml_shipper = BinaryShipper::start(&readme_translation(&loki_for_toml.push_url()));
    let from_toml = ship(&toml_shipper, &loki_for_toml).await;

    assert_eq!(from_fluent_bit_config, from_toml);
    let wiki =
        labels(&[("container_name", "/wiki-js"), ("hostname", "node-1"), ("job", "fluent-bit")]);
    let db = labels(&[("container_name", "/db"), ("hostname", "node-1"), ("job", "fluent-bit")]);
    let expected: Vec<Stored> = vec![
        (db.clone(), None, i128::from(T0 + 2), "checkpoint complete".to_owned()),
        (db, None, i128::from(T0 + 3), "{}".to_owned()),
        (wiki.clone(), None, i128::from(T0), "GET /wiki/home 200".to_owned()),
        (
            wiki.clone(),
            None,
            i128::from(T0 + 1),
            r#"{"com.example.team":"web","log":"second line"}"#.to_owned(),
        ),
        (wiki, None, i128::from(T0 + 4), "line with \"quotes\" and\ttab".to_owned()),
    ];
    assert_eq!(from_fluent_bit_config, expected);

    let converted =
        logged(&fluent_bit_shipper, "running with a converted fluent-bit configuration");
    assert_eq!(converted.len(), 1, "{:?}", fluent_bit_shipper.logs());
    assert_eq!(converted[0]["warnings"], 0, "the reference deployment converts entirely");
    assert_eq!(fluent_bit_shipper.terminate().0, 0);
    assert_eq!(toml_shipper.terminate().0, 0);
}

#[tokio::test]
async fn the_native_loki_output_runs_with_its_labels_tenant_and_line_format() {
    let loki = TestLoki::start().await;
    let conf = pointed_at(NATIVE, &loki);
    let shipper = BinaryShipper::start_with_fluent_bit_config(&conf, &[("LOKI_PASSWORD", SECRET)]);
    let stored = ship(&shipper, &loki).await;

    let wiki = labels(&[("container_name", "/wiki-js"), ("job", "docker")]);
    let tenant = Some("team-a".to_owned());
    let first = stored.iter().find(|entry| entry.2 == i128::from(T0)).expect("the first record");
    assert_eq!(
        first,
        &(wiki, tenant, i128::from(T0), "log=\"GET /wiki/home 200\" source=stdout".into())
    );

    let warnings = logged(&shipper, "fluent-bit setting not honoured");
    let keys: Vec<_> =
        warnings.iter().map(|warning| warning["key"].as_str().unwrap_or("")).collect();
    assert_eq!(keys, ["http_user", "http_passwd"], "{warnings:?}");
    assert!(
        shipper.logs().iter().all(|line| !line.contains(SECRET)),
        "the password is never logged"
    );
    assert_eq!(shipper.terminate().0, 0);
}

/// Runs `fwd2loki config convert` on `conf`, written to a file named fluent-bit.conf.
fn config_convert(conf: &str, env: &[(&str, &str)]) -> (Output, String, String) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("fluent-bit.conf");
    std::fs::write(&path, conf).expect("fluent-bit config file is written");
    let output = Command::new(env!("CARGO_BIN_EXE_fwd2loki"))
        .args(["config", "convert", path.to_str().expect("UTF-8 path")])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("the fwd2loki binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

#[test]
fn config_convert_prints_the_readme_translation_of_the_reference_deployment() {
    let push_url = "http://loki.service.dc1.kwojo:4444/loki/api/v1/push";
    let conf = REFERENCE.replace("http://127.0.0.1:PORT/loki/api/v1/push", push_url);
    let (output, stdout, stderr) = config_convert(&conf, &[]);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "nothing to warn about: {stderr}");
    Config::from_toml(&stdout).expect("fwd2loki accepts what config convert prints");

    // The README's translation, plus what it leaves to fwd2loki's defaults.
    let mut expected: toml::Table = readme_translation(push_url).parse().expect("valid TOML");
    let loki = expected["loki"].as_table_mut().expect("a table");
    loki.insert("drop_single_key".into(), true.into());
    expected.insert("log".into(), toml::Value::Table(toml::toml! { level = "info" }));
    let printed: toml::Table = stdout.parse().expect("config convert prints TOML");
    assert_eq!(printed, expected, "{stdout}");
}

#[test]
fn config_convert_warns_on_stderr_and_never_prints_a_credential() {
    let (output, stdout, stderr) =
        config_convert(NATIVE.replace("PORT", "3100").as_str(), &[("LOKI_PASSWORD", SECRET)]);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let config = Config::from_toml(&stdout).expect("fwd2loki accepts what config convert prints");
    assert_eq!(config.loki.url.as_deref(), Some("http://127.0.0.1:3100/loki/api/v1/push"));
    assert_eq!(config.loki.tenant_id.as_deref(), Some("team-a"));
    assert_eq!(config.input.max_message_bytes, 6_000_000);

    assert!(
        stderr.contains("fluent-bit.conf:28: [OUTPUT] http_passwd: credentials are not converted"),
        "{stderr}"
    );
    assert!(stderr.contains("note: "), "Buffer_Chunk_Size is noted: {stderr}");
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET), "{stdout}{stderr}");
}

#[test]
fn unconvertible_files_exit_2_naming_the_file_and_line() {
    let (output, stdout, stderr) = config_convert("[INPUT]\n    Name forward\n    Port\n", &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("fluent-bit.conf:3: key \"Port\" has no value"), "{stderr}");

    let (output, _, stderr) = config_convert("[INPUT]\n    Name forward\n", &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr.contains("fluent-bit.conf: no [OUTPUT] with Name loki"), "{stderr}");

    let (code, stderr) = run_binary(&["config", "convert", "missing.conf"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read fluent-bit config file missing.conf"), "{stderr}");

    let (code, stderr) = run_binary(&["--fluent-bit-config", "missing.conf"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read fluent-bit config file missing.conf"), "{stderr}");

    let (code, stderr) = run_binary(&["--config", "a.toml", "--fluent-bit-config", "b.conf"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

#[test]
fn the_environment_can_name_the_fluent_bit_config() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("fluent-bit.conf");
    let conf = "[INPUT]\n    Name forward\n[OUTPUT]\n    Name grafana-loki\n    Match *\n    \
                BatchWait never\n";
    std::fs::write(&path, conf).expect("fluent-bit config file is written");
    let output = Command::new(env!("CARGO_BIN_EXE_fwd2loki"))
        .env("FWD2LOKI_FLUENT_BIT_CONFIG", &path)
        .stdin(Stdio::null())
        .output()
        .expect("the fwd2loki binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let expected = format!("{}:6: [OUTPUT] BatchWait: invalid duration \"never\"", path.display());
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(Path::new(&path).exists());
}
