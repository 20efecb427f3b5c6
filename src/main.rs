//! The `fwd2loki` command: run the shipper, or send test records to one.

mod bench_cmd;
mod cli;
mod config_cmd;
mod health;
mod run_cmd;
mod send;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    match cli.command {
        Some(Command::Send(args)) => runtime.block_on(send::run(args)),
        Some(Command::Bench(args)) => runtime.block_on(bench_cmd::run(args)),
        Some(Command::Health(args)) => runtime.block_on(health::run(args)),
        Some(Command::Config(command)) => config_cmd::run(command),
        Some(Command::Run(args)) => runtime.block_on(run_cmd::run(args)),
        None => runtime.block_on(run_cmd::run(cli.run)),
    }
}
