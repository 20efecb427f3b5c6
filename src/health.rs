//! `fwd2loki health`: asks a running fwd2loki whether it is alive. A container image without a
//! shell or curl uses it as its health check.

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::HealthArgs;

pub(crate) async fn run(args: HealthArgs) -> ExitCode {
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(3)).build() {
        Ok(client) => client,
        Err(error) => {
            eprintln!("fwd2loki health: {error}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(&args.url).send().await {
        Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("fwd2loki health: {} answered {}", args.url, response.status());
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("fwd2loki health: cannot reach {}: {error}", args.url);
            ExitCode::FAILURE
        }
    }
}
