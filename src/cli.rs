//! Command-line arguments. Every run option can also be set by a `FWD2LOKI_*` variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use fwd2loki::config::{LogFormat, Overrides};
use fwd2loki::forward::client::{Mode, TimeFormat};

/// Receives Docker's fluentd logging driver (Fluentd forward protocol) and pushes to Loki.
#[derive(Debug, Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the shipper (the default when no command is given).
    Run(RunArgs),
    /// Send records to a forward-protocol server, for checks and demos.
    Send(SendArgs),
    /// Check a running fwd2loki's /health endpoint (for container health checks).
    Health(HealthArgs),
    /// Measure throughput, CPU and memory end to end, against the decode-only limit.
    Bench(crate::bench_cmd::BenchArgs),
    /// Work with configuration files: convert a fluent-bit configuration to fwd2loki's.
    #[command(subcommand)]
    Config(crate::config_cmd::ConfigCommand),
}

/// Options of `fwd2loki run`; each overrides the config file's key of the same meaning.
#[derive(Debug, Clone, Args)]
pub(crate) struct RunArgs {
    /// TOML configuration file.
    #[arg(short, long, env = "FWD2LOKI_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// fluent-bit configuration file (classic format) to convert and run with, instead of
    /// --config; what it asks that fwd2loki does not do is logged as warnings.
    #[arg(
        long,
        env = "FWD2LOKI_FLUENT_BIT_CONFIG",
        value_name = "FILE",
        conflicts_with = "config"
    )]
    pub(crate) fluent_bit_config: Option<PathBuf>,
    /// Listen address, `host:port` or `unix:/path` (input.listen); repeat for several.
    #[arg(long, env = "FWD2LOKI_LISTEN", value_delimiter = ',')]
    pub(crate) listen: Vec<String>,
    /// Loki push URL (loki.url); without one, entries are printed to stdout.
    #[arg(long, env = "FWD2LOKI_LOKI_URL")]
    pub(crate) loki_url: Option<String>,
    /// Loki tenant, sent as X-Scope-OrgID (loki.tenant_id).
    #[arg(long, env = "FWD2LOKI_TENANT_ID")]
    pub(crate) tenant_id: Option<String>,
    /// Longest wait before a batch is sent, e.g. 1s (loki.batch_wait).
    #[arg(long, env = "FWD2LOKI_BATCH_WAIT")]
    pub(crate) batch_wait: Option<String>,
    /// Line bytes that make a batch, e.g. 1MiB (loki.batch_size).
    #[arg(long, env = "FWD2LOKI_BATCH_SIZE")]
    pub(crate) batch_size: Option<String>,
    /// Log filter, e.g. info or fwd2loki=debug (log.level).
    #[arg(long, env = "FWD2LOKI_LOG_LEVEL")]
    pub(crate) log_level: Option<String>,
    /// Address of /metrics, /health and /ready, or "" for none (server.listen).
    #[arg(long, env = "FWD2LOKI_SERVER_LISTEN")]
    pub(crate) server_listen: Option<String>,
    /// Log format (log.format).
    #[arg(long, env = "FWD2LOKI_LOG_FORMAT", value_enum)]
    pub(crate) log_format: Option<LogFormat>,
}

impl RunArgs {
    pub(crate) fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            loki_url: self.loki_url.clone(),
            tenant_id: self.tenant_id.clone(),
            batch_wait: self.batch_wait.clone(),
            batch_size: self.batch_size.clone(),
            log_level: self.log_level.clone(),
            log_format: self.log_format,
            server_listen: self.server_listen.clone(),
        }
    }
}

/// Options of `fwd2loki send`.
#[derive(Debug, Clone, Args)]
pub(crate) struct SendArgs {
    /// Server address, `host:port` or `unix:/path`.
    #[arg(short, long, default_value = "127.0.0.1:24224")]
    pub(crate) address: String,
    /// Tag of the events.
    #[arg(short, long, default_value = "fwd2loki.send")]
    pub(crate) tag: String,
    /// How events are packed into requests.
    #[arg(short, long, value_enum, default_value = "message")]
    pub(crate) mode: Mode,
    /// How event times are written.
    #[arg(long, value_enum, default_value = "event-time")]
    pub(crate) time: TimeFormat,
    /// Ask for acks and wait for them.
    #[arg(long)]
    pub(crate) ack: bool,
    /// A record as a JSON object; repeat for several. Without any, records are read from
    /// stdin, one per line: a JSON object as it is, any other line as {"log": line}.
    #[arg(short, long)]
    pub(crate) record: Vec<String>,
}

/// Options of `fwd2loki health`.
#[derive(Debug, Clone, Args)]
pub(crate) struct HealthArgs {
    /// The endpoint to ask.
    #[arg(long, default_value = "http://127.0.0.1:24231/health")]
    pub(crate) url: String,
}
