//! `fwd2loki bench`: the command-line side of the load run in [`fwd2loki::bench`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use fwd2loki::bench::workload::WorkloadSpec;
use fwd2loki::bench::{BenchOptions, run as run_bench};
use fwd2loki::forward::client::{Mode, TimeFormat};

/// Exit code for an unreadable option, as for other usage errors.
const EXIT_USAGE: u8 = 2;
/// Exit code after Ctrl-C, as shells report a process ended by SIGINT.
const EXIT_INTERRUPTED: i32 = 130;

/// Options of `fwd2loki bench`.
#[derive(Debug, Clone, Args)]
pub(crate) struct BenchArgs {
    /// Records to send (the same records go to the limit and to fwd2loki).
    #[arg(short = 'n', long, default_value_t = 1_000_000)]
    records: u64,
    /// Connections, one container each, as Docker opens them.
    #[arg(short, long, default_value_t = 8)]
    connections: usize,
    /// How events are packed into requests; Docker sends message mode.
    #[arg(short, long, value_enum, default_value = "message")]
    mode: Mode,
    /// Events per request in the forward, packed and compressed modes.
    #[arg(long, default_value_t = 1000)]
    events_per_request: usize,
    /// Bytes of each record's log line (printable ASCII).
    #[arg(long, default_value_t = 200)]
    line_bytes: usize,
    /// How event times are written; Docker sends integer seconds by default.
    #[arg(long, value_enum, default_value = "integer")]
    time: TimeFormat,
    /// Seed of the generated records: the same seed gives the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// fwd2loki's loki.batch_wait. Under load batches are cut by size (loki.batch_size) long
    /// before this wait, so it only decides how long the last partial batch sits idle inside
    /// the measured time. Raise it if the report's entries per push fall short of full batches.
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    batch_wait: Duration,
    /// A fwd2loki configuration file to measure instead of the defaults; the bench replaces its
    /// listeners, Loki URL and batch wait.
    #[arg(long, value_name = "FILE")]
    shipper_config: Option<PathBuf>,
    /// The fwd2loki binary to measure, e.g. another version or build, or a wrapper script that
    /// runs it under a profiler; it is given `--config FILE --log-format json`. Default is this
    /// binary.
    #[arg(long, value_name = "PATH")]
    shipper_binary: Option<PathBuf>,
    /// Longest the whole run may take before it is aborted with an error.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: BenchArgs) -> ExitCode {
    let shipper = match args.shipper_binary.clone().map_or_else(std::env::current_exe, Ok) {
        Ok(path) => path,
        Err(error) => {
            eprintln!("fwd2loki bench: cannot find the fwd2loki binary: {error}");
            return ExitCode::FAILURE;
        }
    };
    let shipper_config = match args.shipper_config.as_deref().map(read_table).transpose() {
        Ok(table) => table,
        Err(message) => {
            eprintln!("fwd2loki bench: --shipper-config: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let options = BenchOptions {
        workload: WorkloadSpec {
            records: args.records,
            connections: args.connections,
            mode: args.mode,
            events_per_request: args.events_per_request,
            line_bytes: args.line_bytes,
            time_format: args.time,
            seed: args.seed,
        },
        shipper,
        shipper_config,
        batch_wait: args.batch_wait,
        timeout: args.timeout,
        progress: true,
    };
    let mut bench = Box::pin(run_bench(&options));
    let result = tokio::select! {
        result = &mut bench => result,
        _ = tokio::signal::ctrl_c() => {
            // Dropping the run stops the child process and the receivers it started. The exit
            // is immediate because the runtime would otherwise wait for the record generator.
            drop(bench);
            eprintln!("fwd2loki bench: interrupted");
            std::process::exit(EXIT_INTERRUPTED);
        }
    };
    match result {
        Ok(report) if args.json => {
            println!("{}", serde_json::to_string(&report).expect("a report serializes"));
            ExitCode::SUCCESS
        }
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("fwd2loki bench: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Reads a TOML file as a table.
fn read_table(path: &std::path::Path) -> Result<toml::Table, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    toml::from_str(&text).map_err(|error| format!("{} is not valid TOML: {error}", path.display()))
}
