//! Grafana's Go plugin for fluent-bit: `Url`, `BatchWait`, `BatchSize`, `Labels` as a LogQL
//! label set, `LabelKeys`, `RemoveKeys`, `LineFormat`, `DropSingleKey` and retry timing.

use std::time::Duration;

use super::classic::{Entry, Section};
use super::keys::{Keys, Rule};
use super::loki_output::{StreamShape, line_format};
use super::remarks::Remarks;
use super::{FluentBitError, Target, invalid_value, service, values};

/// The plugin's push URL when none is given.
const DEFAULT_URL: &str = "http://localhost:3100/loki/api/v1/push";

const DISK_QUEUE_REASON: &str = "belongs to the plugin's disk queue (see Buffer)";

/// The keys that are reported rather than converted.
pub(super) const RULES: &[Rule] = &[
    Rule::warn("labelmappath", super::LABEL_MAP_REASON),
    Rule::note("buffertype", DISK_QUEUE_REASON),
    Rule::note("dque*", DISK_QUEUE_REASON),
    Rule::warn("insecure_skip_verify", "not honoured: fwd2loki always checks certificates"),
];

/// Converts the plugin's keys.
pub(super) fn convert(
    keys: &mut Keys<'_>,
    target: &mut Target,
    remarks: &mut Remarks,
) -> Result<(), FluentBitError> {
    let section = keys.section();
    target.set("loki", "url", url(keys, remarks));
    if let Some(entry) = keys.take("tenantid").filter(|entry| !entry.value.is_empty()) {
        target.set("loki", "tenant_id", entry.value.clone());
    }
    super::tls_files(keys, target, ["ca_file", "cert_file", "key_file"]);
    timing(keys, target, remarks)?;
    if let Some(entry) = keys.take("loglevel") {
        service::log_level(section, entry, target, remarks);
    }
    unsupported_switches(keys, remarks)?;

    let labels = match keys.take("labels") {
        Some(entry) => logql_labels(section, entry)?,
        None => vec![("job".to_owned(), "fluent-bit".to_owned())],
    };
    let list = |keys: &mut Keys<'_>, key| keys.take(key).map(|e| values::list(&e.value));
    let shape = StreamShape {
        labels,
        label_keys: list(keys, "labelkeys").unwrap_or_default(),
        remove_keys: list(keys, "removekeys").unwrap_or_default(),
        line_format: line_format(section, keys.take("lineformat"))?,
        drop_single_key: match keys.take("dropsinglekey") {
            Some(entry) => flag(section, entry)?,
            None => true,
        },
    };
    shape.write(target);
    Ok(())
}

/// `Url`, without the user and password it may carry: those never go into the result.
fn url(keys: &mut Keys<'_>, remarks: &mut Remarks) -> String {
    let section = keys.section();
    let Some(entry) = keys.take("url") else {
        return DEFAULT_URL.to_owned();
    };
    let Ok(mut url) = reqwest::Url::parse(&entry.value) else {
        // fwd2loki's own check of loki.url reports it, naming the problem.
        return entry.value.clone();
    };
    if url.username().is_empty() && url.password().is_none() {
        return entry.value.clone();
    }
    // Neither call can fail on a URL that has a user or password, as it has a host.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let message = "credentials are not converted (the URL's user and password are not shown): \
                   set loki.basic_auth_user, and write the password to a file named by \
                   loki.basic_auth_password_file";
    remarks.warn_key(section, entry, message);
    url.to_string()
}

/// `BatchWait`, `BatchSize`, `Timeout`, `MinBackoff`, `MaxBackoff` and `MaxRetries`.
fn timing(
    keys: &mut Keys<'_>,
    target: &mut Target,
    remarks: &mut Remarks,
) -> Result<(), FluentBitError> {
    let section = keys.section();
    if let Some(entry) = keys.take("batchwait") {
        let wait = read(section, entry, values::seconds_or_go_duration)?;
        target.set_duration("loki", "batch_wait", wait);
    }
    if let Some(entry) = keys.take("batchsize") {
        let bytes = entry.value.trim().parse::<u64>().map_err(|_| {
            invalid_value(section, entry, format!("{:?} is not a number of bytes", entry.value))
        })?;
        target.set_bytes("loki", "batch_size", bytes);
    }
    for (key, fwd2loki_key) in
        [("timeout", "timeout"), ("minbackoff", "min_backoff"), ("maxbackoff", "max_backoff")]
    {
        if let Some(entry) = keys.take(key) {
            let duration: Duration = read(section, entry, values::go_duration)?;
            target.set_duration("loki", fwd2loki_key, duration);
        }
    }
    if let Some(entry) = keys.take("maxretries") {
        if entry.value.trim() == "0" {
            remarks.note_key(section, entry, "fwd2loki also retries without limit");
        } else {
            let message = "not honoured: fwd2loki retries a push until Loki accepts or refuses \
                           it, holding back its clients meanwhile instead of dropping records";
            remarks.warn_key(section, entry, message);
        }
    }
    Ok(())
}

/// `AutoKubernetesLabels` and `Buffer`, which only matter when switched on.
fn unsupported_switches(keys: &mut Keys<'_>, remarks: &mut Remarks) -> Result<(), FluentBitError> {
    let section = keys.section();
    if let Some(entry) = keys.take("autokuberneteslabels") {
        if flag(section, entry)? {
            let message = "not honoured: list the record keys to turn into labels in label_keys";
            remarks.warn_key(section, entry, message);
        }
    }
    if let Some(entry) = keys.take("buffer") {
        if flag(section, entry)? {
            let message = "the plugin's disk queue is not converted: set [buffer] type = \"disk\" \
                           and a path for fwd2loki's own disk buffer (the queue's files are not \
                           read)";
            remarks.warn_key(section, entry, message);
        }
    }
    Ok(())
}

/// `Labels`, whose most likely mistake is a Nomad template left unrendered: its quotes end the
/// label's value early.
fn logql_labels(section: &Section, entry: &Entry) -> Result<Vec<(String, String)>, FluentBitError> {
    values::logql_labels(&entry.value).map_err(|mut problem| {
        if entry.value.contains("{{") {
            problem.push_str(" (\"{{\" looks like a template expression that was not rendered)");
        }
        invalid_value(section, entry, problem)
    })
}

fn read<T>(
    section: &Section,
    entry: &Entry,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, FluentBitError> {
    parse(&entry.value).map_err(|problem| invalid_value(section, entry, problem))
}

fn flag(section: &Section, entry: &Entry) -> Result<bool, FluentBitError> {
    read(section, entry, values::boolean)
}
