//! Conversions of whole fluent-bit configurations.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::config::{Config, LineFormat, ListenAddr};

/// The reference deployment's fluent-bit.conf, rendered for a node named `node-1`.
const REFERENCE: &str = r#"
[INPUT]
    Name        forward
    Listen      0.0.0.0
    Port        24224

[OUTPUT]
    Name        loki
    Match       *
    Url         http://loki.service.dc1.kwojo:4444/loki/api/v1/push
    RemoveKeys  source,container_id
    Labels      {job="fluent-bit", hostname="node-1"}
    LabelKeys   container_name
    BatchWait   1
    BatchSize   1001024
    LineFormat  json
    LogLevel    info
"#;

const FORWARD: &str = "[INPUT]\n    Name forward\n";

fn no_env(_: &str) -> Option<String> {
    None
}

fn convert_text(text: &str) -> Conversion {
    convert(text, Path::new("fluent-bit.conf"), &no_env).expect("the configuration converts")
}

fn convert_error(text: &str) -> String {
    convert(text, Path::new("fluent-bit.conf"), &no_env)
        .expect_err("the configuration does not convert")
        .to_string()
}

fn table(toml_text: &str) -> toml::Table {
    toml_text.parse().expect("valid TOML")
}

/// The converted configuration, which fwd2loki must accept.
fn config(conversion: &Conversion) -> Config {
    Config::from_toml(&conversion.toml).expect("fwd2loki accepts the converted configuration")
}

/// Every remark, warnings and notes, as displayed.
fn all_remarks(conversion: &Conversion) -> String {
    let remarks = conversion.warnings.iter().chain(&conversion.notes);
    remarks.map(|remark| format!("{remark}\n")).collect()
}

fn warned_keys(conversion: &Conversion) -> Vec<String> {
    conversion.warnings.iter().filter_map(|remark| remark.key.clone()).collect()
}

#[test]
fn the_reference_deployment_converts_without_a_warning() {
    let conversion = convert_text(REFERENCE);
    assert!(conversion.warnings.is_empty(), "{}", all_remarks(&conversion));
    assert!(conversion.notes.is_empty(), "{}", all_remarks(&conversion));
    let expected = table(
        r#"
        [input]
        listen = ["0.0.0.0:24224"]
        [loki]
        url = "http://loki.service.dc1.kwojo:4444/loki/api/v1/push"
        batch_wait = "1s"
        batch_size = 1001024
        labels = { job = "fluent-bit", hostname = "node-1" }
        label_keys = ["container_name"]
        remove_keys = ["source", "container_id"]
        line_format = "json"
        drop_single_key = true
        [log]
        level = "info"
        "#,
    );
    assert_eq!(table(&conversion.toml), expected, "{}", conversion.toml);

    let config = config(&conversion);
    assert_eq!(config.input.listen, [ListenAddr::Tcp("0.0.0.0:24224".into())]);
    assert_eq!(config.loki.batch_size, 1_001_024);
    assert_eq!(config.loki.labels.len(), 2);
}

#[test]
fn grafana_loki_is_always_the_plugin() {
    let text = format!(
        "{FORWARD}[OUTPUT]\n  Name grafana-loki\n  Match *\n  Host loki\n  Labels {{job=\"a\"}}\n"
    );
    let conversion = convert_text(&text);
    let loki = &table(&conversion.toml)["loki"];
    assert_eq!(loki["url"].as_str(), Some("http://localhost:3100/loki/api/v1/push"));
    assert_eq!(loki["drop_single_key"].as_bool(), Some(true));
    assert_eq!(warned_keys(&conversion), ["Host"]);
    assert!(conversion.warnings[0].message.contains("built-in loki output"));
}

#[test]
fn a_loki_section_is_told_apart_by_its_keys() {
    let plugin =
        convert_text(&format!("{FORWARD}[OUTPUT]\nName loki\nMatch *\nLabels {{a=\"b\"}}\n"));
    assert_eq!(table(&plugin.toml)["loki"]["drop_single_key"].as_bool(), Some(true));

    let native = convert_text(&format!("{FORWARD}[OUTPUT]\nName loki\nMatch *\nLabels a=b\n"));
    let loki = &table(&native.toml)["loki"];
    assert_eq!(loki["drop_single_key"].as_bool(), Some(false));
    assert_eq!(loki["url"].as_str(), Some("http://127.0.0.1:3100/loki/api/v1/push"));

    let bare = convert_text(&format!("{FORWARD}[OUTPUT]\nName loki\nMatch *\n"));
    let expected = table(
        r#"
        url = "http://127.0.0.1:3100/loki/api/v1/push"
        labels = { job = "fluent-bit" }
        label_keys = []
        remove_keys = []
        line_format = "json"
        drop_single_key = false
        "#,
    );
    assert_eq!(table(&bare.toml)["loki"].as_table(), Some(&expected));
    config(&bare);
}

#[test]
fn the_native_output_maps_its_keys_and_record_accessors() {
    let conversion = convert_text(&format!(
        "{FORWARD}[OUTPUT]
    name              loki
    match             *
    host              loki.example.com
    port              443
    uri               /custom/push
    tls               on
    tls.verify        on
    tenant_id         team-a
    labels            job=docker, $container_name, stream=$source, app=$kubernetes['app']
    label_keys        $host
    remove_keys       $container_id, $kubernetes['pod_id']
    line_format       key_value
    drop_single_key   raw
    auto_kubernetes_labels off
"
    ));
    let expected = table(
        r#"
        url = "https://loki.example.com:443/custom/push"
        tenant_id = "team-a"
        labels = { job = "docker" }
        label_keys = ["container_name", "host"]
        remove_keys = ["container_id"]
        line_format = "key_value"
        drop_single_key = true
        "#,
    );
    assert_eq!(table(&conversion.toml)["loki"].as_table(), Some(&expected), "{}", conversion.toml);
    let config = config(&conversion);
    assert_eq!(config.loki.line_format, LineFormat::KeyValue);

    let remarks = all_remarks(&conversion);
    assert_eq!(warned_keys(&conversion), ["labels", "labels", "remove_keys"], "{remarks}");
    assert!(remarks.contains("label stream from record key source"), "{remarks}");
    assert!(remarks.contains("label app reads into the nested record key kubernetes"), "{remarks}");
    assert!(remarks.contains("$kubernetes['pod_id'] is a nested record key"), "{remarks}");
}

#[test]
fn drop_single_key_on_is_warned_as_unquoted() {
    let conversion =
        convert_text(&format!("{FORWARD}[OUTPUT]\nName loki\nMatch *\ndrop_single_key on\n"));
    assert_eq!(table(&conversion.toml)["loki"]["drop_single_key"].as_bool(), Some(true));
    assert_eq!(warned_keys(&conversion), ["drop_single_key"]);
}

#[test]
fn plugin_timing_keys_take_seconds_or_go_durations() {
    let conversion = convert_text(&format!(
        "{FORWARD}[OUTPUT]\nName grafana-loki\nMatch *\nBatchWait 1.5s\nTimeout 1m30s\n\
         MinBackoff 250ms\nMaxBackoff 5m\nMaxRetries 0\nTenantID team-b\nDropSingleKey false\n\
         LineFormat key_value\nLogLevel warning\n"
    ));
    assert!(conversion.warnings.is_empty(), "{}", all_remarks(&conversion));
    let config = config(&conversion);
    assert_eq!(config.loki.batch_wait, Duration::from_millis(1500));
    assert_eq!(config.loki.timeout, Duration::from_secs(90));
    assert_eq!(config.loki.min_backoff, Duration::from_millis(250));
    assert_eq!(config.loki.max_backoff, Duration::from_secs(300));
    assert_eq!(config.loki.tenant_id.as_deref(), Some("team-b"));
    assert!(!config.loki.drop_single_key);
    assert_eq!(config.log.level, "warn");
    assert_eq!(conversion.notes.len(), 1, "MaxRetries 0 retries forever, as fwd2loki does");
}

#[test]
fn the_forward_input_maps_its_keys_and_warns_about_the_rest() {
    let conversion = convert_text(
        "[INPUT]
    Name              forward
    Listen            ::
    Port              24225
    Buffer_Max_Size   6M
    Buffer_Chunk_Size 1M
    Shared_Key        not-a-secret-we-keep
    Self_Hostname     node-1
    tls               on
    Unix_Perm         0600
    Tag               docker
[INPUT]
    Name      forward
    Unix_Path /run/fwd2loki.sock
    Port      1
[OUTPUT]
    Name loki
    Match *
",
    );
    let config = config(&conversion);
    assert_eq!(
        config.input.listen,
        [ListenAddr::Tcp("[::]:24225".into()), ListenAddr::Unix("/run/fwd2loki.sock".into())]
    );
    assert_eq!(config.input.max_message_bytes, 6_000_000);
    assert_eq!(warned_keys(&conversion), ["Shared_Key", "Self_Hostname", "tls", "Unix_Perm"]);
    let noted: Vec<_> = conversion.notes.iter().filter_map(|note| note.key.as_deref()).collect();
    assert_eq!(noted, ["Buffer_Chunk_Size", "Tag", "Port"]);
    let shared_key = &conversion.warnings[0];
    assert_eq!((shared_key.line, shared_key.section.as_deref()), (7, Some("INPUT")));
    assert!(
        shared_key
            .to_string()
            .starts_with("fluent-bit.conf:7: [INPUT] Shared_Key: not honoured yet")
    );
}

#[test]
fn every_key_fwd2loki_cannot_honour_is_warned_about() {
    let native = "[OUTPUT]
    Name loki
    Match docker.*
    Retry_Limit 5
    tenant_id_key tenant
    label_map_path /etc/map.json
    structured_metadata pod=$pod
    tls.vhost loki.internal
    tls.verify off
    header X-Scope-OrgID other
    auto_kubernetes_labels on
    storage.total_limit_size 1G
    no_such_key 1
";
    let conversion = convert_text(&format!("{FORWARD}{native}"));
    let expected = [
        "Match",
        "Retry_Limit",
        "tls.verify",
        "auto_kubernetes_labels",
        "tenant_id_key",
        "label_map_path",
        "structured_metadata",
        "tls.vhost",
        "header",
        "storage.total_limit_size",
        "no_such_key",
    ];
    assert_eq!(warned_keys(&conversion), expected, "{}", all_remarks(&conversion));

    let plugin = "[OUTPUT]
    Name grafana-loki
    Match *
    LabelMapPath /etc/map.json
    AutoKubernetesLabels true
    Buffer true
    BufferType dque
    DqueDir /tmp/flb
    MaxRetries 10
    insecure_skip_verify true
";
    let conversion = convert_text(&format!("{FORWARD}{plugin}"));
    let expected =
        ["MaxRetries", "AutoKubernetesLabels", "Buffer", "LabelMapPath", "insecure_skip_verify"];
    assert_eq!(warned_keys(&conversion), expected, "{}", all_remarks(&conversion));
    let noted: Vec<_> = conversion.notes.iter().filter_map(|note| note.key.as_deref()).collect();
    assert_eq!(noted, ["BufferType", "DqueDir"]);
    config(&conversion);
}

#[test]
fn loki_tls_files_carry_over_from_both_outputs() {
    let native = "[OUTPUT]\nName loki\nMatch *\ntls on\ntls.ca_file /etc/loki/ca.pem\n\
                  tls.crt_file /etc/loki/client.pem\ntls.key_file /etc/loki/client-key.pem\n";
    let plugin = "[OUTPUT]\nName grafana-loki\nMatch *\nUrl https://loki:3100/loki/api/v1/push\n\
                  ca_file /etc/loki/ca.pem\ncert_file /etc/loki/client.pem\n\
                  key_file /etc/loki/client-key.pem\n";
    for output in [native, plugin] {
        let conversion = convert_text(&format!("{FORWARD}{output}"));
        assert!(conversion.warnings.is_empty(), "{}", all_remarks(&conversion));
        let loki = config(&conversion).loki;
        assert!(loki.url.as_deref().is_some_and(|url| url.starts_with("https://")));
        assert_eq!(loki.ca_file.as_deref(), Some(Path::new("/etc/loki/ca.pem")));
        assert_eq!(loki.cert_file.as_deref(), Some(Path::new("/etc/loki/client.pem")));
        assert_eq!(loki.key_file.as_deref(), Some(Path::new("/etc/loki/client-key.pem")));
    }
}

#[test]
fn credentials_never_reach_the_result_or_a_remark() {
    let secret = "s3cr3t-Value";
    let native = format!(
        "{FORWARD}[OUTPUT]\nName loki\nMatch *\nhttp_user {secret}\nhttp_passwd {secret}\n\
         bearer_token {secret}\nheader Authorization Bearer {secret}\n"
    );
    let plugin = format!(
        "{FORWARD}[OUTPUT]\nName grafana-loki\nMatch *\nUrl https://user:{secret}@loki:3100/push\n"
    );
    for text in [native, plugin] {
        let conversion = convert_text(&text);
        let everything = format!("{}{}", conversion.toml, all_remarks(&conversion));
        assert!(!everything.contains(secret), "{everything}");
        assert!(everything.contains("credentials are not converted"), "{everything}");
        config(&conversion);
    }
    let plugin_url = convert_text(&format!(
        "{FORWARD}[OUTPUT]\nName grafana-loki\nMatch *\nUrl https://user:{secret}@loki:3100/push\n"
    ));
    assert_eq!(table(&plugin_url.toml)["loki"]["url"].as_str(), Some("https://loki:3100/push"));
}

#[test]
fn set_and_environment_variables_are_substituted() {
    let env = |name: &str| (name == "LOKI_HOST").then(|| "loki.example.com".to_owned());
    let text = format!(
        "@SET JOB=docker\n{FORWARD}[OUTPUT]\nName grafana-loki\nMatch *\n\
         Url http://${{LOKI_HOST}}:3100/loki/api/v1/push\nLabels {{job=\"${{JOB}}\"}}\n"
    );
    let conversion = convert(&text, Path::new("fluent-bit.conf"), &env).unwrap();
    let loki = &table(&conversion.toml)["loki"];
    assert_eq!(loki["url"].as_str(), Some("http://loki.example.com:3100/loki/api/v1/push"));
    assert_eq!(loki["labels"]["job"].as_str(), Some("docker"));
}

#[test]
fn the_service_section_gives_grace_flush_and_log_level() {
    let conversion = convert_text(&format!(
        "[SERVICE]\n  Flush 0.5\n  Grace 30\n  Log_Level debug\n  Daemon off\n  \
         HTTP_Server on\n{FORWARD}[OUTPUT]\n  Name loki\n  Match *\n"
    ));
    let config = config(&conversion);
    assert_eq!(config.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(config.loki.batch_wait, Duration::from_millis(500), "native flushes batch");
    assert_eq!(config.log.level, "debug");
    assert_eq!(config.server.listen, "0.0.0.0:2020");
    assert_eq!(warned_keys(&conversion), ["HTTP_Server"], "the paths differ");

    let plugin = convert_text(&format!(
        "[SERVICE]\n  Flush 5\n{FORWARD}[OUTPUT]\n  Name grafana-loki\n  Match *\n"
    ));
    assert_eq!(self::config(&plugin).loki.batch_wait, Duration::from_secs(1));
    assert_eq!(plugin.notes.len(), 1, "Flush does not batch for the plugin");
}

#[test]
fn other_sections_are_reported_and_the_first_loki_output_is_used() {
    let conversion = convert_text(&format!(
        "[INPUT]\n Name tail\n{FORWARD}[FILTER]\n Name grep\n[OUTPUT]\n Name stdout\n\
         [OUTPUT]\n Name loki\n Match *\n tenant_id first\n[OUTPUT]\n Name grafana-loki\n\
         [PARSER]\n Name docker\n"
    ));
    assert_eq!(config(&conversion).loki.tenant_id.as_deref(), Some("first"));
    let sections: Vec<_> = conversion.warnings.iter().map(|remark| remark.line).collect();
    assert_eq!(sections, [1, 5, 7, 13], "{}", all_remarks(&conversion));
    assert!(conversion.warnings[3].message.contains("the output of line 9"));
    assert_eq!(conversion.notes.len(), 1, "the parser");
}

#[test]
fn errors_name_the_file_the_line_and_the_problem() {
    let output = "[OUTPUT]\nName loki\nMatch *\n";
    let cases = [
        (output.to_owned(), "fluent-bit.conf: no [INPUT] with Name forward"),
        (FORWARD.to_owned(), "fluent-bit.conf: no [OUTPUT] with Name loki or grafana-loki"),
        (format!("{FORWARD}  Port\n{output}"), "fluent-bit.conf:3: key \"Port\" has no value"),
        (
            format!("{FORWARD}  Port http\n{output}"),
            "fluent-bit.conf:3: [INPUT] Port: \"http\" is not a port",
        ),
        (
            format!("{FORWARD}{output}BatchWait soon\n"),
            "fluent-bit.conf:6: [OUTPUT] BatchWait: invalid duration \"soon\"",
        ),
        (
            format!("{FORWARD}{output}LineFormat yaml\n"),
            "fluent-bit.conf:6: [OUTPUT] LineFormat: \"yaml\" is neither json nor key_value",
        ),
        (
            format!(
                "{FORWARD}{output}Labels {{hostname=\"{{{{ env \"attr.unique.hostname\" }}}}\"}}\n"
            ),
            "not rendered",
        ),
        (
            format!("{FORWARD}{output}drop_single_key maybe\n"),
            "fluent-bit.conf:6: [OUTPUT] drop_single_key: \"maybe\" is not a boolean",
        ),
    ];
    for (text, expected) in cases {
        let error = convert_error(&text);
        assert!(error.contains(expected), "{text}: expected {expected:?} in {error:?}");
    }
}
