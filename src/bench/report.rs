//! The figures of a bench run: a short table for people and one JSON object for tables
//! elsewhere.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// How fast records went from the first byte sent to the last record counted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rate {
    /// Records counted by the receiver.
    pub received: u64,
    /// Seconds from the first byte sent to the last record counted.
    pub seconds: f64,
    /// Records counted per second.
    pub records_per_second: f64,
    /// Forward-protocol bytes sent per second, in millions.
    pub megabytes_per_second: f64,
    /// Seconds from the last byte sent to the last record counted, included in `seconds`.
    pub drain_seconds: f64,
}

impl Rate {
    /// The rate of `received` records carried in `wire_bytes` over `elapsed`, of which `drain`
    /// came after the last byte was sent.
    pub fn new(received: u64, wire_bytes: u64, elapsed: Duration, drain: Duration) -> Self {
        // A run too short for the clock still gets finite figures.
        let seconds = elapsed.as_secs_f64().max(1e-9);
        Self {
            received,
            seconds,
            records_per_second: received as f64 / seconds,
            megabytes_per_second: wire_bytes as f64 / seconds / 1e6,
            drain_seconds: drain.as_secs_f64(),
        }
    }
}

/// What was measured of the fwd2loki process.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShipperFigures {
    /// Its throughput into the null Loki receiver.
    #[serde(flatten)]
    pub rate: Rate,
    /// Bytes of log lines the receiver counted.
    pub line_bytes_received: u64,
    /// Pushes the receiver counted.
    pub pushes: u64,
    /// CPU seconds (user plus system) it used during the load.
    pub cpu_seconds: f64,
    /// CPU seconds per million records.
    pub cpu_seconds_per_million: f64,
    /// Its peak resident memory over its whole life (`VmHWM`).
    pub peak_rss_bytes: u64,
    /// Its resident memory after startup, before any load (`VmRSS`).
    pub idle_rss_bytes: u64,
    /// Its exit code after SIGTERM at the end of the run, if it exited with one.
    pub exit_code: Option<i32>,
}

/// Everything a run measured, with the parameters that produced it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Records sent in each phase.
    pub records: u64,
    /// Connections, one container each.
    pub connections: usize,
    /// The forward mode: message, forward, packed or compressed.
    pub mode: String,
    /// Events per request (1 in message mode).
    pub events_per_request: usize,
    /// Bytes of each record's `log` value.
    pub line_bytes: usize,
    /// How event times were written.
    pub time_format: String,
    /// The generator's seed.
    pub seed: u64,
    /// fwd2loki's `loki.batch_wait` in the run, in seconds.
    pub batch_wait_seconds: f64,
    /// Forward-protocol bytes sent in each phase.
    pub wire_bytes: u64,
    /// The decode-only receiver: the most any forward receiver can do with this load here.
    pub limit: Rate,
    /// fwd2loki pushing to the null Loki receiver.
    pub fwd2loki: ShipperFigures,
    /// fwd2loki's records per second as a share of the limit's.
    pub share_of_limit: f64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = if self.events_per_request == 1 {
            format!("{} mode", self.mode)
        } else {
            format!("{} mode with {} events per request", self.mode, self.events_per_request)
        };
        writeln!(
            f,
            "{} records over {} connections, {shape}, {}-byte lines, {:.1} MB of requests \
             (seed {})",
            group_digits(self.records as f64),
            self.connections,
            self.line_bytes,
            self.wire_bytes as f64 / 1e6,
            self.seed,
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<18} {:>11} {:>8} {:>15} {:>13} {:>10} {:>10}",
            "", "records/s", "MB/s", "share of limit", "CPU s per 1M", "peak RSS", "idle RSS"
        )?;
        writeln!(
            f,
            "{:<18} {:>11} {:>8.1} {:>15}",
            "decode-only limit",
            group_digits(self.limit.records_per_second),
            self.limit.megabytes_per_second,
            "100%",
        )?;
        let shipper = &self.fwd2loki;
        writeln!(
            f,
            "{:<18} {:>11} {:>8.1} {:>14.0}% {:>13.2} {:>10} {:>10}",
            "fwd2loki",
            group_digits(shipper.rate.records_per_second),
            shipper.rate.megabytes_per_second,
            self.share_of_limit * 100.0,
            shipper.cpu_seconds_per_million,
            mebibytes(shipper.peak_rss_bytes),
            mebibytes(shipper.idle_rss_bytes),
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "fwd2loki made {} pushes ({} entries each on average); its last record arrived \
             {:.0} ms after the last byte was sent (batch_wait {:.0} ms).",
            group_digits(shipper.pushes as f64),
            group_digits(shipper.rate.received as f64 / shipper.pushes.max(1) as f64),
            shipper.rate.drain_seconds * 1e3,
            self.batch_wait_seconds * 1e3,
        )?;
        write!(
            f,
            "Time runs from the first byte sent to the last record counted by the receiver; \
             MB/s counts forward-protocol bytes (10^6 per MB)."
        )
    }
}

/// A whole number with commas between thousands, e.g. `1,871,000`.
fn group_digits(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(group_digits(0.0), "0");
        assert_eq!(group_digits(999.4), "999");
        assert_eq!(group_digits(1_000.0), "1,000");
        assert_eq!(group_digits(1_871_000.0), "1,871,000");
    }

    #[test]
    fn rates_divide_by_the_elapsed_time() {
        let rate =
            Rate::new(1_000_000, 300_000_000, Duration::from_secs(2), Duration::from_millis(250));
        assert_eq!(rate.records_per_second, 500_000.0);
        assert_eq!(rate.megabytes_per_second, 150.0);
        assert_eq!(rate.drain_seconds, 0.25);
    }
}
