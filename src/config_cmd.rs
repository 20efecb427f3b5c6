//! fluent-bit configurations on the command line: `fwd2loki config convert FILE` prints the
//! equivalent fwd2loki configuration, and `--fluent-bit-config FILE` runs with it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use tracing::{info, warn};

use crate::cli::RunArgs;
use fwd2loki::config::Config;
use fwd2loki::fluentbit::{self, Conversion, Remark};

/// Exit code when the file cannot be converted, as for usage errors.
const EXIT_CONFIG: u8 = 2;

/// `fwd2loki config` commands.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the fwd2loki configuration (TOML) equivalent to a fluent-bit configuration file;
    /// what cannot be carried over is listed on standard error.
    Convert(ConvertArgs),
}

/// Options of `fwd2loki config convert`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConvertArgs {
    /// fluent-bit configuration file, in the classic format.
    file: PathBuf,
}

/// A run's configuration converted from a fluent-bit file, with what the conversion reported.
pub(crate) struct Converted {
    file: PathBuf,
    conversion: Conversion,
}

pub(crate) fn run(command: ConfigCommand) -> ExitCode {
    match command {
        ConfigCommand::Convert(args) => convert(&args.file),
    }
}

/// Prints the TOML on standard output and the remarks on standard error, so that
/// `fwd2loki config convert fluent-bit.conf > fwd2loki.toml` writes a usable file.
fn convert(file: &Path) -> ExitCode {
    let conversion = match fluentbit::convert_file(file) {
        Ok(conversion) => conversion,
        Err(error) => return failed(&error),
    };
    for warning in &conversion.warnings {
        eprintln!("warning: {warning}");
    }
    for note in &conversion.notes {
        eprintln!("note: {note}");
    }
    if let Err(error) = Config::from_toml(&conversion.toml) {
        return failed(&format!("{}: converted, but not accepted: {error}", file.display()));
    }
    let name = file.file_name().unwrap_or(file.as_os_str()).to_string_lossy();
    print!("# Converted from {name} by `fwd2loki config convert`.\n\n{}", conversion.toml);
    ExitCode::SUCCESS
}

fn failed(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("fwd2loki: {error}");
    ExitCode::from(EXIT_CONFIG)
}

/// Loads the configuration of a run: `--config`, or `--fluent-bit-config` converted. The
/// command-line overrides apply to either.
pub(crate) fn load(args: &RunArgs) -> Result<(Config, Option<Converted>), String> {
    let overrides = args.overrides();
    let Some(file) = &args.fluent_bit_config else {
        let config = Config::load(args.config.as_deref(), &overrides);
        return config.map(|config| (config, None)).map_err(|error| error.to_string());
    };
    let conversion = fluentbit::convert_file(file).map_err(|error| error.to_string())?;
    let config = Config::load_text(&conversion.toml, file, &overrides)
        .map_err(|error| format!("{}: converted, but not accepted: {error}", file.display()))?;
    Ok((config, Some(Converted { file: file.clone(), conversion })))
}

impl Converted {
    /// Logs what the conversion reported; called once logging is set up.
    pub(crate) fn log(&self) {
        let conversion = &self.conversion;
        info!(
            file = %self.file.display(),
            warnings = conversion.warnings.len(),
            notes = conversion.notes.len(),
            "running with a converted fluent-bit configuration",
        );
        for remark in &conversion.warnings {
            let Fields { file, line, section, key, reason } = Fields::of(remark);
            warn!(file, line, section, key, reason, "fluent-bit setting not honoured");
        }
        for remark in &conversion.notes {
            let Fields { file, line, section, key, reason } = Fields::of(remark);
            info!(file, line, section, key, reason, "fluent-bit setting not needed");
        }
    }
}

/// A remark as log fields.
struct Fields<'a> {
    file: String,
    line: usize,
    section: &'a str,
    key: &'a str,
    reason: &'a str,
}

impl<'a> Fields<'a> {
    fn of(remark: &'a Remark) -> Fields<'a> {
        Fields {
            file: remark.file.display().to_string(),
            line: remark.line,
            section: remark.section.as_deref().unwrap_or(""),
            key: remark.key.as_deref().unwrap_or(""),
            reason: &remark.message,
        }
    }
}
