//! The Loki output, in either flavour: fluent-bit's built-in `loki` output or Grafana's Go
//! plugin, which older images registered as `loki` and newer ones as `grafana-loki`.
//!
//! The flavours take different keys, and that is how they are told apart: `grafana-loki` is
//! always the plugin; a `loki` section is the plugin when it has any key only the plugin takes
//! (`Url`, `BatchWait`, `LabelKeys`...) or `Labels` in LogQL braces, and the built-in output
//! otherwise.

use super::classic::{Entry, Section};
use super::keys::{Keys, Rule};
use super::remarks::Remarks;
use super::{FluentBitError, Target, native, plugin};

/// Keys that only Grafana's plugin takes, in lower case.
const PLUGIN_KEYS: &[&str] = &[
    "url",
    "tenantid",
    "batchwait",
    "batchsize",
    "timeout",
    "minbackoff",
    "maxbackoff",
    "maxretries",
    "labelkeys",
    "removekeys",
    "lineformat",
    "dropsinglekey",
    "labelmappath",
    "autokuberneteslabels",
    "loglevel",
    "buffer",
    "buffertype",
    "dquedir",
    "dquesegmentsize",
    "dquesync",
    "dquename",
    "ca_file",
    "cert_file",
    "key_file",
    "insecure_skip_verify",
];

/// Keys that only fluent-bit's built-in output takes, in lower case.
const NATIVE_KEYS: &[&str] = &[
    "host",
    "port",
    "uri",
    "tls",
    "http_user",
    "http_passwd",
    "bearer_token",
    "header",
    "tenant_id",
    "tenant_id_key",
    "tenant_id_key_error_handling",
    "label_keys",
    "label_map_path",
    "remove_keys",
    "structured_metadata",
    "structured_metadata_map_keys",
    "line_format",
    "drop_single_key",
    "auto_kubernetes_labels",
    "compress",
    "buffer_size",
];

/// Output keys of fluent-bit's engine, which every output plugin has.
const ENGINE_RULES: &[Rule] = &[
    Rule::note("workers", "fwd2loki pushes over loki.max_concurrent_pushes lanes"),
    Rule::note("alias", "names fluent-bit's metrics, which fwd2loki does not reproduce"),
    Rule::note("log_level", "a per-plugin log level; fwd2loki has one level, log.level"),
    Rule::note("log_suppress_interval", "fwd2loki limits repeated log lines itself"),
    Rule::warn(
        "storage.total_limit_size",
        "not converted: fwd2loki bounds what it holds with [buffer] max_bytes",
    ),
    Rule::note("net.*", "connection tuning that fwd2loki does not need"),
];

/// Which Loki output a section configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavour {
    /// fluent-bit's built-in `loki` output (`host`, `port`, `label_keys`...).
    Native,
    /// Grafana's Go plugin (`Url`, `BatchWait`, `LabelKeys`...).
    Plugin,
}

impl Flavour {
    /// Tells the flavour of `section` by its name and keys (see the module's documentation).
    pub(crate) fn of(section: &Section) -> Flavour {
        let plugin_key = section.entries.iter().any(|entry| is_one_of(entry, PLUGIN_KEYS));
        let logql_labels = section
            .entries
            .iter()
            .any(|entry| entry.is("labels") && entry.value.trim_start().starts_with('{'));
        if section.plugin() == "grafana-loki" || plugin_key || logql_labels {
            Flavour::Plugin
        } else {
            Flavour::Native
        }
    }
}

/// Converts the Loki output `section`.
pub(super) fn convert(
    section: &Section,
    flavour: Flavour,
    target: &mut Target,
    remarks: &mut Remarks,
) -> Result<(), FluentBitError> {
    let mut keys = Keys::new(section);
    keys.take("name");
    routing(&mut keys, remarks);
    retry_limit(&mut keys, remarks);
    let rules = match flavour {
        Flavour::Native => {
            native::convert(&mut keys, target, remarks)?;
            [native::RULES, ENGINE_RULES]
        }
        Flavour::Plugin => {
            plugin::convert(&mut keys, target, remarks)?;
            [plugin::RULES, ENGINE_RULES]
        }
    };
    keys.finish(&rules, &|entry| unknown_key(entry, flavour), remarks);
    Ok(())
}

/// fwd2loki has one output, so it ships every record, whatever its tag.
fn routing(keys: &mut Keys<'_>, remarks: &mut Remarks) {
    let section = keys.section();
    let pattern = keys.take("match");
    let regex = keys.take("match_regex");
    match pattern.or(regex) {
        Some(entry) if entry.value == "*" => {}
        Some(entry) => remarks.warn_key(
            section,
            entry,
            format!(
                "fwd2loki ships every record it receives, not only those whose tag matches {:?}",
                entry.value
            ),
        ),
        None => remarks.warn_section(
            section,
            "has no Match, so fluent-bit routed nothing to it; fwd2loki ships every record",
        ),
    }
}

/// fwd2loki retries a push until Loki accepts or refuses it.
fn retry_limit(keys: &mut Keys<'_>, remarks: &mut Remarks) {
    let section = keys.section();
    let Some(entry) = keys.take("retry_limit") else {
        return;
    };
    match entry.value.to_ascii_lowercase().as_str() {
        "false" | "no_limits" => {
            remarks.note_key(section, entry, "fwd2loki also retries without limit")
        }
        _ => remarks.warn_key(
            section,
            entry,
            "not honoured: fwd2loki retries a push until Loki accepts or refuses it, holding \
             back its clients meanwhile instead of dropping records",
        ),
    }
}

fn unknown_key(entry: &Entry, flavour: Flavour) -> String {
    match flavour {
        Flavour::Plugin if is_one_of(entry, NATIVE_KEYS) => "a key of fluent-bit's built-in \
            loki output, but this section is read as Grafana's plugin (by its name or keys); \
            ignored"
            .to_owned(),
        Flavour::Plugin => "not a key of Grafana's loki plugin that fwd2loki knows; ignored".into(),
        Flavour::Native => {
            "not a key of fluent-bit's loki output that fwd2loki knows; ignored".into()
        }
    }
}

fn is_one_of(entry: &Entry, keys: &[&str]) -> bool {
    keys.iter().any(|key| entry.is(key))
}

/// Writes the keys that decide streams and lines, which both flavours have.
pub(super) struct StreamShape {
    /// Static labels, in the order given.
    pub(super) labels: Vec<(String, String)>,
    /// Record keys that become labels.
    pub(super) label_keys: Vec<String>,
    /// Record keys dropped.
    pub(super) remove_keys: Vec<String>,
    /// `json` or `key_value`.
    pub(super) line_format: &'static str,
    /// Whether a single remaining key's value is the line.
    pub(super) drop_single_key: bool,
}

impl StreamShape {
    /// Sets the `loki` keys, all of them, since fwd2loki's defaults differ from fluent-bit's.
    pub(super) fn write(self, target: &mut Target) {
        let labels: toml::Table = self
            .labels
            .into_iter()
            .map(|(name, value)| (name, toml::Value::String(value)))
            .collect();
        target.set("loki", "labels", labels);
        target.set("loki", "label_keys", self.label_keys);
        target.set("loki", "remove_keys", self.remove_keys);
        target.set("loki", "line_format", self.line_format);
        target.set("loki", "drop_single_key", self.drop_single_key);
    }
}

/// Reads a line format, which both flavours spell `json` or `key_value`.
pub(super) fn line_format(
    section: &Section,
    entry: Option<&Entry>,
) -> Result<&'static str, FluentBitError> {
    let Some(entry) = entry else {
        return Ok("json");
    };
    match entry.value.to_ascii_lowercase().as_str() {
        "json" => Ok("json"),
        "key_value" => Ok("key_value"),
        _ => {
            let problem = format!("{:?} is neither json nor key_value", entry.value);
            Err(super::invalid_value(section, entry, problem))
        }
    }
}
