//! One measured phase: send the whole workload over its connections at once and wait until the
//! receiver behind the target has counted every record.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::BenchError;
use super::tally::Tally;
use super::workload::Workload;

/// Bytes handed to the socket per write, small enough for the progress bar to move smoothly.
const WRITE_BYTES: usize = 256 * 1024;
/// How often the count is looked at.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// What one phase measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhaseResult {
    /// Records the receiver counted.
    pub received: u64,
    /// Bytes of lines the receiver counted (zero for receivers that do not see lines).
    pub line_bytes: u64,
    /// Times the receiver counted something: pushes, for the Loki receiver.
    pub deliveries: u64,
    /// From the first byte sent to the arrival of the last record.
    pub elapsed: Duration,
    /// From the last byte sent to the arrival of the last record: how long the receiving side
    /// took to finish once the load was all written (data in flight, the last batch's wait).
    pub drain: Duration,
}

/// A progress bar counting received records, hidden when `visible` is false or standard error
/// is not a terminal.
pub fn progress_bar(label: &str, records: u64, visible: bool) -> ProgressBar {
    let bar = if visible { ProgressBar::new(records) } else { ProgressBar::hidden() };
    let style = ProgressStyle::with_template(
        "{prefix:>18} [{bar:30}] {human_pos}/{human_len} records {per_sec:>14} {msg}",
    )
    .expect("the progress template is valid")
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(label.to_owned());
    bar
}

/// Connects every connection of `workload` to `target`, sends them all concurrently and waits
/// until `tally` reaches the workload's record count. `watch` is called while waiting and ends
/// the phase with its error, e.g. when the receiving process has died.
///
/// # Errors
///
/// A failed connection or write, a receiver failure, or the error of `watch`.
pub async fn run_phase(
    target: SocketAddr,
    workload: &Workload,
    tally: &Tally,
    progress: &ProgressBar,
    mut watch: impl FnMut() -> Result<(), BenchError>,
) -> Result<PhaseResult, BenchError> {
    // Connections are made before the clock starts, as Docker's are long before the load.
    let mut streams = Vec::with_capacity(workload.connections.len());
    for _ in &workload.connections {
        let stream = TcpStream::connect(target)
            .await
            .map_err(BenchError::io("cannot connect to the receiver"))?;
        streams.push(stream);
    }

    let sent = Arc::new(AtomicU64::new(0));
    let wire_bytes = workload.wire_bytes();
    let started = Instant::now();
    let mut writers = JoinSet::new();
    for (stream, bytes) in streams.into_iter().zip(&workload.connections) {
        writers.spawn(send(stream, bytes.clone(), Arc::clone(&sent)));
    }
    // Finished connections stay open until the phase ends, as a container's would.
    let mut open = Vec::with_capacity(workload.connections.len());
    let mut last_written = started;

    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    loop {
        ticker.tick().await;
        while let Some(joined) = writers.try_join_next() {
            let (stream, written) = joined
                .expect("a sending task does not panic")
                .map_err(BenchError::io("sending to the receiver failed"))?;
            last_written = last_written.max(written);
            open.push(stream);
        }
        watch()?;
        if let Some(reason) = tally.failure() {
            return Err(BenchError::Receiver(reason));
        }
        let received = tally.entries();
        progress.set_position(received.min(workload.records));
        progress.set_message(format!(
            "({:.0}% of {:.1} MB sent)",
            100.0 * sent.load(Ordering::Relaxed) as f64 / wire_bytes.max(1) as f64,
            wire_bytes as f64 / 1e6
        ));
        if received >= workload.records {
            break;
        }
    }
    progress.finish();
    let last_arrival = tally.last_arrival().unwrap_or(started);
    Ok(PhaseResult {
        received: tally.entries(),
        line_bytes: tally.line_bytes(),
        deliveries: tally.deliveries(),
        elapsed: last_arrival.saturating_duration_since(started),
        drain: last_arrival.saturating_duration_since(last_written),
    })
}

/// Writes `bytes` to `stream` and hands the stream back, still open, with the time its last
/// byte was written.
async fn send(
    mut stream: TcpStream,
    bytes: Bytes,
    sent: Arc<AtomicU64>,
) -> std::io::Result<(TcpStream, Instant)> {
    for chunk in bytes.chunks(WRITE_BYTES) {
        stream.write_all(chunk).await?;
        sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    stream.flush().await?;
    Ok((stream, Instant::now()))
}
