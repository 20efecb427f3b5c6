//! The `[SERVICE]` section: fluent-bit's engine settings, of which fwd2loki takes the shutdown
//! grace, the log level, the monitoring server's address and, for the native output, the flush
//! interval.

use super::classic::{Entry, Section};
use super::keys::{Keys, Rule};
use super::loki_output::Flavour;
use super::remarks::Remarks;
use super::{FluentBitError, Target, invalid_value, values};

/// fluent-bit's defaults for its monitoring server.
const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0";
const DEFAULT_HTTP_PORT: &str = "2020";

const RULES: &[Rule] = &[
    Rule::note("daemon", "fwd2loki runs in the foreground; let Nomad or systemd supervise it"),
    Rule::warn("log_file", "fwd2loki logs to standard error; redirect it to keep a file"),
    Rule::note("parsers_file", "parsers serve inputs and filters, which fwd2loki does not have"),
    Rule::note("plugins_file", "plugins are not loaded: fwd2loki has its Loki output built in"),
    Rule::warn("streams_file", "stream processing is not supported"),
    Rule::warn(
        "health_check*",
        "not converted: fwd2loki's /health says whether it runs, /ready whether it accepts",
    ),
    Rule::warn(
        "storage.*",
        "fluent-bit's filesystem buffering is not converted: set [buffer] type = \"disk\" and a \
         path for fwd2loki's own disk buffer",
    ),
    Rule::note("coro_stack_size", "engine tuning that fwd2loki does not need"),
    Rule::note("scheduler.*", "fwd2loki's retries are set by the Loki output's backoff keys"),
    Rule::note("hot_reload*", "fwd2loki reads its configuration when it starts"),
];

/// Converts the `[SERVICE]` sections; `flavour` is that of the Loki output.
pub(super) fn convert(
    sections: &[&Section],
    flavour: Flavour,
    target: &mut Target,
    remarks: &mut Remarks,
) -> Result<(), FluentBitError> {
    for section in sections {
        let mut keys = Keys::new(section);
        if let Some(entry) = keys.take("flush") {
            flush(section, entry, flavour, target, remarks)?;
        }
        if let Some(entry) = keys.take("grace") {
            let grace = values::seconds(&entry.value)
                .map_err(|problem| invalid_value(section, entry, problem))?;
            target.set_top_duration("shutdown_timeout", grace);
        }
        if let Some(entry) = keys.take("log_level") {
            log_level(section, entry, target, remarks);
        }
        monitoring_server(&mut keys, target, remarks)?;
        let unknown = |_: &Entry| "not a [SERVICE] key fwd2loki knows; ignored".to_owned();
        keys.finish(&[RULES], &unknown, remarks);
    }
    Ok(())
}

/// fluent-bit's native output sends what accumulated at each flush, so `Flush` is its batch
/// wait; Grafana's plugin batches by its own `BatchWait`.
fn flush(
    section: &Section,
    entry: &Entry,
    flavour: Flavour,
    target: &mut Target,
    remarks: &mut Remarks,
) -> Result<(), FluentBitError> {
    let interval =
        values::seconds(&entry.value).map_err(|problem| invalid_value(section, entry, problem))?;
    match flavour {
        Flavour::Native => target.set_duration("loki", "batch_wait", interval),
        Flavour::Plugin => {
            remarks.note_key(section, entry, "Grafana's plugin batches by BatchWait, not Flush");
        }
    }
    Ok(())
}

/// fluent-bit's monitoring server becomes fwd2loki's (`server.listen`), which serves other
/// paths: `/metrics`, `/health` and `/ready`.
fn monitoring_server(
    keys: &mut Keys<'_>,
    target: &mut Target,
    remarks: &mut Remarks,
) -> Result<(), FluentBitError> {
    let section = keys.section();
    let listen = keys.take("http_listen");
    let port = keys.take("http_port");
    let Some(switch) = keys.take("http_server") else {
        return Ok(());
    };
    if !values::boolean(&switch.value).map_err(|problem| invalid_value(section, switch, problem))? {
        return Ok(());
    }
    let host = listen.map_or(DEFAULT_HTTP_LISTEN, |entry| entry.value.as_str());
    let port = port.map_or(DEFAULT_HTTP_PORT, |entry| entry.value.as_str());
    target.set("server", "listen", format!("{host}:{port}"));
    let message = "converted to server.listen, where fwd2loki serves /metrics, /health and \
                   /ready instead of fluent-bit's /api/v1/... paths: update scrapers and checks";
    remarks.warn_key(section, switch, message);
    Ok(())
}

/// Sets `log.level` from fluent-bit's level names, which are also valid `RUST_LOG` filters.
pub(super) fn log_level(
    section: &Section,
    entry: &Entry,
    target: &mut Target,
    remarks: &mut Remarks,
) {
    let level = match entry.value.to_ascii_lowercase().as_str() {
        "warning" => "warn".to_owned(),
        level @ ("off" | "error" | "warn" | "info" | "debug" | "trace") => level.to_owned(),
        _ => {
            let message = format!("log level {:?} is unknown; fwd2loki logs at info", entry.value);
            remarks.warn_key(section, entry, message);
            return;
        }
    };
    target.set("log", "level", level);
}
