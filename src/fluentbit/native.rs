//! fluent-bit's built-in `loki` output: `host`, `port`, `uri`, `labels` as `name=value` items
//! with `$key` record accessors, `label_keys`, `remove_keys`, `line_format`, `drop_single_key`.

use super::classic::{Entry, Section};
use super::keys::{Keys, Rule};
use super::loki_output::{StreamShape, line_format};
use super::remarks::Remarks;
use super::values::{self, Accessor, NativeLabel};
use super::{FluentBitError, Target, invalid_value};

/// The output's defaults for its endpoint.
const DEFAULT_HOST: &str = "127.0.0.1";
const DEFAULT_PORT: u16 = 3100;
const DEFAULT_URI: &str = "/loki/api/v1/push";

/// The keys that are reported rather than converted.
pub(super) const RULES: &[Rule] = &[
    Rule::credential(
        "http_user",
        "set loki.basic_auth_user, with the password in a file named by \
         loki.basic_auth_password_file",
    ),
    Rule::credential(
        "http_passwd",
        "write the password to a file only fwd2loki can read and name it in \
         loki.basic_auth_password_file",
    ),
    Rule::credential(
        "bearer_token",
        "write the token to a file only fwd2loki can read and name it in loki.bearer_token_file",
    ),
    Rule::warn("header", "extra HTTP headers are not sent (the value is not shown)"),
    Rule::warn(
        "tenant_id_key",
        "not converted: fwd2loki's equivalent is loki.tenant_key, which also takes the key out \
         of the line",
    ),
    Rule::note("tenant_id_key_error_handling", "only used with tenant_id_key"),
    Rule::warn("label_map_path", super::LABEL_MAP_REASON),
    Rule::warn(
        "structured_metadata*",
        "not converted: list the record keys to send as structured metadata in \
         loki.structured_metadata_keys",
    ),
    Rule::note("compress", "fwd2loki always compresses its pushes (snappy)"),
    Rule::note("buffer_size", "bounds how much of Loki's answer fluent-bit reads"),
    Rule::warn(
        "tls.*",
        "not converted: fwd2loki trusts the system's roots plus loki.ca_file, and presents \
         loki.cert_file and loki.key_file (PEM files without a password)",
    ),
];

/// Converts the built-in output's keys.
pub(super) fn convert(
    keys: &mut Keys<'_>,
    target: &mut Target,
    remarks: &mut Remarks,
) -> Result<(), FluentBitError> {
    let section = keys.section();
    target.set("loki", "url", url(keys)?);
    if let Some(entry) = keys.take("tenant_id") {
        target.set("loki", "tenant_id", entry.value.clone());
    }
    super::tls_files(keys, target, ["tls.ca_file", "tls.crt_file", "tls.key_file"]);
    if let Some(entry) = keys.take("tls.verify") {
        if !flag(section, entry)? {
            remarks.warn_key(section, entry, "not honoured: fwd2loki always checks certificates");
        }
    }
    if let Some(entry) = keys.take("auto_kubernetes_labels") {
        if flag(section, entry)? {
            let message = "not honoured: list the record keys to turn into labels in label_keys";
            remarks.warn_key(section, entry, message);
        }
    }

    let mut shape = StreamShape {
        labels: Vec::new(),
        label_keys: Vec::new(),
        remove_keys: Vec::new(),
        line_format: line_format(section, keys.take("line_format"))?,
        drop_single_key: drop_single_key(keys, remarks)?,
    };
    labels(keys, &mut shape, remarks)?;
    if let Some(entry) = keys.take("remove_keys") {
        shape.remove_keys = accessors(section, entry, "removed", remarks)?;
    }
    shape.write(target);
    Ok(())
}

/// The push URL from `host`, `port`, `uri` and `tls`.
fn url(keys: &mut Keys<'_>) -> Result<String, FluentBitError> {
    let section = keys.section();
    let tls = match keys.take("tls") {
        Some(entry) => flag(section, entry)?,
        None => false,
    };
    let host = keys.take("host").map_or(DEFAULT_HOST, |entry| entry.value.as_str());
    let port = match keys.take("port") {
        Some(entry) => entry.value.parse::<u16>().map_err(|_| {
            invalid_value(section, entry, format!("{:?} is not a port", entry.value))
        })?,
        None => DEFAULT_PORT,
    };
    let uri = keys.take("uri").map_or(DEFAULT_URI, |entry| entry.value.as_str());

    let scheme = if tls { "https" } else { "http" };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let slash = if uri.starts_with('/') { "" } else { "/" };
    Ok(format!("{scheme}://{host}:{port}{slash}{uri}"))
}

/// `drop_single_key`: `off` (the default), `on`, or `raw`. fwd2loki's `drop_single_key` is what
/// `raw` does.
fn drop_single_key(keys: &mut Keys<'_>, remarks: &mut Remarks) -> Result<bool, FluentBitError> {
    let section = keys.section();
    let Some(entry) = keys.take("drop_single_key") else {
        return Ok(false);
    };
    if entry.value.eq_ignore_ascii_case("raw") {
        return Ok(true);
    }
    let drop = flag(section, entry)?;
    if drop {
        let message = "on: fluent-bit sent a single string value in JSON quotes (\"text\"); \
                       fwd2loki sends it without them, as raw does";
        remarks.warn_key(section, entry, message);
    }
    Ok(drop)
}

/// `labels` and `label_keys`: static labels, and record keys that become labels. Without
/// `labels`, the output labels every stream `job=fluent-bit`.
fn labels(
    keys: &mut Keys<'_>,
    shape: &mut StreamShape,
    remarks: &mut Remarks,
) -> Result<(), FluentBitError> {
    let section = keys.section();
    match keys.take("labels") {
        None => shape.labels.push(("job".to_owned(), "fluent-bit".to_owned())),
        Some(entry) => {
            let labels = values::native_labels(&entry.value)
                .map_err(|problem| invalid_value(section, entry, problem))?;
            for label in labels {
                match label {
                    NativeLabel::Static { name, value } => shape.labels.push((name, value)),
                    NativeLabel::FromRecord { name, accessor } => {
                        record_label(section, entry, &name, &accessor, shape, remarks);
                    }
                }
            }
        }
    }
    if let Some(entry) = keys.take("label_keys") {
        for key in accessors(section, entry, "turned into a label", remarks)? {
            let accessor = Accessor { key: key.clone(), nested: false };
            record_label(section, entry, &key, &accessor, shape, remarks);
        }
    }
    Ok(())
}

/// Adds a label read from the record, if fwd2loki's `label_keys` can express it.
fn record_label(
    section: &Section,
    entry: &Entry,
    name: &str,
    accessor: &Accessor,
    shape: &mut StreamShape,
    remarks: &mut Remarks,
) {
    let key = &accessor.key;
    if accessor.nested {
        let message = format!(
            "label {name} reads into the nested record key {key}, but fwd2loki's label_keys take \
             top-level keys only; the label is left out"
        );
        remarks.warn_key(section, entry, message);
    } else if name != key {
        let message = format!(
            "label {name} from record key {key}: a label named unlike its record key is not \
             supported yet, so it is left out (label_keys = [\"{key}\"] gives a label {key})"
        );
        remarks.warn_key(section, entry, message);
    } else if !shape.label_keys.contains(key) {
        shape.label_keys.push(key.clone());
    }
}

/// A comma list of record accessors, without the nested ones, which are warned about as not
/// `what` (such as `removed`).
fn accessors(
    section: &Section,
    entry: &Entry,
    what: &str,
    remarks: &mut Remarks,
) -> Result<Vec<String>, FluentBitError> {
    let mut keys = Vec::new();
    for item in values::list(&entry.value) {
        let accessor =
            values::accessor(&item).map_err(|problem| invalid_value(section, entry, problem))?;
        if accessor.nested {
            let message = format!(
                "{item} is a nested record key, which fwd2loki cannot reach; it is not {what}"
            );
            remarks.warn_key(section, entry, message);
        } else {
            keys.push(accessor.key);
        }
    }
    Ok(keys)
}

fn flag(section: &Section, entry: &Entry) -> Result<bool, FluentBitError> {
    values::boolean(&entry.value).map_err(|problem| invalid_value(section, entry, problem))
}
