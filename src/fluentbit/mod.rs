//! Reads a fluent-bit configuration that receives the forward protocol and pushes to Loki, and
//! turns it into fwd2loki's own configuration.
//!
//! This lets a fluent-bit deployment switch by changing only its command
//! (`fwd2loki --fluent-bit-config fluent-bit.conf`), and migrate for good with
//! `fwd2loki config convert`. Only the classic format is read: `[SECTION]` headers, `Key Value`
//! lines, `@SET`, `@INCLUDE` and `${NAME}` variables.
//!
//! The result reproduces what fluent-bit pushed: the keys that decide streams and lines (labels,
//! label keys, removed keys, line format, single-key lines) are always written out, with the
//! defaults of the fluent-bit output that was read, because fwd2loki's own defaults differ. Every
//! key is either converted, warned about (fwd2loki does not do what it asks) or noted (it makes
//! no difference); credentials are never copied, into the result or into a remark.

mod classic;
mod forward_input;
mod keys;
mod loki_output;
mod native;
mod plugin;
mod remarks;
mod service;
mod values;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use remarks::Remark;

use classic::{Entry, Section};
use keys::Keys;
use loki_output::Flavour;
use remarks::Remarks;

/// A converted configuration.
#[derive(Debug, Clone)]
pub struct Conversion {
    /// fwd2loki's configuration as TOML, as [`Config::from_toml`](crate::config::Config::from_toml)
    /// reads it.
    pub toml: String,
    /// Settings whose behaviour fwd2loki does not reproduce, each saying what to do instead.
    pub warnings: Vec<Remark>,
    /// Settings left out because they make no difference to fwd2loki.
    pub notes: Vec<Remark>,
}

/// Why a fluent-bit configuration cannot be converted.
#[derive(Debug, thiserror::Error)]
pub enum FluentBitError {
    /// A file, or a directory searched by an `@INCLUDE` pattern, could not be read.
    #[error("cannot read fluent-bit config file {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not valid in the classic format.
    #[error("{path}:{line}: {problem}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The line, counted from 1.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// A key's value cannot be read.
    #[error("{path}:{line}: [{section}] {key}: {problem}")]
    Value {
        /// The file.
        path: PathBuf,
        /// The line, counted from 1.
        line: usize,
        /// The section's header, such as `OUTPUT`.
        section: String,
        /// The key as written.
        key: String,
        /// What is wrong, naming the value unless it is a credential.
        problem: String,
    },
    /// There is nothing for fwd2loki to receive.
    #[error("{path}: no [INPUT] with Name forward; fwd2loki receives only the forward protocol")]
    NoForwardInput {
        /// The configuration file.
        path: PathBuf,
    },
    /// There is nowhere for fwd2loki to push.
    #[error("{path}: no [OUTPUT] with Name loki or grafana-loki")]
    NoLokiOutput {
        /// The configuration file.
        path: PathBuf,
    },
}

/// Reads and converts the fluent-bit configuration file at `path`, taking `${NAME}` values the
/// file does not `@SET` from the environment.
///
/// # Errors
///
/// A [`FluentBitError`] naming the file and, where there is one, the line.
pub fn convert_file(path: &Path) -> Result<Conversion, FluentBitError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| FluentBitError::Read { path: path.to_owned(), source })?;
    convert(&text, path, &|name| std::env::var(name).ok())
}

/// Converts `text`, the contents of the fluent-bit configuration file `path`. `@INCLUDE`s are
/// read relative to `path`; `env` looks up the `${NAME}` variables the file does not `@SET`.
///
/// # Errors
///
/// A [`FluentBitError`] naming the file and, where there is one, the line.
pub fn convert(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Conversion, FluentBitError> {
    let mut remarks = Remarks::default();
    let sections = classic::read(text, path, env, &mut remarks)?;
    let roles = Roles::assign(&sections, &mut remarks);
    if roles.inputs.is_empty() {
        return Err(FluentBitError::NoForwardInput { path: path.to_owned() });
    }
    let Some(output) = roles.output else {
        return Err(FluentBitError::NoLokiOutput { path: path.to_owned() });
    };

    let flavour = Flavour::of(output);
    let mut target = Target::default();
    service::convert(&roles.services, flavour, &mut target, &mut remarks)?;
    forward_input::convert(&roles.inputs, &mut target, &mut remarks)?;
    loki_output::convert(output, flavour, &mut target, &mut remarks)?;
    Ok(Conversion {
        toml: target.root.to_string(),
        warnings: remarks.warnings,
        notes: remarks.notes,
    })
}

/// What each section is to the conversion.
struct Roles<'a> {
    /// The `forward` inputs; fwd2loki listens on all their addresses.
    inputs: Vec<&'a Section>,
    /// The first Loki output.
    output: Option<&'a Section>,
    /// The `[SERVICE]` sections.
    services: Vec<&'a Section>,
}

impl<'a> Roles<'a> {
    /// Sorts the sections, reporting each one that is not converted.
    fn assign(sections: &'a [Section], remarks: &mut Remarks) -> Roles<'a> {
        let mut roles = Roles { inputs: Vec::new(), output: None, services: Vec::new() };
        for section in sections {
            let plugin = section.plugin();
            match (section.name.as_str(), plugin.as_str()) {
                ("SERVICE", _) => roles.services.push(section),
                ("INPUT", "forward") => roles.inputs.push(section),
                ("OUTPUT", "loki" | "grafana-loki") => roles.add_output(section, remarks),
                ("INPUT" | "OUTPUT" | "FILTER", "") => {
                    remarks.warn_section(section, "has no Name; the section is ignored");
                }
                ("INPUT", _) => remarks.warn_section(
                    section,
                    format!(
                        "input {plugin} is not converted: fwd2loki receives only the forward \
                     protocol, so these records are not collected"
                    ),
                ),
                ("OUTPUT", _) => remarks.warn_section(
                    section,
                    format!("output {plugin} is not converted: fwd2loki sends only to Loki"),
                ),
                ("FILTER", _) => remarks.warn_section(
                    section,
                    format!(
                        "filter {plugin} is not applied: fwd2loki ships each record as it arrives, \
                     shaped only by the Loki output's remove_keys and label keys"
                    ),
                ),
                ("PARSER" | "MULTILINE_PARSER", _) => remarks.note_section(
                    section,
                    "parsers serve inputs and filters, which fwd2loki does not have",
                ),
                ("PLUGINS", _) => remarks.note_section(
                    section,
                    "plugins are not loaded: fwd2loki has its Loki output built in",
                ),
                _ => remarks.warn_section(section, "this section is not converted"),
            }
        }
        roles
    }

    fn add_output(&mut self, section: &'a Section, remarks: &mut Remarks) {
        match self.output {
            None => self.output = Some(section),
            Some(first) => remarks.warn_section(
                section,
                format!(
                    "a second Loki output is not converted: fwd2loki pushes to one Loki, the \
                 output of line {}",
                    first.origin.line
                ),
            ),
        }
    }
}

/// fwd2loki's configuration as it is built.
#[derive(Debug, Default)]
struct Target {
    root: toml::Table,
}

impl Target {
    /// Sets `key` of the table `section`, such as `loki`.
    fn set(&mut self, section: &str, key: &str, value: impl Into<toml::Value>) {
        let table =
            self.root.entry(section).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(table) = table {
            table.insert(key.to_owned(), value.into());
        }
    }

    /// Sets a duration outside any table, in the `"1m 30s"` form fwd2loki reads.
    fn set_top_duration(&mut self, key: &str, duration: Duration) {
        let text = humantime::format_duration(duration).to_string();
        self.root.insert(key.to_owned(), toml::Value::String(text));
    }

    /// Sets a duration in the `"1m 30s"` form fwd2loki reads.
    fn set_duration(&mut self, section: &str, key: &str, duration: Duration) {
        self.set(section, key, humantime::format_duration(duration).to_string());
    }

    /// Sets a number of bytes.
    fn set_bytes(&mut self, section: &str, key: &str, bytes: u64) {
        // Sizes beyond TOML's integers are far beyond any limit fwd2loki accepts anyway.
        self.set(section, key, i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

/// Why a label map file is not carried over, for both Loki outputs.
const LABEL_MAP_REASON: &str = "not converted: write the mapping in fwd2loki's configuration as \
                                loki.label_map (record path = label name)";

/// Carries the output's PEM files over: `[ca, certificate, key]` are the output's names for
/// Loki's CA and the client certificate and key, which fwd2loki reads from the same files.
fn tls_files(keys: &mut Keys<'_>, target: &mut Target, [ca, certificate, key]: [&str; 3]) {
    for (name, setting) in [(ca, "ca_file"), (certificate, "cert_file"), (key, "key_file")] {
        if let Some(entry) = keys.take(name) {
            target.set("loki", setting, entry.value.clone());
        }
    }
}

/// The error for a value of `entry` that cannot be read.
fn invalid_value(section: &Section, entry: &Entry, problem: String) -> FluentBitError {
    FluentBitError::Value {
        path: entry.origin.file.clone(),
        line: entry.origin.line,
        section: section.name.clone(),
        key: entry.key.clone(),
        problem,
    }
}

#[cfg(test)]
mod tests;
