//! The `fwd2loki` command: run the shipper, or send test records to one.

mod cli;
mod send;

use std::process::ExitCode;

use clap::Parser;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, RunArgs};
use fwd2loki::config::{Config, LogConfig, LogFormat};
use fwd2loki::pipeline::{Pipeline, ShutdownOutcome};

/// Exit code for configuration and startup errors, as for usage errors.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    match cli.command {
        Some(Command::Send(args)) => runtime.block_on(send::run(args)),
        Some(Command::Run(args)) => runtime.block_on(run(args)),
        None => runtime.block_on(run(cli.run)),
    }
}

async fn run(args: RunArgs) -> ExitCode {
    let config = match Config::load(args.config.as_deref(), &args.overrides()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("fwd2loki: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(&config.log);

    let pipeline = match Pipeline::start(&config).await {
        Ok(pipeline) => pipeline,
        Err(error) => {
            error!(%error, "cannot start");
            eprintln!("fwd2loki: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = ?pipeline.listen_addrs(),
        loki_url = config.loki.url.as_deref().map(redact_url).as_deref().unwrap_or("(none: printing to stdout)"),
        tenant_id = config.loki.tenant_id.as_deref().unwrap_or(""),
        labels = ?config.loki.labels,
        label_keys = ?config.loki.label_keys,
        remove_keys = ?config.loki.remove_keys,
        line_format = ?config.loki.line_format,
        batch_wait = ?config.loki.batch_wait,
        batch_size = config.loki.batch_size,
        buffer_max_bytes = config.buffer.max_bytes,
        "fwd2loki started"
    );

    let signal = wait_for_signal().await;
    info!(signal, timeout = ?config.shutdown_timeout, "shutting down");
    match pipeline.shutdown(config.shutdown_timeout).await {
        ShutdownOutcome::Delivered | ShutdownOutcome::Persisted => ExitCode::SUCCESS,
        ShutdownOutcome::Abandoned => ExitCode::FAILURE,
    }
}

/// Waits for SIGTERM (how Nomad and Docker stop a task) or SIGINT (Ctrl-C).
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    }
}

/// Logs go to standard error, so that standard output carries only entries when no Loki URL
/// is set. `RUST_LOG`, when set, wins over `log.level`.
fn init_logging(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The URL without a password or query string, which may carry credentials.
fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("REDACTED"));
            }
            if parsed.query().is_some() {
                parsed.set_query(Some("REDACTED"));
            }
            parsed.to_string()
        }
        Err(_) => "(invalid URL)".to_owned(),
    }
}
