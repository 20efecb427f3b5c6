//! `fwd2loki bench`: an end-to-end load run for sizing nodes, measured the way other shippers
//! are compared (generator, shipper and receiver in one run on one machine).
//!
//! A run pre-encodes Docker-shaped records ([`workload`]), then sends the same bytes twice over
//! the same number of connections:
//!
//! 1. to a receiver that only frames and decodes the msgpack ([`decode_only`]): the limit, the
//!    least work any forward receiver can do;
//! 2. to the real fwd2loki binary run as a child process ([`shipper`]), pushing to a
//!    Loki-compatible receiver that only counts entries ([`null_loki`]).
//!
//! Each phase is timed from the first byte sent to the last record counted. fwd2loki's CPU time
//! and memory come from `/proc` ([`procfs`]).

pub mod decode_only;
pub mod load;
pub mod loopback;
pub mod null_loki;
pub mod procfs;
pub mod push_count;
pub mod report;
pub mod shipper;
pub mod tally;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use indicatif::ProgressBar;

use crate::forward::client::Mode;
use decode_only::DecodeOnly;
use null_loki::NullLoki;
use report::{Rate, Report, ShipperFigures};
use shipper::ShipperProcess;
use workload::{Workload, WorkloadSpec};

/// How long fwd2loki may sit after startup before its idle memory is read.
const IDLE_SETTLE: Duration = Duration::from_millis(300);
/// How long fwd2loki may take to exit after SIGTERM: its default `shutdown_timeout` plus room.
const STOP_PATIENCE: Duration = Duration::from_secs(10);
/// fwd2loki's default `input.max_message_bytes`: larger requests would be refused.
const MAX_REQUEST_BYTES: usize = 8 << 20;
/// Bytes a Docker record takes besides its line, rounded up.
const RECORD_OVERHEAD_BYTES: usize = 160;

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The load.
    pub workload: WorkloadSpec,
    /// The fwd2loki binary to run, normally the running one.
    pub shipper: PathBuf,
    /// fwd2loki settings to run with (a parsed configuration file); the bench sets the
    /// listeners, the Loki URL and the batch wait over them.
    pub shipper_config: Option<toml::Table>,
    /// fwd2loki's `loki.batch_wait`.
    pub batch_wait: Duration,
    /// The most the whole run may take.
    pub timeout: Duration,
    /// Whether to draw progress bars on standard error.
    pub progress: bool,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The options cannot make a valid run.
    #[error("invalid options: {0}")]
    Options(String),
    /// A system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// fwd2loki did not start listening.
    #[error("fwd2loki did not start: {reason}\n{logs}")]
    ShipperStart {
        /// What went wrong.
        reason: String,
        /// Its last log lines.
        logs: String,
    },
    /// fwd2loki exited before the run was over.
    #[error("fwd2loki exited during the run ({status})\n{logs}")]
    ShipperExited {
        /// Its exit status.
        status: String,
        /// Its last log lines.
        logs: String,
    },
    /// A receiver could not count what it was sent.
    #[error("{0}")]
    Receiver(String),
    /// The run took longer than allowed.
    #[error("the run did not finish within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
}

impl BenchError {
    /// A function that wraps an I/O error with what was being done.
    pub fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> BenchError {
        move |source| BenchError::Io { context, source }
    }
}

/// Runs the whole bench and returns its figures. Everything it started is stopped when it
/// returns, whether it succeeds, fails or times out, or when its future is dropped.
///
/// # Errors
///
/// [`BenchError`] when the options are invalid, something cannot start, a receiver or fwd2loki
/// fails, or the run takes longer than `options.timeout`.
pub async fn run(options: &BenchOptions) -> Result<Report, BenchError> {
    check(&options.workload)?;
    tokio::time::timeout(options.timeout, run_phases(options))
        .await
        .unwrap_or(Err(BenchError::Timeout(options.timeout)))
}

/// Refuses loads that cannot be measured.
fn check(spec: &WorkloadSpec) -> Result<(), BenchError> {
    let invalid = |message: &str| Err(BenchError::Options(message.to_owned()));
    if spec.records == 0 {
        return invalid("--records must be at least 1");
    }
    if spec.connections == 0 {
        return invalid("--connections must be at least 1");
    }
    if spec.events_per_request == 0 {
        return invalid("--events-per-request must be at least 1");
    }
    let events = match spec.mode {
        Mode::Message => 1,
        Mode::Forward | Mode::Packed | Mode::Compressed => spec.events_per_request,
    };
    let request_bytes = events.saturating_mul(spec.line_bytes + RECORD_OVERHEAD_BYTES);
    if request_bytes > MAX_REQUEST_BYTES {
        return invalid(
            "requests would be larger than fwd2loki's input.max_message_bytes (8 MiB): \
             lower --line-bytes or --events-per-request",
        );
    }
    Ok(())
}

async fn run_phases(options: &BenchOptions) -> Result<Report, BenchError> {
    let spec = options.workload.clone();
    let encoding = spinner("encoding the records", options.progress);
    let workload = tokio::task::spawn_blocking(move || Workload::generate(&spec))
        .await
        .expect("generating the workload does not panic");
    encoding.finish_and_clear();
    let wire_bytes = workload.wire_bytes();

    let loki =
        NullLoki::start().await.map_err(BenchError::io("cannot start the null Loki receiver"))?;
    let mut shipper = ShipperProcess::start(
        &options.shipper,
        options.shipper_config.as_ref(),
        &loki.push_url(),
        options.batch_wait,
    )
    .await?;
    tokio::time::sleep(IDLE_SETTLE).await;
    let sample = |pid| procfs::sample(pid).map_err(BenchError::io("cannot read fwd2loki's /proc"));
    let idle = sample(shipper.pid())?;

    let decode_only = DecodeOnly::start()
        .await
        .map_err(BenchError::io("cannot start the decode-only receiver"))?;
    let bar = load::progress_bar("decode-only limit", workload.records, options.progress);
    let limit =
        load::run_phase(decode_only.address(), &workload, decode_only.tally(), &bar, || Ok(()))
            .await?;
    drop(decode_only);

    let before = sample(shipper.pid())?;
    let bar = load::progress_bar("fwd2loki", workload.records, options.progress);
    let shipped = load::run_phase(shipper.listen_addr(), &workload, loki.tally(), &bar, || {
        shipper.ensure_running()
    })
    .await?;
    let after = sample(shipper.pid())?;
    let exit = shipper.stop(STOP_PATIENCE).await?;

    let limit = Rate::new(limit.received, wire_bytes, limit.elapsed, limit.drain);
    let rate = Rate::new(shipped.received, wire_bytes, shipped.elapsed, shipped.drain);
    let cpu_seconds = (after.cpu_seconds - before.cpu_seconds).max(0.0);
    let spec = &options.workload;
    Ok(Report {
        records: workload.records,
        connections: spec.connections,
        mode: value_name(spec.mode),
        events_per_request: match spec.mode {
            Mode::Message => 1,
            Mode::Forward | Mode::Packed | Mode::Compressed => spec.events_per_request,
        },
        line_bytes: spec.line_bytes,
        time_format: value_name(spec.time_format),
        seed: spec.seed,
        batch_wait_seconds: options.batch_wait.as_secs_f64(),
        wire_bytes,
        limit,
        fwd2loki: ShipperFigures {
            rate,
            line_bytes_received: shipped.line_bytes,
            pushes: shipped.deliveries,
            cpu_seconds,
            cpu_seconds_per_million: cpu_seconds * 1e6 / workload.records as f64,
            peak_rss_bytes: after.peak_rss_bytes,
            idle_rss_bytes: idle.rss_bytes,
            exit_code: exit.code(),
        },
        share_of_limit: rate.records_per_second / limit.records_per_second,
    })
}

/// The name a value has on the command line, e.g. `message` or `event-time`.
fn value_name(value: impl ValueEnum) -> String {
    value.to_possible_value().map(|value| value.get_name().to_owned()).unwrap_or_default()
}

fn spinner(message: &'static str, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let spinner = ProgressBar::new_spinner().with_message(message);
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::client::TimeFormat;

    fn spec() -> WorkloadSpec {
        WorkloadSpec {
            records: 10,
            connections: 2,
            mode: Mode::Forward,
            events_per_request: 1000,
            line_bytes: 200,
            time_format: TimeFormat::Integer,
            seed: 1,
        }
    }

    #[test]
    fn refuses_loads_that_cannot_be_measured() {
        assert!(check(&spec()).is_ok());
        for invalid in [
            WorkloadSpec { records: 0, ..spec() },
            WorkloadSpec { connections: 0, ..spec() },
            WorkloadSpec { events_per_request: 0, ..spec() },
            // 1000 events of 16 KiB make a request over fwd2loki's 8 MiB limit.
            WorkloadSpec { line_bytes: 16 << 10, ..spec() },
        ] {
            assert!(matches!(check(&invalid), Err(BenchError::Options(_))), "{invalid:?}");
        }
        // In message mode each event is its own request, so long lines are fine.
        assert!(
            check(&WorkloadSpec { line_bytes: 16 << 10, mode: Mode::Message, ..spec() }).is_ok()
        );
    }
}
