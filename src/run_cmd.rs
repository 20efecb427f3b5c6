//! `fwd2loki run`: load the configuration, start the HTTP endpoints and the pipeline, and
//! shut down in order on SIGTERM or SIGINT.

use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

use crate::cli::RunArgs;
use fwd2loki::config::{Config, LogConfig, LogFormat};
use fwd2loki::metrics::Metrics;
use fwd2loki::pipeline::{Pipeline, ShutdownOutcome};
use fwd2loki::server::{Server, ServerState};

/// Exit code for configuration and startup errors, as for usage errors.
const EXIT_CONFIG: u8 = 2;

pub(crate) async fn run(args: RunArgs) -> ExitCode {
    let (config, converted) = match crate::config_cmd::load(&args) {
        Ok(loaded) => loaded,
        Err(error) => return startup_failed(&error),
    };
    init_logging(&config.log);
    if let Some(converted) = &converted {
        converted.log();
    }
    info!(version = env!("CARGO_PKG_VERSION"), config = ?redacted(&config), "starting");

    let metrics = Arc::new(Metrics::new());
    let state = ServerState::new(Arc::clone(&metrics));
    let stop_server = CancellationToken::new();
    if !config.server.listen.is_empty() {
        match Server::bind(&config.server.listen).await {
            Ok(server) => {
                tokio::spawn(server.serve(state.clone(), stop_server.clone()));
            }
            Err(error) => {
                let message =
                    format!("server.listen: cannot listen on {}: {error}", config.server.listen);
                return startup_failed(&message);
            }
        }
    }

    let pipeline = match Pipeline::start_with_metrics(&config, metrics).await {
        Ok(pipeline) => pipeline,
        Err(error) => return startup_failed(&error),
    };
    state.set_ready(true);
    info!(listen = ?pipeline.listen_addrs(), "fwd2loki started");

    let signal = wait_for_signal().await;
    state.set_ready(false);
    info!(signal, timeout = ?config.shutdown_timeout, "shutting down");
    let outcome = pipeline.shutdown(config.shutdown_timeout).await;
    stop_server.cancel();
    match outcome {
        ShutdownOutcome::Delivered | ShutdownOutcome::Persisted => ExitCode::SUCCESS,
        ShutdownOutcome::Abandoned => ExitCode::FAILURE,
    }
}

fn startup_failed(error: &dyn std::fmt::Display) -> ExitCode {
    error!(%error, "cannot start");
    eprintln!("fwd2loki: {error}");
    ExitCode::from(EXIT_CONFIG)
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

/// The configuration as it may be logged: secrets are only ever paths to files, but the URL
/// may carry a password or a token in its query.
fn redacted(config: &Config) -> Config {
    let mut config = config.clone();
    config.loki.url = config.loki.url.as_deref().map(redact_url);
    config
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
